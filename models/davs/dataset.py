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

1. 25-fps RGB frames and 16 kHz mono audio, decoded by ``models.perception.video`` and
   ``models.perception.decode`` (content sniffing, ffmpeg's protocol whitelist, size and
   duration caps, frames streamed in bounded chunks).
2. The face: dlib's detector on the first frame that has one (within the first 10 frames,
   else ``no_face``), then followed from frame to frame as the ATVGnet preparation does
   (``models.perception.face.follow_face`` with ``FaceTracker.for_datasets``: a window
   around the previous box, the most overlapping box).
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
- Split, resume and the manifest are the driver's of ``models.common.dataset``, shared
  with ATVGnet: ``ok`` clips with complete folders are kept, ``no_face`` and ``error``
  videos are tried again, the split is a seeded hash order of the names.

Example:

    >>> manifest = prepare("lrw_mp4/", "data/davs", labels="folder", workers=4)
    >>> clip = load_clip("data/davs", list_clips("data/davs", "train")[0])
    >>> clip["frames"].shape, clip["mfcc"].shape
    ((T, 260, 260, 3), (T, 1, 20, 12))
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
from scipy.io import wavfile

from models.common import dataset as driver
from models.davs import audio as davs_audio
from models.davs import preprocess
from models.errors import InvalidInput
from models.perception import decode
from models.perception import face as face_lib
from models.perception.video import read_video

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

MANIFEST_VERSION = driver.MANIFEST_VERSION
CLIP_FILES = ("frames.npy", "mfcc.npy", "landmarks.npy", "audio.wav")
STORED_SIZE = preprocess.RESIZED  # 260: the authors' align_face256 images
FPS = davs_audio.FPS
SAMPLE_RATE = davs_audio.SAMPLE_RATE
FIRST_FRAME = davs_audio.FIRST_FRAME  # the first video frame with a whole MFCC block
EYE_WEIGHT = 2  # process256_224.py fits each eye twice
FACE_SEARCH_FRAMES = 10  # a video without a face in its first 10 frames is "no_face"
MAX_VIDEO_SECONDS = 3600.0  # longest video (and audio track) decoded
MAX_FRAME_PIXELS = 4096 * 4096  # refuse absurd frame sizes before allocating them


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
        manifest = driver.read_manifest(out_dir)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if manifest.get("model") != "davs":
        raise InvalidInput(f"{Path(out_dir) / 'manifest.json'} is not a DAVS dataset "
                           "(prepare it with `talkingface data prepare --model davs`)")
    return manifest


def list_clips(out_dir: str | os.PathLike, split: str | None = None) -> list[str]:
    """Names of the prepared (status ``ok``) clips, sorted; ``split`` ``"train"``/``"test"``/None."""
    return driver.ok_clips(load_manifest(out_dir), split)


def load_clip(out_dir: str | os.PathLike, name: str, mmap: bool = False) -> dict[str, np.ndarray]:
    """The arrays of one clip: ``frames``, ``mfcc``, ``landmarks`` and ``audio`` (float32 in [-1, 1))."""
    folder = driver.clip_folder(out_dir, name)
    audio = driver.read_clip_audio(folder, SAMPLE_RATE)
    mode = "r" if mmap else None
    return {
        "frames": np.load(folder / "frames.npy", mmap_mode=mode),
        "mfcc": np.load(folder / "mfcc.npy", mmap_mode=mode),
        "landmarks": np.load(folder / "landmarks.npy"),
        "audio": audio,
    }


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


# ---------------------------------------------------------------------------------------
# One video


