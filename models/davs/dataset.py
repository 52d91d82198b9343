"""DAVS training data: a folder of talking-face videos -> a prepared dataset folder.

Zhou, Liu, Liu, Luo, Wang, "Talking Face Generation by Adversarially Disentangled
Audio-Visual Representation", AAAI 2019, https://arxiv.org/abs/1807.07860. Official code:
https://github.com/Hangz-nju-cuhk/Talking-Face-Generation-DAVS (``preprocess/process256_224.py``
aligned the LRW frames, ``preprocess/save_mfccs.m`` cut their SyncNet MFCC, and
``Dataloader/Data_load_sequence.py`` read both for training).

Each video becomes ``videos/<name>/`` with

- ``frames.npy``     uint8 (T, 260, 260, 3) RGB faces aligned as the authors' ``align_face256``
  images (the training loader cuts a 256 x 256 crop at a random offset 0..4 from them);
- ``mfcc.npy``       float32 (T, 1, 20, 12) the SyncNet MFCC block of every frame (the
  authors' ``mfcc20/<l>.bin``);
- ``landmarks.npy``  float32 (T, 68, 2) dlib's landmarks mapped into the 260 x 260 face;
- ``audio.wav``      16 kHz mono int16, the whole sound track;

and the folder gets ``manifest.json``: the status of every video, its word label (or
None), its train/test split, and ``labels``, the sorted label names (class ``i`` is
``labels[i]``).

Per video, as the authors prepared an LRW clip:

1. 25-fps RGB frames and 16 kHz mono audio, decoded as ``models.atvgnet.dataset`` does
   (content sniffing, ffmpeg's protocol whitelist, frames streamed one at a time).
2. The face: dlib's detector on the first frame that has one (within the first 10 frames,
   else ``no_face``), then followed from frame to frame (``_FaceTrack._detect`` of the
   ATVGnet preparation: a window around the previous box, the most overlapping box).
3. Every frame: 68 dlib landmarks; the eye centres and the mouth centre mapped onto the
   template ``2 * [(70, 112), (110, 112), (90, 150)]`` by a similarity, the 268 x 268
   square cut from the 356 x 436 canvas and resized to 260 x 260
   (``models.davs.preprocess``). Each frame is aligned on its own key points, as the
   authors' script did (their README blames the "zoom in and out" of the results on it).
   ``eye_weight=2`` lists each eye twice in the fit, as ``process256_224.py`` did for
   the LRW frames (``face_align.py``, used at test time, lists them once).
4. SyncNet MFCC of the whole track (``models.davs.audio.syncnet_mfcc``) and the 20 x 12
   block of every frame that has a whole one: frames ``2 .. valid_frames().stop - 1``
   (frames 0 and 1 never have one; the authors' LRW frames 2..26 all had one). Only
   those frames are kept: ``frames.npy[0]`` is video frame 2 (``first_frame`` in the
   manifest).

Choices made where the authors' scripts have no answer:

- Word labels are optional (``labels``): ``"folder"`` takes the first folder under
  ``videos_dir`` (``ABOUT`` for LRW's ``ABOUT/train/ABOUT_00001.mp4``, the class folders
  of the authors' layout), a mapping or a CSV / JSON file maps video paths (relative,
  with or without extension, or the bare file name) to labels. A video without one is
  kept with label None; training ignores it in the word terms.
- The frames are stored without JPEG round trip, and a clip longer than LRW's 1.16 s is
  kept whole: training draws a 25-frame window from it.
- Split, resume and the manifest work as in ``models.atvgnet.dataset`` (whose helpers are
  reused): ``ok`` clips with complete folders are kept, ``no_face`` and ``error`` videos
  are tried again, the split is a seeded hash order of the names.

Example:

    >>> manifest = prepare("lrw_mp4/", "data/davs", labels="folder", workers=4)
    >>> clip = load_clip("data/davs", list_clips("data/davs", "train")[0])
    >>> clip["frames"].shape, clip["mfcc"].shape
    ((T, 260, 260, 3), (T, 1, 20, 12))
"""

from __future__ import annotations

import concurrent.futures
import csv
import json
import logging
import multiprocessing
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
from scipy.io import wavfile
from tqdm.auto import tqdm

