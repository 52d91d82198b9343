"""Evaluation metrics for talking-face video: PSNR, SSIM, LMD, CPBD and a lip-sync proxy.

ATVGnet (Chen et al., "Hierarchical Cross-Modal Talking Face Generation with Dynamic
Pixel-Wise Loss", CVPR 2019) reports PSNR, SSIM, LMD (landmark distance on the mouth)
and CPBD (sharpness); their evaluation script is ``evaluation_matrix.py`` in
https://github.com/lelechen63/ATVGnet. The functions here take numpy arrays and return
floats (or, for the per-frame helpers, float64 arrays); none downloads anything.

Example:

    >>> psnr(real, fake)                      # uint8 (T, H, W, 3) or (H, W, 3)
    >>> ssim(real[0], fake[0], mask=~mouth)   # SSIM outside the mouth box
    >>> lmd(real_landmarks, fake_landmarks)   # (T, 68, 2) or (T, 20, 2)
    >>> cpbd(gray_uint8)                      # sharpness in [0, 1]
    >>> lip_sync_proxy(frames, audio, 16000)  # Pearson r of mouth opening vs loudness
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import cv2
import numpy as np
from scipy import ndimage

__all__ = [
    "cpbd",
    "edge_widths",
    "format_table",
    "lip_sync_correlation",
    "lip_sync_proxy",
    "lmd",
    "loudness_envelope",
    "mouth_opening",
    "mouth_points",
    "opening_from_landmarks",
    "psnr",
    "ssim",
    "ssim_map",
]

# SSIM constants of Wang et al. 2004: 11x11 Gaussian window (sigma 1.5), K1, K2.
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # radius int(3.5 * 1.5 + 0.5) = 5: the 11-tap window
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
SSIM_K1 = 0.01
SSIM_K2 = 0.03

# The 20 mouth points of the 68-point iBUG 300-W annotation (48-67).
MOUTH = slice(48, 68)

# CPBD constants (Narvekar & Karam 2011, and the reference implementation's values).
CPBD_BLOCK = 64  # block side in pixels
CPBD_EDGE_FRACTION = 0.002  # a block is an edge block above 0.2 % edge pixels
CPBD_BETA = 3.6  # slope of the probability-of-blur psychometric function
CPBD_MAX_MARGIN = 100  # widths are followed at most 100 pixels each side
# Just-noticeable-blur width by block contrast (max - min, 0..255): 5 up to 50, then 3.
CPBD_WIDTH_JNB = np.concatenate([5.0 * np.ones(51), 3.0 * np.ones(205)])


# ---------------------------------------------------------------------------------------
# Full-reference image metrics: PSNR and SSIM
# ---------------------------------------------------------------------------------------


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two same-shape, non-empty arrays as float64."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"the inputs differ in shape: {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("the inputs are empty")
    return a.astype(np.float64), b.astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio, ``20 log10(data_range / sqrt(MSE))`` in dB.

    The MSE is taken over every element, so a video (T, H, W, 3) gets one PSNR for the
    whole clip; the per-frame average that papers report is
    ``np.mean([psnr(x, y) for x, y in zip(a, b)])``. Values are compared as float64, so
    uint8 inputs do not wrap around (the ATVGnet script subtracts uint8 arrays).

    Args:
        a, b: images or videos of the same shape, uint8 or float, any leading dims.
        data_range (float, defaults to 255.0): peak value (1.0 for float images in [0, 1]).

    Returns:
        PSNR in dB; ``inf`` for identical inputs (the ATVGnet script returns 100).

    Raises:
        ValueError: the shapes differ or the inputs are empty.
    """
    a, b = _pair(a, b)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 20.0 * math.log10(float(data_range) / math.sqrt(mse))


def _ssim_channel(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    """SSIM map of one channel (Wang et al. 2004, eq. 13) with a Gaussian window."""

    def blur(image):
        return ndimage.gaussian_filter(image, SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")

    ux, uy = blur(x), blur(y)
    vx = blur(x * x) - ux * ux  # population (co)variances, as in the paper
    vy = blur(y * y) - uy * uy
    vxy = blur(x * y) - ux * uy
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))


