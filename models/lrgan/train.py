"""Training LR-GAN as the reference's train.py does (github.com/jwyang/lr-gan.pytorch).

    talkingface train lrgan --images DIR --out RUN [--image-size 32 --ntimestep 2 --ngf 64 ...]

The reference's losses and settings: DCGAN's binary cross-entropy game (D: real images
labelled 1, the generator's 0, one backward each; G: its images labelled 1, through the D
just updated), Adam with lr 2e-4 and betas (0.5, 0.999) for both, batches of 64, noise
(ntimestep, batch, nz) ~ N(0, 1), images scaled to [-1, 1] (one-channel sets: the mean of
the channels), 25 epochs (its ``--niter`` default), PyTorch's default initialisation (its
``weights_init`` is commented out). ``rot`` is 0.1 for colour images, 0.3 for one channel
(train.py's CIFAR-10 / MNIST settings).

The run folder (``config.json`` with ``model`` "lrgan" and the ``generator`` arguments,
``generator.safetensors``, ``discriminator.safetensors``, ``log.csv``, ``samples/``) loads
with ``registry.load("lrgan", weights=RUN)``; ``export`` writes a smaller folder of the
generator alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.common.images import read_image_folder, to_uint8
from models.common.pipeline import save_project
from models.common.train import BaseTrainer, LoopConfig, read_run_config, save_png
from models.errors import InvalidInput
from models.lrgan.networks import LRGANDiscriminator, LRGANGenerator

GENERATOR_FILE = "generator.safetensors"
DISCRIMINATOR_FILE = "discriminator.safetensors"


@dataclass
class TrainConfig(LoopConfig):
    """One run's settings (the reference's flags and defaults); ``config.json`` records them as ``train``."""

    data_dir: str  # folder of training images (--images)
    out_dir: str
    image_size: int = 32  # --imageSize (CIFAR-10, MNIST-ONE: 32; CUB-200, LFW, MNIST-TWO: 64)
    ntimestep: int = 2  # --ntimestep: one background + ntimestep - 1 foregrounds
    maxobjscale: float = 1.2  # --maxobjscale
    rot: float | None = None  # None: 0.1 for colour images, 0.3 for one channel (train.py)
    nc: int = 3  # image channels (1: the channels' mean, as for MNIST)
    nz: int = 100  # --nz
    ngf: int = 64  # --ngf
    ndf: int = 64  # --ndf
    batch_size: int = 64  # --batchSize
    lr: float = 2e-4  # --lr, both networks
    beta1: float = 0.5  # --beta1
    epochs: int = 25  # --niter
    limit: int | None = None  # read at most this many images

    def __post_init__(self):
        super().__post_init__()
        if self.nc not in (1, 3):
            raise InvalidInput(f"nc must be 1 or 3, got {self.nc}")
        for name in ("ntimestep", "nz", "ngf", "ndf", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.image_size < 8 or self.image_size & (self.image_size - 1):
            raise InvalidInput(f"image_size must be a power of two of at least 8, got {self.image_size}")
        if self.rot is None:
            self.rot = 0.1 if self.nc == 3 else 0.3

    def networks(self) -> dict:
        """Constructor arguments of the generator and the discriminator."""
        return {"generator": dict(image_size=self.image_size, ntimestep=self.ntimestep, maxobjscale=self.maxobjscale,
                                  nz=self.nz, ngf=self.ngf, nc=self.nc, rot=self.rot),
                "discriminator": dict(image_size=self.image_size, ndf=self.ndf, nc=self.nc)}


class ImageSet(torch.utils.data.Dataset):
    """Training images held in memory, float (C, S, S) in [-1, 1]."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def set_epoch(self, epoch: int):
        """Nothing changes between epochs (the reference draws no augmentation)."""

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return {"image": self.images[index]}


def discriminator_loss(netD, real: torch.Tensor, fake: torch.Tensor) -> dict:
    """The reference's D step: BCE(D(x), 1) and BCE(D(G(z)), 0), each backpropagated."""
    criterion = nn.BCELoss()
    out_real = netD(real)
    err_real = criterion(out_real, torch.ones_like(out_real))
    err_real.backward()
    out_fake = netD(fake.detach())
    err_fake = criterion(out_fake, torch.zeros_like(out_fake))
    err_fake.backward()
    return {"d_loss": (err_real + err_fake).item(), "d_real": out_real.mean().item(),
            "d_fake": out_fake.mean().item()}


def generator_loss(netD, fake: torch.Tensor) -> torch.Tensor:
    """The reference's G loss: BCE(D(G(z)), 1) (the non-saturating game)."""
    out = netD(fake)
    return nn.functional.binary_cross_entropy(out, torch.ones_like(out))


