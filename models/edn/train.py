"""Training of Everybody Dance Now on one target person, stage by stage, and export of the target.

Chan, Ginosar, Zhou and Efros, "Everybody Dance Now", ICCV 2019 (arXiv:1808.07371), Sec. 3:
pix2pixHD (Wang et al., CVPR 2018, Sec. 3.2-3.3) with temporal smoothing and a face GAN.
The losses, the order of the updates and the options follow the authors' training code
(github.com/carolineec/EverybodyDanceNow: ``train_fullts.py``, ``models/pix2pixHD_model_fullts.py``,
``options/``) and the three stages of its README:

* ``global``: ``GlobalGenerator`` at 256x512 (``--loadSize 512``), the temporal multiscale
  discriminator with ``num_D`` 2 (``train_options``' default).
* ``local``: ``LocalEnhancer`` (``--netG local --ngf 32``) at 512x1024 with ``num_D`` 3,
  started from the global run (``--load_pretrain``): pix2pixHD's ``load_network`` copies
  every tensor whose name and shape match, so the global generator becomes the enhancer's
  inner generator (whose width is twice the enhancer's ``ngf``) and the global run's two
  discriminator scales the local one's coarser two. ``niter_fix_global`` epochs train the
  enhancer alone, then a fresh Adam trains all of it (pix2pixHD's ``update_fixed_params``).
* ``face`` (``--face_generator --face_discrim --faceGtype global --niter_fix_main 10``):
  the generator of the previous run, frozen (the authors' ``optimizer_G`` holds the face
  generator alone), plus the face residual generator and the face discriminator on the
  frame's 128x128 face box; ``niter_fix_main`` epochs train the face discriminator alone,
  then a fresh Adam trains both discriminators (``update_fixed_params_netD``).

One step (``Pix2PixHDModel.forward``, then ``train_fullts.py``), for a pair of consecutive
frames (t-1, t) with labels s0, s1 and real frames x0, x1 (Sec. 3, "Temporal smoothing"):

1. I0 = G(cat(s0, 0)) -- the first frame of a pair is drawn from a blank previous frame
   (``cond_zeros``), not from the frame before it; I1 = G(cat(s1, I0)). I0 is not
   detached: the losses of frame t reach G through I0 as well. In the face stage each
   frame gets its face residual before it is used (the box of frame t-1 for both).
2. The temporal discriminator scores ``cat(s0, s1, x0, x1)`` and ``cat(s0, s1, I0, I1)``
   (``discriminate_4``); the face discriminator ``cat(face label, face)`` per frame.
3. Losses (LSGAN: least squares to 1 / 0 on each scale's last output, summed over scales):
   ``loss_D = (D_fake + D_real) / 2 + (D_real_face + D_fake_face) / 2`` and
   ``loss_G = G_GAN + G_GAN_Feat + G_VGG + G_GANface``, where G_GAN_Feat is the feature
   matching loss (pix2pixHD Eq. 4: L1 between the discriminator's features of real and fake
   on every layer but the last, weighted ``4 / (n_layers_D + 1) / num_D``, times
   ``lambda_feat`` = 10) and G_VGG the perceptual loss (``VGGLoss``, times ``lambda_feat``;
   halved for a global-stage generator; plus half the VGG loss of each face crop in the
   face stage). The face terms are each half the sum over the two frames.
4. Adam (lr 2e-4, betas (0.5, 0.999)) steps G with loss_G, then D with loss_D, both from
   the same forward pass. The learning rate stays for ``niter`` epochs, then falls
   linearly to 0 over ``niter_decay`` epochs.

Where this departs from the authors' code:

* The VGG-19 of the perceptual loss needs ImageNet weights that this project does not
  fetch: pass ``vgg_path`` (torchvision's ``vgg19-dcbb9e9d.pth`` or the same tensors as
  safetensors). Without it the term is off; the log, ``config.json`` and the run's
  summary say so. ``use_l1`` adds the authors' ``--use_l1`` term instead
  (``lambda_A * L1(I1, x1)``, logged as ``g_l1``).
* The authors' ``initialize`` appends G's parameters to ``optimizer_G`` a second time in
  the global and local stages (``params += list(self.netG.parameters())``), so that the
  Adam of their PyTorch version stepped every parameter twice per iteration with the same
  gradient; here each parameter is stepped once, as in pix2pixHD.
* The authors' ``GANLoss`` reads ``input[-1]`` of the face discriminator's output, the
  batch's last sample; here the whole batch counts (the same at their batch size 1).
* Pairs never span a skipped frame (``models.edn.dataset``).
* The face stage may follow a global-stage run (the authors' follows the local stage):
  the face box is then scaled to the 256x512 label (64x64).
* Only the least-squares GAN (the published choice) is implemented (no ``--no_lsgan``).

Example:

    >>> from models.edn import dataset, train
    >>> dataset.prepare_target("me.mp4", "data/me", sizes=("global", "local"))
    >>> train.train("data/me", "runs/me_global", stage="global", time_budget=3600)
    >>> train.train("data/me", "runs/me_local", stage="local", load_pretrain="runs/me_global")
    >>> train.export_target("runs/me_local", "targets/me", name="me")
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import weights as weights_lib
from models.common.device import pick_device
from models.common.pipeline import save_project
from models.common.train import BaseTrainer, LoopConfig, read_run_config
from models.edn import dataset as edn_data
from models.edn.networks import (
    NETWORKS,
    FaceBox,
    FaceDiscriminator,
    MultiscaleDiscriminator,
    Vgg19Features,
    blank_previous_frame,
    crop_face,
    synthesize_frame,
    torchvision_vgg19_features,
)
from models.errors import InvalidInput

__all__ = [
    "CPU_SIZES",
    "STAGES",
    "TrainConfig",
    "Trainer",
    "export_target",
    "feature_matching_loss",
    "load_matching",
    "lsgan_loss",
    "read_config",
    "temporal_input",
    "train",
    "train_target",
    "vgg_loss",
]

logger = logging.getLogger(__name__)

STAGES = ("global", "local", "face")
VGG_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)  # VGGLoss.weights, relu1_1 .. relu5_1
NO_VGG = "off: no vgg_path given (the VGG-19 ImageNet weights are not fetched)"
# Reduced sizes for a CPU (the published: ngf 64, 4 downsamplings, 9 blocks, ndf 64).
CPU_SIZES = {"ngf": 16, "n_downsample_global": 4, "n_blocks_global": 3, "ndf": 16, "face_ngf": 16, "face_ndf": 16}
FACE_MIN_BUDGET = 30 * 60  # train_target: a face stage only from this budget on (seconds)
FACE_SHARE = 0.25  # of the budget, when it has one


# ---------------------------------------------------------------------------------------
# Losses


def lsgan_loss(outputs, real: bool) -> torch.Tensor:
    """pix2pixHD's ``GANLoss(use_lsgan=True)``: per scale, the mean squared distance of its
    last output (the patch scores) to 1 (real) or 0 (fake), summed over the scales.

    ``outputs``: a multiscale discriminator's list of lists, or one score map (the face
    discriminator's).
    """
    scales = [[outputs]] if torch.is_tensor(outputs) else outputs
    target = 1.0 if real else 0.0
    return sum(F.mse_loss(scale[-1], torch.full_like(scale[-1], target)) for scale in scales)


def feature_matching_loss(fake_outputs, real_outputs, n_layers_d: int, lambda_feat: float) -> torch.Tensor:
    """pix2pixHD's discriminator feature matching loss (Eq. 4, Sec. 3.3).

    ``sum_i sum_j 1/num_D * 4/(n_layers_D + 1) * L1(D_i^j(fake), D_i^j(real)) * lambda_feat``
    over every scale ``i`` and every stage ``j`` but the last (the scores); the real
    features are constants.
    """
    feat_weight, scale_weight = 4.0 / (n_layers_d + 1), 1.0 / len(fake_outputs)
    loss = 0.0
    for fake, real in zip(fake_outputs, real_outputs):
        for j in range(len(fake) - 1):
            loss = loss + scale_weight * feat_weight * F.l1_loss(fake[j], real[j].detach()) * lambda_feat
    return loss


def vgg_loss(vgg: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """pix2pixHD's ``VGGLoss``: ``sum_i w_i L1(vgg(x)_i, vgg(y)_i)``, w = 1/32 .. 1, y a constant."""
    return sum(w * F.l1_loss(a, b.detach()) for w, a, b in zip(VGG_WEIGHTS, vgg(x), vgg(y)))


