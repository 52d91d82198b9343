"""PyTorch networks of the served GAN systems and their inference pipelines.

Nothing here knows about HTTP or databases; ``service`` builds on it.
"""

from models.errors import InvalidInput, NoFaceFound, TalkingFaceError, UnknownModel, WeightsMissing
from models.types import ImageCondition, Images, MotionTransferInput, PoseTransferInput, TalkingFaceInput, Video

__all__ = [
    "ImageCondition",
    "Images",
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
