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

1. 25-fps RGB frames from ffmpeg (``-vf fps=25``, raw rgb24 through a pipe, streamed
   frame by frame) and the 16 kHz mono audio (``service.decode.read_audio``).
2. The face: dlib's detector on the first frame that has a face (largest box, within
   the first 10 frames, else the video is ``no_face``); then dlib again on every frame.
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
- Face tracking: per frame, the detector runs in a window of three times the previous
  box around it (faster than the whole frame, and it keeps to the same person) and the
  detection overlapping the previous box most is taken; when none overlaps, the previous
  box is used again. Frames before the first frame with a face use that face's box.
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
- Split: names are ordered by a hash of ``(seed, name)``; the first
  ``round(split * n)`` are train (at least one in each split when there are two or more
  clips). Adding a video moves at most one earlier clip to the other split.
- Template: chosen once per video (the demo's rule for its one photo); the authors'
  ``generating_demo_landmark_lips`` chose it again for every frame, which can switch
  between the open- and closed-eye templates when the eyes blink.
- Resuming and the manifest: ``ok`` clips with complete folders are kept; ``no_face``
  and ``error`` videos are tried again on every run. The manifest is rewritten after
  each video unless writing it took more than 5 % of the time since the last write
  (very large datasets), and always at the end.
- PCA: mean and full basis from the 136 x 136 scatter matrix of all train frames'
  landmarks x5 (SVD), components by descending variance, each signed so that its
  largest-magnitude entry is positive. The authors fitted ``U_lrw1.npy`` on one random
  frame per clip with ``torch.svd``; the sign of their components is arbitrary.

This module reads untrusted files through ``models.perception.decode`` (content sniffing, forced
demuxers, ffmpeg's protocol whitelist) rather than duplicating those rules.

Example:

    >>> manifest = prepare("raw_videos/", "data/atvgnet", workers=4)
    >>> names = list_clips("data/atvgnet", "train")
    >>> clip = load_clip("data/atvgnet", names[0])
    >>> clip["frames"].shape, clip["mfcc"].shape
    ((T, 128, 128, 3), (4 * T + 24, 12))
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import ffmpeg
import numpy as np
from scipy.io import wavfile
from tqdm.auto import tqdm

from models.atvgnet import preprocess
from models.atvgnet.features import FPS, HOP, SAMPLE_RATE, WINDOW, iter_mfcc_windows, num_frames
from models.errors import InvalidInput, TalkingFaceError
from models.perception import face as face_lib
from models.perception import decode

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

MANIFEST_VERSION = 1
CLIP_FILES = ("frames.npy", "landmarks.npy", "mouth.npy", "mfcc.npy", "audio.wav")
BASICS = ("S.npy", "mean_shape_img.npy", "mean_shape_norm.npy", "base_68.npy")
BASICS_OPTIONAL = ("base_68_close.npy",)

FACE_SEARCH_FRAMES = 10  # a video without a face in its first 10 frames is "no_face"
TRACK_WINDOW = 1.0  # detector window around the previous box: this many box sides each way
MAX_VIDEO_SECONDS = 3600.0  # longest audio track decoded
MAX_FRAME_PIXELS = 4096 * 4096  # refuse absurd frame sizes before allocating them
PROBE_TIMEOUT_S = 120
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
# features.num_frames gives T windows for up to 640 T + 720 samples: with the 2 x 1920
# padding, 1 + ceil((N + 3440) / 160) MFCC rows must stay below 4 T + 28.
_MAX_EXTRA_SAMPLES = 720
_MFCC_CHUNK_FRAMES = 1000  # video frames of MFCC computed at a time
# The manifest is rewritten after each video, unless the last write took more than 5 %
# of the time since (a dataset of 10^5 clips would otherwise spend its time writing JSON).
_MANIFEST_TIME_SHARE = 0.05
_COPY_CHUNK = 256  # frames per copy step when frames.npy is written


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
    path = Path(out_dir) / "manifest.json"
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION \
            or not isinstance(manifest.get("videos"), dict):
        raise ValueError(f"{path} is not a version-{MANIFEST_VERSION} dataset manifest")
    return manifest


def _write_manifest(out_dir: Path, manifest: dict) -> None:
    """Write ``manifest.json`` atomically (temporary file, then rename)."""
    manifest = dict(manifest, videos={k: manifest["videos"][k] for k in sorted(manifest["videos"])})
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=out_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.write("\n")
        os.replace(tmp, out_dir / "manifest.json")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_clips(out_dir: str | os.PathLike, split: str | None = None) -> list[str]:
    """Names of the prepared (status ``ok``) clips, sorted.

    Args:
        out_dir: the dataset folder.
        split (defaults to None): ``"train"`` or ``"test"`` for one split, None for all.

    Returns:
        The clip names, usable with ``load_clip``.
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
    videos = load_manifest(out_dir)["videos"]
    return sorted(
        name for name, entry in videos.items()
        if entry.get("status") == "ok" and (split is None or entry.get("split") == split)
    )


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
    folder = Path(out_dir) / "videos" / name
    if Path(name).name != name or name in ("", ".", ".."):
        raise ValueError(f"invalid clip name {name!r}")
    rate, pcm = wavfile.read(folder / "audio.wav")
    if rate != SAMPLE_RATE or pcm.dtype != np.int16 or pcm.ndim != 1:
        raise ValueError(f"{folder / 'audio.wav'} is not 16 kHz mono int16")
    return {
        "frames": np.load(folder / "frames.npy", mmap_mode="r" if mmap else None),
        "landmarks": np.load(folder / "landmarks.npy"),
        "mouth": np.load(folder / "mouth.npy"),
        "mfcc": np.load(folder / "mfcc.npy"),
        "audio": pcm.astype(np.float32) / 32768.0,
    }


def _clip_complete(out_dir: Path, name: str) -> bool:
    folder = out_dir / "videos" / name
    return all((folder / f).is_file() for f in CLIP_FILES)


# ---------------------------------------------------------------------------------------
# Inputs: the authors' arrays and the video files
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


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _sanitize(text: str) -> str:
    text = _UNSAFE.sub("_", text)
    return "_" + text[1:] if text.startswith(".") else text or "_"


def _scan(videos_dir: Path, out_dir: Path) -> dict[str, Path]:
    """Every visible regular file under ``videos_dir`` -> a unique, folder-safe name.

    The name is the relative path without its extension, path separators as ``__``;
    files that would share a name keep their extension, then get a counter.
    """
    files: list[Path] = []
    out_resolved = out_dir.resolve()
    for root, dirs, names in os.walk(videos_dir):
        root_path = Path(root)
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(".") and (root_path / d).resolve() != out_resolved
        )
        files.extend(root_path / n for n in sorted(names) if not n.startswith("."))
    files = [f for f in files if f.is_file()]

    def stem(path: Path, keep_suffix: bool) -> str:
        rel = path.relative_to(videos_dir)
        parts = list(rel.parts)
        if not keep_suffix:
            parts[-1] = Path(parts[-1]).stem or parts[-1]
        return "__".join(_sanitize(p) for p in parts)

    first = [stem(f, False) for f in files]
    counts: dict[str, int] = {}
    for n in first:
        counts[n] = counts.get(n, 0) + 1
    result: dict[str, Path] = {}
    for f, n in zip(files, first, strict=True):
        name = n if counts[n] == 1 else stem(f, True)
        base, i = name, 2
        while name in result:
            name, i = f"{base}_{i}", i + 1
        result[name] = f
    return result


def _sniff_video(head: bytes) -> str | None:
    """ffmpeg demuxer for a file's first bytes: ``models.perception.decode``'s list plus video-only ones."""
    demuxer = decode.sniff_container(head)
    if demuxer is not None:
        return demuxer
    if head[:3] == b"FLV":
        return "flv"
    if head[:4] == b"\x00\x00\x01\xba":  # MPEG program stream pack header
        return "mpeg"
    if head[:16] == bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"):  # ASF header GUID
        return "asf"
    return None


# ---------------------------------------------------------------------------------------
# Video decoding: 25-fps RGB frames streamed from ffmpeg
# ---------------------------------------------------------------------------------------


def _frames_command(path: str, demuxer: str, **output) -> list[str]:
    source = ffmpeg.input("file:" + os.path.abspath(path), format=demuxer,
                          protocol_whitelist="file,pipe")
    return (
        ffmpeg.output(source["v:0"], "pipe:1", vf=f"fps={FPS}", **output)
        .global_args("-hide_banner", "-nostdin", "-nostats", "-loglevel", "error")
        .compile(cmd=decode.ffmpeg_exe())
    )


def _decode_error(name: str, log: str) -> InvalidInput:
    if "matches no streams" in log:
        return InvalidInput(f"{name} has no video track")
    return InvalidInput(f"{name} is not a video file (it could not be decoded)")


def _frame_size(path: str, demuxer: str) -> tuple[int, int]:
    """(width, height) of the decoded frames, after ffmpeg's rotation handling.

    The first frame is decoded as a PPM image, whose header carries its size.
    """
    name = repr(os.path.basename(path))
    cmd = _frames_command(path, demuxer, format="image2pipe", vcodec="ppm", vframes=1)
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise InvalidInput(f"{name} could not be decoded in {PROBE_TIMEOUT_S} s") from None
    if done.returncode != 0:
        log = done.stderr.decode("utf-8", "replace").strip()
        logger.info("ffmpeg could not decode %s: %s", name, log[-2000:])
        raise _decode_error(name, log)
    tokens = done.stdout[:64].split(maxsplit=4)
    if len(tokens) < 4 or tokens[0] != b"P6":
        raise InvalidInput(f"{name} has no video frames")
    width, height = int(tokens[1]), int(tokens[2])
    if width < 1 or height < 1 or width * height > MAX_FRAME_PIXELS:
        raise InvalidInput(f"{name} has {width}x{height} frames; at most "
                           f"{MAX_FRAME_PIXELS:,} pixels a frame are accepted")
    return width, height


class _FrameReader:
    """Iterate uint8 (H, W, 3) RGB frames at 25 fps from ffmpeg, one at a time.

    Used as a context manager; ffmpeg is stopped on exit, also when not every frame was
    read. A decoding failure raises ``InvalidInput`` at the end of the iteration.
    """

    def __init__(self, path: str, demuxer: str, width: int, height: int, max_frames: int):
        self.name = repr(os.path.basename(path))
        self.shape = (height, width, 3)
        self.cmd = _frames_command(path, demuxer, format="rawvideo", pix_fmt="rgb24",
                                   vframes=max_frames)
        self._proc: subprocess.Popen | None = None
        self._stderr = None

    def __enter__(self) -> _FrameReader:
        # stderr goes to a file: a pipe nobody reads can fill up and stall ffmpeg.
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=self._stderr)
        return self

    def __exit__(self, *exc) -> None:
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()
        if self._stderr is not None:
            self._stderr.close()

    def __iter__(self):
        size = int(np.prod(self.shape))
        stdout = self._proc.stdout
        while True:
            data = stdout.read(size)
            if len(data) < size:
                break
            yield np.frombuffer(data, dtype=np.uint8).reshape(self.shape)
        code = self._proc.wait()
        if code != 0:
            self._stderr.seek(0)
            log = self._stderr.read().decode("utf-8", "replace").strip()
            logger.info("ffmpeg failed decoding %s: %s", self.name, log[-2000:])
            raise _decode_error(self.name, log)


# ---------------------------------------------------------------------------------------
# Per-frame face processing
# ---------------------------------------------------------------------------------------


def _iou(a: face_lib.Box, b: face_lib.Box) -> float:
    w = min(a.right, b.right) - max(a.left, b.left)
    h = min(a.bottom, b.bottom) - max(a.top, b.top)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / float(a.area + b.area - inter)


class _FaceTrack:
    """Crop, align and landmark one video's frames, following one face."""

    def __init__(self, basics: dict, first_frame: np.ndarray, first_box: face_lib.Box):
        self.basics = basics
        self.box = first_box
        self.missed_frames = 0  # frames where the detector lost the face
        self.mapped_frames = 0  # frames whose crop landmarks were mapped, not detected
        # The template is chosen once, from the first frame with a face (the demo's photo).
        landmarks = face_lib.landmarks68(first_frame, first_box)
        _, landmarks163, _ = preprocess.crop_face(first_frame, first_box, landmarks)
        self.template = preprocess.choose_template(
            landmarks163, basics["base_68"], basics.get("base_68_close"))

    def _detect(self, gray: np.ndarray) -> face_lib.Box:
        """This frame's box: the detection in a window around the previous box that
        overlaps it most, else the previous box."""
        prev = self.box
        side = max(prev.width, prev.height)
        margin = int(round(TRACK_WINDOW * side))
        height, width = gray.shape
        x0, y0 = max(prev.left - margin, 0), max(prev.top - margin, 0)
        x1, y1 = min(prev.right + margin, width), min(prev.bottom + margin, height)
        best, best_iou = None, 0.0
        if x1 - x0 > 1 and y1 - y0 > 1:
            for b in face_lib.detect_faces(np.ascontiguousarray(gray[y0:y1, x0:x1])):
                box = face_lib.Box(b.left + x0, b.top + y0, b.right + x0, b.bottom + y0)
                overlap = _iou(box, prev)
                if overlap > best_iou:
                    best, best_iou = box, overlap
        if best is None:
            self.missed_frames += 1
            return prev
        return best

    def step(self, frame: np.ndarray, box: face_lib.Box | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """One frame -> (uint8 (128, 128, 3) aligned face, (68, 2) landmarks in it).

        Args:
            frame: uint8 (H, W, 3) RGB frame.
            box (defaults to None): a box already detected in this frame; None to track.
        """
        gray = face_lib.to_gray(frame)
        self.box = box if box is not None else self._detect(gray)
        landmarks = face_lib.landmarks68(gray, self.box)
        roi, landmarks163, _ = preprocess.crop_face(frame, self.box, landmarks)
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


def _result(status: str, message: str | None, frames: int, source: str) -> dict:
    return {"status": status, "message": message, "frames": int(frames), "split": None,
            "source": source}


def _to_pcm16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(audio, np.float64) * 32768.0), -32768, 32767).astype(np.int16)


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


def _write_frames_npy(raw_path: Path, npy_path: Path, n_frames: int) -> None:
    """``frames.npy`` from the raw frame file, a chunk at a time."""
    shape = (n_frames, preprocess.FACE_SIZE, preprocess.FACE_SIZE, 3)
    out = np.lib.format.open_memmap(npy_path, mode="w+", dtype=np.uint8, shape=shape)
    if n_frames:
        raw = np.memmap(raw_path, dtype=np.uint8, mode="r", shape=shape)
        for start in range(0, n_frames, _COPY_CHUNK):
            out[start : start + _COPY_CHUNK] = raw[start : start + _COPY_CHUNK]
        del raw
    out.flush()
    del out


def _prepare_video(source: str, name: str, out_dir: str, basics: dict) -> dict:
    """Prepare one video into ``out_dir/videos/<name>/``; returns its manifest entry.

    Nothing raises: every problem ends as status ``no_face`` or ``error`` with a message
    (the video is tried again on the next run).
    """
    out = Path(out_dir)
    work = out / ".tmp" / f"{name}.{uuid.uuid4().hex[:8]}"
    label = repr(os.path.basename(source))
    try:
        # 1. Content check and audio.
        with open(source, "rb") as f:
            head = f.read(512)
        demuxer = _sniff_video(head)
        if demuxer is None:
            return _result("error", f"{label} is not a video file (unknown format)", 0, source)
        width, height = _frame_size(source, demuxer)
        audio = decode.read_audio(source, SAMPLE_RATE, max_seconds=MAX_VIDEO_SECONDS)
        pcm = _to_pcm16(audio)
        max_frames = num_frames(len(pcm))
        if max_frames == 0:
            return _result("error", f"{label}: the audio is too short for one video frame",
                           0, source)

        work.mkdir(parents=True)
        raw_path = work / "frames.u8"
        crop_landmarks: list[np.ndarray] = []
        with _FrameReader(source, demuxer, width, height, max_frames) as reader, \
                open(raw_path, "wb") as raw:
            frames = iter(reader)

            # 2. The first frame with a face, within the first frames.
            pending: list[np.ndarray] = []
            first_box = None
            for frame in frames:
                pending.append(frame)
                boxes = face_lib.detect_faces(frame)
                if boxes:
                    first_box = boxes[0]
                    break
                if len(pending) >= FACE_SEARCH_FRAMES:
                    break
            if first_box is None:
                return _result("no_face", f"no face found in the first {len(pending)} frames "
                               f"of {label}", 0, source)

            # 3. Every frame: track, crop, align, landmarks in the crop.
            # Frames before the first face start from its box (no box of their own).
            track = _FaceTrack(basics, pending[-1], first_box)
            for i, frame in enumerate(pending):
                face128, lm = track.step(frame, first_box if i == len(pending) - 1 else None)
                raw.write(face128.tobytes())
                crop_landmarks.append(lm)
            del pending
            for frame in frames:
                face128, lm = track.step(frame)
                raw.write(face128.tobytes())
                crop_landmarks.append(lm)

        # 4. Frames and audio windows agree: T = num_frames(len(audio)).
        n_frames = len(crop_landmarks)
        pcm = pcm[: SAMPLES_PER_FRAME * n_frames + _MAX_EXTRA_SAMPLES]
        if num_frames(len(pcm)) != n_frames:  # the arithmetic of features.num_frames
            raise RuntimeError(f"{len(pcm)} samples give {num_frames(len(pcm))} frames, "
                               f"not {n_frames}")

        # 5. Landmarks: the authors' normalisation over the sequence; the mouth in pixels.
        lm_seq = np.stack(crop_landmarks)  # (T, 68, 2)
        normalised, _ = preprocess.norm_landmarks(
            lm_seq, basics["mean_shape_img"], basics["mean_shape_norm"], basics["S"])

        # 6. Write the clip and move it into place.
        _write_frames_npy(raw_path, work / "frames.npy", n_frames)
        raw_path.unlink()
        np.save(work / "landmarks.npy", normalised.astype(np.float32))  # (T, 136)
        np.save(work / "mouth.npy", lm_seq[:, preprocess.MOUTH_START:].astype(np.float32))
        np.save(work / "mfcc.npy", _mfcc_rows(pcm, n_frames))  # (4T + 24, 12)
        wavfile.write(work / "audio.wav", SAMPLE_RATE, pcm)
        final = out / "videos" / name
        if final.exists():
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(work, final)

        notes = []
        if track.missed_frames:
            notes.append(f"face not detected in {track.missed_frames} of {n_frames} frames "
                         "(previous box used)")
        if track.mapped_frames:
            notes.append(f"no face detected in the aligned crop of {track.mapped_frames} of "
                         f"{n_frames} frames (landmarks mapped from the frame)")
        return _result("ok", "; ".join(notes) or None, n_frames, source)
    except TalkingFaceError as exc:
        status = "no_face" if exc.code == "no_face" else "error"
        return _result(status, exc.message, 0, source)
    except Exception as exc:  # one bad video (or a full disk) must not end the run
        logger.exception("preparing %s failed", source)
        return _result("error", f"{type(exc).__name__}: {exc}", 0, source)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Split and PCA
# ---------------------------------------------------------------------------------------


def _assign_splits(videos: dict, split: float, seed: int) -> None:
    """Set ``split`` of every entry: train/test for ok clips, None for the others."""
    ok = sorted(name for name, e in videos.items() if e["status"] == "ok")

    def key(name: str) -> tuple[str, str]:
        return hashlib.sha256(f"{seed}\0{name}".encode()).hexdigest(), name

    order = sorted(ok, key=key)
    n_train = int(round(split * len(order)))
    if len(order) >= 2:
        n_train = min(max(n_train, 1), len(order) - 1)
    train = set(order[:n_train])
    for name, entry in videos.items():
        entry["split"] = ("train" if name in train else "test") if name in ok else None


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
    fd, tmp = tempfile.mkstemp(prefix=".pca-", suffix=".npz", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, mean=mean, basis=basis)
        os.replace(tmp, out_dir / "pca.npz")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    if not 0.0 <= float(split) <= 1.0:
        raise ValueError(f"split must be in [0, 1], got {split}")
    videos_dir, out_dir = Path(videos_dir), Path(out_dir)
    if not videos_dir.is_dir():
        raise FileNotFoundError(f"{videos_dir} is not a folder")
    if out_dir.exists() and out_dir.resolve() == videos_dir.resolve():
        raise ValueError("out_dir must not be videos_dir")
    basics = load_basics(basics_dir) if basics is None else dict({"base_68_close": None}, **basics)
    face_lib.predictor_path()  # a missing landmark model fails now, not once per video
    if workers is None:
        workers = min(os.cpu_count() or 1, 4)
    workers = max(int(workers), 1)

    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / ".tmp", ignore_errors=True)  # left by an interrupted run
    try:
        manifest = load_manifest(out_dir)
    except FileNotFoundError:
        manifest = _empty_manifest()
    except (ValueError, json.JSONDecodeError):
        logger.warning("%s is not a valid manifest; starting a new one", out_dir / "manifest.json")
        manifest = _empty_manifest()
    previous = manifest["videos"]

    # 1. What to do: every file found; earlier clips whose folder is complete are kept.
    found = _scan(videos_dir, out_dir)
    videos: dict[str, dict] = {}
    todo: list[tuple[str, str]] = []
    for name, path in found.items():
        entry = previous.get(name)
        if entry and entry.get("status") == "ok" and _clip_complete(out_dir, name):
            videos[name] = dict(entry, source=str(path.absolute()))
        else:
            todo.append((name, str(path.absolute())))
    for name, entry in previous.items():
        if name not in found and entry.get("status") == "ok" and _clip_complete(out_dir, name):
            videos[name] = dict(entry)
    manifest = _empty_manifest()
    manifest["videos"] = videos
    logger.info("%d videos found, %d already prepared, %d to prepare",
                len(found), len(found) - len(todo), len(todo))

    # 2. Prepare the rest, recording each result as it comes.
    bar = tqdm(total=len(found), initial=len(found) - len(todo), desc="videos", unit="video",
               disable=not progress)
    next_write = 0.0

    def record(name: str, entry: dict) -> None:
        nonlocal next_write
        videos[name] = entry
        bar.update(1)
        if entry["status"] != "ok":
            logger.info("%s: %s (%s)", name, entry["status"], entry["message"])
        start = time.monotonic()
        if start >= next_write:
            _write_manifest(out_dir, manifest)
            next_write = start + (time.monotonic() - start) / _MANIFEST_TIME_SHARE

    try:
        if workers == 1 or len(todo) <= 1:
            for name, source in todo:
                record(name, _prepare_video(source, name, str(out_dir), basics))
        else:
            context = multiprocessing.get_context("spawn")
            pool = concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(todo)),
                                                          mp_context=context)
            try:
                futures = {pool.submit(_prepare_video, source, name, str(out_dir), basics):
                           (name, source) for name, source in todo}
                for future in concurrent.futures.as_completed(futures):
                    name, source = futures[future]
                    try:
                        entry = future.result()
                    except concurrent.futures.process.BrokenProcessPool as exc:
                        entry = _result("error", f"the worker process died: {exc}", 0, source)
                    record(name, entry)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()
        _write_manifest(out_dir, manifest)

    # 3. Split and the train split's landmark PCA.
    _assign_splits(videos, float(split), int(seed))
    _write_manifest(out_dir, manifest)
    train = sorted(n for n, e in videos.items() if e["split"] == "train")
    if train:
        _write_pca(out_dir, *_fit_pca(out_dir, train))
    else:
        (out_dir / "pca.npz").unlink(missing_ok=True)
        logger.warning("no clip in the train split; pca.npz not written")
    shutil.rmtree(out_dir / ".tmp", ignore_errors=True)
    return manifest
