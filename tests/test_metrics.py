"""Evaluation metrics: PSNR, SSIM, LMD, CPBD, mouth opening and the lip-sync proxy.

Expected values are worked out by hand in the tests, or come from scikit-image's SSIM.
The mouth tests run dlib on matplotlib's Grace Hopper photo and on copies of it whose
lips are parted by a warp.
"""

from __future__ import annotations

import math

import cv2
import matplotlib.cbook as cbook
import matplotlib.pyplot as plt
import numpy as np
import pytest
import skimage.data
from scipy import ndimage
from skimage.metrics import structural_similarity

from models import metrics
from models.perception import face

# ---------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut())


@pytest.fixture(scope="module")
def astronaut_gray(astronaut) -> np.ndarray:
    return cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)


@pytest.fixture(scope="module")
def grace() -> np.ndarray:
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.ascontiguousarray(plt.imread(path))


@pytest.fixture(scope="module")
def grace_landmarks(grace) -> np.ndarray:
    return face.find_face(grace)[1]


def skimage_ssim(a, b, data_range=255.0, **kwargs):
    channel_axis = -1 if np.ndim(a) == 3 else None
    return structural_similarity(
        a, b, data_range=data_range, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, channel_axis=channel_axis, **kwargs)


def gaussian_blur(gray: np.ndarray, sigma: float) -> np.ndarray:
    return np.round(ndimage.gaussian_filter(gray.astype(np.float64), sigma)).astype(np.uint8)


