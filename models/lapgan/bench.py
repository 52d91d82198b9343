"""``talkingface bench lapgan``: images per second of LAPGAN sampling, returned as a dict.

    talkingface bench lapgan --random-weights

Speed does not depend on the weights, so by default the generators are freshly
initialised at the published CIFAR-10 sizes (8 -> 16 -> 32, G_K 1200 units, 64 planes):
each generator alone and the whole pyramid (``LAPGANPipeline``, noise to uint8), one image
a call and 64. ``--weights DIR`` (without ``--random-weights``) measures those weights.
"""

from __future__ import annotations

from functools import partial

import torch

from models.common import bench
from models.common.device import pick_device
from models.lapgan import networks as nets
from models.lapgan.pipeline import LAPGANPipeline
from models.types import ImageCondition

BATCHES = (1, 64)


def random_pipeline(weights=None, device="auto") -> LAPGANPipeline:
    """A class-conditional LAPGAN at the published sizes with fresh weights."""
    config = nets.published_config()
    generators = [nets.network_class(n)(**config[n]) for n in nets.level_names(len(nets.SIZES))]
    return LAPGANPipeline(generators, torch.zeros(1, 1, 1), torch.ones(1, 1, 1), device=device,
                          info={"weights": "random (published sizes)"})


def run(weights=None, random_weights=True, device="auto", repeats=3, **_) -> dict:
    """Images per second of each level's generator and of the whole pipeline."""
    pipe = bench.load_pipeline("lapgan", weights, random_weights or weights is None, pick_device(device),
                               random_pipeline)
    result = bench.header(pipe)
    result["sizes"] = pipe.sizes
    condition = ImageCondition(label=0) if pipe.classes else ImageCondition()
    for batch in BATCHES:
        numbers = {}
        noise = pipe.draw_noise(batch)
        label = nets.one_hot(torch.zeros(batch, dtype=torch.long), pipe.classes).to(pipe.device) \
            if pipe.classes else None
        with torch.inference_mode():
            images = pipe.sample(noise, torch.zeros(batch, dtype=torch.long) if pipe.classes else None)
            for k, (g, z) in enumerate(zip(pipe.generators, noise)):
                z = z.to(pipe.device)
                if k == 0:
                    call = partial(g, z, label)
                else:
                    coarse = nets.upsample(images[k - 1], g.image_size)
                    call = partial(g, z, label, coarse)
                seconds = bench.timed(call, repeats)
                numbers[f"{nets.level_names(len(pipe.sizes))[k]}_{g.image_size}px_images_per_s"] = \
                    round(batch / seconds, 1)
        seconds = bench.timed(partial(pipe, n=batch, condition=condition), repeats)
        numbers["pipeline_images_per_s"] = round(batch / seconds, 1)
        numbers["pipeline_ms"] = round(1000 * seconds, 2)
        result[f"batch_{batch}"] = numbers
    result["peak_rss_mib"] = round(bench.peak_rss_mib(), 1)
    return result
