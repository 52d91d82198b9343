"""ATVGnet training data: a folder of talking-face videos -> a prepared dataset folder.

Chen, Maddox, Duan, Xu, "Hierarchical Cross-Modal Talking Face Generation with Dynamic
Pixel-Wise Loss", CVPR 2019, https://arxiv.org/abs/1905.03820. Official code:
https://github.com/lelechen63/ATVGnet (``code/lrw_data.py``: the LRW pre-processing;
``code/demo.py``: the crop, alignment, normalisation and MFCC the released weights use).

Each video becomes ``videos/<name>/`` with

- ``frames.npy``     uint8 (T, 128, 128, 3) RGB faces, cropped and aligned as the demo does;
- ``landmarks.npy``  float32 (T, 136) the authors' normalised landmarks (not x5);
- ``mouth.npy``      float32 (T, 20, 2) landmarks 48-67 in the 128 x 128 crop, pixels;
- ``mfcc.npy``       float32 (4 T + 24, 12) MFCC rows (c0 dropped) of the audio with
  1920 zeros at each end, so frame ``k`` reads ``mfcc[4 k : 4 k + 28]``;
- ``audio.wav``      16 kHz mono int16, ``num_frames(len(audio)) == T``;

and the folder gets ``manifest.json`` (status of every video, the train/test split) and
``pca.npz`` (the landmark PCA of the train split, in the x5 space of the authors'
``U_lrw1.npy`` / ``mean_lrw1.npy``).

Per video, as the authors prepare a clip (``lrw_data.py``: ``crop_image``,
``generating_demo_landmark_lips``, ``normLmarks``; ``demo.py``):

1. 25-fps RGB frames from ffmpeg (``models.perception.video``: the ``fps=25`` filter,
   streamed in bounded chunks) and the 16 kHz mono audio (``models.perception.decode``).
2. The face: dlib's detector on the first frame that has a face (largest box, within
   the first 10 frames, else the video is ``no_face``); then dlib again on every frame
   (``models.perception.face.follow_face``).
3. Every frame: 68 dlib landmarks, the demo's square crop (``crop_face``) and the
   similarity warp onto the template (``align_face``; the template is chosen once, from
   the first frame with a face, as the demo chooses it for its one photo).
4. The crop's landmarks are **detected again in the aligned 128 x 128 crop** (dlib
   detector + predictor on the crop), as ``generating_demo_landmark_lips`` does to make
   the ``landmark1d`` files AT-net was trained on. The face fills the crop, so dlib's
   box there is coarse and these landmarks jitter by a pixel or a few from frame to
   frame, as the authors' did; the mouth points come from the same detection.
5. ``norm_landmarks`` over the whole sequence (the authors' ``normLmarks``, ``idx = -1``:
   shape parameters relative to the last frame, so the last frame is always the same
   constant landmark and the others differ from it by their motion).
6. MFCC rows of the padded clip, ``mfcc(..., winstep=0.01)[:, 1:]`` (the demo's
   procedure), and the frames and rows trimmed so that ``T = num_frames(len(audio))``.

Choices made where the authors' scripts have no answer or do something else:

- Frames come from ffmpeg's ``fps=25`` filter instead of ``ffmpeg -r 25`` to JPEG files;
  no JPEG round trip.
- Face tracking (``FaceTracker.for_datasets``): per frame, the detector runs in a window
  of three times the previous box around it (faster than the whole frame, and it keeps
  to the same person) and the detection overlapping the previous box most is taken; when
  none overlaps, the previous box is used again. Frames before the first frame with a
  face are followed from that face's box.
- When dlib finds no face in the aligned crop, that frame's landmarks are the
  full-frame landmarks mapped through the crop and the similarity transform (what
  ``align_face`` returns). The authors' script left such frames without a landmark
  file, which later dropped the whole clip; here the clip is kept and the manifest's
  ``message`` counts the frames.
- The MFCC are computed from the int16 audio as saved (``int16 / 32768``, the scale
  librosa and the demo load WAV files at), so ``mfcc.npy`` can be recomputed from
  ``audio.wav`` exactly. The authors' LRW MFCC files had no zero padding and read frame
  ``r`` at rows ``[(r - 3) * 4, (r + 4) * 4)``; the demo's 1920-sample padding is 12
  rows, so the same audio is frame ``k = r``'s ``mfcc[4 k : 4 k + 28]`` here, and the
  first three frames get windows too.
- When the video is shorter than the audio's windows, the audio is cut to the longest
  clip that still gives exactly ``T`` windows (``640 T + 720`` samples) and the MFCC rows
  to ``4 T + 24``; when the audio is shorter, the extra frames are dropped.
- Split (``models.common.dataset.assign_splits``): names are ordered by a hash of
  ``(seed, name)``; the first ``round(split * n)`` are train (at least one in each split
  when there are two or more clips). Adding a video moves at most one earlier clip to the
  other split.
- Template: chosen once per video (the demo's rule for its one photo); the authors'
  ``generating_demo_landmark_lips`` chose it again for every frame, which can switch
  between the open- and closed-eye templates when the eyes blink.
- Resuming and the manifest (the driver in ``models.common.dataset``): ``ok`` clips with
  complete folders are kept; ``no_face`` and ``error`` videos are tried again on every
  run. The manifest is rewritten after each video unless writing it took more than 5 %
  of the time since the last write (very large datasets), and always at the end.
- PCA: mean and full basis from the 136 x 136 scatter matrix of all train frames'
  landmarks x5 (SVD), components by descending variance, each signed so that its
  largest-magnitude entry is positive. The authors fitted ``U_lrw1.npy`` on one random
  frame per clip with ``torch.svd``; the sign of their components is arbitrary.

This module reads untrusted files through ``models.perception.video`` and
``models.perception.decode`` (content sniffing, forced demuxers, ffmpeg's protocol
whitelist, size and duration caps) rather than duplicating those rules; the folder scan,
workers, resuming, manifest and split are ``models.common.dataset``'s. What is left here
is ATVGnet's own work on a video: crops, landmarks, MFCC rows, and the landmark PCA.

Example:

    >>> manifest = prepare("raw_videos/", "data/atvgnet", workers=4)
    >>> names = list_clips("data/atvgnet", "train")
    >>> clip = load_clip("data/atvgnet", names[0])
    >>> clip["frames"].shape, clip["mfcc"].shape
    ((T, 128, 128, 3), (4 * T + 24, 12))
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from models.atvgnet import preprocess
from models.atvgnet.features import FPS, HOP, SAMPLE_RATE, WINDOW, iter_mfcc_windows, num_frames
from models.common import dataset as driver
from models.errors import InvalidInput
from models.perception import decode
from models.perception import face as face_lib
from models.perception.video import read_video

logger = logging.getLogger(__name__)

__all__ = [
    "CLIP_FILES",
    "MANIFEST_VERSION",
    "list_clips",
    "load_basics",
    "load_clip",
    "load_manifest",
    "prepare",
]

MANIFEST_VERSION = driver.MANIFEST_VERSION
CLIP_FILES = ("frames.npy", "landmarks.npy", "mouth.npy", "mfcc.npy", "audio.wav")
BASICS = ("S.npy", "mean_shape_img.npy", "mean_shape_norm.npy", "base_68.npy")
BASICS_OPTIONAL = ("base_68_close.npy",)

FACE_SEARCH_FRAMES = 10  # a video without a face in its first 10 frames is "no_face"
MAX_VIDEO_SECONDS = 3600.0  # longest video (and audio track) decoded
MAX_FRAME_PIXELS = 4096 * 4096  # refuse absurd frame sizes before allocating them
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
# features.num_frames gives T windows for up to 640 T + 720 samples: with the 2 x 1920
# padding, 1 + ceil((N + 3440) / 160) MFCC rows must stay below 4 T + 28.
_MAX_EXTRA_SAMPLES = 720
_MFCC_CHUNK_FRAMES = 1000  # video frames of MFCC computed at a time


# ---------------------------------------------------------------------------------------
# Manifest and clip access
# ---------------------------------------------------------------------------------------


def _empty_manifest() -> dict:
    return {"version": MANIFEST_VERSION, "fps": FPS, "sample_rate": SAMPLE_RATE, "videos": {}}


def load_manifest(out_dir: str | os.PathLike) -> dict:
    """The dataset's ``manifest.json``.

    Args:
        out_dir: the dataset folder written by ``prepare``.

    Returns:
        The manifest dict (``version``, ``fps``, ``sample_rate``, ``videos``).

    Raises:
        FileNotFoundError: there is no manifest in ``out_dir``.
        ValueError: the manifest is not a version-1 ATVGnet dataset manifest.
    """
    return driver.read_manifest(out_dir)


def list_clips(out_dir: str | os.PathLike, split: str | None = None) -> list[str]:
    """Names of the prepared (status ``ok``) clips, sorted.

    Args:
        out_dir: the dataset folder.
        split (defaults to None): ``"train"`` or ``"test"`` for one split, None for all.

    Returns:
        The clip names, usable with ``load_clip``.
    """
    return driver.ok_clips(load_manifest(out_dir), split)


def load_clip(out_dir: str | os.PathLike, name: str, mmap: bool = False) -> dict[str, np.ndarray]:
    """The arrays of one prepared clip.

    Args:
        out_dir: the dataset folder.
        name: the clip's name (a key of the manifest's ``videos``).
        mmap (defaults to False): memory-map ``frames.npy`` instead of reading it.

    Returns:
        ``{"frames", "landmarks", "mouth", "mfcc", "audio"}``: the arrays of the dataset
        format, with ``audio`` as float32 (N,) in [-1, 1) (``int16 / 32768``) at 16 kHz.

    Raises:
        FileNotFoundError: the clip's folder or one of its files is missing.
    """
    folder = driver.clip_folder(out_dir, name)
    audio = driver.read_clip_audio(folder, SAMPLE_RATE)
    return {
        "frames": np.load(folder / "frames.npy", mmap_mode="r" if mmap else None),
        "landmarks": np.load(folder / "landmarks.npy"),
        "mouth": np.load(folder / "mouth.npy"),
        "mfcc": np.load(folder / "mfcc.npy"),
        "audio": audio,
    }


# ---------------------------------------------------------------------------------------
# The authors' arrays
# ---------------------------------------------------------------------------------------


def load_basics(basics_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray | None]:
    """The authors' normalisation arrays, checked against their published sha256.

    Args:
        basics_dir (defaults to None): the folder with ``S.npy``, ``mean_shape_img.npy``,
            ``mean_shape_norm.npy``, ``base_68.npy`` (and optionally
            ``base_68_close.npy``); None for ``models.weights.weights_dir()``.

    Returns:
        ``{"S", "mean_shape_img", "mean_shape_norm", "base_68", "base_68_close"}``, the
        last None when the file is absent.

    Raises:
        WeightsMissing: a required file is absent (the message names every one).
    """
    # Imported here: these modules import torch, which the spawned workers never need.
    from models import weights as weights_lib
    from models.registry import spec

    directory = weights_lib.weights_dir(basics_dir)
    files = [f for f in spec("atvgnet").files if f.name in BASICS + BASICS_OPTIONAL]
    paths = weights_lib.require_all(files, directory, verify=True)
    return {
        name[:-4]: (np.load(path, allow_pickle=False) if path is not None else None)
        for name, path in paths.items()
    }


# ---------------------------------------------------------------------------------------
# Per-frame face processing
# ---------------------------------------------------------------------------------------


class _CropFaces:
    """Crop, align and landmark the frames of one video as the demo crops its photo."""

    def __init__(self, basics: dict, first_gray: np.ndarray, first_frame: np.ndarray, first_box: face_lib.Box):
        self.mapped_frames = 0  # frames whose crop landmarks were mapped, not detected
        # The template is chosen once, from the first frame with a face (the demo's photo).
        landmarks = face_lib.landmarks68(first_gray, first_box)
        _, landmarks163, _ = preprocess.crop_face(first_frame, first_box, landmarks)
        self.template = preprocess.choose_template(
            landmarks163, basics["base_68"], basics.get("base_68_close"))

    def __call__(self, frame: np.ndarray, gray: np.ndarray, box: face_lib.Box
                 ) -> tuple[np.ndarray, np.ndarray]:
        """One frame -> (uint8 (128, 128, 3) aligned face, (68, 2) landmarks in it).

        Args:
            frame: uint8 (H, W, 3) RGB frame; gray: the same frame in gray.
            box: the face's box in the frame.
        """
        landmarks = face_lib.landmarks68(gray, box)
        roi, landmarks163, _ = preprocess.crop_face(frame, box, landmarks)
        face128, _, mapped128 = preprocess.align_face(roi, landmarks163, self.template)

        # lrw_data.py: dlib again, on the aligned crop (the last face it lists; the
        # largest here).
        face_gray = face_lib.to_gray(face128)
        boxes = face_lib.detect_faces(face_gray)
        if boxes:
            crop_landmarks = face_lib.landmarks68(face_gray, boxes[0]).astype(np.float64)
        else:
            self.mapped_frames += 1
            crop_landmarks = np.asarray(mapped128, dtype=np.float64)
        return face128, crop_landmarks


# ---------------------------------------------------------------------------------------
# One video
# ---------------------------------------------------------------------------------------


def _mfcc_rows(pcm: np.ndarray, n_frames: int) -> np.ndarray:
    """demo.py's MFCC rows (padded clip, c0 dropped), the ``4 T + 24`` rows T frames read.

    Built from ``features.iter_mfcc_windows`` (equal to the whole-clip computation) a
    chunk of frames at a time, so memory does not grow with the clip: frame ``k``'s
    window starts with rows ``4 k .. 4 k + 3``, and the last window adds the final 24.
    """
    signal = pcm.astype(np.float64) / 32768.0
    rows = np.empty((HOP * n_frames + WINDOW - HOP, 12), dtype=np.float32)
    windows = None
    for start, windows in iter_mfcc_windows(signal, _MFCC_CHUNK_FRAMES):  # (n, 28, 12)
        rows[HOP * start : HOP * (start + len(windows))] = windows[:, :HOP].reshape(-1, 12)
    rows[HOP * n_frames :] = windows[-1, HOP:]
    return rows


def _build_clip(source: str, work: Path, basics: dict) -> tuple[int, str | None]:
    """ATVGnet's clip files of one video, written into ``work``: (frames, note)."""
    label = repr(os.path.basename(source))
    # 1. Content check and audio.
    video = read_video(source, max_seconds=MAX_VIDEO_SECONDS, max_pixels=MAX_FRAME_PIXELS)
    pcm = driver.to_pcm16(decode.read_audio(source, SAMPLE_RATE, max_seconds=MAX_VIDEO_SECONDS))
    max_frames = num_frames(len(pcm))
    if max_frames == 0:
        raise InvalidInput(f"{label}: the audio is too short for one video frame")

    # 2. The first frame with a face, within the first frames; then every frame: track,
    # crop, align, landmarks in the crop.
    crop_landmarks: list[np.ndarray] = []
    shape = (preprocess.FACE_SIZE, preprocess.FACE_SIZE, 3)
    tracker = face_lib.FaceTracker.for_datasets()
    with contextlib.closing(video.frames(max_frames)) as frames, \
            driver.FrameFile(work / "frames.u8", shape) as faces:
        (first_frame, first_gray, first_box), followed = face_lib.follow_face(
            frames, tracker, FACE_SEARCH_FRAMES, label)
        crop = _CropFaces(basics, first_gray, first_frame, first_box)
        for frame, gray, box in followed:
            face128, lm = crop(frame, gray, box)
            faces.append(face128)
            crop_landmarks.append(lm)

        # 3. Frames and audio windows agree: T = num_frames(len(audio)).
        n_frames = len(crop_landmarks)
        pcm = pcm[: SAMPLES_PER_FRAME * n_frames + _MAX_EXTRA_SAMPLES]
        if num_frames(len(pcm)) != n_frames:  # the arithmetic of features.num_frames
            raise RuntimeError(f"{len(pcm)} samples give {num_frames(len(pcm))} frames, "
                               f"not {n_frames}")

        # 4. Landmarks: the authors' normalisation over the sequence; the mouth in pixels.
        lm_seq = np.stack(crop_landmarks)  # (T, 68, 2)
        normalised, _ = preprocess.norm_landmarks(
            lm_seq, basics["mean_shape_img"], basics["mean_shape_norm"], basics["S"])

        # 5. Write the clip.
        faces.save(work / "frames.npy")
    np.save(work / "landmarks.npy", normalised.astype(np.float32))  # (T, 136)
    np.save(work / "mouth.npy", lm_seq[:, preprocess.MOUTH_START:].astype(np.float32))
    np.save(work / "mfcc.npy", _mfcc_rows(pcm, n_frames))  # (4T + 24, 12)
    wavfile.write(work / "audio.wav", SAMPLE_RATE, pcm)

    notes = []
    if tracker.missed_frames:
        notes.append(f"face not detected in {tracker.missed_frames} of {n_frames} frames "
                     "(previous box used)")
    if crop.mapped_frames:
        notes.append(f"no face detected in the aligned crop of {crop.mapped_frames} of "
                     f"{n_frames} frames (landmarks mapped from the frame)")
    return n_frames, "; ".join(notes) or None


