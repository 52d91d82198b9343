"""Training SGAN: the encoder E first, then the stacked generators, independently then jointly.

    talkingface train sgan --images DIGITS/ --out runs/sgan [--max-steps N] [--batch-size 100]

``--images`` is a folder of class sub-folders (``0/``, ``1/``, ... or any names, taken in
sorted order), each holding that class's images; they are read grey, resized to 28 x 28,
in [0, 1] as the reference's MNIST arrays. The run folder loads as weights
(``registry.load("sgan", weights=RUN)``): it is a project folder of ``encoder``, ``g1``,
``g0``, ``d1``, ``d0``.

Huang et al., CVPR 2017, Sec. 3 and the reference's ``mnist/train_independent.py`` /
``train_joint.py``:

1. E (``encoder_steps``): the reference ships E pretrained (``pretrained/encoder.npz``) and
   no code to train it; here it is trained as a classifier (cross-entropy, Adam 1e-3), then
   frozen. ``--encoder FILE.npz`` loads the authors' MNIST encoder instead.
2. Independent training (``independent_steps``, Sec. 3.2): G0 takes the real ``h1 = E1(x)``.
3. Joint training (the rest, Sec. 3.5): G0 takes G1's ``h1``. As in the reference, each
   generator is updated by its own loss only (G0's loss does not reach G1).

Each step: one discriminator update (D1, D0 and their Q heads), then one generator update,
with fresh noise ``z ~ U[0, 1)`` for each (the reference's two Theano functions):

* ``L_D_i = w_adv (BCE(D_i(h_i), 1) + BCE(D_i(G_i(.)), 0)) / 2 + w_ent L_ent_i`` (Eq. 3 and 5);
* ``L_G1 = w_adv BCE(D1(h1^), 1) + w_cond CE(E2(h1^), y) + w_ent L_ent_1`` (Eq. 2-5; the
  conditional loss at the top is the classifier's cross-entropy);
* ``L_G0 = w_adv BCE(D0(x^), 1) + w_cond ||E1(x^) - h1||^2 + w_ent L_ent_0``;
* ``L_ent_i = mean (Q_i(G_i(.)) - z_i)^2``: the entropy loss, Q_i a head of D_i (Sec. 3.4).

Weights ``w_adv = 1, w_cond = 1, w_ent = 10``, Adam(lr 1e-4, beta1 0.5) for G and D, batch
100: the reference's defaults. Its Adam puts the 1e-8 inside the square root; PyTorch's
Adam (eps 1e-8 outside) is used. The generators' batch norms use batch statistics in
training; their running averages (what sampling uses) advance on the generator updates
only, as the reference's ``bn_updates`` do.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.common.train import BaseTrainer, LoopConfig, load_safetensors
from models.errors import InvalidInput
from models.sgan.networks import (
    MNIST_D0,
    MNIST_D1,
    MNIST_ENCODER,
    MNIST_G0,
    MNIST_G1,
    Discriminator0,
    Discriminator1,
    Encoder,
    Generator0,
    Generator1,
)

IMAGE_SIZE = 28


# ---------------------------------------------------------------------------------------
# Data


def read_labelled_folder(folder, size=IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``folder/<class>/*.png`` -> (images (N, 1, size, size) in [0, 1], labels (N,), class names).

    Classes are the sub-folders in sorted order (numerically when all are numbers).
    """
    from models.common.images import read_image_folder

    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder of class sub-folders")
    classes = [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not classes:
        raise InvalidInput(f"{folder} has no class sub-folders (0/, 1/, ...): SGAN's top level is the label")
    classes.sort(key=lambda n: (0, int(n), n) if n.isdigit() else (1, 0, n))
    images, labels = [], []
    for index, name in enumerate(classes):
        part = read_image_folder(folder / name, size, channels=1)          # [-1, 1]
        images.append((part + 1) / 2)
        labels.append(torch.full((len(part),), index, dtype=torch.long))
    return torch.cat(images), torch.cat(labels), classes


class LabelledImages(torch.utils.data.Dataset):
    """Images and labels held in memory; items are dicts for the trainer's loader."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def set_epoch(self, epoch):
        pass

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return {"x": self.images[index], "y": self.labels[index]}


# ---------------------------------------------------------------------------------------
# Settings


@dataclass
class TrainConfig(LoopConfig):
    """What a run trains; defaults are the reference's (MNIST, ``train_joint.py``)."""

    data_dir: str = ""                  # class sub-folders of images
    out_dir: str = "runs/sgan"
    batch_size: int = 100
    lr: float = 1e-4                    # generators' Adam (--gen_lr)
    disc_lr: float = 1e-4               # discriminators' Adam (--disc_lr)
    encoder_lr: float = 1e-3            # E's Adam (the reference ships E pretrained)
    adv_weight: float = 1.0             # --advloss_weight
    cond_weight: float = 1.0            # --condloss_weight
    ent_weight: float = 10.0            # --entloss_weight
    encoder_steps: int = 2000           # stage 1
    independent_steps: int = 0          # stage 2 (the reference's MNIST joint script trains jointly at once)
    generator_epochs: int = 200         # --num_epoch of the generator stages, for the full schedule
    encoder_file: str | None = None     # the authors' encoder.npz: no stage 1
    encoder: dict = field(default_factory=lambda: dict(MNIST_ENCODER))
    g1: dict = field(default_factory=lambda: dict(MNIST_G1))
    g0: dict = field(default_factory=lambda: dict(MNIST_G0))
    d1: dict = field(default_factory=lambda: dict(MNIST_D1))
    d0: dict = field(default_factory=lambda: dict(MNIST_D0))
    name: str | None = None             # what config.json calls the weights


@contextlib.contextmanager
def frozen_running_stats(module: nn.Module):
    """Batch norms normalise with batch statistics but leave their running averages alone."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


def bce(logits, target: float):
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


# ---------------------------------------------------------------------------------------
# The trainer


class Trainer(BaseTrainer):
    """E, then G1 / G0 against D1 / D0 (with Q1 / Q0), as the module docstring says."""

    name = "sgan"
    state_file = "train_state.pt"
    shown_losses = ("g1_cond", "g0_cond", "d1_adv", "d0_adv")

    def __init__(self, config: TrainConfig, images=None, labels=None, classes=None):
        super().__init__(config)
        if images is None:
            size = (config.g0["base_size"] * 2 + 4) * 2 + 4                 # G0's output side
            images, labels, classes = read_labelled_folder(config.data_dir, size)
        if len(images) < config.batch_size:
            raise InvalidInput(f"{len(images)} images are fewer than a batch of {config.batch_size}")
        if len(classes) > config.g1["num_classes"]:
            raise InvalidInput(f"{len(classes)} classes; SGAN's label has {config.g1['num_classes']}")
        self.classes = list(classes)
        self.dataset = LabelledImages(images, labels)
        self.batch_size = config.batch_size
        self.steps_per_epoch = len(images) // config.batch_size          # the reference drops the rest
        torch.manual_seed(config.seed)
        dev = self.device
        self.encoder = Encoder(**config.encoder).to(dev)
        self.g1 = Generator1(**config.g1).to(dev)
        self.g0 = Generator0(**config.g0).to(dev)
        self.d1 = Discriminator1(**config.d1).to(dev)
        self.d0 = Discriminator0(**config.d0).to(dev)
        for net in (self.g1, self.g0, self.d1, self.d0):                  # the reference's Normal(0.02)
            for m in net.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                    nn.init.normal_(m.weight, 0.0, 0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        self.encoder_steps = config.encoder_steps
        if config.encoder_file:
            from models.sgan.convert import convert_encoder, read_npz

            loaded = convert_encoder(read_npz(config.encoder_file), Path(config.encoder_file).name)
            from models.weights import load_weights

            load_weights(self.encoder, loaded.state_dict(), Path(config.encoder_file).name)   # sizes must match
            self.encoder_steps = 0
        self.opt_e = torch.optim.Adam(self.encoder.parameters(), lr=config.encoder_lr)
        self.opt_g = torch.optim.Adam([*self.g1.parameters(), *self.g0.parameters()], lr=config.lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam([*self.d1.parameters(), *self.d0.parameters()], lr=config.disc_lr,
                                      betas=(0.5, 0.999))

    # -- what BaseTrainer asks for --------------------------------------------------------
    @property
    def loss_names(self):
        return ("enc_ce", "enc_acc", "d1_adv", "d1_ent", "d0_adv", "d0_ent", "g1_adv", "g1_cond", "g1_ent",
                "g0_adv", "g0_cond", "g0_ent")

    @property
    def optimizers(self):
        return {"optimizer_e": self.opt_e, "optimizer_g": self.opt_g, "optimizer_d": self.opt_d}

    def total_steps(self):
        return self.encoder_steps + self.config.generator_epochs * self.steps_per_epoch

    def checkpoint_networks(self):
        return {"encoder.safetensors": self.encoder, "g1.safetensors": self.g1, "g0.safetensors": self.g0,
                "d1.safetensors": self.d1, "d0.safetensors": self.d0}

    def config_json(self):
        config = self.config
        return {"model": "sgan", "name": config.name or f"trained by talkingface on {self.data_dir.name}",
                "dataset": "mnist", "classes": self.classes, "encoder_steps": self.encoder_steps,
                **{key: dict(net.config) for key, net in (("encoder", self.encoder), ("g1", self.g1),
                                                          ("g0", self.g0), ("d1", self.d1), ("d0", self.d0))},
                **self.progress_entries(), **self.history_entries()}

    def check_resumable(self, saved):
        for key, net in (("g1", self.g1), ("g0", self.g0), ("encoder", self.encoder)):
            if saved.get(key) != dict(net.config):
                raise InvalidInput(f"the run in {self.out_dir} has another {key} ({saved.get(key)}); "
                                   "pass --restart or another --out")

    def restore_networks(self):
        return {name: load_safetensors(module, self.out_dir / name)
                for name, module in self.checkpoint_networks().items()}

    # -- one step -------------------------------------------------------------------------
    def stage(self, step=None) -> str:
        step = self.step if step is None else step
        if step < self.encoder_steps:
            return "encoder"
        return "independent" if step < self.encoder_steps + self.config.independent_steps else "joint"

    def train_step(self, batch):
        x, y = batch["x"].to(self.device), batch["y"].to(self.device)
        if self.stage() == "encoder":
            return self.encoder_step(x, y)
        return self.gan_step(x, y, joint=self.stage() == "joint")

    def encoder_step(self, x, y):
        self.encoder.train()
        logits = self.encoder.classify_logits(self.encoder(x))
        loss = F.cross_entropy(logits, y)
        self.opt_e.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_e.step()
        return {"enc_ce": loss.item(), "enc_acc": (logits.argmax(1) == y).float().mean().item()}

    def noise(self, n):
        return torch.rand(n, self.g1.z_dim).to(self.device), torch.rand(n, self.g0.z_dim).to(self.device)

    def generate(self, y_onehot, real_h1, joint):
        """(z1, z0, G1's h1, G0's input h1, G0's image)."""
        z1, z0 = self.noise(len(y_onehot))
        gen_h1 = self.g1(z1, y_onehot)
        h_in = gen_h1.detach() if joint else real_h1
        return z1, z0, gen_h1, h_in, self.g0(h_in, z0)

    def disc_losses(self, x, y_onehot, real_h1, joint) -> dict:
        """D1, D0 and the Q heads' terms on fresh fakes, and their weighted sum ``total`` (Eq. 3, 5)."""
        cfg = self.config
        with torch.no_grad(), frozen_running_stats(self.g1), frozen_running_stats(self.g0):
            z1, z0, gen_h1, _, gen_x = self.generate(y_onehot, real_h1, joint)
        real1, _ = self.d1.logits(real_h1)
        fake1, q1 = self.d1.logits(gen_h1)
        real0, _ = self.d0.logits(x)
        fake0, q0 = self.d0.logits(gen_x)
        out = {"d1_adv": 0.5 * bce(real1, 1.0) + 0.5 * bce(fake1, 0.0),
               "d0_adv": 0.5 * bce(real0, 1.0) + 0.5 * bce(fake0, 0.0),
               "d1_ent": F.mse_loss(q1, z1), "d0_ent": F.mse_loss(q0, z0)}
        out["total"] = (cfg.adv_weight * (out["d1_adv"] + out["d0_adv"])
                        + cfg.ent_weight * (out["d1_ent"] + out["d0_ent"]))
        return out

    def gen_losses(self, y, y_onehot, real_h1, joint) -> dict:
        """G1's and G0's terms on fresh noise, and their weighted sum ``total`` (Eq. 2-5)."""
        cfg = self.config
        z1, z0, gen_h1, h_in, gen_x = self.generate(y_onehot, real_h1, joint)
        fake1, q1 = self.d1.logits(gen_h1)
        fake0, q0 = self.d0.logits(gen_x)
        out = {"g1_adv": bce(fake1, 1.0), "g0_adv": bce(fake0, 1.0),
               "g1_cond": F.cross_entropy(self.encoder.classify_logits(gen_h1), y),     # at the top: E2's CE
               "g0_cond": F.mse_loss(self.encoder(gen_x), h_in),                        # ||E1(x^) - h1||^2
               "g1_ent": F.mse_loss(q1, z1), "g0_ent": F.mse_loss(q0, z0)}
        out["total"] = (cfg.adv_weight * (out["g1_adv"] + out["g0_adv"])
                        + cfg.cond_weight * (out["g1_cond"] + out["g0_cond"])
                        + cfg.ent_weight * (out["g1_ent"] + out["g0_ent"]))
        self.last_outputs = {"gen_x": gen_x.detach()}
        return out

    def gan_inputs(self, x, y):
        """One-hot labels and the real ``h1 = E1(x)`` (E frozen, the reference's deterministic=True)."""
        self.encoder.eval().requires_grad_(False)
        self.g1.train(), self.g0.train()
        with torch.no_grad():
            real_h1 = self.encoder(x)
        return F.one_hot(y, self.g1.num_classes).float(), real_h1

    def gan_step(self, x, y, joint):
        y_onehot, real_h1 = self.gan_inputs(x, y)
        # 1. Discriminators and Q heads
        d = self.disc_losses(x, y_onehot, real_h1, joint)
        self.opt_d.zero_grad(set_to_none=True)
        d["total"].backward()
        self.opt_d.step()
        # 2. Generators, fresh noise
        g = self.gen_losses(y, y_onehot, real_h1, joint)
        self.opt_g.zero_grad(set_to_none=True)
        g["total"].backward()
        self.opt_g.step()
        return {k: v.item() for k, v in {**d, **g}.items() if k != "total"}

    # -- samples ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample_grid(self, per_class=8, seed=0) -> np.ndarray:
        """One row per class of images sampled top-down (batch norms on running averages)."""
        from models.common.images import image_grid
        from models.sgan.pipeline import to_uint8

        self.g1.eval(), self.g0.eval()
        k = self.g1.num_classes
        generator = torch.Generator().manual_seed(seed)
        y = F.one_hot(torch.arange(k).repeat_interleave(per_class), k).float().to(self.device)
        z1 = torch.rand(len(y), self.g1.z_dim, generator=generator).to(self.device)
        z0 = torch.rand(len(y), self.g0.z_dim, generator=generator).to(self.device)
        images = to_uint8(self.g0(self.g1(z1, y), z0))
        self.g1.train(), self.g0.train()
        return image_grid(images, columns=per_class)

    def save_samples(self, batch=None):
        if self.stage(self.step - 1) == "encoder":
            return
        from models.common.train import save_png

        save_png(self.samples_dir() / f"step_{self.step:06d}.png", self.sample_grid())


def train(images, out_dir, resume=True, progress=True, **options) -> dict:
    """Train SGAN on the class folders ``images`` into ``out_dir``; the run summary."""
    config = TrainConfig(data_dir=str(images), out_dir=str(out_dir), resume=resume, progress=progress, **options)
    return Trainer(config).run()