def ssim_map(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """Per-pixel SSIM of two images, before any averaging.

    Wang, Bovik, Sheikh & Simoncelli, "Image Quality Assessment: From Error Visibility
    to Structural Similarity", IEEE TIP 2004: local means, variances and covariance
    under an 11x11 circular-symmetric Gaussian window (sigma 1.5, borders reflected),
    ``K1 = 0.01``, ``K2 = 0.03``, ``L = data_range``. Each channel is done on its own.

    Args:
        a, b: grey (H, W) or colour (H, W, C) images of the same shape, at least 11x11.
        data_range (float, defaults to 255.0): the dynamic range ``L``.

    Returns:
        float64 map of the input's shape; equals ``skimage.metrics.structural_similarity(
        ..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)``.
    """
    a, b = _pair(a, b)
    if a.ndim not in (2, 3):
        raise ValueError(f"SSIM takes (H, W) or (H, W, C) images, got shape {a.shape}")
    if min(a.shape[:2]) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {a.shape[:2]}")
    if a.ndim == 2:
        return _ssim_channel(a, b, float(data_range))
    channels = [_ssim_channel(a[..., c], b[..., c], float(data_range)) for c in range(a.shape[2])]
    return np.stack(channels, axis=-1)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, mask: np.ndarray | None = None) -> float:
    """Mean SSIM (Wang et al. 2004) of two grey or colour images.

    The SSIM map of each channel is averaged over the pixels at least 5 pixels (the
    window radius) from the border, then the channel means are averaged: the value of
    ``skimage.metrics.structural_similarity(a, b, data_range=..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, channel_axis=-1)``. For videos, average the
    per-frame values.

    Args:
        a, b: grey (H, W) or colour (H, W, C) images of the same shape, at least 11x11.
        data_range (float, defaults to 255.0): the dynamic range ``L``.
        mask (bool (H, W), optional): average only over these pixels (for instance
            everything outside the mouth box). Border pixels stay excluded, so an
            all-True mask gives the unmasked value.

    Returns:
        Mean SSIM, 1.0 for identical images.

    Raises:
        ValueError: shapes differ, images are too small, or the mask selects no pixel.
    """
    full = ssim_map(a, b, data_range)
    height, width = full.shape[:2]
    select = np.zeros((height, width), dtype=bool)
    r = SSIM_RADIUS
    select[r : height - r, r : width - r] = True
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (height, width):
            raise ValueError(f"the mask must have shape {(height, width)}, got {mask.shape}")
        select &= mask
        if not select.any():
            raise ValueError("the mask selects no pixel at least 5 pixels from the border")
    if full.ndim == 2:
        return float(full[select].mean())
    return float(np.mean([full[..., c][select].mean() for c in range(full.shape[2])]))


# ---------------------------------------------------------------------------------------
# Landmark distance (LMD)
# ---------------------------------------------------------------------------------------


def mouth_points(landmarks: np.ndarray) -> np.ndarray:
    """The 20 mouth points of each frame as float64 (T, 20, 2).

    Args:
        landmarks: (T, 68, 2) full landmark sets (points 48-67 are taken) or (T, 20, 2)
            mouth points; a single frame (68, 2) or (20, 2) is one frame.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim == 2:
        points = points[None]
    if points.ndim != 3 or points.shape[2] != 2 or points.shape[1] not in (20, 68):
        raise ValueError(f"landmarks must be (T, 68, 2) or (T, 20, 2), got {np.shape(landmarks)}")
    return points[:, MOUTH] if points.shape[1] == 68 else points


def lmd(real_mouth: np.ndarray, fake_mouth: np.ndarray) -> float:
    """Landmark distance on the mouth, as ATVGnet's evaluation computes it.

    Chen et al., "Lip Movements Generation at a Glance" (ECCV 2018), used in ATVGnet
    (CVPR 2019); ``evaluation_matrix.py`` of the authors' repository: the 20 mouth points
    (48-67) of each frame are centred on their own mean (removing head translation), the
    Euclidean distances between corresponding real and generated points are SUMMED over
    the 20 points, and the sums are averaged over frames. Lower is better.

    Args:
        real_mouth, fake_mouth: (T, 20, 2) or (T, 68, 2) landmarks of the same length.

    Returns:
        Mean over frames of the per-frame sum of point distances, in pixels.
    """
    real = mouth_points(real_mouth)
    fake = mouth_points(fake_mouth)
    if real.shape != fake.shape:
        raise ValueError(f"the landmark sequences differ in shape: {real.shape} and {fake.shape}")
    if real.shape[0] == 0:
        raise ValueError("the landmark sequences are empty")
    real = real - real.mean(axis=1, keepdims=True)
    fake = fake - fake.mean(axis=1, keepdims=True)
    per_frame = np.sqrt(((real - fake) ** 2).sum(axis=2)).sum(axis=1)
    return float(per_frame.mean())


# ---------------------------------------------------------------------------------------
# CPBD sharpness
# ---------------------------------------------------------------------------------------


def _vertical_sobel_edges(image: np.ndarray) -> np.ndarray:
    """Thinned vertical edges from the horizontal Sobel derivative (the reference's
    port of Octave's ``edge(im, "sobel")`` restricted to one direction)."""
    kernel = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]) / 4.0 / 2.0
    strength = np.square(ndimage.convolve(image, kernel.T))
    strength[strength <= 2.0 * np.sqrt(np.mean(strength))] = 0.0
    # Simple thinning: a local maximum across rows or across columns (zeros outside).
    padded = np.pad(strength, 1)
    centre = padded[1:-1, 1:-1]
    across_x = (centre > padded[1:-1, :-2]) & (centre > padded[1:-1, 2:])
    across_y = (centre > padded[:-2, 1:-1]) & (centre > padded[2:, 1:-1])
    return across_x | across_y


