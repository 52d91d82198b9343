"""ATVGnet's int8 path: VG-net with its convolutions quantised (``models.common.quantize``).

VG-net's ``forward`` is kept; the convolutions of its encoders, the landmark attention,
the residual generator, the up-sampling base and the two output heads become int8. Left
in fp32: the transposed convolutions (their int8 kernels are slower), the ConvGRU (a
Python loop over steps, 3 % of the work at batch 1), the landmark fc and the final
mixing of Eq. 4, which are cheap and carry the output's precision. AT-net stays fp32:
an LSTM over 12-dim features and a small CNN, under 1 % of a frame's work next to VG-net.

Calibration inputs are VG-net's own inputs in the pipeline on the bundled example photo
and voice: the pipeline runs (AT-net only) until VG-net's first call.
"""

from __future__ import annotations

import torch

from models.common import quantize
from models.types import TalkingFaceInput

# VG-net submodules made int8 (each traceable by torch.fx).
INT8_PARTS = ("image_encoder1", "image_encoder2", "landmark_encoder_stage2", "lmark_att", "lmark_feature",
              "bottle_neck", "generator1", "base", "generator_color", "generator_attention")
# Transposed convolutions stay fp32: their int8 kernels measured 3x slower than fp32 on an AVX2 CPU.
FP32_TYPES = (torch.nn.ConvTranspose2d,)
CALIBRATION_CHUNKS = 1        # pipeline chunks of VG-net inputs captured (the first: VG-net does not run)
CALIBRATION_FRAMES = 32       # frames VG-net is calibrated on, spread over those chunks


def calibration_inputs(pipe, photo, voice, chunks=CALIBRATION_CHUNKS, frames=CALIBRATION_FRAMES):
    """VG-net's inputs ``(image, landmarks (1, frames, 136), example)`` on ``photo`` + ``voice``.

    The pipeline runs until VG-net's ``chunks``-th call; every other frame of the captured
    chunks is kept, up to ``frames``, so the landmarks span the voice's syllables.
    """
    inputs = TalkingFaceInput(image=photo, audio=voice, sample_rate=pipe.sample_rate)
    captured = quantize.capture_inputs(pipe.vgnet, lambda: list(pipe.frame_chunks(inputs)), chunks)
    image, _, example = captured[0]
    landmarks = torch.cat([args[1] for args in captured], 1)
    step = max(1, landmarks.shape[1] // frames)
    return image, landmarks[:, ::step][:, :frames], example


def quantize_vgnet(pipe, photo, voice):
    """An int8 copy of ``pipe.vgnet`` (same ``forward``), calibrated on ``photo`` + ``voice``.

    The face is also shown mirrored, so that other faces fall in the calibrated ranges.
    """
    image, landmarks, example = calibration_inputs(pipe, photo, voice)
    half = landmarks.shape[1] // 2 or 1

    def calibrate(net):
        net(image, landmarks[:, :half], example)
        net(image.flip(3), landmarks[:, half:], example)

    return quantize.quantize_submodules(pipe.vgnet, INT8_PARTS, calibrate, skip=FP32_TYPES)
