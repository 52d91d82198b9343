"""The dataset-preparation driver: a folder of videos -> a prepared dataset folder.

Both talking-face systems turn a folder of videos into training data the same way; only
the work done on each video differs (ATVGnet: crops, landmarks, MFCC rows; DAVS: aligned
faces, SyncNet MFCC blocks, word labels). This module is the same part, once:

- **Scan.** Every visible regular file under the videos folder, recursively, gets a
  unique, folder-safe name (``scan_videos``); files are recognised as videos later, by
  content.
- **Parallel.** Videos are prepared by a pool of spawned processes (``prepare_videos``);
  one bad video (or a crashed worker) ends as a status in the manifest, never the run.
- **Resumable.** A clip the manifest lists as ``ok`` whose folder holds every clip file
  is kept as it is; ``no_face`` and ``error`` videos are tried again. Each clip is
  written into ``.tmp/`` and moved into ``videos/<name>/`` only when complete
  (``prepare_clip``), so an interrupted run leaves no half-written clip.
- **Manifest.** ``manifest.json`` (``version`` 1) records every video's status, message,
  frame count, split and source. It is rewritten after each video unless the last write
  took more than 5 % of the time since (a dataset of 10^5 clips would otherwise spend its
  time writing JSON), and always at the end; writes are atomic.
- **Split.** ``assign_splits``: names ordered by a hash of ``(seed, name)``, the first
  ``round(split * n)`` train (at least one in each split when there are two or more
  clips), so adding a video moves at most one earlier clip to the other split.

A system supplies its per-video function, a module-level function (spawned workers
import it by name) ``prepare_video(source, name, out_dir, *args) -> entry`` that usually
hands its own clip-building to ``prepare_clip``, and its clip file list.

Example:

    >>> def _prepare_video(source, name, out_dir, options):
    ...     return prepare_clip(source, name, out_dir, functools.partial(_build_clip, options=options))
    >>> manifest = prepare_videos(videos_dir, out_dir, prepare_video=_prepare_video,
    ...                           video_args=lambda name, path: (options,), clip_files=CLIP_FILES,
    ...                           new_manifest=new_manifest, load_manifest=load_manifest)
    >>> assign_splits(manifest["videos"], 0.9, seed=0)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from scipy.io import wavfile
from tqdm.auto import tqdm

from models.errors import InvalidInput, TalkingFaceError

logger = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_VERSION",
    "FrameFile",
    "assign_splits",
    "atomic_write",
    "check_folders",
    "finish",
    "clip_complete",
    "clip_entry",
    "clip_folder",
    "ok_clips",
    "prepare_clip",
    "prepare_videos",
    "read_clip_audio",
    "read_manifest",
    "scan_videos",
    "to_pcm16",
    "write_manifest",
]

MANIFEST_VERSION = 1
MANIFEST_TIME_SHARE = 0.05  # most of the run's time spent rewriting manifest.json
COPY_CHUNK = 256  # frames per copy step when frames.npy is written
WORK_DIR = ".tmp"  # clips being written, inside the dataset folder


# ---------------------------------------------------------------------------------------
# Files: atomic writes, the manifest, clip folders
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path`` that replaces ``path`` only once written.

    A reader (or a run resumed after a crash) sees the old file or the new one, never
    half of one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """The ``manifest.json`` of a dataset folder, checked to be a version-1 manifest.

    Raises:
        FileNotFoundError: there is no manifest in ``out_dir``.
        ValueError: the file is not JSON, or not a version-1 dataset manifest.
    """
    path = Path(out_dir) / "manifest.json"
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION \
            or not isinstance(manifest.get("videos"), dict):
        raise ValueError(f"{path} is not a version-{MANIFEST_VERSION} dataset manifest")
    return manifest


def write_manifest(out_dir: Path, manifest: dict) -> None:
    """Write ``manifest.json`` atomically, its videos sorted by name."""
    manifest = dict(manifest, videos={k: manifest["videos"][k] for k in sorted(manifest["videos"])})
    with atomic_write(Path(out_dir) / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


def clip_entry(status: str, message: str | None, frames: int, source: str, **fields) -> dict:
    """A video's manifest entry: ``status`` (``ok``, ``no_face``, ``error``), ``message``,
    ``frames``, ``split`` (set later) and ``source``, then a system's own ``fields``."""
    return dict({"status": status, "message": message, "frames": int(frames), "split": None,
                 "source": source}, **fields)