def temporal_input(label0, label1, frame0, frame1) -> torch.Tensor:
    """The temporal discriminator's input, ``discriminate_4``'s ``cat(s0, s1, i0, i1)`` (B, 12, H, W)."""
    return torch.cat((label0, label1, frame0, frame1), dim=1)


def load_matching(module: nn.Module, path) -> tuple[int, list[str]]:
    """pix2pixHD's ``load_network`` for a pre-trained network of other sizes (``--load_pretrain``).

    Every tensor of ``path`` whose name and shape ``module`` has is copied; returns how
    many were, and the top-level submodules left (partly) at their initialisation.
    """
    state = weights_lib.read_state_dict(path)
    own = module.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    module.load_state_dict(matched, strict=False)
    return len(matched), sorted({k.split(".")[0] for k in own if k not in matched})


# ---------------------------------------------------------------------------------------
# Configuration


@dataclass
class TrainConfig(LoopConfig):
    """Everything one training run depends on; written to ``config.json`` as ``train``.

    Field names are the authors' options, lower-cased. The loop's settings
    (``max_steps``, ``time_budget``, ``device``, ...) are `LoopConfig`'s;
    ``max_steps=None`` trains the authors' ``niter + niter_decay`` epochs.
    """

    data_dir: str
    out_dir: str
    stage: str = "global"  # global | local | face (the README's three commands)
    load_pretrain: str | None = None  # the previous stage's run folder
    holdout: int = 0  # the last usable frames kept out of training (for scoring)
    # generator (base_options); the face stage takes the pre-trained run's
    ngf: int | None = None  # None: 64 (global), 32 (local)
    n_downsample_global: int = 4
    n_blocks_global: int = 9
    n_local_enhancers: int = 1
    n_blocks_local: int = 3
    norm: str = "instance"
    # temporal discriminator (train_options)
    ndf: int = 64
    n_layers_d: int = 3
    num_d: int | None = None  # None: 2 (global), 3 (local, face)
    no_gan_feat_loss: bool = False
    # face stage
    face_type: str = "face"  # "face" (--faceGtype global, the README's) or "face_unet"
    face_ngf: int = 64  # fixed at 64 by the authors
    face_ndf: int = 64  # fixed at 64 by the authors
    niter_fix_main: int | None = None  # epochs training the face discriminator alone; None: 10 (README)
    # losses
    lambda_feat: float = 10.0
    vgg_path: str | None = None  # VGG-19 ImageNet weights (torchvision layout); None: no VGG term
    use_l1: bool = False  # --use_l1: add lambda_a * L1(I1, x1)
    lambda_a: float = 10.0
    # optimisation
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    niter: int = 100  # epochs at the starting learning rate
    niter_decay: int = 100  # epochs of linear decay to 0
    niter_fix_global: int = 0  # local stage: epochs training the enhancer alone

    def __post_init__(self):
        super().__post_init__()
        if self.stage not in STAGES:
            raise InvalidInput(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.stage == "face" and not self.load_pretrain:
            raise InvalidInput("the face stage starts from a trained generator: give load_pretrain "
                               "(the global or local run folder)")
        if self.face_type not in ("face", "face_unet"):
            raise InvalidInput(f"face_type must be face or face_unet, got {self.face_type!r}")
        if self.batch_size < 1 or self.holdout < 0:
            raise InvalidInput("batch_size must be at least 1 and holdout at least 0")


def read_config(out_dir) -> dict:
    """The ``config.json`` of an EDN training folder."""
    config = read_run_config(out_dir, "EDN")
    if config.get("model") != "edn" or "generator" not in config:
        raise InvalidInput(f"{out_dir} holds no EDN training run")
    return config


# ---------------------------------------------------------------------------------------
# Trainer


class Trainer(BaseTrainer):
    """One EDN training run (one stage): networks, optimisers, data and the step.

    The loop, the budgets, resuming, the log and the checkpoint files are `BaseTrainer`'s.
    A run folder holds ``generator.safetensors`` and ``discriminator.safetensors`` (and
    ``face.safetensors``, ``face_discriminator.safetensors`` in the face stage),
    ``train_state.pt``, ``config.json``, ``log.csv`` and ``samples/``.

    Args:
        config (`TrainConfig`): the run's settings.
        callback (optional): ``callback(done, total)`` in steps, called before every step
            (and so between two steps: raising from it stops the run with a checkpoint).
    """

    name = "edn"
    state_file = "train_state.pt"
    shown_losses = ("loss_d", "loss_g", "g_gan_feat")

    def __init__(self, config: TrainConfig, callback: Callable[[int, int], None] | None = None):
        super().__init__(config)
        self.callback = callback
        c = config

        # 1. What the previous stage left.
        self.pretrained = read_config(c.load_pretrain) if c.load_pretrain else None
        if c.stage == "face":
            generator_class = self.pretrained["generator_class"]
            self.generator_config = dict(self.pretrained["generator"])
            self.discriminator_config = dict(self.pretrained["discriminator"])
            if c.num_d is not None:
                self.discriminator_config["num_D"] = c.num_d
        else:
            generator_class = c.stage
            self.generator_config = {"input_nc": 6, "output_nc": 3, "ngf": c.ngf or (64 if c.stage == "global" else 32),
                                     "n_downsample_global": c.n_downsample_global,
                                     "n_blocks_global": c.n_blocks_global, "norm": c.norm}
            if c.stage == "local":
                self.generator_config.update(n_local_enhancers=c.n_local_enhancers, n_blocks_local=c.n_blocks_local)
            self.discriminator_config = {"input_nc": 12, "ndf": c.ndf, "n_layers_D": c.n_layers_d, "norm": c.norm,
                                         "num_D": c.num_d or (2 if c.stage == "global" else 3), "no_lsgan": False,
                                         "no_ganFeat_loss": c.no_gan_feat_loss}
        self.generator_class = generator_class
        self.data_stage = "global" if generator_class == "global" else "local"

        # 2. Data: consecutive pairs of the usable frames (the last ``holdout`` kept out).
        usable = edn_data.read_manifest(self.data_dir)["usable"]
        self.dataset = edn_data.TargetPairs(self.data_dir, self.data_stage, slice(0, usable - c.holdout))
        if len(self.dataset) == 0:
            raise InvalidInput(f"{self.data_dir} has no two consecutive usable frames to train on")
        self.label_size = self.dataset.size
        self.batch_size = min(c.batch_size, len(self.dataset))
        self.steps_per_epoch = math.ceil(len(self.dataset) / self.batch_size)  # pix2pixHD keeps the last batch

        # 3. Networks.
        torch.manual_seed(c.seed)
        self.generator = NETWORKS[generator_class](**self.generator_config).to(self.device)
        self.discriminator = MultiscaleDiscriminator(**self.discriminator_config).to(self.device)
        self.face = self.face_discriminator = None
        if c.stage == "face":
            face_config = {"input_nc": 6, "output_nc": 3, "ngf": c.face_ngf}
            if c.face_type == "face":
                face_config["norm"] = c.norm
            self.face = NETWORKS[c.face_type](**face_config).to(self.device)
            self.face_discriminator = FaceDiscriminator(6, ndf=c.face_ndf, n_layers_D=c.n_layers_d).to(self.device)
            self.generator.requires_grad_(False)  # frozen: optimizer_G holds the face generator alone
        self.vgg = None
        if c.vgg_path:
            self.vgg = Vgg19Features().to(self.device).eval()
            self.vgg.load_state_dict(torchvision_vgg19_features(weights_lib.read_state_dict(c.vgg_path)))
        else:
            logger.warning("EDN %s stage: the VGG perceptual loss is %s", c.stage, NO_VGG)
        self.fixed_global = c.stage == "local" and c.niter_fix_global > 0
        self.niter_fix_main = (10 if c.niter_fix_main is None else c.niter_fix_main) if c.stage == "face" else 0
        self.d_trainable = True

        # 4. Optimisers (their parameter lists never change, so any checkpoint loads into them).
        self.opt_g = self._adam(self.face if self.face is not None else self.generator)
        self.opt_d = self._adam(self.discriminator, self.face_discriminator)
        self.pretrain_report: dict = {}

    def _adam(self, *modules) -> torch.optim.Adam:
        params = [p for m in modules if m is not None for p in m.parameters()]
        return torch.optim.Adam(params, lr=self.config.lr, betas=(self.config.beta1, 0.999))

    # -- names ----------------------------------------------------------------------------
    @property
    def loss_names(self) -> tuple[str, ...]:
        names = ["loss_d", "d_real", "d_fake", "loss_g", "g_gan", "g_gan_feat"]
        if self.vgg is not None:
            names.append("g_vgg")
        if self.config.use_l1:
            names.append("g_l1")
        if self.face is not None:
            names += ["d_real_face", "d_fake_face", "g_gan_face"]
        return tuple(names)

    # -- one step -------------------------------------------------------------------------
    def generate_pair(self, label0, label1, box: FaceBox | None):
        """Step 1: I0 from a blank previous frame, I1 from I0 (not detached); face residuals added."""
        frame0 = synthesize_frame(self.generator, label0, blank_previous_frame(label0), self.face, box)
        frame1 = synthesize_frame(self.generator, label1, frame0, self.face, box)
        return frame0, frame1

    def train_step(self, batch: dict) -> dict:
        """One forward pass, then the generator side's and the discriminator side's updates."""
        c, dev = self.config, self.device
        label0, label1 = batch["label"].to(dev), batch["next_label"].to(dev)
        real0, real1 = batch["image"].to(dev), batch["next_image"].to(dev)
        box = FaceBox(*batch["face_box"][0].tolist()) if self.face is not None else None
        self.generator.train()
        self.discriminator.train()
        fake0, fake1 = self.generate_pair(label0, label1, box)

        # 2-3. Discriminator side: real and (detached) fake pairs.
        pred_real = self.discriminator(temporal_input(label0, label1, real0, real1))
        pred_fake_d = self.discriminator(temporal_input(label0, label1, fake0.detach(), fake1.detach()))
        losses = {"d_real": lsgan_loss(pred_real, True), "d_fake": lsgan_loss(pred_fake_d, False)}
        loss_d = 0.5 * (losses["d_fake"] + losses["d_real"])
        # Generator side: the discriminator's weights need no gradients of the generator's loss.
        self.discriminator.requires_grad_(False)
        pred_fake = self.discriminator(temporal_input(label0, label1, fake0, fake1))
        losses["g_gan"] = lsgan_loss(pred_fake, True)
        losses["g_gan_feat"] = (feature_matching_loss(pred_fake, pred_real, self.discriminator.n_layers, c.lambda_feat)
                                if self.discriminator.intermediate_features else fake0.new_zeros(()))
        loss_g = losses["g_gan"] + losses["g_gan_feat"]
        if self.vgg is not None:
            vgg = (vgg_loss(self.vgg, fake0, real0) + vgg_loss(self.vgg, fake1, real1)) * c.lambda_feat
            if self.generator_class == "global":  # the authors' "need 2x VGG for artifacts when training local"
                vgg = 0.5 * vgg
            losses["g_vgg"] = vgg
        if self.face is not None:
            face = self._face_losses(label0, label1, fake0, fake1, real0, real1, box)
            loss_d = loss_d + 0.5 * (face["d_real_face"] + face["d_fake_face"])
            loss_g = loss_g + face["g_gan_face"]
            if self.vgg is not None:
                losses["g_vgg"] = losses["g_vgg"] + face.pop("g_vgg_face")
            losses.update(face)
        if self.vgg is not None:
            loss_g = loss_g + losses["g_vgg"]
        if c.use_l1:
            losses["g_l1"] = F.l1_loss(fake1, real1) * c.lambda_a
            loss_g = loss_g + losses["g_l1"]
        self._discriminators_trainable()

        # 4. G's step, then D's, both from this forward pass (train_fullts.py's order).
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        self.last_outputs = {"label0": label0, "label1": label1, "fake0": fake0.detach(), "fake1": fake1.detach(),
                             "real0": real0, "real1": real1}
        losses.update(loss_d=loss_d, loss_g=loss_g)
        return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in losses.items()}

    def _face_losses(self, label0, label1, fake0, fake1, real0, real1, box: FaceBox) -> dict:
        """The face GAN's terms (section "Face GAN"), each half the sum over the two frames.

        With the VGG loss, ``g_vgg_face``: half the VGG loss of each face crop.
        """
        d_face, c = self.face_discriminator, self.config
        out = {"d_real_face": 0.0, "d_fake_face": 0.0, "g_gan_face": 0.0}
        if self.vgg is not None:
            out["g_vgg_face"] = 0.0
        for label, fake, real in ((label0, fake0, real0), (label1, fake1, real1)):
            face_label, fake_face, real_face = crop_face(label, box), crop_face(fake, box), crop_face(real, box)
            d_face.requires_grad_(True)
            out["d_fake_face"] += 0.5 * lsgan_loss(d_face(torch.cat((face_label, fake_face.detach()), 1)), False)
            out["d_real_face"] += 0.5 * lsgan_loss(d_face(torch.cat((face_label, real_face), 1)), True)
            d_face.requires_grad_(False)
            out["g_gan_face"] += 0.5 * lsgan_loss(d_face(torch.cat((face_label, fake_face), 1)), True)
            if self.vgg is not None:
                out["g_vgg_face"] += 0.5 * vgg_loss(self.vgg, fake_face, real_face) * c.lambda_feat
        return out

    def _discriminators_trainable(self):
        """Back to what the phase trains: the temporal D (not while niter_fix_main lasts) and the face D."""
        self.discriminator.requires_grad_(self.d_trainable)
        if self.face_discriminator is not None:
            self.face_discriminator.requires_grad_(True)

    # -- schedule -------------------------------------------------------------------------
    def start_epoch(self, epoch: int):
        """The phase of ``epoch`` (``niter_fix_global``, ``niter_fix_main``) and its learning rate."""
        c = self.config
        at_epoch_start = self.step == epoch * self.steps_per_epoch
        if self.fixed_global:
            enhancer = f"model{c.n_local_enhancers}_"
            for name, p in self.generator.named_parameters():
                p.requires_grad_(epoch >= c.niter_fix_global or name.startswith(enhancer))
            if epoch == c.niter_fix_global and at_epoch_start:
                logger.info("finetuning the local and global generators jointly (a fresh Adam)")
                self.opt_g = self._adam(self.generator)
        if self.face is not None:
            self.d_trainable = epoch >= self.niter_fix_main
            self._discriminators_trainable()
            if epoch == self.niter_fix_main and self.niter_fix_main > 0 and at_epoch_start:
                logger.info("training both discriminators now, not just the face's (a fresh Adam)")
                self.opt_d = self._adam(self.discriminator, self.face_discriminator)
        lr = c.lr * max(0.0, 1.0 - max(0, epoch - c.niter) / c.niter_decay) if c.niter_decay else c.lr
        for optimizer in (self.opt_g, self.opt_d):
            for group in optimizer.param_groups:
                group["lr"] = lr

    def start_run(self):
        """A fresh run starts from the previous stage's networks (``--load_pretrain``)."""
        if self.last_saved is not None or self.pretrained is None:
            return
        folder = Path(self.config.load_pretrain)
        if self.config.stage == "face":
            weights_lib.load_weights(self.generator, folder / "generator.safetensors", "generator.safetensors")
            report = {"generator": {"loaded": "all"}}
        else:
            loaded, left = load_matching(self.generator, folder / "generator.safetensors")
            if loaded == 0:
                raise InvalidInput(f"nothing of {folder}'s generator fits this one: the local stage's inner "
                                   "generator is twice as wide as its ngf (give ngf = the global run's / 2)")
            report = {"generator": {"loaded": loaded, "not_initialised": left}}
        loaded, left = load_matching(self.discriminator, folder / "discriminator.safetensors")
        report["discriminator"] = {"loaded": loaded, "not_initialised": left}
        self.pretrain_report = {"from": str(folder.resolve()), **report}
        logger.info("started from %s: %s", folder, report)

    def epoch_loader(self, epoch: int, skip: int = 0):
        """The base's batches, with ``callback`` called before each step (between two steps)."""
        total = self.config.max_steps or self.total_steps()
        for batch in super().epoch_loader(epoch, skip):
            if self.callback is not None:
                self.callback(self.step, total)
            yield batch

    def total_steps(self) -> int:
        """The authors' ``niter + niter_decay`` epochs."""
        return (self.config.niter + self.config.niter_decay) * self.steps_per_epoch

    # -- checkpoints ----------------------------------------------------------------------
    def checkpoint_networks(self) -> dict[str, nn.Module]:
        networks = {"generator.safetensors": self.generator, "discriminator.safetensors": self.discriminator}
        if self.face is not None:
            networks.update({"face.safetensors": self.face, "face_discriminator.safetensors": self.face_discriminator})
        return networks

    def network_entries(self) -> dict:
        """The networks' classes and constructor arguments, as ``config.json`` records them."""
        entries = {"generator_class": self.generator_class, "generator": self.generator.config,
                   "discriminator": self.discriminator.config, "label_size": list(self.label_size)}
        if self.face is not None:
            entries.update(face_class=self.config.face_type, face=self.face.config,
                           face_discriminator=self.face_discriminator.config)
        return entries

    def config_json(self) -> dict:
        return {
            "version": 1,
            "model": "edn",
            "name": f"EDN {self.config.stage} stage, run {self.out_dir.name} (step {self.step})",
            "stage": self.config.stage,
            **self.network_entries(),
            "vgg_loss": "on" if self.vgg is not None else NO_VGG,
            "pairs": len(self.dataset),
            "pretrained": self.pretrain_report,
            **self.progress_entries(),
            **self.history_entries(),
        }

    def read_saved_config(self) -> dict:
        return read_config(self.out_dir)

    def check_resumable(self, saved: dict):
        """Only a run of the same stage and networks continues."""
        ours, theirs = self.network_entries(), {k: saved.get(k) for k in self.network_entries()}
        if saved.get("stage") != self.config.stage or ours != theirs:
            raise InvalidInput(f"{self.out_dir} holds an EDN run of another stage or other network sizes; "
                               "use the same settings, another folder, or resume=False")
        self.pretrain_report = saved.get("pretrained", {})

    def summary_extras(self) -> dict:
        return {"stage": self.config.stage, "vgg_loss": "on" if self.vgg is not None else NO_VGG}

    # -- samples --------------------------------------------------------------------------
    def save_samples(self, batch: dict | None = None):
        """``samples/step_<n>.png``: label | generated | real, a row for frame t-1 and one for t."""
        if self.last_outputs is None:
            return
        out = self.last_outputs

        def tile(x, is_label=False):
            x = x[0].detach().float().cpu()
            x = x.clamp(0, 1) if is_label else x.clamp(-1, 1).add(1).div(2)
            return (x * 255).round().byte().permute(1, 2, 0).numpy()

        rows = [[tile(out["label0"], True), tile(out["fake0"]), tile(out["real0"])],
                [tile(out["label1"], True), tile(out["fake1"]), tile(out["real1"])]]
        self.save_sample_grid(f"step_{self.step:08d}.png", rows)