# The generic video machinery of the ATVGnet preparation: file scan, container sniffing,
# streamed ffmpeg decoding, face tracking, manifest writing and the seeded split.
from models.atvgnet.dataset import (
    FACE_SEARCH_FRAMES,
    MAX_VIDEO_SECONDS,
    _assign_splits,
    _FaceTrack,
    _frame_size,
    _FrameReader,
    _result,
    _scan,
    _sniff_video,
    _to_pcm16,
    _write_manifest,
)
from models.atvgnet.dataset import load_manifest as _load_any_manifest
from models.davs import audio as davs_audio
from models.davs import preprocess
from models.errors import InvalidInput, TalkingFaceError
from models.perception import decode
from models.perception import face as face_lib

logger = logging.getLogger(__name__)

__all__ = [
    "CLIP_FILES",
    "STORED_SIZE",
    "align_face260",
    "list_clips",
    "load_clip",
    "load_manifest",
    "prepare",
    "read_labels",
]

MANIFEST_VERSION = 1
CLIP_FILES = ("frames.npy", "mfcc.npy", "landmarks.npy", "audio.wav")
STORED_SIZE = preprocess.RESIZED  # 260: the authors' align_face256 images
FPS = davs_audio.FPS
SAMPLE_RATE = davs_audio.SAMPLE_RATE
FIRST_FRAME = davs_audio.FIRST_FRAME  # the first video frame with a whole MFCC block
EYE_WEIGHT = 2  # process256_224.py fits each eye twice


# ---------------------------------------------------------------------------------------
# Manifest and clip access


def _empty_manifest() -> dict:
    return {"version": MANIFEST_VERSION, "model": "davs", "fps": FPS, "sample_rate": SAMPLE_RATE,
            "image_size": STORED_SIZE, "first_frame": FIRST_FRAME, "labels": [], "videos": {}}


def load_manifest(out_dir: str | os.PathLike) -> dict:
    """The ``manifest.json`` of a DAVS dataset folder.

    Raises:
        FileNotFoundError: there is no manifest in ``out_dir``.
        InvalidInput: the manifest is not a DAVS dataset manifest.
    """
    try:
        manifest = _load_any_manifest(out_dir)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if manifest.get("model") != "davs":
        raise InvalidInput(f"{Path(out_dir) / 'manifest.json'} is not a DAVS dataset "
                           "(prepare it with `talkingface data prepare --model davs`)")
    return manifest


def list_clips(out_dir: str | os.PathLike, split: str | None = None) -> list[str]:
    """Names of the prepared (status ``ok``) clips, sorted; ``split`` ``"train"``/``"test"``/None."""
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
    videos = load_manifest(out_dir)["videos"]
    return sorted(name for name, entry in videos.items()
                  if entry.get("status") == "ok" and (split is None or entry.get("split") == split))


def load_clip(out_dir: str | os.PathLike, name: str, mmap: bool = False) -> dict[str, np.ndarray]:
    """The arrays of one clip: ``frames``, ``mfcc``, ``landmarks`` and ``audio`` (float32 in [-1, 1))."""
    if Path(name).name != name or name in ("", ".", ".."):
        raise ValueError(f"invalid clip name {name!r}")
    folder = Path(out_dir) / "videos" / name
    rate, pcm = wavfile.read(folder / "audio.wav")
    if rate != SAMPLE_RATE or pcm.dtype != np.int16 or pcm.ndim != 1:
        raise ValueError(f"{folder / 'audio.wav'} is not 16 kHz mono int16")
    mode = "r" if mmap else None
    return {
        "frames": np.load(folder / "frames.npy", mmap_mode=mode),
        "mfcc": np.load(folder / "mfcc.npy", mmap_mode=mode),
        "landmarks": np.load(folder / "landmarks.npy"),
        "audio": pcm.astype(np.float32) / 32768.0,
    }


def _clip_complete(out_dir: Path, name: str) -> bool:
    folder = out_dir / "videos" / name
    return all((folder / f).is_file() for f in CLIP_FILES)


# ---------------------------------------------------------------------------------------
# Word labels


