"""Training of PG2's two stages on a prepared dataset folder (``models.pg2.dataset``).

Ma, Jia, Sun, Schiele, Tuytelaars and Van Gool, "Pose Guided Person Image Generation",
NeurIPS 2017 (arXiv:1705.09368). The losses, the schedule and the optimiser settings
follow the authors' TensorFlow trainer (github.com/charliememory/Pose-Guided-Person-Image-
Generation: ``trainer.py`` for Market-1501, ``trainer256.py`` for DeepFashion,
``run_market_train.sh``, ``run_DF_train.sh``); the PyTorch port (budui/Human-Pose-Transfer,
``implementations/PG2/train1.py``, ``train2.py``, ``loss.py``) agrees on each of them.

* Stage I (``stage="g1"``, Sec. 3.1): G1 draws the condition image's person in the target
  pose. The pose mask loss, Eq. 1, ``||(G1(x, P_B) - y) * (1 + M_B)||_1`` with ``M_B`` the
  target's body mask, as the authors compute it: ``mean|G1 - y| + mean(|G1 - y| * M_B)``
  (``g_loss1 = L1 + PoseMaskLoss1``), the mean of Eq. 1 over pixels and channels.
* Stage II (``stage="g2"``, Sec. 3.2): G1 frozen (its run is read from ``g1_run``), G2
  draws a difference map and the image is ``y^ = G1 + G2(x, G1)``. The discriminator of
  the authors' code sees single images, not the (condition, image) pairs of Eq. 2-3: the
  target is real, the condition image and ``y^`` are fake (``_gan_loss``, DCGAN mode)::

      L_D  = 0.5 BCE(D(y), 1) + 0.25 BCE(D(x), 0) + 0.25 BCE(D(y^), 0)
      L_G2 = BCE(D(y^), 1) + lambda (mean|y^ - y| + mean(|y^ - y| * M_B))      (Eq. 4)

  with ``lambda`` 10 for Market-1501 and 50 for DeepFashion (``L1Loss2 * 10``, ``* 50``).
  The images reach D as one batch (``triplet``: target, condition, G1's and G2's images
  for Market-1501; target, G2's, condition for DeepFashion), so its batch normalisation
  takes its statistics over all of them. Per step G2 is updated first, then D.
* Both stages: Adam, lr 2e-5, beta1 0.5 (beta2 0.999), constant (the ``lr_update_step``
  halving changes variables the optimisers never read); batch 16 (Market-1501) or 1
  (DeepFashion); 22000 G1 steps, then G2 steps up to ``max_step`` 60000 (Market-1501) or
  80000 (DeepFashion), so 38000 or 58000. The generators start from slim's defaults
  (Xavier uniform, zero biases), the discriminator from tflib's (uniform with standard
  deviation 0.02, zero biases).

Deviations, none of which changes a loss:

* The two stages are two runs in two folders (as the port's ``train1.py`` / ``train2.py``);
  the G2 run records which G1 it was trained on (its sha256) and ``export_weights`` refuses
  any other.
* One batch a step: the authors' TF input queue hands the D update the batch after the
  G2 update's. The D update reuses the G2 images of the G2 update, as the port does
  (TF computes them again with the updated G2).
* Pairs are mirrored at random per step (``PG2Pairs``) instead of being stored twice.
* Sampling is seeded per (seed, epoch, pair), so a resumed run draws the batches an
  uninterrupted one would.

Example:

    >>> from models.pg2.train import export_weights, train
    >>> train("data/market", "g1", "runs/g1", max_steps=22000)
    >>> train("data/market", "g2", "runs/g2", g1_run="runs/g1", max_steps=38000)
    >>> export_weights("runs/g1", "runs/g2", "weights/mine", name="mine")
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import weights as weights_lib
from models.common.device import pick_device
from models.common.pipeline import save_project
from models.common.train import BaseTrainer, LoopConfig, read_run_config
from models.errors import InvalidInput
from models.pg2.dataset import PG2Pairs
from models.pg2.networks import (
    DEEPFASHION,
    MARKET,
    ImageDiscriminator,
    ImageRefinementGenerator,
    PoseIntegrationGenerator,
)

__all__ = [
    "TrainConfig",
    "Trainer",
    "discriminator_loss",
    "export_weights",
    "generator_adversarial_loss",
    "init_discriminator",
    "init_generator",
    "load_trained",
    "pose_mask_loss",
    "read_config",
    "train",
]

logger = logging.getLogger(__name__)

STAGES = ("g1", "g2")
PUBLISHED = {"market": MARKET, "deepfashion": DEEPFASHION}  # the networks' published sizes
AUTHORS_BATCH = {"market": 16, "deepfashion": 1}  # run_market_train.sh / run_DF_train.sh --batch_size
AUTHORS_G1_STEPS = 22000  # trainer.py: `if step < 22000: g_optim1`
AUTHORS_MAX_STEP = {"market": 60000, "deepfashion": 80000}  # --max_step: G1 and G2 steps together
AUTHORS_L1_WEIGHT = {"market": 10.0, "deepfashion": 50.0}  # L1Loss2 * 10 (trainer.py), * 50 (trainer256.py)
TFLIB_STDEV = 0.02  # DCGANDiscriminator: lib.ops.*.set_weights_stdev(0.02)
NETWORK_FILES = {"g1": "g1.safetensors", "g2": "g2.safetensors", "discriminator": "discriminator.safetensors"}
NETWORK_CLASSES = {"g1": PoseIntegrationGenerator, "g2": ImageRefinementGenerator, "discriminator": ImageDiscriminator}


# ---------------------------------------------------------------------------------------
# Losses and initialisation


def pose_mask_loss(generated: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 1, the pose mask loss, as the mean the authors take: ``mean(|generated - target| * (1 + mask))``.

    Equal to ``mean|g - y| + mean(|g - y| * M)`` (``g_loss1``, ``L1Loss2``). ``mask``
    (B, 1, H, W) in {0, 1} weighs every channel.
    """
    return ((generated - target).abs() * (1.0 + mask)).mean()


