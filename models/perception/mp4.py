"""Frames -> MP4: an H.264 + AAC writer that streams chunks of frames into ffmpeg.

The service writes its results with it, the command line its output and the demo
tooling its training clips, so every MP4 the project makes is made the same way.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import IO, Mapping

import ffmpeg
import numpy as np

from models.perception.decode import ffmpeg_exe, stderr_tail

logger = logging.getLogger(__name__)


class Mp4Writer:
    """Stream RGB frames into an H.264 + AAC MP4 without holding the clip in memory.

    ffmpeg starts on the first chunk (its size fixes the frame size) and reads raw rgb24
    frames from stdin; the audio is handed over as a temporary float32 file, so stdin
    carries video only. The file appears at `path` only once it is complete: it is
    written to ``<path>.part`` and renamed on success, removed on failure.

    Args:
        path (`str | os.PathLike`): where the MP4 goes.
        fps (`float`, defaults to 25): frame rate.
        audio (`np.ndarray`, *optional*): mono float32 soundtrack; None for video only.
        sample_rate (`int`, defaults to 16000): rate of `audio`.
        metadata (`Mapping[str, str]`, *optional*): container tags, e.g. ``{"comment": ...}``.
        crf (`int`, defaults to 18): x264 quality (lower is better, 18 is near lossless).
        preset (`str`, defaults to "fast"): x264 speed/size trade-off.

    Example:
        ```py
        with Mp4Writer("out.mp4", fps=25, audio=wave, sample_rate=16000) as w:
            for chunk in chunks:  # uint8 (n, H, W, 3)
                w.write(chunk)
        ```
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float = 25,
        audio: np.ndarray | None = None,
        sample_rate: int = 16000,
        metadata: Mapping[str, str] | None = None,
        crf: int = 18,
        preset: str = "fast",
    ):
        for key in metadata or {}:
            # ffmpeg splits "-metadata k=v" at the first "="; keep keys plain words.
            if not key.replace("_", "").isalnum():
                raise ValueError(f"metadata key {key!r} must be letters, digits or '_'")
        self.path = Path(path)
        self.fps = fps
        self.audio = None if audio is None else np.asarray(audio, dtype=np.float32).reshape(-1)
        self.sample_rate = sample_rate
        self.metadata = dict(metadata or {})
        self.crf = crf
        self.preset = preset
        self.frame_size: tuple[int, int] | None = None  # (H, W), fixed by the first chunk
        self.frames_written = 0
        self._part = self.path.with_name(self.path.name + ".part")
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._stderr: IO[bytes] | None = None
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, frames: np.ndarray) -> None:
        """Append frames: uint8 (n, H, W, 3) RGB, or one (H, W, 3) frame.

        Raises:
            ValueError: wrong dtype or shape, or a size other than the first chunk's.
            RuntimeError: ffmpeg failed (its stderr tail is in the message).
        """
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(
                f"frames must be uint8 (n, H, W, 3), got {frames.dtype} {frames.shape}"
            )
        if self.frame_size is None:
            self._start(frames.shape[1], frames.shape[2])
        elif frames.shape[1:3] != self.frame_size:
            raise ValueError(
                f"frame size {frames.shape[1:3]} differs from the first chunk's {self.frame_size}"
            )
        try:
            self._proc.stdin.write(np.ascontiguousarray(frames).tobytes())
        except OSError:  # BrokenPipeError: ffmpeg has exited
            log = self.abort()
            raise RuntimeError(f"ffmpeg stopped while writing {self.path}: {log}") from None
        self.frames_written += len(frames)

    def close(self) -> None:
        """Finish the file: flush ffmpeg, check it succeeded, move the file into place.

        Raises:
            ValueError: no frame was written.
            RuntimeError: ffmpeg failed (its stderr tail is in the message).
        """
        if self._proc is None:
            raise ValueError(f"no frames were written to {self.path}")
        try:
            self._proc.stdin.close()
        except OSError:  # ffmpeg exited early; its exit code tells why
            pass
        code = self._proc.wait()
        if code != 0:
            log = self.abort()
            raise RuntimeError(f"ffmpeg failed (exit {code}) writing {self.path}: {log}")
        os.replace(self._part, self.path)
        self._cleanup()
        self._warn_on_duration_mismatch()

    def abort(self) -> str:
        """Stop ffmpeg and remove the partial file. Returns ffmpeg's stderr tail."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        log = self._cleanup()
        self._part.unlink(missing_ok=True)
        return log

    # -- internals

    def _start(self, height: int, width: int) -> None:
        self.frame_size = (height, width)
        self._tmp = tempfile.TemporaryDirectory(prefix="mp4writer-")
        # stderr goes to a file: a pipe nobody reads can fill up and stall ffmpeg.
        self._stderr = open(os.path.join(self._tmp.name, "stderr"), "w+b")
        rate = Fraction(self.fps).limit_denominator(1001)  # 29.97 -> 30000/1001
        frames = ffmpeg.input("pipe:0", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}",
                              framerate=str(rate)).video
        if width % 2 or height % 2:
            # yuv420p stores colour at half resolution, so both sides must be even.
            frames = frames.filter("pad", "ceil(iw/2)*2", "ceil(ih/2)*2")
        streams, options = [frames], {}
        if self.audio is not None:
            audio_path = os.path.join(self._tmp.name, "audio.f32")
            self.audio.astype("<f4").tofile(audio_path)
            streams.append(ffmpeg.input("file:" + audio_path, format="f32le", ar=self.sample_rate, ac=1).audio)
            options.update(acodec="aac", audio_bitrate="128k")
        for i, (key, value) in enumerate(self.metadata.items()):
            options[f"metadata:g:{i}"] = f"{key}={value}"
        # No -shortest: it would cut the audio if the video ends a frame early.
        cmd = (
            ffmpeg.output(*streams, "file:" + str(self._part.absolute()), format="mp4", vcodec="libx264",
                          pix_fmt="yuv420p", preset=self.preset, crf=self.crf, movflags="+faststart",
                          **options)
            .global_args("-hide_banner", "-nostats", "-loglevel", "error")
            .overwrite_output()
            .compile(cmd=ffmpeg_exe())
        )
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr
        )

    def _cleanup(self) -> str:
        """Close the pipes, delete the temporary files; returns ffmpeg's stderr tail."""
        log = ""
        if self._proc is not None and self._proc.stdin and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except OSError:  # the pipe may be broken already
                pass
        if self._stderr is not None and not self._stderr.closed:
            log = stderr_tail(self._stderr)
            self._stderr.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return log

    def _warn_on_duration_mismatch(self) -> None:
        if self.audio is None:
            return
        video_s = self.frames_written / self.fps
        audio_s = len(self.audio) / self.sample_rate
        if abs(video_s - audio_s) > 1.0 / self.fps + 1e-6:
            logger.warning(
                "%s: video is %.3f s but audio is %.3f s (more than one frame apart)",
                self.path, video_s, audio_s,
            )  # fmt: skip


def write_mp4(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray | None,
    sample_rate: int,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write an in-memory clip, uint8 (T, H, W, 3), as an MP4. See :class:`Mp4Writer`."""
    with Mp4Writer(path, fps=fps, audio=audio, sample_rate=sample_rate, metadata=metadata) as w:
        w.write(frames)