def ok_clips(manifest: dict, split: str | None = None) -> list[str]:
    """Names of a manifest's prepared (status ``ok``) clips, sorted.

    Args:
        manifest (`dict`): the dataset's manifest.
        split (`str`, *optional*): ``"train"`` or ``"test"`` for one split, None for all.
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
    return sorted(name for name, entry in manifest["videos"].items()
                  if entry.get("status") == "ok" and (split is None or entry.get("split") == split))


def clip_folder(out_dir: str | os.PathLike, name: str) -> Path:
    """The folder of clip ``name``; a name that would leave ``videos/`` is refused.

    Raises:
        ValueError: the name is empty, ``.``, ``..`` or has a path separator.
    """
    if Path(name).name != name or name in ("", ".", ".."):
        raise ValueError(f"invalid clip name {name!r}")
    return Path(out_dir) / "videos" / name


def clip_complete(out_dir: Path, name: str, clip_files: Sequence[str]) -> bool:
    """Whether clip ``name``'s folder holds every one of ``clip_files``."""
    folder = Path(out_dir) / "videos" / name
    return all((folder / f).is_file() for f in clip_files)


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as int16 PCM (rounded, clipped), as ``audio.wav`` stores them."""
    return np.clip(np.round(np.asarray(audio, np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def read_clip_audio(folder: Path, sample_rate: int) -> np.ndarray:
    """A clip's ``audio.wav`` as float32 in [-1, 1) (``int16 / 32768``).

    Raises:
        ValueError: the file is not mono int16 at ``sample_rate``.
    """
    rate, pcm = wavfile.read(folder / "audio.wav")
    if rate != sample_rate or pcm.dtype != np.int16 or pcm.ndim != 1:
        raise ValueError(f"{folder / 'audio.wav'} is not {sample_rate // 1000} kHz mono int16")
    return pcm.astype(np.float32) / 32768.0


class FrameFile:
    """A clip's frames, appended one at a time, saved as one ``.npy`` at the end.

    The frames go to a raw file first, since their count is known only at the end of the
    video, then are copied into the ``.npy`` a chunk at a time: memory holds one frame
    or one chunk, whatever the length of the clip. Use as a context manager.

    Args:
        path (`Path`): the raw file (removed by ``save``).
        shape (`tuple[int, ...]`): the shape of one frame, uint8.
    """

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.path = Path(path)
        self.shape = tuple(shape)
        self.count = 0
        self._file = open(self.path, "wb")  # noqa: SIM115  (closed by __exit__ or save)

    def __enter__(self) -> FrameFile:
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    def append(self, frame: np.ndarray) -> None:
        """Add one uint8 frame of ``shape``."""
        if frame.shape != self.shape or frame.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 {self.shape}, got {frame.dtype} {frame.shape}")
        self._file.write(np.ascontiguousarray(frame).tobytes())
        self.count += 1

    def save(self, npy_path: Path) -> None:
        """Write the frames as uint8 ``(count, *shape)`` to ``npy_path``; the raw file goes."""
        self._file.close()
        shape = (self.count,) + self.shape
        out = np.lib.format.open_memmap(npy_path, mode="w+", dtype=np.uint8, shape=shape)
        if self.count:
            raw = np.memmap(self.path, dtype=np.uint8, mode="r", shape=shape)
            for start in range(0, self.count, COPY_CHUNK):
                out[start : start + COPY_CHUNK] = raw[start : start + COPY_CHUNK]
            del raw
        out.flush()
        del out
        self.path.unlink()


# ---------------------------------------------------------------------------------------
# Scanning the videos folder
# ---------------------------------------------------------------------------------------


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _sanitize(text: str) -> str:
    text = _UNSAFE.sub("_", text)
    return "_" + text[1:] if text.startswith(".") else text or "_"


def scan_videos(videos_dir: Path, out_dir: Path) -> dict[str, Path]:
    """Every visible regular file under ``videos_dir`` -> a unique, folder-safe name.

    The name is the relative path without its extension, path separators as ``__``;
    files that would share a name keep their extension, then get a counter. Hidden files
    and folders, and the dataset folder itself when it is inside ``videos_dir``, are
    skipped.
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