def train(data_dir, out_dir, callback: Callable[[int, int], None] | None = None, **options) -> dict:
    """Train one EDN stage on a prepared target folder.

    Args:
        data_dir: the prepared target (``models.edn.dataset.prepare_target``), with the
            stage's size (``"global"``; ``"local"`` for the local stage, and for a face
            stage after it).
        out_dir: the run folder (checkpoints, ``config.json``, ``log.csv``, ``samples/``).
        callback (optional): ``callback(done, total)`` in steps, before every step; raising
            from it stops the run, leaving a checkpoint to resume from.
        **options: any field of `TrainConfig` (``stage``, ``load_pretrain``, ``max_steps``,
            ``time_budget``, ``ngf``, ``n_downsample_global``, ``n_blocks_global``, ``ndf``,
            ``num_d``, ``vgg_path``, ``device``, ``resume`` ...).

    Returns:
        `dict`: the summary of `Trainer.run` (with ``stage`` and ``vgg_loss``).
    """
    return Trainer(TrainConfig(data_dir=str(data_dir), out_dir=str(out_dir), **options), callback=callback).run()


# ---------------------------------------------------------------------------------------
# Export


def export_target(run_dirs, out_dir, name: str | None = None, half: bool = False) -> Path:
    """A target folder for ``models.edn.pipeline`` from one or more run folders.

    The generator is the last run's, the face generator the last face run's (none without
    one); ``target_poses.npz`` holds the canvas keypoints of the usable frames of the
    generator's data. Written by ``save_project``: ``generator`` (and ``face``)
    ``.safetensors``, ``config.json`` with ``generator_class``, ``face_class`` (with a face
    generator) and ``label_size``, ``SHA256SUMS``.

    Args:
        run_dirs: a run folder, or several (e.g. the global run and the face run after it).
        out_dir: the target folder to write.
        name (optional): what the target is called; by default the video's file name.
        half (bool, defaults to False): store the weights as float16, half the size; they
            load back into the float32 networks.
    """
    runs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    configs = [(Path(run), read_config(run)) for run in runs]
    generator_run, generator_config = configs[-1]
    face_runs = [(run, config) for run, config in configs if config.get("face")]
    networks = {"generator": NETWORKS[generator_config["generator_class"]](**generator_config["generator"])}
    weights_lib.load_weights(networks["generator"], generator_run / "generator.safetensors", "generator.safetensors")
    extra = {"generator_class": generator_config["generator_class"], "label_size": generator_config["label_size"]}
    if face_runs:
        face_run, face_config = face_runs[-1]
        networks["face"] = NETWORKS[face_config["face_class"]](**face_config["face"])
        weights_lib.load_weights(networks["face"], face_run / "face.safetensors", "face.safetensors")
        extra["face_class"] = face_config["face_class"]
    data_dir = generator_config["data_dir"]
    keypoints = edn_data.target_keypoints(data_dir).astype(np.float32)
    if name is None:
        name = f"target trained on {Path(edn_data.read_manifest(data_dir)['video']).name}"
    if half:
        networks = {key: network.half() for key, network in networks.items()}
    return save_project(out_dir, "edn", networks, name=name, arrays={"target_poses": {"keypoints": keypoints}},
                        extra=extra)


