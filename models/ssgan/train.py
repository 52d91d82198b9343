"""Training S^2-GAN as the authors do: Structure-GAN, the normal FCN, then Style-GAN.

Wang and Gupta, ECCV 2016 (arXiv:1603.05631); github.com/xiaolonw/ss-gan:

* ``structure`` (``structure-gan/train.lua`` + ``adversarial_ct.lua``): each step the
  discriminator sees a batch whose first half is real normals and second half
  G(z), z ~ U(-1, 1); loss BCE over the batch (Eq. 1). The generator then draws a full batch
  and minimises BCE(D(G(z)), 1).
* ``fcn`` (``style-gan-fcn/train_fcn.lua``): the FCN classifies each pixel of the 4x
  (nearest) upsampled image into the normal clusters of a codebook (the authors' 40 of
  ``codebook_40.txt``, or a Fibonacci hemisphere of 40 directions); ClassNLL, SGD
  lr 0.01, momentum 0.9, weight decay 5e-4.
* ``style`` (``style-gan-fcn/train_gan.lua`` + ``joint_train.lua``): the conditional D on
  (image, normals), real half / fake half as above; G minimises
  BCE(D(G(z, n), n), 1) + lambda * NLL(FCN(up4(G(z, n))), clusters(n)) with lambda = 0.1 and
  the FCN frozen (``learningRate_FCN = 0``; it runs with batch statistics, as the Lua
  graph left in training mode). Without ``fcn_run`` the loss is the adversarial one alone
  (``style-gan-nofcn``, which also puts coefL2 = 1e-5 on the weights: ``l2``).

* ``joint`` (``joint-ssgan/train.lua`` + ``joint_train_bi.lua``, Sec. 3.3): both GANs from
  their runs, fine-tuned together at lr 1e-6 (the Structure-GAN's pair at a tenth of it).
  The Style-GAN's D sees real (image, normals) pairs and G(z, up(G1(z1))) with the
  generated normals; the Structure-GAN's D1 real normals and G1(z1). G minimises
  BCE(D(G(z, up(G1(z1))), up(G1(z1))), 1) and is always updated; its gradient reaches G1
  through the normals, scaled by lambda0 = 0.1, and adds to G1's own BCE(D1(G1(z1)), 1)
  (times lambda = 1); G1 follows D1's margin rule.

Shared by the adversarial stages (``adversarial_ct.lua``'s ``adam``): Adam, lr 2e-4,
beta1 0.5, with the learning rate divided by 50 for the first 10 updates and by 5 until
the 30th; a margin rule on the discriminator's losses on the real and the fake half
(err_R, err_F): D is not updated when either is below 0.3, G not when either is above 0.7,
and both are when neither would be.

Deviations: the Style-GAN's generator step conditions on the same batch's normals, taken in
another order (the Lua code draws a second batch); PyTorch's Adam adds epsilon to
sqrt(v) / sqrt(1 - beta2^t), Torch's to sqrt(v).

A full run (``train``) writes ``out/structure``, ``out/fcn`` and ``out/style`` and exports
the two generators into ``out`` itself (``save_project``), which
``registry.load("ssgan", weights=out)`` reads.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from models import weights as weights_lib
from models.common.images import to_uint8
from models.common.pipeline import save_project
from models.common.train import BaseTrainer, LoopConfig, read_run_config
from models.errors import InvalidInput
from models.ssgan import networks as nets
from models.ssgan.data import read_normals, read_pairs

logger = logging.getLogger(__name__)

STAGES = ("structure", "fcn", "style", "joint")
PUBLISHED_FCN = (96, 256, 384, 384, 256, 1024, 512)
FILES = {"structure": ("structure", "structure_discriminator"), "fcn": ("fcn",),
         "style": ("style", "style_discriminator"),
         "joint": ("style", "style_discriminator", "structure", "structure_discriminator")}


# ---------------------------------------------------------------------------------------
# Losses and the authors' update rules


def margin_rule(err_real: float, err_fake: float, margin=0.3) -> tuple[bool, bool]:
    """(update D, update G) from D's BCE on the real and the fake half (``adversarial_ct.lua``)."""
    update_d = not (err_fake < margin or err_real < margin)
    update_g = not (err_fake > 1 - margin or err_real > 1 - margin)
    if not update_d and not update_g:
        return True, True
    return update_d, update_g


