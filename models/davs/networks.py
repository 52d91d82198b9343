"""DAVS networks: person-ID encoder, word-ID encoders (audio and lips), decoder, and the
networks only training needs.

Zhou, Liu, Liu, Luo and Wang, "Talking Face Generation by Adversarially Disentangled
Audio-Visual Representation", AAAI 2019 (arXiv:1807.07860). Layer for layer as the
authors' PyTorch 0.2 code (Hangz-nju-cuhk/Talking-Face-Generation-DAVS, ``network/``),
so the four state dicts of ``101_DAVS_checkpoint.pth.tar`` (entries ``ID_encoder``,
``Decoder``, ``mfcc_encoder``, ``lip_feature_encoder``) load strictly once the
``module.`` prefix of ``nn.DataParallel`` is removed. Attribute names are the
checkpoint's parameter names; class names say what a network is:

    IdentityEncoder        network/IdentityEncoder.py IdentityEncoder   pid space (Sec. 3.1)
    LipFeatureEncoder      FAN_feature_extractor.py FanFusion           wid from video
    MfccEncoder            mfcc_networks.py mfcc_encoder_two            wid from audio
    Decoder                Decoder_networks.py Decoder                  pid + wid -> frame
    SequenceDiscriminator  Discriminator_networks.py Discriminator      netD_mul (6 frames)
    WordClassifier         networks.py ModelFusion                      wid -> word label
    DomainDiscriminator    networks.py discriminator_audio              audio vs. lip wid
    IdWordClassifier       Discriminator_networks.py ID_dis32           pid -> word label

Sizes: faces are RGB in [0, 1], 256x256 (the authors' ``image_size``; their loaders cut a
256 crop from the 260x260 aligned faces of ``preprocess/``); MFCC windows are 20x12
(SyncNet MFCCs, one window per video frame). Every constructor's defaults give the
published architecture; ``base_channels`` / ``feature_length`` / ``image_size`` give the
reduced variants used for quick training (``image_size`` a multiple of 64).

Quirks of the authors' code that the released weights depend on, kept on purpose:

* ``IdentityEncoder`` returns the list ``[pid, net4, net3, net2, net1]``: the 256-d
  person-ID feature and the maps after each stage (8x8, 16x16, 32x32, 64x64). The
  decoder uses ``[0]`` and the 32x32 map ``[3]`` as a skip; training feeds ``[4]`` to
  ``IdWordClassifier``. Its blocks are maxout units (max of two conv+BN branches);
  ``block1`` is named after the Python 2 literal ``str(01)``; ``dropout`` is unused.
* ``MfccEncoder``'s second branch applies ``BatchNorm1d`` to a 4-D tensor. PyTorch 0.2
  only checked the channel count and normalised over dimension 1 (what ``BatchNorm2d``
  computes); current PyTorch refuses 4-D input to ``BatchNorm1d``, so
  ``_ChannelBatchNorm1d`` restores the 0.2 behaviour. The first branch builds
  ``pool1``, ``pool2``, ``bn5`` and ``tanh`` and never uses them.
* Bilinear upsampling (decoder, FAN hourglass) aligns corners, as PyTorch 0.2 did.
* ``Decoder`` ends with ``(tanh(x) + 1) / 2``: frames in [0, 1].
* ``SequenceDiscriminator`` judges audio-visual agreement on a fixed 9x9 window (rows
  19:28, columns 11:20 of its 31x31 map: the mouth of a 256 face); its MFCC branch has
  no activations; ``conv8``, ``bn7``, ``bn8``, ``bn9`` are unused. Its second output
  always goes through a sigmoid (the authors' class crashes without ``use_sigmoid``).
* ``WordClassifier`` builds ``dis`` and ``sig`` and never uses them.
* ``IdWordClassifier`` (``ID_dis32``) reads ``self.config.disfc_length``, which its
  constructor never sets; here the frame count is the ``frames`` argument.

The authors call the decoder once per frame; frames may be folded into the batch
(``expand_identity``) with the same result in eval mode.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.davs.fan import FAN


def expand_identity(id_feature, frames):
    """``IdentityEncoder`` outputs of B faces repeated for T frames each: batch B -> B*T.

    Lets one ``Decoder`` call draw all frames of a clip (frame t of face b at b*T + t).
    For one face the result is a view: no memory per frame until the decoder concatenates.
    """
    if id_feature[0].shape[0] == 1:
        return [x.expand(frames, *x.shape[1:]) for x in id_feature]
    return [x.repeat_interleave(frames, 0) for x in id_feature]


def _dcgan_init(module):
    # The authors' ``networks.weights_init``: conv weights N(0, 0.02), BN scale N(1, 0.02).
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


# ------------------------------------------------------------------ person-ID encoder

class MaxoutBlock(nn.Module):
    """max(BN(conv_a(x)), BN(conv_b(x))): the authors' ``BasicBlock``.

    Sub-modules are named ``conv<name>_a``, ``conv<name>_b``, ``conv<name>_a_bn``,
    ``conv<name>_b_bn`` as in the checkpoint (hence ``add_module``).
    """

    def __init__(self, in_channels, out_channels, name, kernel_size=3, padding=1, stride=1,
                 init_std=None):
        super().__init__()
        self.name = name
        for branch in ("a", "b"):
            self.add_module(f"conv{name}_{branch}", nn.Conv2d(
                in_channels, out_channels, kernel_size, stride=stride, padding=padding))
        for branch in ("a", "b"):
            self.add_module(f"conv{name}_{branch}_bn", nn.BatchNorm2d(out_channels))
        # The authors' constants are 1/sqrt(9 * out_channels) (49 for the 7x7 stem).
        std = init_std if init_std is not None else (9 * out_channels) ** -0.5
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=std)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        a = self._modules[f"conv{self.name}_a_bn"](self._modules[f"conv{self.name}_a"](x))
        b = self._modules[f"conv{self.name}_b_bn"](self._modules[f"conv{self.name}_b"](x))
        return torch.max(a, b)


class IdentityEncoder(nn.Module):
    """Person-ID (pid) encoder E_p (paper Sec. 3.1): a face -> pid feature + skip maps.

    Args:
        base_channels (int, default 32): width of the first stage; the stages are
            b, 2b | 3b, 4b, 5b | 10b wide (32 | 64 ... 160 | 320 published).
        feature_length (int, default 256): pid feature length (last stage width).
        image_size (int, default 256): side of the square input face.
    """

    # (block name, in, out) for stages 1-3; stage 4 is 5x5 and ends at feature_length.
    STAGES = (
        (("11", 1, 1), ("12", 1, 1), ("13", 1, 2), ("14", 2, 2)),
        (("21", 2, 3), ("22", 3, 3), ("23", 3, 4), ("24", 4, 4), ("25", 4, 5), ("26", 5, 5)),
        (("31", 5, 10), ("32", 10, 10), ("33", 10, 10), ("34", 10, 10)),
    )

    def __init__(self, base_channels=32, feature_length=256, image_size=256):
        super().__init__()
        b, f = base_channels, feature_length
        self.config = {"base_channels": b, "feature_length": f, "image_size": image_size}
        self.image_size, self.feature_length = image_size, f
        self.block1 = MaxoutBlock(3, b, "01", kernel_size=7, stride=2, padding=3, init_std=(49 * b) ** -0.5)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.block11, self.block12, self.block13, self.block14 = self._stage(0, b)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.block21, self.block22, self.block23, self.block24, self.block25, self.block26 = self._stage(1, b)
        self.pool3 = nn.MaxPool2d(2, 2)
        self.block31, self.block32, self.block33, self.block34 = self._stage(2, b)
        self.pool4 = nn.MaxPool2d(2, 2)
        self.block41 = MaxoutBlock(10 * b, f, "41", kernel_size=5, padding=2)
        self.block42 = MaxoutBlock(f, f, "42", kernel_size=5, padding=2)
        self.dropout = nn.Dropout2d(0.5)    # built, never used by the authors
        self.avgpool = nn.AvgPool2d((image_size // 32, image_size // 32), stride=1)

    def _stage(self, index, b):
        return [MaxoutBlock(i * b, o * b, name) for name, i, o in self.STAGES[index]]

    def forward(self, x):
        """x (..., 3, S, S) in [0, 1], leading dims folded -> [pid (N, F), net4, net3, net2, net1].

        Shapes at S = 256: pid (N, 256), net4 (N, 256, 8, 8), net3 (N, 320, 16, 16),
        net2 (N, 160, 32, 32), net1 (N, 64, 64, 64).
        """
        x = x.reshape(-1, 3, self.image_size, self.image_size)
        net1 = self.pool1(self.block1(x))
        net1 = self.block14(self.block13(self.block12(self.block11(net1))))
        net2 = self.pool2(net1)
        for block in (self.block21, self.block22, self.block23, self.block24, self.block25, self.block26):
            net2 = block(net2)
        net3 = self.pool3(net2)
        net3 = self.block34(self.block33(self.block32(self.block31(net3))))
        net4 = self.block42(self.block41(self.pool4(net3)))
        pid = self.avgpool(net4).view(-1, self.feature_length)
        return [pid, net4, net3, net2, net1]


# ------------------------------------------------------------------ word-ID encoders

class LipFeatureEncoder(nn.Module):
    """Visual word-ID (wid) encoder E_v^w (Sec. 3.1): lips through FAN landmark heatmaps.

    One-stack FAN -> 68 heatmaps (S/4) -> BN, ReLU -> stride-2 conv to one S/8 map ->
    ReLU -> fc to ``feature_length``. The authors' ``FanFusion``.

    Args:
        base_channels (int, default 64): FAN stem width (hourglass 4x as wide).
        feature_length (int, default 256): wid feature length.
        image_size (int, default 256): side of the square input frames.
        num_landmarks (int, default 68): FAN heatmaps.
    """

    def __init__(self, base_channels=64, feature_length=256, image_size=256, num_landmarks=68):
        super().__init__()
        self.config = {"base_channels": base_channels, "feature_length": feature_length,
                       "image_size": image_size, "num_landmarks": num_landmarks}
        self.image_size, self.feature_length = image_size, feature_length
        self.map_size = (image_size // 8) ** 2
        self.model = FAN(base_channels, num_landmarks, feature_length, image_size)
        self.conv6 = nn.Conv2d(num_landmarks, 1, 3, 2, 1)
        self.fc = nn.Linear(self.map_size, feature_length)
        self.bn1 = nn.BatchNorm2d(num_landmarks)
        self.relu = nn.ReLU(True)

    def forward(self, x):
        """x (B, T, 3, S, S) or (B, 3, S, S) in [0, 1] -> wid features (B, T, F) (T = 1 for 4-D)."""
        net = self.model(x.reshape(-1, 3, self.image_size, self.image_size))
        net = self.conv6(self.relu(self.bn1(net)))                 # (B*T, 1, S/8, S/8)
        net = self.fc(self.relu(net.view(-1, self.map_size)))
        return net.view(x.shape[0], -1, self.feature_length)


class _ChannelBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` that, like PyTorch 0.2's, normalises any (N, C, ...) input over C.

    Same parameters and arithmetic as ``BatchNorm2d`` on 4-D input; kept a
    ``BatchNorm1d`` so the module is the authors' type.
    """

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")


