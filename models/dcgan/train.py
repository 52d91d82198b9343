"""Training DCGAN's networks with the objectives of the direct family (``models.dcgan.losses``).

    talkingface train dcgan --images DIR --out RUN [--objective gan|improved|infogan|fgan|gan-int-cls]
                            [--divergence kl|reverse-kl|js|pearson|hellinger|gan] [--image-size 64 ...]

The loop is the reference's (pytorch/examples ``dcgan/main.py``): images centre-cropped
and resized to ``image_size``, scaled to [-1, 1]; batches of 64; per batch one
discriminator step (real, then generated images) and one generator step on the same
generated images; Adam, lr 2e-4, beta1 0.5, for 25 epochs; weights initialised by
``networks.weights_init``. Only the partial last batch of an epoch is dropped (batch norm
and minibatch discrimination need more than one image). Each objective changes the
networks and the losses:

* ``gan``: the reference networks and BCE losses (non-saturating generator loss).
* ``improved``: ``ImprovedDiscriminator`` (minibatch discrimination), the generator
  trained by feature matching on the discriminator's last features.
* ``infogan``: the generator's input is [z, one-hot categorical code, continuous codes];
  ``InfoDiscriminator``'s Q head and the generator minimise ``information_loss`` beside the
  generator's GAN loss; the discriminator's convolutions are trained by D's loss only.
* ``fgan``: the reference networks; the discriminator's score before the sigmoid is the
  variational function V; ``--divergence`` picks g_f and f* (Table 2).
* ``gan-int-cls``: ``TextConditionalGenerator`` and ``MatchingAwareDiscriminator``; each
  image needs a text embedding: ``--embeddings FILE.npy``, one float row per image of the
  folder in sorted file order (``images.image_files``); the generator also learns from
  embeddings interpolated between two images' (GAN-INT, beta 0.5).

The run folder (``config.json`` with ``model: dcgan``, ``objective`` and the networks'
constructor arguments, ``generator.safetensors``, ``discriminator.safetensors``) loads
with ``registry.load("dcgan", weights=RUN)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.common.images import image_files, read_image_folder, to_uint8
from models.common.train import BaseTrainer, LoopConfig, read_run_config
from models.dcgan import losses
from models.dcgan import networks as nets
from models.errors import InvalidInput

logger = logging.getLogger(__name__)

GENERATOR_FILE, DISCRIMINATOR_FILE = "generator.safetensors", "discriminator.safetensors"


@dataclass
class TrainConfig(LoopConfig):
    """One run's settings, written to ``config.json`` as ``train``; defaults are the reference's."""

    data_dir: str                         # the folder of training images (--images)
    out_dir: str
    objective: str = "gan"                # one of losses.OBJECTIVES
    divergence: str = "gan"               # f-GAN: one of losses.DIVERGENCES
    image_size: int = 64                  # --imageSize
    nc: int = 3                           # image channels (1: grey)
    nz: int = 100                         # --nz (InfoGAN: the noise part only)
    ngf: int = 64                         # --ngf
    ndf: int = 64                         # --ndf
    batch_size: int = 64                  # --batchSize
    lr: float = 2e-4                      # --lr
    beta1: float = 0.5                    # --beta1
    epochs: int = 25                      # --niter: the full schedule when max_steps is None
    limit: int | None = None              # use at most this many images
    kernels: int = 100                    # Improved GAN: B, minibatch-discrimination kernels
    kernel_dims: int = 5                  # Improved GAN: C, dimensions of each kernel
    categories: int = 10                  # InfoGAN: k, values of the categorical code
    continuous: int = 2                   # InfoGAN: continuous codes
    lambda_cat: float = 1.0               # InfoGAN: lambda of the categorical term
    lambda_cont: float = 0.1              # InfoGAN: lambda of the continuous term
    embeddings: str | None = None         # GAN-INT-CLS: .npy of (N, d) text embeddings
    projected_dim: int = 128              # GAN-INT-CLS: embedding projection
    int_weight: float = 1.0               # GAN-INT-CLS: weight of the interpolated-text term
    int_beta: float = 0.5                 # GAN-INT-CLS: beta of the interpolation

    def __post_init__(self):
        super().__post_init__()
        if self.objective not in losses.OBJECTIVES:
            raise InvalidInput(f"objective must be one of {', '.join(losses.OBJECTIVES)}, got {self.objective!r}")
        if self.divergence not in losses.DIVERGENCES:
            raise InvalidInput(f"divergence must be one of {', '.join(losses.DIVERGENCES)}, got {self.divergence!r}")
        nets._depth(self.image_size)
        for name in ("nz", "ngf", "ndf", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.nc not in (1, 3):
            raise InvalidInput(f"nc must be 1 or 3, got {self.nc}")
        if self.objective == "infogan" and self.categories + self.continuous < 1:
            raise InvalidInput("infogan needs at least one code (categories or continuous)")
        if self.objective == "gan-int-cls" and not self.embeddings:
            raise InvalidInput("gan-int-cls trains on text embeddings: pass --embeddings FILE.npy, "
                               "one row per image of the folder in sorted file order")


class ImageSet(torch.utils.data.Dataset):
    """The training images (N, nc, S, S) in [-1, 1], with their text embeddings when given."""

    def __init__(self, images: torch.Tensor, embeddings: torch.Tensor | None = None):
        self.images, self.embeddings = images, embeddings

    def set_epoch(self, epoch: int):
        """Nothing varies by epoch (no augmentation, as in the reference)."""

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        item = {"image": self.images[index]}
        if self.embeddings is not None:
            item["embedding"] = self.embeddings[index]
        return item


def read_embeddings(path, count: int) -> torch.Tensor:
    """The (N, d) float32 text embeddings of ``path`` (.npy), checked against ``count`` images."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"embeddings file {path} not found")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise InvalidInput(f"cannot read {path} as a .npy array: {exc}") from exc
    if array.ndim != 2 or array.shape[0] < count or array.dtype.kind not in "iuf":
        raise InvalidInput(f"{path} must hold numbers shaped (images, d) with at least {count} rows, "
                           f"got {array.dtype} {array.shape}")
    return torch.from_numpy(array[:count].astype(np.float32))


