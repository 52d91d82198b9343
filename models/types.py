"""The inputs and outputs every talking-face pipeline speaks (see DESIGN.md, pipeline contract)."""

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TalkingFaceInput:
    """One face photo and one voice clip.

    Args:
        image: RGB photo, uint8, (H, W, 3).
        audio: mono waveform, float32 in [-1, 1].
        sample_rate: sampling rate of ``audio`` in Hz.
        face_index: which detected face to animate, 0 being the largest.
    """

    image: np.ndarray
    audio: np.ndarray
    sample_rate: int
    face_index: int = 0


@dataclass
class Video:
    """A generated clip.

    Attributes:
        frames: uint8, (T, H, W, 3), RGB.
        fps: frames per second.
        audio: the driving audio, mono float32, to be muxed with the frames.
        sample_rate: sampling rate of ``audio``.
        info: what produced it (model, weights, device, notes for the user).
    """

    frames: np.ndarray
    fps: float
    audio: np.ndarray
    sample_rate: int
    info: dict = field(default_factory=dict)
