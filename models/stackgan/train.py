"""Training StackGAN++ (the v2 tree) with the authors' losses, on the shared trainer.

    talkingface train stackgan --images DIR [--captions FILE] --out RUN
    pipe = registry.load("stackgan", weights="RUN")

As the authors' ``code/trainer.py`` of StackGAN-v2 (``condGANTrainer`` with captions,
``GANTrainer`` without):

* one generator ``GNet`` with ``branch_num`` outputs (64, 128, 256 ...) and one
  discriminator ``DNet`` a branch, each with its own Adam (lr 2e-4, betas 0.5, 0.999);
* each step: z ~ N(0, I); the images of every branch; then every D, then G;
* conditional D (matching-aware, Reed et al. 2016; Eq. 5 of 1710.10916): real images
  with their caption labelled real, wrong images (a batch rolled by one, pairs of equal
  captions left out) and fakes labelled fake, against mu of the CA (detached); with
  ``uncond_loss`` > 0 the unconditional head too (a wrong image is a real image there),
  ``errD = real + wrong + fake``, else ``real + (wrong + fake) / 2``;
* G: the sum over branches of BCE(D(fake, mu), 1) (+ ``uncond_loss`` x the unconditional
  head), the colour-consistency terms (``color_loss``: the means and covariances of
  neighbouring branches, Eq. 7 of 1710.10916) and ``kl_weight`` x KL (Eq. 3 of 1612.03242);
* an exponential moving average (0.999) of G's parameters, which is what the authors save
  and what this project's ``generator.safetensors`` holds (``generator_train.safetensors``
  is the live one).

Without captions the run is unconditional (the authors' LSUN / ImageNet set-up: colour
loss 50). With captions, the project's text encoder (``models.stackgan.text``) is first
trained on them with Reed et al.'s matching objective, then frozen; a caption file has one
line a caption: ``<image file name><TAB><caption>`` (several lines may name one image; each
step picks one of its captions, as the authors pick one of ten).

Deviations: wrong images come from the batch (as StackGAN v1's ``compute_discriminator_loss``),
not from a random image of another class (v2's dataset); there is no Inception scoring.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.common.images import image_files, to_uint8
from models.common.train import BaseTrainer, LoopConfig
from models.errors import InvalidInput
from models.stackgan.networks import DNet, GNet, kl_loss
from models.stackgan.text import CharCNNRNN, train_text_encoder

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig(LoopConfig):
    """One StackGAN++ training run; written to ``config.json`` as ``train``.

    Defaults are the authors' (``cfg/birds_3stages.yml``, ``cfg/*_3stages_color.yml``)."""

    data_dir: str  # folder of training images
    out_dir: str
    captions: str | None = None  # caption file (see the module docstring); None: unconditional
    branch_num: int = 3  # TREE.BRANCH_NUM: 64, 128, 256
    z_dim: int = 100
    embedding_dim: int = 128  # GAN.EMBEDDING_DIM (CA code)
    gf_dim: int = 64
    df_dim: int = 64
    r_num: int = 2
    text_dim: int = 128  # the project's text encoder's output (the authors' char-CNN-RNN: 1024)
    batch_size: int = 24
    lr: float = 2e-4  # TRAIN.GENERATOR_LR = TRAIN.DISCRIMINATOR_LR
    kl_weight: float = 2.0  # TRAIN.COEFF.KL
    uncond_loss: float | None = None  # TRAIN.COEFF.UNCOND_LOSS; None: 1.0 with captions, 0 without
    color_loss: float | None = None  # TRAIN.COEFF.COLOR_LOSS; None: 0 with captions, 50 without
    ema: float = 0.999  # decay of the averaged generator
    encoder_steps: int = 400  # text encoder training steps
    encoder_batch: int = 64
    max_epochs: int = 600  # TRAIN.MAX_EPOCH (birds); the schedule when max_steps is None

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.branch_num <= 4:
            raise InvalidInput(f"branch_num must be 1 to 4, got {self.branch_num}")
        if self.batch_size < 2:
            raise InvalidInput(f"batch_size must be at least 2, got {self.batch_size}")
        if self.uncond_loss is None:
            self.uncond_loss = 1.0 if self.captions else 0.0
        if self.color_loss is None:
            self.color_loss = 0.0 if self.captions else 50.0

    @property
    def image_size(self) -> int:
        return 64 * 2 ** (self.branch_num - 1)

    def generator_config(self) -> dict:
        return {"branch_num": self.branch_num, "z_dim": self.z_dim, "embedding_dim": self.embedding_dim,
                "gf_dim": self.gf_dim, "r_num": self.r_num, "b_condition": bool(self.captions),
                "text_dim": self.text_dim}


