"""The one video reader (``models.perception.video``) and the dataset driver's helpers
(``models.common.dataset``) that both systems' preparations stand on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.common import dataset as driver
from models.errors import InvalidInput, NoFaceFound
from models.perception import video
from models.perception.face import Box, FaceTracker, follow_face
from service.media import write_mp4


@pytest.fixture(scope="module")
def ramp(tmp_path_factory):
    """One second at 25 fps, each frame its own grey level, with a tone."""
    path = tmp_path_factory.mktemp("video") / "ramp.mp4"
    levels = np.linspace(0, 240, 25).astype(np.uint8)
    frames = np.repeat(levels, 32 * 48 * 3).reshape(25, 32, 48, 3)
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
    write_mp4(path, frames, 25, tone, 16000)
    return path


def test_frames_one_at_a_time_stop_at_the_limit(ramp):
    reader = video.read_video(ramp)
    chunks = np.concatenate(list(reader))
    single = list(reader.frames())
    assert len(single) == len(chunks) == 25
    assert np.array_equal(np.stack(single), chunks)
    first = list(reader.frames(limit=7))
    assert len(first) == 7 and np.array_equal(np.stack(first), chunks[:7])


def test_leaving_early_stops_the_decoder(ramp):
    frames = video.read_video(ramp).frames()
    next(frames)
    frames.close()  # ffmpeg is killed and reaped in the generator's finally


def test_sound_track_and_stream_checks(ramp, tmp_path):
    audio = video.read_video_audio(ramp)
    assert audio is not None and abs(len(audio) - 16000) < 1600
    assert video.has_video_stream(ramp)
    silent = tmp_path / "silent.mp4"
    write_mp4(silent, np.zeros((5, 16, 16, 3), np.uint8), 25, None, 16000)
    assert video.read_video_audio(silent) is None
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    assert not video.has_video_stream(text)
    with pytest.raises(InvalidInput, match="not a video"):
        video.read_video(text)
    with pytest.raises(InvalidInput, match="at most 100 pixels"):
        video.read_video(ramp, max_pixels=100)


# --------------------------------------------------------------------------- face tracking


def test_tracker_windows():
    fast = FaceTracker(box=Box(100, 100, 140, 140))
    assert fast._window((480, 640)) == (80, 80, 160, 160)          # square of 2 face sides, centred
    thorough = FaceTracker.for_datasets(box=Box(100, 100, 140, 140))
    assert thorough._window((480, 640)) == (60, 60, 180, 180)      # the box grown by one side
    assert thorough._window((150, 150)) == (60, 60, 150, 150)      # inside the frame
    with pytest.raises(ValueError):
        FaceTracker(pick="nearest")


def test_follow_face_without_a_face():
    grey = (np.full((40, 40, 3), 127, np.uint8) for _ in range(20))
    with pytest.raises(NoFaceFound, match="first 3 frames of 'grey'"):
        follow_face(grey, FaceTracker.for_datasets(), 3, "'grey'")


# --------------------------------------------------------------------------- dataset driver


def test_scan_names_are_unique_and_folder_safe(tmp_path):
    videos = tmp_path / "videos"
    for rel in ("a b.mp4", "a b.mov", "sub/c.mp4", ".hidden.mp4", "sub/.x/d.mp4"):
        (videos / rel).parent.mkdir(parents=True, exist_ok=True)
        (videos / rel).write_bytes(b"")
    names = driver.scan_videos(videos, tmp_path / "out")
    assert sorted(names) == ["a_b.mov", "a_b.mp4", "sub__c"]


def test_split_is_seeded_and_stable():
    videos = {f"clip{i}": {"status": "ok"} for i in range(10)} | {"bad": {"status": "error"}}
    driver.assign_splits(videos, 0.8, seed=1)
    train = {n for n, e in videos.items() if e["split"] == "train"}
    assert len(train) == 8 and videos["bad"]["split"] is None
    videos["clip10"] = {"status": "ok"}
    driver.assign_splits(videos, 0.8, seed=1)
    moved = train ^ {n for n, e in videos.items() if e["split"] == "train"}
    assert len(moved - {"clip10"}) <= 1


def test_prepare_clip_statuses_and_work_folder(tmp_path):
    def fine(source, work):
        (work / "x.npy").write_bytes(b"1")
        return 3, None

    def no_face(source, work):
        raise NoFaceFound("no face here")

    def broken(source, work):
        raise OSError("disk full")

    entry = driver.prepare_clip("v.mp4", "v", str(tmp_path), fine, fields={"label": "a"})
    assert entry == {"status": "ok", "message": None, "frames": 3, "split": None, "source": "v.mp4", "label": "a"}
    assert (tmp_path / "videos" / "v" / "x.npy").is_file()
    assert driver.prepare_clip("v.mp4", "w", str(tmp_path), no_face)["status"] == "no_face"
    failed = driver.prepare_clip("v.mp4", "w", str(tmp_path), broken)
    assert failed["status"] == "error" and "disk full" in failed["message"]
    assert not any((tmp_path / driver.WORK_DIR).iterdir())
    assert driver.clip_complete(tmp_path, "v", ["x.npy"]) and not driver.clip_complete(tmp_path, "w", ["x.npy"])


def test_manifest_round_trip_and_clip_names(tmp_path):
    manifest = {"version": 1, "videos": {"b": {"status": "ok", "split": "test"}, "a": {"status": "no_face"}}}
    driver.write_manifest(tmp_path, manifest)
    assert list(json.loads((tmp_path / "manifest.json").read_text())["videos"]) == ["a", "b"]
    assert driver.read_manifest(tmp_path) == manifest
    assert driver.ok_clips(manifest) == ["b"] and driver.ok_clips(manifest, "train") == []
    (tmp_path / "manifest.json").write_text('{"version": 2, "videos": {}}')
    with pytest.raises(ValueError):
        driver.read_manifest(tmp_path)
    with pytest.raises(ValueError):
        driver.clip_folder(tmp_path, "../x")


def test_frame_file_writes_one_npy(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (300, 4, 5, 3), dtype=np.uint8)
    with driver.FrameFile(tmp_path / "raw.u8", (4, 5, 3)) as store:
        for frame in frames:
            store.append(frame)
        store.save(tmp_path / "frames.npy")
    assert np.array_equal(np.load(tmp_path / "frames.npy"), frames)
    assert not (tmp_path / "raw.u8").exists()
