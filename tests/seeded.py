"""Deterministic stand-in weights: every state-dict entry drawn from its own seed.

The seed of an entry is the CRC-32 of its key, so the same key gets the same values in
any process and any module that has it. Scales keep activations in a sane range through
deep networks (He-style for weights, small biases, BatchNorm statistics near identity).
Used to compare against reference outputs of the authors' code made with the same rule.
"""

import zlib

import torch


def seeded_tensor(key, like):
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    shape = like.shape
    if key.endswith("num_batches_tracked"):
        return torch.zeros_like(like)
    if key.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=gen)
    if key.endswith("running_mean"):
        return 0.1 * torch.randn(shape, generator=gen)
    if like.dim() == 1:
        # Norm scales around one, biases and norm shifts around zero.
        base = 1.0 if key.endswith(".weight") else 0.0
        return base + 0.1 * torch.randn(shape, generator=gen)
    fan_in = like[0].numel()
    return torch.randn(shape, generator=gen) * (1.0 / fan_in) ** 0.5


def seeded_state_dict(state_dict):
    """A state dict with the same keys, shapes and dtypes, filled by ``seeded_tensor``."""
    return {k: seeded_tensor(k, v).to(v.dtype) for k, v in state_dict.items()}