# ---------------------------------------------------------------------------------------
# Data


def read_captions(path, files: list[Path]) -> list[list[str]]:
    """The captions of each of ``files`` from a caption file; InvalidInput for an image without one."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"caption file {path} not found")
    by_name: dict[str, list[str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        name, sep, caption = line.partition("\t")
        if not sep or not caption.strip():
            raise InvalidInput(f"{path}:{number}: expected '<image file name><TAB><caption>'")
        by_name.setdefault(name.strip(), []).append(caption.strip())
    out = []
    for file in files:
        captions = by_name.get(file.name) or by_name.get(str(file))
        if not captions:
            raise InvalidInput(f"{path} holds no caption of {file.name}")
        out.append(captions)
    return out


def read_images(files: list[Path], size: int) -> torch.Tensor:
    """Images centre-cropped square, resized to ``size``: float (N, 3, size, size) in [-1, 1]."""
    from PIL import Image

    out = []
    for file in files:
        with Image.open(file) as image:
            image = image.convert("RGB")
            width, height = image.size
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
            out.append(np.asarray(image))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 127.5 - 1


class CaptionedImages(torch.utils.data.Dataset):
    """Images (float, [-1, 1]) with, when captioned, one caption a step among each image's.

    Items: ``{"image": (3, S, S), "caption": index into ``names`` (-1 without captions)}``;
    the caption is drawn with a generator seeded by (seed, epoch, index).
    """

    def __init__(self, images: torch.Tensor, captions: list[list[str]] | None, seed=0):
        self.images, self.seed, self.epoch = images, seed, 0
        self.names = sorted({c for cs in captions for c in cs}) if captions else []
        index = {name: i for i, name in enumerate(self.names)}
        self.captions = [[index[c] for c in cs] for cs in captions] if captions else None

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        caption = -1
        if self.captions:
            choices = self.captions[i]
            caption = choices[int(np.random.default_rng([self.seed, self.epoch, i]).integers(len(choices)))]
        return {"image": self.images[i], "caption": caption}


# ---------------------------------------------------------------------------------------
# Losses (the authors' train_Dnet / train_Gnet)


def weights_init(m):
    """The authors' initialisation: orthogonal convolutions and linears, BatchNorm N(1, 0.02)."""
    name = m.__class__.__name__
    if "Conv" in name:
        nn.init.orthogonal_(m.weight.data, 1.0)
    elif "BatchNorm" in name:
        m.weight.data.normal_(1.0, 0.02)
        m.bias.data.fill_(0)
    elif "Linear" in name:
        nn.init.orthogonal_(m.weight.data, 1.0)
        if m.bias is not None:
            m.bias.data.fill_(0.0)


def mean_covariance(images):
    """Per-image channel means (n, C, 1, 1) and covariances (n, C, C) (the colour-consistency terms)."""
    n, c, h, w = images.shape
    mu = images.mean((2, 3), keepdim=True)
    centred = (images - mu).view(n, c, h * w)
    return mu, centred @ centred.transpose(1, 2) / (h * w)


def discriminator_loss(netD, real, wrong, fake, mu, wrong_mask, uncond_loss) -> dict:
    """One branch's D loss: matching-aware with (real, wrong, fake) when ``mu`` is given, else real/fake.

    ``wrong_mask`` (n,) is 1 where the rolled image really is a wrong one (another caption).
    """
    ones, zeros = torch.ones(len(real), device=real.device), torch.zeros(len(real), device=real.device)
    if mu is None:
        real_logits, fake_logits = netD(real), netD(fake.detach())
        err_real = F.binary_cross_entropy(real_logits[0], ones)
        err_fake = F.binary_cross_entropy(fake_logits[0], zeros)
        return {"d": err_real + err_fake, "d_real": err_real, "d_fake": err_fake}
    cond = mu.detach()
    real_logits, wrong_logits, fake_logits = netD(real, cond), netD(wrong, cond), netD(fake.detach(), cond)

    def wrong_bce(p, target):
        per = F.binary_cross_entropy(p, target, reduction="none")
        return (per * wrong_mask).sum() / wrong_mask.sum().clamp(min=1)

    err_real = F.binary_cross_entropy(real_logits[0], ones)
    err_wrong = wrong_bce(wrong_logits[0], zeros)
    err_fake = F.binary_cross_entropy(fake_logits[0], zeros)
    if len(real_logits) > 1 and uncond_loss > 0:
        err_real = err_real + uncond_loss * F.binary_cross_entropy(real_logits[1], ones)
        err_wrong = err_wrong + uncond_loss * F.binary_cross_entropy(wrong_logits[1], ones)
        err_fake = err_fake + uncond_loss * F.binary_cross_entropy(fake_logits[1], zeros)
        total = err_real + err_wrong + err_fake
    else:
        total = err_real + 0.5 * (err_wrong + err_fake)
    return {"d": total, "d_real": err_real, "d_wrong": err_wrong, "d_fake": err_fake}