def open_mouth(image: np.ndarray, landmarks: np.ndarray, gap: float) -> np.ndarray:
    """Part the lips of a closed mouth by ``gap`` pixels at the middle of the mouth.

    The thin dark line between the lips (about 2 pixels) is stretched vertically into
    the gap, everything below it moves down and eases back to its place 50 pixels
    lower; the inside of the gap is shaded like an open mouth. The gap narrows to 0 at
    the mouth corners (an elliptic profile across the mouth).
    """
    if gap <= 0:
        return image.copy()
    band, reach, shade = 2.0, 50.0, 0.35
    height, width = image.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    left, right = float(landmarks[48, 0]), float(landmarks[54, 0])
    centre_x, half = (left + right) / 2, (right - left) / 2
    lip_y = float(landmarks[60:68, 1].mean())
    d = gap * np.sqrt(np.clip(1 - ((xx - centre_x) / half) ** 2, 0, 1))
    t = yy - lip_y
    source = yy.copy()
    inside = (t >= 0) & (t < d)
    source[inside] = (lip_y + t * band / np.maximum(d, 1e-6))[inside]
    below = t >= d
    shift = (d - band) * np.clip(1 - (t - d) / reach, 0, 1)
    source[below] = (yy - shift)[below]
    warped = cv2.remap(image, xx, source, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    darken = np.clip(np.minimum(t - 1, d - 1 - t) / 2, 0, 1) * (d > 3)
    warped = warped.astype(np.float32) * (1 - (1 - shade) * darken)[..., None]
    return np.round(warped).astype(np.uint8)


# ---------------------------------------------------------------------------
# PSNR
# ---------------------------------------------------------------------------


def test_psnr_of_constant_images_ten_levels_apart():
    a = np.full((16, 16, 3), 100, dtype=np.uint8)
    b = np.full((16, 16, 3), 110, dtype=np.uint8)
    # MSE = 100, sqrt = 10: 20 log10(255 / 10).
    assert metrics.psnr(a, b) == 20 * math.log10(255 / 10)
    assert metrics.psnr(b, a) == 20 * math.log10(255 / 10)


def test_psnr_does_not_wrap_uint8_and_takes_videos():
    a = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    b = np.full((3, 8, 8, 3), 250, dtype=np.uint8)  # a - b wraps to 6 in uint8
    assert metrics.psnr(a, b) == pytest.approx(20 * math.log10(255 / 250), abs=1e-12)
    # Float images in [0, 1]: one pixel of four off by 0.5 -> MSE 0.0625.
    x = np.zeros((2, 2))
    y = np.array([[0.5, 0.0], [0.0, 0.0]])
    assert metrics.psnr(x, y, data_range=1.0) == pytest.approx(20 * math.log10(1 / 0.25), abs=1e-12)


def test_psnr_identical_is_inf_and_shape_mismatch_raises():
    a = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    assert metrics.psnr(a, a.copy()) == math.inf
    with pytest.raises(ValueError):
        metrics.psnr(a, a[:7])
    with pytest.raises(ValueError):
        metrics.psnr(np.zeros((0, 3)), np.zeros((0, 3)))


# ---------------------------------------------------------------------------
# SSIM
# ---------------------------------------------------------------------------


def test_ssim_of_identical_images_is_one(astronaut):
    assert metrics.ssim(astronaut, astronaut.copy()) == pytest.approx(1.0, abs=1e-12)
    gray = astronaut[..., 0]
    assert metrics.ssim(gray, gray.copy()) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_skimage_on_random_images():
    rng = np.random.default_rng(1)
    a = rng.random((40, 53))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    assert metrics.ssim(a, b, data_range=1.0) == pytest.approx(skimage_ssim(a, b, 1.0), abs=1e-6)
    c = rng.integers(0, 256, (31, 27, 3), dtype=np.uint8)
    d = rng.integers(0, 256, (31, 27, 3), dtype=np.uint8)
    assert metrics.ssim(c, d) == pytest.approx(skimage_ssim(c, d), abs=1e-6)


def test_ssim_matches_skimage_on_a_noisy_natural_image(astronaut):
    rng = np.random.default_rng(2)
    noisy = np.clip(astronaut + rng.normal(0, 20, astronaut.shape), 0, 255).astype(np.uint8)
    ours = metrics.ssim(astronaut, noisy)
    assert ours == pytest.approx(skimage_ssim(astronaut, noisy), abs=1e-6)
    assert 0.2 < ours < 0.9
    gray_noisy = noisy[..., 1]
    assert metrics.ssim(astronaut[..., 1], gray_noisy) == pytest.approx(
        skimage_ssim(astronaut[..., 1], gray_noisy), abs=1e-6)
    _, full = skimage_ssim(astronaut, noisy, full=True)
    np.testing.assert_allclose(metrics.ssim_map(astronaut, noisy), full, atol=1e-9)


def test_masked_ssim_is_the_mean_of_the_map_over_the_region(astronaut):
    rng = np.random.default_rng(3)
    noisy = np.clip(astronaut + rng.normal(0, 25, astronaut.shape), 0, 255).astype(np.uint8)
    _, full = skimage_ssim(astronaut, noisy, full=True)
    mask = np.zeros(astronaut.shape[:2], dtype=bool)
    mask[100:220, 180:300] = True  # a box well inside the image
    assert metrics.ssim(astronaut, noisy, mask=mask) == pytest.approx(full[mask].mean(), abs=1e-6)
    outside = ~mask
    outside[:5] = outside[-5:] = False
    outside[:, :5] = outside[:, -5:] = False  # the border strip is never averaged
    assert metrics.ssim(astronaut, noisy, mask=~mask) == pytest.approx(full[outside].mean(), abs=1e-6)
    everything = np.ones(astronaut.shape[:2], dtype=bool)
    assert metrics.ssim(astronaut, noisy, mask=everything) == pytest.approx(
        metrics.ssim(astronaut, noisy), abs=1e-12)
    with pytest.raises(ValueError):
        metrics.ssim(astronaut, noisy, mask=np.zeros(astronaut.shape[:2], dtype=bool))
    with pytest.raises(ValueError):
        metrics.ssim(astronaut, noisy, mask=mask[:-1])


def test_ssim_is_lower_for_a_blurred_image_and_checks_shapes(astronaut_gray):
    mild = gaussian_blur(astronaut_gray, 1.0)
    strong = gaussian_blur(astronaut_gray, 3.0)
    assert 1.0 > metrics.ssim(astronaut_gray, mild) > metrics.ssim(astronaut_gray, strong)
    with pytest.raises(ValueError):
        metrics.ssim(astronaut_gray, astronaut_gray[:-1])
    with pytest.raises(ValueError):
        metrics.ssim(np.zeros((10, 30)), np.zeros((10, 30)))


# ---------------------------------------------------------------------------
# LMD
# ---------------------------------------------------------------------------


def _mouth(rng, frames=2) -> np.ndarray:
    return rng.uniform(100, 200, (frames, 20, 2))


def test_lmd_ignores_a_translation_of_the_whole_mouth():
    rng = np.random.default_rng(4)
    real = _mouth(rng, 3)
    shifted = real + np.array([[[7.0, -3.0]], [[-2.0, 11.0]], [[0.5, 0.25]]])
    assert metrics.lmd(real, shifted) == pytest.approx(0.0, abs=1e-9)


def test_lmd_sums_point_distances_after_centring_and_averages_frames():
    rng = np.random.default_rng(5)
    real = _mouth(rng, 2)
    fake = real.copy()
    fake[1, 7] += (3.0, 4.0)
    # Frame 1: the mean moves by (3, 4) / 20 = (0.15, 0.2). After centring the moved
    # point is off by (3, 4) - (0.15, 0.2) = 0.95 * (3, 4), distance 0.95 * 5 = 4.75;
    # each of the other 19 points is off by (0.15, 0.2), distance 0.25, 19 * 0.25 = 4.75.
    # Sum over points: 9.5. Frame 0: 0. Mean over the two frames: 4.75.
    assert metrics.lmd(real, fake) == pytest.approx(4.75, abs=1e-9)
    assert metrics.lmd(real[1:], fake[1:]) == pytest.approx(9.5, abs=1e-9)


def test_lmd_takes_points_48_to_67_of_full_landmark_sets():
    rng = np.random.default_rng(6)
    real68 = rng.uniform(0, 300, (2, 68, 2))
    fake68 = rng.uniform(0, 300, (2, 68, 2))  # every other point differs as well
    fake68[:, 48:68] = real68[:, 48:68]
    fake68[1, 48 + 7] += (3.0, 4.0)
    assert metrics.lmd(real68, fake68) == pytest.approx(4.75, abs=1e-9)
    assert metrics.lmd(real68, fake68[:, 48:68]) == pytest.approx(4.75, abs=1e-9)
    with pytest.raises(ValueError):
        metrics.lmd(real68, fake68[:1])
    with pytest.raises(ValueError):
        metrics.lmd(real68[:, :30], fake68[:, :30])


# ---------------------------------------------------------------------------
# CPBD
# ---------------------------------------------------------------------------


def _widths_by_walking(edges, image):
    """Edge widths by walking each row from every edge pixel (the rule, pixel by pixel)."""
    height, width = image.shape
    gy, gx = np.gradient(image)
    out = np.zeros(image.shape)
    for r in range(1, height - 1):
        for c in range(1, width - 1):
            if not edges[r, c]:
                continue
            angle = math.degrees(math.atan2(gy[r, c], gx[r, c])) if gx[r, c] != 0 else 0.0
            angle = 45 * round(angle / 45)
            if angle == 0:
                sign = 1
            elif abs(angle) == 180:
                sign = -1
            else:
                continue
            left = 1
            while left <= 100 and c - 1 - left >= 0:
                if sign * (image[r, c - left] - image[r, c - 1 - left]) <= 0:
                    break
                left += 1
            right = 1
            while right <= 100 and c + 1 + right < width:
                if sign * (image[r, c + 1 + right] - image[r, c + right]) <= 0:
                    break
                right += 1
            out[r, c] = left + right
    return out


def test_edge_widths_of_a_hand_made_ramp():
    row = np.array([0, 0, 10, 20, 30, 40, 40, 40, 40], dtype=np.float64)
    image = np.tile(row, (3, 1))
    edges = np.zeros(image.shape, dtype=bool)
    edges[1, 3] = True
    # Every gradient points along +x (direction 0): the reference measures nothing then.
    assert not metrics.edge_widths(edges, image).any()
    image[2, 8] = 45  # a gradient with another direction, away from the ramp
    # Rising ramp from column 1 (0) to column 5 (40): 2 pixels each side of column 3.
    widths = metrics.edge_widths(edges, image)
    assert widths[1, 3] == 4
    assert np.count_nonzero(widths) == 1
    # The same ramp falling (mirrored), at the mirrored column 5: direction 180.
    mirrored = image[:, ::-1].copy()
    edges_m = edges[:, ::-1].copy()
    assert metrics.edge_widths(edges_m, mirrored)[1, 5] == 4


def test_edge_widths_equal_the_pixel_walk_on_a_natural_image(astronaut_gray):
    image = astronaut_gray[200:260, 180:270].astype(np.float64)
    edges = np.random.default_rng(7).random(image.shape) < 0.3
    expected = _widths_by_walking(edges, image)
    np.testing.assert_array_equal(metrics.edge_widths(edges, image), expected)
    assert np.count_nonzero(expected) > 100


def test_cpbd_counts_edges_as_wide_as_the_jnb_width_as_sharp():
    # Vertical bars, period 16: a rise over 5 steps (cols 1-6) and a fall over 5 steps
    # (cols 9-14). The thinned Sobel edges are the steepest columns 3 and 12, each of
    # width 5, so every measured edge has w = 5.
    period = np.array([0, 0, 4, 14, 32, 41, 45, 45, 45, 45, 41, 32, 14, 4, 0, 0], dtype=np.float64)
    bars = np.tile(np.tile(period, 8), (128, 1))
    widths = metrics.edge_widths(metrics._vertical_sobel_edges(bars), bars)
    assert set(np.unique(widths)) == {0.0, 5.0}
    assert set(np.nonzero(widths)[1] % 16) == {3, 12}
    # Contrast 45 <= 50: w_JNB = 5, P = 1 - exp(-1) = 63.2 % -> rounds to 63: all sharp.
    assert metrics.cpbd(bars.astype(np.uint8)) == 1.0
    # Contrast 90 > 50: w_JNB = 3, P = 1 - exp(-(5/3)^3.6) = 84 %: all blurred.
    assert metrics.cpbd((2 * bars).astype(np.uint8)) == 0.0


def test_cpbd_falls_as_the_image_is_blurred(astronaut_gray):
    scores = [metrics.cpbd(astronaut_gray)] + [
        metrics.cpbd(gaussian_blur(astronaut_gray, sigma)) for sigma in (1, 2, 4)]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] > scores[1] > scores[2] >= scores[3]
    assert scores[0] > 0.3 and scores[2] < 0.05


