"""``talkingface bench sgan``: images per second of SGAN at the published sizes, returned as a dict.

Speed does not depend on the weights, so G1 and G0 are freshly initialised at the
reference's sizes: MNIST (28 x 28 grey, ``MNIST_G1`` / ``MNIST_G0``) and CIFAR-10 (32 x 32
RGB, ``CIFAR_G1`` / ``CIFAR_G0``). Timed: the two generators top-down at batches 1 and 64,
and the pipeline (noise draws, both generators, uint8) for 64 images.
"""

from __future__ import annotations

from functools import partial

import torch

from models.common import bench
from models.common.device import pick_device
from models.sgan.networks import CIFAR_G0, CIFAR_G1, MNIST_G0, MNIST_G1, Generator0, Generator1
from models.sgan.pipeline import SGANPipeline
from models.types import ImageCondition

BATCHES = (1, 64)
SIZES = {"mnist": (MNIST_G1, MNIST_G0), "cifar10": (CIFAR_G1, CIFAR_G0)}


def run(device="auto", repeats=3, **_) -> dict:
    """Images per second of G1 + G0 and of the pipeline, for each published size."""
    dev = pick_device(device)
    result = {"device": str(dev), "threads": torch.get_num_threads(), "weights": "random (published sizes)"}
    for name, (g1_config, g0_config) in SIZES.items():
        torch.manual_seed(0)
        pipe = SGANPipeline(Generator1(**g1_config), Generator0(**g0_config), device=dev,
                            info={"weights": "random"})
        side = pipe.g0.image_size
        numbers = {"size": f"{side}x{side}"}
        for batch in BATCHES:
            y = torch.nn.functional.one_hot(torch.arange(batch) % 10, 10).float().to(dev)
            z1 = torch.rand(batch, pipe.g1.z_dim, device=dev)
            z0 = torch.rand(batch, pipe.g0.z_dim, device=dev)

            def forward(y=y, z1=z1, z0=z0, pipe=pipe):
                return pipe.g0(pipe.g1(z1, y), z0)

            with torch.inference_mode():
                seconds = bench.timed(forward, repeats)
            numbers[f"batch_{batch}_images_per_s"] = round(batch / seconds, 1)
        seconds = bench.timed(partial(pipe, n=64, condition=ImageCondition(label=3)), repeats)
        numbers["pipeline_64_images_per_s"] = round(64 / seconds, 1)
        result[name] = numbers
    result["peak_rss_mib"] = round(bench.peak_rss_mib(), 1)
    return result