class MfccConvBranch(nn.Module):
    """First MFCC branch (the authors' ``mfcc_encoder``): 20x12 -> (8b, 1, 1)."""

    def __init__(self, base_channels=64):
        super().__init__()
        b = base_channels
        self.relu = nn.LeakyReLU(0.2, True)
        self.conv1 = nn.Conv2d(1, b, kernel_size=(3, 3), stride=(3, 2), padding=(1, 2), bias=False)
        self.pool1 = nn.AvgPool2d((2, 2), 2)      # unused
        self.bn1 = nn.BatchNorm2d(b)
        self.conv2 = nn.Conv2d(b, 2 * b, (3, 3), 2, 1, bias=False)
        self.pool2 = nn.AvgPool2d(2, 2)           # unused
        self.bn2 = nn.BatchNorm2d(2 * b)
        self.conv3 = nn.Conv2d(2 * b, 4 * b, (3, 3), 1, 0, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * b)
        self.conv4 = nn.Conv2d(4 * b, 8 * b, (2, 2), 1, bias=False)
        self.bn5 = nn.BatchNorm2d(8 * b)          # unused, in the checkpoint
        self.tanh = nn.Tanh()                     # unused

    def forward(self, x):
        net = self.relu(self.bn1(self.conv1(x)))      # (N, b, 7, 7)
        net = self.relu(self.bn2(self.conv2(net)))    # (N, 2b, 4, 4)
        net = self.relu(self.bn3(self.conv3(net)))    # (N, 4b, 2, 2)
        return self.conv4(net)                        # (N, 8b, 1, 1)


