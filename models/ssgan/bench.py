"""``talkingface bench ssgan``: images per second of S^2-GAN at the published sizes, as a dict.

    talkingface bench ssgan --random-weights

Speed does not depend on the weights: with ``--random-weights`` the generators are freshly
initialised at the published sizes (Structure-GAN 72 x 72 normals, Style-GAN 128 x 128
images, width 64); without, the weights the registry picks are measured. Batches of 1 and
16: each generator alone and the whole pipeline (noise, normals, resampling, image, uint8).
"""

from __future__ import annotations

from functools import partial

import torch

from models.common import bench
from models.common.device import pick_device
from models.ssgan.networks import StructureGenerator, StyleGenerator, resample_normals
from models.ssgan.pipeline import SSGANPipeline, Variant

BATCHES = (1, 16)


def random_pipeline(weights, device) -> SSGANPipeline:
    """The pipeline around fresh generators of the published sizes."""
    variant = Variant(StructureGenerator().eval(), StyleGenerator().eval(), "random (published sizes)")
    return SSGANPipeline({"random": variant}, device=device)


def run(weights=None, random_weights=False, device="auto", repeats=3, **_) -> dict:
    """Images per second of the Structure-GAN, the Style-GAN and the pipeline."""
    pipe = bench.load_pipeline("ssgan", weights, random_weights, pick_device(device), random_pipeline)
    _, pair = pipe.pick()
    result = bench.header(pipe)
    dev = pipe.device
    result["structure_size"] = pair.structure.config["image_size"]
    result["image_size"] = size = pair.style.config["image_size"]
    for batch in BATCHES:
        z = torch.rand(batch, pair.structure.config["noise_dim"], 1, 1, device=dev) * 2 - 1
        with torch.inference_mode():
            normals = resample_normals(pair.structure(z), size)
            structure = bench.timed(partial(pair.structure, z), repeats)
            style = bench.timed(partial(pair.style, z, normals), repeats)
        whole = bench.timed(partial(pipe, n=batch), repeats)
        result[f"batch_{batch}"] = {"structure_images_per_s": round(batch / structure, 2),
                                    "style_images_per_s": round(batch / style, 2),
                                    "pipeline_images_per_s": round(batch / whole, 2)}
    result["peak_rss_mib"] = round(bench.peak_rss_mib(), 1)
    return result
