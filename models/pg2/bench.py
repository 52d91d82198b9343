"""``talkingface bench pg2``: images per second of PG2 at the published sizes, returned as a dict.

    talkingface bench pg2 --random-weights

Speed does not depend on the weights, so the generators are freshly initialised at the
published sizes (``MARKET`` 128 x 64, ``DEEPFASHION`` 256 x 256): G1 and G2 alone, one
image a call and eight, and the whole pipeline on one photo (fit, pose channels, G1, G2).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from models.common import bench
from models.common.device import pick_device
from models.pg2.networks import DEEPFASHION, MARKET, ImageRefinementGenerator, PoseIntegrationGenerator
from models.pg2.pipeline import PG2Pipeline, Variant, variant_of
from models.types import PoseTransferInput

BATCHES = (1, 8)


def random_variant(config) -> Variant:
    g1, g2 = PoseIntegrationGenerator(**config["g1"]), ImageRefinementGenerator(**config["g2"])
    return Variant(g1=g1, g2=g2, size=tuple(config["g1"]["image_size"]), pose_encoding="authors", weights="random")


def standing_pose(size) -> np.ndarray:
    """An upright person's COCO-18 keypoints (x, y, confidence) filling a (height, width) frame."""
    height, width = size
    xs = (0.5, 0.5, 0.35, 0.3, 0.28, 0.65, 0.7, 0.72, 0.42, 0.42, 0.42, 0.58, 0.58, 0.58, 0.47, 0.53, 0.44, 0.56)
    ys = (0.1, 0.2, 0.2, 0.35, 0.5, 0.2, 0.35, 0.5, 0.5, 0.72, 0.92, 0.5, 0.72, 0.92, 0.08, 0.08, 0.09, 0.09)
    return np.array([(x * (width - 1), y * (height - 1), 1.0) for x, y in zip(xs, ys)])


def run(weights=None, random_weights=True, device="auto", repeats=3, **_) -> dict:
    """Images per second of G1, G2, both, and the pipeline, at each published size."""
    dev = pick_device(device)
    result = {"device": str(dev), "threads": torch.get_num_threads(), "weights": "random (published sizes)"}
    for name, config in (("market", MARKET), ("deepfashion", DEEPFASHION)):
        torch.manual_seed(0)
        variant = random_variant(config)
        pipe = PG2Pipeline({variant_of(variant.size): variant}, device=dev)
        variant = pipe.pick()
        h, w = variant.size
        numbers = {"size": f"{w}x{h}"}
        for batch in BATCHES:
            x = torch.rand(batch, 3, h, w, device=dev) * 2 - 1
            pose = torch.rand(batch, 18, h, w, device=dev).sign()
            with torch.inference_mode():
                coarse = variant.g1(x, pose)
                g1 = bench.timed(partial(variant.g1, x, pose), repeats)
                g2 = bench.timed(partial(variant.g2, x, coarse), repeats)
            numbers[f"batch_{batch}"] = {"g1_images_per_s": round(batch / g1, 2),
                                         "g2_images_per_s": round(batch / g2, 2),
                                         "g1_g2_images_per_s": round(batch / (g1 + g2), 2)}
        photo = bench.example_photo()
        inputs = PoseTransferInput(image=photo, pose=standing_pose(photo.shape[:2]), pose_size=photo.shape[:2])
        seconds = bench.timed(partial(pipe, inputs), repeats)
        numbers["pipeline_images_per_s"] = round(1.0 / seconds, 2)
        numbers["pipeline_ms"] = round(1000 * seconds, 1)
        result[name] = numbers
    result["peak_rss_mib"] = round(bench.peak_rss_mib(), 1)
    return result
