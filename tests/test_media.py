"""Tests for service.media: upload checks, audio decoding, MP4 writing."""

import io
import subprocess
import wave

import numpy as np
import pytest
from PIL import Image

from models.errors import InvalidInput
from service import media

SR_IN = 44100


# ---------------------------------------------------------------------------- fixtures


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def gradient(height: int, width: int) -> np.ndarray:
    """A smooth RGB image: H.264 keeps it close to the input."""
    y, x = np.mgrid[0:height, 0:width]
    r = 255 * x / max(width - 1, 1)
    g = 255 * y / max(height - 1, 1)
    b = np.full_like(r, 128.0)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def sine(seconds: float, freq: float = 440.0, rate: int = SR_IN) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return 0.5 * np.sin(2 * np.pi * freq * t)


def wav_bytes(seconds: float, freq: float = 440.0) -> bytes:
    """44.1 kHz stereo int16 WAV of a sine (the same tone on both channels)."""
    mono = (sine(seconds, freq) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(SR_IN)
        w.writeframes(np.repeat(mono[:, None], 2, axis=1).tobytes())
    return buf.getvalue()


def encode_with_ffmpeg(tmp_path, wav: bytes, name: str, codec: str) -> bytes:
    src = tmp_path / "src.wav"
    src.write_bytes(wav)
    out = tmp_path / name
    subprocess.run(
        [media.ffmpeg_exe(), "-loglevel", "error", "-y", "-i", str(src), "-c:a", codec, str(out)],
        check=True,
    )
    return out.read_bytes()


def dominant_freq(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return np.argmax(spectrum) * rate / len(audio)


# ---------------------------------------------------------------------------- read_image

# Noise does not compress, so half the file cuts deep into the pixel data.
NOISE_PNG = png_bytes(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))



@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP"])
def test_read_image_formats_come_back_rgb(fmt):
    img = media.read_image(png_bytes(gradient(48, 64), fmt))
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    assert np.abs(img.astype(int) - gradient(48, 64)).mean() < 4


def test_read_image_path_and_grayscale(tmp_path):
    path = tmp_path / "gray.png"
    path.write_bytes(png_bytes(np.full((20, 30), 77, np.uint8)))
    img = media.read_image(path)
    assert img.shape == (20, 30, 3)
    assert (img == 77).all()


def test_read_image_rgba_is_composited_on_white():
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    img = media.read_image(png_bytes(rgba))
    assert img.shape == (8, 8, 3) and (img == 255).all()


def test_read_image_applies_exif_orientation():
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(gradient(20, 40)).save(buf, format="JPEG", exif=exif)
    assert media.read_image(buf.getvalue()).shape == (40, 20, 3)


@pytest.mark.parametrize(
    "data",
    [
        b"hello, this is plain text and not a picture\n",
        NOISE_PNG[: len(NOISE_PNG) // 2],  # truncated PNG
        wav_bytes(0.1),
        b"",
    ],
    ids=["text", "truncated-png", "wav", "empty"],
)
def test_read_image_rejects_non_images(data):
    with pytest.raises(InvalidInput, match="not an image"):
        media.read_image(data)


def test_read_image_rejects_other_pillow_formats():
    buf = io.BytesIO()
    Image.fromarray(gradient(8, 8)).save(buf, format="GIF")
    with pytest.raises(InvalidInput, match="not an image"):
        media.read_image(buf.getvalue())


def test_read_image_error_names_the_file(tmp_path):
    path = tmp_path / "face.jpg"
    path.write_bytes(b"not really a jpeg")
    with pytest.raises(InvalidInput, match="'face.jpg' is not an image"):
        media.read_image(path)


def test_read_image_pixel_cap():
    with pytest.raises(InvalidInput, match="pixels"):
        media.read_image(png_bytes(gradient(32, 32)), max_pixels=32 * 32 - 1)
    assert media.read_image(png_bytes(gradient(32, 32)), max_pixels=32 * 32).shape == (32, 32, 3)


# ---------------------------------------------------------------------------- read_audio


def test_read_audio_wav_resamples_to_mono_16k(tmp_path):
    data = wav_bytes(1.5, freq=440.0)
    path = tmp_path / "voice.wav"
    path.write_bytes(data)
    for source in (data, path, str(path)):
        audio = media.read_audio(source)
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert abs(len(audio) - 24000) <= 240
        assert abs(dominant_freq(audio, 16000) - 440.0) < 5
        assert 0.45 < np.abs(audio).max() < 0.55


def mono_wav(samples, rate=16000, width=2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def test_plain_wav_is_read_without_ffmpeg_and_gives_ffmpegs_samples(tmp_path, monkeypatch):
    from models.perception import decode

    pcm = np.random.default_rng(1).integers(-32768, 32768, 40000).astype("<i2")
    pcm[:3] = (-32768, 32767, 0)
    data = mono_wav(pcm)
    by_ffmpeg = decode._decode(data, "wav", 16000, 600, "x")
    started = []
    real_run = subprocess.run
    monkeypatch.setattr(decode.subprocess, "run", lambda *a, **k: started.append(a) or real_run(*a, **k))
    audio = media.read_audio(data, sample_rate=16000)
    assert not started                                   # no ffmpeg for a mono 16-bit WAV at the rate asked
    assert audio.dtype == np.float32 and np.array_equal(audio, by_ffmpeg)
    assert audio[0] == -1.0 and audio[2] == 0.0
    with pytest.raises(InvalidInput, match="longer than 2 s"):
        media.read_audio(data, sample_rate=16000, max_seconds=2.0)
    (tmp_path / "voice.wav").write_bytes(data)
    assert not media.has_video_stream(tmp_path / "voice.wav") and not started    # a WAV holds no video
    # Other WAVs go to ffmpeg: another rate (resampled), 8-bit samples, stereo.
    for other in (mono_wav(pcm, rate=22050), mono_wav((pcm // 256 + 128).astype(np.uint8), width=1), wav_bytes(0.5)):
        started.clear()
        assert len(media.read_audio(other, sample_rate=16000)) > 0 and started


@pytest.mark.parametrize(("name", "codec"), [("clip.mp3", "libmp3lame"), ("clip.m4a", "aac")])
def test_read_audio_compressed(tmp_path, name, codec):
    data = encode_with_ffmpeg(tmp_path, wav_bytes(1.0, freq=1000.0), name, codec)
    audio = media.read_audio(data, sample_rate=22050)
    # Encoders add up to a few frames of padding.
    assert abs(len(audio) - 22050) < 0.05 * 22050
    assert abs(dominant_freq(audio, 22050) - 1000.0) < 10


def test_read_audio_from_video_without_audio_track(tmp_path):
    path = tmp_path / "silent.mp4"
    media.write_mp4(path, np.zeros((5, 16, 16, 3), np.uint8), 25, None, 16000)
    with pytest.raises(InvalidInput, match="no audio track"):
        media.read_audio(path)


def test_read_audio_from_video_with_audio_track(tmp_path):
    path = tmp_path / "talk.mp4"
    voice = sine(1.0, 300.0, 16000).astype(np.float32)
    media.write_mp4(path, np.zeros((25, 16, 16, 3), np.uint8), 25, voice, 16000)
    audio = media.read_audio(path)
    assert abs(len(audio) - 16000) < 800
    assert abs(dominant_freq(audio, 16000) - 300.0) < 5


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        png_bytes(gradient(16, 16)),
        b"RIFF\x10\x00\x00\x00WAVEgarbage-garbage",  # right magic, broken body
    ],
    ids=["random", "png", "broken-wav"],
)
def test_read_audio_rejects_non_audio(data):
    with pytest.raises(InvalidInput, match="not an audio file"):
        media.read_audio(data)


def test_read_audio_rejects_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(InvalidInput, match="'empty.wav' is not an audio file"):
        media.read_audio(path)


def test_read_audio_missing_file(tmp_path):
    with pytest.raises(InvalidInput, match="cannot read"):
        media.read_audio(tmp_path / "nope.wav")


def test_read_audio_duration_cap():
    with pytest.raises(InvalidInput, match="longer than 1 s"):
        media.read_audio(wav_bytes(2.0), max_seconds=1.0)
    assert len(media.read_audio(wav_bytes(2.0), max_seconds=2.0)) == pytest.approx(32000, rel=0.01)


def test_sniff_container():
    assert media.sniff_container(b"RIFF\0\0\0\0WAVEfmt ") == "wav"
    assert media.sniff_container(b"ID3\x04") == "mp3"
    assert media.sniff_container(b"\xff\xfb\x90\x00") == "mp3"
    assert media.sniff_container(b"\xff\xf1\x50\x80") == "aac"
    assert media.sniff_container(b"OggS\0") == "ogg"
    assert media.sniff_container(b"fLaC\0") == "flac"
    assert media.sniff_container(b"\0\0\0\x20ftypisom") == "mov"
    assert media.sniff_container(b"\x1a\x45\xdf\xa3\x01") == "matroska"
    assert media.sniff_container(b"#EXTM3U\nhttp://example.com/a.ts") is None


# ---------------------------------------------------------------------------- check_speech


def test_check_speech_too_short():
    with pytest.raises(InvalidInput, match=r"audio is 0\.12 s long; at least 0\.3 s is needed"):
        media.check_speech(np.full(1920, 0.1, np.float32), 16000)


def test_check_speech_silent():
    with pytest.raises(InvalidInput, match="silent"):
        media.check_speech(np.full(16000, 1e-5, np.float32), 16000)


def test_check_speech_accepts_speech_like_noise():
    rng = np.random.default_rng(0)
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * np.arange(16000) / 16000))  # 4 Hz syllables
    media.check_speech((0.2 * envelope * rng.standard_normal(16000)).astype(np.float32), 16000)


# ---------------------------------------------------------------------------- Mp4Writer


def decode_first_frame(path, height, width) -> np.ndarray:
    out = subprocess.run(
        [media.ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-frames:v", "1",
         "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return np.frombuffer(out, np.uint8).reshape(height, width, 3)


def test_mp4_writer_streams_chunks_with_audio(tmp_path, ffprobe):
    path = tmp_path / "out.mp4"
    frame = gradient(128, 128)
    frames = np.repeat(frame[None], 50, axis=0)
    voice = sine(2.0, 440.0, 16000).astype(np.float32)
    with media.Mp4Writer(path, fps=25, audio=voice, sample_rate=16000,
                         metadata={"comment": "made by tests"}) as w:  # fmt: skip
        for chunk in (frames[:7], frames[7:30], frames[30:]):
            w.write(chunk)
    assert w.frames_written == 50

    info = media.probe(path)
    video = [s for s in info["streams"] if s["codec_type"] == "video"]
    audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
    assert len(video) == 1 and len(audio) == 1 and len(info["streams"]) == 2
    v = video[0]
    assert (v["codec_name"], v["pix_fmt"], v["width"], v["height"]) == ("h264", "yuv420p", 128, 128)
    assert v["avg_frame_rate"] == "25/1"
    assert int(v["nb_frames"]) == 50
    assert audio[0]["codec_name"] == "aac"
    assert abs(float(audio[0]["duration"]) - 2.0) < 1 / 25 + 0.05
    assert abs(float(info["format"]["duration"]) - 2.0) < 1 / 25 + 0.05
    assert info["format"]["tags"]["comment"] == "made by tests"

    decoded = decode_first_frame(path, 128, 128)
    assert np.abs(decoded.astype(int) - frame).mean() < 8

    # +faststart: the index (moov) precedes the media data (mdat).
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")
    assert not list(tmp_path.glob("*.part"))


def test_mp4_writer_pads_odd_sizes(tmp_path, ffprobe):
    path = tmp_path / "odd.mp4"
    frame = gradient(77, 101)
    media.write_mp4(path, np.repeat(frame[None], 10, axis=0), 25, None, 16000)
    info = media.probe(path)
    assert len(info["streams"]) == 1
    v = info["streams"][0]
    assert (v["codec_name"], v["width"], v["height"]) == ("h264", 102, 78)
    decoded = decode_first_frame(path, 78, 102)
    assert np.abs(decoded[:77, :101].astype(int) - frame).mean() < 8


def test_mp4_writer_rejects_mismatched_chunks_and_leaves_no_file(tmp_path):
    path = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match="differs"):
        with media.Mp4Writer(path, fps=25) as w:
            w.write(np.zeros((3, 32, 32, 3), np.uint8))
            w.write(np.zeros((3, 32, 48, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_mp4_writer_rejects_float_frames(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        with media.Mp4Writer(tmp_path / "f.mp4") as w:
            w.write(np.zeros((2, 8, 8, 3), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_mp4_writer_without_frames_fails(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        with media.Mp4Writer(tmp_path / "empty.mp4"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_mp4_writer_reports_ffmpeg_failure(tmp_path):
    # An unknown x264 preset makes ffmpeg exit; the error carries its stderr.
    with pytest.raises(RuntimeError, match="ffmpeg"):
        with media.Mp4Writer(tmp_path / "x.mp4", preset="no-such-preset") as w:
            w.write(np.zeros((2, 16, 16, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_mp4_writer_rejects_metadata_keys_that_could_inject(tmp_path):
    with pytest.raises(ValueError, match="metadata key"):
        media.Mp4Writer(tmp_path / "m.mp4", metadata={"title=x -y": "v"})
