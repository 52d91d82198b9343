"""ATVGnet dataset preparation: a folder of videos -> the prepared dataset folder.

Two 2-s talking-face videos are made from ``examples/face.jpg``: the face drifts and
zooms a little and is stretched (one) or squeezed (the other) horizontally more and
more, so that even the normalised landmarks, which ignore shift and zoom, move. One
video of a flat grey picture has no face; a text file is not a video.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.atvgnet import dataset
from models.atvgnet.features import mfcc_windows, num_frames
from models.errors import WeightsMissing
from service.media import Mp4Writer, read_audio, read_image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
N_VIDEO_FRAMES = 50  # 2 s at 25 fps


def _speech_like(seconds: float, seed: int) -> np.ndarray:
    """Noise through a few formant-like resonances, switched on and off like syllables."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    voiced = sum(np.sin(2 * np.pi * f * t + p) for f, p in ((140, 0), (280, 1), (720, 2), (1200, 3)))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    return (0.05 * (voiced + rng.standard_normal(n)) * envelope).astype(np.float32)


def _face_frames(stretch: float) -> np.ndarray:
    """(50, 288, 256, 3): the example face, drifting, zooming and being stretched
    horizontally by up to ``stretch`` (negative: squeezed)."""
    photo = read_image(EXAMPLES / "face.jpg")  # (600, 512, 3)
    photo = cv2.resize(photo, (256, 300), interpolation=cv2.INTER_AREA)
    cx, cy = 128.0, 130.0  # roughly the face centre after resizing
    frames = []
    for k in range(N_VIDEO_FRAMES):
        a = k / (N_VIDEO_FRAMES - 1)
        zoom = 1.0 + 0.05 * a
        scale = (zoom * (1.0 + stretch * a), zoom)
        shift = (3.0 * a, -2.0 * a)
        matrix = np.array([
            [scale[0], 0.0, cx + shift[0] - scale[0] * cx],
            [0.0, scale[1], cy + shift[1] - scale[1] * cy],
        ])
        frames.append(cv2.warpAffine(photo, matrix, (256, 288), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT))
    return np.stack(frames)


def _write(path: Path, frames: np.ndarray, audio: np.ndarray) -> None:
    with Mp4Writer(path, fps=25, audio=audio, sample_rate=16000) as writer:
        writer.write(frames)


@pytest.fixture(scope="module")
def videos_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    # Audio longer than the video in one, shorter in the other: both trims are exercised.
    _write(folder / "wide.mp4", _face_frames(0.25), _speech_like(2.4, seed=1))
    _write(folder / "narrow.mp4", _face_frames(-0.2), _speech_like(1.8, seed=2))
    grey = np.full((25, 128, 128, 3), 128, dtype=np.uint8)
    _write(folder / "grey.mp4", grey, _speech_like(1.0, seed=3))
    (folder / "notes.mp4").write_text("not a video, whatever the name says\n")
    return folder


@pytest.fixture(scope="module")
def prepared(videos_dir, project_basics, tmp_path_factory):
    out = tmp_path_factory.mktemp("dataset")
    manifest = dataset.prepare(videos_dir, out, basics=project_basics, workers=2, progress=False)
    return out, manifest


@pytest.fixture(scope="module")
def prepared_authors(videos_dir, reference_dir, tmp_path_factory):
    """The same videos prepared with the authors' normalisation arrays, read from their folder."""
    out = tmp_path_factory.mktemp("dataset_authors")
    manifest = dataset.prepare(videos_dir, out, basics_dir=reference_dir, workers=2, progress=False)
    return out, manifest


def _mtimes(folder: Path) -> dict[str, int]:
    return {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}


def _aspect(landmarks: np.ndarray) -> np.ndarray:
    """Eye width (outer corners 36, 45) over eye-to-mouth height, per frame.

    Points well inside the 128 crop: the authors' template puts the chin on its edge.
    """
    points = landmarks.reshape(len(landmarks), 68, 2)
    width = points[:, 45, 0] - points[:, 36, 0]
    height = points[:, 48:68, 1].mean(axis=1) - points[:, 36:48, 1].mean(axis=1)
    return width / height


def _ends(values: np.ndarray, n: int = 10) -> tuple[float, float]:
    """Means of the first and the last ``n`` values (dlib jitters from frame to frame)."""
    return float(values[:n].mean()), float(values[-n:].mean())


# ---------------------------------------------------------------------------
# manifest and arrays
# ---------------------------------------------------------------------------


