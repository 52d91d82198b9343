"""GRAN training as the authors' ``main_granI_cifar10.py`` / ``main_granI_lsun.py`` and ``optimize_gan.py``.

    talkingface train gran --images DIR --out RUN [--preset cifar10|lsun|mnist] [--max-steps N]

Every step (``lets_train`` with K = 1): one discriminator update on a batch of real
images and a fresh batch of samples, then one generator update on another fresh batch:

    cost_dis = BCE(D(x), 1) + BCE(D(G(z)), 0) + lambda * 0.5 (|W|^2 + |W_y|^2)    (gran.cost_dis)
    cost_gen = BCE(D(G(z)), 1)                                                    (gran.cost_gen)

Images are in [0, 1] (the authors divide by 255); the generator ends in a sigmoid.
Both sides use the authors' Adam (``Optimize.ADAM``, after the DRAW code it cites),
whose first-moment rate decays as 1 - 0.9 lambda^(t-1) with lambda = 1e-8 -- so from
the second step on the first moment is the gradient itself -- with bias corrections
1 - 0.9^t and 1 - 0.999^t; each epoch's learning rate is eps / (1 + epoch / 50) (25 for
LSUN). Published settings (``PRESETS``): CIFAR-10 batch 100, eps_gen 1e-4, eps_dis 4e-5,
lambda 5e-6, 20 epochs, T = 5; LSUN eps_gen 2e-4, eps_dis 1e-4, lambda 1e-6, 15 epochs.
The 64 and 128 discriminators do not train their hidden bias (it is not in their params).

The run folder loads as weights: ``registry.load("gran", weights=RUN)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from models.common.images import image_grid, read_image_folder
from models.common.train import BaseTrainer, LoopConfig, read_run_config
from models.errors import InvalidInput
from models.gran.networks import CONFIGS, GRANDiscriminator, GRANGenerator, sequential_drawing
from models.gran.pipeline import to_uint8_unit

# The authors' optimisation settings per configuration (their main_* files).
PRESETS = {
    "cifar10": {"batch_size": 100, "lr_g": 1e-4, "lr_d": 4e-5, "weight_decay": 5e-6, "epochs": 20,
                "lr_decay_epochs": 50},
    "lsun": {"batch_size": 100, "lr_g": 2e-4, "lr_d": 1e-4, "weight_decay": 1e-6, "epochs": 15,
             "lr_decay_epochs": 25},
    "lsun128": {"batch_size": 100, "lr_g": 2e-4, "lr_d": 1e-4, "weight_decay": 1e-6, "epochs": 15,
                "lr_decay_epochs": 25},
    "mnist": {"batch_size": 100, "lr_g": 1e-4, "lr_d": 4e-5, "weight_decay": 5e-6, "epochs": 20,
              "lr_decay_epochs": 50},
}


class GRANAdam(torch.optim.Optimizer):
    """``Optimize.ADAM`` of the reference, with its arguments (beta1 = 0.1, beta2 = 0.001, l = 1e-8).

    Per parameter: b1_t = 1 - (1 - beta1) l^(t-1); m = b1_t g + (1 - b1_t) m;
    v = beta2 g^2 + (1 - beta2) v; p -= lr (m / (1 - (1 - beta1)^t)) / (sqrt(v / (1 - (1 - beta2)^t)) + eps).
    """

    def __init__(self, params, lr=1e-4, beta1=0.1, beta2=0.001, eps=1e-8, decay=1e-8):
        super().__init__(params, {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "decay": decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2, eps, decay = group["beta1"], group["beta2"], group["eps"], group["decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["t"] = torch.tensor(1.0)
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                t = float(state["t"])
                b1_t = 1 - (1 - beta1) * decay ** (t - 1)
                m, v, g = state["m"], state["v"], p.grad
                m.mul_(1 - b1_t).add_(g, alpha=b1_t)
                v.mul_(1 - beta2).addcmul_(g, g, value=beta2)
                m_hat = m / (1 - (1 - beta1) ** t)
                v_hat = v / (1 - (1 - beta2) ** t)
                p.sub_(group["lr"] * m_hat / (v_hat.sqrt() + eps))
                state["t"] += 1
        return None


@dataclass
class TrainConfig(LoopConfig):
    """A GRAN run: the data, the networks' sizes (a ``preset`` of ``networks.CONFIGS`` by default)
    and the authors' optimisation settings."""

    data_dir: str = ""                       # a folder of images (--images)
    out_dir: str = "runs/gran"
    preset: str = "cifar10"                  # networks.CONFIGS / PRESETS entry
    image_size: int | None = None            # None: the preset's; else widths must fit it
    channels: int | None = None              # 1 (grey) or 3; None: the preset's
    z_dim: int | None = None
    widths: list | None = None               # generator widths; None: the preset's
    d_widths: list | None = None             # discriminator widths; None: the preset's
    num_hid: int | None = None               # discriminator's tanh units
    num_steps: int | None = None             # T
    batch_size: int | None = None            # None: the preset's (100)
    lr: float | None = None                  # both sides' eps at once (the shell's --lr)
    lr_g: float | None = None
    lr_d: float | None = None
    weight_decay: float | None = None        # lambda of the discriminator's L2 term
    epochs: int | None = None
    lr_decay_epochs: int | None = None
    limit: int | None = None                 # read at most this many images
    generator: dict = field(default_factory=dict)       # resolved in __post_init__
    discriminator: dict = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        if self.preset not in CONFIGS:
            raise InvalidInput(f"unknown GRAN preset {self.preset!r}; known: {', '.join(CONFIGS)}")
        networks = CONFIGS[self.preset]
        gen, dis = dict(networks["generator"]), dict(networks["discriminator"])
        for key, value in (("z_dim", self.z_dim), ("widths", self.widths), ("channels", self.channels),
                           ("num_steps", self.num_steps)):
            if value is not None:
                gen[key] = value
        for key, value in (("widths", self.d_widths), ("channels", self.channels), ("num_hid", self.num_hid)):
            if value is not None:
                dis[key] = value
        if self.image_size is not None:
            depth = len(gen["widths"])
            if self.image_size % 2 ** depth:
                raise InvalidInput(f"image_size {self.image_size} is not a multiple of 2^{depth}")
            gen["first_size"] = self.image_size // 2 ** depth
            dis["image_size"] = self.image_size
        self.generator, self.discriminator = {**self.generator, **gen}, {**self.discriminator, **dis}
        self.image_size = gen["first_size"] * 2 ** len(gen["widths"])
        if dis["image_size"] != self.image_size:
            raise InvalidInput("the generator's and the discriminator's image sizes differ")
        preset = PRESETS[self.preset]
        for key in ("batch_size", "lr_g", "lr_d", "weight_decay", "epochs", "lr_decay_epochs"):
            if getattr(self, key) is None:
                setattr(self, key, preset[key])
        if self.lr is not None:
            self.lr_g = self.lr_d = self.lr


