"""``talkingface bench gran``: images per second of GRAN at the published sizes, returned as a dict.

    talkingface bench gran --random-weights

Speed does not depend on the weights, so the generators are freshly initialised at the
published sizes (``networks.CONFIGS``: CIFAR-10 32 x 32 and LSUN 64 x 64, T = 5). The
generator is timed on batches of 1 (which batch normalisation makes degenerate, timed all
the same) and 8 (CIFAR-10 also 32); a request to the pipeline draws a batch of at least
``batch`` (default 32), so its time is that batch's: ``request_seconds`` (measured for
CIFAR-10, 32 / images per second of the largest batch timed for LSUN).
"""

from __future__ import annotations

from functools import partial

import torch

from models.common import bench
from models.common.device import pick_device
from models.gran.networks import CONFIGS, GRANGenerator
from models.gran.pipeline import BATCH_OPTION, GRANPipeline

BATCHES = {"cifar10": (1, 8, 32), "lsun": (1, 8)}


def run(weights=None, random_weights=True, device="auto", repeats=3, presets=("cifar10", "lsun"), **_) -> dict:
    """Images per second of the generator, and seconds of one pipeline request, per preset."""
    dev = pick_device(device)
    result = {"device": str(dev), "threads": torch.get_num_threads(), "weights": "random (published sizes)",
              "pipeline_batch": BATCH_OPTION.default}
    for name in presets:
        torch.manual_seed(0)
        generator = GRANGenerator(**CONFIGS[name]["generator"])
        pipe = GRANPipeline(generator, device=dev)
        numbers = {"size": f"{generator.image_size}x{generator.image_size}", "num_steps": generator.num_steps}
        rate = None
        for batch in BATCHES[name]:
            z = torch.randn(batch, generator.z_dim, device=dev)
            with torch.inference_mode():
                seconds = bench.timed(partial(pipe.generator, z), repeats)
            rate = batch / seconds
            numbers[f"generator_batch_{batch}_images_per_s"] = round(rate, 3)
        if max(BATCHES[name]) >= BATCH_OPTION.default:
            numbers["request_seconds"] = round(bench.timed(partial(pipe, n=1), repeats), 3)
        else:
            numbers["request_seconds_estimated"] = round(BATCH_OPTION.default / rate, 3)
        numbers["peak_rss_mib"] = round(bench.peak_rss_mib(), 1)
        result[name] = numbers
    return result
