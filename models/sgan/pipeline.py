"""SGAN inference: a class label (or none: a random one) -> images, top-down through the stack.

    pipe = registry.load("sgan")                          # best weights found
    torch.manual_seed(0)
    images = pipe(n=8, condition=ImageCondition(label=3), levels=True)

Huang et al., CVPR 2017, Sec. 3 (Fig. 1, "testing"): sampling runs the generators from the
top of the stack down, each fed the level above and its own noise:

1. y: the requested class, or one drawn uniformly per image when none is given (the top of
   the stack, ``label_option(10)``: the digit for MNIST, the CIFAR-10 class).
2. ``h1 = G1(z1, y)``: the encoder's fc3 features of an image of class y, ``z1 ~ U[0, 1)^50``
   (the reference draws ``theano_rng.uniform``).
3. ``x = G0(h1, z0)``: the image, ``z0 ~ U[0, 1)^50`` (16 for CIFAR-10), in [0, 1] from the
   sigmoid; grey for MNIST.

The batch norms use their running averages, as the reference's ``cifar/sampling.py``
(``deterministic=True``) does: an image does not depend on the others of its batch. All
noise is drawn from torch's global generator on the CPU, then moved to the device, so a
seed gives the same images on any device.

``levels=True`` shows what each level of the stack decides: ``h1_z0_mean`` is ``h1``
rendered by G0 with its own noise held at its mean (``z0 = 0.5``), i.e. the digit (class and
style) that G1 chose; the final images add what the sampled ``z0`` varies at the bottom
level (stroke thickness, small shifts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models import weights as weights_lib
from models.common.device import pick_device
from models.common.pipeline import ImageGenerationPipeline, label_option, load_project_networks, read_project
from models.errors import InvalidInput
from models.sgan.networks import Generator0, Generator1
from models.types import ImageCondition, Images

GENERATORS = {"g1": Generator1, "g0": Generator0}
CHUNK = 64                  # images a forward pass
LEVEL_NAME = "h1_z0_mean"          # level 1: G1(z1, y) drawn by G0 with z0 held at its mean


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """G0's output (n, C, H, W) in [0, 1] -> uint8 RGB (n, H, W, 3); one channel becomes grey."""
    images = images.detach().float().cpu().clamp(0, 1)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


class SGANPipeline(ImageGenerationPipeline):
    """SGAN (Huang et al., CVPR 2017): y -> G1 -> h1 -> G0 -> image."""

    name = "sgan"
    options = (label_option(10),)
    levels = True

    def __init__(self, g1: Generator1, g0: Generator0, device="auto", info=None):
        if g1.config["feature_dim"] != g0.config["feature_dim"]:
            raise weights_lib.WeightsInvalid(f"G1 draws {g1.config['feature_dim']} features but G0 takes "
                                             f"{g0.config['feature_dim']}")
        self.device = pick_device(device)
        self.g1 = g1.to(self.device).eval().requires_grad_(False)
        self.g0 = g0.to(self.device).eval().requires_grad_(False)
        self.num_classes = g1.config["num_classes"]
        self.info = dict(info or {}, model="sgan", device=str(self.device))
        self.info.setdefault("weights", "unnamed")

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory, device="auto", verify=True):
        """The authors' ``generator.npz`` (CIFAR-10: G1 and G0, ``cifar/pretrained/``) in ``directory``,
        converted on loading (``models.sgan.convert``)."""
        from models.sgan.convert import convert_file

        directory = Path(directory)
        paths = weights_lib.require_all(cls.weight_files(), directory, verify)   # names what is missing
        networks = convert_file(paths["generator.npz"])
        if set(networks) != {"g1", "g0"}:
            raise weights_lib.WeightsInvalid(f"{paths['generator.npz']} does not hold G1 and G0")
        return cls(networks["g1"], networks["g0"], device=device,
                   info={"weights": "the authors' generator.npz (CIFAR-10)", "weights_dir": str(directory),
                         "dataset": "cifar10"})

    @classmethod
    def from_project(cls, directory, device="auto", verify=True):
        """A folder this project wrote: a training run, an export, the demo or a converted release."""
        config = read_project(directory, verify)
        for key in GENERATORS:
            if key not in config or not (Path(directory) / f"{key}.safetensors").is_file():
                raise weights_lib.WeightsMissing(f"{directory} holds no {key}.safetensors: SGAN samples with "
                                                 "G1 and G0 (a folder with only an encoder is for training)")
        networks = load_project_networks(directory, GENERATORS, config)
        return cls(networks["g1"], networks["g0"], device=device,
                   info={"weights": config.get("name", "project"), "weights_dir": str(directory),
                         "dataset": config.get("dataset", "unknown")})

    # -- inference ------------------------------------------------------------------------
    def check_label(self, label) -> int | None:
        if label is None:
            return None
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not \
                0 <= int(label) < self.num_classes:
            raise InvalidInput(f"label must be a class from 0 to {self.num_classes - 1}, got {label!r}")
        return int(label)

    def sample_inputs(self, n: int, label: int | None):
        """Steps 1-3's random draws, in this order, from torch's global CPU generator."""
        if label is None:
            labels = torch.randint(0, self.num_classes, (n,))
        else:
            labels = torch.full((n,), label, dtype=torch.long)
        z1 = torch.rand(n, self.g1.z_dim)
        z0 = torch.rand(n, self.g0.z_dim)
        return labels, z1, z0

    @torch.no_grad()
    def generate(self, n: int, condition: ImageCondition, levels=False, progress=None, **options) -> Images:
        """``n`` images of ``condition.label`` (a random class each when None)."""
        # 1. Check inputs
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidInput(f"n must be a whole number of at least 1, got {n!r}")
        label = self.check_label(condition.label)
        # 2. Draw y, z1, z0
        labels, z1, z0 = self.sample_inputs(int(n), label)
        # 3. Top-down through the stack, a chunk at a time
        finals, coarse = [], []
        for start in range(0, n, CHUNK):
            part = slice(start, min(n, start + CHUNK))
            y = torch.nn.functional.one_hot(labels[part], self.num_classes).float().to(self.device)
            h1 = self.g1(z1[part].to(self.device), y)                         # (b, 256)
            finals.append(to_uint8(self.g0(h1, z0[part].to(self.device))))
            if levels:
                coarse.append(to_uint8(self.g0(h1, torch.full_like(z0[part], 0.5).to(self.device))))
            if progress is not None:
                progress(part.stop, n)
        info = dict(self.info, labels=labels.tolist(), label_source="given" if label is not None else "random",
                    noise="z1, z0 ~ U[0, 1)", batch_norm="running averages")
        return Images(images=np.concatenate(finals),
                      levels=[(LEVEL_NAME, np.concatenate(coarse))] if levels else [], info=info)
