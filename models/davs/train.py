"""Training of DAVS on a prepared dataset folder (``models.davs.dataset``).

Zhou, Liu, Liu, Luo and Wang, "Talking Face Generation by Adversarially Disentangled
Audio-Visual Representation", AAAI 2019 (arXiv:1807.07860). The objectives, the clip
sampling and the optimiser settings follow the authors' training code
(github.com/Hangz-nju-cuhk/Talking-Face-Generation-DAVS: ``train.py``, ``Gen_final_v1.py``,
``loss_functions.py``, ``embedding_utils.py``, ``Options.py``,
``Dataloader/Data_load_sequence.py``).

A clip is 25 consecutive frames and their MFCC blocks (the authors' LRW frames 2..26),
each frame the 256 crop of the 260 x 260 aligned face at a random offset 0..4 and, half
of the time, mirrored (``lip_reading_loader``, mode ``train``), in [0, 1]. Per step, as
``set_input`` / ``forward`` draw them: an identity frame A; 20 consecutive frames for the
person-ID adversary (start 0..4); 12 frames every second frame (start 0 or 1) with their
audio for the word-ID side; 6 consecutive of those 12 (start 0..6) to generate.

Objectives (``backward_dis``, ``backward_D``, ``backward_G``; weights from ``Options.py``):

* Word-ID space (Sec. 3.1-3.2): ``EmbeddingL2``, the L2 contrastive loss (margin 1) of the
  L2-normalised 12-frame audio and lip features, the lip side detached (audio is pulled
  to the lips); the shared word classifier (``ModelFusion``) with cross-entropy on both;
  domain-adversarial alignment: ``discriminator_audio`` learns audio (1) from lips (0),
  ``dis_R_loss = (BCE(D(lip), 0) + BCE(D(audio), 1)) / 2``, and the encoders are pushed
  the other way, ``5 * (BCE(D(audio), 0) + BCE(D(lip), 1))``.
* Person-ID space (Sec. 3.2, adversarial disentanglement): ``ID_dis32`` learns the word
  from the ID encoder's 64x64 maps of 20 frames (``CE_loss``, x ``lambda_CE`` = 1); the ID
  encoder is pushed to make its softmax uniform, ``lossoftmax = 10^6 * MSE(softmax, 1/K)``
  (for LRW's K = 500 words; for another K the weight is scaled so that the largest possible
  value stays the same, ``confusion_weight``, as 10^6 would swamp every other term).
* Generation (Sec. 3.3): 6 frames from A's person-ID feature and the audio word features,
  6 from the lip word features; ``lambda_A * L1 + lambda_B * L1(mouth box)`` on the 0..255
  scale (4 and 8; box rows 170-233, columns 64-191 of 256); the temporal term
  ``5 * sum_i L1(fake_i, fake_{i-1})`` outside the mouth box on the 0..1 scale
  (``G_x_loss``; ``fake_{-1}`` = A, earlier frames detached); and the 6-frame sequence
  discriminator (``netD_mul``) with its audio-agreement head, BCE, soft labels (real
  ``1 - u``, fake ``u``, ``u ~ U(0, 0.1)`` drawn at each use) for the discriminator.
* Adam, lr 2e-4, betas (0.9, 0.999) for both sides; the discriminator side (``netD_mul``,
  ``discriminator_audio``, ``ID_dis32``) steps first, then the generator side (encoders,
  decoder, word classifier). The learning rate is constant for 100 epochs, then falls by
  ``lr / 10000`` an epoch (``niter``, ``niter_decay``). Batch 16.

Word labels are optional. Without them (or with fewer than two distinct labels) the word
classifier, ``ID_dis32`` and their three terms are off; the rest trains unchanged. That
costs the paper's disentanglement: nothing then makes the word features discriminative
(only the contrastive loss ties audio to lips, and the reconstruction shapes both), and
nothing removes speech content from the person-ID features, so the decoder may draw the
mouth from the identity frame instead of the word feature and audio-driven results move
their lips less. Clips without a label in a labelled dataset are left out of the word
terms only.

Not the authors' training, for short demonstration runs only (``objectives``; the default
``"authors"`` is the above): ``"reconstruction"`` trains the generator side on its
reconstruction (``lambda_A`` / ``lambda_B`` L1 of the audio- and lip-driven frames), temporal
and contrastive terms alone: no sequence discriminator, no domain adversary, no word
classifiers, so no discriminator-side step. ``"audio_reconstruction"`` also leaves out the
lip-driven frames and the contrastive term: the L1 and temporal terms of the audio-driven
frames alone (the lip encoder is not trained; video mode is then meaningless). Both decode a
step's frames in one batch. On a 2-core CPU and a budget of minutes (reduced widths, batch
2) the authors' objectives ended before the decoder drew a face dlib could find (346 steps of
about 5 s); ``"audio_reconstruction"`` steps take about 1 s and drew a blurred face whose mouth
follows the voice within 300 steps.

Deviations, none of which changes a loss:

* The identity frame is drawn from the clip's 25 frames (the authors' ``randint(0, 28)``
  indexes a 25-frame block and fails for 25-28); a video longer than 25 frames gives a
  window drawn anew every epoch.
* ``image_size`` below 256 (a multiple of 64, at least 128) resizes the 256 crop with
  area averaging, and scales the mouth box, for quick reduced trainings.
* The networks the authors pre-trained separately (the classification part, their
  README) start from scratch here.
* Sampling is seeded per (seed, epoch, clip) and per (seed, step), so a resumed run draws
  the batches an uninterrupted run would.

Example:

    >>> from models.davs.train import train
    >>> summary = train("data/davs", "runs/davs", max_steps=20000)
    >>> pipe = DAVSPipeline.from_project("runs/davs")       # the run folder loads as weights
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from models import weights as weights_lib
from models.common.device import pick_device
from models.common.train import BaseTrainer, LoopConfig, read_run_config
from models.davs import dataset as davs_dataset
from models.davs.networks import (
    Decoder,
    DomainDiscriminator,
    IdentityEncoder,
    IdWordClassifier,
    LipFeatureEncoder,
    MfccEncoder,
    SequenceDiscriminator,
    WordClassifier,
    expand_identity,
)
from models.errors import InvalidInput

__all__ = [
    "DAVSClips",
    "TrainConfig",
    "Trainer",
    "l2_contrastive_loss",
    "load_trained",
    "mouth_box",
    "confusion_weight",
    "read_config",
    "train",
    "uniform_softmax_loss",
]

logger = logging.getLogger(__name__)

CLIP_FRAMES = 25  # Data_load_sequence.py: frames 2..26 of an LRW clip
CROP = 256  # opt.image_size: the crop cut from the 260 x 260 faces
MAX_OFFSET = 4  # crop_x, crop_y = np.random.randint(0, 5)
TEST_OFFSET = 2  # the loaders' fixed offset outside training
SEQUENCE_LENGTH = 6  # opt.sequence_length: frames generated per clip
PRED_LENGTH = 12  # opt.pred_length: word-ID frames per clip (every second frame)
DISFC_LENGTH = 20  # opt.disfc_length: frames the person-ID adversary reads
MOUTH_ROWS, MOUTH_COLS = (170, 234), (64, 192)  # self.mask[:, :, 170:234, 64:192] at 256
TEMPORAL_WEIGHT = 5.0  # self.G_x_loss * 5
DOMAIN_WEIGHT = 5.0  # (audio_loss_D_inv + image_loss_D_inv) * 5
AUTHORS_CONFUSION_WEIGHT = 1e6  # opt.lambda_CE_inv
AUTHORS_WORDS = 500  # opt.label_size (LRW)
SOFT_LABEL = 0.1  # GANLoss(softlabel=True): random.random() * 0.1
OBJECTIVES = ("authors", "reconstruction", "audio_reconstruction")
RECONSTRUCTION_LOSSES = ("loss_g", "g_l1_audio", "g_l1_image", "g_temporal", "embedding_l2")
NETWORK_FILES = ("id_encoder", "decoder", "mfcc_encoder", "lip_feature_encoder",
                 "sequence_discriminator", "domain_discriminator", "word_classifier", "id_word_classifier")
INFERENCE_NETWORKS = NETWORK_FILES[:4]


# ---------------------------------------------------------------------------------------
# Data


class DAVSClips(Dataset):
    """25-frame training clips of the ``ok`` videos of one split, as the authors' loader.

    ``Data_load_sequence.py`` (``lip_reading_loader``, mode ``train``): the 256 crop of
    each 260 x 260 face at an offset (row, column) drawn from 0..4, mirrored with
    probability 1/2 (the same for the 25 frames), RGB / 255. Videos with fewer than 25
    frames are skipped; a longer video gives a 25-frame window drawn per epoch.

    Args:
        data_dir (`str` or `Path`): the prepared dataset folder.
        split (`str`, defaults to ``"train"``): ``"train"`` or ``"test"``.
        seed (`int`, defaults to 0): seeds the draws: item ``i`` of epoch ``e`` is a
            function of (seed, e, i).
        image_size (`int`, defaults to 256): side of the returned frames (the crop
            resized by area averaging when smaller).
        augment (`bool`, defaults to True): random offset and mirror; False uses the
            centre crop (offset 2) as the authors' test loaders do.
        labels (`list`, *optional*): the label names (class ``i`` is ``labels[i]``);
            None uses the manifest's ``labels``.

    Items are dicts: ``video`` float32 (25, 3, S, S) in [0, 1], ``mfcc`` float32
    (25, 1, 20, 12), ``label`` (int, -1 for none), ``start`` (first frame of the window).
    """

    def __init__(self, data_dir, split="train", *, seed=0, image_size=CROP, augment=True, labels=None):
        self.data_dir = Path(data_dir)
        if not (self.data_dir / "manifest.json").is_file():
            raise InvalidInput(f"{self.data_dir} is not a prepared DAVS dataset: manifest.json is missing "
                               "(run `talkingface data prepare --model davs`)")
        manifest = davs_dataset.load_manifest(self.data_dir)
        self.labels = list(manifest.get("labels", [])) if labels is None else list(labels)
        index = {name: i for i, name in enumerate(self.labels)}
        self.seed, self.epoch = int(seed), 0
        self.image_size, self.augment = int(image_size), bool(augment)
        self.videos: list[tuple[str, int, int]] = []  # (name, frames, label index)
        self.skipped: list[str] = []
        for name in sorted(manifest["videos"]):
            entry = manifest["videos"][name]
            if entry.get("status") != "ok" or entry.get("split") != split:
                continue
            folder = self.data_dir / "videos" / name
            if not all((folder / f).is_file() for f in ("frames.npy", "mfcc.npy")):
                logger.warning("%s is incomplete; the clip is skipped", folder)
                self.skipped.append(name)
                continue
            frames = min(np.load(folder / "frames.npy", mmap_mode="r").shape[0],
                         np.load(folder / "mfcc.npy", mmap_mode="r").shape[0])
            if frames < CLIP_FRAMES:
                self.skipped.append(name)
                continue
            self.videos.append((name, frames, index.get(entry.get("label"), -1)))
        if self.skipped:
            logger.info("%s: %d clips shorter than %d frames or incomplete skipped", split,
                        len(self.skipped), CLIP_FRAMES)

    def set_epoch(self, epoch: int):
        """Draw the windows, crops and mirrors of ``epoch``."""
        self.epoch = int(epoch)

    @property
    def labelled(self) -> int:
        """How many clips have a label."""
        return sum(label >= 0 for _, _, label in self.videos)

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, index):
        name, frames, label = self.videos[index]
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        start = int(rng.integers(0, frames - CLIP_FRAMES + 1))
        if self.augment:
            top, left = (int(v) for v in rng.integers(0, MAX_OFFSET + 1, size=2))
            mirror = bool(rng.integers(0, 2))
        else:
            top = left = TEST_OFFSET
            mirror = False
        folder = self.data_dir / "videos" / name
        faces = np.load(folder / "frames.npy", mmap_mode="r")[start: start + CLIP_FRAMES,
                                                              top: top + CROP, left: left + CROP]
        video = torch.from_numpy(np.ascontiguousarray(faces)).permute(0, 3, 1, 2).float().div_(255.0)
        if mirror:
            video = video.flip(-1)
        if self.image_size != CROP:
            video = F.interpolate(video, size=(self.image_size, self.image_size), mode="area")
        mfcc = np.load(folder / "mfcc.npy", mmap_mode="r")[start: start + CLIP_FRAMES]
        return {"video": video.contiguous(), "mfcc": torch.from_numpy(np.array(mfcc, dtype=np.float32)),
                "label": label, "start": start}


# ---------------------------------------------------------------------------------------
# Losses


def mouth_box(image_size: int) -> tuple[slice, slice]:
    """Rows and columns of the authors' mouth box (170:234, 64:192 at 256), scaled to ``image_size``."""
    scale = image_size / CROP
    return (slice(round(MOUTH_ROWS[0] * scale), round(MOUTH_ROWS[1] * scale)),
            slice(round(MOUTH_COLS[0] * scale), round(MOUTH_COLS[1] * scale)))


