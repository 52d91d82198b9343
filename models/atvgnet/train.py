"""Training of ATVGnet's two stages on a prepared dataset folder.

Chen, Maddox, Duan and Xu, "Hierarchical Cross-Modal Talking Face Generation with Dynamic
Pixel-Wise Loss", CVPR 2019 (arXiv:1905.03820). The losses, the clip sampling and the
optimiser settings follow the authors' training code (github.com/lelechen63/ATVGnet,
``code/atnet.py``, ``code/vgnet.py`` and ``code/dataset.py``):

* AT-net (``atnet.py`` l. 144-146): ``MSE(AT-net(example, mfccs), targets)`` on the 6 PCA
  coefficients of 16 frames. The clip (``dataset.py`` l. 51-70,
  ``LRW_1D_lstm_landmark_pca``): landmarks x5, minus the PCA mean, times the first 6
  components; the example landmark is frame ``r``, ``r`` drawn from 3..7, the targets
  are frames ``r+1 .. r+16`` and the audio their 16 MFCC windows.
* VG-net (``vgnet.py`` l. 111-175): with the mouth weighting
  ``w = 1 everywhere, 100 at coordinates 97, 99, ..., 135`` (the y coordinates of
  mouth points 48-67, l. 111-115) and ``mse_w(a, b) = MSE(a * w, b * w)``:

      loss_disc = BCE(D(real), 1) + BCE(D(fake), 0)
                  + mse_w(D_lmark(fake), lmark) + mse_w(D_lmark(real), lmark)   (l. 145-154)
      loss_g    = 10 * mean(|fake - real| * (attention.detach() + 0.5))      (l. 170-173)
                  + BCE(D(fake), 1) + mse_w(D_lmark(fake), lmark)

  The clip (``dataset.py`` l. 318-357, ``LRWdataset1D_lstm_gt``): 16 consecutive frames
  in [-1, 1] and their landmarks x5, the example image and landmark from a random frame
  of the same video.
* Both: Adam, lr 2e-4, betas (0.5, 0.999); batch 16 (AT-net) and 10 (VG-net); 10 and 5
  epochs; the generators start from N(0, 0.02) weights (``initialize_weights``), the
  discriminator from PyTorch's defaults.

Deviations, none of which changes a loss:

* One VG-net forward per step: the authors run the generator a second time for its own
  update (``vgnet.py`` l. 164) with unchanged weights; that second pass differs only
  in its dropout masks and in updating the BatchNorm running statistics twice.
* The VG-net landmarks are the dataset's landmarks x5 as in the authors' dataset
  (``landmarks="raw"``). ``landmarks="pca"`` feeds instead their reconstruction from 6
  PCA coefficients, the landmarks VG-net sees at inference.
* The example frame of a VG-net clip is drawn from the whole video (the authors draw
  from the 29 frames of an LRW clip, which is the same thing for LRW); the clip start
  is drawn uniformly, since the prepared videos have no fixed clip list.
* AT-net clips start at the beginning of each video as the authors' do; with
  ``whole_video=True`` the example frame is drawn from anywhere in a long video.
* Sampling is seeded per (seed, epoch, clip index) and the batch order per
  (seed, epoch), so a resumed run draws exactly the batches an uninterrupted one would.

Example:

    >>> from models.atvgnet.train import train, load_trained
    >>> summary = train("data/lrw_prepared", "atnet", "runs/atnet", max_steps=20000)
    >>> atnet = load_trained("runs/atnet", "atnet")
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from models import weights as weights_lib
from models.atvgnet.networks import ATNet, GLDiscriminator, VGNet
from models.common.device import pick_device
from models.common.train import BaseTrainer, LoopConfig, atomic_write, load_safetensors, read_run_config
from models.errors import InvalidInput

__all__ = [
    "ATNetClips",
    "TrainConfig",
    "Trainer",
    "VGNetClips",
    "init_weights",
    "landmark_loss",
    "load_trained",
    "mouth_weights",
    "pixel_loss",
    "read_config",
    "train",
]

logger = logging.getLogger(__name__)

STAGES = ("atnet", "vgnet")
CLIP_FRAMES = 16  # frames per training clip (GL_Discriminator pools over exactly 16)
N_COEFFICIENTS = 6  # PCA coefficients AT-net predicts
EXAMPLE_FRAMES = range(3, 8)  # AT-net example frame r: random.choice(range(3, 8)), dataset.py l. 58
LANDMARK_SCALE = 5.0  # the authors' landmarks are the normalised ones x5
MFCC_WINDOW = 28  # MFCC rows per video frame
MFCC_HOP = 4  # MFCC rows between video frames
AUTHORS_BATCH = {"atnet": 16, "vgnet": 10}  # atnet.py / vgnet.py --batch_size
AUTHORS_EPOCHS = {"atnet": 10, "vgnet": 5}  # atnet.py / vgnet.py --max_epochs
PIXEL_WEIGHT = 10.0  # vgnet.py l. 173: loss = 10 * loss_pix + loss_gen + loss_lmark
MOUTH_WEIGHT = 100.0  # vgnet.py l. 113-114


# ---------------------------------------------------------------------------------------
# Dataset folder


def _read_manifest(data_dir: Path) -> dict:
    path = data_dir / "manifest.json"
    if not path.is_file():
        raise InvalidInput(f"{data_dir} is not a prepared ATVGnet dataset: manifest.json is missing")
    with open(path) as f:
        manifest = json.load(f)
    if not isinstance(manifest.get("videos"), dict):
        raise InvalidInput(f"{path} has no 'videos' table")
    return manifest


def _read_pca(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(mean (136,), basis (136, 6)) of the dataset's landmark PCA, float32."""
    path = data_dir / "pca.npz"
    if not path.is_file():
        raise InvalidInput(f"{data_dir} has no pca.npz; prepare the dataset first")
    with np.load(path, allow_pickle=False) as pca:
        mean = np.asarray(pca["mean"], dtype=np.float32).reshape(136)
        basis = np.asarray(pca["basis"], dtype=np.float32)[:, :N_COEFFICIENTS]
    return mean, np.ascontiguousarray(basis)


