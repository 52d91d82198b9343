"""The evaluation helpers both talking-face systems score with (models.common.evaluate)."""

import numpy as np
import pytest

from models.common.evaluate import evaluate_clips, mouth_landmarks, score_clip


def _frames(count=4, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:64, 0:64].astype(np.float32)
    base = np.stack([x * 3, y * 3, 255 - x * 3], -1)
    return np.clip(base[None] + rng.normal(0, 5, (count, 64, 64, 3)), 0, 255).astype(np.uint8)


def _landmarks(frame):
    """A stand-in detector: a fixed 68-point layout, or no face for a black frame."""
    if frame.max() == 0:
        return None
    return np.stack([np.arange(68.0), np.arange(68.0) * 0.5], -1)


def test_mouth_landmarks_are_points_48_to_67_and_nan_without_a_face():
    frames = _frames()
    frames[2] = 0
    mouths = mouth_landmarks(frames, _landmarks)
    assert mouths.shape == (4, 20, 2) and mouths.dtype == np.float32
    np.testing.assert_array_equal(mouths[0, :, 0], np.arange(48, 68))
    assert np.isnan(mouths[2]).all() and not np.isnan(mouths[[0, 1, 3]]).any()


def test_a_clip_against_itself_scores_perfectly():
    real = _frames(6)
    audio = np.random.default_rng(1).normal(0, 0.1, 6 * 640).astype(np.float32)
    scores = score_clip(real, real.copy(), mouth_landmarks(real, _landmarks), audio, detector=_landmarks)
    assert set(scores) == {"psnr", "ssim", "lmd", "cpbd", "lip_sync", "frames"}
    assert scores["frames"] == 6 and scores["ssim"] == pytest.approx(1.0) and scores["lmd"] == 0.0
    assert scores["psnr"] > 100


def test_lmd_is_nan_when_no_generated_frame_has_a_face():
    real = _frames(3)
    fake = np.zeros_like(real)
    audio = np.zeros(3 * 640, np.float32)
    assert np.isnan(score_clip(real, fake, mouth_landmarks(real, _landmarks), audio, detector=_landmarks)["lmd"])


def test_evaluate_clips_scores_every_clip_in_order_and_reports_progress():
    calls = []
    results = evaluate_clips(["b", "a"], lambda name: {"name": name}, lambda done, total: calls.append((done, total)))
    assert list(results) == ["b", "a"] and results["a"] == {"name": "a"}
    assert calls == [(1, 2), (2, 2)]
    assert evaluate_clips([], lambda name: {}) == {}