def test_cpbd_of_a_flat_or_tiny_image_is_zero(astronaut):
    assert metrics.cpbd(np.full((128, 128), 90, dtype=np.uint8)) == 0.0
    assert metrics.cpbd(np.zeros((40, 40), dtype=np.uint8)) == 0.0  # no whole 64x64 block
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    assert metrics.cpbd(astronaut) == metrics.cpbd(gray)
    with pytest.raises(ValueError):
        metrics.cpbd(np.zeros((4, 64, 64), dtype=np.uint8))


# ---------------------------------------------------------------------------
# Loudness, correlation, mouth opening, lip-sync proxy
# ---------------------------------------------------------------------------


def test_loudness_envelope_follows_a_tone_burst():
    sr, fps = 16000, 25
    t = np.arange(2 * sr) / sr
    audio = np.zeros_like(t, dtype=np.float32)
    burst = (t >= 0.8) & (t < 1.2)
    audio[burst] = 0.5 * np.sin(2 * np.pi * 440 * t[burst])
    level = metrics.loudness_envelope(audio, sr, fps=fps, n_frames=60)
    assert level.shape == (60,)
    # Frame k is centred at k / 25 s with a 40 ms window: frames 21-29 lie inside the
    # burst, RMS 0.5 / sqrt(2) -> -9.03 dBFS; frames 0-18 and 32-59 are silent.
    assert np.allclose(level[21:30], 20 * math.log10(0.5 / math.sqrt(2)), atol=0.2)
    assert np.all(level[:19] == -80.0) and np.all(level[32:] == -80.0)
    assert -80.0 < level[20] < level[21] and -80.0 < level[30] < level[29]
    assert metrics.loudness_envelope(audio, sr, fps=fps).shape == (50,)
    pcm = np.round(audio * 32767).astype(np.int16)
    np.testing.assert_allclose(metrics.loudness_envelope(pcm, sr, fps=fps, n_frames=60)[21:30],
                               level[21:30], atol=0.01)


