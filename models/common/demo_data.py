"""Synthetic talking-face videos for training small demo weights without downloads.

Two public-domain portraits ship inside installed packages: scikit-image's
``skimage.data.astronaut()`` (Eileen Collins, NASA) and matplotlib's ``grace_hopper.jpg``.
Each is animated so that its mouth opens with the loudness of English speech made by
espeak-ng: the lower lip and the chin are pushed down by a smooth, local displacement
field (the rest of the face stays put) and the gap between the inner lips is darkened.
The clips are crude, but dlib sees the mouth open and close in time with the voice,
which is what the talking-face systems learn from. ``models.common.demo`` writes them as
ordinary MP4s (H.264 + AAC, 25 fps, 16 kHz audio) that every system's dataset
preparation reads like any other videos.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from models.errors import TalkingFaceError
from models.metrics import loudness_envelope

__all__ = [
    "HELD_OUT_SENTENCE",
    "SENTENCES",
    "animate",
    "mouth_trajectory",
    "opened_landmarks",
    "speak",
]

FPS = 25
SAMPLE_RATE = 16000
ESPEAK = "espeak-ng"

# Short sentences with varied phonetics: bilabials (closed lips), open vowels, fricatives.
SENTENCES = [
    "Bob bought a big blue balloon.",
    "Open the window and let the sun shine in.",
    "My father makes maple pancakes every morning.",
    "How are you doing today?",
    "The quick brown fox jumps over the lazy dog.",
    "Please pass me the paper plate.",
    "We will meet at the station at nine.",
    "Always look on the bright side of life.",
    "Five very vivid violets grew by the fence.",
    "I ate a sandwich and an apple at noon.",
    "Mama made a warm mango pie.",
    "Who owns the old yellow boat?",
]
HELD_OUT_SENTENCE = "Thank you for watching, see you again soon."

# espeak-ng voice+variant names cycled through the clips of a photo.
VOICES = ["en-us", "en-us+f3", "en-gb", "en-us+m3", "en-gb+f2", "en-us+m7"]

# Landmarks (68-point iBUG annotation) the jaw carries down: chin 5-11, lower lip 55-59, 65-67.
JAW_POINTS = [5, 6, 7, 8, 9, 10, 11, 55, 56, 57, 58, 59, 65, 66, 67]
INNER_LIPS = list(range(60, 68))
MAX_DROP = 0.35  # lower-lip drop at opening 1, in mouth widths (corner 48 to corner 54)
GAP_COLOUR = np.array([45.0, 8.0, 12.0])  # the dark red of an open mouth, RGB


# ---------------------------------------------------------------------------------------
# Speech and mouth trajectory
# ---------------------------------------------------------------------------------------


def speak(text: str, path: str | os.PathLike, voice: str = "en-us", speed: int = 150,
          pitch: int = 50) -> Path:
    """Synthesize ``text`` with espeak-ng into a WAV file.

    Args:
        text: what to say.
        path: the WAV file to write.
        voice (str, defaults to "en-us"): espeak-ng voice, optionally ``+variant``.
        speed (int, defaults to 150): words per minute.
        pitch (int, defaults to 50): 0-99.

    Returns:
        ``path`` as a Path.

    Raises:
        TalkingFaceError: espeak-ng is not installed or failed.
    """
    exe = shutil.which(ESPEAK)
    if exe is None:
        raise TalkingFaceError(
            f"{ESPEAK} was not found on PATH: install the Debian package espeak-ng "
            "(apt-get install espeak-ng)"
        )
    path = Path(path)
    cmd = [exe, "-v", voice, "-s", str(int(speed)), "-p", str(int(pitch)), "-w", str(path), "--", text]
    done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    if done.returncode != 0 or not path.is_file():
        raise TalkingFaceError(f"{ESPEAK} failed on {text!r}: {done.stderr.decode(errors='replace')}")
    return path


def mouth_trajectory(audio: np.ndarray, sample_rate: int, n_frames: int, fps: float = FPS,
                     floor_db: float = -50.0) -> np.ndarray:
    """Mouth opening per video frame from the loudness of the audio.

    The level of each frame (``models.metrics.loudness_envelope``, dBFS) is mapped
    linearly from ``floor_db`` (closed) to the clip's loudest frame (wide open), then
    smoothed by a 3-frame moving average.

    Returns:
        float64 (n_frames,) openings in [0, 1].
    """
    level = loudness_envelope(audio, sample_rate, fps=fps, n_frames=n_frames)
    top = float(level.max()) if len(level) else floor_db
    if top <= floor_db:
        return np.zeros(len(level))
    opening = np.clip((level - floor_db) / (top - floor_db), 0.0, 1.0)
    if len(opening) >= 3:
        opening = ndimage.uniform_filter1d(opening, size=3, mode="nearest")
    return np.clip(opening, 0.0, 1.0)  # the average can stray below 0 by round-off


# ---------------------------------------------------------------------------------------
# Animation
# ---------------------------------------------------------------------------------------


def opened_landmarks(landmarks68: np.ndarray, opening: float) -> np.ndarray:
    """The 68 landmarks with the lower lip and jaw dropped as ``animate`` drops them.

    What a face in a generated clip looks like to a landmark detector at ``opening``
    (0 to 1), for building shape statistics that contain the clips' mouth motion.

    Returns:
        float64 (68, 2) landmarks.
    """
    out = np.asarray(landmarks68, dtype=np.float64).copy()
    width = np.linalg.norm(out[54] - out[48])
    out[JAW_POINTS, 1] += opening * MAX_DROP * width
    return out


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _jaw_weight(shape: tuple[int, int], points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How much of the full drop each pixel of the crop takes: 0 above the mouth line,
    1 on the lower lip and chin, fading to 0 sideways (Gaussian) and below the chin.

    Returns ``(weight, top, bottom)``: the (H, W) weight and, per column, the rows where
    the step across the mouth line starts and ends.
    """
    height, width = shape
    mouth_width = np.linalg.norm(points[54] - points[48])
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)[:, None]
    # The mouth line: midway between the inner lips, flat beyond the corners.
    middle = (points[[60, 61, 62, 63, 64]] + points[[60, 67, 66, 65, 64]]) / 2
    order = np.argsort(middle[:, 0])
    line = np.interp(xs, middle[order, 0], middle[order, 1])
    soft = max(1.5, 0.02 * mouth_width)
    top, bottom = line - soft, line + soft
    vertical = _smoothstep((ys - top) / (bottom - top))
    chin = points[8, 1]
    vertical = vertical * np.exp(-0.5 * (np.maximum(ys - chin, 0.0) / (0.5 * mouth_width)) ** 2)
    centre = points[[48, 54], 0].mean()
    sideways = np.exp(-0.5 * ((xs - centre) / (0.45 * mouth_width)) ** 2)
    return vertical * sideways, top, bottom


