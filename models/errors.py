"""Errors the models package raises for problems a user can fix.

Each carries a stable ``code`` so the CLI can print one line and the service can answer
``{"error": {"code", "message"}}`` with a 4xx status, never a stack trace.
"""


class TalkingFaceError(Exception):
    """Base class: a problem with the inputs or the installation, not a bug."""

    code = "invalid_input"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(TalkingFaceError):
    """An input is not what it claims to be (not an image, not audio, too short, ...)."""

    code = "invalid_input"


class NoFaceFound(TalkingFaceError):
    """The face detector found no face in the image."""

    code = "no_face"


class WeightsMissing(TalkingFaceError):
    """A checkpoint or data file a model needs is not on disk."""

    code = "weights_missing"


class UnknownModel(TalkingFaceError):
    """No model (or network) of that name is registered."""

    code = "unknown_model"