def read_labels(source: str | os.PathLike | Mapping[str, str]) -> dict[str, str]:
    """A ``{video: label}`` table from a mapping, a JSON object file or a CSV file.

    CSV rows are ``video,label`` (a header row ``video,label`` or ``name,label`` is skipped);
    a video is named by its path relative to the videos folder, with or without extension,
    or by its file name.
    """
    if isinstance(source, Mapping):
        return {str(k): str(v) for k, v in source.items()}
    path = Path(source)
    if not path.is_file():
        raise InvalidInput(f"labels file {path} not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            table = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(table, dict):
            raise InvalidInput(f"{path} must hold a JSON object {{video: label}}")
        return {str(k): str(v) for k, v in table.items()}
    table = {}
    for row in csv.reader(text.splitlines()):
        if not row or row[0].startswith("#"):
            continue
        if len(row) < 2:
            raise InvalidInput(f"{path}: every row must be 'video,label', got {','.join(row)!r}")
        if not table and row[0].strip().lower() in ("video", "name", "file", "path"):
            continue  # header
        table[row[0].strip()] = row[1].strip()
    return table


def _label_of(path: Path, videos_dir: Path, labels) -> str | None:
    """The label of one video under the ``labels`` rule of ``prepare``."""
    if labels is None:
        return None
    rel = path.relative_to(videos_dir)
    if labels == "folder":
        return rel.parts[0] if len(rel.parts) > 1 else None
    for key in (rel.as_posix(), rel.with_suffix("").as_posix(), rel.name, rel.stem):
        if key in labels:
            return labels[key]
    return None


# ---------------------------------------------------------------------------------------
# Per-frame face processing


def align_face260(image: np.ndarray, landmarks68: np.ndarray, eye_weight: int = EYE_WEIGHT
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A face aligned as the authors' 260 x 260 ``align_face256`` images.

    ``models.davs.preprocess.align_face`` without its last step (the loaders' ``[2:258]``
    crop): warp onto the 356 x 436 canvas, cut the 268 square, resize to 260.

    Returns:
        ``(face, matrix)``: uint8 RGB (260, 260, 3) and the (2, 3) map from image pixels
        to face pixels.
    """
    points = preprocess.key_points(landmarks68)
    order = [0, 1] * int(eye_weight) + [2]
    warp = preprocess.similarity_from_points(points[order], preprocess.TEMPLATE[order])
    canvas = cv2.warpAffine(np.ascontiguousarray(image), warp, preprocess.CANVAS_SIZE, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(preprocess.BORDER_GREY,) * 3)
    top, left, side = preprocess.CROP_TOP, preprocess.CROP_LEFT, preprocess.CROP_SIZE
    face = cv2.resize(canvas[top: top + side, left: left + side], (STORED_SIZE, STORED_SIZE),
                      interpolation=cv2.INTER_LINEAR)
    # cv2.resize samples destination x at source (x + 0.5) * 268 / 260 - 0.5.
    k = STORED_SIZE / side
    crop = np.array([[k, 0.0, k * (0.5 - left) - 0.5], [0.0, k, k * (0.5 - top) - 0.5], [0.0, 0.0, 1.0]])
    matrix = (crop @ np.vstack([warp, [0.0, 0.0, 1.0]]))[:2]
    return np.ascontiguousarray(face), matrix


class _DavsTrack(_FaceTrack):
    """Follow one face through a video; align every frame on its own landmarks.

    Reuses the ATVGnet tracker's ``_detect`` (window search, most overlapping box, the
    previous box when the face is lost) without its ATVGnet crop template.
    """

    def __init__(self, first_box: face_lib.Box, eye_weight: int):
        # The parent's __init__ is not called: it builds ATVGnet's crop template.
        self.box = first_box
        self.missed_frames = 0
        self.eye_weight = eye_weight

    def step(self, frame: np.ndarray, box: face_lib.Box | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One frame -> (uint8 (260, 260, 3) aligned face, float32 (68, 2) landmarks in it)."""
        gray = face_lib.to_gray(frame)
        self.box = box if box is not None else self._detect(gray)
        landmarks = face_lib.landmarks68(gray, self.box).astype(np.float64)
        face, matrix = align_face260(frame, landmarks, self.eye_weight)
        mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
        return face, mapped.astype(np.float32)


# ---------------------------------------------------------------------------------------
# One video


def _prepare_video(source: str, name: str, out_dir: str, label: str | None, eye_weight: int) -> dict:
    """Prepare one video into ``out_dir/videos/<name>/``; returns its manifest entry.

    Nothing raises: every problem ends as status ``no_face`` or ``error`` with a message.
    """
    out = Path(out_dir)
    work = out / ".tmp" / f"{name}.{uuid.uuid4().hex[:8]}"
    basename = repr(os.path.basename(source))

    def result(status, message, frames):
        return dict(_result(status, message, frames, source), label=label, first_frame=FIRST_FRAME)

    try:
        # 1. Content check, audio, MFCC: the frames with a whole 20 x 12 block.
        with open(source, "rb") as f:
            demuxer = _sniff_video(f.read(512))
        if demuxer is None:
            return result("error", f"{basename} is not a video file (unknown format)", 0)
        width, height = _frame_size(source, demuxer)
        pcm = _to_pcm16(decode.read_audio(source, SAMPLE_RATE, max_seconds=MAX_VIDEO_SECONDS))
        if len(pcm) < davs_audio.WINDOW_LENGTH:
            return result("error", f"{basename}: the audio is too short", 0)
        mfcc = davs_audio.syncnet_mfcc(pcm.astype(np.float64) / 32768.0, SAMPLE_RATE)  # (13, n)
        usable = davs_audio.valid_frames(mfcc.shape[1])
        if len(usable) == 0:
            return result("error", f"{basename}: the audio is too short for one 0.2 s MFCC block", 0)

        # 2. The first frame with a face, within the first frames.
        work.mkdir(parents=True)
        faces_path = work / "frames.u8"
        landmarks: list[np.ndarray] = []
        with _FrameReader(source, demuxer, width, height, usable.stop) as reader, \
                open(faces_path, "wb") as faces:
            frames = iter(reader)
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
                return result("no_face", f"no face found in the first {len(pending)} frames of {basename}", 0)

            # 3. Every frame: track, landmarks, align (frames before the first face use its box).
            track = _DavsTrack(first_box, eye_weight)
            index = 0

            def keep(frame, box=None):
                nonlocal index
                face, points = track.step(frame, box)
                if index >= FIRST_FRAME:  # frames 0 and 1 have no whole MFCC block
                    faces.write(face.tobytes())
                    landmarks.append(points)
                index += 1

            for i, frame in enumerate(pending):
                keep(frame, first_box if i == len(pending) - 1 else None)
            del pending
            for frame in frames:
                keep(frame)

        # 4. Frames and blocks agree: video frames FIRST_FRAME .. FIRST_FRAME + T - 1.
        n_frames = len(landmarks)
        if n_frames == 0:
            return result("error", f"{basename} has fewer than {FIRST_FRAME + 1} frames", 0)
        blocks = davs_audio.frame_blocks(mfcc, FIRST_FRAME, FIRST_FRAME + n_frames)  # (T, 1, 20, 12)

        # 5. Write the clip and move it into place.
        shape = (n_frames, STORED_SIZE, STORED_SIZE, 3)
        stored = np.lib.format.open_memmap(work / "frames.npy", mode="w+", dtype=np.uint8, shape=shape)
        stored[:] = np.memmap(faces_path, dtype=np.uint8, mode="r", shape=shape)
        stored.flush()
        del stored
        faces_path.unlink()
        np.save(work / "mfcc.npy", blocks.astype(np.float32))
        np.save(work / "landmarks.npy", np.stack(landmarks))
        wavfile.write(work / "audio.wav", SAMPLE_RATE, pcm)
        final = out / "videos" / name
        if final.exists():
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(work, final)
        note = (f"face not detected in {track.missed_frames} frames (previous box used)"
                if track.missed_frames else None)
        return result("ok", note, n_frames)
    except TalkingFaceError as exc:
        return result("no_face" if exc.code == "no_face" else "error", exc.message, 0)
    except Exception as exc:  # one bad video (or a full disk) must not end the run
        logger.exception("preparing %s failed", source)
        return result("error", f"{type(exc).__name__}: {exc}", 0)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# The whole folder


def prepare(
    videos_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: float = 0.9,
    labels: str | os.PathLike | Mapping[str, str] | None = None,
    workers: int | None = None,
    seed: int = 0,
    eye_weight: int = EYE_WEIGHT,
    progress: bool = True,
) -> dict:
    """Prepare every video under ``videos_dir`` as DAVS training data in ``out_dir``.

    Files are recognised by content; a file that is not a video, has no audio or cannot be
    decoded gets status ``error``, one without a face in its first 10 frames ``no_face``;
    neither stops the run. Resumable: an ``ok`` clip whose folder is complete is not
    computed again (its label is refreshed); ``no_face`` and ``error`` videos are retried.

    Args:
        videos_dir: folder searched recursively for videos (hidden files skipped).
        out_dir: the dataset folder, created if needed.
        split (float, defaults to 0.9): fraction of the ok clips in the train split.
        labels (defaults to None): word labels: None (none), ``"folder"`` (the first folder
            under ``videos_dir``), a ``{video: label}`` mapping, or a CSV / JSON file of one
            (see ``read_labels``).
        workers (int, defaults to None): processes preparing videos in parallel (spawned);
            None for ``min(cpu count, 4)``; 1 prepares them in this process.
        seed (int, defaults to 0): seed of the train/test split.
        eye_weight (int, defaults to 2): times each eye enters the alignment fit (2 as the
            authors' LRW script, 1 as their test-time ``face_align.py``).
        progress (bool, defaults to True): show a tqdm bar over the videos.

    Returns:
        The manifest, as written to ``out_dir/manifest.json``.

    Raises:
        FileNotFoundError: ``videos_dir`` is not a folder.
        InvalidInput: a labels file is missing or malformed.
        WeightsMissing: dlib's landmark model is missing.
    """
    if not 0.0 <= float(split) <= 1.0:
        raise ValueError(f"split must be in [0, 1], got {split}")
    videos_dir, out_dir = Path(videos_dir), Path(out_dir)
    if not videos_dir.is_dir():
        raise FileNotFoundError(f"{videos_dir} is not a folder")
    if out_dir.exists() and out_dir.resolve() == videos_dir.resolve():
        raise ValueError("out_dir must not be videos_dir")
    if labels is not None and labels != "folder":
        labels = read_labels(labels)
    face_lib.predictor_path()  # a missing landmark model fails now, not once per video
    workers = max(int(workers if workers is not None else min(os.cpu_count() or 1, 4)), 1)

    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / ".tmp", ignore_errors=True)  # left by an interrupted run
    try:
        previous = load_manifest(out_dir)["videos"]
    except FileNotFoundError:
        previous = {}
    except (InvalidInput, json.JSONDecodeError):
        logger.warning("%s is not a DAVS manifest; starting a new one", out_dir / "manifest.json")
        previous = {}

    # 1. What to do: every file found; earlier clips whose folder is complete are kept.
    found = _scan(videos_dir, out_dir)
    videos: dict[str, dict] = {}
    todo: list[tuple[str, str, str | None]] = []
    for name, path in found.items():
        label = _label_of(path, videos_dir, labels)
        entry = previous.get(name)
        if entry and entry.get("status") == "ok" and _clip_complete(out_dir, name):
            videos[name] = dict(entry, source=str(path.absolute()), label=label)
        else:
            todo.append((name, str(path.absolute()), label))
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
        # Rewritten after each video unless that took more than 5 % of the time since the
        # last write (a dataset of 10^5 clips would otherwise spend its time writing JSON).
        start = time.monotonic()
        if start >= next_write:
            _write_manifest(out_dir, manifest)
            next_write = start + (time.monotonic() - start) / 0.05

    try:
        if workers == 1 or len(todo) <= 1:
            for name, source, label in todo:
                record(name, _prepare_video(source, name, str(out_dir), label, eye_weight))
        else:
            context = multiprocessing.get_context("spawn")
            pool = concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(todo)),
                                                          mp_context=context)
            try:
                futures = {pool.submit(_prepare_video, source, name, str(out_dir), label, eye_weight):
                           (name, source, label) for name, source, label in todo}
                for future in concurrent.futures.as_completed(futures):
                    name, source, label = futures[future]
                    try:
                        entry = future.result()
                    except concurrent.futures.process.BrokenProcessPool as exc:
                        entry = dict(_result("error", f"the worker process died: {exc}", 0, source),
                                     label=label, first_frame=FIRST_FRAME)
                    record(name, entry)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()
        _write_manifest(out_dir, manifest)

    # 3. Split and the label table.
    _assign_splits(videos, float(split), int(seed))
    manifest["labels"] = sorted({e["label"] for e in videos.values()
                                 if e["status"] == "ok" and e.get("label") is not None})
    _write_manifest(out_dir, manifest)
    shutil.rmtree(out_dir / ".tmp", ignore_errors=True)
    return manifest