class _Clips(Dataset):
    """The ``ok`` videos of one split that are long enough, with seeded per-item sampling."""

    def __init__(self, data_dir, split, seed, arrays, min_frames):
        self.data_dir = Path(data_dir)
        self.split = split
        manifest = _read_manifest(self.data_dir)
        self.seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else int(seed)
        self.epoch = 0
        self.videos: list[tuple[str, int]] = []  # (name, usable frames)
        self.skipped: list[str] = []
        for name in sorted(manifest["videos"]):
            entry = manifest["videos"][name]
            if entry.get("status") != "ok" or entry.get("split") != split:
                continue
            frames = self._usable_frames(self.data_dir / "videos" / name, arrays)
            if frames >= min_frames:
                self.videos.append((name, frames))
            else:
                self.skipped.append(name)
        if self.skipped:
            logger.info("%s %s: %d clips shorter than %d frames skipped", type(self).__name__, split,
                        len(self.skipped), min_frames)

    @staticmethod
    def _usable_frames(folder: Path, arrays) -> int:
        """Frames for which every array the stage reads has data (0 when a file is missing)."""
        counts = []
        for array in arrays:
            path = folder / f"{array}.npy"
            if not path.is_file():
                logger.warning("%s is missing; the clip is skipped", path)
                return 0
            rows = np.load(path, mmap_mode="r").shape[0]
            if array == "mfcc":  # the window of frame k is rows [4k, 4k + 28)
                rows = max(0, (rows - MFCC_WINDOW) // MFCC_HOP + 1)
            counts.append(rows)
        return min(counts)

    def set_epoch(self, epoch: int):
        """Draw the random frames of ``epoch``; items are a function of (seed, epoch, index)."""
        self.epoch = int(epoch)

    def _rng(self, index):
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def _load(self, name, array):
        return np.load(self.data_dir / "videos" / name / f"{array}.npy", mmap_mode="r")

    def __len__(self):
        return len(self.videos)


class ATNetClips(_Clips):
    """AT-net training clips: 16 frames of audio and PCA landmark coefficients.

    As the authors' ``LRW_1D_lstm_landmark_pca`` (``code/dataset.py``): the landmarks x5
    are projected on the first 6 PCA components, ``(lmk * 5 - mean) @ basis[:, :6]``; an
    example frame ``r`` is drawn from 3..7; the targets are frames ``r+1 .. r+16`` and
    the audio the MFCC windows of those frames (``mfcc[4k : 4k + 28]`` for frame ``k``
    in this dataset format, the authors' ``mfcc[(k-3)*4 : (k+4)*4]`` of the unpadded
    audio). Videos with fewer than 24 usable frames are skipped.

    Args:
        data_dir (`str` or `Path`): the prepared dataset folder.
        split (`str`, defaults to ``"train"``): ``"train"`` or ``"test"``.
        seed (`int`, *optional*): seeds the frame draws; None draws a random seed.
        whole_video (`bool`, defaults to False): draw ``r`` from 3 .. T-17 instead of
            3..7, so long videos are used beyond their first second.

    Items are dicts: ``example_landmark`` (6,), ``landmarks`` (16, 6), ``audio``
    (16, 28, 12) float32, and ``frame`` (the example frame ``r``).
    """

    def __init__(self, data_dir, split="train", *, seed=None, whole_video=False):
        self.whole_video = whole_video
        first = EXAMPLE_FRAMES.start
        min_frames = (first if whole_video else EXAMPLE_FRAMES.stop - 1) + CLIP_FRAMES + 1
        super().__init__(data_dir, split, seed, ("landmarks", "mfcc"), min_frames)
        self.mean, self.basis = _read_pca(self.data_dir)

    def project(self, landmarks: np.ndarray) -> np.ndarray:
        """(..., 136) normalised landmarks -> (..., 6) PCA coefficients of ``landmarks * 5``."""
        return (np.asarray(landmarks, np.float32) * np.float32(LANDMARK_SCALE) - self.mean) @ self.basis

    def __getitem__(self, index):
        name, frames = self.videos[index]
        rng = self._rng(index)
        last = frames - CLIP_FRAMES - 1 if self.whole_video else EXAMPLE_FRAMES.stop - 1
        r = int(rng.integers(EXAMPLE_FRAMES.start, last + 1))
        coefficients = self.project(self._load(name, "landmarks")[r: r + CLIP_FRAMES + 1])  # (17, 6)
        mfcc = self._load(name, "mfcc")
        audio = np.stack([mfcc[MFCC_HOP * k: MFCC_HOP * k + MFCC_WINDOW]
                          for k in range(r + 1, r + CLIP_FRAMES + 1)]).astype(np.float32)  # (16, 28, 12)
        return {
            "example_landmark": torch.from_numpy(coefficients[0].copy()),
            "landmarks": torch.from_numpy(coefficients[1:].copy()),
            "audio": torch.from_numpy(audio),
            "frame": r,
        }


class VGNetClips(_Clips):
    """VG-net training clips: 16 consecutive frames, their landmarks and an example frame.

    As the authors' ``LRWdataset1D_lstm_gt`` (``code/dataset.py``): images in [-1, 1]
    (``ToTensor`` then ``Normalize(0.5, 0.5)``), landmarks x5; the example image and
    landmark come from a random frame of the same video. Videos with fewer than 16
    usable frames are skipped.

    Args:
        data_dir (`str` or `Path`): the prepared dataset folder.
        split (`str`, defaults to ``"train"``): ``"train"`` or ``"test"``.
        seed (`int`, *optional*): seeds the draws; None draws a random seed.
        landmarks (`str`, defaults to ``"raw"``): ``"raw"`` gives the landmarks x5, as
            the authors trained; ``"pca"`` their reconstruction from 6 PCA coefficients,
            ``((lmk * 5 - mean) @ B) @ B.T + mean``, as AT-net feeds VG-net at inference.

    Items are dicts: ``images`` (16, 3, 128, 128), ``landmarks`` (16, 136),
    ``example_image`` (3, 128, 128), ``example_landmark`` (136,) float32, and the
    frame indices ``start`` and ``example_frame``.
    """

    def __init__(self, data_dir, split="train", *, seed=None, landmarks="raw"):
        if landmarks not in ("raw", "pca"):
            raise ValueError(f"landmarks must be 'raw' or 'pca', got {landmarks!r}")
        super().__init__(data_dir, split, seed, ("frames", "landmarks"), CLIP_FRAMES)
        self.landmarks = landmarks
        self.mean, self.basis = _read_pca(self.data_dir) if landmarks == "pca" else (None, None)

    def _landmarks(self, landmarks):
        x = np.asarray(landmarks, np.float32) * np.float32(LANDMARK_SCALE)
        if self.landmarks == "pca":
            x = ((x - self.mean) @ self.basis) @ self.basis.T + self.mean
        return x.astype(np.float32)

    @staticmethod
    def _images(frames):
        """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) in [-1, 1]."""
        x = torch.from_numpy(np.array(frames, dtype=np.float32)).div_(127.5).sub_(1.0)
        return x.movedim(-1, -3).contiguous()

    def __getitem__(self, index):
        name, frames = self.videos[index]
        rng = self._rng(index)
        start = int(rng.integers(0, frames - CLIP_FRAMES + 1))
        example = int(rng.integers(0, frames))
        images, landmarks = self._load(name, "frames"), self._load(name, "landmarks")
        return {
            "images": self._images(images[start: start + CLIP_FRAMES]),
            "landmarks": torch.from_numpy(self._landmarks(landmarks[start: start + CLIP_FRAMES])),
            "example_image": self._images(images[example]),
            "example_landmark": torch.from_numpy(self._landmarks(landmarks[example])),
            "start": start,
            "example_frame": example,
        }


# ---------------------------------------------------------------------------------------
# Losses


def mouth_weights(device=None) -> torch.Tensor:
    """(136,) weights of the landmark regression: 100 on the mouth y coordinates, else 1.

    ``vgnet.py`` l. 111-115 sets ``musk[:, 97 + jj] = 100`` for jj in 0, 2, .., 38:
    coordinates 97, 99, .., 135, i.e. y of points 48-67 in the interleaved (x, y) layout.
    """
    weights = torch.ones(136, device=device)
    weights[97:136:2] = MOUTH_WEIGHT
    return weights


def landmark_loss(predicted, target, weights):
    """``MSE(predicted * w, target * w)``, the authors' weighted landmark regression loss."""
    return F.mse_loss(predicted * weights, target * weights)


def pixel_loss(fake, real, attention):
    """The dynamic pixel-wise loss (Eq. 4-5): ``mean(|fake - real| * (attention + 0.5))``.

    The attention is detached, as in ``vgnet.py`` l. 170-172.
    """
    return torch.mean(torch.abs(fake - real) * (attention.detach() + 0.5))


def init_weights(network: nn.Module, gain=0.02) -> nn.Module:
    """The authors' ``initialize_weights(net, 'normal')``: N(0, gain) for Conv/Linear
    weights with zero bias, N(1, gain) for BatchNorm2d weights with zero bias."""

    def init(module):
        name = type(module).__name__
        if hasattr(module, "weight") and ("Conv" in name or "Linear" in name):
            nn.init.normal_(module.weight, 0.0, gain)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif "BatchNorm2d" in name:
            nn.init.normal_(module.weight, 1.0, gain)
            nn.init.zeros_(module.bias)

    return network.apply(init)


# ---------------------------------------------------------------------------------------
# Configuration


@dataclass
class TrainConfig(LoopConfig):
    """Everything one training run depends on; written to ``config.json`` as ``train``.

    The loop's settings (``max_steps``, ``time_budget``, ``device``, ``sample_every``,
    ``log_every``, ``checkpoint_every``, ``resume``, ``seed``, ``num_workers``,
    ``progress``) are the keyword-only fields of `LoopConfig`; ``max_steps=None`` trains
    the authors' epochs (10 AT-net, 5 VG-net).
    """

    data_dir: str
    stage: str  # "atnet" or "vgnet"
    out_dir: str
    split: str = "train"
    batch_size: int | None = None  # None: the authors' (16 AT-net, 10 VG-net)
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    width: int = 64  # ATNet channel scale; 64 is the published network
    ngf: int = 64  # VGNet channel scale; 64 is the published network
    n_blocks: int = 9  # VGNet residual blocks
    disc_width: int = 64  # GLDiscriminator channel scale; 64 is the published network
    pixel_warmup: int = 0  # VG-net: first steps on the pixel loss alone (0: the authors' losses throughout)
    ema: float | None = None  # decay of an exponential moving average of the generator
    whole_video: bool = False  # AT-net: example frame anywhere in a video, not only 3..7
    landmarks: str = "raw"  # VG-net: "raw" (authors) or "pca" (reconstructed, as at inference)

    def __post_init__(self):
        if self.stage not in STAGES:
            raise InvalidInput(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        super().__post_init__()
        self.betas = tuple(self.betas)
        if self.batch_size is not None and self.batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, got {self.batch_size}")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise InvalidInput(f"ema must be a decay in (0, 1), got {self.ema}")

    @property
    def network(self) -> dict:
        """The constructor arguments of the generator."""
        if self.stage == "atnet":
            return {"width": self.width}
        return {"ngf": self.ngf, "n_blocks": self.n_blocks, "use_dropout": True}


def _build_network(stage, network_config) -> nn.Module:
    return ATNet(**network_config) if stage == "atnet" else VGNet(**network_config)


# ---------------------------------------------------------------------------------------
# Files


def read_config(out_dir) -> dict:
    """The ``config.json`` of a training folder."""
    return read_run_config(out_dir, "ATVGnet")


def load_trained(out_dir, stage, device="cpu", ema=False) -> nn.Module:
    """The network a training run saved, built from its ``config.json``, in eval mode.

    Args:
        out_dir (`str` or `Path`): the folder ``train`` wrote.
        stage (`str`): ``"atnet"`` or ``"vgnet"``; must be the stage of the run.
        device (`str`, defaults to ``"cpu"``): torch device, or ``"auto"``.
        ema (`bool`, defaults to False): load the moving-average weights instead.

    Returns:
        `ATNet` or `VGNet` with the weights loaded strictly.
    """
    config = read_config(out_dir)
    if stage not in STAGES:
        raise InvalidInput(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    if config.get("stage") != stage:
        raise InvalidInput(f"{out_dir} holds a {config.get('stage')} run, not {stage}")
    name = config["files"]["ema" if ema else "generator"]
    if name is None:
        raise weights_lib.WeightsMissing(f"{out_dir} has no moving-average weights (trained without ema)")
    network = _build_network(stage, config["network"])
    weights_lib.load_weights(network, Path(out_dir) / name, name)
    return network.to(pick_device(device)).eval()


def _to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """(N, C, H, W) in [-1, 1] (C = 1 or 3; C = 1 in [0, 1]) -> N uint8 HxWx3 arrays."""
    x = images.detach().float().cpu()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1) * 2 - 1
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return list(x)


def _draw_landmarks(points: dict[tuple[int, int, int], np.ndarray], size=128) -> np.ndarray:
    """One tile with each (68, 2) point set dotted in its colour, scaled to fit together."""
    tile = np.full((size, size, 3), 255, np.uint8)
    everything = np.concatenate(list(points.values()))
    low, high = everything.min(0), everything.max(0)
    scale = (size - 12) / max(float((high - low).max()), 1e-6)
    for colour, xy in points.items():
        pixels = np.round((xy - low) * scale + 6).astype(int)
        for x, y in pixels:
            tile[max(y - 1, 0): y + 2, max(x - 1, 0): x + 2] = colour
    return tile


# ---------------------------------------------------------------------------------------
# Trainer


class Trainer(BaseTrainer):
    """One training run of AT-net or VG-net: networks, optimisers, data and the steps.

    ``train`` is the entry point; the class is public so that single steps can be taken
    (``train_step``) and a checkpoint inspected (``load_checkpoint``). The loop, the
    budgets, resuming, the log and the checkpoint files are `BaseTrainer`'s; a run folder
    holds ``<stage>.safetensors`` (``<stage>_ema.safetensors``,
    ``discriminator.safetensors`` where the run has them), ``<stage>.train.pt``,
    ``config.json``, ``log.csv``, a copy of the dataset's ``pca.npz`` and ``samples/``.

    Args:
        config (`TrainConfig`): the run's settings.
    """

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        self.stage = self.name = config.stage
        self.state_file = f"{self.stage}.train.pt"

        # 1. Data
        if self.stage == "atnet":
            self.dataset = ATNetClips(self.data_dir, config.split, seed=config.seed,
                                      whole_video=config.whole_video)
            mean, basis = self.dataset.mean, self.dataset.basis
        else:
            self.dataset = VGNetClips(self.data_dir, config.split, seed=config.seed,
                                      landmarks=config.landmarks)
            mean, basis = _read_pca(self.data_dir) if (self.data_dir / "pca.npz").is_file() else (None, None)
        if len(self.dataset) == 0:
            raise InvalidInput(f"no usable {config.split} clips in {self.data_dir} for {self.stage} "
                               f"({len(self.dataset.skipped)} too short)")
        self.pca_mean, self.pca_basis = mean, basis
        self.batch_size = config.batch_size or AUTHORS_BATCH[self.stage]
        self.drop_last = len(self.dataset) >= self.batch_size  # the authors' drop_last=True
        if not self.drop_last:
            logger.warning("%d clips, fewer than the batch size %d: one smaller batch per epoch",
                           len(self.dataset), self.batch_size)
        self.steps_per_epoch = (len(self.dataset) // self.batch_size if self.drop_last
                                else math.ceil(len(self.dataset) / self.batch_size))

        # 2. Networks and optimisers
        torch.manual_seed(config.seed)
        self.generator = init_weights(_build_network(self.stage, config.network)).to(self.device)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=config.betas)
        self.discriminator = self.opt_d = None
        if self.stage == "vgnet":
            self.discriminator = GLDiscriminator(config.disc_width).to(self.device)
            self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=config.betas)
            self.weights = mouth_weights(self.device)
        self.ema = None
        if config.ema is not None:
            self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False)

        # 3. What the progress bar shows
        self.shown_losses = self.loss_names if self.stage == "atnet" else ("loss_disc", "loss_g", "loss_pix")

    # -- names ----------------------------------------------------------------------------
    @property
    def files(self) -> dict:
        """The file of each role in the run folder (None for a role the run does not have)."""
        return {
            "generator": f"{self.stage}.safetensors",
            "ema": f"{self.stage}_ema.safetensors" if self.ema is not None else None,
            "discriminator": "discriminator.safetensors" if self.discriminator is not None else None,
            "state": self.state_file,
        }

    @property
    def loss_names(self) -> tuple[str, ...]:
        if self.stage == "atnet":
            return ("loss",)
        # The names of the authors' log line, vgnet.py l. 183.
        return ("loss_disc", "loss_real", "loss_fake", "loss_lmark_r", "loss_lmark_f",
                "loss_g", "loss_gen", "loss_pix", "loss_lmark")

    def total_steps(self) -> int:
        """The authors' 10 (AT-net) or 5 (VG-net) epochs."""
        return AUTHORS_EPOCHS[self.stage] * self.steps_per_epoch

    # -- one step -------------------------------------------------------------------------
    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def train_step(self, batch: dict) -> dict:
        """One optimisation step on ``batch`` (a collated dataset batch); returns the losses."""
        batch = self._to_device(batch)
        self.generator.train()
        if self.stage == "atnet":
            losses = self._atnet_step(batch)
        else:
            losses = self._vgnet_step(batch)
        if self.ema is not None:
            self._update_ema()
        return losses

    def _atnet_step(self, batch):
        # atnet.py l. 144-149
        predicted = self.generator(batch["example_landmark"], batch["audio"])  # (B, 16, 6)
        loss = F.mse_loss(predicted, batch["landmarks"])
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self.last_outputs = {"predicted": predicted.detach()}
        return {"loss": loss.item()}

    def _vgnet_step(self, batch):
        real, landmarks = batch["images"], batch["landmarks"]  # (B, 16, 3, H, W), (B, 16, 136)
        example_image, example_landmark = batch["example_image"], batch["example_landmark"]
        ones = torch.ones(real.shape[0], device=self.device)
        zeros = torch.zeros_like(ones)
        fake, attention, _, _ = self.generator(example_image, landmarks, example_landmark)
        if self.step < self.config.pixel_warmup:
            return self._pixel_step(fake, real, attention)

        # Discriminator, vgnet.py l. 141-158
        self.discriminator.train().requires_grad_(True)
        score_real, lmark_real = self.discriminator(real, example_landmark)
        loss_real = F.binary_cross_entropy(score_real, ones)
        loss_lmark_r = landmark_loss(lmark_real, landmarks, self.weights)
        score_fake, lmark_fake = self.discriminator(fake.detach(), example_landmark)
        loss_fake = F.binary_cross_entropy(score_fake, zeros)
        loss_lmark_f = landmark_loss(lmark_fake, landmarks, self.weights)
        loss_disc = loss_real + loss_fake + loss_lmark_f + loss_lmark_r
        self.opt_d.zero_grad(set_to_none=True)
        loss_disc.backward()
        self.opt_d.step()

        # Generator, vgnet.py l. 160-176
        self.discriminator.requires_grad_(False)
        score_fake, lmark_fake = self.discriminator(fake, example_landmark)
        loss_lmark = landmark_loss(lmark_fake, landmarks, self.weights)
        loss_gen = F.binary_cross_entropy(score_fake, ones)
        loss_pix = pixel_loss(fake, real, attention)
        loss_g = PIXEL_WEIGHT * loss_pix + loss_gen + loss_lmark
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.discriminator.requires_grad_(True)

        self.last_outputs = {"fake": fake.detach(), "attention": attention.detach()}
        values = (loss_disc, loss_real, loss_fake, loss_lmark_r, loss_lmark_f,
                  loss_g, loss_gen, loss_pix, loss_lmark)
        return {name: value.item() for name, value in zip(self.loss_names, values)}

    def _pixel_step(self, fake, real, attention):
        """A warm-up step: the generator on the dynamic pixel-wise loss alone, no discriminator.

        Not in the paper. At a third of a full step's cost it lets a short CPU run (the
        demo weights) spend its steps on learning to draw the mouth before the
        adversarial terms start.
        """
        loss_pix = pixel_loss(fake, real, attention)
        loss_g = PIXEL_WEIGHT * loss_pix
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.last_outputs = {"fake": fake.detach(), "attention": attention.detach()}
        return {"loss_g": loss_g.item(), "loss_pix": loss_pix.item()}

    @torch.no_grad()
    def _update_ema(self):
        decay = self.config.ema
        for averaged, current in zip(self.ema.parameters(), self.generator.parameters()):
            averaged.lerp_(current, 1.0 - decay)
        for averaged, current in zip(self.ema.buffers(), self.generator.buffers()):
            averaged.copy_(current)

    # -- checkpoints ----------------------------------------------------------------------
    def checkpoint_networks(self) -> dict[str, nn.Module]:
        files = self.files
        networks = {files["generator"]: self.generator}
        if self.ema is not None:
            networks[files["ema"]] = self.ema
        if self.discriminator is not None:
            networks[files["discriminator"]] = self.discriminator
        return networks

    def config_json(self) -> dict:
        return {
            "version": 1,
            "model": "atvgnet",
            "stage": self.stage,
            "network": self.config.network,
            **self.progress_entries(),
            "split": self.config.split,
            "clips": len(self.dataset),
            "pca": "pca.npz" if (self.out_dir / "pca.npz").is_file() else None,
            "pca_source": str((self.data_dir / "pca.npz").resolve()),
            "files": self.files,
            **self.history_entries(),
        }

    def read_saved_config(self) -> dict:
        return read_config(self.out_dir)

    def check_resumable(self, saved: dict):
        """Only a run of the same stage and the same network sizes continues."""
        self.require_same(saved, stage=self.stage, network=self.config.network)

    def restore_networks(self) -> dict[str, int | None]:
        """As `BaseTrainer.restore_networks`; a run started without ema gets its average now.

        When ``ema`` is asked for but the run has no ``<stage>_ema.safetensors``, the moving
        average starts from the resumed generator weights.
        """
        networks = self.checkpoint_networks()
        ema_file = self.files["ema"]
        ema_missing = ema_file is not None and not (self.out_dir / ema_file).is_file()
        if ema_missing:
            logger.warning("%s has no %s; the moving average starts now", self.out_dir, ema_file)
            del networks[ema_file]
        steps = {name: load_safetensors(module, self.out_dir / name) for name, module in networks.items()}
        if ema_missing:
            self.ema.load_state_dict(self.generator.state_dict())
        return steps

    # -- samples --------------------------------------------------------------------------
    def save_samples(self, batch: dict):
        """Images of the last step's outputs for ``batch`` into ``out_dir/samples/``.

        VG-net: per clip (up to 2) the real frames, the generated ones and the attention,
        the example frame at the left. AT-net: ``atnet_<step>.npz`` of the predicted and
        target coefficients, and clip 0's landmarks drawn (target green, predicted red).
        """
        folder = self.samples_dir()
        if self.last_outputs is None:
            return
        if self.stage == "vgnet":
            rows = []
            for i in range(min(2, batch["images"].shape[0])):
                example = _to_uint8(batch["example_image"][i: i + 1])[0]
                blank = np.zeros_like(example)
                rows.append([example, *_to_uint8(batch["images"][i])])
                rows.append([example, *_to_uint8(self.last_outputs["fake"][i])])
                rows.append([blank, *_to_uint8(self.last_outputs["attention"][i])])
            self.save_sample_grid(f"vgnet_{self.step:08d}.png", rows)
            return
        predicted = self.last_outputs["predicted"].cpu().numpy()
        target = batch["landmarks"].cpu().numpy()

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, predicted=predicted, target=target)

        atomic_write(folder / f"atnet_{self.step:08d}.npz", write)
        # Clip 0 as landmarks (PCA reconstruction, x5 space): target green, predicted red.
        tiles = []
        for frame in range(predicted.shape[1]):
            points = {}
            for colour, coefficients in (((0, 160, 0), target[0, frame]), ((220, 0, 0), predicted[0, frame])):
                points[colour] = (coefficients @ self.pca_basis.T + self.pca_mean).reshape(68, 2)
            tiles.append(_draw_landmarks(points))
        self.save_sample_grid(f"atnet_{self.step:08d}.png", [tiles[:8], tiles[8:]])

    # -- the run --------------------------------------------------------------------------
    def start_run(self):
        """Copy the dataset's ``pca.npz`` into the run: the landmarks' PCA goes with the weights."""
        source = self.data_dir / "pca.npz"
        if source.is_file():
            atomic_write(self.out_dir / "pca.npz", lambda tmp: shutil.copyfile(source, tmp))

    def summary_extras(self) -> dict:
        return {"stage": self.stage, "files": {k: v for k, v in self.files.items() if v is not None}}


