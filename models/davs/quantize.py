"""DAVS's int8 path: the decoder and the person-ID encoder quantised (``models.common.quantize``).

The decoder's ``forward`` reads its transposed convolutions' weights directly
(``_seed_map``, ``_as_conv``), which ``torch.fx`` cannot trace, so ``Int8Decoder`` holds the
same arithmetic in traceable parts: the 1x1 -> 4x4 seed map stays fp32 (a matrix
product, 2 % of a frame); the six conv blocks with their bilinear 2x up-samplings, the
identity skip and the two stride-1 transposed convolutions, written as the ordinary
convolutions they equal, become one int8 graph; the ``(tanh + 1) / 2`` output stays fp32.
The person-ID encoder is traced whole. The word-ID encoders stay fp32: they are small.

Calibration inputs are the networks' inputs in the pipeline on the bundled example
photo and voice (audio mode, no fine-tuning): the identity image A, also mirrored,
darkened and brightened so that other faces' features fall in the calibrated ranges, and
the word features of frames spread over the voice.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.common import quantize
from models.davs import audio as davs_audio
from models.davs.networks import Decoder, expand_identity

CALIBRATION_FRAMES = 32       # frames of the example's voice the decoder is calibrated on


def conv_from_transposed(deconv: nn.ConvTranspose2d) -> nn.Conv2d:
    """The ordinary convolution equal to a stride-1 transposed one (flipped, transposed
    kernel, padding k - 1 - p), as ``models.davs.networks._as_conv`` computes it."""
    k, p = deconv.kernel_size[0], deconv.padding[0]
    conv = nn.Conv2d(deconv.in_channels, deconv.out_channels, k, padding=k - 1 - p, bias=deconv.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(deconv.weight.flip(2, 3).transpose(0, 1))
        if deconv.bias is not None:
            conv.bias.copy_(deconv.bias)
    return conv


class DecoderBody(nn.Module):
    """``Decoder`` after its seed map: blocks, up-samplings, skip and the RGB convolutions.

    ``forward(net (N, 8b, s, s), skip (N, c, S/8, S/8))`` returns the pre-``tanh`` frame, the
    numbers ``Decoder`` computes there.
    """

    def __init__(self, decoder: Decoder):
        super().__init__()
        self.blocks = nn.ModuleList([decoder.convblock1, decoder.convblock2, decoder.convblock3,
                                     decoder.convblock4, decoder.convblock5, decoder.convblock6])
        self.conv7_1 = conv_from_transposed(decoder.conv7_1)
        self.conv7_1_bn = decoder.conv7_1_bn
        self.relu = nn.ReLU()
        self.conv7_2 = conv_from_transposed(decoder.conv7_2)

    def forward(self, net, skip):
        for i, block in enumerate(self.blocks):
            if i == 3:
                net = torch.cat((skip, net), 1)
            # PyTorch 0.2's UpsamplingBilinear2d aligned corners (as Decoder.forward).
            net = F.interpolate(block(net), scale_factor=2, mode="bilinear", align_corners=True)
        net = self.relu(self.conv7_1_bn(self.conv7_1(net)))
        return self.conv7_2(net)


class Int8Decoder(nn.Module):
    """A ``Decoder`` whose body is int8; called as the decoder is: ``(id_feature, mouth_feature)``."""

    def __init__(self, decoder: Decoder, body: nn.Module):
        super().__init__()
        self.feature_length = decoder.feature_length
        self.deconv1_1_new = decoder.deconv1_1_new
        self.deconv1_1_bn = decoder.deconv1_1_bn
        self.body = body

    def seed(self, id_feature, mouth_feature):
        """The fp32 start of ``Decoder.forward``: [pid, wid] -> the first (N, 8b, s, s) map."""
        pid = id_feature[0].reshape(-1, self.feature_length)
        wid = mouth_feature.reshape(-1, self.feature_length)
        weight = self.deconv1_1_new.weight                        # (2F, 8b, s, s)
        c_in, c_out, kh, kw = weight.shape
        net = torch.cat((pid, wid), 1) @ weight.reshape(c_in, -1)
        net = net.view(-1, c_out, kh, kw) + self.deconv1_1_new.bias.view(1, c_out, 1, 1)
        return F.relu(self.deconv1_1_bn(net))

    def forward(self, id_feature, mouth_feature):
        net = self.body(self.seed(id_feature, mouth_feature), id_feature[3])
        return (torch.tanh(net) + 1) / 2.0


def identity_variants(image):
    """A and three variants of it (mirrored, darker, brighter): calibration for faces other than the example's."""
    return [image, image.flip(3), image * 0.85, (image * 1.15).clamp(0, 1)]


def calibration_inputs(pipe, photo, voice, frames=CALIBRATION_FRAMES):
    """``(identity images, [(id_feature, words) per decoder call])`` on ``photo`` + ``voice``.

    The word features are the pipeline's own (audio mode, scaled) for ``frames`` frames
    spread over the voice; each variant of A is decoded with every fourth of them.
    """
    from models.davs.pipeline import AUDIO_WORD_SCALE

    image = pipe.prepare_reference(photo).image
    audio = pipe.prepare_audio(voice, pipe.sample_rate)
    total = davs_audio.video_frame_count(len(audio), pipe.sample_rate)
    blocks = davs_audio.frame_blocks(davs_audio.syncnet_mfcc(audio, pipe.sample_rate), 0, total, pad=True)
    step = pipe.chunk_frames               # the encoder's batches of frame_chunks
    words = torch.cat([pipe.audio_words(blocks[i:i + step]) * AUDIO_WORD_SCALE for i in range(0, total, step)])
    words = words[::max(1, total // frames)][:frames]
    images = identity_variants(image)
    calls = []
    with torch.inference_mode():
        for i, variant in enumerate(images):
            some = words[i::len(images)]
            calls.append((expand_identity(pipe.id_encoder(variant), len(some)), some))
    return images, calls


def quantize_decoder(decoder: Decoder, calls) -> Int8Decoder:
    """An ``Int8Decoder`` of ``decoder``, calibrated on its inputs ``calls`` [(id_feature, words)]."""
    fp32 = Int8Decoder(decoder, DecoderBody(decoder)).eval()
    with torch.inference_mode():
        body_inputs = [(fp32.seed(features, words), features[3]) for features, words in calls]
    # The skip and the decoder's map have their own ranges: joined in fp32, then quantised together.
    return Int8Decoder(decoder, quantize.quantize_module(fp32.body, body_inputs, skip=(torch.cat,))).eval()


def quantize_networks(pipe, photo, voice):
    """Int8 copies ``(id_encoder, decoder)`` of ``pipe``'s, calibrated on ``photo`` + ``voice``."""
    images, calls = calibration_inputs(pipe, photo, voice)
    id_encoder = quantize.quantize_module(pipe.id_encoder, [(image,) for image in images])
    return id_encoder, quantize_decoder(pipe.decoder, calls)
