"""``talkingface bench gran``: images per second of GRAN at the published sizes, returned as a dict.

    talkingface bench gran --random-weights

Speed does not depend on the weights, so the generators are freshly initialised at the
published sizes (``networks.CONFIGS``: CIFAR-10 32 x 32 and LSUN 64 x 64, T = 5): the
generator alone on a batch of 1 (which batch normalisation makes degenerate, timed all
the same) and 32, and the pipeline (which draws in batches of at least 32).
"""

from __future__ import annotations

from functools import partial

import torch

from models.common import bench
from models.common.device import pick_device
from models.gran.networks import CONFIGS, GRANGenerator
from models.gran.pipeline import GRANPipeline

BATCHES = (1, 32)


def run(weights=None, random_weights=True, device="auto", repeats=3, presets=("cifar10", "lsun"), **_) -> dict:
    """Images per second of the generator and the pipeline, per preset."""
    dev = pick_device(device)
    result = {"device": str(dev), "threads": torch.get_num_threads(), "weights": "random (published sizes)"}
    for name in presets:
        torch.manual_seed(0)
        generator = GRANGenerator(**CONFIGS[name]["generator"])
        pipe = GRANPipeline(generator, device=dev)
        numbers = {"size": f"{generator.image_size}x{generator.image_size}", "num_steps": generator.num_steps}
        for batch in BATCHES:
            z = torch.randn(batch, generator.z_dim, device=dev)
            with torch.inference_mode():
                seconds = bench.timed(partial(pipe.generator, z), repeats)
            numbers[f"generator_batch_{batch}_images_per_s"] = round(batch / seconds, 2)
        seconds = bench.timed(partial(pipe, n=32), repeats)
        numbers["pipeline_n32_images_per_s"] = round(32 / seconds, 2)
        numbers["peak_rss_mib"] = round(bench.peak_rss_mib(), 1)
        result[name] = numbers
    return result