# ---------------------------------------------------------------------------------------
# A target from a video, in one call (the service's "train a target" job)


def train_target(video_path, out_dir, *, work_dir=None, time_budget: float | None = None,
                 max_steps: int | None = None, progress: Callable[[int, int], None] | None = None,
                 device: str = "auto", face: bool | None = None, seed: int = 0, **sizes) -> Path:
    """Prepare a target person's video, train the global stage (and the face stage), export.

    Progress is reported in thousandths of the job: the first 100 for preparing the video,
    the rest for training (steps done of ``max_steps``, or seconds of ``time_budget``,
    whichever is further). ``progress`` may raise to cancel: the exception propagates, and
    the work folder keeps the prepared data and a checkpoint at the last finished step, so
    calling again with the same ``work_dir`` continues.

    Args:
        video_path: the target person's video (they should move about the room, towards
            the camera and back, for the pose normalisation).
        out_dir: the target folder to write (``export_target``).
        work_dir (optional): the prepared data and the runs; by default ``<out_dir>.work``,
            removed once the target is exported.
        time_budget (optional): seconds for the whole job, preparation included.
        max_steps (optional): steps of each stage (without either, the authors' schedule).
        progress (optional): ``progress(done, total)``, total 1000.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` ...
        face (optional): train the face stage too (a quarter of the budget); None: only
            when ``time_budget`` is at least 30 minutes.
        seed: of the initial weights and the batch order.
        **sizes: `TrainConfig` fields of the networks (``ngf``, ``n_downsample_global``,
            ``n_blocks_global``, ``ndf``, ``num_d``, ``face_ngf`` ...) and losses
            (``vgg_path``, ``use_l1``). By default the published sizes on a GPU and
            ``CPU_SIZES`` on a CPU.

    Returns:
        The exported target folder.
    """
    start = time.monotonic()
    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else out_dir.with_name(out_dir.name + ".work")
    data_dir = work / "data"

    def report(done):
        if progress is not None:
            progress(min(int(done), 1000), 1000)

    if not edn_data.is_prepared(data_dir, video_path, "global"):
        edn_data.prepare_target(video_path, data_dir, progress=lambda d, t: report(100 * d / max(t, 1)),
                                sizes=("global",))
    report(100)

    if pick_device(device).type != "cuda":
        sizes = {**CPU_SIZES, **sizes}
    face = face if face is not None else (time_budget is not None and time_budget >= FACE_MIN_BUDGET)
    remaining = None if time_budget is None else max(time_budget - (time.monotonic() - start), 1.0)
    stages = [("global", None, remaining * (1 - FACE_SHARE) if face and remaining else remaining)]
    if face:
        stages.append(("face", work / "global", None))  # the rest of the budget, measured when it starts
    share = 900 / len(stages)
    runs = []
    for k, (stage, pretrain, budget) in enumerate(stages):
        if budget is None and time_budget is not None:
            budget = max(time_budget - (time.monotonic() - start), 1.0)
        stage_start = time.monotonic()

        def stage_progress(done, total, k=k, budget=budget, stage_start=stage_start):
            fraction = done / max(total, 1)
            if budget:
                fraction = max(fraction, (time.monotonic() - stage_start) / budget)
            report(100 + share * (k + min(fraction, 1.0)))

        Trainer(TrainConfig(data_dir=str(data_dir), out_dir=str(work / stage), stage=stage,
                            load_pretrain=str(pretrain) if pretrain else None, max_steps=max_steps,
                            time_budget=budget, device=device, seed=seed, progress=False, sample_every=200,
                            checkpoint_every=200, **sizes),
                callback=stage_progress).run()
        runs.append(work / stage)

    target = export_target(runs, out_dir, name=f"target trained on {Path(video_path).name}")
    report(1000)
    if work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return target
