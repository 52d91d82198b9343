"""Untrusted uploads in, MP4 out: the service's one door for media.

Everything a user uploads goes through this module before a model sees it. The decoders
live in ``models.perception`` (``image`` for photos, ``decode`` for audio, ``video`` for
videos, ``mp4`` for the writer), where the pipelines, data preparation and demo tooling
use them too; they are re-exported here with the service's caps. The rules:

- **Content decides, never the name.** Images are opened by Pillow restricted to JPEG,
  PNG, WebP and BMP. Audio containers are recognised by their magic bytes and that
  demuxer is forced on ffmpeg with ``-f``, so ffmpeg never guesses a format from a file
  that might be a playlist (HLS, concat) pointing at other files or URLs.
- **ffmpeg only reads local files and pipes.** Every decode passes
  ``-protocol_whitelist file,pipe``, names its input ``file:<absolute path>`` (so a
  name such as ``http:x`` is not a URL) and runs as an argument list built by
  ffmpeg-python, never a shell.
- **Caps before work.** Image pixels are checked from the header before decoding (a
  decompression bomb is refused without allocating it); audio is decoded for at most
  ``max_seconds`` plus one second, so memory is bounded whatever was uploaded.
- **One clear error.** Every bad input raises :class:`models.errors.InvalidInput` with a
  one-line message that names the file; the service turns it into a 4xx answer.
- **Bounded memory in the API.** The API process checks uploads (``check_image``: PNG by
  its chunks' CRCs, JPEG at 1/8 scale, no pixel held where the format allows) on a thread
  pool of its own, never the one its JSON routes use, and under a :class:`DecodeBudget` of
  bytes: large decodes wait their turn, or answer 503 when the wait is too long.

Output goes the other way: :class:`Mp4Writer` pipes raw RGB frames into ffmpeg chunk by
chunk (H.264 yuv420p + AAC, ``+faststart``), so memory does not grow with clip length.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from models.errors import InvalidInput
from models.perception import video as video_lib
from models.perception.decode import (  # noqa: F401  (re-exported)
    DECODE_TIMEOUT_S,
    MAX_AUDIO_SECONDS,
    Source,
    display_name,
    ffmpeg_exe,
    read_audio,
    sniff_container,
    stderr_tail,
)
from models.perception.image import (  # noqa: F401  (re-exported)
    IMAGE_FORMATS,
    MAX_IMAGE_PIXELS,
    ImageHeader,
    ImageTooLarge,
    check_image,
    read_image,
)
from models.perception.mp4 import Mp4Writer, write_mp4  # noqa: F401  (re-exported)
from models.perception.video import (  # noqa: F401  (re-exported)
    VIDEO_CHUNK_BYTES,
    VIDEO_CHUNK_FRAMES,
    VIDEO_FPS,
    VideoFrames,
    VideoStream,
    has_video_stream,
    probe_video,
    read_video_audio,
)

logger = logging.getLogger(__name__)


SILENCE_PEAK = 1e-4  # below this peak amplitude (full scale = 1.0) a clip counts as silent


# ---------------------------------------------------------------------------- checking uploads


class DecodeBusy(Exception):
    """The decode budget stayed spent for longer than a check may wait: try again later."""

    def __init__(self, message, retry_after=5):
        super().__init__(message)
        self.message, self.retry_after = message, retry_after


class DecodeBudget:
    """Bytes of memory that checks of uploads may hold at once, shared by the threads that run them.

    ``admit(nbytes)`` waits until ``nbytes`` fit beside what is held (one check larger than the
    whole budget runs alone), at most ``wait_seconds``; then :class:`DecodeBusy`.
    """

    def __init__(self, total_bytes: int, wait_seconds: float):
        self.total, self.wait_seconds = total_bytes, wait_seconds
        self.held = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def admit(self, nbytes: int):
        nbytes = min(max(0, int(nbytes)), self.total)
        with self._changed:
            if not self._changed.wait_for(lambda: self.held + nbytes <= self.total, self.wait_seconds):
                raise DecodeBusy(f"the server is checking other large uploads; {nbytes:,} bytes of its "
                                 f"{self.total:,}-byte decode budget did not free up in {self.wait_seconds:g} s")
            self.held += nbytes
        try:
            yield
        finally:
            with self._changed:
                self.held -= nbytes
                self._changed.notify_all()


_budgets: dict[tuple, DecodeBudget] = {}
_budgets_lock = threading.Lock()
# Checks of uploads run here, not in the thread pool of the API's own routes: a burst of
# large uploads waiting for the decode budget never delays a JSON call.
_check_threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="upload-check")


def decode_budget(settings) -> DecodeBudget:
    """The process's decode budget for ``settings`` (``decode_budget_bytes``, ``decode_wait_seconds``)."""
    key = (settings.decode_budget_bytes, settings.decode_wait_seconds)
    with _budgets_lock:
        if key not in _budgets:
            _budgets[key] = DecodeBudget(*key)
        return _budgets[key]