def _build_clip(source: str, work: Path, eye_weight: int) -> tuple[int, str | None]:
    """DAVS's clip files of one video, written into ``work``: (frames, note)."""
    basename = repr(os.path.basename(source))
    # 1. Content check, audio, MFCC: the frames with a whole 20 x 12 block.
    video = read_video(source, max_seconds=MAX_VIDEO_SECONDS, max_pixels=MAX_FRAME_PIXELS)
    pcm = driver.to_pcm16(decode.read_audio(source, SAMPLE_RATE, max_seconds=MAX_VIDEO_SECONDS))
    if len(pcm) < davs_audio.WINDOW_LENGTH:
        raise InvalidInput(f"{basename}: the audio is too short")
    mfcc = davs_audio.syncnet_mfcc(pcm.astype(np.float64) / 32768.0, SAMPLE_RATE)  # (13, n)
    usable = davs_audio.valid_frames(mfcc.shape[1])
    if len(usable) == 0:
        raise InvalidInput(f"{basename}: the audio is too short for one 0.2 s MFCC block")

    # 2. The first frame with a face, within the first frames; then every frame: track,
    # landmarks, align (frames before the first face are followed from its box).
    landmarks: list[np.ndarray] = []
    tracker = face_lib.FaceTracker.for_datasets()
    with contextlib.closing(video.frames(usable.stop)) as frames, \
            driver.FrameFile(work / "frames.u8", (STORED_SIZE, STORED_SIZE, 3)) as faces:
        _, followed = face_lib.follow_face(frames, tracker, FACE_SEARCH_FRAMES, basename)
        for index, (frame, gray, box) in enumerate(followed):
            points = face_lib.landmarks68(gray, box).astype(np.float64)
            face, matrix = align_face260(frame, points, eye_weight)
            if index >= FIRST_FRAME:  # frames 0 and 1 have no whole MFCC block
                faces.append(face)
                landmarks.append((points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32))

        # 3. Frames and blocks agree: video frames FIRST_FRAME .. FIRST_FRAME + T - 1.
        n_frames = len(landmarks)
        if n_frames == 0:
            raise InvalidInput(f"{basename} has fewer than {FIRST_FRAME + 1} frames")
        blocks = davs_audio.frame_blocks(mfcc, FIRST_FRAME, FIRST_FRAME + n_frames)  # (T, 1, 20, 12)

        # 4. Write the clip.
        faces.save(work / "frames.npy")
    np.save(work / "mfcc.npy", blocks.astype(np.float32))
    np.save(work / "landmarks.npy", np.stack(landmarks))
    wavfile.write(work / "audio.wav", SAMPLE_RATE, pcm)
    note = (f"face not detected in {tracker.missed_frames} frames (previous box used)"
            if tracker.missed_frames else None)
    return n_frames, note


def _prepare_video(source: str, name: str, out_dir: str, label: str | None, eye_weight: int) -> dict:
    """Prepare one video into ``out_dir/videos/<name>/``; returns its manifest entry.

    Nothing raises: every problem ends as status ``no_face`` or ``error`` with a message.
    """
    return driver.prepare_clip(source, name, out_dir, functools.partial(_build_clip, eye_weight=eye_weight),
                               fields={"label": label, "first_frame": FIRST_FRAME})


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
    videos_dir, out_dir = driver.check_folders(videos_dir, out_dir, split)
    if labels is not None and labels != "folder":
        labels = read_labels(labels)
    face_lib.predictor_path()  # a missing landmark model fails now, not once per video

    # 1-2. Every video not prepared yet (driver.prepare_videos), ...
    manifest = driver.prepare_videos(
        videos_dir, out_dir, prepare_video=_prepare_video,
        video_args=lambda name, path: (_label_of(path, videos_dir, labels), eye_weight),
        entry_fields=lambda name, path: {"label": _label_of(path, videos_dir, labels), "first_frame": FIRST_FRAME},
        clip_files=CLIP_FILES, new_manifest=_empty_manifest, load_manifest=load_manifest,
        workers=workers, progress=progress)

    # 3. ... then the split and the label table.
    videos = manifest["videos"]
    driver.assign_splits(videos, float(split), int(seed))
    manifest["labels"] = sorted({e["label"] for e in videos.values()
                                 if e["status"] == "ok" and e.get("label") is not None})
    driver.write_manifest(out_dir, manifest)
    driver.finish(out_dir)
    return manifest
