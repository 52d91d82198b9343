"""``talkingface bench lrgan``: images per second of LR-GAN at the published sizes, as a dict.

    talkingface bench lrgan

Speed does not depend on the weights, so the generators are freshly initialised at the
reference's published settings (``PUBLISHED``: CIFAR-10 32 x 32, CUB-200 64 x 64 with
ngf 128, MNIST-TWO 64 x 64 in three steps): the generator alone, batches of 1 and 64, and the
pipeline (noise, generator, uint8) for 16 images. With ``--weights`` (or without
``--random-weights``) the pipeline of those weights is measured too.
"""

from __future__ import annotations

from functools import partial

import torch

from models.common import bench
from models.common.device import pick_device
from models.lrgan.networks import LRGANGenerator
from models.lrgan.pipeline import LRGANPipeline

PUBLISHED = {
    "cifar10": dict(image_size=32, ntimestep=2, maxobjscale=1.2, ngf=64, nc=3, rot=0.1),
    "cub200": dict(image_size=64, ntimestep=2, maxobjscale=1.2, ngf=128, nc=3, rot=0.1),
    "mnist-two": dict(image_size=64, ntimestep=3, maxobjscale=2.0, ngf=64, nc=1, rot=0.3),
}
BATCHES = (1, 64)
PIPELINE_IMAGES = 16


def run(weights=None, random_weights=True, device="auto", repeats=3, **_) -> dict:
    """Images per second of the generator and of the pipeline, for each published setting."""
    dev = pick_device(device)
    result = {"model": "lrgan", "device": str(dev), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "weights": "random (published sizes)"}
    for name, config in PUBLISHED.items():
        torch.manual_seed(0)
        generator = LRGANGenerator(**config).to(dev).eval()
        numbers = {"size": f"{config['image_size']}x{config['image_size']}", "ntimestep": config["ntimestep"],
                   "parameters": sum(p.numel() for p in generator.parameters())}
        for batch in BATCHES:
            noise = torch.randn(config["ntimestep"], batch, 100, device=dev)
            with torch.inference_mode():
                seconds = bench.timed(partial(generator, noise), repeats)
            numbers[f"batch_{batch}_images_per_s"] = round(batch / seconds, 1)
        pipe = LRGANPipeline(generator, device=dev)
        seconds = bench.timed(partial(pipe, n=PIPELINE_IMAGES), repeats)
        numbers["pipeline_images_per_s"] = round(PIPELINE_IMAGES / seconds, 1)
        result[name] = numbers
    if weights is not None or not random_weights:
        pipe = bench.load_pipeline("lrgan", weights, False, device, None)
        seconds = bench.timed(partial(pipe, n=PIPELINE_IMAGES), repeats)
        result["loaded"] = {**bench.header(pipe), "pipeline_images_per_s": round(PIPELINE_IMAGES / seconds, 1)}
    result["peak_rss_mib"] = round(bench.peak_rss_mib(), 1)
    return result