def test_lip_sync_correlation_of_synthetic_series():
    rng = np.random.default_rng(8)
    frames = np.arange(100)
    envelope = -30 + 10 * np.sin(2 * np.pi * frames / 20)
    in_step = 0.2 + 0.05 * np.sin(2 * np.pi * frames / 20) + rng.normal(0, 0.005, 100)
    assert metrics.lip_sync_correlation(in_step, envelope) > 0.9
    half_period_late = 0.2 + 0.05 * np.sin(2 * np.pi * (frames - 10) / 20)
    assert metrics.lip_sync_correlation(half_period_late, envelope) < 0
    assert metrics.lip_sync_correlation(np.full(100, 0.3), envelope) == 0.0
    assert metrics.lip_sync_correlation(in_step, np.full(100, -80.0)) == 0.0
    with_gaps = in_step.copy()
    with_gaps[[5, 40, 41]] = np.nan
    assert metrics.lip_sync_correlation(with_gaps, envelope) > 0.9
    assert metrics.lip_sync_correlation(np.full(100, np.nan), envelope) == 0.0
    with pytest.raises(ValueError):
        metrics.lip_sync_correlation(in_step, envelope[:-1])


def test_lip_sync_correlation_smooths_over_three_frames():
    # Spikes one frame apart: unsmoothed r would be -1/5. Smoothed: x = (0,1,1,1,0,0),
    # y = (0,0,1,1,1,0), both of mean 1/2; sum of products of deviations 2/4, sums of
    # squares 6/4 each -> r = 1/3.
    opening = np.array([0, 0, 3, 0, 0, 0], dtype=np.float64)
    envelope = np.array([0, 0, 0, 3, 0, 0], dtype=np.float64)
    assert metrics.lip_sync_correlation(opening, envelope) == pytest.approx(1 / 3, abs=1e-12)