def _open_mouth(crop: np.ndarray, points: np.ndarray, field: tuple, opening: float) -> np.ndarray:
    """Drop the jaw of a face crop by ``opening`` and darken the gap between the lips."""
    weight, top, bottom = field
    height, width = crop.shape[:2]
    mouth_width = np.linalg.norm(points[54] - points[48])
    drop = opening * MAX_DROP * mouth_width
    if drop < 0.05:
        return crop.copy()
    # Forward map y -> y + drop * w(x, y) is increasing in y down each column (w rises
    # across the mouth, and falls below the chin slower than 1 / drop), so invert it
    # exactly column by column for cv2.remap.
    ys = np.arange(height, dtype=np.float64)
    moved = ys[:, None] + drop * weight
    map_y = np.empty((height, width), dtype=np.float32)
    for x in range(width):
        map_y[:, x] = np.interp(ys, moved[:, x], ys)
    map_x = np.broadcast_to(np.arange(width, dtype=np.float32), (height, width))
    out = cv2.remap(crop, np.ascontiguousarray(map_x), map_y, cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)

    # The gap: the inner lips after the drop, widened to cover the stretched band across
    # the mouth line, filled dark with soft edges; it fades in over small openings so
    # teeth in the photo do not vanish at once.
    def row(y):
        return int(np.clip(round(y), 0, height - 1))

    lips = points[INNER_LIPS].astype(np.float64)
    for i, (x, y) in enumerate(lips):
        c = int(np.clip(round(x), 0, width - 1))
        if i in (1, 2, 3):  # upper inner lip 61-63
            lips[i, 1] = min(y, top[c])
        elif i in (5, 6, 7):  # lower inner lip 65-67
            lips[i, 1] = max(y, bottom[c]) + drop * weight[row(bottom[c] + 1), c]
        else:  # corners 60 and 64
            lips[i, 1] = y + drop * weight[row(y), c]
    mask = np.zeros((height, width), dtype=np.float32)
    cv2.fillPoly(mask, [np.round(lips * 4).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=2)
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.7, 0.02 * mouth_width))[..., None]
    mask *= float(_smoothstep(np.asarray(opening / 0.3)))
    return out * (1.0 - mask) + GAP_COLOUR * mask


