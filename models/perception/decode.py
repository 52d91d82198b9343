"""Decoding untrusted audio (and the audio track of videos) with ffmpeg.

Shared by the service (uploads) and by dataset preparation, so it lives with the
models' perception code; ``service.media`` re-exports it, and ``models.perception.video``
(the one video reader) builds on its container list and ffmpeg helpers. The rules:

- **Content decides, never the name.** Containers are recognised by their magic bytes
  and that demuxer is forced on ffmpeg with ``-f``, so ffmpeg never guesses a format
  from a file that might be a playlist (HLS, concat) pointing at other files or URLs.
- **ffmpeg only reads local files and pipes**: ``-protocol_whitelist file,pipe``, inputs
  named ``file:<absolute path>`` (so ``http:x`` is not a URL), an argument list built by
  ffmpeg-python, never a shell.
- **Caps before work**: audio is decoded for at most ``max_seconds`` plus one second.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import tempfile
from typing import IO, Union

import ffmpeg
import numpy as np

from models.errors import InvalidInput

logger = logging.getLogger(__name__)

Source = Union[str, os.PathLike, bytes]

MAX_AUDIO_SECONDS = 600.0
DECODE_TIMEOUT_S = 300  # a hostile file must not hold a worker forever


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg binary: the system's if on PATH, else the one imageio-ffmpeg ships."""
    system = shutil.which("ffmpeg")
    if system:
        return system
    import imageio_ffmpeg  # imported late: only needed where ffmpeg is not installed

    return imageio_ffmpeg.get_ffmpeg_exe()


HEAD_BYTES = 512  # what ``sniff_container`` needs to see (MPEG-TS: three 188-byte packets)
QUIET = ("-hide_banner", "-nostdin", "-nostats", "-loglevel", "error")  # ffmpeg's global args


def display_name(source: Source) -> str:
    """How an error message refers to ``source``: its file name, or 'the upload'."""
    return "the upload" if isinstance(source, bytes) else repr(os.path.basename(os.fspath(source)))


def read_head(source: Source, n: int = HEAD_BYTES) -> bytes:
    """The first ``n`` bytes of a path or bytes; a missing file is a user error."""
    if isinstance(source, bytes):
        return source[:n]
    try:
        with open(source, "rb") as f:
            return f.read(n)
    except OSError as e:
        raise unreadable(source, e) from None


def unreadable(path, error: OSError) -> InvalidInput:
    """The one error for a file that cannot be opened: its path and why."""
    reason = "no such file" if isinstance(error, FileNotFoundError) else (error.strerror or str(error))
    return InvalidInput(f"cannot read {os.fspath(path)}: {reason}")


def stderr_tail(f: IO[bytes], n: int = 2000) -> str:
    """The last ``n`` bytes of a (stderr) file, for error messages."""
    f.flush()
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - n))
    return f.read().decode("utf-8", "replace").strip()


def sniff_container(head: bytes) -> str | None:
    """The ffmpeg demuxer for a file's first bytes, or None if it is not a known container.

    The project's one allow-list of containers: audio files, and the video containers
    (MP4/MOV, MKV/WebM, AVI, MPEG-TS) that uploads, driving videos and dataset
    preparation read, through ``models.perception.video``, and whose audio track is
    accepted too.
    """
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML header: Matroska and WebM
        return "matroska"
    # ISO-BMFF (mp4, m4a, mov, 3gp): a box type at offset 4; old QuickTime files may
    # open with a box other than ftyp.
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free"):
        return "mov"
    if head[:3] == b"ID3":
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # 11-bit frame sync; layer bits 00 mean ADTS AAC rather than MPEG audio.
        return "aac" if head[1] & 0x06 == 0 else "mp3"
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:  # MPEG-TS packets
        return "mpegts"
    return None


def ffmpeg_input(path: str | os.PathLike, demuxer: str):
    """An ffmpeg-python input for a local file, read as ffmpeg's ``demuxer`` and nothing else.

    The input is named ``file:<absolute path>`` (so ``http:x`` is not a URL) and ffmpeg
    may open only local files and pipes: a container that names other files or URLs
    (playlists, references) cannot make ffmpeg read them.
    """
    return ffmpeg.input("file:" + os.path.abspath(path), format=demuxer, protocol_whitelist="file,pipe")


