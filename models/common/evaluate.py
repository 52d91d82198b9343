"""Evaluation helpers the talking-face systems share: landmarks of crops, clip scores, the loop.

Both papers score generated frames against the real ones of a prepared clip (Chen et al.,
CVPR 2019, Sec. 4; Zhou et al., AAAI 2019, Sec. 4.2). A system's ``evaluate`` module
generates the frames its own way and scores them here, so the two systems' numbers are
computed by the same code:

- PSNR and SSIM of the frames;
- LMD: mouth landmarks 48-67, from dlib on the generated frames, against the clip's own;
- CPBD sharpness of the generated frames;
- the lip-sync proxy: mouth opening on the generated frames vs the audio's loudness.

Example:

    >>> detector = functools.partial(crop_landmarks, pad=32, zoom=1)     # 256 x 256 faces
    >>> scores = score_clip(real, fake, real_mouth, audio, detector=detector)
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from models import metrics
from models.perception import face as face_lib

__all__ = ["CROP_PAD", "crop_landmarks", "evaluate_clips", "mouth_landmarks", "score_clip"]

CROP_PAD = 48  # border around a tight 128 x 128 face crop (ATVGnet's) before detection
MOUTH = slice(48, 68)  # the 20 mouth points of the 68-point layout


def crop_landmarks(frame, pad=CROP_PAD, zoom=2):
    """dlib's 68 landmarks of an aligned face crop (ATVGnet's 128x128 by default), or None.

    The face fills the crop edge to edge, where dlib's detector rarely fires; the crop is
    framed with a replicated border of ``pad`` pixels and scaled by ``zoom`` first.
    """
    import cv2

    framed = cv2.copyMakeBorder(np.ascontiguousarray(frame), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    if zoom != 1:
        framed = cv2.resize(framed, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
    boxes = face_lib.detect_faces(framed)
    if not boxes:
        return None
    return face_lib.landmarks68(framed, boxes[0]) / zoom - pad


def mouth_landmarks(frames, detector=crop_landmarks) -> np.ndarray:
    """(T, 20, 2) mouth landmarks (points 48-67) of each frame, NaN where no face was found.

    Args:
        frames: uint8 (T, H, W, 3) frames.
        detector (callable, defaults to `crop_landmarks`): one frame -> (68, 2) or None.
    """
    out = np.full((len(frames), 20, 2), np.nan, np.float32)
    for i, frame in enumerate(frames):
        landmarks = detector(frame)
        if landmarks is not None:
            out[i] = landmarks[MOUTH]
    return out


def score_clip(real, fake, real_mouth, audio, sample_rate=16000, fps=25, detector=crop_landmarks) -> dict:
    """PSNR, SSIM, LMD, CPBD and the lip-sync proxy of generated frames against real ones.

    Args:
        real, fake: uint8 (T, H, W, 3) frames of the same size.
        real_mouth: (T, 20, 2) mouth landmarks of the real frames, in the frames' pixels.
        audio: mono float32 audio going with the frames.
        sample_rate (`int`, defaults to 16000), fps (`int`, defaults to 25): of ``audio``
            and the frames.
        detector (callable, defaults to `crop_landmarks`): finds the 68 landmarks of one
            generated frame (or None); LMD leaves out the frames where it finds none.

    Returns:
        `dict`: ``psnr``, ``ssim``, ``lmd``, ``cpbd``, ``lip_sync`` and ``frames``.
    """
    fake_mouth = mouth_landmarks(fake, detector)
    seen = ~np.isnan(fake_mouth).any(axis=(1, 2))
    gray = [np.asarray(face_lib.to_gray(f)) for f in fake]
    return {
        "psnr": metrics.psnr(real, fake),
        "ssim": float(np.mean([metrics.ssim(r, f) for r, f in zip(real, fake)])),
        "lmd": metrics.lmd(real_mouth[seen], fake_mouth[seen]) if seen.any() else float("nan"),
        "cpbd": float(np.mean([metrics.cpbd(g) for g in gray])),
        "lip_sync": metrics.lip_sync_proxy(fake, audio, sample_rate, fps, detector=detector),
        "frames": len(fake),
    }


def evaluate_clips(names: Sequence[str], score: Callable[[str], dict],
                   progress: Callable[[int, int], None] | None = None) -> dict[str, dict]:
    """{clip name: ``score(name)``} in the order of ``names``, reporting ``progress(done, total)``.

    The clips are scored one at a time, so memory holds one clip's frames at most.
    """
    results = {}
    for i, name in enumerate(names):
        results[name] = score(name)
        if progress:
            progress(i + 1, len(names))
    return results