def l2_contrastive_loss(anchor: torch.Tensor, other: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """The authors' ``L2ContrastiveLoss``: matched pairs pulled together, others pushed past ``margin``.

    With ``d_ij = ||anchor_i - other_j||``:
    ``(sum_i d_ii^2 + sum_{i != j} max(0, margin - d_ij)^2) / (2 N)``.
    """
    distances = torch.cdist(anchor, other)  # (N, N), d_ij
    push = (margin - distances).clamp(min=0).masked_fill(
        torch.eye(len(anchor), dtype=torch.bool, device=anchor.device), 0.0)
    return (push.pow(2).sum() + distances.diagonal().pow(2).sum()) / (2 * anchor.shape[0])


def uniform_softmax_loss(logits: torch.Tensor) -> torch.Tensor:
    """The authors' ``L2SoftmaxLoss``: ``MSE(softmax(logits), 1 / K)``; zero when nothing is predictable."""
    probabilities = logits.softmax(dim=1)
    return F.mse_loss(probabilities, torch.full_like(probabilities, 1.0 / logits.shape[1]))


def confusion_weight(num_words: int) -> float:
    """The authors' ``lambda_CE_inv`` (10^6 for LRW's 500 words) for another vocabulary size.

    ``MSE(softmax, 1/K)`` is at most ``(K - 1) / K^2`` (a one-hot softmax); the weight is
    scaled so that this largest penalty stays the authors' (10^6 x 499 / 500^2, about 2000):
    with 12 words the MSE can grow 38 times larger and the unscaled term would swamp every
    other loss.
    """
    return AUTHORS_CONFUSION_WEIGHT * ((AUTHORS_WORDS - 1) / AUTHORS_WORDS**2) / ((num_words - 1) / num_words**2)


def _bce(prediction: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy(prediction, torch.full_like(prediction, target))


def _soft_target(real: bool) -> float:
    """GANLoss(softlabel=True): 1 - u for real, u for fake, u ~ U(0, 0.1), drawn at each use."""
    soft = float(torch.rand(())) * SOFT_LABEL
    return 1.0 - soft if real else soft


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean()) * 100.0 if len(labels) else float("nan")


# ---------------------------------------------------------------------------------------
# Configuration


@dataclass
class TrainConfig(LoopConfig):
    """Everything one training run depends on; written to ``config.json`` as ``train``.

    The loop's settings (``max_steps``, ``time_budget``, ``device``, ``sample_every``,
    ``log_every``, ``checkpoint_every``, ``resume``, ``seed``, ``num_workers``,
    ``progress``) are the keyword-only fields of `LoopConfig`; ``max_steps=None`` trains
    the authors' ``niter + niter_decay + 1`` epochs.
    """

    data_dir: str
    out_dir: str
    split: str = "train"
    batch_size: int = 16  # opt.batchSize
    lr: float = 2e-4  # opt.lr
    beta1: float = 0.9  # opt.beta1
    niter: int = 100  # epochs at the starting learning rate
    niter_decay: int = 10000  # then lr falls by lr / niter_decay each epoch
    lambda_a: float = 4.0  # L1 on the whole frame (0..255 scale)
    lambda_b: float = 8.0  # L1 on the mouth box
    lambda_ce: float = 1.0  # person-ID word classifier (ID_dis32)
    lambda_ce_inv: float | None = None  # its adversarial (uniform softmax) term; None: 1e6 at 500 words, scaled
    margin: float = 1.0  # opt.L2margin of the contrastive loss
    word_labels: bool = True  # use labels when the data has two or more; False: never
    image_size: int = 256  # network input side (a multiple of 64, >= 128); 256 is the authors'
    feature_length: int = 256  # person-ID and word-ID feature length
    id_channels: int = 32  # IdentityEncoder base width
    lip_channels: int = 64  # FAN stem width of the lip encoder
    mfcc_channels: int = 64  # MfccEncoder first conv width
    decoder_channels: int = 64  # Decoder last block width (8x at the first)
    disc_channels: int = 64  # SequenceDiscriminator ndf
    augment: bool = True  # random crop offset and mirror, as the authors' loader
    objectives: str = "authors"  # or "reconstruction" / "audio_reconstruction": not the authors' (see above)

    def __post_init__(self):
        if self.image_size % 64 or self.image_size < 128 or self.image_size > CROP:
            raise InvalidInput(f"image_size must be 128, 192 or 256, got {self.image_size}")
        super().__post_init__()
        if self.batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, got {self.batch_size}")
        widths = ("feature_length", "id_channels", "lip_channels", "mfcc_channels", "decoder_channels",
                  "disc_channels")
        for name in widths:
            if getattr(self, name) < 2 or getattr(self, name) % 2:
                raise InvalidInput(f"{name} must be an even number >= 2, got {getattr(self, name)}")
        if self.lip_channels % 4:
            raise InvalidInput(f"lip_channels must be a multiple of 4, got {self.lip_channels}")
        if self.objectives not in OBJECTIVES:
            raise InvalidInput(f"objectives must be one of {', '.join(OBJECTIVES)}, got {self.objectives!r}")

    def networks(self, num_words: int) -> dict:
        """Constructor arguments of every network (the classifiers only with ``num_words``)."""
        s, f = self.image_size, self.feature_length
        nets = {
            "id_encoder": {"base_channels": self.id_channels, "feature_length": f, "image_size": s},
            "decoder": {"feature_length": f, "base_channels": self.decoder_channels,
                        "id_skip_channels": 5 * self.id_channels, "image_size": s},
            "mfcc_encoder": {"base_channels": self.mfcc_channels, "feature_length": f},
            "lip_feature_encoder": {"base_channels": self.lip_channels, "feature_length": f, "image_size": s},
        }
        if self.objectives != "authors":  # no adversary, no classifier
            return nets
        nets["sequence_discriminator"] = {"frames": SEQUENCE_LENGTH, "ndf": self.disc_channels, "image_size": s}
        nets["domain_discriminator"] = {"feature_length": f}
        if num_words:
            nets["word_classifier"] = {"frames": PRED_LENGTH, "feature_length": f, "num_words": num_words}
            nets["id_word_classifier"] = {"feature_channels": 2 * self.id_channels, "frames": DISFC_LENGTH,
                                          "num_words": num_words, "image_size": s}
        return nets


NETWORK_CLASSES = {
    "id_encoder": IdentityEncoder,
    "decoder": Decoder,
    "mfcc_encoder": MfccEncoder,
    "lip_feature_encoder": LipFeatureEncoder,
    "sequence_discriminator": SequenceDiscriminator,
    "domain_discriminator": DomainDiscriminator,
    "word_classifier": WordClassifier,
    "id_word_classifier": IdWordClassifier,
}
GENERATOR_SIDE = ("id_encoder", "decoder", "mfcc_encoder", "lip_feature_encoder", "word_classifier")
DISCRIMINATOR_SIDE = ("sequence_discriminator", "domain_discriminator", "id_word_classifier")


# ---------------------------------------------------------------------------------------
# Files


def read_config(out_dir) -> dict:
    """The ``config.json`` of a training folder."""
    config = read_run_config(out_dir, "DAVS")
    if config.get("model") != "davs" or "train" not in config:
        raise InvalidInput(f"{out_dir} holds no DAVS training run")
    return config


def load_trained(out_dir, device="cpu") -> dict[str, nn.Module]:
    """The four inference networks a run saved (``id_encoder``, ``decoder``, ``mfcc_encoder``,
    ``lip_feature_encoder``), built from its ``config.json``, weights loaded strictly, eval mode."""
    config = read_config(out_dir)
    device = pick_device(device)
    networks = {}
    for name in INFERENCE_NETWORKS:
        network = NETWORK_CLASSES[name](**config[name])
        weights_lib.load_weights(network, Path(out_dir) / f"{name}.safetensors", f"{name}.safetensors")
        networks[name] = network.to(device).eval()
    return networks


# ---------------------------------------------------------------------------------------
# Trainer


class Trainer(BaseTrainer):
    """One DAVS training run: networks, optimisers, data and the steps.

    ``train`` is the entry point; the class is public so that single steps can be taken
    (``train_step``) and checkpoints handled (``save_checkpoint``, ``load_checkpoint``).
    The loop, the budgets, resuming, the log and the checkpoint files are `BaseTrainer`'s;
    a run folder holds one ``<network>.safetensors`` per network, ``train_state.pt``,
    ``config.json``, ``log.csv`` and ``samples/``.

    Args:
        config (`TrainConfig`): the run's settings.
    """

    name = "davs"
    state_file = "train_state.pt"
    shown_losses = ("loss_d", "loss_g", "g_l1_audio")

    def __init__(self, config: TrainConfig):
        super().__init__(config)

        # 1. Data, and whether the word terms are on.
        self.dataset = DAVSClips(self.data_dir, config.split, seed=config.seed, image_size=config.image_size,
                                 augment=config.augment)
        if len(self.dataset) == 0:
            raise InvalidInput(f"no usable {config.split} clips in {self.data_dir} (at least {CLIP_FRAMES} "
                               f"frames each; {len(self.dataset.skipped)} too short)")
        self.labels = self.dataset.labels
        self.use_words = bool(config.word_labels and config.objectives == "authors" and len(self.labels) >= 2
                              and self.dataset.labelled)
        if not self.use_words and config.objectives == "authors":
            logger.info("no word labels: the word classifiers and their losses are off")
        self.lambda_ce_inv = (config.lambda_ce_inv if config.lambda_ce_inv is not None
                              else confusion_weight(max(len(self.labels), 2)))
        self.batch_size = min(config.batch_size, len(self.dataset))
        if self.batch_size < config.batch_size:
            logger.warning("%d clips, fewer than the batch size %d: batches of %d",
                           len(self.dataset), config.batch_size, self.batch_size)
        self.steps_per_epoch = len(self.dataset) // self.batch_size  # the authors' drop_last=True

        # 2. Networks and optimisers (the authors' initialisations live in the constructors).
        torch.manual_seed(config.seed)
        self.network_config = config.networks(len(self.labels) if self.use_words else 0)
        self.nets = nn.ModuleDict({name: NETWORK_CLASSES[name](**kwargs)
                                   for name, kwargs in self.network_config.items()}).to(self.device)
        betas = (config.beta1, 0.999)
        self.opt_g = torch.optim.Adam([p for n in GENERATOR_SIDE if n in self.nets
                                       for p in self.nets[n].parameters()], lr=config.lr, betas=betas)
        discriminators = [p for n in DISCRIMINATOR_SIDE if n in self.nets for p in self.nets[n].parameters()]
        self.opt_d = torch.optim.Adam(discriminators, lr=config.lr, betas=betas) if discriminators else None
        rows, cols = mouth_box(config.image_size)
        self.mouth = torch.zeros(1, 1, config.image_size, config.image_size, device=self.device)
        self.mouth[..., rows, cols] = 1.0

    # -- names ----------------------------------------------------------------------------
    @property
    def loss_names(self) -> tuple[str, ...]:
        if self.config.objectives == "reconstruction":
            return RECONSTRUCTION_LOSSES
        if self.config.objectives == "audio_reconstruction":
            return ("loss_g", "g_l1_audio", "g_temporal")
        names = ["loss_d", "d_sequence_real", "d_sequence_fake", "d_combine_real", "d_combine_fake",
                 "domain_d", "loss_g", "g_gan_sequence", "g_gan_combine", "g_l1_audio", "g_l1_image",
                 "g_temporal", "embedding_l2", "domain_g"]
        if self.use_words:
            names += ["id_word_ce", "id_confusion", "audio_ce", "image_ce", "audio_acc", "image_acc",
                      "id_word_acc"]
        return tuple(names)

    # -- one step -------------------------------------------------------------------------
    def _draws(self) -> dict:
        """The frames ``set_input`` / ``forward`` pick, seeded by (seed, step)."""
        rng = np.random.default_rng([self.config.seed, 1, self.step])
        return {"identity": int(rng.integers(0, CLIP_FRAMES)),
                "dis_start": int(rng.integers(0, CLIP_FRAMES - DISFC_LENGTH)),  # randint(0, 25 - 20 - 1)
                "pred_start": int(rng.integers(0, 2)),
                "sequence_start": int(rng.integers(0, PRED_LENGTH - SEQUENCE_LENGTH + 1))}

    def train_step(self, batch: dict) -> dict:
        """One discriminator-side and one generator-side update on ``batch``; returns the losses."""
        if self.config.objectives != "authors":
            return self._reconstruction_step(batch)
        nets, c = self.nets, self.config
        video = batch["video"].to(self.device, non_blocking=True)  # (B, 25, 3, S, S)
        mfcc = batch["mfcc"].to(self.device, non_blocking=True)  # (B, 25, 1, 20, 12)
        labels = torch.as_tensor(batch["label"], device=self.device)
        labelled = labels >= 0
        b, s = video.shape[0], c.image_size
        draw = self._draws()
        nets.train()

        # 1. Inputs (Gen_final_v1.set_input / forward)
        real_a = video[:, draw["identity"]]  # (B, 3, S, S)
        video_dis = video[:, draw["dis_start"]: draw["dis_start"] + DISFC_LENGTH]  # (B, 20, 3, S, S)
        pick = slice(draw["pred_start"], draw["pred_start"] + 2 * PRED_LENGTH, 2)
        video_pred, audio_pred = video[:, pick], mfcc[:, pick]  # (B, 12, ...)
        window = slice(draw["sequence_start"], draw["sequence_start"] + SEQUENCE_LENGTH)
        real_sequence = video_pred[:, window]  # (B, 6, 3, S, S)
        audio_sequence = audio_pred[:, window]  # (B, 6, 1, 20, 12)

        # 2. Features
        id_a = nets["id_encoder"](real_a)
        audio_words = nets["mfcc_encoder"](audio_pred)  # (B, 12, F)
        lip_words = nets["lip_feature_encoder"](video_pred)  # (B, 12, F)
        lip_norm = F.normalize(lip_words.reshape(b, -1), dim=1)
        audio_norm = F.normalize(audio_words.reshape(b, -1), dim=1)
        embedding_l2 = l2_contrastive_loss(lip_norm.detach(), audio_norm, c.margin)
        id_maps = None
        if self.use_words:
            id_maps = nets["id_encoder"](video_dis)[4].reshape(b, -1, s // 4, s // 4)  # (B, 20 C, S/4, S/4)

        # 3. Generation: 6 frames from audio, 6 from lips; the temporal term on the audio ones.
        outside = 1.0 - self.mouth
        audio_fakes, image_fakes, temporal = [], [], 0.0
        previous = real_a.detach()
        for i in range(SEQUENCE_LENGTH):
            image_fakes.append(nets["decoder"](id_a, lip_words[:, window][:, i]))
            audio_fake = nets["decoder"](id_a, audio_words[:, window][:, i])
            audio_fakes.append(audio_fake)
            temporal = temporal + F.l1_loss(audio_fake * outside, previous * outside)
            previous = audio_fake.detach()
        audio_fakes = torch.stack(audio_fakes, 1)  # (B, 6, 3, S, S)
        image_fakes = torch.stack(image_fakes, 1)
        fakes_sequence = torch.cat((audio_fakes, image_fakes), 0).reshape(2 * b, -1, s, s)  # (2B, 18, S, S)
        reals_sequence = real_sequence.reshape(b, -1, s, s).repeat(2, 1, 1, 1)
        audio_reals = audio_sequence.reshape(b, SEQUENCE_LENGTH, 20, 12).repeat(2, 1, 1, 1)  # (2B, 6, 20, 12)

        # 4. Discriminator side (backward_dis + backward_D)
        self._discriminators(True)
        domain_d = 0.5 * (_bce(nets["domain_discriminator"](lip_words.detach()), 0.0)
                          + _bce(nets["domain_discriminator"](audio_words.detach()), 1.0))
        patch_fake, combine_fake = nets["sequence_discriminator"](fakes_sequence.detach(), audio_reals)
        patch_real, combine_real = nets["sequence_discriminator"](reals_sequence, audio_reals)
        d_sequence_fake, d_combine_fake = _bce(patch_fake, _soft_target(False)), _bce(combine_fake, _soft_target(False))
        d_sequence_real, d_combine_real = _bce(patch_real, _soft_target(True)), _bce(combine_real, _soft_target(True))
        loss_d = 0.5 * (d_combine_fake + d_combine_real) + 0.5 * (d_sequence_fake + d_sequence_real)
        words = {}
        if self.use_words:
            words["id_logits"] = nets["id_word_classifier"](id_maps.detach())
            id_word_ce = self._word_ce(words["id_logits"], labels, labelled) * c.lambda_ce
            loss_d = loss_d + id_word_ce
        self.opt_d.zero_grad(set_to_none=True)
        (domain_d + loss_d).backward()
        self.opt_d.step()

        # 5. Generator side (backward_G), against the updated discriminators
        self._discriminators(False)
        domain_g = (_bce(nets["domain_discriminator"](audio_words), 0.0)
                    + _bce(nets["domain_discriminator"](lip_words), 1.0))
        patch, combine = nets["sequence_discriminator"](fakes_sequence, audio_reals)
        g_gan_sequence, g_gan_combine = _bce(patch, 1.0), _bce(combine, 1.0)
        real_flat = real_sequence.reshape(b, -1, s, s)
        g_l1_audio = self._reconstruction(audio_fakes.reshape(b, -1, s, s), real_flat)
        g_l1_image = self._reconstruction(image_fakes.reshape(b, -1, s, s), real_flat)
        loss_g = (g_gan_sequence + g_gan_combine + g_l1_audio + g_l1_image + TEMPORAL_WEIGHT * temporal
                  + embedding_l2 + DOMAIN_WEIGHT * domain_g)
        if self.use_words:
            id_logits = nets["id_word_classifier"](id_maps)
            id_confusion = uniform_softmax_loss(id_logits) * self.lambda_ce_inv
            audio_logits = nets["word_classifier"](audio_words)
            image_logits = nets["word_classifier"](lip_words)
            audio_ce = self._word_ce(audio_logits, labels, labelled)
            image_ce = self._word_ce(image_logits, labels, labelled)
            loss_g = loss_g + id_confusion + audio_ce + image_ce
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self._discriminators(True)

        self.last_outputs = {"real_a": real_a.detach(), "real": real_sequence.detach(),
                         "audio": audio_fakes.detach(), "image": image_fakes.detach()}
        losses = {"loss_d": loss_d, "d_sequence_real": d_sequence_real, "d_sequence_fake": d_sequence_fake,
                  "d_combine_real": d_combine_real, "d_combine_fake": d_combine_fake, "domain_d": domain_d,
                  "loss_g": loss_g, "g_gan_sequence": g_gan_sequence, "g_gan_combine": g_gan_combine,
                  "g_l1_audio": g_l1_audio, "g_l1_image": g_l1_image, "g_temporal": temporal,
                  "embedding_l2": embedding_l2, "domain_g": domain_g}
        if self.use_words:
            losses.update(id_word_ce=id_word_ce, id_confusion=id_confusion, audio_ce=audio_ce, image_ce=image_ce)
            labels_known = labels[labelled]
            losses.update(audio_acc=_accuracy(audio_logits[labelled], labels_known),
                          image_acc=_accuracy(image_logits[labelled], labels_known),
                          id_word_acc=_accuracy(words["id_logits"][labelled], labels_known))
        return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in losses.items()}

    def _reconstruction_step(self, batch: dict) -> dict:
        """One generator-side update on the L1 and temporal terms (``objectives`` other than the authors').

        The inputs are drawn as ``train_step`` draws them. ``"reconstruction"`` keeps the
        lip-driven frames and the contrastive term; ``"audio_reconstruction"`` draws the
        audio-driven frames only (the lip encoder is not trained). The frames of every clip
        are decoded in one batch (batch norm sees them all).
        """
        nets, c = self.nets, self.config
        video = batch["video"].to(self.device, non_blocking=True)  # (B, 25, 3, S, S)
        mfcc = batch["mfcc"].to(self.device, non_blocking=True)  # (B, 25, 1, 20, 12)
        b, s, n = video.shape[0], c.image_size, SEQUENCE_LENGTH
        draw = self._draws()
        nets.train()
        real_a = video[:, draw["identity"]]
        pick = slice(draw["pred_start"], draw["pred_start"] + 2 * PRED_LENGTH, 2)
        video_pred, audio_pred = video[:, pick], mfcc[:, pick]
        window = slice(draw["sequence_start"], draw["sequence_start"] + n)
        real_sequence = video_pred[:, window]  # (B, 6, 3, S, S)

        audio_words = nets["mfcc_encoder"](audio_pred[:, window])  # (B, 6, F)
        words, losses = [audio_words], {}
        if c.objectives == "reconstruction":
            lip_words = nets["lip_feature_encoder"](video_pred)  # (B, 12, F)
            losses["embedding_l2"] = l2_contrastive_loss(
                F.normalize(lip_words.reshape(b, -1), dim=1).detach(),
                F.normalize(nets["mfcc_encoder"](audio_pred).reshape(b, -1), dim=1), c.margin)
            words.append(lip_words[:, window])
        identity = expand_identity(nets["id_encoder"](real_a), n)  # clip i at rows i*6 .. i*6 + 5
        identity = [x.repeat(len(words), *([1] * (x.dim() - 1))) for x in identity]
        fakes = nets["decoder"](identity, torch.cat(words).reshape(-1, c.feature_length))
        fakes = fakes.view(len(words), b, n, 3, s, s)
        audio_fakes = fakes[0]
        # sum_i L1(fake_i, fake_{i-1}) outside the mouth box, fake_{-1} = A, earlier frames detached
        outside = 1.0 - self.mouth
        previous = torch.cat((real_a[:, None], audio_fakes[:, :-1].detach()), 1)
        losses["g_temporal"] = F.l1_loss(audio_fakes * outside, previous * outside) * n
        real_flat = real_sequence.reshape(b, -1, s, s)
        losses["g_l1_audio"] = self._reconstruction(audio_fakes.reshape(b, -1, s, s), real_flat)
        if len(words) > 1:
            losses["g_l1_image"] = self._reconstruction(fakes[1].reshape(b, -1, s, s), real_flat)
        losses["loss_g"] = sum(TEMPORAL_WEIGHT * v if k == "g_temporal" else v for k, v in losses.items())
        self.opt_g.zero_grad(set_to_none=True)
        losses["loss_g"].backward()
        self.opt_g.step()
        self.last_outputs = {"real_a": real_a.detach(), "real": real_sequence.detach(), "audio": audio_fakes.detach(),
                             "image": fakes[-1].detach()}
        return {k: float(v.detach()) for k, v in losses.items()}

    def _reconstruction(self, fake, real):
        """``lambda_A * L1 + lambda_B * L1(mouth box)`` of 0..255 frames (``loss_G_L1_*``)."""
        c = self.config
        return (F.l1_loss(fake * 255, real * 255) * c.lambda_a
                + F.l1_loss(fake * self.mouth * 255, real * self.mouth * 255) * c.lambda_b)

    @staticmethod
    def _word_ce(logits, labels, labelled):
        if not bool(labelled.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits[labelled], labels[labelled])

    def _discriminators(self, trainable: bool):
        # The generator's loss needs no gradients of the discriminators' weights.
        for name in DISCRIMINATOR_SIDE:
            if name in self.nets:
                self.nets[name].requires_grad_(trainable)

    def set_learning_rate(self, epoch: int):
        """Constant for ``niter`` epochs, then ``lr / niter_decay`` less after each epoch."""
        c = self.config
        lr = c.lr * max(0.0, 1.0 - max(0, epoch - c.niter - 1) / c.niter_decay)
        for optimizer in (self.opt_g, self.opt_d):
            for group in optimizer.param_groups if optimizer is not None else ():
                group["lr"] = lr

    # -- checkpoints ----------------------------------------------------------------------
    def checkpoint_networks(self) -> dict[str, nn.Module]:
        return {f"{name}.safetensors": network for name, network in self.nets.items()}

    def config_json(self) -> dict:
        # The network entries are at the top level, so DAVSPipeline.from_project loads the folder.
        return {
            "version": 1,
            "model": "davs",
            "name": f"training run {self.out_dir.name} (step {self.step})",
            **self.network_config,
            **self.progress_entries(),
            "clips": len(self.dataset),
            "labels": self.labels if self.use_words else [],
            "word_terms": self.use_words,
            **self.history_entries(),
        }

    def read_saved_config(self) -> dict:
        return read_config(self.out_dir)

    def check_resumable(self, saved: dict):
        """Only a run of the same networks (sizes, and word labels or none) continues."""
        ours = {name: self.network_config.get(name) for name in NETWORK_FILES}
        theirs = {name: saved.get(name) for name in NETWORK_FILES}
        if ours != theirs:
            raise InvalidInput(f"{self.out_dir} holds a run with other network sizes or word labels; "
                               "use the same settings, another folder, or resume=False")

    # -- samples --------------------------------------------------------------------------
    def save_samples(self, batch: dict | None = None):
        """``samples/step_<n>.png``: per clip (up to 2) the real frames, the audio-driven and
        the lip-driven ones, the identity frame A at the left of each row.

        ``batch`` is not needed: the frames are those of the last step.
        """
        if self.last_outputs is None:
            return
        out = self.last_outputs

        def tiles(images):  # (N, 3, S, S) in [0, 1] -> uint8 HxWx3 list
            x = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
            return list(x.cpu().numpy())

        rows = []
        for i in range(min(2, out["real"].shape[0])):
            identity = tiles(out["real_a"][i: i + 1])[0]
            blank = np.zeros_like(identity)
            rows.append([identity, *tiles(out["real"][i])])
            rows.append([blank, *tiles(out["audio"][i])])
            rows.append([blank, *tiles(out["image"][i])])
        self.save_sample_grid(f"step_{self.step:08d}.png", rows)

    # -- the run --------------------------------------------------------------------------
    def total_steps(self) -> int:
        """The authors' ``niter + niter_decay + 1`` epochs."""
        return (self.config.niter + self.config.niter_decay + 1) * self.steps_per_epoch

    def start_epoch(self, epoch: int):
        self.set_learning_rate(epoch)

    def summary_extras(self) -> dict:
        return {"word_terms": self.use_words}


def train(data_dir, out_dir, **options) -> dict:
    """Train DAVS on a prepared dataset folder, as the authors' code does.

    Args:
        data_dir (`str` or `Path`): the prepared dataset (``models.davs.dataset.prepare``).
        out_dir (`str` or `Path`): where the networks (``<name>.safetensors``),
            ``train_state.pt``, ``config.json``, ``log.csv`` and ``samples/`` go. The folder
            loads as project weights (``DAVSPipeline.from_project``).
        **options: any field of `TrainConfig` (``max_steps``, ``time_budget``,
            ``batch_size``, ``image_size``, the ``*_channels`` widths, ``word_labels``,
            ``device``, ``seed``, ``resume``, ...).

    Returns:
        `dict`: the summary of `Trainer.run`.
    """
    return Trainer(TrainConfig(data_dir=str(data_dir), out_dir=str(out_dir), **options)).run()
