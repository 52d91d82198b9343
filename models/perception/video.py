"""The one reader of untrusted videos: uploads, the pipelines' driving videos, dataset preparation.

Every video the project reads goes through this module, so a container that one path
refuses cannot slip in through another. It follows the rules of
``models.perception.decode`` (whose ``sniff_container`` is the one allow-list):

- **Content decides, never the name.** The container is recognised by its first bytes
  and that demuxer is forced on ffmpeg, which reads local files and pipes only
  (``decode.ffmpeg_input``).
- **Caps before work.** The header is checked first -- a video stream, its pixels per
  frame, its duration -- so a file that is too large or too long is refused before
  anything is decoded; while decoding, every frame's size is checked again and decoding
  stops one second past the duration cap.
- **Bounded memory.** Frames are resampled to 25 fps by ffmpeg's ``fps`` filter (frames
  repeated or dropped, so a 30-fps or variable-rate phone video plays at the same speed)
  and streamed in chunks of at most 32 frames and about 64 MiB, whatever the length of
  the video.

The sound track comes from the same file through ``decode.read_audio``
(``read_video_audio``).

Example:

    >>> video = read_video("talk.mp4")                # header checked, nothing decoded yet
    >>> for chunk in video:                          # uint8 (n, H, W, 3) RGB, n <= 32
    ...     ...
    >>> for frame in video.frames(limit=100):        # or one frame at a time
    ...     ...
    >>> audio = read_video_audio("talk.mp4")         # float32 (N,) at 16 kHz, or None
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from models.errors import InvalidInput
from models.perception.decode import (
    DECODE_TIMEOUT_S,
    MAX_AUDIO_SECONDS,
    QUIET,
    Source,
    display_name,
    ffmpeg_exe,
    ffmpeg_input,
    read_audio,
    read_head,
    sniff_container,
    stderr_tail,
)

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_VIDEO_PIXELS",
    "PROBE_TIMEOUT_S",
    "VIDEO_CHUNK_BYTES",
    "VIDEO_CHUNK_FRAMES",
    "VIDEO_FPS",
    "VideoFrames",
    "VideoStream",
    "has_video_stream",
    "probe_video",
    "read_video",
    "read_video_audio",
]

VIDEO_FPS = 25.0  # the frame rate the talking-face models see and write
VIDEO_CHUNK_FRAMES = 32
VIDEO_CHUNK_BYTES = 64 << 20  # fewer frames a chunk when they are large: 4K frames come 2 at a time
MAX_VIDEO_PIXELS = 50_000_000  # per frame; the service's image cap (a 48 MP photo passes)
PROBE_TIMEOUT_S = 60  # reading a header takes milliseconds; a hostile file must not stall


@dataclass(frozen=True)
class VideoStream:
    """What ``ffmpeg -i`` says about a file's first video stream."""

    width: int
    height: int
    seconds: float | None  # the container's duration; None when it does not state one


