"""PG2 inference: a photo of a person + a target pose -> the person in that pose.

    pipe = registry.load("pg2")                          # best weights found
    image = pipe(PoseTransferInput(image=photo, pose=keypoints, pose_size=(h, w)))

Ma et al., NeurIPS 2017, Sec. 3: G1 draws a coarse image of the person of the condition
image in the target pose (pose integration); G2 draws a difference map that refines it
(image refinement); the result is their sum. The steps:

1. The photo is fitted into the weights' frame (128 x 64 for Market-1501, 256 x 256 for
   DeepFashion): scaled to fit, centred, the rest filled with the photo's border colour,
   since the networks saw whole-person crops of that shape. The target keypoints, measured
   in ``pose_size``, are fitted into the same frame the same way.
2. The keypoints become the 18 pose channels the weights were trained with:
   ``pose_encoding`` "authors" (``pg2_pose_map``: solid discs of radius 4 in {-1, 1}, the
   authors' TF code; the project's own training and converted TF checkpoints) or "port"
   (``port_pose_map``: Gaussian heat maps of sigma 6 in [0, 1], what the PyTorch port
   trained its released ``G1.pth`` / ``G2.pth`` with).
3. ``G2(x, G1(x, P)) + G1(x, P)`` in [-1, 1] -> uint8 RGB at the weights' size.

A pipeline holds one set of networks per ``variant`` ("market", "deepfashion") it found;
a request's ``variant`` option picks one (the first found when it does not say).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import weights as weights_lib
from models.common.device import pick_device
from models.common.pipeline import (
    Option,
    PoseTransferPipeline,
    load_project_networks,
    read_project,
)
from models.errors import InvalidInput, WeightsMissing
from models.perception import pose as pose_lib
from models.pg2.networks import ImageRefinementGenerator, PoseIntegrationGenerator
from models.types import PoseTransferInput

VARIANTS = {"market": (128, 64), "deepfashion": (256, 256)}
VARIANT_OPTION = Option("variant", str, None, "weights to use: market (128 x 64) or deepfashion (256 x 256); "
                                              "the first loaded when not given", choices=tuple(VARIANTS))
GENERATORS = {"g1": PoseIntegrationGenerator, "g2": ImageRefinementGenerator}


@dataclass
class Variant:
    """One set of PG2 generators and what they expect."""

    g1: PoseIntegrationGenerator
    g2: ImageRefinementGenerator
    size: tuple[int, int]           # (height, width) of the images
    pose_encoding: str              # "authors" or "port"
    weights: str                    # what they are, for reports


def variant_of(size) -> str:
    """"market" for the 2:1 pedestrian frame, "deepfashion" for the square one."""
    height, width = size
    return "market" if height != width else "deepfashion"


def fit_transform(src_size, dst_size):
    """``(scale, dx, dy)`` that fits a ``src_size`` (h, w) frame into ``dst_size``, centred."""
    scale = min(dst_size[0] / src_size[0], dst_size[1] / src_size[1])
    return scale, (dst_size[1] - src_size[1] * scale) / 2.0, (dst_size[0] - src_size[0] * scale) / 2.0


def fit_image(image: np.ndarray, size) -> np.ndarray:
    """``image`` scaled to fit ``size`` (h, w), centred on its mean border colour."""
    from PIL import Image

    scale, dx, dy = fit_transform(image.shape[:2], size)
    width = max(1, round(image.shape[1] * scale))
    height = max(1, round(image.shape[0] * scale))
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).mean(0)
    canvas = np.empty((*size, 3), np.uint8)
    canvas[:] = np.round(border).astype(np.uint8)
    resized = np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))
    top, left = int(round(dy)), int(round(dx))
    canvas[top:top + height, left:left + width] = resized[:size[0] - top, :size[1] - left]
    return canvas


def fit_keypoints(keypoints: np.ndarray, src_size, size) -> np.ndarray:
    """(x, y, confidence) keypoints of a ``src_size`` frame, moved as ``fit_image`` moves pixels."""
    scale, dx, dy = fit_transform(src_size, size)
    out = np.array(keypoints, dtype=np.float64, copy=True)
    present = out[:, 2] > 0
    out[present, 0] = np.clip(out[present, 0] * scale + dx, 0, size[1] - 1)
    out[present, 1] = np.clip(out[present, 1] * scale + dy, 0, size[0] - 1)
    return out


def pose_channels(keypoints: np.ndarray, size, encoding: str) -> np.ndarray:
    """The 18 pose channels (18, H, W) float32 of fitted keypoints, in ``encoding``."""
    rc = pose_lib.keypoints_to_rc(keypoints)
    if encoding == "port":
        channels = pose_lib.port_pose_map(rc, size)
    elif encoding == "authors":
        channels = pose_lib.pg2_pose_map(rc, size)
    else:
        raise WeightsMissing(f"unknown PG2 pose encoding {encoding!r} in the weights' config")
    return np.ascontiguousarray(np.transpose(channels.astype(np.float32), (2, 0, 1)))


class PG2Pipeline(PoseTransferPipeline):
    """PG2 (Ma et al., NeurIPS 2017): G1 then G2 on a person's photo and a target pose."""

    name = "pg2"
    options = (VARIANT_OPTION,)

    def __init__(self, variants: dict[str, Variant], device="auto", info=None):
        if not variants:
            raise WeightsMissing("no PG2 generators were given")
        self.device = pick_device(device)
        for variant in variants.values():
            variant.g1 = variant.g1.to(self.device).eval().requires_grad_(False)
            variant.g2 = variant.g2.to(self.device).eval().requires_grad_(False)
        self.variants = variants
        first = next(iter(variants.values()))
        self.info = dict(info or {}, model="pg2", device=str(self.device), weights=first.weights,
                         variants=list(variants))

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory, device="auto", verify=True):
        """The PyTorch port's released ``G1.pth`` / ``G2.pth`` (Market-1501) in ``directory``,
        and any converted folder ``market/`` or ``deepfashion/`` beside them
        (``talkingface weights convert-pg2``)."""
        directory = Path(directory)
        variants = {}
        paths = {f.name: weights_lib.locate(f, directory) for f in cls.weight_files()}
        if paths.get("G1.pth") and paths.get("G2.pth"):
            variants["market"] = Variant(
                g1=weights_lib.load_weights(PoseIntegrationGenerator(), paths["G1.pth"], "G1.pth"),
                g2=weights_lib.load_weights(ImageRefinementGenerator(), paths["G2.pth"], "G2.pth"),
                size=VARIANTS["market"], pose_encoding="port",
                weights="the PyTorch port's release (Market-1501)")
        for name in VARIANTS:
            if name not in variants and (directory / name / "config.json").is_file():
                variants[name] = cls.read_variant(directory / name, verify)
        if not variants:
            weights_lib.require_all(cls.weight_files(), directory, verify)   # names what is missing
        return cls(variants, device=device, info={"weights_dir": str(directory)})

    @classmethod
    def from_project(cls, directory, device="auto", verify=True):
        """A PG2 weights folder this project wrote (training, or a converted TF checkpoint)."""
        variant = cls.read_variant(directory, verify)
        return cls({variant_of(variant.size): variant}, device=device, info={"weights_dir": str(directory)})

    @staticmethod
    def read_variant(directory, verify=True) -> Variant:
        config = read_project(directory, verify)
        networks = load_project_networks(directory, GENERATORS, config)
        size = tuple(config.get("image_size") or networks["g1"].config["image_size"])
        return Variant(g1=networks["g1"], g2=networks["g2"], size=size,
                       pose_encoding=config.get("pose_encoding", "authors"),
                       weights=config.get("name", "project"))

    # -- inference ------------------------------------------------------------------------
    def pick(self, variant=None) -> Variant:
        if variant is None:
            return next(iter(self.variants.values()))
        if variant not in self.variants:
            raise InvalidInput(f"the pg2 weights in use have no {variant} variant; they have "
                               f"{', '.join(self.variants)}")
        return self.variants[variant]

    def prepare(self, inputs: PoseTransferInput, variant: Variant):
        """Step 1-2: the fitted photo (1, 3, H, W) in [-1, 1] and the pose channels (1, 18, H, W)."""
        image = self.check_image(inputs.image)
        keypoints = pose_lib.as_keypoints(inputs.pose, "pose")
        if not (keypoints[:, 2] > 0).any():
            raise InvalidInput("the target pose has no keypoint")
        photo = fit_image(image, variant.size)
        pose = pose_channels(fit_keypoints(keypoints, inputs.pose_size, variant.size), variant.size,
                             variant.pose_encoding)
        x = torch.from_numpy(photo).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)
        return x.to(self.device), torch.from_numpy(pose)[None].to(self.device)

    @torch.no_grad()
    def transfer(self, inputs: PoseTransferInput, variant=None) -> np.ndarray:
        """Steps 1-3; uint8 RGB (H, W, 3) at the variant's size."""
        chosen = self.pick(VARIANT_OPTION.parse(variant))
        x, pose = self.prepare(inputs, chosen)
        coarse = chosen.g1(x, pose)
        refined = chosen.g2(x, coarse) + coarse
        image = refined[0].clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0)
        return image.cpu().numpy()