def test_manifest_statuses(prepared, videos_dir):
    out, manifest = prepared
    assert manifest == dataset.load_manifest(out)
    assert (manifest["version"], manifest["fps"], manifest["sample_rate"]) == (1, 25, 16000)
    videos = manifest["videos"]
    assert {n: v["status"] for n, v in videos.items()} == {
        "wide": "ok", "narrow": "ok", "grey": "no_face", "notes": "error"}
    assert "not a video" in videos["notes"]["message"]
    assert videos["grey"]["message"] and videos["grey"]["frames"] == 0
    assert videos["wide"]["source"] == str((videos_dir / "wide.mp4").absolute())
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["narrow", "wide"]
    assert not (out / ".tmp").exists()


def test_clip_arrays_have_the_documented_shapes(prepared):
    out, manifest = prepared
    for name in ("wide", "narrow"):
        clip = dataset.load_clip(out, name)
        t = manifest["videos"][name]["frames"]
        assert t > 0
        assert clip["frames"].dtype == np.uint8 and clip["frames"].shape == (t, 128, 128, 3)
        assert clip["landmarks"].dtype == np.float32 and clip["landmarks"].shape == (t, 136)
        assert clip["mouth"].dtype == np.float32 and clip["mouth"].shape == (t, 20, 2)
        assert clip["mfcc"].dtype == np.float32 and clip["mfcc"].shape == (4 * t + 24, 12)
        assert clip["audio"].dtype == np.float32
        assert num_frames(len(clip["audio"])) == t
        assert np.all(np.isfinite(clip["landmarks"])) and np.all(np.isfinite(clip["mfcc"]))
        # The mouth lies inside the face crop, and the face is not black.
        assert 20 < clip["mouth"].mean() < 110
        assert clip["frames"].mean() > 40


def test_frame_counts_follow_the_shorter_of_video_and_audio(prepared, videos_dir):
    out, manifest = prepared
    # wide: 2.4 s of audio, 50 video frames -> the video decides.
    assert manifest["videos"]["wide"]["frames"] == N_VIDEO_FRAMES
    assert len(dataset.load_clip(out, "wide")["audio"]) == 640 * N_VIDEO_FRAMES + 720
    # narrow: 1.8 s of audio -> the audio (as decoded, AAC padding included) decides.
    narrow = manifest["videos"]["narrow"]["frames"]
    decoded = read_audio(videos_dir / "narrow.mp4")
    assert narrow == num_frames(len(decoded)) < N_VIDEO_FRAMES
    assert len(dataset.load_clip(out, "narrow")["audio"]) == len(decoded)


