"""Training LAPGAN: one GAN per pyramid level, each on its own level of the training images.

    talkingface train lapgan --images DIR --out RUN [--max-steps N] [--batch-size 128] [--lr 0.02]
    pipe = registry.load("lapgan", weights="RUN")

What eyescream does (``cifar/scripts/train_cifar*.lua``, ``cifar/train/*adversarial.lua``),
and this module with it:

* Data: the images are normalised with the training set's per-pixel mean and std
  (``image_utils.normalize``, eps 1e-7; ``--normalize global`` for ``normalizeGlobal``),
  then each level's pair is cut from them: the coarsest low-pass image ``l_K`` for G_K,
  and for each finer level the condition ``u(l_{k+1})`` and the band-pass image
  ``h_k = l_k - u(l_{k+1})`` (Eq. 3; ``networks.laplacian_pyramid``).
* Labels: a folder with one sub-folder per class (``DIR/cat/*.png``, ``DIR/dog/*.png``)
  trains the class-conditional model, classes in sorted sub-folder order; images lying
  directly in ``DIR`` (or a single sub-folder) train the unconditional one.
* Each step, for every level: D on half a batch of real residuals and half of G's, with
  their conditions (targets 1 and 0, ``nn.BCECriterion``), then G on a whole batch of fresh
  noise against target 1 (the non-saturating loss), through D.
* Optimiser: SGD, lr 0.02 divided by 1.00004 each epoch (floor 1e-6), momentum from 0 up
  by 0.0008 each epoch to 0.7, with Torch's ``optim.sgd`` dampening (= momentum), batch
  128 (64 real + 64 generated for D). An epoch is eyescream's: ``N / 64`` steps.
  ``optimizer="adam"`` (Adam, betas 0.5 / 0.999, constant lr) is not the authors': the
  demo weights use it, since eyescream's SGD needs far more steps than a few minutes give.

Differences: eyescream trains each level in its own run; here one run trains all levels
side by side (they share nothing, so each level sees what it would alone). eyescream
draws every sample with replacement (``math.random``); here batches come from the seeded
shuffle of ``BaseTrainer``, and G's step reuses the batch's conditions rather than
drawing 128 new ones. Its Parzen-window model selection is left out: the last step is kept.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.common.images import image_files, level_grid, read_image_folder
from models.common.train import BaseTrainer, LoopConfig
from models.errors import InvalidInput
from models.lapgan import networks as nets
from models.lapgan.pipeline import NORMALIZATION_FILE, sample_pyramid, to_pixels

logger = logging.getLogger(__name__)

NORMALIZE = ("pixel", "global")
OPTIMIZERS = ("sgd", "adam")


@dataclass
class TrainConfig(LoopConfig):
    """A LAPGAN training run; defaults are eyescream's CIFAR-10 settings (8 -> 16 -> 32)."""

    data_dir: str = ""                    # folder of images (one sub-folder per class for labels)
    out_dir: str = "runs/lapgan"
    sizes: tuple = nets.SIZES             # pyramid sizes, coarse to fine
    channels: int = 3
    noise_dim: int = 100                  # z_K of the coarse generator
    coarse_hidden_g: int = 1200           # units per hidden layer of G_K (paper, Sec. 4)
    coarse_hidden_d: int = 600            # of D_K
    hidden_g: int = 64                    # --hidden_G of the convolutional levels
    hidden_d: int = 64                    # --hidden_D
    conditional: bool | None = None       # None: class-conditional when DIR has class sub-folders
    normalize: str = "pixel"              # image_utils.normalize (pixel) or normalizeGlobal (global)
    batch_size: int = 128                 # opt.batchSize: half real, half generated for D
    lr: float = 0.02                      # opt.learningRate
    lr_decay: float = 1.00004             # lr /= lr_decay each epoch
    lr_min: float = 1e-6
    momentum: float = 0.0                 # opt.momentum at the start
    momentum_step: float = 0.0008         # added each epoch
    momentum_max: float = 0.7
    optimizer: str = "sgd"                # sgd (eyescream); adam (Adam, betas 0.5 / 0.999, at lr): not the authors'
    epochs: int = 100                     # full schedule when max_steps is None (eyescream runs until stopped)
    limit: int | None = None              # read at most this many images
    sample_every: int = 500
    checkpoint_every: int = 500
    sample_count: int = 8
    extra: dict = field(default_factory=dict)   # recorded in config.json (the demo's notes)