def _augment(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One small random shift, scale and brightness change for the whole clip."""
    height, width = frames.shape[1:3]
    scale = rng.uniform(0.97, 1.03)
    shift = rng.uniform(-0.02, 0.02, size=2) * (width, height)
    gain = rng.uniform(0.9, 1.1)
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), 0.0, scale)
    matrix[:, 2] += shift
    out = np.empty_like(frames)
    for t, frame in enumerate(frames):
        warped = cv2.warpAffine(frame, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT)
        out[t] = np.clip(warped.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return out


def animate(photo_rgb: np.ndarray, landmarks68: np.ndarray, openings: Sequence[float],
            rng: np.random.Generator | None = None) -> np.ndarray:
    """Frames of ``photo_rgb`` with the mouth opened by each of ``openings``.

    Args:
        photo_rgb: uint8 (H, W, 3) photo.
        landmarks68: (68, 2) landmarks of its face, (x, y) pixels.
        openings: per-frame opening, 0 (as in the photo) to 1 (lower lip dropped by
            ``MAX_DROP`` mouth widths).
        rng (optional): draws one small shift/scale/brightness change for the clip; None
            for none, so an opening of 0 returns the photo unchanged.

    Returns:
        uint8 (T, H, W, 3) frames.
    """
    photo = np.ascontiguousarray(photo_rgb, dtype=np.uint8)
    points = np.asarray(landmarks68, dtype=np.float64)
    height, width = photo.shape[:2]
    # Work on a crop around the mouth and jaw: 1.5 mouth widths beyond the jaw points.
    margin = 1.5 * np.linalg.norm(points[54] - points[48])
    region = points[list(range(2, 15)) + list(range(48, 68))]
    x0, y0 = np.maximum(np.floor(region.min(axis=0) - margin).astype(int), 0)
    x1 = min(int(np.ceil(region[:, 0].max() + margin)), width)
    y1 = min(int(np.ceil(region[:, 1].max() + margin)), height)
    crop = photo[y0:y1, x0:x1].astype(np.float32)
    local = points - (x0, y0)
    field = _jaw_weight(crop.shape[:2], local)

    frames = np.repeat(photo[None], len(openings), axis=0)
    for t, opening in enumerate(openings):
        opened = _open_mouth(crop, local, field, float(np.clip(opening, 0.0, 1.0)))
        frames[t, y0:y1, x0:x1] = np.clip(np.round(opened), 0, 255).astype(np.uint8)
    return frames if rng is None else _augment(frames, rng)