def _runs_ending_at(condition: np.ndarray) -> np.ndarray:
    """Per row, the number of consecutive True values ending at each column."""
    index = np.arange(condition.shape[1])
    last_false = np.maximum.accumulate(np.where(condition, -1, index), axis=1)
    return index - last_false


def edge_widths(edges: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Edge widths along the horizontal direction (Marziliano et al., ICIP 2002).

    For each edge pixel (not on the image border) whose gradient direction, quantised to
    45 degrees, is 0 (intensity rising to the right) or +-180 (falling), the width is the
    number of pixels from the local extremum on the left to the one on the right: the
    intensity is followed outwards, from the pixels one step past the edge's neighbours,
    while it keeps rising (0) or falling (180), at most 100 pixels a side. This is the
    loop of the CPBD reference implementation, vectorised with run lengths of the sign
    of the horizontal differences. Its quirks are kept: pixels with a zero horizontal
    ``np.gradient`` count as direction 0, and no width is measured at all when every
    pixel's direction is 0.

    Args:
        edges: bool (H, W) edge map.
        image: float (H, W) image.

    Returns:
        float64 (H, W): 0 off the measured edges, the width (2 to 202) on them.
    """
    image = np.asarray(image, dtype=np.float64)
    height, width = image.shape
    widths = np.zeros((height, width))
    if height < 3 or width < 3:
        return widths
    gy, gx = np.gradient(image)
    angles = np.where(gx != 0, np.arctan2(gy, gx) * (180 / np.pi), np.where(gy == np.pi / 2, 90.0, 0.0))
    if not np.any(angles):
        return widths
    quantised = 45 * np.round(angles / 45)

    step = np.diff(image, axis=1)  # step[:, j] = image[:, j + 1] - image[:, j]
    zero = np.zeros((height, 1), dtype=np.int64)
    sides = {}
    for name, condition in (("rise", step > 0), ("fall", step < 0)):
        left = _runs_ending_at(condition)  # run going left from step index j
        right = _runs_ending_at(condition[:, ::-1])[:, ::-1]  # run going right from j
        # Edge at column c reads the left run at step c - 2 and the right run at c + 1.
        left_at = np.concatenate([zero, left], axis=1)[:, : width - 2]  # c = 1 .. W-2
        right_at = np.concatenate([right, zero], axis=1)[:, 2:width]
        sides[name] = np.minimum(left_at, CPBD_MAX_MARGIN) + np.minimum(right_at, CPBD_MAX_MARGIN) + 2

    inner_edges = np.asarray(edges, dtype=bool)[1:-1, 1:-1]
    inner_angle = quantised[1:-1, 1:-1]
    rising = inner_edges & (inner_angle == 0)
    falling = inner_edges & (np.abs(inner_angle) == 180)
    inner = widths[1:-1, 1:-1]
    inner[rising] = sides["rise"][1:-1][rising]
    inner[falling] = sides["fall"][1:-1][falling]
    return widths


def cpbd(gray: np.ndarray) -> float:
    """Cumulative Probability of Blur Detection, a no-reference sharpness metric.

    Narvekar & Karam, "A No-Reference Image Blur Metric Based on the Cumulative
    Probability of Blur Detection (CPBD)", IEEE TIP 20(9), 2011; the algorithm of the
    widely used Python reference implementation (github.com/0x64746b/python-cpbd,
    ``cpbd.compute``, a port of the authors' MATLAB code):

    1. Canny edges (``skimage.feature.canny``, defaults) pick the edge blocks: 64x64
       blocks (the partial blocks at the right and bottom are dropped) with more than
       0.2 % edge pixels.
    2. Thinned vertical Sobel edges get widths along the horizontal direction
       (``edge_widths``).
    3. Each width ``w`` in an edge block gets a probability of blur
       ``1 - exp(-|w / w_JNB|^3.6)``, with ``w_JNB`` 5 for block contrast (max - min)
       up to 50 and 3 above.
    4. CPBD is the fraction of those edges whose probability, rounded to a percent, is
       at most 63 % (``P_JNB = 1 - 1/e``): the reference's ``sum(hist_pblur[:64])``.

    Sharper images score higher. The result equals the reference's loop; only the
    loops are vectorised. (The ATVGnet script carries an older copy with a fixed Sobel
    threshold and no thinning; this follows the reference implementation.)

    Args:
        gray: uint8 (H, W) grey image (values 0-255; an RGB (H, W, 3) uint8 image is
            converted with ``cv2.COLOR_RGB2GRAY``).

    Returns:
        CPBD in [0, 1]; 0.0 when no block is an edge block (flat images, images smaller
        than 64x64).
    """
    from skimage.feature import canny

    image = np.asarray(gray)
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    if image.ndim != 2:
        raise ValueError(f"CPBD takes a grey (H, W) image, got shape {image.shape}")
    image = image.astype(np.float64)
    rows, cols = image.shape[0] // CPBD_BLOCK, image.shape[1] // CPBD_BLOCK
    if rows == 0 or cols == 0:
        return 0.0

    # 1. Edge blocks from the Canny edges; block contrast picks the JNB width.
    def blocks(array):
        cropped = array[: rows * CPBD_BLOCK, : cols * CPBD_BLOCK]
        return cropped.reshape(rows, CPBD_BLOCK, cols, CPBD_BLOCK).swapaxes(1, 2)

    canny_edges = blocks(canny(image))
    is_edge_block = canny_edges.sum(axis=(2, 3)) > CPBD_BLOCK * CPBD_BLOCK * CPBD_EDGE_FRACTION
    pixel_blocks = blocks(image)
    contrast = (pixel_blocks.max(axis=(2, 3)) - pixel_blocks.min(axis=(2, 3))).astype(np.int64)
    jnb = CPBD_WIDTH_JNB[np.clip(contrast, 0, len(CPBD_WIDTH_JNB) - 1)]

    # 2. Widths of the Sobel edges inside the edge blocks.
    widths = blocks(edge_widths(_vertical_sobel_edges(image), image))
    measured = (widths != 0) & is_edge_block[:, :, None, None]
    if not measured.any():
        return 0.0
    ratio = widths / jnb[:, :, None, None]

    # 3-4. Probability of blur per edge; share of edges at or below the JNB probability.
    probability = 1 - np.exp(-np.abs(ratio[measured]) ** CPBD_BETA)
    percent = np.round(probability * 100)
    return float(np.count_nonzero(percent <= 63) / percent.size)


# ---------------------------------------------------------------------------------------
# Lip-sync proxy: mouth opening against loudness
# ---------------------------------------------------------------------------------------


def opening_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip opening normalised by mouth width, from 68-point landmarks.

    The opening is the mean distance between the inner-lip pairs 61-67, 62-66 and
    63-65 (Euclidean, so a tilted head reads the same as an upright one, where it is the
    vertical distance), divided by the distance between the mouth corners 48 and 54.

    Args:
        landmarks: (68, 2) or (T, 68, 2) landmarks.

    Returns:
        A float64 array of the leading shape (a 0-d array for one face).
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape[-2:] != (68, 2):
        raise ValueError(f"landmarks must be (..., 68, 2), got {points.shape}")
    upper = points[..., [61, 62, 63], :]
    lower = points[..., [67, 66, 65], :]
    opening = np.linalg.norm(upper - lower, axis=-1).mean(axis=-1)
    width = np.linalg.norm(points[..., 54, :] - points[..., 48, :], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(width > 0, opening / width, np.nan)


def _dlib_landmarks(frame: np.ndarray) -> np.ndarray | None:
    """68 landmarks of the largest face dlib finds, or None."""
    from models.perception import face as face_lib

    boxes = face_lib.detect_faces(frame)
    if not boxes:
        return None
    return face_lib.landmarks68(frame, boxes[0])


def _fill_gaps(values: np.ndarray) -> np.ndarray:
    """Forward-fill NaNs with the previous value; leading NaNs take the first value."""
    values = values.copy()
    valid = np.isfinite(values)
    if not valid.any():
        return values
    index = np.where(valid, np.arange(len(values)), 0)
    np.maximum.accumulate(index, out=index)
    first = int(np.argmax(valid))
    index[:first] = first
    return values[index]


def mouth_opening(
    frames: np.ndarray,
    detector: Callable[[np.ndarray], np.ndarray | None] | None = None,
) -> np.ndarray:
    """Per-frame inner-lip opening (``opening_from_landmarks``) of a face video.

    Landmarks come from dlib's HOG face detector and 68-point predictor
    (``models.perception.face``), largest face per frame. A frame without a face takes
    the previous frame's value (leading ones the first found); when no frame has a face
    the result is all NaN.

    Args:
        frames: uint8 (T, H, W, 3) RGB frames (or one (H, W, 3) frame).
        detector (callable, optional): ``frame -> (68, 2) landmarks or None``, in place
            of dlib.

    Returns:
        float64 (T,) openings.
    """
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got shape {frames.shape}")
    find = detector or _dlib_landmarks
    values = np.full(len(frames), np.nan)
    for t, frame in enumerate(frames):
        landmarks = find(np.ascontiguousarray(frame))
        if landmarks is not None:
            values[t] = opening_from_landmarks(landmarks)
    return _fill_gaps(values)


def loudness_envelope(
    audio: np.ndarray,
    sample_rate: int,
    fps: float = 25,
    n_frames: int | None = None,
    floor_db: float = -80.0,
) -> np.ndarray:
    """RMS level of the audio around each video frame, in dB relative to full scale.

    Frame ``k`` is the instant ``k / fps``; its window holds ``round(sample_rate / fps)``
    samples centred there, zeros outside the clip. The level is ``20 log10(RMS)``
    (a log scale, closer to how loud speech sounds and to how far the mouth opens than
    linear RMS), floored at ``floor_db`` so silence stays finite.

    Args:
        audio: 1-D mono clip; float in [-1, 1], or integer PCM (scaled by its type's
            range, int16 by 32768).
        sample_rate (int): samples per second.
        fps (float, defaults to 25): video frame rate.
        n_frames (int, optional): frames wanted; defaults to every frame whose instant
            lies inside the clip, ``ceil(len(audio) * fps / sample_rate)``.
        floor_db (float, defaults to -80.0): the lowest level returned.

    Returns:
        float64 (n_frames,) levels in dBFS.
    """
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"audio must be 1-D mono, got shape {x.shape}")
    if sample_rate <= 0 or fps <= 0:
        raise ValueError("sample_rate and fps must be positive")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64) / (float(np.iinfo(x.dtype).max) + 1.0)
    else:
        x = x.astype(np.float64)
    hop = sample_rate / fps
    if n_frames is None:
        n_frames = math.ceil(len(x) / hop)
    n_frames = int(n_frames)
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")

    window = max(1, int(round(hop)))
    starts = np.round(np.arange(n_frames) * hop).astype(np.int64) - window // 2
    ends = starts + window
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    total = energy[np.clip(ends, 0, len(x))] - energy[np.clip(starts, 0, len(x))]
    rms = np.sqrt(np.maximum(total, 0.0) / window)
    return 20.0 * np.log10(np.maximum(rms, 10.0 ** (floor_db / 20.0)))


def _smooth3(values: np.ndarray) -> np.ndarray:
    """Centred 3-frame moving average, the ends repeating the end values."""
    if len(values) < 2:
        return values.copy()
    return ndimage.uniform_filter1d(values, size=3, mode="nearest")


def lip_sync_correlation(opening: np.ndarray, envelope: np.ndarray) -> float:
    """Pearson correlation of mouth opening and loudness after 3-frame smoothing.

    A reference-free proxy for lip synchronisation (the mouth opens when the voice is
    loud): both series are smoothed by a centred 3-frame moving average, frames where
    either is NaN are dropped, and Pearson's r of the rest is returned.

    Args:
        opening: (T,) mouth openings.
        envelope: (T,) loudness levels.

    Returns:
        r in [-1, 1]; 0.0 when either series is constant or fewer than 3 frames remain.
    """
    opening = np.asarray(opening, dtype=np.float64)
    envelope = np.asarray(envelope, dtype=np.float64)
    if opening.ndim != 1 or opening.shape != envelope.shape:
        raise ValueError(f"expected two 1-D series of one length, got {opening.shape} and {envelope.shape}")
    x, y = _smooth3(opening), _smooth3(envelope)
    valid = np.isfinite(x) & np.isfinite(y)
    if np.count_nonzero(valid) < 3:
        return 0.0
    x = x[valid] - x[valid].mean()
    y = y[valid] - y[valid].mean()
    sx, sy = np.sqrt(np.sum(x * x)), np.sqrt(np.sum(y * y))
    scale_x = max(1.0, float(np.abs(opening[np.isfinite(opening)]).max()))
    scale_y = max(1.0, float(np.abs(envelope[np.isfinite(envelope)]).max()))
    if sx <= 1e-12 * scale_x * len(x) or sy <= 1e-12 * scale_y * len(y):
        return 0.0
    return float(np.clip(np.sum(x * y) / (sx * sy), -1.0, 1.0))


def lip_sync_proxy(
    frames: np.ndarray,
    audio: np.ndarray,
    sample_rate: int,
    fps: float = 25,
    detector: Callable[[np.ndarray], np.ndarray | None] | None = None,
) -> float:
    """Lip-sync proxy of a talking-face clip: ``lip_sync_correlation`` of
    ``mouth_opening(frames)`` and ``loudness_envelope(audio, n_frames=len(frames))``.

    Needs no trained sync network (unlike SyncNet scores); higher means the mouth opens
    more when the voice is louder. Audio that leads or lags the video lowers it.

    Args:
        frames: uint8 (T, H, W, 3) RGB frames.
        audio: 1-D mono clip aligned with the first frame.
        sample_rate (int): audio samples per second.
        fps (float, defaults to 25): video frame rate.
        detector (callable, optional): landmark function for ``mouth_opening``.

    Returns:
        Pearson r in [-1, 1], 0.0 when undefined.
    """
    opening = mouth_opening(frames, detector=detector)
    envelope = loudness_envelope(audio, sample_rate, fps=fps, n_frames=len(opening))
    return lip_sync_correlation(opening, envelope)


# ---------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------


def _format_value(value) -> str:
    if value is None:
        return "-"
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4f}"


def format_table(results: Mapping[str, Mapping[str, float]], add_mean: bool = False) -> str:
    """A plain-text table: one row a clip, one column a metric.

    Args:
        results: ``{row name: {metric name: value}}``, rows and columns in the order
            first seen; a missing value prints as ``-``.
        add_mean (bool, defaults to False): append a ``mean`` row, each column averaged
            over its finite values.

    Returns:
        The table, columns aligned, numbers with 4 decimals, no trailing newline.

    Example:

        >>> print(format_table({"clip1": {"psnr": 28.1, "ssim": 0.81}}))
        clip      psnr    ssim
        clip1  28.1000  0.8100
    """
    rows = {str(name): {str(k): v for k, v in values.items()} for name, values in results.items()}
    columns: list[str] = []
    for values in rows.values():
        for column in values:
            if column not in columns:
                columns.append(column)
    if add_mean and rows:
        mean_row = {}
        for column in columns:
            finite = [float(v[column]) for v in rows.values() if column in v and v[column] is not None
                      and math.isfinite(float(v[column]))]
            mean_row[column] = float(np.mean(finite)) if finite else math.nan
        rows["mean"] = mean_row

    header = ["clip", *columns]
    body = [[name, *(_format_value(values.get(c)) for c in columns)] for name, values in rows.items()]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def render(line):
        cells = [line[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(line[1:], widths[1:])]
        return "  ".join(cells).rstrip()

    return "\n".join(render(line) for line in [header, *body])
