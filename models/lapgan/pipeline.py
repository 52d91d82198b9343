"""LAPGAN inference: noise (and a class) -> images, drawn coarse to fine.

    pipe = registry.load("lapgan")                         # the demo weights unless others are given
    torch.manual_seed(0)
    out = pipe(n=4, condition=ImageCondition(label=3), levels=True)
    out.images                                             # uint8 (4, 32, 32, 3)
    out.levels                                             # [("8x8", ...), ("16x16", ...), ("32x32", ...)]

Denton et al., NeurIPS 2015, Eq. 4 (sampling):

1. Check the condition: a class-conditional model takes ``label`` (0 to classes - 1; a
   random class per image when none is given), an unconditional one takes none.
2. Draw the noise on the CPU from torch's global generator, coarse to fine: the labels
   when drawn, z_K (n, 100) then one noise plane per finer level, all uniform in [-1, 1]
   as ``noise_inputs:uniform(-1, 1)`` of eyescream.
3. ``I_K = G_K(z_K, c)``; for each finer level ``I_k = u(I_{k+1}) + G_k(z_k, c, u(I_{k+1}))``
   with eyescream's ``image.scale`` as ``u`` (``networks.upsample``).
4. Undo the training normalisation (eyescream's ``image_utils.normalize``: per pixel mean
   and std of the training set, or ``normalizeGlobal``), the maps reduced to each level's
   size for the levels; clamp to [0, 1] -> uint8 RGB.

eyescream released no weights: ``from_pretrained`` explains that, ``from_project`` loads a
folder this project wrote (``save_project`` or a training run of ``talkingface train lapgan``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.common.device import pick_device
from models.common.pipeline import (
    ImageGenerationPipeline,
    label_option,
    load_project_networks,
    read_project,
)
from models.errors import InvalidInput, WeightsMissing
from models.lapgan.networks import (
    CoarseGenerator,
    LevelGenerator,
    image_scale,
    one_hot,
    upsample,
)
from models.types import ImageCondition, Images

NORMALIZATION_FILE = "normalization"     # <stem>.npz: "mean" and "std" maps of the training images
CLASSES = 10                             # CIFAR-10 and the digits: the label option's range


def generator_names(config: dict) -> list[str]:
    """The generators a config holds, coarse to fine: ``coarse``, ``level1``, ``level2`` ..."""
    names = ["coarse"]
    while f"level{len(names)}" in config:
        names.append(f"level{len(names)}")
    return names


def read_normalization(directory) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``mean`` and ``std`` maps (C, H, W) or (1, 1, 1) the weights were trained with."""
    file = Path(directory) / f"{NORMALIZATION_FILE}.npz"
    if not file.is_file():
        raise WeightsMissing(f"missing {file.name} (the training images' mean and std) in {directory}")
    with np.load(file) as arrays:
        return torch.from_numpy(arrays["mean"].astype(np.float32)), torch.from_numpy(arrays["std"].astype(np.float32))


def sample_pyramid(generators, noise: list[torch.Tensor], label: torch.Tensor | None, device) -> list[torch.Tensor]:
    """Eq. 4: ``I_K = G_K(z_K, c)``, then ``I_k = u(I_{k+1}) + G_k(z_k, c, u(I_{k+1}))``; every level's image.

    ``label`` is the one-hot condition (n, classes) or None; the images stay in the
    normalised space the generators were trained in.
    """
    label = None if label is None else label.to(device)
    images = [generators[0](noise[0].to(device), label)]
    for g, z in zip(generators[1:], noise[1:]):
        coarse = upsample(images[-1], g.image_size)
        images.append(coarse + g(z.to(device), label, coarse))
    return images