def _prepare_video(source: str, name: str, out_dir: str, basics: dict) -> dict:
    """Prepare one video into ``out_dir/videos/<name>/``; returns its manifest entry.

    Nothing raises: every problem ends as status ``no_face`` or ``error`` with a message
    (the video is tried again on the next run).
    """
    return driver.prepare_clip(source, name, out_dir, functools.partial(_build_clip, basics=basics))


# ---------------------------------------------------------------------------------------
# PCA
# ---------------------------------------------------------------------------------------


def _fit_pca(out_dir: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and full PCA basis of the clips' landmarks x5 (all their frames).

    Two passes over the files (mean, then the centred 136 x 136 scatter matrix), so
    memory does not grow with the dataset.
    """
    total = np.zeros(136)
    count = 0
    for name in names:
        x = np.load(out_dir / "videos" / name / "landmarks.npy").astype(np.float64) * 5.0
        total += x.sum(axis=0)
        count += x.shape[0]
    mean = total / count
    scatter = np.zeros((136, 136))
    for name in names:
        x = np.load(out_dir / "videos" / name / "landmarks.npy").astype(np.float64) * 5.0 - mean
        scatter += x.T @ x
    basis, _, _ = np.linalg.svd(scatter)  # columns by descending variance
    rows = np.argmax(np.abs(basis), axis=0)
    basis *= np.where(basis[rows, np.arange(136)] < 0, -1.0, 1.0)[None, :]
    return mean.astype(np.float32), basis.astype(np.float32)


def _write_pca(out_dir: Path, mean: np.ndarray, basis: np.ndarray) -> None:
    with driver.atomic_write(out_dir / "pca.npz") as f:
        np.savez(f, mean=mean, basis=basis)


# ---------------------------------------------------------------------------------------
# The whole folder
# ---------------------------------------------------------------------------------------


def prepare(
    videos_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: float = 0.9,
    basics_dir: str | os.PathLike | None = None,
    basics: dict | None = None,
    workers: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Prepare every video under ``videos_dir`` as ATVGnet training data in ``out_dir``.

    Files are recognised by content, not by name; a file that is not a video, has no
    audio track or cannot be decoded gets status ``error``, one without a face in its
    first 10 frames ``no_face``; neither stops the run. The run can be resumed: a clip
    the manifest lists as ``ok`` whose folder is complete is not computed again (delete
    its folder to redo it); ``no_face`` and ``error`` videos are tried again. Clips from
    earlier runs stay while their folder is complete, even if their video is gone.

    Args:
        videos_dir: folder searched recursively for videos (hidden files skipped).
        out_dir: the dataset folder, created if needed.
        split (float, defaults to 0.9): fraction of the ok clips in the train split.
        basics (defaults to None): the arrays themselves (``S``, ``mean_shape_img``,
            ``mean_shape_norm``, ``base_68``) instead of ``basics_dir`` -- for data
            prepared with the project's own arrays.
        basics_dir (defaults to None): folder of the authors' ``S.npy``,
            ``mean_shape_img.npy``, ``mean_shape_norm.npy`` and ``base_68.npy``; None for
            ``models.weights.weights_dir()``.
        workers (int, defaults to None): processes preparing videos in parallel (spawned);
            None for ``min(cpu count, 4)``; 1 prepares them in this process.
        seed (int, defaults to 0): seed of the train/test split.
        progress (bool, defaults to True): show a tqdm bar over the videos.

    Returns:
        The manifest, as written to ``out_dir/manifest.json``.

    Raises:
        WeightsMissing: a file of ``basics_dir`` or dlib's landmark model is missing.
        FileNotFoundError: ``videos_dir`` is not a folder.
    """
    videos_dir, out_dir = driver.check_folders(videos_dir, out_dir, split)
    basics = load_basics(basics_dir) if basics is None else dict({"base_68_close": None}, **basics)
    face_lib.predictor_path()  # a missing landmark model fails now, not once per video

    # 1-2. Every video not prepared yet (driver.prepare_videos), ...
    manifest = driver.prepare_videos(
        videos_dir, out_dir, prepare_video=_prepare_video, video_args=lambda name, path: (basics,),
        clip_files=CLIP_FILES, new_manifest=_empty_manifest, load_manifest=load_manifest,
        workers=workers, progress=progress)

    # 3. ... then the split and the train split's landmark PCA.
    videos = manifest["videos"]
    driver.assign_splits(videos, float(split), int(seed))
    driver.write_manifest(out_dir, manifest)
    train = sorted(n for n, e in videos.items() if e["split"] == "train")
    if train:
        _write_pca(out_dir, *_fit_pca(out_dir, train))
    else:
        (out_dir / "pca.npz").unlink(missing_ok=True)
        logger.warning("no clip in the train split; pca.npz not written")
    driver.finish(out_dir)
    return manifest