class Trainer(BaseTrainer):
    """One LR-GAN training run (``train`` is the entry point)."""

    name = "lrgan"
    state_file = "train_state.pt"
    shown_losses = ("g_loss", "d_loss")

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        # 1. Data
        images = read_image_folder(self.data_dir, config.image_size, config.nc, limit=config.limit)
        self.dataset = ImageSet(images)
        self.batch_size = min(config.batch_size, len(self.dataset))
        self.steps_per_epoch = math.ceil(len(self.dataset) / self.batch_size)   # DataLoader keeps the last batch
        # 2. Networks and optimisers
        torch.manual_seed(config.seed)
        self.network_config = config.networks()
        self.generator = LRGANGenerator(**self.network_config["generator"]).to(self.device)
        self.discriminator = LRGANDiscriminator(**self.network_config["discriminator"]).to(self.device)
        betas = (config.beta1, 0.999)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas)
        self.fixed_noise = torch.randn(config.ntimestep, 8, config.nz)

    @property
    def loss_names(self) -> tuple[str, ...]:
        return ("g_loss", "d_loss", "d_real", "d_fake")

    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch

    def train_step(self, batch: dict) -> dict:
        real = batch["image"].to(self.device)
        self.generator.train()
        self.discriminator.train()
        # (1) D: maximise log D(x) + log(1 - D(G(z)))
        self.discriminator.zero_grad()
        noise = torch.randn(self.config.ntimestep, real.shape[0], self.config.nz).to(self.device)
        fake, _, _, _ = self.generator(noise)
        losses = discriminator_loss(self.discriminator, real, fake)
        self.opt_d.step()
        # (2) G: maximise log D(G(z)), through the D just updated
        self.generator.zero_grad()
        g_loss = generator_loss(self.discriminator, fake)
        g_loss.backward()
        self.opt_g.step()
        return {"g_loss": g_loss.item(), **losses}

    def checkpoint_networks(self) -> dict[str, nn.Module]:
        return {GENERATOR_FILE: self.generator, DISCRIMINATOR_FILE: self.discriminator}

    def config_json(self) -> dict:
        # "model" and "generator" make the run folder a project weights folder (read_project)
        return {"model": "lrgan", "name": f"run {self.out_dir.name}", **self.network_config,
                **self.progress_entries(), "images": len(self.dataset), "batch_size": self.batch_size,
                **self.history_entries()}

    def check_resumable(self, saved: dict):
        if saved.get("model") != "lrgan" or saved.get("generator") != self.network_config["generator"] \
                or saved.get("discriminator") != self.network_config["discriminator"]:
            raise InvalidInput(f"{self.out_dir} holds a run of other networks; use the same settings, "
                               "another folder, or --restart")

    def save_samples(self, batch: dict | None = None):
        """``samples/<step>.png``: per fixed noise a row: each canvas, each foreground, each mask."""
        grid = sample_grid(self.generator, self.fixed_noise.to(self.device))
        save_png(self.samples_dir() / f"{self.step:08d}.png", grid)


def train(images, out_dir, **options) -> dict:
    """Train LR-GAN on a folder of images; returns `Trainer.run`'s summary.

    Args:
        images: folder of training images (any size; resized and centre-cropped).
        out_dir: the run folder.
        **options: fields of `TrainConfig` (``max_steps``, ``time_budget``, ``image_size``,
            ``ngf`` ...).
    """
    return Trainer(TrainConfig(data_dir=str(images), out_dir=str(out_dir), **options)).run()


def export(run_dir, out_dir, name: str = "project", half: bool = False, extra: dict | None = None) -> Path:
    """The generator of a run as a project weights folder (float16 storage with ``half``)."""
    config = read_run_config(run_dir, "LR-GAN")
    if config.get("model") != "lrgan":
        raise InvalidInput(f"{run_dir} holds no LR-GAN training run")
    from models.common.pipeline import load_project_networks

    generator = load_project_networks(run_dir, {"generator": LRGANGenerator}, config)["generator"]
    if half:
        generator = generator.half()
    info = {"step": config.get("step"), "images": config.get("images"), "float16": half}
    return save_project(out_dir, "lrgan", {"generator": generator}, name=name, extra={**info, **(extra or {})})


def sample_grid(generator: LRGANGenerator, noise: torch.Tensor) -> np.ndarray:
    """uint8 rows of (canvases..., foregrounds..., masks...) for ``noise``, for reports."""
    was_training = generator.training
    generator.eval()
    with torch.no_grad():
        _, canvases, foregrounds, masks = generator(noise)
    columns = [to_uint8(c) for c in canvases] + [to_uint8(f) for f in foregrounds] \
        + [to_uint8(m * 2 - 1) for m in masks]
    generator.train(was_training)
    return np.concatenate([np.concatenate(row, axis=1) for row in zip(*columns)], axis=0)