def warmup_factor(num_updates: int) -> float:
    """The Lua ``adam``'s learning-rate divisor: 50 for the first 10 calls, 5 until the 30th, then 1."""
    return 50.0 if num_updates < 10 else 5.0 if num_updates < 30 else 1.0


def default_codebook(count=40) -> np.ndarray:
    """``count`` unit directions spread over the camera-facing hemisphere (z >= 0), (count, 3)."""
    i = np.arange(count) + 0.5
    z = 1 - i / count                                # z in (0, 1)
    r = np.sqrt(1 - z ** 2)
    phi = i * np.pi * (3 - np.sqrt(5))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1).astype(np.float32)


def read_codebook(path) -> np.ndarray:
    """The authors' ``codebook_40.txt``: one normal (3 numbers) a line."""
    codebook = np.loadtxt(path, dtype=np.float32).reshape(-1, 3)
    if len(codebook) < 2:
        raise InvalidInput(f"{path} holds no codebook of normals")
    return codebook


def normal_classes(normals: torch.Tensor, codebook: torch.Tensor, size: int) -> torch.Tensor:
    """Cluster index of each pixel of ``normals`` scaled to ``size`` (``makeData_joint``): (B * size * size,)."""
    small = F.interpolate(normals, size=(size, size), mode="bilinear", align_corners=False)
    scores = torch.einsum("bchw,kc->bhwk", small, codebook)          # codebook * n
    return scores.argmax(-1).reshape(-1)


def fcn_input(images: torch.Tensor) -> torch.Tensor:
    """The Style-GAN's images as the FCN sees them: ``nn.SpatialUpSamplingNearest(4)``."""
    return F.interpolate(images, scale_factor=4, mode="nearest")


# ---------------------------------------------------------------------------------------
# Settings and data