def generator_loss(netsD, fakes, mu, logvar, uncond_loss, color_loss, kl_weight) -> dict:
    """G's loss: adversarial over branches, colour consistency, KL of the CA."""
    ones = torch.ones(len(fakes[0]), device=fakes[0].device)
    adversarial = 0.0
    for netD, fake in zip(netsD, fakes):
        outputs = netD(fake, mu) if mu is not None else netD(fake)
        err = F.binary_cross_entropy(outputs[0], ones)
        if len(outputs) > 1 and uncond_loss > 0:
            err = err + uncond_loss * F.binary_cross_entropy(outputs[1], ones)
        adversarial = adversarial + err
    total, colour = adversarial, torch.zeros((), device=fakes[0].device)
    if color_loss > 0:
        for fine, coarse in zip(fakes[1:], fakes[:-1]):
            mu1, cov1 = mean_covariance(fine)
            mu2, cov2 = mean_covariance(coarse.detach())
            colour = colour + color_loss * F.mse_loss(mu1, mu2) + color_loss * 5 * F.mse_loss(cov1, cov2)
        total = total + colour
    kl = kl_loss(mu, logvar) * kl_weight if mu is not None else torch.zeros((), device=fakes[0].device)
    return {"g": total + kl, "g_adv": adversarial, "color": colour, "kl": kl}


def branch_images(images: torch.Tensor, branch_num: int) -> list[torch.Tensor]:
    """The real images at each branch's size, 64 x 2^i (area-averaged from the largest)."""
    return [images if images.shape[-1] == 64 << i else F.interpolate(images, size=(64 << i, 64 << i), mode="area")
            for i in range(branch_num)]


# ---------------------------------------------------------------------------------------
# The trainer