def to_pixels(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> np.ndarray:
    """Normalised images (n, C, s, s) -> uint8 RGB (n, s, s, 3): ``x * std + mean`` in [0, 1].

    ``mean`` and ``std`` are maps of the finest size (reduced to ``s`` with ``image.scale``)
    or single numbers (1, 1, 1).
    """
    size = images.shape[-1]
    if mean.shape[-1] not in (1, size):
        mean, std = image_scale(mean, size), image_scale(std, size)
    pixels = images.detach().float().cpu() * std + mean
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


class LAPGANPipeline(ImageGenerationPipeline):
    """LAPGAN (Denton et al., NeurIPS 2015): a coarse generator, then one conditional
    generator of band-pass residuals per finer pyramid level."""

    name = "lapgan"
    options = (label_option(CLASSES),)
    levels = True

    def __init__(self, generators: list, mean: torch.Tensor, std: torch.Tensor, device="auto", info=None,
                 class_names=None):
        if not generators or not isinstance(generators[0], CoarseGenerator):
            raise WeightsMissing("a LAPGAN needs its coarse generator first")
        self.device = pick_device(device)
        self.generators = [g.to(self.device).eval().requires_grad_(False) for g in generators]
        self.sizes = [g.image_size for g in self.generators]
        self.classes = self.generators[0].classes
        if any(g.classes != self.classes for g in self.generators):
            raise WeightsMissing("the LAPGAN generators disagree on the number of classes")
        self.mean, self.std = mean.float(), std.float()
        self.class_names = list(class_names) if class_names else None
        self.info = dict(info or {}, model="lapgan", device=str(self.device), sizes=self.sizes,
                         classes=self.classes)
        self.info.setdefault("weights", "project")

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory, device="auto", verify=True):
        """eyescream published no weights, so there is no authors' file to load."""
        raise WeightsMissing(
            "LAPGAN's authors (github.com/facebook/eyescream) released no weights: train some with "
            "`talkingface train lapgan --images DIR --out RUN` and pass --weights RUN, or use the demo "
            f"weights (weights/demo/lapgan; `talkingface weights build-demo --model lapgan`). Looked in {directory}")

    @classmethod
    def from_project(cls, directory, device="auto", verify=True):
        """A folder this project wrote: ``save_project`` output (the demo) or a training run."""
        directory = Path(directory)
        config = read_project(directory, verify)
        names = generator_names(config)
        if "coarse" not in config:
            raise WeightsMissing(f"{directory / 'config.json'} describes no LAPGAN coarse generator")
        classes = {name: (CoarseGenerator if name == "coarse" else LevelGenerator) for name in names}
        networks = load_project_networks(directory, classes, config)
        mean, std = read_normalization(directory)
        return cls([networks[name] for name in names], mean, std, device=device,
                   class_names=config.get("class_names"),
                   info={"weights": config.get("name", "project"), "weights_dir": str(directory)})

    # -- inference ------------------------------------------------------------------------
    def labels_for(self, n: int, condition: ImageCondition) -> torch.Tensor | None:
        """Step 1: the class of each image (n,) on the CPU, or None for an unconditional model."""
        if not self.classes:
            if condition.label is not None:
                raise InvalidInput("these lapgan weights are unconditional: they take no label")
            return None
        if condition.label is None:
            return torch.randint(0, self.classes, (n,))
        label = int(condition.label)
        if not 0 <= label < self.classes:
            raise InvalidInput(f"label must be from 0 to {self.classes - 1} for these lapgan weights, got {label}")
        return torch.full((n,), label, dtype=torch.long)

    def draw_noise(self, n: int) -> list[torch.Tensor]:
        """Step 2: z_K (n, noise_dim), then one plane (n, 1, s, s) per finer level, uniform in [-1, 1]."""
        coarse = self.generators[0]
        noise = [torch.rand(n, coarse.noise_dim) * 2 - 1]
        for g in self.generators[1:]:
            noise.append(torch.rand(n, g.noise_planes, g.image_size, g.image_size) * 2 - 1)
        return noise

    @torch.no_grad()
    def sample(self, noise: list[torch.Tensor], labels: torch.Tensor | None) -> list[torch.Tensor]:
        """Step 3 (Eq. 4): every level's image, coarse to fine, in the normalised space."""
        label = None if labels is None else one_hot(labels, self.classes)
        return sample_pyramid(self.generators, noise, label, self.device)

    def to_uint8(self, images: torch.Tensor) -> np.ndarray:
        """Step 4: un-normalised, clamped to [0, 1], uint8 (n, s, s, 3)."""
        return to_pixels(images, self.mean, self.std)

    def generate(self, n: int, condition: ImageCondition, levels=False, progress=None, **options) -> Images:
        """``n`` images (and, with ``levels``, the image of every pyramid level, coarse to fine)."""
        labels = self.labels_for(n, condition)                         # 1. condition
        noise = self.draw_noise(n)                                     # 2. noise, on the CPU
        steps = self.sample(noise, labels)                             # 3. coarse to fine
        if progress is not None:
            progress(n, n)
        info = dict(self.info, n=n)
        if labels is not None:
            info["labels"] = labels.tolist()
            info["label"] = condition.label
            if self.class_names:
                info["class_names"] = [self.class_names[i] for i in labels.tolist()]
        shown = [(f"{s}x{s}", self.to_uint8(image)) for s, image in zip(self.sizes, steps)] if levels else []
        return Images(images=self.to_uint8(steps[-1]), levels=shown, info=info)     # 4. uint8