class ImageSet(Dataset):
    """Training images in [0, 1], (C, S, S) float32."""

    def __init__(self, images: torch.Tensor):
        self.images = ((images + 1) / 2).clamp(0, 1).contiguous()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return {"image": self.images[index]}

    def set_epoch(self, epoch):
        pass


class Trainer(BaseTrainer):
    """GRAN's generator and discriminator, trained as the authors' ``lets_train``."""

    name = "gran"
    state_file = "train_state.pt"
    shown_losses = ("d_loss", "g_loss")

    def __init__(self, config: TrainConfig, images: torch.Tensor | None = None,
                 callback: Callable[[int, int], None] | None = None):
        super().__init__(config)
        c = config
        if images is None:
            if not c.data_dir:
                raise InvalidInput("GRAN training needs a folder of images (--images DIR)")
            images = read_image_folder(c.data_dir, c.image_size, c.generator["channels"], limit=c.limit)
        self.dataset = ImageSet(images)
        self.batch_size = min(c.batch_size, len(self.dataset))
        self.steps_per_epoch = max(1, len(self.dataset) // self.batch_size)    # whole batches, as the authors
        torch.manual_seed(c.seed)
        self.generator = GRANGenerator(**c.generator).to(self.device)
        self.discriminator = GRANDiscriminator(**c.discriminator).to(self.device)
        d_params = [p for name, p in self.discriminator.named_parameters()
                    if name != "hbias" or c.image_size < 64]          # convnet64/128 leave hbias out
        self.opt_g = GRANAdam(self.generator.parameters(), lr=c.lr_g)
        self.opt_d = GRANAdam(d_params, lr=c.lr_d)
        self.callback = callback

    @property
    def loss_names(self):
        return ("d_loss", "g_loss", "d_real", "d_fake")

    def noise(self) -> torch.Tensor:
        return torch.randn(self.batch_size, self.generator.z_dim).to(self.device)

    def d_cost(self, real: torch.Tensor, z: torch.Tensor):
        """cost_dis + lambda * weight_decay_l2; also the mean outputs on real and generated images."""
        with torch.no_grad():
            fake, _ = self.generator(z)
        p_real, p_fake = self.discriminator(real).flatten(), self.discriminator(fake).flatten()
        cost = (F.binary_cross_entropy(p_real, torch.ones_like(p_real))
                + F.binary_cross_entropy(p_fake, torch.zeros_like(p_fake))
                + self.config.weight_decay * self.discriminator.weight_decay())
        return cost, p_real.mean().item(), p_fake.mean().item()

    def g_cost(self, z: torch.Tensor) -> torch.Tensor:
        """cost_gen: BCE(D(G(z)), 1)."""
        fake, _ = self.generator(z)
        p_fake = self.discriminator(fake).flatten()
        return F.binary_cross_entropy(p_fake, torch.ones_like(p_fake))

    def train_step(self, batch: dict) -> dict:
        real = batch["image"].to(self.device)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss, d_real, d_fake = self.d_cost(real, self.noise())
        d_loss.backward()
        self.opt_d.step()
        self.opt_g.zero_grad(set_to_none=True)
        self.discriminator.requires_grad_(False)
        g_loss = self.g_cost(self.noise())
        g_loss.backward()
        self.discriminator.requires_grad_(True)
        self.opt_g.step()
        if self.callback is not None:
            self.callback(self.step + 1, self.config.max_steps or self.total_steps())
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item(), "d_real": d_real, "d_fake": d_fake}

    def start_epoch(self, epoch: int):
        """get_epsilon: eps / (1 + epoch / lr_decay_epochs)."""
        factor = 1.0 / (1.0 + epoch / self.config.lr_decay_epochs)
        for optimizer, lr in ((self.opt_g, self.config.lr_g), (self.opt_d, self.config.lr_d)):
            for group in optimizer.param_groups:
                group["lr"] = lr * factor

    def total_steps(self) -> int:
        return (self.config.epochs + 1) * self.steps_per_epoch         # the authors loop num_epoch + 1 times

    def checkpoint_networks(self):
        return {"generator.safetensors": self.generator, "discriminator.safetensors": self.discriminator}

    def config_json(self) -> dict:
        return {"model": "gran", "name": f"GRAN trained on {self.data_dir.name or 'images'}",
                "generator": self.generator.config, "discriminator": self.discriminator.config,
                "image_size": self.generator.image_size, **self.progress_entries(), **self.history_entries()}

    def check_resumable(self, saved: dict):
        if saved.get("generator") != self.generator.config or saved.get("discriminator") != self.discriminator.config:
            raise InvalidInput(f"the run in {self.out_dir} has other network sizes; pass resume=False (--restart)")

    @torch.no_grad()
    def save_samples(self, batch: dict | None = None):
        """samples/step_<N>.png: rows of 8 samples, the canvas after each step then the image."""
        self.generator.eval()
        generator = torch.Generator().manual_seed(self.config.seed)
        z = torch.randn(max(self.batch_size, 8), self.generator.z_dim, generator=generator).to(self.device)
        _, updates = self.generator(z)
        self.generator.train()
        steps = [to_uint8_unit(canvas[:8]) for canvas in sequential_drawing(updates)]
        tiles = np.stack(steps, axis=1).reshape(-1, *steps[0].shape[1:])
        from models.common.train import save_png

        save_png(self.samples_dir() / f"step_{self.step:06d}.png", image_grid(tiles, columns=len(steps)))