async def run_check(fn, *args):
    """``fn(*args)`` on the upload-checking threads, awaited from the event loop."""
    return await asyncio.get_running_loop().run_in_executor(_check_threads, fn, *args)


def audio_check_bytes(max_seconds: float, sample_rate: int) -> int:
    """Memory ``read_audio`` holds at most: the float32 samples piped from ffmpeg, and their copy."""
    return int((max_seconds + 1.0) * sample_rate) * 4 * 2


# ---------------------------------------------------------------------------- audio


def check_speech(audio: np.ndarray, sample_rate: int, min_seconds: float = 0.3) -> None:
    """Refuse audio that cannot drive a face: too short, or silent.

    Args:
        audio (`np.ndarray`): mono float samples in [-1, 1].
        sample_rate (`int`): samples per second.
        min_seconds (`float`, defaults to 0.3): shortest clip accepted.

    Raises:
        InvalidInput: the clip is shorter than `min_seconds` or its peak is below 1e-4.
    """
    seconds = len(audio) / sample_rate
    if seconds < min_seconds:
        raise InvalidInput(f"audio is {seconds:.2f} s long; at least {min_seconds:g} s is needed")
    if float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise InvalidInput("audio is silent; a voice clip is needed")


# ---------------------------------------------------------------------------- video


def read_video(source: str | os.PathLike, fps: float = VIDEO_FPS, max_seconds: float = MAX_AUDIO_SECONDS,
               max_pixels: int = MAX_IMAGE_PIXELS, chunk_frames: int = VIDEO_CHUNK_FRAMES) -> VideoFrames:
    """Open an uploaded video for streaming its frames at ``fps``: ``models.perception.video.read_video``
    under the service's caps (``MAX_IMAGE_PIXELS`` a frame, ``VIDEO_CHUNK_BYTES`` a chunk).

    Raises:
        InvalidInput: not a video, no video stream, frames too large, or too long.
    """
    return video_lib.read_video(source, fps=fps, max_seconds=max_seconds, max_pixels=max_pixels,
                                chunk_frames=chunk_frames, chunk_bytes=VIDEO_CHUNK_BYTES)


# ---------------------------------------------------------------------------- MP4 output


# ---------------------------------------------------------------------------- probing


def probe(path: str | os.PathLike) -> dict:
    """ffprobe's JSON description of a media file (``streams`` and ``format``).

    Raises:
        RuntimeError: ffprobe is not installed, or it cannot read the file.
    """
    exe = shutil.which("ffprobe")
    if exe is None:
        raise RuntimeError("ffprobe is not installed; install ffmpeg (e.g. apt-get install ffmpeg)")
    cmd = [exe, "-v", "error", "-print_format", "json", "-show_streams", "-show_format"]
    done = subprocess.run(
        cmd + ["file:" + os.path.abspath(path)], capture_output=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ffprobe failed on {path}: {done.stderr.decode(errors='replace')}")
    return json.loads(done.stdout)


# An image generator's vector condition: at most 64 rows of 4,096 numbers.
MAX_ARRAY_VALUES = 64 * 4096
NPY_MAGIC = b"\x93NUMPY"


def read_array(path: str | os.PathLike, max_values: int = MAX_ARRAY_VALUES) -> np.ndarray:
    """A NumPy ``.npy`` file of numbers, (d,) or (n, d), as float32; InvalidInput otherwise.

    Nothing in the file is unpickled (``allow_pickle=False``), and its header is read before
    its data, so a file announcing a huge array is refused without reading it.
    """
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    with f:
        if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise InvalidInput("the file is not a NumPy .npy array")
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
        except (ValueError, OSError, EOFError) as exc:
            raise InvalidInput(f"the .npy header cannot be read: {exc}") from None
        if dtype.kind not in "iuf" or len(shape) not in (1, 2) or 0 in shape:
            raise InvalidInput("the array must hold numbers, shaped (d,) or (n, d)")
        if int(np.prod(shape)) > max_values:
            raise InvalidInput(f"the array holds {int(np.prod(shape))} numbers; at most {max_values} are taken")
        f.seek(0)
        try:
            array = np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InvalidInput(f"the .npy file cannot be read: {exc}") from None
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise InvalidInput("the array holds NaN or infinity")
    return array