def test_mfcc_rows_match_the_demo_windows(prepared):
    out, manifest = prepared
    for name in ("wide", "narrow"):
        clip = dataset.load_clip(out, name)
        t = manifest["videos"][name]["frames"]
        for k in (0, 1, t // 2, t - 1):
            expected = mfcc_windows(clip["audio"], k, k + 1)[0]
            np.testing.assert_allclose(clip["mfcc"][4 * k : 4 * k + 28], expected, atol=1e-5)
        every = mfcc_windows(clip["audio"], 0, t)  # (t, 28, 12), every row of mfcc.npy
        index = 4 * np.arange(t)[:, None] + np.arange(28)[None, :]
        np.testing.assert_allclose(clip["mfcc"][index], every, atol=1e-5)


def test_landmarks_follow_the_stretch(prepared_authors):
    # The authors' normalisation basis keeps the stretch; the project's demo basis, made
    # from a few portraits, removes more of it.
    out, _ = prepared_authors
    wide = _aspect(dataset.load_clip(out, "wide")["landmarks"])
    narrow = _aspect(dataset.load_clip(out, "narrow")["landmarks"])
    # Shift and zoom are normalised away; the stretch is not, frame by frame.
    first, last = _ends(wide)
    assert last / first > 1.1
    first, last = _ends(narrow)
    assert last / first < 0.95
    assert np.corrcoef(wide, np.arange(len(wide)))[0, 1] > 0.9
    assert np.corrcoef(narrow, np.arange(len(narrow)))[0, 1] < -0.8
    # In the crop (aligned on the eyes) the widened face's mouth moves up.
    mouth_y = dataset.load_clip(out, "wide")["mouth"][:, :, 1].mean(axis=1)
    first, last = _ends(mouth_y)
    assert first - last > 2.0


def test_last_frame_is_the_normalisation_constant(prepared):
    """``idx = -1``: every clip's last landmark is the same constant."""
    out, _ = prepared
    last = [dataset.load_clip(out, n)["landmarks"][-1] for n in ("wide", "narrow")]
    np.testing.assert_allclose(last[0], last[1], atol=1e-6)


# ---------------------------------------------------------------------------
# split and PCA
# ---------------------------------------------------------------------------


def test_split_has_one_train_and_one_test_clip(prepared):
    out, manifest = prepared
    splits = {n: v["split"] for n, v in manifest["videos"].items() if v["status"] == "ok"}
    assert sorted(splits.values()) == ["test", "train"]
    assert dataset.list_clips(out, "train") + dataset.list_clips(out, "test") \
        == [n for s in ("train", "test") for n, v in splits.items() if v == s]
    assert dataset.list_clips(out) == ["narrow", "wide"]
    assert manifest["videos"]["grey"]["split"] is None


def test_pca_is_fitted_on_the_train_frames(prepared):
    out, _ = prepared
    with np.load(out / "pca.npz") as pca:
        mean, basis = pca["mean"], pca["basis"]
    assert mean.dtype == np.float32 and mean.shape == (136,)
    assert basis.dtype == np.float32 and basis.shape == (136, 136)
    np.testing.assert_allclose(basis.T @ basis, np.eye(136), atol=1e-5)

    train = np.concatenate([dataset.load_clip(out, n)["landmarks"] for n in dataset.list_clips(out, "train")])
    x5 = train.astype(np.float64) * 5.0
    np.testing.assert_allclose(mean, x5.mean(axis=0), atol=1e-6)
    variance = ((x5 - mean) @ basis).var(axis=0)
    assert np.all(np.diff(variance[:10]) <= 1e-9)  # components by descending variance
    assert variance[0] > 0
    signs = basis[np.argmax(np.abs(basis), axis=0), np.arange(136)]
    assert np.all(signs > 0)


# ---------------------------------------------------------------------------
# resuming
# ---------------------------------------------------------------------------


def test_second_run_reuses_and_redoes_only_a_deleted_clip(prepared, videos_dir, project_basics,
                                                          tmp_path, monkeypatch):
    source, manifest = prepared
    out = tmp_path / "dataset"
    shutil.copytree(source, out)  # copy2: mtimes kept
    before = {n: _mtimes(out / "videos" / n) for n in ("wide", "narrow")}
    wide_landmarks = np.load(out / "videos" / "wide" / "landmarks.npy")

    calls = []
    original = dataset._prepare_video

    def spy(source_path, name, out_dir, basics):
        calls.append(name)
        return original(source_path, name, out_dir, basics)

    monkeypatch.setattr(dataset, "_prepare_video", spy)
    again = dataset.prepare(videos_dir, out, basics=project_basics, workers=1, progress=False)
    assert again == manifest
    assert {n: _mtimes(out / "videos" / n) for n in ("wide", "narrow")} == before
    assert "wide" not in calls and "narrow" not in calls

    shutil.rmtree(out / "videos" / "wide")
    calls.clear()
    third = dataset.prepare(videos_dir, out, basics=project_basics, workers=1, progress=False)
    assert third == manifest
    assert "wide" in calls and "narrow" not in calls
    assert _mtimes(out / "videos" / "narrow") == before["narrow"]
    np.testing.assert_array_equal(np.load(out / "videos" / "wide" / "landmarks.npy"), wide_landmarks)


def test_incomplete_clip_folder_is_redone(prepared, videos_dir, project_basics, tmp_path):
    source, manifest = prepared
    out = tmp_path / "dataset"
    shutil.copytree(source, out)
    (out / "videos" / "narrow" / "mouth.npy").unlink()
    again = dataset.prepare(videos_dir, out, basics=project_basics, workers=1, progress=False)
    assert again == manifest
    assert (out / "videos" / "narrow" / "mouth.npy").is_file()


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def test_missing_basics_names_the_files(videos_dir, tmp_path):
    empty = tmp_path / "basics"
    empty.mkdir()
    with pytest.raises(WeightsMissing) as info:
        dataset.prepare(videos_dir, tmp_path / "out", basics_dir=empty, progress=False)
    for name in ("S.npy", "mean_shape_img.npy", "mean_shape_norm.npy", "base_68.npy"):
        assert name in str(info.value)
    assert not (tmp_path / "out").exists()


def test_load_clip_refuses_paths(prepared):
    out, _ = prepared
    with pytest.raises(ValueError):
        dataset.load_clip(out, "../wide")
    with pytest.raises(ValueError):
        dataset.list_clips(out, "val")