def _stream_lines(path: str | os.PathLike, demuxer: str) -> list[str]:
    """ffmpeg's description of a file's streams (``ffmpeg -i``, nothing decoded)."""
    cmd = (ffmpeg_input(path, demuxer)
           .output("pipe:1", format="null", t=0)   # stream list only, nothing decoded
           .global_args("-hide_banner", "-nostdin").compile(cmd=ffmpeg_exe()))
    done = subprocess.run(cmd, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
    return done.stderr.decode(errors="replace").splitlines()


def _is_video_line(line: str) -> bool:
    """A video stream of ``ffmpeg -i``'s listing; a still-image "cover art" stream does not count."""
    return "Stream #" in line and "Video:" in line and "attached pic" not in line


def has_video_stream(path: str | os.PathLike) -> bool:
    """Whether ffmpeg finds a video stream in a local file (of a sniffed container).

    Uses ``ffmpeg -i`` (no ffprobe needed) with the same forced demuxer and protocol
    whitelist as the decoders; a still-image "cover art" stream does not count.
    """
    demuxer = sniff_container(read_head(str(path)))
    if demuxer in (None, "wav"):        # a WAV holds audio only: no ffmpeg started to say so
        return False
    return any(_is_video_line(line) for line in _stream_lines(path, demuxer))


def probe_video(path: str | os.PathLike) -> VideoStream:
    """The size and duration of a local file's first video stream, read from its header.

    Same forced demuxer and protocol whitelist as the decoders; nothing is decoded.

    Raises:
        InvalidInput: not a container this project reads, or no video stream in it.
    """
    name = display_name(path)
    demuxer = sniff_container(read_head(str(path)))
    if demuxer is None:
        raise InvalidInput(f"{name} is not a video (unknown format)")
    lines = _stream_lines(path, demuxer)
    seconds = None
    for line in lines:
        found = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", line)
        if found:
            hours, minutes, secs = found.groups()
            seconds = 3600 * int(hours) + 60 * int(minutes) + float(secs)
            break
    for line in lines:
        if _is_video_line(line):
            size = re.search(r"\b(\d{1,5})x(\d{1,5})\b", line.split("Video:", 1)[1])
            if size:
                return VideoStream(int(size.group(1)), int(size.group(2)), seconds)
    raise InvalidInput(f"{name} has no video stream")


class VideoFrames:
    """A video's frames at ``fps``, decoded by ffmpeg chunk by chunk while it is iterated.

    Each iteration starts one ffmpeg that reads the file (forced demuxer, local files
    only), resamples it to ``fps`` frames per second (the ``fps`` filter) and writes PPM
    frames into a pipe. PPM carries each frame's size, so a video that ffmpeg turns
    upright from its rotation tag needs no special case. Memory holds one chunk, whatever
    the length of the video; leaving a loop early stops ffmpeg.

    Use :func:`read_video`, which checks the file before anything is decoded.

    Attributes:
        expected_frames (`int`): frames the header's duration promises at ``fps``; the
            pipelines size their progress with it (the real count may differ by one).
    """

    def __init__(self, path, demuxer, stream: VideoStream, fps=VIDEO_FPS, max_seconds=MAX_AUDIO_SECONDS,
                 max_pixels=MAX_VIDEO_PIXELS, chunk_frames=VIDEO_CHUNK_FRAMES, chunk_bytes=VIDEO_CHUNK_BYTES):
        self.path = os.path.abspath(path)
        self.demuxer = demuxer
        self.stream = stream
        self.fps = float(fps)
        self.max_seconds = max_seconds
        self.max_pixels = max_pixels
        self.chunk_frames = chunk_frames
        self.chunk_bytes = chunk_bytes
        seconds = stream.seconds if stream.seconds is not None else max_seconds
        self.expected_frames = max(1, int(round(seconds * self.fps)))

    def __iter__(self) -> Iterator[np.ndarray]:
        """uint8 RGB chunks (n, H, W, 3), n at most ``chunk_frames``."""
        return self.chunks()

    def frames(self, limit: int | None = None) -> Iterator[np.ndarray]:
        """The frames one at a time, uint8 RGB (H, W, 3), the first ``limit`` only if given.

        ffmpeg itself stops after ``limit`` frames (dataset preparation reads no more
        frames than the sound track covers), so nothing past them is decoded.
        """
        with contextlib.closing(self.chunks(limit)) as chunks:
            for chunk in chunks:
                yield from chunk

    def chunks(self, limit: int | None = None) -> Iterator[np.ndarray]:
        """uint8 RGB chunks (n, H, W, 3), n at most ``chunk_frames``; the first ``limit`` frames only if given."""
        name = repr(os.path.basename(self.path))
        frames = ffmpeg_input(self.path, self.demuxer)["v:0"].filter("fps", fps=self.fps)
        options = {"vframes": limit} if limit is not None else {}
        cmd = (frames.output("pipe:1", format="image2pipe", vcodec="ppm", t=f"{self.max_seconds + 1.0:.3f}",
                             **options)
               .global_args(*QUIET)
               .compile(cmd=ffmpeg_exe()))
        most = int(self.max_seconds * self.fps) + 1
        self._size = None
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
            try:
                count = 0
                while True:
                    # A hostile file must not hold a worker: each chunk has DECODE_TIMEOUT_S.
                    watchdog = threading.Timer(DECODE_TIMEOUT_S, proc.kill)
                    watchdog.start()
                    try:
                        chunk = self._read_chunk(proc.stdout, name)
                    finally:
                        watchdog.cancel()
                    if chunk is None:
                        break
                    count += len(chunk)
                    if count > most:
                        raise InvalidInput(f"{name} is longer than {self.max_seconds:g} s, the longest accepted")
                    yield chunk
                code = proc.wait()
                if code != 0 or count == 0:
                    logger.info("ffmpeg could not decode the video %s: %s", name, stderr_tail(err))
                    raise InvalidInput(f"{name} is not a video (its frames could not be decoded)")
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                proc.stdout.close()

    def _read_chunk(self, pipe, name):
        """Up to ``chunk_frames`` frames (and about ``chunk_bytes``) from a PPM stream; None at its end."""
        frames, limit = [], self.chunk_frames
        while len(frames) < limit:
            magic = pipe.readline()
            if not magic:
                break
            size = pipe.readline().split()
            pipe.readline()                                   # maximum value: 255
            if magic.strip() != b"P6" or len(size) != 2:
                raise InvalidInput(f"{name}: the decoder returned a frame it cannot read")
            width, height = int(size[0]), int(size[1])
            if width * height > self.max_pixels:
                raise InvalidInput(f"{name} frames are {width}x{height} pixels; at most "
                                   f"{self.max_pixels:,} pixels are accepted")
            data = pipe.read(width * height * 3)
            if len(data) < width * height * 3:
                break                                          # cut short: ffmpeg's exit code tells
            frame = np.frombuffer(data, np.uint8).reshape(height, width, 3)
            if self._size is not None and frame.shape != self._size:
                raise InvalidInput(f"{name} changes its frame size part-way; re-encode it at one size")
            self._size = frame.shape
            frames.append(frame)
            limit = max(1, min(self.chunk_frames, self.chunk_bytes // frame.nbytes))
        return np.stack(frames) if frames else None


def read_video(source: str | os.PathLike, fps: float = VIDEO_FPS, max_seconds: float = MAX_AUDIO_SECONDS,
               max_pixels: int = MAX_VIDEO_PIXELS, chunk_frames: int = VIDEO_CHUNK_FRAMES,
               chunk_bytes: int = VIDEO_CHUNK_BYTES) -> VideoFrames:
    """Open a video for streaming its frames at ``fps``.

    The header is checked first -- a video stream, its pixel count, its duration -- so a
    file that is too large or too long is refused before anything is decoded; decoding
    itself also stops one second past ``max_seconds``.

    Args:
        source (`str | os.PathLike`): a local file (MP4/MOV, MKV/WebM, AVI, MPEG-TS).
        fps (`float`, defaults to 25): frame rate of the frames returned.
        max_seconds (`float`, defaults to `MAX_AUDIO_SECONDS`): longest video accepted.
        max_pixels (`int`, defaults to `MAX_VIDEO_PIXELS`): largest frame accepted.
        chunk_frames (`int`, defaults to 32): most frames per chunk (fewer when they are
            large: a chunk holds about ``chunk_bytes``).
        chunk_bytes (`int`, defaults to 64 MiB): about the most bytes of frames a chunk holds.

    Returns:
        `VideoFrames`: iterate it for uint8 RGB chunks (n, H, W, 3), or call its
        ``frames()`` for one frame at a time.

    Raises:
        InvalidInput: not a video, no video stream, frames too large, or too long.
    """
    name = display_name(source)
    demuxer = sniff_container(read_head(source))
    if demuxer is None:
        raise InvalidInput(f"{name} is not a video (MP4, MOV, MKV, WebM, AVI or MPEG-TS expected)")
    stream = probe_video(source)
    if stream.width * stream.height > max_pixels:
        raise InvalidInput(f"{name} frames are {stream.width}x{stream.height} pixels; at most "
                           f"{max_pixels:,} pixels are accepted")
    if stream.seconds is not None and stream.seconds > max_seconds + 1.0 / fps:
        raise InvalidInput(f"{name} is longer than {max_seconds:g} s, the longest accepted")
    return VideoFrames(source, demuxer, stream, fps=fps, max_seconds=max_seconds, max_pixels=max_pixels,
                       chunk_frames=chunk_frames, chunk_bytes=chunk_bytes)


def read_video_audio(source: Source, sample_rate: int = 16000,
                     max_seconds: float = MAX_AUDIO_SECONDS) -> np.ndarray | None:
    """A video's sound as mono float32, or None when it has no audio track.

    Args:
        source (`str | os.PathLike | bytes`): the video file or its bytes.
        sample_rate (`int`, defaults to 16000): output rate in Hz.
        max_seconds (`float`, defaults to `MAX_AUDIO_SECONDS`): longest sound accepted.

    Raises:
        InvalidInput: not a known container, a decode failure, or too long.
    """
    try:
        return read_audio(source, sample_rate=sample_rate, max_seconds=max_seconds)
    except InvalidInput as exc:
        if "has no audio track" in exc.message:
            return None
        raise
