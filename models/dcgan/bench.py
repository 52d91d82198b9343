"""``talkingface bench dcgan``: images per second of the DCGAN generator, returned as a dict.

    talkingface bench dcgan --random-weights

Speed does not depend on the weights, so by default the generator is freshly initialised
at the reference's sizes (nz 100, ngf 64, nc 3, 64x64) and timed alone (batches 1 and 64)
and through the pipeline (noise drawn on the CPU, images to uint8); the discriminator's
images per second at ndf 64 too. ``--weights DIR`` (without ``--random-weights``) times the
pipeline of those weights instead.
"""

from __future__ import annotations

from functools import partial

import torch

from models.common import bench
from models.common.device import pick_device
from models.dcgan.networks import Discriminator, Generator, weights_init
from models.dcgan.pipeline import DCGANPipeline

BATCHES = (1, 64)


def random_pipeline(weights, device) -> DCGANPipeline:
    """A pipeline around a freshly initialised generator of the reference's sizes."""
    return DCGANPipeline(Generator().apply(weights_init), device=device, info={"weights": "random (reference sizes)"})


def run(weights=None, random_weights=True, device="auto", repeats=3, **_) -> dict:
    """Images per second of G, D and the pipeline at the reference's sizes (or of the given weights)."""
    dev = pick_device(device)
    random_weights = random_weights or weights is None
    pipe = bench.load_pipeline("dcgan", weights, random_weights, dev, random_pipeline)
    generator = pipe.generator
    config = generator.config
    result = {"device": str(dev), "threads": torch.get_num_threads(), "weights": pipe.info.get("weights"),
              "size": f"{config['image_size']}x{config['image_size']}", "nz": config["nz"], "ngf": config["ngf"]}
    discriminator = Discriminator(config["nc"], 64, config["image_size"]).to(dev).eval()
    for batch in BATCHES:
        z = torch.randn(batch, generator.nz, 1, 1, device=dev)
        x = torch.rand(batch, config["nc"], config["image_size"], config["image_size"], device=dev) * 2 - 1
        numbers = {}
        with torch.inference_mode():
            if pipe.objective != "gan-int-cls":
                numbers["generator_images_per_s"] = round(batch / bench.timed(partial(generator, z), repeats), 1)
            numbers["discriminator_images_per_s"] = round(batch / bench.timed(partial(discriminator, x), repeats), 1)
        if pipe.objective != "gan-int-cls":
            numbers["pipeline_images_per_s"] = round(batch / bench.timed(partial(pipe, n=batch), repeats), 1)
        result[f"batch_{batch}"] = numbers
    result["peak_rss_mib"] = round(bench.peak_rss_mib(), 1)
    return result