def build_networks(config: TrainConfig, embedding_dim: int | None = None) -> tuple[nn.Module, nn.Module]:
    """The generator and discriminator ``config.objective`` trains, initialised as the reference does."""
    size, nc = config.image_size, config.nc
    if config.objective == "infogan":
        generator = nets.Generator(config.nz + config.categories + config.continuous, config.ngf, nc, size)
        discriminator = nets.InfoDiscriminator(nc, config.ndf, size, config.categories, config.continuous)
    elif config.objective == "gan-int-cls":
        generator = nets.TextConditionalGenerator(config.nz, config.ngf, nc, size, embedding_dim, config.projected_dim)
        discriminator = nets.MatchingAwareDiscriminator(nc, config.ndf, size, embedding_dim, config.projected_dim)
    elif config.objective == "improved":
        generator = nets.Generator(config.nz, config.ngf, nc, size)
        discriminator = nets.ImprovedDiscriminator(nc, config.ndf, size, config.kernels, config.kernel_dims)
    else:
        generator = nets.Generator(config.nz, config.ngf, nc, size)
        discriminator = nets.Discriminator(nc, config.ndf, size)
    return generator.apply(nets.weights_init), discriminator.apply(nets.weights_init)


class Trainer(BaseTrainer):
    """DCGAN's networks trained with one objective of ``losses.OBJECTIVES``."""

    name = "dcgan"
    state_file = "train_state.pt"
    shown_losses = ("loss_d", "loss_g")

    def __init__(self, config: TrainConfig, images: torch.Tensor | None = None):
        super().__init__(config)
        torch.manual_seed(config.seed)
        if images is None:
            images = read_image_folder(self.data_dir, config.image_size, config.nc, limit=config.limit)
        embeddings = None
        if config.objective == "gan-int-cls":
            embeddings = read_embeddings(config.embeddings, len(images))
        self.dataset = ImageSet(images, embeddings)
        self.batch_size = min(config.batch_size, len(images))
        if self.batch_size < 2:
            raise InvalidInput("training needs at least 2 images (batch norm needs more than one)")
        self.steps_per_epoch = len(images) // self.batch_size
        self.embedding_dim = None if embeddings is None else embeddings.shape[1]
        self.generator, self.discriminator = build_networks(config, self.embedding_dim)
        self.generator.to(self.device).train()
        self.discriminator.to(self.device).train()
        betas = (config.beta1, 0.999)
        if config.objective == "infogan":
            # Q (and G) minimise the information loss; D's convolutions only D's loss.
            self.opt_d = torch.optim.Adam(self.discriminator.main.parameters(), lr=config.lr, betas=betas)
            self.opt_g = torch.optim.Adam(list(self.generator.parameters()) + list(self.discriminator.q.parameters()),
                                          lr=config.lr, betas=betas)
        else:
            self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas)
            self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas)
        self.fixed = self.draw_inputs(min(16, self.batch_size), generator=torch.Generator().manual_seed(config.seed))

    # -- inputs ---------------------------------------------------------------------------
    def draw_inputs(self, n: int, embedding: torch.Tensor | None = None, generator=None) -> dict:
        """The generator's inputs for ``n`` images, on the CPU: z, and the codes or embedding."""
        config = self.config
        z = torch.randn(n, config.nz, 1, 1, generator=generator)
        inputs = {"z": z}
        if config.objective == "infogan":
            if generator is not None:
                indices = torch.arange(n) % max(config.categories, 1)
                cont = torch.rand(n, config.continuous, generator=generator) * 2 - 1
                one_hot = (torch.nn.functional.one_hot(indices, config.categories).float() if config.categories
                           else torch.zeros(n, 0))
            else:
                indices, one_hot, cont = losses.sample_codes(n, config.categories, config.continuous)
            inputs.update(indices=indices, cont=cont, z=torch.cat([z.flatten(1), one_hot, cont], 1)[:, :, None, None])
        elif config.objective == "gan-int-cls":
            inputs["embedding"] = (embedding if embedding is not None
                                   else self.dataset.embeddings[:n])
        return inputs

    def generate(self, inputs: dict) -> torch.Tensor:
        z = inputs["z"].to(self.device)
        if self.config.objective == "gan-int-cls":
            return self.generator(z, inputs["embedding"].to(self.device))
        return self.generator(z)

    # -- one step ---------------------------------------------------------------------------
    @property
    def loss_names(self) -> tuple[str, ...]:
        names = {"gan": ("loss_d", "loss_g", "d_x", "d_g_z"),
                 "improved": ("loss_d", "loss_g", "loss_g_adv"),
                 "infogan": ("loss_d", "loss_g", "loss_info", "mi_bound"),
                 "fgan": ("loss_d", "loss_g", "divergence_estimate"),
                 "gan-int-cls": ("loss_d", "loss_g", "loss_g_int")}
        return names[self.config.objective]

    def train_step(self, batch: dict) -> dict:
        """The reference's step: D on real images and on G(z) (detached), then G on the same G(z)."""
        real = batch["image"].to(self.device)
        inputs = self.draw_inputs(len(real), embedding=batch.get("embedding"))
        fake = self.generate(inputs)
        loss_d, logs = self.discriminator_objective(real, inputs, fake.detach())
        self._update(self.opt_d, loss_d)
        loss_g, logs_g = self.generator_objective(real, inputs, fake)
        self._update(self.opt_g, loss_g)
        return {"loss_d": loss_d.item(), **logs, **logs_g}

    def _update(self, optimizer, loss):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def discriminator_objective(self, real, inputs: dict, fake) -> tuple[torch.Tensor, dict]:
        """D's loss under ``config.objective`` on real and generated images; and what to log."""
        config, d = self.config, self.discriminator
        objective = config.objective
        if objective == "gan":                  # the reference's BCE on D's probabilities
            d_real, d_fake = d(real), d(fake)
            return losses.discriminator_loss(d_real, d_fake), {"d_x": d_real.mean().item(),
                                                              "d_g_z": d_fake.mean().item()}
        if objective == "improved":             # minibatch discrimination inside d.logits
            return losses.discriminator_loss(d.logits(real), d.logits(fake), logits=True), {}
        if objective == "infogan":              # D's GAN loss; Q is trained with G
            return losses.discriminator_loss(d(real)[0], d(fake)[0]), {}
        if objective == "fgan":                 # V = D's score before the sigmoid; D maximises F (Eq. 6)
            loss = losses.fgan_discriminator_loss(config.divergence, d.logits(real), d.logits(fake))
            return loss, {"divergence_estimate": -loss.item()}
        right = inputs["embedding"].to(self.device)     # GAN-INT-CLS, Algorithm 1
        wrong = losses.wrong_embeddings(right)
        loss = losses.matching_aware_discriminator_loss(d.logits(real, right), d.logits(real, wrong),
                                                        d.logits(fake, right))
        return loss, {}

    def generator_objective(self, real, inputs: dict, fake) -> tuple[torch.Tensor, dict]:
        """G's loss (with Q's for InfoGAN) under ``config.objective``; and what to log."""
        config, d = self.config, self.discriminator
        objective = config.objective
        if objective == "gan":                  # non-saturating: -log D(G(z))
            loss = losses.generator_loss(d(fake))
            return loss, {"loss_g": loss.item()}
        if objective == "improved":             # feature matching (Sec. 3.1)
            with torch.no_grad():
                real_features = d.features(real)
                adversarial = losses.generator_loss(d.logits(fake), logits=True)
            loss = losses.feature_matching_loss(real_features, d.features(fake))
            return loss, {"loss_g": loss.item(), "loss_g_adv": adversarial.item()}
        if objective == "infogan":              # -log D(G(z, c)) - lambda L_I (up to H(c))
            probability, logits, mean, log_var = d(fake)
            indices, cont = inputs["indices"].to(self.device), inputs["cont"].to(self.device)
            adversarial = losses.generator_loss(probability)
            info = losses.information_loss(logits, indices, mean, log_var, cont, config.lambda_cat,
                                           config.lambda_cont)
            with torch.no_grad():
                bound = losses.mutual_information_bound(logits, indices, mean, log_var, cont)
            return adversarial + info, {"loss_g": adversarial.item(), "loss_info": info.item(),
                                        "mi_bound": bound.item()}
        if objective == "fgan":                 # -E_Q[g_f(V(G(z)))] (Sec. 3.2)
            loss = losses.fgan_generator_loss(config.divergence, d.logits(fake))
            return loss, {"loss_g": loss.item()}
        right = inputs["embedding"].to(self.device)     # GAN-CLS's G loss, plus GAN-INT's
        loss = losses.generator_loss(d.logits(fake, right), logits=True)
        between = losses.interpolate_embeddings(right, losses.wrong_embeddings(right), config.int_beta)
        fake_between = self.generate(self.draw_inputs(len(real), embedding=between))
        loss_int = losses.generator_loss(d.logits(fake_between, between), logits=True)
        return loss + config.int_weight * loss_int, {"loss_g": loss.item(), "loss_g_int": loss_int.item()}

    # -- the run ----------------------------------------------------------------------------
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch

    def checkpoint_networks(self) -> dict[str, nn.Module]:
        return {GENERATOR_FILE: self.generator, DISCRIMINATOR_FILE: self.discriminator}

    def config_json(self) -> dict:
        return {"model": "dcgan", "name": f"dcgan {self.config.objective} run", "objective": self.config.objective,
                "divergence": self.config.divergence if self.config.objective == "fgan" else None,
                "generator": dict(self.generator.config), "discriminator": dict(self.discriminator.config),
                "images": len(self.dataset), **self.progress_entries(), **self.history_entries()}

    def check_resumable(self, saved: dict):
        for key, network in (("generator", self.generator), ("discriminator", self.discriminator)):
            if saved.get("objective") != self.config.objective or saved.get(key) != dict(network.config):
                raise InvalidInput(f"{self.out_dir} holds a run of other networks or another objective "
                                   f"({saved.get('objective')}): pass --restart or another --out")

    def save_samples(self, batch: dict | None = None):
        """The fixed inputs' images as one grid (four rows at most)."""
        was_training = self.generator.training
        self.generator.eval()
        with torch.no_grad():
            images = to_uint8(self.generate(self.fixed))
        self.generator.train(was_training)
        columns = min(8, len(images))
        rows = [list(images[i:i + columns]) for i in range(0, len(images) - columns + 1, columns)]
        self.save_sample_grid(f"step_{self.step:06d}.png", rows)

    def summary_extras(self) -> dict:
        return {"objective": self.config.objective, "images": len(self.dataset)}


def read_config(out_dir) -> dict:
    """The ``config.json`` of a DCGAN run."""
    return read_run_config(out_dir, "dcgan")


def train(images_dir, out_dir, **options) -> dict:
    """Train on the images of ``images_dir`` into ``out_dir``; the run's summary.

    ``options`` are ``TrainConfig``'s fields (``objective``, ``max_steps``, ``image_size`` ...).
    """
    image_files(images_dir)     # InvalidInput for a folder without images, before anything is built
    config = TrainConfig(data_dir=str(images_dir), out_dir=str(out_dir), **options)
    return Trainer(config).run()
