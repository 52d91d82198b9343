"""Which torch device a pipeline, a trainer or a worker runs on."""

import torch

from models.errors import InvalidInput


def pick_device(device="auto") -> torch.device:
    """``"auto"`` (or None): CUDA when present, else the CPU; otherwise the named device,
    refused clearly when it is CUDA and none is available."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("device 'cuda' was asked for but no CUDA device is available")
    return device