# ---------------------------------------------------------------------------------------
# Data


def read_labelled_folder(folder, size: int, channels=3, limit=None):
    """Images of ``folder`` as float (N, C, size, size) in [0, 1], their labels and class names.

    One sub-folder per class (two or more, every image inside one) gives labels (N,)
    in sorted sub-folder order; else labels is None and class_names empty.
    """
    folder = Path(folder)
    files = image_files(folder)
    parents = {f.parent for f in files}
    classes = sorted(p.name for p in parents)
    labelled = len(classes) >= 2 and all(p.parent == folder for p in parents)
    if not labelled:
        images = read_image_folder(folder, size, channels, limit)
        return (images + 1) / 2, None, []
    chunks, labels = [], []
    for index, name in enumerate(classes):
        images = read_image_folder(folder / name, size, channels)
        chunks.append(images)
        labels.append(torch.full((len(images),), index, dtype=torch.long))
    images, labels = torch.cat(chunks), torch.cat(labels)
    if limit is not None:
        keep = torch.from_numpy(np.random.default_rng(0).permutation(len(images))[:limit])
        images, labels = images[keep], labels[keep]
    return (images + 1) / 2, labels, classes


def normalization(images: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """eyescream's ``image_utils.normalize`` (per pixel, unbiased std, + 1e-7) or ``normalizeGlobal``."""
    if mode == "pixel":
        return images.mean(0), images.std(0, unbiased=True) + 1e-7
    if mode == "global":
        return images.mean().reshape(1, 1, 1), images.std(unbiased=True).reshape(1, 1, 1)
    raise InvalidInput(f"normalize must be one of {', '.join(NORMALIZE)}, got {mode!r}")


class ImageDataset(torch.utils.data.Dataset):
    """Normalised images (and labels) in memory; the pyramid is cut per batch in the trainer."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None):
        self.images, self.labels = images, labels

    def set_epoch(self, epoch: int):
        pass

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        item = {"image": self.images[index]}
        item["label"] = self.labels[index] if self.labels is not None else torch.tensor(-1)
        return item


def level_pairs(images: torch.Tensor, sizes) -> list[tuple[torch.Tensor | None, torch.Tensor]]:
    """[(condition, target)] per level, coarse to fine: (None, l_K), then (u(l_{k+1}), h_k)."""
    lows = [nets.image_scale(images, s) for s in sizes]
    pairs = [(None, lows[0])]
    for k in range(1, len(sizes)):
        coarse = nets.upsample(lows[k - 1], sizes[k])
        pairs.append((coarse, lows[k] - coarse))
    return pairs


# ---------------------------------------------------------------------------------------
# The trainer


class Trainer(BaseTrainer):
    """All levels of a LAPGAN, each an independent GAN, trained step by step together."""

    name = "lapgan"
    state_file = "train_state.pt"
    shown_losses = ("coarse_g", "coarse_d")

    def __init__(self, config: TrainConfig, images=None, labels=None, class_names=()):
        super().__init__(config)
        torch.manual_seed(config.seed)
        sizes = tuple(int(s) for s in config.sizes)
        if list(sizes) != sorted(set(sizes)) or len(sizes) < 2:
            raise InvalidInput(f"sizes must grow coarse to fine, got {sizes}")
        if images is None:
            images, labels, class_names = read_labelled_folder(config.data_dir, sizes[-1], config.channels,
                                                               config.limit)
        if config.conditional is False:
            labels, class_names = None, []
        elif config.conditional and labels is None:
            raise InvalidInput(f"a class-conditional LAPGAN needs one sub-folder of images per class in "
                               f"{config.data_dir}")
        if len(images) < 2:
            raise InvalidInput("LAPGAN training needs at least 2 images")
        self.sizes, self.class_names = sizes, list(class_names)
        self.classes = len(self.class_names) if labels is not None else 0
        self.mean, self.std = normalization(images, config.normalize)
        self.dataset = ImageDataset((images - self.mean) / self.std, labels)
        self.batch_size = min(config.batch_size, len(images) - len(images) % 2)
        self.steps_per_epoch = max(1, len(images) // self.batch_size)
        self.reference_epoch = max(1, math.ceil(len(images) / (self.batch_size // 2)))   # eyescream's epoch
        self.net_config = nets.published_config(self.classes, sizes, (config.coarse_hidden_g, config.coarse_hidden_d),
                                                (config.hidden_g, config.hidden_d), config.channels,
                                                config.noise_dim)
        self.nets = {name: nets.network_class(name)(**kwargs).to(self.device)
                     for name, kwargs in self.net_config.items()}
        self.level_names = nets.level_names(len(sizes))
        if config.optimizer not in OPTIMIZERS:
            raise InvalidInput(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}")
        if config.optimizer == "adam":
            self.opts = {name: torch.optim.Adam(net.parameters(), lr=config.lr, betas=(0.5, 0.999))
                         for name, net in self.nets.items()}
        else:
            self.opts = {name: torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                                               dampening=config.momentum)
                         for name, net in self.nets.items()}
        self.criterion = nn.BCELoss()

    # -- schedule -------------------------------------------------------------------------
    def schedule(self, step: int) -> tuple[float, float]:
        """(lr, momentum) at ``step``: updated once per eyescream epoch (N / 64 steps)."""
        c = self.config
        epoch = step // self.reference_epoch
        return max(c.lr / c.lr_decay ** epoch, c.lr_min), min(c.momentum + c.momentum_step * epoch, c.momentum_max)

    def set_schedule(self, step: int):
        if self.config.optimizer != "sgd":
            return                                   # Adam keeps its learning rate
        lr, momentum = self.schedule(step)
        for opt in self.opts.values():
            for group in opt.param_groups:
                group["lr"], group["momentum"], group["dampening"] = lr, momentum, momentum

    # -- one step -------------------------------------------------------------------------
    def one_hot(self, labels):
        return None if not self.classes else nets.one_hot(labels, self.classes).to(self.device)

    def noise(self, level: int, n: int) -> torch.Tensor:
        g = self.nets[self.level_names[level]]
        if level == 0:
            return (torch.rand(n, g.noise_dim) * 2 - 1).to(self.device)
        return (torch.rand(n, g.noise_planes, g.image_size, g.image_size) * 2 - 1).to(self.device)

    def run_g(self, level, noise, label, condition):
        g = self.nets[self.level_names[level]]
        return g(noise, label) if level == 0 else g(noise, label, condition)

    def run_d(self, level, image, label, condition):
        d = self.nets[self.level_names[level] + "_d"]
        return d(image, label) if level == 0 else d(image, label, condition)

    def d_step(self, level: int, target, label, condition) -> float:
        """D on half real, half generated (targets 1, 0): maximise log D(x) + log(1 - D(G(z)))."""
        half = len(target) // 2
        sub = (lambda t, s: None if t is None else t[s])
        with torch.no_grad():
            fake = self.run_g(level, self.noise(level, len(target) - half), sub(label, slice(half, None)),
                              sub(condition, slice(half, None)))
        inputs = torch.cat([target[:half], fake])
        targets = torch.cat([torch.ones(half, 1), torch.zeros(len(fake), 1)]).to(self.device)
        opt = self.opts[self.level_names[level] + "_d"]
        opt.zero_grad(set_to_none=True)
        loss = self.criterion(self.run_d(level, inputs, label, condition), targets)
        loss.backward()
        opt.step()
        return loss.item()

    def g_step(self, level: int, target, label, condition) -> float:
        """G on a batch of fresh noise against target 1 (maximise log D(G(z))); D is not updated."""
        name = self.level_names[level]
        d = self.nets[name + "_d"]
        opt = self.opts[name]
        opt.zero_grad(set_to_none=True)
        fake = self.run_g(level, self.noise(level, len(target)), label, condition)
        d.requires_grad_(False)
        try:
            loss = self.criterion(self.run_d(level, fake, label, condition),
                                  torch.ones(len(target), 1, device=self.device))
            loss.backward()
        finally:
            d.requires_grad_(True)
        opt.step()
        return loss.item()

    def train_step(self, batch: dict) -> dict:
        self.set_schedule(self.step)
        images = batch["image"].to(self.device)
        label = self.one_hot(batch["label"]) if self.classes else None
        losses = {}
        for level, (condition, target) in enumerate(level_pairs(images, self.sizes)):
            name = self.level_names[level]
            losses[f"{name}_d"] = self.d_step(level, target, label, condition)
            losses[f"{name}_g"] = self.g_step(level, target, label, condition)
        return losses

    @property
    def loss_names(self):
        return tuple(f"{name}_{part}" for name in self.level_names for part in ("d", "g"))

    def total_steps(self) -> int:
        return self.config.epochs * self.reference_epoch

    # -- files ----------------------------------------------------------------------------
    def checkpoint_networks(self):
        return {f"{name}.safetensors": net for name, net in self.nets.items()}

    @property
    def optimizers(self):
        return {f"optimizer_{name}": opt for name, opt in self.opts.items()}

    def start_run(self):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        np.savez(self.out_dir / f"{NORMALIZATION_FILE}.npz", mean=self.mean.numpy(), std=self.std.numpy())

    def config_json(self) -> dict:
        return {"model": "lapgan", "name": self.config.extra.get("name", f"lapgan run {self.out_dir.name}"),
                **self.net_config, "sizes": list(self.sizes), "class_names": self.class_names,
                "normalize": self.config.normalize, **self.config.extra,
                **self.progress_entries(), **self.history_entries()}

    def check_resumable(self, saved: dict):
        for name, kwargs in self.net_config.items():
            if saved.get(name) != kwargs:
                raise InvalidInput(f"the run in {self.out_dir} has another {name} ({saved.get(name)}); "
                                   "pass --restart or another --out")

    def save_samples(self, batch=None):
        """A row per sample: its pyramid levels coarse to fine, then the image."""
        n = self.config.sample_count
        generators = [self.nets[name] for name in self.level_names]
        state = torch.get_rng_state()
        torch.manual_seed(self.config.seed)
        try:
            label = nets.one_hot(torch.arange(n) % self.classes, self.classes) if self.classes else None
            noise = [self.noise(level, n).cpu() for level in range(len(self.sizes))]
            with torch.no_grad():
                images = sample_pyramid(generators, noise, label, self.device)
        finally:
            torch.set_rng_state(state)
        levels = [(str(s), to_pixels(image, self.mean, self.std)) for s, image in zip(self.sizes, images)]
        grid = level_grid(levels[:-1], levels[-1][1])
        self.save_sample_grid(f"step_{self.step:07d}.png", [[grid]])

    def summary_extras(self) -> dict:
        return {"classes": self.classes, "sizes": list(self.sizes)}


def train(images_dir, out_dir, resume=True, progress=True, **options) -> dict:
    """Train a LAPGAN on the images of ``images_dir`` into ``out_dir``; returns the run's summary."""
    config = TrainConfig(data_dir=str(images_dir), out_dir=str(out_dir), resume=resume, progress=progress,
                         **options)
    return Trainer(config).run()
