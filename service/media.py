"""Untrusted uploads in, MP4 out: image and audio decoding, and a streaming MP4 writer.

Everything a user uploads goes through this module before a model sees it; audio
decoding lives in ``models.perception.decode`` and video decoding in
``models.perception.video`` (the pipelines and dataset preparation read videos through it
too), both re-exported here. The rules:

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

Output goes the other way: :class:`Mp4Writer` pipes raw RGB frames into ffmpeg chunk by
chunk (H.264 yuv420p + AAC, ``+faststart``), so memory does not grow with clip length.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import IO, Mapping

import ffmpeg
import numpy as np
from PIL import Image, ImageOps

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


MAX_IMAGE_PIXELS = 50_000_000  # a 48 MP phone photo passes; ~150 MB once decoded to RGB
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
SILENCE_PEAK = 1e-4  # below this peak amplitude (full scale = 1.0) a clip counts as silent


# ---------------------------------------------------------------------------- images


class ImageTooLarge(InvalidInput):
    """An image, but with more pixels than accepted."""


def read_image(source: Source, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an uploaded photo into an RGB array.

    Args:
        source (`str | os.PathLike | bytes`): a file path or the file's bytes.
        max_pixels (`int`, defaults to `MAX_IMAGE_PIXELS`): largest width * height
            accepted, checked from the header before the pixels are decoded.

    Returns:
        `np.ndarray`: uint8 (H, W, 3) RGB, upright (EXIF orientation applied);
        transparent areas are composited onto white.

    Raises:
        InvalidInput: not a JPEG/PNG/WebP/BMP, truncated or corrupt, or too many pixels.
    """
    name = display_name(source)
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        # `formats` stops Pillow from trying its other ~40 decoders on untrusted bytes.
        with Image.open(fp, formats=IMAGE_FORMATS) as img:
            if img.width * img.height > max_pixels:
                raise ImageTooLarge(
                    f"{name} is {img.width}x{img.height} pixels; "
                    f"at most {max_pixels:,} pixels are accepted"
                )
            img.load()  # decode now, inside the try: truncated data fails here
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except InvalidInput:
        raise
    except FileNotFoundError:
        raise InvalidInput(f"cannot read {name}: no such file") from None
    except Image.DecompressionBombError:  # only reached when max_pixels exceeds Pillow's cap
        raise ImageTooLarge(f"{name} has too many pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError):
        # UnidentifiedImageError and "image file is truncated" are both OSErrors.
        raise InvalidInput(f"{name} is not an image (JPEG, PNG, WebP or BMP expected)") from None


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> uint8 (H, W, 3)."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        # 16-bit grayscale: Pillow's convert("RGB") clips instead of scaling.
        gray = (np.asarray(img, dtype=np.float32) / 257.0).clip(0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


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