def read_audio(
    source: Source, sample_rate: int = 16000, max_seconds: float = MAX_AUDIO_SECONDS
) -> np.ndarray:
    """Decode the first audio track of an uploaded file to mono float32.

    Args:
        source (`str | os.PathLike | bytes`): a file path or the file's bytes; audio
            (WAV, MP3, AAC, Ogg, FLAC, AIFF) or a video container (MP4/MOV, MKV/WebM,
            AVI, MPEG-TS) with an audio track.
        sample_rate (`int`, defaults to 16000): output rate in Hz.
        max_seconds (`float`, defaults to `MAX_AUDIO_SECONDS`): longest clip accepted.

    Returns:
        `np.ndarray`: float32 (N,) at `sample_rate`; stereo is averaged to mono.

    Raises:
        InvalidInput: unknown content, a decode failure, no audio track, or too long.
    """
    name = display_name(source)
    head = read_head(source)
    if not head:
        raise InvalidInput(f"{name} is not an audio file (it is empty)")
    demuxer = sniff_container(head)
    if demuxer is None:
        raise InvalidInput(f"{name} is not an audio file (unknown format)")
    audio = _read_plain_wav(source, sample_rate, max_seconds) if demuxer == "wav" else None
    if audio is None:
        audio = _decode(source, demuxer, sample_rate, max_seconds, name)
    if len(audio) > round(max_seconds * sample_rate):
        raise InvalidInput(f"{name} is longer than {max_seconds:g} s, the longest accepted")
    return audio


def _read_plain_wav(source: Source, sample_rate: int, max_seconds: float) -> np.ndarray | None:
    """A mono 16-bit PCM WAV already at ``sample_rate``, read without ffmpeg; None for any other WAV.

    What text-to-speech engines write, and the bulk of what a streamed or live request
    sends: starting no ffmpeg saves tens of milliseconds before its first frame. The
    samples are ffmpeg's exactly (``s16 / 32768`` is exact in float32); anything this does
    not read (other rates, stereo, other sample formats, a header it cannot parse, a
    data chunk of unknown size) goes to ffmpeg, which decides.
    """
    import io
    import wave

    try:
        with wave.open(io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source), "rb") as f:
            if f.getnchannels() != 1 or f.getsampwidth() != 2 or f.getframerate() != sample_rate:
                return None
            frames = f.getnframes()
            if frames == 0:
                return None
            # One second past the cap is enough to tell "too long", as for ffmpeg.
            data = f.readframes(min(frames, round((max_seconds + 1.0) * sample_rate)))
    except Exception:  # noqa: BLE001 - any header the wave module cannot read: ffmpeg decides
        return None
    if len(data) % 2:
        data = data[:-1]
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32768)


def _decode(source: Source, demuxer: str, sample_rate: int, max_seconds: float, name: str) -> np.ndarray:
    """``read_audio``'s decoding by ffmpeg: mono float32 at ``sample_rate``, at most the cap + 1 s."""
    with tempfile.TemporaryDirectory(prefix="media-") as tmp:
        if isinstance(source, bytes):
            # Bytes go through a file, not stdin: MP4s from phones keep their index (the
            # moov box) at the end, and the mov demuxer must seek back to read samples.
            path = os.path.join(tmp, "input")
            with open(path, "wb") as f:
                f.write(source)
        else:
            path = os.path.abspath(source)
        source_audio = ffmpeg_input(path, demuxer)["a:0"]
        cmd = (
            ffmpeg.output(
                source_audio, "pipe:1", format="f32le", ac=1, ar=sample_rate,
                # Mix channels with weights summing to 1 (stereo -> (L+R)/2, as librosa
                # does); ffmpeg's default for float output is +3 dB louder.
                rematrix_maxval=1.0,
                # One second past the cap is enough to tell "too long" without decoding it all.
                t=f"{max_seconds + 1.0:.3f}",
            )
            .global_args(*QUIET)
            .compile(cmd=ffmpeg_exe())
        )
        with open(os.path.join(tmp, "stderr"), "w+b") as err:
            try:
                done = subprocess.run(
                    cmd, stdout=subprocess.PIPE, stderr=err, timeout=DECODE_TIMEOUT_S, check=False
                )
            except subprocess.TimeoutExpired:
                raise InvalidInput(f"{name} could not be decoded in {DECODE_TIMEOUT_S} s") from None
            if done.returncode != 0:
                log = stderr_tail(err)
                logger.info("ffmpeg could not decode %s: %s", name, log)
                if "matches no streams" in log:
                    raise InvalidInput(f"{name} has no audio track")
                raise InvalidInput(f"{name} is not an audio file (it could not be decoded)")
    return np.frombuffer(done.stdout, dtype="<f4").astype(np.float32)