class MfccTemporalBranch(nn.Module):
    """Second MFCC branch (``mfcc_encoder_alter``): full-width 3x12 kernel, then along time."""

    def __init__(self, base_channels=64):
        super().__init__()
        b = base_channels
        self.relu = nn.LeakyReLU(0.2, True)
        self.conv1 = nn.Conv2d(1, b, kernel_size=(3, 12), stride=(1, 1), padding=0, bias=False)
        self.bn1 = _ChannelBatchNorm1d(b)
        self.pool1 = nn.MaxPool2d(1, 3)
        self.conv2 = nn.Conv2d(b, 4 * b, (3, 1), 1, (1, 0), bias=False)
        self.bn2 = nn.BatchNorm2d(4 * b)
        self.pool2 = nn.MaxPool2d(1, 2)
        self.conv3 = nn.Conv2d(4 * b, 8 * b, (3, 1), 1, bias=False)

    def forward(self, x):
        net = self.pool1(self.relu(self.bn1(self.conv1(x))))    # (N, b, 6, 1)
        net = self.pool2(self.relu(self.bn2(self.conv2(net))))  # (N, 4b, 3, 1)
        return self.conv3(net)                                  # (N, 8b, 1, 1)


class MfccEncoder(nn.Module):
    """Audio word-ID encoder E_a^w (Sec. 3.1): one 20x12 MFCC window a frame -> wid.

    The authors' ``mfcc_encoder_two``: both branches concatenated, then one fc.

    Args:
        base_channels (int, default 64): first conv width (branches end at 8x, 512).
        feature_length (int, default 256): wid feature length.
    """

    MFCC_SHAPE = (20, 12)    # MFCC coefficients x 10 ms steps, fixed by the kernels

    def __init__(self, base_channels=64, feature_length=256):
        super().__init__()
        self.config = {"base_channels": base_channels, "feature_length": feature_length}
        self.feature_length = feature_length
        self.model1 = MfccConvBranch(base_channels)
        self.model2 = MfccTemporalBranch(base_channels)
        self.fc = nn.Linear(16 * base_channels, feature_length)

    def forward(self, x):
        """x (B, T, 1, 20, 12) or (B, T, 20, 12) -> wid features (B, T, F)."""
        x0 = x.reshape(-1, 1, *self.MFCC_SHAPE)
        net = torch.cat((self.model1(x0), self.model2(x0)), 1)
        net = self.fc(net.flatten(1))
        return net.view(x.shape[0], -1, self.feature_length)