def train(data_dir, stage, out_dir, *, max_steps=None, time_budget=None, batch_size=None, lr=2e-4,
          betas=(0.5, 0.999), width=64, ngf=64, n_blocks=9, disc_width=64, pixel_warmup=0, ema=None,
          device="auto", sample_every=500, log_every=10, checkpoint_every=1000, resume=True, seed=0,
          num_workers=0, progress=True, split="train", whole_video=False, landmarks="raw") -> dict:
    """Train AT-net or VG-net on a prepared dataset folder, as the authors' code does.

    Args:
        data_dir (`str` or `Path`): the prepared dataset (manifest.json, pca.npz, videos/).
        stage (`str`): ``"atnet"`` (audio -> landmarks) or ``"vgnet"`` (landmarks -> frames).
        out_dir (`str` or `Path`): where checkpoints, ``config.json``, ``log.csv`` and
            ``samples/`` go; one stage per folder.
        max_steps (`int`, *optional*): optimisation steps in all (resumed runs count the
            steps already taken); None trains the authors' 10 (AT-net) or 5 (VG-net) epochs.
        time_budget (`float`, *optional*): seconds this call may train before it stops
            with a checkpoint.
        batch_size (`int`, *optional*): clips per step; None is the authors' 16 or 10.
        lr (`float`, defaults to 2e-4), betas (`tuple`, defaults to (0.5, 0.999)): Adam.
        width (`int`, defaults to 64): AT-net channel scale.
        ngf (`int`, defaults to 64), n_blocks (`int`, defaults to 9): VG-net size.
        disc_width (`int`, defaults to 64): VG-net's discriminator channel scale.
        pixel_warmup (`int`, defaults to 0): VG-net steps on the pixel loss alone before
            the authors' losses start (not in the paper; see `Trainer._pixel_step`).
        ema (`float`, *optional*): decay of a moving average of the generator weights,
            saved as ``<stage>_ema.safetensors``.
        device (`str`, defaults to ``"auto"``): CUDA when present, else CPU.
        sample_every (`int`, defaults to 500): steps between sample files (0: never).
        log_every (`int`, defaults to 10): steps between ``log.csv`` rows.
        checkpoint_every (`int`, defaults to 1000): steps between checkpoints.
        resume (`bool`, defaults to True): continue the run found in ``out_dir``.
        seed (`int`, defaults to 0): seeds initial weights, batch order and clip sampling.
        num_workers (`int`, defaults to 0): data-loading processes.
        progress (`bool`, defaults to True): show a tqdm bar.
        split (`str`, defaults to ``"train"``): the manifest split to train on.
        whole_video (`bool`, defaults to False): see `ATNetClips`.
        landmarks (`str`, defaults to ``"raw"``): see `VGNetClips`.

    Returns:
        `dict`: the summary of `Trainer.run`.
    """
    config = TrainConfig(
        data_dir=str(data_dir), stage=stage, out_dir=str(out_dir), split=split, max_steps=max_steps,
        time_budget=time_budget, batch_size=batch_size, lr=lr, betas=tuple(betas), width=width, ngf=ngf,
        n_blocks=n_blocks, disc_width=disc_width, pixel_warmup=pixel_warmup, ema=ema, device=device,
        sample_every=sample_every, log_every=log_every, checkpoint_every=checkpoint_every, resume=resume,
        seed=seed, num_workers=num_workers, progress=progress, whole_video=whole_video, landmarks=landmarks)
    return Trainer(config).run()
