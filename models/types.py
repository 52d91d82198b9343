"""The inputs and outputs the pipelines speak (see DESIGN.md, pipeline contract)."""

from dataclasses import dataclass, field
from typing import Iterable, Union

import numpy as np

# A driving video: all frames at once, or chunks of frames as a stream yields them.
Frames = Union[np.ndarray, Iterable[np.ndarray]]


@dataclass
class TalkingFaceInput:
    """One face photo and one voice clip, or one driving video.

    Args:
        image: RGB photo, uint8, (H, W, 3).
        audio: mono waveform, float32 in [-1, 1]. With a ``video`` it is the video's own
            sound (muxed into the result), or None when the video has none.
        sample_rate: sampling rate of ``audio`` in Hz.
        face_index: which detected face to animate, 0 being the largest.
        video: optional driving video at 25 fps for models that read lips (DAVS): uint8
            RGB frames (T, H, W, 3), or an iterable of uint8 chunks (n, H, W, 3) for long
            videos streamed in bounded memory (``service.media.read_video`` gives one).
            An ``expected_frames`` attribute of the iterable, when it has one, sizes the
            progress reports. Models driven by audio alone use ``audio`` and ignore it.
    """

    image: np.ndarray
    audio: np.ndarray | None
    sample_rate: int
    face_index: int = 0
    video: Frames | None = None


@dataclass
class Video:
    """A generated clip.

    Attributes:
        frames: uint8, (T, H, W, 3), RGB.
        fps: frames per second.
        audio: the driving audio (or the driving video's sound), mono float32, to be
            muxed with the frames; None for a silent clip.
        sample_rate: sampling rate of ``audio``.
        info: what produced it (model, weights, device, notes for the user).
    """

    frames: np.ndarray
    fps: float
    audio: np.ndarray | None
    sample_rate: int
    info: dict = field(default_factory=dict)


@dataclass
class PoseTransferInput:
    """A photo of a person and the pose to draw them in.

    Args:
        image: RGB photo of the person, uint8, (H, W, 3).
        pose: target body keypoints, float (18, 3): (x, y, confidence) in OpenPose's
            COCO-18 order (``models.perception.pose``); confidence 0 marks a missing one.
        pose_size: (height, width) of the frame the keypoints are measured in; the
            pipeline scales them to the photo it draws.
    """

    image: np.ndarray
    pose: np.ndarray
    pose_size: tuple[int, int]


@dataclass
class MotionTransferInput:
    """A source video whose dancer's motion a target person performs.

    Args:
        video: the source video at 25 fps: uint8 RGB frames (T, H, W, 3), or an iterable of
            uint8 chunks (n, H, W, 3) (``service.media.read_video`` gives one), read once.
        audio: the source's sound, mono float32 (muxed into the result), or None.
        sample_rate: sampling rate of ``audio``.
    """

    video: Frames
    audio: np.ndarray | None
    sample_rate: int = 16000


@dataclass
class ImageCondition:
    """What an image generator is asked to draw; every field is optional.

    Args:
        text: a caption (StackGAN, GAN-INT-CLS): encoded by the model's text encoder.
        label: a class index (class-conditional models, InfoGAN's categorical code).
        vector: float32 (d,) for every image, or (n, d) one per image: a text embedding
            (StackGAN's 1024-d char-CNN-RNN embedding), InfoGAN's continuous codes.
    """

    text: str | None = None
    label: int | None = None
    vector: np.ndarray | None = None

    def given(self) -> tuple[str, ...]:
        """The kinds of condition set, in the order text, label, vector."""
        return tuple(kind for kind in ("text", "label", "vector") if getattr(self, kind) is not None)


@dataclass
class Images:
    """Images an image generator made.

    Attributes:
        images: uint8 RGB, (n, H, W, 3): the final images.
        levels: the coarse-to-fine steps of a pyramid or stacked model when asked, in
            order: [(name, uint8 (n, h, w, 3)), ...], the last level's size that of
            ``images`` or smaller; empty otherwise.
        info: what made them (model, weights, device, the condition used, ...).
    """

    images: np.ndarray
    levels: list = field(default_factory=list)
    info: dict = field(default_factory=dict)
