"""Synthetic demo videos: speech, mouth trajectory, animation and the MP4s."""

import subprocess

import numpy as np
import pytest

from models.atvgnet import demo as atvgnet_demo
from models.common import demo, demo_data
from models.errors import TalkingFaceError
from models.metrics import lip_sync_proxy, mouth_opening
from models.perception.face import find_face
from service.media import ffmpeg_exe, probe, read_audio


@pytest.fixture(scope="module")
def grace():
    photo = demo.default_photos()["grace_hopper"]
    _, landmarks, _ = find_face(photo)
    return photo, landmarks


def decode_frames(path):
    video = next(s for s in probe(path)["streams"] if s["codec_type"] == "video")
    width, height = int(video["width"]), int(video["height"])
    cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-i", f"file:{path}",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    raw = subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width, 3)


def test_held_out_sentence_is_not_a_training_sentence():
    assert len(demo_data.SENTENCES) >= 10
    assert demo_data.HELD_OUT_SENTENCE not in demo_data.SENTENCES


def test_mouth_trajectory_follows_loudness():
    sr = 16000
    t = np.arange(2 * sr) / sr
    audio = np.zeros_like(t)
    burst = (t >= 0.8) & (t < 1.2)
    audio[burst] = 0.5 * np.sin(2 * np.pi * 220 * t[burst])
    opening = demo_data.mouth_trajectory(audio, sr, n_frames=50)
    assert opening.shape == (50,)
    assert opening.min() >= 0.0 and opening.max() <= 1.0
    assert opening[22:28].min() > 0.9  # 0.88 s .. 1.08 s: inside the burst
    assert opening[:15].max() < 0.05 and opening[37:].max() < 0.05  # silence


def test_animate_opens_the_mouth_and_leaves_the_rest(grace):
    photo, landmarks = grace
    frames = demo_data.animate(photo, landmarks, [0.0, 0.5, 1.0])
    assert frames.shape == (3, *photo.shape) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[0], photo)
    top = int(landmarks[33, 1])  # nose tip: nothing above it moves
    for frame in frames[1:]:
        np.testing.assert_array_equal(frame[:top], photo[:top])
        assert not np.array_equal(frame, photo)
    opening = mouth_opening(frames)
    assert opening[0] < opening[1] < opening[2]
    assert opening[2] - opening[0] > 0.15


def test_make_demo_videos_writes_lip_synced_clips(tmp_path, espeak_ng, ffprobe):
    photo = demo.default_photos()["grace_hopper"]
    paths = demo.make_demo_videos(tmp_path, photos={"grace": photo},
                                       sentences=["Bob bought a big blue balloon."],
                                       per_photo=1, progress=False)
    assert paths == [tmp_path / "grace_00.mp4"] and paths[0].is_file()
    kinds = {s["codec_type"]: s["codec_name"] for s in probe(paths[0])["streams"]}
    assert kinds == {"video": "h264", "audio": "aac"}

    frames = decode_frames(paths[0])
    audio = read_audio(paths[0], sample_rate=16000)
    assert abs(len(frames) - len(audio) / 16000 * 25) <= 1.0
    assert lip_sync_proxy(frames, audio, 16000) > 0.6

    mtime = paths[0].stat().st_mtime_ns  # a second run keeps the finished clip
    demo.make_demo_videos(tmp_path, photos={"grace": photo}, sentences=["Hello."],
                               per_photo=1, progress=False)
    assert paths[0].stat().st_mtime_ns == mtime


def test_speak_without_espeak_ng_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TalkingFaceError, match="install the Debian package espeak-ng"):
        demo_data.speak("Hello.", tmp_path / "hello.wav")


def test_speak_writes_a_wav(tmp_path, espeak_ng):
    path = demo_data.speak("Hello there.", tmp_path / "hello.wav", voice="en-us+f3", speed=160)
    audio = read_audio(path, sample_rate=16000)
    assert 0.3 < len(audio) / 16000 < 3.0
    assert np.abs(audio).max() > 0.05


def test_build_demo_makes_a_loadable_weights_folder(tmp_path, espeak_ng):
    from models import registry
    report = atvgnet_demo.build_demo(tmp_path / "out", work_dir=tmp_path / "work", atnet_seconds=0,
                                     vgnet_seconds=0, per_photo=1, sentences=["Hello there, how are you today?"],
                                     batch_sizes=(1, 1), width=4, ngf=8, n_blocks=1, progress=False)
    assert report["steps"] == {"atnet": 1, "vgnet": 1}
    assert set(report["example"]) == {"lip_sync", "ssim_outside_mouth", "frames"}
    assert -1 <= report["example"]["lip_sync"] <= 1 and 0 < report["example"]["ssim_outside_mouth"] <= 1
    assert registry.resolve_weights("atvgnet", tmp_path / "out") == ("project", tmp_path / "out")
    pipe = registry.load("atvgnet", weights=tmp_path / "out", device="cpu")
    assert pipe.info["weights"].startswith("demo") and pipe.vgnet.config["ngf"] == 8


def test_project_basics_keep_the_mouth_direction():
    from scipy.spatial import procrustes
    photos = demo.default_photos()
    basics = atvgnet_demo.make_basics(photos)
    S = basics["S"].astype(np.float64)
    assert S.shape == (100, 136) and np.allclose(S @ S.T, np.eye(100), atol=1e-5)
    assert basics["base_68"].shape == (68, 2) and basics["mean_shape_norm"].shape == (1, 136)
    # Opening the mouth is a change the basis keeps almost entirely.
    box, landmarks, _ = find_face(photos["grace_hopper"])
    closed = procrustes(basics["mean_shape_img"], landmarks)[1].reshape(136)
    opened = procrustes(basics["mean_shape_img"], demo_data.opened_landmarks(landmarks, 1.0))[1].reshape(136)
    change = opened - closed
    assert np.linalg.norm(S @ change) > 0.95 * np.linalg.norm(change)