def read_config(out_dir) -> dict:
    return read_run_config(out_dir, "gran")


def train(images_dir, out_dir, callback=None, images: torch.Tensor | None = None, **options) -> dict:
    """Train GRAN on the images of ``images_dir`` into ``out_dir``; returns the run's summary."""
    config = TrainConfig(data_dir=str(images_dir or ""), out_dir=str(out_dir), **options)
    return Trainer(config, images=images, callback=callback).run()


def from_args(args) -> dict:
    """``talkingface train gran``: the shell's shared flags and GRAN's own."""
    if not getattr(args, "images", None):
        raise InvalidInput("talkingface train gran needs --images DIR (a folder of training images)")
    if not Path(args.images).is_dir():
        raise InvalidInput(f"--images {args.images} is not a folder")
    options = {"preset": getattr(args, "preset", None) or "cifar10"}
    for key in ("max_steps", "time_budget", "batch_size", "lr", "device", "seed", "image_size", "num_steps",
                "channels"):
        value = getattr(args, key, None)
        if value is not None:
            options[key] = value
    width = getattr(args, "width", None)
    if width is not None:
        depth = len(CONFIGS[options["preset"]]["generator"]["widths"])
        options["widths"] = [width * 2 ** (depth - 1 - i) for i in range(depth)]
        options["d_widths"] = [width * 2 ** (depth - 1 - i) for i in range(depth)]
    summary = train(args.images, args.out or "runs/gran", resume=not getattr(args, "restart", False),
                    progress=not getattr(args, "quiet", False), **options)
    return {k: summary[k] for k in ("step", "stopped", "losses", "out_dir")}