def discriminator_loss(real: torch.Tensor, condition: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The authors' ``disc_cost`` on D's logits: the target real, the condition image and G2's image fake.

    ``0.5 BCE(D(y), 1) + 0.25 BCE(D(x), 0) + 0.25 BCE(D(y^), 0)``.
    """
    bce = F.binary_cross_entropy_with_logits
    return (0.5 * bce(real, torch.ones_like(real)) + 0.25 * bce(condition, torch.zeros_like(condition))
            + 0.25 * bce(fake, torch.zeros_like(fake)))


def generator_adversarial_loss(fake: torch.Tensor) -> torch.Tensor:
    """The authors' ``gen_cost``: ``BCE(D(y^), 1)`` on D's logits of G2's images."""
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def init_generator(network: nn.Module) -> nn.Module:
    """slim's defaults for ``conv2d`` / ``fully_connected``: Xavier uniform weights, zero biases."""
    for module in network.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return network


def init_discriminator(network: nn.Module) -> nn.Module:
    """tflib's initialisation with ``set_weights_stdev(0.02)``: uniform of standard deviation
    0.02 (``+-0.02 sqrt 3``), zero biases; batch norm scale 1, offset 0."""
    bound = TFLIB_STDEV * math.sqrt(3.0)
    for module in network.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return network


# ---------------------------------------------------------------------------------------
# Configuration and files


@dataclass
class TrainConfig(LoopConfig):
    """Everything one training run depends on; written to ``config.json`` as ``train``.

    The loop's settings are the keyword-only fields of `LoopConfig`; ``max_steps=None``
    trains the authors' schedule (22000 G1 steps; 38000 or 58000 G2 steps).
    """

    data_dir: str
    stage: str  # "g1" or "g2"
    out_dir: str
    g1_run: str | None = None  # stage g2: the G1 training folder (G1 stays frozen)
    split: str = "train"
    batch_size: int | None = None  # None: the authors' (16 Market-1501, 1 DeepFashion)
    lr: float = 2e-5
    betas: tuple[float, float] = (0.5, 0.999)
    channels_base: int = 128  # G1 / G2 width (conv_hidden_num); 128 is published
    middle_features_dim: int = 64  # G1's bottleneck (z_num)
    d_channels: int = 64  # the discriminator's first width (DIM)
    l1_weight: float | None = None  # lambda of Eq. 4; None: the authors' (10 Market-1501, 50 DeepFashion)
    flip: bool = True  # mirror pairs at random (the authors' flipped copy of the training set)

    def __post_init__(self):
        if self.stage not in STAGES:
            raise InvalidInput(f"stage must be g1 or g2, got {self.stage!r}")
        super().__post_init__()
        self.betas = tuple(self.betas)
        if self.stage == "g2" and not self.g1_run:
            raise InvalidInput("stage g2 needs g1_run, the folder of a finished G1 run")
        if self.batch_size is not None and self.batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, got {self.batch_size}")
        for name in ("channels_base", "middle_features_dim", "d_channels"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be at least 1, got {getattr(self, name)}")

    def networks(self, variant: str, image_size: tuple[int, int]) -> dict:
        """Constructor arguments of G1, G2 and D: the published ones with this run's widths."""
        published = PUBLISHED[variant]
        return {
            "g1": {**published["g1"], "channels_base": self.channels_base,
                   "middle_features_dim": self.middle_features_dim, "image_size": list(image_size)},
            "g2": {**published["g2"], "channels_base": self.channels_base},
            "discriminator": {**published["discriminator"], "channel_base": self.d_channels},
        }


def read_config(out_dir) -> dict:
    """The ``config.json`` of a PG2 training folder."""
    config = read_run_config(out_dir, "PG2")
    if config.get("model") != "pg2" or config.get("stage") not in STAGES:
        raise InvalidInput(f"{out_dir} holds no PG2 training run")
    return config


def load_trained(out_dir, stage: str, device="cpu") -> nn.Module:
    """The generator a run trained (``"g1"`` or ``"g2"``), built from its ``config.json``, in eval mode."""
    config = read_config(out_dir)
    if config["stage"] != stage:
        raise InvalidInput(f"{out_dir} holds a {config['stage']} run, not {stage}")
    network = NETWORK_CLASSES[stage](**config["networks"][stage])
    weights_lib.load_weights(network, Path(out_dir) / NETWORK_FILES[stage], NETWORK_FILES[stage])
    return network.to(pick_device(device)).eval()


def _to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """(N, 3, H, W) in [-1, 1] -> N uint8 (H, W, 3), as the authors' ``denorm_img``."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return list(x.permute(0, 2, 3, 1).numpy())


# ---------------------------------------------------------------------------------------
# Trainer


class Trainer(BaseTrainer):
    """One training run of G1 or of G2 with its discriminator.

    ``train`` is the entry point; the class is public so that single steps can be taken
    (``train_step``). The loop, the budgets, resuming, the log and the checkpoint files are
    `BaseTrainer`'s. A G1 run folder holds ``g1.safetensors`` and ``g1.train.pt``; a G2 run
    ``g2.safetensors``, ``discriminator.safetensors`` and ``g2.train.pt``; both
    ``config.json``, ``log.csv`` and ``samples/``.

    Args:
        config (`TrainConfig`): the run's settings.
    """

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        self.stage = config.stage
        self.name = f"pg2-{self.stage}"
        self.state_file = f"{self.stage}.train.pt"

        # 1. Data
        self.dataset = PG2Pairs(self.data_dir, config.split, seed=config.seed, flip=config.flip)
        if len(self.dataset) == 0:
            raise InvalidInput(f"{self.data_dir} has no {config.split} pairs")
        self.variant, self.image_size = self.dataset.variant, self.dataset.image_size
        self.batch_size = min(config.batch_size or AUTHORS_BATCH[self.variant], len(self.dataset))
        self.steps_per_epoch = len(self.dataset) // self.batch_size  # the port's drop_last=True
        self.l1_weight = AUTHORS_L1_WEIGHT[self.variant] if config.l1_weight is None else config.l1_weight

        # 2. Networks and optimisers
        torch.manual_seed(config.seed)
        self.network_config = config.networks(self.variant, self.image_size)
        self.g1_sha256 = None
        if self.stage == "g1":
            self.g1 = init_generator(PoseIntegrationGenerator(**self.network_config["g1"])).to(self.device)
            self.opt_g = torch.optim.Adam(self.g1.parameters(), lr=config.lr, betas=config.betas)
            self.shown_losses = ("g_loss1",)
            return
        g1_config = read_config(config.g1_run)
        if list(g1_config["image_size"]) != list(self.image_size):
            raise InvalidInput(f"the G1 run {config.g1_run} drew {g1_config['image_size']} images, "
                               f"the data is {list(self.image_size)}")
        self.network_config["g1"] = g1_config["networks"]["g1"]
        self.g1 = load_trained(config.g1_run, "g1", self.device).requires_grad_(False)
        self.g1_sha256 = weights_lib.sha256sum(Path(config.g1_run) / NETWORK_FILES["g1"])
        self.g2 = init_generator(ImageRefinementGenerator(**self.network_config["g2"])).to(self.device)
        self.discriminator = init_discriminator(ImageDiscriminator(**self.network_config["discriminator"]))
        self.discriminator.to(self.device)
        self.opt_g = torch.optim.Adam(self.g2.parameters(), lr=config.lr, betas=config.betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=config.betas)
        self.shown_losses = ("g_loss2", "d_loss")

    # -- names ----------------------------------------------------------------------------
    @property
    def loss_names(self) -> tuple[str, ...]:
        if self.stage == "g1":
            return ("g_loss1", "pose_mask_loss1")
        return ("g_loss2", "gan_loss2", "l1_loss2", "pose_mask_loss2", "d_loss", "d_real", "d_condition", "d_fake")

    def total_steps(self) -> int:
        """The authors' 22000 G1 steps, or the G2 steps up to their ``max_step``."""
        if self.stage == "g1":
            return AUTHORS_G1_STEPS
        return AUTHORS_MAX_STEP[self.variant] - AUTHORS_G1_STEPS

    # -- one step -------------------------------------------------------------------------
    def train_step(self, batch: dict) -> dict:
        """One G1 update, or one G2 and one D update, on ``batch``; returns the losses."""
        condition, target, pose, mask = (batch[k].to(self.device, non_blocking=True)
                                         for k in ("condition", "target", "target_pose", "target_mask"))
        if self.stage == "g1":
            return self._g1_step(condition, target, pose, mask)
        return self._g2_step(condition, target, pose, mask)

    def _g1_step(self, condition, target, pose, mask):
        self.g1.train()
        generated = self.g1(condition, pose)
        loss = pose_mask_loss(generated, target, mask)  # g_loss1 = L1 + PoseMaskLoss1
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self.last_outputs = {"condition": condition, "pose": pose, "target": target, "g1": generated.detach()}
        masked = ((generated.detach() - target).abs() * mask).mean()
        return {"g_loss1": loss.item(), "pose_mask_loss1": masked.item()}

    def discriminate(self, target, condition, stage1, fake) -> dict[str, torch.Tensor]:
        """D's logits of the real target, the condition image and G2's image, from one batch.

        The authors' ``triplet``: Market-1501's also holds G1's images (their logits unused),
        DeepFashion's does not; batch normalisation sees the whole batch.
        """
        if self.variant == "market":
            logits = self.discriminator(torch.cat([target, condition, stage1, fake])).chunk(4)
            return {"real": logits[0], "condition": logits[1], "fake": logits[3]}
        logits = self.discriminator(torch.cat([target, fake, condition])).chunk(3)
        return {"real": logits[0], "condition": logits[2], "fake": logits[1]}

    def _g2_step(self, condition, target, pose, mask):
        self.g2.train()
        self.discriminator.train()
        with torch.no_grad():
            stage1 = self.g1(condition, pose)
        fake = stage1 + self.g2(condition, stage1)  # G2 draws the difference map

        # 1. G2 against the discriminator (g_optim2): D's weights take no gradient.
        self.discriminator.requires_grad_(False)
        gan = generator_adversarial_loss(self.discriminate(target, condition, stage1, fake)["fake"])
        l1 = pose_mask_loss(fake, target, mask)  # L1Loss2 = L1 + PoseMaskLoss2
        g_loss = gan + self.l1_weight * l1
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        self.discriminator.requires_grad_(True)

        # 2. The discriminator (d_optim), on the same images.
        fake = fake.detach()
        logits = self.discriminate(target, condition, stage1, fake)
        d_loss = discriminator_loss(logits["real"], logits["condition"], logits["fake"])
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()

        self.last_outputs = {"condition": condition, "pose": pose, "target": target, "g1": stage1, "g2": fake}
        with torch.no_grad():
            bce = F.binary_cross_entropy_with_logits
            parts = {"d_real": bce(logits["real"], torch.ones_like(logits["real"])),
                     "d_condition": bce(logits["condition"], torch.zeros_like(logits["condition"])),
                     "d_fake": bce(logits["fake"], torch.zeros_like(logits["fake"])),
                     "pose_mask_loss2": ((fake - target).abs() * mask).mean()}
        return {"g_loss2": g_loss.item(), "gan_loss2": gan.item(), "l1_loss2": l1.item(), "d_loss": d_loss.item(),
                **{k: v.item() for k, v in parts.items()}}

    # -- checkpoints ----------------------------------------------------------------------
    def checkpoint_networks(self) -> dict[str, nn.Module]:
        if self.stage == "g1":
            return {NETWORK_FILES["g1"]: self.g1}
        return {NETWORK_FILES["g2"]: self.g2, NETWORK_FILES["discriminator"]: self.discriminator}

    def config_json(self) -> dict:
        return {
            "version": 1,
            "model": "pg2",
            "stage": self.stage,
            "variant": self.variant,
            "image_size": list(self.image_size),
            "pose_encoding": "authors",
            "networks": self.network_config,
            **self.progress_entries(),
            "pairs": len(self.dataset),
            "batch_size": self.batch_size,
            "l1_weight": self.l1_weight if self.stage == "g2" else None,
            "g1_run": str(Path(self.config.g1_run).resolve()) if self.config.g1_run else None,
            "g1_sha256": self.g1_sha256,
            **self.history_entries(),
        }

    def read_saved_config(self) -> dict:
        return read_config(self.out_dir)

    def check_resumable(self, saved: dict):
        """Only a run of the same stage, networks and (for G2) the same G1 continues."""
        self.require_same(saved, stage=self.stage)
        ours = {k: v for k, v in self.network_config.items() if self.stage == "g2" or k == "g1"}
        theirs = {k: saved.get("networks", {}).get(k) for k in ours}
        self.require_same({"networks": theirs, "g1_sha256": saved.get("g1_sha256")}, networks=ours,
                          g1_sha256=self.g1_sha256)

    # -- samples --------------------------------------------------------------------------
    def save_samples(self, batch: dict | None = None):
        """``samples/<stage>_<step>.png``: per pair (up to 4) the condition image, the target
        pose (the maximum over the joints, as the authors' ``pose_target_fixed.png``), G1's
        image, G2's (stage g2) and the target."""
        if self.last_outputs is None:
            return
        out = self.last_outputs
        count = min(4, out["target"].shape[0])
        pose = out["pose"][:count].amax(1, keepdim=True).expand(-1, 3, -1, -1)
        columns = [out["condition"], pose, out["g1"]] + ([out["g2"]] if "g2" in out else []) + [out["target"]]
        tiles = [_to_uint8(images[:count]) for images in columns]
        self.save_sample_grid(f"{self.stage}_{self.step:08d}.png", [list(row) for row in zip(*tiles)])

    def summary_extras(self) -> dict:
        return {"stage": self.stage}


def train(data_dir, stage, out_dir, **options) -> dict:
    """Train PG2's G1 (``stage="g1"``) or G2 and its discriminator (``"g2"``), as the authors do.

    Args:
        data_dir (`str` or `Path`): the prepared dataset (``models.pg2.dataset.prepare``).
        stage (`str`): ``"g1"`` or ``"g2"``; one stage per run folder.
        out_dir (`str` or `Path`): where the checkpoints, ``config.json``, ``log.csv`` and
            ``samples/`` go.
        **options: any field of `TrainConfig`: ``g1_run`` (required for ``"g2"``),
            ``max_steps``, ``time_budget``, ``batch_size``, ``lr``, ``channels_base``,
            ``d_channels``, ``l1_weight``, ``device``, ``seed``, ``resume`` ...

    Returns:
        `dict`: the summary of `Trainer.run`.
    """
    return Trainer(TrainConfig(data_dir=str(data_dir), stage=stage, out_dir=str(out_dir), **options)).run()


def export_weights(g1_run, g2_run, out_dir, name: str = "project", extra: dict | None = None) -> Path:
    """Write a project weights folder (``save_project``) that the PG2 pipeline loads.

    ``config.json`` gets ``pose_encoding`` (``"authors"``: the {-1, 1} maps of
    ``pg2_pose_map`` the networks were trained on), ``image_size`` ([H, W]), ``variant``
    and the steps of both runs; ``g1.safetensors`` and ``g2.safetensors`` beside it.

    Raises:
        InvalidInput: a folder holds another stage, or G2 was trained on another G1.
    """
    configs = {"g1": read_config(g1_run), "g2": read_config(g2_run)}
    for stage, run in (("g1", g1_run), ("g2", g2_run)):
        if configs[stage]["stage"] != stage:
            raise InvalidInput(f"{run} holds a {configs[stage]['stage']} run, not {stage}")
    if weights_lib.sha256sum(Path(g1_run) / NETWORK_FILES["g1"]) != configs["g2"]["g1_sha256"]:
        raise InvalidInput(f"the G2 run {g2_run} was trained on another G1 than the one in {g1_run}")
    networks = {stage: load_trained(run, stage) for stage, run in (("g1", g1_run), ("g2", g2_run))}
    info = {"pose_encoding": "authors", "image_size": configs["g1"]["image_size"],
            "variant": configs["g1"]["variant"], "steps": {s: c["step"] for s, c in configs.items()}}
    return save_project(out_dir, "pg2", networks, name=name, extra={**info, **(extra or {})})