# ------------------------------------------------------------------ decoder

class DecoderConvBlock(nn.Module):
    """``nums`` x (conv 3x3, BN, ReLU), named ``conv<name>_<i>`` / ``conv<name>_<i>_bn``."""

    def __init__(self, in_channels, out_channels, name, nums=3):
        super().__init__()
        self.name, self.nums = name, nums
        self.relu = nn.ReLU(True)
        for i in range(nums):
            self.add_module(f"conv{name}_{i}", nn.Conv2d(in_channels, out_channels, 3, padding=1))
            self.add_module(f"conv{name}_{i}_bn", nn.BatchNorm2d(out_channels))
            in_channels = out_channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        for i in range(self.nums):
            x = self._modules[f"conv{self.name}_{i}"](x)
            x = self.relu(self._modules[f"conv{self.name}_{i}_bn"](x))
        return x


class Decoder(nn.Module):
    """Generator G (Sec. 3.1): [pid, wid] -> one face frame in [0, 1].

    1x1 -> 4x4 transposed conv, six conv blocks each followed by 2x bilinear upsampling
    (4 -> 256), the ID encoder's 32x32 map concatenated before the fourth, then two 3x3
    transposed convs to RGB.

    Args:
        feature_length (int, default 256): pid and wid length (the input is 2x this).
        base_channels (int, default 64): width of the last block (blocks 8b, 8b, 8b, 4b,
            4b, 2b, b; 512 ... 64 published).
        id_skip_channels (int, default 160): channels of the ID encoder's 32x32 map
            (5 x its ``base_channels``).
        image_size (int, default 256): output side.
    """

    def __init__(self, feature_length=256, base_channels=64, id_skip_channels=160, image_size=256):
        super().__init__()
        b, f = base_channels, feature_length
        self.config = {"feature_length": f, "base_channels": b, "id_skip_channels": id_skip_channels,
                       "image_size": image_size}
        self.feature_length = f
        self.relu = nn.ReLU()
        seed = image_size // 64    # first map side: six 2x upsamplings reach image_size
        self.deconv1_1_new = nn.ConvTranspose2d(2 * f, 8 * b, (seed, seed), 1, 0)
        self.deconv1_1_bn = nn.BatchNorm2d(8 * b)
        self.convblock1 = DecoderConvBlock(8 * b, 8 * b, "1", nums=2)
        self.convblock2 = DecoderConvBlock(8 * b, 8 * b, "2", nums=3)
        self.convblock3 = DecoderConvBlock(8 * b, 4 * b, "3", nums=4)
        self.convblock4 = DecoderConvBlock(4 * b + id_skip_channels, 4 * b, "4", nums=4)
        self.convblock5 = DecoderConvBlock(4 * b, 2 * b, "5", nums=3)
        self.convblock6 = DecoderConvBlock(2 * b, b, "6", nums=2)
        self.conv7_1 = nn.ConvTranspose2d(b, b // 2, 3, 1, 1)
        self.conv7_1_bn = nn.BatchNorm2d(b // 2)
        self.conv7_2 = nn.ConvTranspose2d(b // 2, 3, 3, 1, 1)
        self.tanh = nn.Tanh()

    def forward(self, id_feature, mouth_feature):
        """id_feature: ``IdentityEncoder`` output (uses [0] (N, F) and [3] (N, 5b', S/8, S/8));
        mouth_feature (N, F) wid of one frame -> frame (N, 3, S, S) in [0, 1]."""
        pid = id_feature[0].reshape(-1, self.feature_length)
        wid = mouth_feature.reshape(-1, self.feature_length)
        net = self.relu(self.deconv1_1_bn(_seed_map(self.deconv1_1_new, torch.cat((pid, wid), 1))))
        blocks = (self.convblock1, self.convblock2, self.convblock3,
                  self.convblock4, self.convblock5, self.convblock6)
        for i, block in enumerate(blocks):
            if i == 3:
                net = torch.cat((id_feature[3], net), 1)
            # PyTorch 0.2's UpsamplingBilinear2d aligned corners.
            net = F.interpolate(block(net), scale_factor=2, mode="bilinear", align_corners=True)
        net = self.relu(self.conv7_1_bn(_as_conv(self.conv7_1, net)))
        return (self.tanh(_as_conv(self.conv7_2, net)) + 1) / 2.0


def _seed_map(deconv, x):
    """``deconv`` (a transposed conv with a k x k kernel, stride 1, no padding) of 1x1 maps
    ``x`` (N, C): each output pixel is a weighted sum of ``x``, one matrix product."""
    c_in, c_out, kh, kw = deconv.weight.shape
    out = x @ deconv.weight.reshape(c_in, c_out * kh * kw)
    return out.view(-1, c_out, kh, kw) + deconv.bias.view(1, c_out, 1, 1)


def _as_conv(deconv, x):
    """A stride-1 transposed conv run as the equivalent ordinary conv (flipped, transposed
    kernel, padding k - 1 - p): the same numbers, several times faster on the CPU."""
    k, p = deconv.kernel_size[0], deconv.padding[0]
    weight = deconv.weight.flip(2, 3).transpose(0, 1)
    return F.conv2d(x, weight, deconv.bias, padding=k - 1 - p)


# ------------------------------------------------------------------ training only

class SequenceDiscriminator(nn.Module):
    """Audio-visual GAN discriminator D_seq (``netD_mul``; ``frames=1`` gives ``netD``).

    A PatchGAN over ``frames`` stacked RGB frames, plus a second head that joins a 9x9
    mouth window of the image features with an MFCC encoding of the same frames and
    scores their agreement.

    Args:
        frames (int, default 6): frames stacked on channels (``sequence_length``).
        ndf (int, default 64): first conv width (PatchGAN 64, 128, 256, 512).
        use_sigmoid (bool, default True): sigmoid on the patch scores (the authors'
            ``no_lsgan`` default); the agreement score always has one.
        image_size (int, default 256): frame side.
        mouth_window ((top, left) or None): corner of the 9x9 window in the
            (S/8 - 1)-sized feature map; None: (19, 11) at 256, scaled (and kept inside
            the map) for other sizes.
    """

    def __init__(self, frames=6, ndf=64, use_sigmoid=True, image_size=256, mouth_window=None):
        super().__init__()
        self.config = {"frames": frames, "ndf": ndf, "use_sigmoid": use_sigmoid,
                       "image_size": image_size, "mouth_window": mouth_window}
        self.use_sigmoid = use_sigmoid
        self.mouth_window = mouth_window or self._default_window(image_size)
        c, kw = 3 * frames, 4
        self.conv1 = nn.Conv2d(c, ndf, kernel_size=kw, stride=2, padding=1)
        self.relu = nn.LeakyReLU(0.2, True)
        self.conv2_1 = nn.Conv2d(ndf, 2 * ndf, kernel_size=kw, stride=2, padding=1, bias=False)
        self.norm_1 = nn.BatchNorm2d(2 * ndf)
        self.conv2_2 = nn.Conv2d(2 * ndf, 4 * ndf, kernel_size=kw, stride=2, padding=1, bias=False)
        self.norm_2 = nn.BatchNorm2d(4 * ndf)
        self.conv3 = nn.Conv2d(4 * ndf, 8 * ndf, kernel_size=kw, stride=1, padding=1, bias=False)
        self.norm3 = nn.BatchNorm2d(8 * ndf)
        self.conv4 = nn.Conv2d(8 * ndf, 1, kernel_size=kw, stride=1, padding=1)
        self.mfcc_conv1 = nn.Conv2d(frames, ndf, kernel_size=(3, 3), stride=(3, 2), padding=(1, 2), bias=False)
        self.mfcc_bn1 = nn.BatchNorm2d(ndf)
        self.mfcc_conv2 = nn.Conv2d(ndf, 2 * ndf, (3, 3), 2, 1, bias=False)
        self.mfcc_bn2 = nn.BatchNorm2d(2 * ndf)
        self.mfcc_conv3 = nn.Conv2d(2 * ndf, 4 * ndf, (3, 3), 1, 0, bias=False)
        self.mfcc_bn3 = nn.BatchNorm2d(4 * ndf)
        self.mfcc_conv4 = nn.Conv2d(4 * ndf, 4 * ndf, (2, 2), 1, bias=False)
        self.mfcc_bn4 = nn.BatchNorm2d(4 * ndf)
        self.conv6 = nn.Conv2d(8 * ndf, 8 * ndf, 3, 1, bias=False)
        self.conv8 = nn.Conv2d(8 * ndf, 1, 1, 1, bias=False)     # unused
        self.bn6 = nn.BatchNorm2d(8 * ndf)
        self.bn7 = nn.BatchNorm2d(8 * ndf)                       # unused
        self.bn8 = nn.BatchNorm2d(1)                             # unused
        self.bn9 = nn.BatchNorm2d(8 * ndf)                       # unused
        self.conv9 = nn.Conv2d(8 * ndf, 8 * ndf, 7, 1)
        self.fc = nn.Linear(4 * ndf + 8 * ndf, 8 * ndf)
        self.fc2 = nn.Linear(8 * ndf, 1)
        self.sig = nn.Sigmoid()
        _dcgan_init(self)

    @staticmethod
    def _default_window(image_size):
        side = image_size // 8 - 1
        if side < 9:
            raise ValueError(f"image_size {image_size} leaves a {side}x{side} map, smaller than the 9x9 window")
        return tuple(min(round(corner * side / 31), side - 9) for corner in (19, 11))

    def forward(self, input, audio):
        """input (B, 3*frames, S, S) in [0, 1], audio (B, frames, 20, 12) ->
        [patch scores (B, 1, S/8 - 2, S/8 - 2), agreement score (B, 1)]."""
        net = self.relu(self.conv1(input))
        net = self.relu(self.norm_1(self.conv2_1(net)))
        net = self.relu(self.norm_2(self.conv2_2(net)))
        net = self.relu(self.norm3(self.conv3(net)))               # (B, 8ndf, S/8 - 1, ...)
        patch = self.conv4(net)
        if self.use_sigmoid:
            patch = self.sig(patch)
        top, left = self.mouth_window
        net = self.relu(self.bn6(self.conv6(net[:, :, top:top + 9, left:left + 9])))
        mfcc = self.mfcc_bn1(self.mfcc_conv1(audio))               # no activations: the authors'
        mfcc = self.mfcc_bn2(self.mfcc_conv2(mfcc))
        mfcc = self.mfcc_bn3(self.mfcc_conv3(mfcc))
        mfcc = self.mfcc_bn4(self.mfcc_conv4(mfcc))                 # (B, 4ndf, 1, 1)
        net = torch.cat((self.relu(self.conv9(net)), mfcc), 1)
        net = self.fc2(self.fc(net.flatten(1)))
        return [patch, self.sig(net)]


class WordClassifier(nn.Module):
    """Word classifier on wid sequences (``ModelFusion``), shared by audio and lips.

    Args:
        frames (int, default 12): wid features per clip (``pred_length``).
        feature_length (int, default 256): wid length.
        hidden (int, default 512): hidden fc width.
        num_words (int, default 500): LRW vocabulary.
    """

    def __init__(self, frames=12, feature_length=256, hidden=512, num_words=500):
        super().__init__()
        self.config = {"frames": frames, "feature_length": feature_length, "hidden": hidden,
                       "num_words": num_words}
        self.in_features = frames * feature_length
        self.fc_1 = nn.Linear(self.in_features, hidden)
        self.fc_2 = nn.Linear(hidden, num_words)
        self.relu = nn.ReLU(True)
        self.sig = nn.Sigmoid()              # unused
        self.dis = nn.Linear(hidden, 1)      # unused, in the authors' checkpoints
        nn.init.normal_(self.fc_1.weight, 0, 0.0001)    # the authors' init when not resuming
        nn.init.zeros_(self.fc_1.bias)

    def forward(self, x):
        """x (B, frames, F) -> word logits (B, num_words)."""
        return self.fc_2(self.relu(self.fc_1(x.reshape(-1, self.in_features))))


class DomainDiscriminator(nn.Module):
    """Tells audio wid from lip wid (``discriminator_audio``), for the adversarial loss
    that makes the two embeddings indistinguishable (Sec. 3.2).

    Args:
        feature_length (int, default 256): wid length (also the hidden width).
    """

    def __init__(self, feature_length=256):
        super().__init__()
        self.config = {"feature_length": feature_length}
        self.feature_length = feature_length
        self.fc1 = nn.Linear(feature_length, feature_length)
        self.fc2 = nn.Linear(feature_length, 1)
        self.relu = nn.ReLU(True)
        self.sig = nn.Sigmoid()

    def forward(self, x):
        """x (..., F) -> probability of audio (N, 1), one a feature."""
        return self.sig(self.fc2(self.relu(self.fc1(x.reshape(-1, self.feature_length)))))


class IdWordClassifier(nn.Module):
    """Word classifier on the pid side (``ID_dis32``): the adversary that drives word
    information out of the person-ID encoder (Sec. 3.2, adversarial disentanglement).

    Reads the ID encoder's 64x64 stage-1 map (``[4]``) of ``frames`` frames.

    Args:
        feature_channels (int, default 64): channels of that map (2 x the ID encoder's
            ``base_channels``).
        frames (int, default 20): frames per clip (``disfc_length``).
        hidden (int, default 128): per-frame fc width.
        num_words (int, default 500): LRW vocabulary.
        image_size (int, default 256): face side (the map is S/4).
    """

    def __init__(self, feature_channels=64, frames=20, hidden=128, num_words=500, image_size=256):
        super().__init__()
        self.config = {"feature_channels": feature_channels, "frames": frames, "hidden": hidden,
                       "num_words": num_words, "image_size": image_size}
        self.feature_channels, self.frames, self.hidden = feature_channels, frames, hidden
        self.map_side = image_size // 4
        self.conv6 = nn.Conv2d(feature_channels, 1, 3, 2, 1)
        self.fc = nn.Linear((self.map_side // 2) ** 2, hidden)
        self.relu = nn.ReLU(True)
        self.dropout = nn.Dropout(0.5)
        self.fc_2 = nn.Linear(hidden * frames, num_words)
        nn.init.normal_(self.fc_2.weight, 0, 0.0001)    # the authors' init when not resuming
        nn.init.zeros_(self.fc_2.bias)
        _dcgan_init(self)

    def forward(self, x, feature=False):
        """x (B, frames*C, S/4, S/4) (or (B*frames, C, ...)) -> word logits (B, num_words).

        ``feature`` is unused, as in the authors' code.
        """
        net = self.conv6(x.reshape(-1, self.feature_channels, self.map_side, self.map_side))
        net = self.fc(self.relu(net).flatten(1))                  # (B*frames, hidden)
        net = self.dropout(net.reshape(-1, self.frames * self.hidden))
        return self.fc_2(net)