def test_opening_from_hand_made_landmarks():
    points = np.zeros((68, 2))
    points[48] = (10, 50)
    points[54] = (50, 50)  # width 40
    points[[61, 62, 63], 1] = 48
    points[[67, 66, 65], 1] = (52, 56, 54)  # gaps 4, 8, 6 -> mean 6
    points[[61, 62, 63], 0] = points[[67, 66, 65], 0] = (20, 30, 40)
    assert metrics.opening_from_landmarks(points) == pytest.approx(6 / 40)
    assert metrics.opening_from_landmarks(np.stack([points, points])).shape == (2,)


def test_mouth_opening_fills_frames_without_a_face():
    def detector(frame):
        value = int(frame[0, 0, 0])
        if value == 0:
            return None
        points = np.zeros((68, 2))
        points[54] = (100, 0)
        points[[67, 66, 65], 1] = value
        return points

    frames = np.zeros((5, 4, 4, 3), dtype=np.uint8)
    frames[:, 0, 0, 0] = (0, 10, 0, 20, 0)
    np.testing.assert_allclose(metrics.mouth_opening(frames, detector=detector), [0.1, 0.1, 0.1, 0.2, 0.2])
    nobody = metrics.mouth_opening(np.zeros((3, 4, 4, 3), dtype=np.uint8), detector=lambda f: None)
    assert np.all(np.isnan(nobody))


def test_mouth_opening_sees_parted_lips(grace, grace_landmarks):
    frames = np.stack([grace, open_mouth(grace, grace_landmarks, 8), open_mouth(grace, grace_landmarks, 14)])
    closed, ajar, wide = metrics.mouth_opening(frames)
    assert closed < 0.05
    assert closed < ajar < wide
    assert wide > closed + 0.1


def test_lip_sync_proxy_on_a_talking_photo(grace, grace_landmarks):
    sr, fps, n = 16000, 25, 16
    openness = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / 8)  # two open-close cycles
    frames = np.stack([open_mouth(grace, grace_landmarks, 14 * o) for o in openness])
    t = np.arange(n * sr // fps) / sr
    amplitude = 0.01 + 0.5 * np.interp(t * fps, np.arange(n), openness)
    audio = (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    assert metrics.lip_sync_proxy(frames, audio, sr, fps=fps) > 0.8
    late = np.roll(audio, 4 * sr // fps)  # half a cycle late
    assert metrics.lip_sync_proxy(frames, late, sr, fps=fps) < 0


# ---------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------


def test_format_table_rows_columns_and_mean():
    table = metrics.format_table(
        {"a.mp4": {"psnr": 30.0, "ssim": 0.5}, "b.mp4": {"psnr": math.inf, "lmd": 2.25}},
        add_mean=True)
    lines = table.splitlines()
    assert lines[0].split() == ["clip", "psnr", "ssim", "lmd"]
    assert lines[1].split() == ["a.mp4", "30.0000", "0.5000", "-"]
    assert lines[2].split() == ["b.mp4", "inf", "-", "2.2500"]
    assert lines[3].split() == ["mean", "30.0000", "0.5000", "2.2500"]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert metrics.format_table({}) == "clip"