def check_folders(videos_dir: str | os.PathLike, out_dir: str | os.PathLike, split: float) -> tuple[Path, Path]:
    """The arguments every ``prepare`` checks first, as Paths.

    Raises:
        ValueError: ``split`` is outside [0, 1], or ``out_dir`` is ``videos_dir``.
        FileNotFoundError: ``videos_dir`` is not a folder.
    """
    if not 0.0 <= float(split) <= 1.0:
        raise ValueError(f"split must be in [0, 1], got {split}")
    videos_dir, out_dir = Path(videos_dir), Path(out_dir)
    if not videos_dir.is_dir():
        raise FileNotFoundError(f"{videos_dir} is not a folder")
    if out_dir.exists() and out_dir.resolve() == videos_dir.resolve():
        raise ValueError("out_dir must not be videos_dir")
    return videos_dir, out_dir


# ---------------------------------------------------------------------------------------
# One video
# ---------------------------------------------------------------------------------------


def prepare_clip(source: str, name: str, out_dir: str, build: Callable[[str, Path], tuple[int, str | None]],
                 fields: dict | None = None) -> dict:
    """Build one clip in a work folder, move it to ``out_dir/videos/<name>/``; its manifest entry.

    Nothing raises: a ``TalkingFaceError`` ends as status ``no_face`` (``NoFaceFound``) or
    ``error`` with its message, any other exception (a bug, a full disk) as ``error``
    with its type and text, logged; the video is tried again on the next run.

    Args:
        source (`str`): the video file.
        name (`str`): the clip's name (``scan_videos``).
        out_dir (`str`): the dataset folder.
        build (`Callable`): ``build(source, work) -> (frames, note)``, the system's work:
            writes the clip files into the folder ``work`` and returns the frame count
            and a note for the manifest's ``message`` (or None).
        fields (`dict`, *optional*): the system's own fields of the entry.
    """
    out = Path(out_dir)
    work = out / WORK_DIR / f"{name}.{uuid.uuid4().hex[:8]}"
    fields = fields or {}
    try:
        work.mkdir(parents=True)
        frames, note = build(source, work)
        final = out / "videos" / name
        if final.exists():
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(work, final)
        return clip_entry("ok", note, frames, source, **fields)
    except TalkingFaceError as exc:
        status = "no_face" if exc.code == "no_face" else "error"
        return clip_entry(status, exc.message, 0, source, **fields)
    except Exception as exc:  # one bad video (or a full disk) must not end the run
        logger.exception("preparing %s failed", source)
        return clip_entry("error", f"{type(exc).__name__}: {exc}", 0, source, **fields)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# The whole folder
# ---------------------------------------------------------------------------------------


def _no_args(name: str, path: Path) -> tuple:
    return ()


def _no_fields(name: str, path: Path) -> dict:
    return {}