@dataclass
class TrainConfig(LoopConfig):
    """One stage's run; ``config.json`` records it under ``train``."""

    normals_dir: str
    out_dir: str
    stage: str                         # structure | fcn | style
    images_dir: str | None = None      # fcn and style
    data_dir: str = ""                 # the shared trainer's name for the data: normals_dir
    batch_size: int = 64               # -b of every train.lua (half real, half fake for D)
    lr: float | None = None            # None: 2e-4 (Adam, GANs) or 0.01 (SGD, FCN)
    beta1: float = 0.5                 # --momentum of the GANs' Adam
    noise_dim: int = nets.NOISE_DIM
    base_channels: int = 64            # nplanes of G and D
    structure_size: int = nets.STRUCTURE_SIZE
    image_size: int = nets.STYLE_SIZE
    fcn_channels: tuple = PUBLISHED_FCN
    codebook: str | None = None        # codebook_40.txt; None: default_codebook(40)
    fcn_run: str | None = None         # style: the FCN run whose loss guides G; None: no FCN loss
    lamda: float = 0.1                 # --lamda: weight of the FCN loss
    margin: float = 0.3
    l2: float = 0.0                    # --coefL2 (1e-5 in style-gan-nofcn)
    fcn_momentum: float = 0.9
    fcn_weight_decay: float = 5e-4
    structure_run: str | None = None   # joint: the Structure-GAN run to start from
    style_run: str | None = None       # joint: the Style-GAN run to start from
    lamda0: float = 0.1                # joint: weight of the Style-GAN's gradient reaching G1
    structure_lamda: float = 1.0       # joint: --lamda, weight of D1's gradient on G1
    structure_lr_ratio: float = 0.1    # joint: G1 and D1 learn at lr times this
    steps: int = 6000                  # the full schedule: 3 epochs of --epochSize 2000 (the first save)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.stage not in STAGES:
            raise InvalidInput(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        super().__post_init__()
        self.data_dir = self.data_dir or self.normals_dir
        self.fcn_channels = tuple(int(c) for c in self.fcn_channels)
        if self.batch_size < 2 or self.batch_size % 2:
            raise InvalidInput(f"batch_size must be even and at least 2, got {self.batch_size}")
        if self.stage != "structure" and not self.images_dir:
            raise InvalidInput(f"the {self.stage} stage needs the images (--images) beside the normals")
        if self.stage == "joint" and not (self.structure_run and self.style_run):
            raise InvalidInput("the joint stage needs structure_run and style_run, the finished runs of both GANs")
        if self.lr is None:
            self.lr = {"fcn": 0.01, "joint": 1e-6}.get(self.stage, 2e-4)


class Pairs(Dataset):
    """Images and normals in memory; items are dicts (the shared trainer's batches)."""

    def __init__(self, normals: torch.Tensor, images: torch.Tensor | None = None, small=None):
        self.normals, self.images, self.small = normals, images, small

    def __len__(self):
        return len(self.normals)

    def set_epoch(self, epoch):
        """Nothing is drawn per item."""

    def __getitem__(self, i):
        item = {"normals": self.normals[i]}
        if self.images is not None:
            item["image"] = self.images[i]
        if self.small is not None:
            item["small_normals"] = self.small[i]
        return item


def _bce(p, target: float):
    return F.binary_cross_entropy(p, torch.full_like(p, target))


# ---------------------------------------------------------------------------------------
# The trainer


class Trainer(BaseTrainer):
    """One stage of S^2-GAN (``config.stage``) on the shared training loop."""

    state_file = "train_state.pt"

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        self.name = f"ssgan-{config.stage}"
        self.stage = config.stage
        c = config
        if c.stage == "structure":
            normals = read_normals(c.normals_dir, c.structure_size)
            self.dataset = Pairs(normals)
        else:
            images, normals, _ = read_pairs(c.images_dir, c.normals_dir, c.image_size)
            small = read_pairs(c.images_dir, c.normals_dir, c.structure_size)[1] if c.stage == "joint" else None
            self.dataset = Pairs(normals, images, small)
        if len(self.dataset) < c.batch_size:
            raise InvalidInput(f"{len(self.dataset)} training items are fewer than a batch of {c.batch_size}")
        self.batch_size = c.batch_size
        self.steps_per_epoch = len(self.dataset) // c.batch_size
        self.codebook = torch.from_numpy(read_codebook(c.codebook) if c.codebook else default_codebook(40))
        betas = (c.beta1, 0.999)
        self.fcn = None
        if c.stage == "structure":
            self.g = nets.StructureGenerator(c.noise_dim, c.base_channels, c.structure_size)
            self.d = nets.StructureDiscriminator(c.base_channels, c.structure_size)
        elif c.stage == "style":
            self.g = nets.StyleGenerator(c.noise_dim, c.base_channels, c.image_size)
            self.d = nets.StyleDiscriminator(c.base_channels, c.image_size)
            if c.fcn_run:
                self.fcn, codebook = load_fcn(c.fcn_run)
                self.fcn.to(self.device).train().requires_grad_(False)
                self.codebook = torch.from_numpy(codebook)
        elif c.stage == "fcn":
            self.g = nets.NormalFCN(len(self.codebook), c.fcn_channels)
            self.d = None
        if c.stage == "joint":
            self.g = load_run_network(c.style_run, "style")
            self.d = load_run_network(c.style_run, "style_discriminator")
            self.g1 = load_run_network(c.structure_run, "structure").to(self.device)
            self.d1 = load_run_network(c.structure_run, "structure_discriminator").to(self.device)
            self.opt_g1 = torch.optim.Adam(self.g1.parameters(), lr=c.lr * c.structure_lr_ratio, betas=betas)
            self.opt_d1 = torch.optim.Adam(self.d1.parameters(), lr=c.lr * c.structure_lr_ratio, betas=betas)
        else:
            self.g.apply(weights_init(0.01 if c.stage == "fcn" else 0.02))
            if self.d is not None:
                self.d.apply(weights_init(0.02))
        self.g.to(self.device)
        self.codebook = self.codebook.to(self.device)
        if self.d is not None:
            self.d.to(self.device)
            self.opt_g = torch.optim.Adam(self.g.parameters(), lr=c.lr, betas=betas, eps=1e-8)
            self.opt_d = torch.optim.Adam(self.d.parameters(), lr=c.lr, betas=betas, eps=1e-8)
        else:
            self.opt_g = torch.optim.SGD(self.g.parameters(), lr=c.lr, momentum=c.fcn_momentum,
                                         weight_decay=c.fcn_weight_decay)

    # -- what the base asks for ------------------------------------------------------------
    @property
    def loss_names(self):
        if self.stage == "fcn":
            return ("fcn_nll",)
        if self.stage == "joint":
            return ("d_bce", "d1_bce", "g_bce", "g1_bce", "update_d", "update_d1", "update_g1")
        return ("d_bce", "g_bce", "err_real", "err_fake", "update_d", "update_g") + \
            (("fcn_nll",) if self.fcn is not None else ())

    @property
    def shown_losses(self):
        return ("fcn_nll",) if self.stage == "fcn" else ("d_bce", "g_bce")

    def total_steps(self):
        return self.config.steps

    def checkpoint_networks(self):
        return {f"{name}.safetensors": module for name, module in self.networks().items()}

    def networks(self) -> dict:
        modules = (self.g, self.d, getattr(self, "g1", None), getattr(self, "d1", None))
        return {name: module for name, module in zip(FILES[self.stage], modules) if module is not None}

    @property
    def optimizers(self):
        found = {"optimizer_g": self.opt_g, "optimizer_d": self.opt_d}
        if self.stage == "joint":
            found.update(optimizer_g1=self.opt_g1, optimizer_d1=self.opt_d1)
        return found

    def config_json(self):
        nets_config = {name: dict(net.config) for name, net in self.networks().items() if net is not None}
        return {"model": "ssgan", "stage": self.stage, "name": f"ssgan-{self.stage}", **nets_config,
                "codebook": self.codebook.cpu().tolist(), **self.progress_entries(), **self.history_entries()}

    def check_resumable(self, saved):
        if saved.get("stage") != self.stage:
            raise InvalidInput(f"{self.out_dir} holds a {saved.get('stage')} run, not {self.stage}: pass resume=False")

    # -- one step --------------------------------------------------------------------------
    def noise(self, n):
        return (torch.rand(n, self.config.noise_dim, 1, 1) * 2 - 1).to(self.device)

    def _adam_step(self, optimizer, network, update: bool, ratio=1.0):
        for group in optimizer.param_groups:
            group["lr"] = self.config.lr * ratio / warmup_factor(self.step)
        if update:
            if self.config.l2:
                for p in network.parameters():
                    if p.grad is not None:
                        p.grad.add_(p.detach(), alpha=self.config.l2)
            optimizer.step()

    def train_step(self, batch):
        if self.stage == "fcn":
            return self.fcn_step(batch)
        if self.stage == "joint":
            return self.joint_step(batch)
        return self.adversarial_step(batch)

    def joint_step(self, batch):
        """One step of ``joint_train_bi.lua``: D, D1, then G (always) and G1 (by D1's margin rule)."""
        c, g, d, g1, d1 = self.config, self.g, self.d, self.g1, self.d1
        for net in (g, d, g1, d1):
            net.train()
        images = batch["image"].to(self.device)
        normals = batch["normals"].to(self.device)
        small = batch["small_normals"].to(self.device)
        n = len(images)
        h = n // 2
        size = c.image_size
        z, z1 = self.noise(n), self.noise(n)
        targets = torch.cat([torch.ones(h, 1), torch.zeros(n - h, 1)]).to(self.device)
        # (1) D: real pairs of the first half; G's images of G1's normals on the second.
        with torch.no_grad():
            fake_normals_small = g1(z1[h:])
            fake_normals = nets.resample_normals(fake_normals_small, size)
            fake = g(z[h:], fake_normals)
        out = d(torch.cat([images[:h], fake]), torch.cat([normals[:h], fake_normals]))
        update_d, _ = margin_rule(float(_bce(out[:h].detach(), 1.0)), float(_bce(out[h:].detach(), 0.0)), c.margin)
        loss_d = F.binary_cross_entropy(out, targets)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self._adam_step(self.opt_d, d, update_d)
        # (2) D1: real normals of the second half, G1's normals.
        out1 = d1(torch.cat([small[h:], fake_normals_small]))
        update_d1, update_g1 = margin_rule(float(_bce(out1[:h].detach(), 1.0)),
                                           float(_bce(out1[h:].detach(), 0.0)), c.margin)
        loss_d1 = F.binary_cross_entropy(out1, targets)
        self.opt_d1.zero_grad(set_to_none=True)
        loss_d1.backward()
        self._adam_step(self.opt_d1, d1, update_d1, c.structure_lr_ratio)
        # (3) G through D (only D's image input carries gradient), reaching G1 scaled by lambda0.
        normals_small = g1(z1)
        upsampled = nets.resample_normals(normals_small, size)
        scaled = upsampled * c.lamda0 + (upsampled * (1 - c.lamda0)).detach()    # gradient x lambda0
        samples = g(z, scaled)
        loss_g = _bce(d(samples, upsampled.detach()), 1.0)
        # (4) G1's own adversarial loss against D1, times lambda.
        loss_g1 = _bce(d1(normals_small), 1.0)
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_g1.zero_grad(set_to_none=True)
        (loss_g + c.structure_lamda * loss_g1).backward()
        self._adam_step(self.opt_g, g, True)
        self._adam_step(self.opt_g1, g1, update_g1, c.structure_lr_ratio)
        self.last_outputs = {"samples": samples.detach(), "normals": upsampled.detach()}
        return {"d_bce": loss_d.item(), "d1_bce": loss_d1.item(), "g_bce": loss_g.item(), "g1_bce": loss_g1.item(),
                "update_d": float(update_d), "update_d1": float(update_d1), "update_g1": float(update_g1)}

    def fcn_step(self, batch):
        images = batch["image"].to(self.device)
        normals = batch["normals"].to(self.device)
        self.g.train()
        up = fcn_input(images)
        labels = normal_classes(normals, self.codebook, up.shape[-1] // 16)
        loss = F.nll_loss(self.g(up), labels)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        return {"fcn_nll": loss.item()}

    def adversarial_step(self, batch):
        c, g, d = self.config, self.g, self.d
        g.train()
        d.train()
        normals = batch["normals"].to(self.device)
        n = len(normals)
        h = n // 2
        conditional = self.stage == "style"
        # (1) D: real first half, G's samples on the second half.
        with torch.no_grad():
            fake = g(self.noise(n - h), normals[h:]) if conditional else g(self.noise(n - h))
        if conditional:
            real_images = batch["image"].to(self.device)[:h]
            out = d(torch.cat([real_images, fake]), normals)
        else:
            out = d(torch.cat([normals[:h], fake]))
        err_real, err_fake = float(_bce(out[:h].detach(), 1.0)), float(_bce(out[h:].detach(), 0.0))
        update_d, update_g = margin_rule(err_real, err_fake, c.margin)
        targets = torch.cat([torch.ones(h, 1), torch.zeros(n - h, 1)]).to(self.device)
        loss_d = F.binary_cross_entropy(out, targets)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self._adam_step(self.opt_d, d, update_d)
        # (2) G: a full batch of z, target "real"; D's weights are left as they are.
        losses = {}
        cond = normals.roll(h, 0) if conditional else None
        samples = g(self.noise(n), cond) if conditional else g(self.noise(n))
        out_g = d(samples, cond) if conditional else d(samples)
        loss_g = _bce(out_g, 1.0)
        total = loss_g
        if self.fcn is not None:
            up = fcn_input(samples)
            labels = normal_classes(cond, self.codebook, up.shape[-1] // 16)
            nll = F.nll_loss(self.fcn(up), labels)
            total = total + c.lamda * nll
            losses["fcn_nll"] = nll.item()
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self._adam_step(self.opt_g, g, update_g)
        self.last_outputs = {"samples": samples.detach(), "normals": cond if conditional else None}
        return {"d_bce": loss_d.item(), "g_bce": loss_g.item(), "err_real": err_real, "err_fake": err_fake,
                "update_d": float(update_d), "update_g": float(update_g), **losses}

    def save_samples(self, batch=None):
        if not self.last_outputs:
            return
        samples = to_uint8(self.last_outputs["samples"][:8])
        rows = [list(samples)]
        if self.last_outputs.get("normals") is not None:
            rows.insert(0, list(to_uint8(self.last_outputs["normals"][:8])))
        self.save_sample_grid(f"step_{self.step:06d}.png", rows)


def weights_init(std):
    """The Lua ``weights_init``: convolutions N(0, std) with zero bias, batch norm N(1, 0.02) and zero bias."""
    def init(m):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return init


# ---------------------------------------------------------------------------------------
# Entry points


def read_stage(run_dir, stage) -> dict:
    config = read_run_config(run_dir, "S^2-GAN")
    if config.get("model") != "ssgan" or config.get("stage") != stage:
        raise InvalidInput(f"{run_dir} holds no S^2-GAN {stage} run")
    return config


def load_run_network(run_dir, name) -> nn.Module:
    """Network ``name`` of a stage run (any stage that trained it, the joint one included), in eval mode."""
    config = read_run_config(run_dir, "S^2-GAN")
    if config.get("model") != "ssgan" or name not in config:
        raise InvalidInput(f"{run_dir} holds no S^2-GAN run with a {name} network")
    with torch.random.fork_rng(devices=[]):
        network = nets_classes()[name](**config[name])
    weights_lib.load_weights(network, Path(run_dir) / f"{name}.safetensors", f"{name}.safetensors")
    return network.eval()


def load_stage_network(run_dir, stage, name=None) -> nn.Module:
    """A network a ``stage`` run trained (``name`` defaults to the stage's generator), in eval mode."""
    read_stage(run_dir, stage)
    return load_run_network(run_dir, name or FILES[stage][0])


def nets_classes():
    from models.ssgan.convert import NETWORK_CLASSES

    return NETWORK_CLASSES


def load_fcn(run_dir) -> tuple[nn.Module, np.ndarray]:
    """The FCN of a ``fcn`` run and the codebook it was trained on."""
    config = read_stage(run_dir, "fcn")
    return load_stage_network(run_dir, "fcn"), np.asarray(config["codebook"], dtype=np.float32)


def train_stage(stage, normals_dir, out_dir, images_dir=None, **options) -> dict:
    """One stage (``structure``, ``fcn`` or ``style``); options are `TrainConfig` fields."""
    config = TrainConfig(normals_dir=str(normals_dir), out_dir=str(out_dir), stage=stage,
                         images_dir=str(images_dir) if images_dir else None, **options)
    return Trainer(config).run()


def export(structure_run, style_run, out_dir, name="project", extra=None, half=False) -> Path:
    """The two generators of finished runs as a project weights folder (float16 storage with ``half``)."""
    structure = load_run_network(structure_run, "structure")
    style = load_run_network(style_run, "style")
    if half:
        structure, style = structure.half(), style.half()
    steps = {"structure": read_run_config(structure_run, "S^2-GAN")["step"],
             "style": read_run_config(style_run, "S^2-GAN")["step"]}
    return save_project(out_dir, "ssgan", {"structure": structure, "style": style}, name=name,
                        extra={"variant": "project", "steps": steps, **(extra or {})})


def train(images_dir, normals_dir, out_dir, stage="all", stage_steps=None, fcn=True, joint=False,
          name="project", **options) -> dict:
    """Structure-GAN, the FCN and Style-GAN in turn (``stage="all"``), then the export; or one stage.

    Args:
        images_dir, normals_dir: training images and their normal maps, paired by file name.
        out_dir: the run folder: ``structure/``, ``fcn/``, ``style/`` and the exported weights.
        stage: ``all`` or one of `STAGES` (then ``out_dir`` is that stage's run folder).
        stage_steps: {stage: steps} overriding ``max_steps`` per stage.
        fcn: train the FCN and use its loss in the Style-GAN (False: the no-FCN variant).
        joint: then fine-tune both together (``joint``) and export that run's generators.
        options: `TrainConfig` fields (max_steps, batch_size, base_channels, sizes ...).
    """
    out_dir = Path(out_dir)
    if stage != "all":
        return train_stage(stage, normals_dir, out_dir, images_dir, **options)
    summaries = {}
    steps = stage_steps or {}
    for part in STAGES:
        if (part == "fcn" and not fcn) or (part == "joint" and not joint):
            continue
        extra = {"fcn_run": str(out_dir / "fcn")} if part == "style" and fcn else {}
        if part == "joint":
            extra = {"structure_run": str(out_dir / "structure"), "style_run": str(out_dir / "style")}
        part_options = {**options, **extra}
        if part in ("fcn", "joint"):
            part_options.pop("lr", None)     # a given lr is the first GANs'; the FCN and the joint stage keep theirs
        if part in steps:
            part_options["max_steps"] = steps[part]
        summaries[part] = train_stage(part, normals_dir, out_dir / part, images_dir, **part_options)
    last = out_dir / "joint" if joint else None
    export(last or out_dir / "structure", last or out_dir / "style", out_dir, name=name)
    summary = {"step": sum(s["step"] for s in summaries.values()), "stopped": summaries["style"]["stopped"],
               "out_dir": str(out_dir), "stages": {k: {"step": v["step"], "losses": v["losses"]}
                                                   for k, v in summaries.items()}}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
