"""PyTorch networks of the served GAN systems and their inference pipelines.

Nothing here knows about HTTP or databases; ``service`` builds on it.
"""

from models.errors import InvalidInput, NoFaceFound, TalkingFaceError, UnknownModel, WeightsMissing
from models.types import MotionTransferInput, PoseTransferInput, TalkingFaceInput, Video

__all__ = [
    "InvalidInput",
    "MotionTransferInput",
    "NoFaceFound",
    "PoseTransferInput",
    "TalkingFaceError",
    "TalkingFaceInput",
    "UnknownModel",
    "Video",
    "WeightsMissing",
]