def prepare_videos(
    videos_dir: Path,
    out_dir: Path,
    *,
    prepare_video: Callable[..., dict],
    clip_files: Sequence[str],
    new_manifest: Callable[[], dict],
    load_manifest: Callable[[Path], dict],
    video_args: Callable[[str, Path], tuple] = _no_args,
    entry_fields: Callable[[str, Path], dict] = _no_fields,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Prepare every video of ``videos_dir`` not prepared yet; the manifest, written.

    The splits are not assigned yet: the system does that (``assign_splits``) with what
    else it adds (a PCA, a label table) and writes the manifest again.

    Args:
        videos_dir (`Path`), out_dir (`Path`): as ``check_folders`` returns them.
        prepare_video (`Callable`): ``prepare_video(source, name, out_dir, *args) -> entry``;
            a module-level function, since spawned workers import it by name.
        clip_files (`Sequence[str]`): the files of a complete clip folder.
        new_manifest (`Callable`): an empty manifest of the system's kind.
        load_manifest (`Callable`): the system's manifest reader (raises
            ``FileNotFoundError``, ``ValueError`` or ``InvalidInput``).
        video_args (`Callable`, *optional*): ``(name, path) -> args`` of ``prepare_video``.
        entry_fields (`Callable`, *optional*): ``(name, path) -> fields`` refreshed in a
            kept clip's entry and set in the entry of a video whose worker died.
        workers (`int`, *optional*): processes preparing videos in parallel (spawned, so
            CUDA and dlib start clean); None for ``min(cpu count, 4)``; 1 prepares them
            in this process.
        progress (`bool`, defaults to True): show a tqdm bar over the videos.
    """
    if workers is None:
        workers = min(os.cpu_count() or 1, 4)
    workers = max(int(workers), 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / WORK_DIR, ignore_errors=True)  # left by an interrupted run
    try:
        previous = load_manifest(out_dir)["videos"]
    except FileNotFoundError:
        previous = {}
    except (ValueError, InvalidInput):
        logger.warning("%s is not a valid manifest of this dataset; starting a new one",
                       out_dir / "manifest.json")
        previous = {}

    # 1. What to do: every file found; earlier clips whose folder is complete are kept.
    found = scan_videos(videos_dir, out_dir)
    videos: dict[str, dict] = {}
    todo: list[tuple[str, str, tuple, dict]] = []
    for name, path in found.items():
        entry = previous.get(name)
        if entry and entry.get("status") == "ok" and clip_complete(out_dir, name, clip_files):
            videos[name] = dict(entry, source=str(path.absolute()), **entry_fields(name, path))
        else:
            todo.append((name, str(path.absolute()), video_args(name, path), entry_fields(name, path)))
    for name, entry in previous.items():
        if name not in found and entry.get("status") == "ok" and clip_complete(out_dir, name, clip_files):
            videos[name] = dict(entry)
    manifest = new_manifest()
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
            write_manifest(out_dir, manifest)
            next_write = start + (time.monotonic() - start) / MANIFEST_TIME_SHARE

    try:
        if workers == 1 or len(todo) <= 1:
            for name, source, args, _ in todo:
                record(name, prepare_video(source, name, str(out_dir), *args))
        else:
            context = multiprocessing.get_context("spawn")
            pool = concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(todo)),
                                                          mp_context=context)
            try:
                futures = {pool.submit(prepare_video, source, name, str(out_dir), *args): (name, source, fields)
                           for name, source, args, fields in todo}
                for future in concurrent.futures.as_completed(futures):
                    name, source, fields = futures[future]
                    try:
                        entry = future.result()
                    except concurrent.futures.process.BrokenProcessPool as exc:
                        entry = clip_entry("error", f"the worker process died: {exc}", 0, source, **fields)
                    record(name, entry)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()
        write_manifest(out_dir, manifest)
    return manifest


def assign_splits(videos: dict, split: float, seed: int) -> None:
    """Set ``split`` of every entry: ``train``/``test`` for ok clips, None for the others.

    Names are ordered by a hash of ``(seed, name)`` and the first ``round(split * n)``
    are train, at least one in each split when there are two or more clips.
    """
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


def finish(out_dir: Path) -> None:
    """Remove the work folder of a finished run."""
    shutil.rmtree(Path(out_dir) / WORK_DIR, ignore_errors=True)
