"""``talkingface bench stackgan``: images per second of StackGAN at the published sizes, as a dict.

    talkingface bench stackgan [--weights DIR] [--repeats 2]

Speed does not depend on the weights, so the generators are freshly initialised at the
published sizes: v1's COCO Stage-II generator (with its Stage-I, 256 x 256), v2's
text-conditional birds tree and unconditional LSUN / ImageNet tree (64/128/256), one
image a call and four, in eval mode under ``inference_mode``. The pipeline is then timed
end to end (noise, text encoding, generator, uint8) with the weights the registry picks
(the demo's when no release is installed), four images a call.
"""

from __future__ import annotations

from functools import partial

import torch

from models.common import bench
from models.common.device import pick_device
from models.stackgan.networks import BIRDS_V2, COCO_V1, LSUN_IMAGENET_V2, GNet, Stage2Generator
from models.types import ImageCondition

BATCHES = (1, 4)


def run(weights=None, random_weights=True, device="auto", repeats=2, **_) -> dict:
    """Images per second of each published generator, and of the pipeline."""
    dev = pick_device(device)
    result = {"device": str(dev), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "weights": "random (published sizes)"}
    nets = {"v1_coco_256": (Stage2Generator, COCO_V1), "v2_birds_256": (GNet, BIRDS_V2),
            "v2_lsun_256": (GNet, LSUN_IMAGENET_V2)}
    for name, (cls, config) in nets.items():
        torch.manual_seed(0)
        net = cls(**config).to(dev).eval()
        numbers = {"parameters_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2)}
        for batch in BATCHES:
            z = torch.randn(batch, config["z_dim"], device=dev)
            text = torch.randn(batch, config["text_dim"], device=dev)
            call = partial(net, text, z) if cls is Stage2Generator else partial(
                net, z, text if config["b_condition"] else None)
            with torch.inference_mode():
                seconds = bench.timed(call, repeats)
            numbers[f"batch_{batch}_images_per_s"] = round(batch / seconds, 3)
        result[name] = numbers
        del net
    from models import registry

    pipe = registry.load("stackgan", weights=weights, device=dev)
    variant = next(iter(pipe.variants.values()))
    condition = ImageCondition()
    if variant.conditional:
        condition = (ImageCondition(text="a red disc on a dark blue background") if variant.text_encoder is not None
                     else ImageCondition(vector=torch.randn(variant.text_dim).numpy()))
    seconds = bench.timed(partial(pipe, n=4, condition=condition), repeats)
    result["pipeline"] = {"weights": pipe.info.get("weights"), "variant": next(iter(pipe.variants)),
                          "size": int(pipe(n=1, condition=condition).images.shape[1]),
                          "images_per_s": round(4 / seconds, 2)}
    result["peak_rss_mib"] = round(bench.peak_rss_mib(), 1)
    return result