class Trainer(BaseTrainer):
    """StackGAN++ on a folder of images (and captions); see the module docstring."""

    model = "stackgan"
    name = "stackgan"
    state_file = "train_state.pt"
    shown_losses = ("d", "g", "kl")

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        files = image_files(config.data_dir)
        captions = read_captions(config.captions, files) if config.captions else None
        self.dataset = CaptionedImages(read_images(files, config.image_size), captions, config.seed)
        if len(self.dataset) < 2:
            raise InvalidInput("training needs at least two images")
        self.batch_size = min(config.batch_size, len(self.dataset))
        self.steps_per_epoch = len(self.dataset) // self.batch_size       # the authors' drop_last
        self.conditional = captions is not None
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            self.netG = GNet(**config.generator_config())
            self.netG.apply(weights_init)
            self.netsD = nn.ModuleList(DNet(64 << i, config.df_dim, config.embedding_dim, self.conditional)
                                       for i in range(config.branch_num))
            self.netsD.apply(weights_init)
        self.netG.to(self.device)
        self.netsD.to(self.device)
        self.avgG = copy.deepcopy(self.netG).eval().requires_grad_(False)
        self.encoder = CharCNNRNN(config.text_dim).to(self.device) if self.conditional else None
        self.embeddings = None
        betas = (0.5, 0.999)
        self.opt_g = torch.optim.Adam(self.netG.parameters(), lr=config.lr, betas=betas)
        self.opts_d = [torch.optim.Adam(d.parameters(), lr=config.lr, betas=betas) for d in self.netsD]
        self.fixed_noise = torch.randn(8, config.z_dim, generator=torch.Generator().manual_seed(config.seed))

    # -- what BaseTrainer asks ------------------------------------------------------------
    @property
    def loss_names(self):
        return ("d", "d_real", "d_wrong", "d_fake", "g", "g_adv", "color", "kl")

    def total_steps(self):
        return self.config.max_epochs * self.steps_per_epoch

    def checkpoint_networks(self):
        networks = {"generator.safetensors": self.avgG, "generator_train.safetensors": self.netG}
        for i, d in enumerate(self.netsD):
            networks[f"d{64 << i}.safetensors"] = d
        if self.encoder is not None:
            networks["text_encoder.safetensors"] = self.encoder
        return networks

    @property
    def optimizers(self):
        return {"optimizer_g": self.opt_g, **{f"optimizer_d{64 << i}": o for i, o in enumerate(self.opts_d)}}

    def config_json(self):
        config = {"model": "stackgan", "name": f"StackGAN++ trained on {self.data_dir.name}", "kind": "v2",
                  "variant": "project", "generator": dict(self.avgG.config),
                  "captions": list(self.dataset.names[:1000])}
        if self.encoder is not None:
            config["text_encoder"] = dict(self.encoder.config)
        return {**config, **self.progress_entries(), **self.history_entries()}

    def check_resumable(self, saved):
        if saved.get("generator") != self.config.generator_config():
            raise InvalidInput(f"{self.out_dir} holds a run of another generator configuration; "
                               "pass resume=False (--restart) or another folder")

    def start_run(self):
        """Train the text encoder on a fresh run (a resumed one has it), then embed the captions."""
        if not self.conditional:
            return
        if self.step == 0:
            # every (image, caption) pair of the set
            pairs = [(i, c) for i, cs in enumerate(self.dataset.captions) for c in cs]
            images = self.dataset.images[torch.tensor([i for i, _ in pairs])]
            captions = [self.dataset.names[c] for _, c in pairs]
            encoder, losses = train_text_encoder(images, captions, steps=self.config.encoder_steps,
                                                 batch_size=self.config.encoder_batch,
                                                 text_dim=self.config.text_dim, seed=self.config.seed)
            self.encoder.load_state_dict(encoder.state_dict())
            self.encoder_losses = (losses[0], losses[-1]) if losses else None
            logger.info("text encoder: matching loss %.4f -> %.4f", *(self.encoder_losses or (0, 0)))
        self.encoder.eval().requires_grad_(False)
        with torch.no_grad():
            self.embeddings = self.encoder.encode(self.dataset.names)

    def train_step(self, batch):
        config = self.config
        reals = branch_images(batch["image"].to(self.device), config.branch_num)
        n = len(reals[0])
        # (1) fake images; z drawn on the CPU, as the pipeline does
        noise = torch.empty(n, config.z_dim).normal_().to(self.device)
        captions = batch["caption"].to(self.device)
        embedding = self.embeddings[captions] if self.conditional else None
        fakes, mu, logvar = self.netG(noise, embedding)
        # (2) every D: real / wrong (the batch rolled by one) / fake
        wrong_mask = (captions.roll(1, 0) != captions).float()
        losses = {}
        for netD, opt, real, fake in zip(self.netsD, self.opts_d, reals, fakes):
            netD.zero_grad()
            d = discriminator_loss(netD, real, real.roll(1, 0), fake, mu, wrong_mask, config.uncond_loss)
            d["d"].backward()
            opt.step()
            for k, v in d.items():
                losses[k] = losses.get(k, 0.0) + float(v)
        # (3) G
        self.netG.zero_grad()
        g = generator_loss(self.netsD, fakes, mu, logvar, config.uncond_loss, config.color_loss, config.kl_weight)
        g["g"].backward()
        self.opt_g.step()
        with torch.no_grad():
            for p, avg in zip(self.netG.parameters(), self.avgG.parameters()):
                avg.mul_(config.ema).add_(p.detach(), alpha=1 - config.ema)
            for b, avg in zip(self.netG.buffers(), self.avgG.buffers()):
                avg.copy_(b)
        losses.update({k: float(v) for k, v in g.items()})
        return losses

    def save_samples(self, batch=None):
        """Each branch of the averaged G on fixed noise (and the batch's captions), one row a branch."""
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(self.config.seed)
            n = len(self.fixed_noise)
            embedding = None
            if self.conditional:
                ids = batch["caption"][:n] if batch is not None else torch.zeros(n, dtype=torch.long)
                embedding = self.embeddings[ids.to(self.device)][:n]
                n = len(embedding)
            images, _, _ = self.avgG(self.fixed_noise[:n].to(self.device), embedding)
        size = images[-1].shape[-1]
        rows = [[tile for tile in to_uint8(F.interpolate(level, size=(size, size), mode="nearest"))]
                for level in images]
        self.save_sample_grid(f"step_{self.step:07d}.png", rows)

    def summary_extras(self):
        return {"images": len(self.dataset), "conditional": self.conditional,
                "captions": len(self.dataset.names)}


def train(images, out_dir, captions=None, **options) -> dict:
    """Train StackGAN++ on the images under ``images`` (with ``captions``: text-conditional).

    Args:
        images: a folder of images (searched recursively).
        out_dir: the run folder; ``registry.load("stackgan", weights=out_dir)`` loads it.
        captions: a caption file (``<file name><TAB><caption>`` lines), or None.
        **options: any field of `TrainConfig` (``max_steps``, ``time_budget``,
            ``batch_size``, ``branch_num``, ``gf_dim`` ...).

    Returns:
        The summary of `Trainer.run`.
    """
    return Trainer(TrainConfig(data_dir=str(images), out_dir=str(out_dir), captions=captions, **options)).run()
