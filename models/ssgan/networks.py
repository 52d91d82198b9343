"""S^2-GAN: Structure-GAN, Style-GAN, their discriminators and the surface-normal FCN.

Wang and Gupta, "Generative Image Modeling using Style and Structure Adversarial
Networks", ECCV 2016 (arXiv:1603.05631); reference code github.com/xiaolonw/ss-gan
(Torch7 / Lua, nngraph). Layer for layer as the Lua model definitions:

* ``StructureGenerator``: ``structure-gan/train.lua`` ``model_G``: z (100 x 1 x 1, uniform in
  [-1, 1]) -> a 72 x 72 surface-normal map, each pixel's 3-vector L2-normalised (Sec. 3.1).
* ``StructureDiscriminator``: ``structure-gan/train.lua`` ``model_D`` (72 x 72 normals -> p(real)).
* ``StyleGenerator``: ``style-gan-*/train*.lua`` ``model_G``: (z, normals 128 x 128) -> a
  128 x 128 RGB image in [-1, 1] (Sec. 3.2, Fig. 3).
* ``StyleDiscriminator``: the conditional ``model_D``: (image, normals) -> p(real).
* ``NormalFCN``: ``style-gan-fcn/train_fcn.lua`` ``model_FCN``: an image (512 x 512 in training:
  the 128 x 128 Style-GAN output upsampled 4x) -> per-pixel log-probabilities over the 40
  normal clusters of ``codebook_40.txt`` at 1/16 of its size (Sec. 3.2, Eq. 4).

The parameter names are this project's (``nn.Sequential`` indices); ``models.ssgan.convert``
maps the authors' Torch7 modules onto them in order. Torch's layer semantics are kept where
they differ from PyTorch's defaults: ``nn.Normalize(2)`` adds 1e-10 to the squared norm,
``nn.SpatialDropout`` does not rescale in training and scales by (1 - p) at test time.
Sizes other than the published ones (the demo's 32 x 32) come from ``image_size`` and the
width ``base_channels``; the defaults are the published networks.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

NOISE_DIM = 100          # -d,--noiseDim of every train.lua
STRUCTURE_SIZE = 72      # --scale of structure-gan/train.lua
STYLE_SIZE = 128         # --scale of style-gan-*/train*.lua
FCN_CLASSES = 40         # --classnum: the clusters of codebook_40.txt
NORMALIZE_EPS = 1e-10    # nn.Normalize's default eps


# ---------------------------------------------------------------------------------------
# Torch layer semantics


class TorchSpatialDropout(nn.Module):
    """``nn.SpatialDropout(p)`` of Torch7: whole channels dropped without rescaling in
    training; at test time the input is multiplied by (1 - p)."""

    def __init__(self, p=0.2):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.training:
            keep = torch.bernoulli(torch.full((x.shape[0], x.shape[1], 1, 1), 1 - self.p,
                                              device=x.device, dtype=x.dtype))
            return x * keep
        return x * (1 - self.p)


def normalize_normals(x, eps=NORMALIZE_EPS):
    """Each pixel's 3-vector divided by its L2 norm, as ``nn.Normalize(2)`` over the channel
    dimension: x / sqrt(sum x^2 + eps). (B, 3, H, W) -> (B, 3, H, W)."""
    return x / (x.pow(2).sum(dim=1, keepdim=True) + eps).sqrt()


def resample_normals(normals, size):
    """The Structure-GAN's normals at the Style-GAN's size, as ``joint-ssgan/test.lua``:
    ``nn.SpatialReSampling`` (bilinear, corners aligned), then ``nn.Normalize(2)`` per pixel."""
    if normals.shape[-1] != size or normals.shape[-2] != size:
        normals = F.interpolate(normals, size=(size, size), mode="bilinear", align_corners=True)
    return normalize_normals(normals)


def _bn_act(channels, activation):
    return [nn.BatchNorm2d(channels), activation()]


def _relu():
    return nn.ReLU(True)


def _lrelu():
    return nn.LeakyReLU(0.2, True)


# ---------------------------------------------------------------------------------------
# Structure-GAN


class StructureGenerator(nn.Module):
    """Structure-GAN generator (``structure-gan/train.lua``, ``model_G``).

    z (B, noise_dim, 1, 1) -> 9 x 9 (full conv 9 x 9) -> 18 -> (four 3 x 3 convolutions)
    -> 36 -> 3 x 3 conv -> 72 -> 5 x 5 conv -> tanh -> per-pixel L2 normalisation.

    Args:
        noise_dim (`int`, 100): length of z.
        base_channels (`int`, 64): ``nplanes``.
        image_size (`int`, 72): output side; a multiple of 8 (the first layer's kernel is
            image_size / 8, 9 for the published 72).
    """

    def __init__(self, noise_dim=NOISE_DIM, base_channels=64, image_size=STRUCTURE_SIZE):
        super().__init__()
        if image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8, got {image_size}")
        self.config = {"noise_dim": noise_dim, "base_channels": base_channels, "image_size": image_size}
        c = base_channels
        self.net = nn.Sequential(
            nn.ConvTranspose2d(noise_dim, c * 2, image_size // 8), *_bn_act(c * 2, _relu),   # hi1: 9 x 9
            nn.ConvTranspose2d(c * 2, c * 2, 4, 2, 1), *_bn_act(c * 2, _relu),               # hi2: 18
            nn.Conv2d(c * 2, c * 2, 3, 1, 1), *_bn_act(c * 2, _relu),                        # hi3
            nn.Conv2d(c * 2, c * 4, 3, 1, 1), *_bn_act(c * 4, _relu),                        # h3
            nn.Conv2d(c * 4, c * 8, 3, 1, 1), *_bn_act(c * 8, _relu),                        # h4
            nn.Conv2d(c * 8, c * 8, 3, 1, 1), *_bn_act(c * 8, _lrelu),                       # h5
            nn.ConvTranspose2d(c * 8, c * 4, 4, 2, 1), *_bn_act(c * 4, _lrelu),              # h6: 36
            nn.Conv2d(c * 4, c * 2, 3, 1, 1), *_bn_act(c * 2, _lrelu),                       # h7
            nn.ConvTranspose2d(c * 2, c, 4, 2, 1), *_bn_act(c, _lrelu),                      # h8: 72
            nn.Conv2d(c, 3, 5, 1, 2),                                                        # h9
            nn.Tanh(),
        )

    def forward(self, z):
        """z (B, noise_dim, 1, 1) -> unit surface normals (B, 3, S, S)."""
        return normalize_normals(self.net(z))


class StructureDiscriminator(nn.Module):
    """Structure-GAN discriminator (``structure-gan/train.lua``, ``model_D``): normals -> p(real) (B, 1).

    Args:
        base_channels (`int`, 64): ``nplanes``.
        image_size (`int`, 72): input side, a multiple of 8.
    """

    def __init__(self, base_channels=64, image_size=STRUCTURE_SIZE, in_channels=3):
        super().__init__()
        self.config = {"base_channels": base_channels, "image_size": image_size, "in_channels": in_channels}
        c = base_channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c, 5, 2, 2), _lrelu(),                       # dh1: / 2
            nn.Conv2d(c, c * 2, 5, 1, 2), _lrelu(),                             # dh2
            nn.Conv2d(c * 2, c * 4, 3, 2, 1), _lrelu(), TorchSpatialDropout(0.2),   # dh3: / 2
            nn.Conv2d(c * 4, c * 8, 3, 2, 1), _lrelu(), TorchSpatialDropout(0.2),   # dh4: / 2
            nn.Conv2d(c * 8, c * 2, 3, 1, 1), _lrelu(),                         # dh5
        )
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(c * 2 * (image_size // 8) ** 2, 1), nn.Sigmoid())

    def forward(self, normals):
        return self.classifier(self.features(normals).flatten(1))


# ---------------------------------------------------------------------------------------
# Style-GAN


class StyleGenerator(nn.Module):
    """Style-GAN generator (``style-gan-nofcn/train.lua`` and ``style-gan-fcn/train_gan.lua``, ``model_G``).

    The normals go through two stride-2 5 x 5 convolutions (128 -> 32), z through three full
    convolutions (1 -> 8 -> 16 -> 32); the two are concatenated (normals first, as the Lua
    ``JoinTable({r2, ri3})``), then conv / stride-2 conv / conv and three full convolutions
    back to 128, a 5 x 5 convolution and tanh.

    Args:
        noise_dim (`int`, 100): length of z.
        base_channels (`int`, 64): ``nplanes``.
        image_size (`int`, 128): output side, a multiple of 16 (z's first kernel is image_size / 16).
    """

    def __init__(self, noise_dim=NOISE_DIM, base_channels=64, image_size=STYLE_SIZE):
        super().__init__()
        if image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {image_size}")
        self.config = {"noise_dim": noise_dim, "base_channels": base_channels, "image_size": image_size}
        c = base_channels
        self.noise_branch = nn.Sequential(
            nn.ConvTranspose2d(noise_dim, c, image_size // 16), *_bn_act(c, _relu),   # hi1: 8 x 8
            nn.ConvTranspose2d(c, c, 4, 2, 1), *_bn_act(c, _relu),                    # hi2: 16
            nn.ConvTranspose2d(c, c, 4, 2, 1), *_bn_act(c, _relu),                    # hi3: 32
        )
        self.normal_branch = nn.Sequential(
            nn.Conv2d(3, c, 5, 2, 2), *_bn_act(c, _relu),                             # h1: 64
            nn.Conv2d(c, c * 2, 5, 2, 2), *_bn_act(c * 2, _relu),                     # h2: 32
        )
        self.trunk = nn.Sequential(
            nn.Conv2d(c * 3, c * 4, 3, 1, 1), *_bn_act(c * 4, _relu),                 # h3
            nn.Conv2d(c * 4, c * 8, 3, 2, 1), *_bn_act(c * 8, _relu),                 # h4: 16
            nn.Conv2d(c * 8, c * 8, 3, 1, 1), *_bn_act(c * 8, _lrelu),                # h5
            nn.ConvTranspose2d(c * 8, c * 4, 4, 2, 1), *_bn_act(c * 4, _lrelu),       # h6: 32
            nn.ConvTranspose2d(c * 4, c * 2, 4, 2, 1), *_bn_act(c * 2, _lrelu),       # h7: 64
            nn.ConvTranspose2d(c * 2, c, 4, 2, 1), *_bn_act(c, _lrelu),               # h8: 128
            nn.Conv2d(c, 3, 5, 1, 2),                                                 # h9
            nn.Tanh(),
        )

    def forward(self, z, normals):
        """z (B, noise_dim, 1, 1), normals (B, 3, S, S) -> image (B, 3, S, S) in [-1, 1]."""
        joined = torch.cat([self.normal_branch(normals), self.noise_branch(z)], dim=1)   # (B, 3c, S/4, S/4)
        return self.trunk(joined)


class StyleDiscriminator(nn.Module):
    """Style-GAN's conditional discriminator (``model_D`` of ``style-gan-*``): (image, normals) -> p(real) (B, 1).

    Args:
        base_channels (`int`, 64): ``nplanes``.
        image_size (`int`, 128): input side, a multiple of 16.
    """

    def __init__(self, base_channels=64, image_size=STYLE_SIZE):
        super().__init__()
        self.config = {"base_channels": base_channels, "image_size": image_size}
        c = base_channels
        self.features = nn.Sequential(
            nn.Conv2d(6, c, 5, 2, 2), _lrelu(),                                 # dh1: / 2
            nn.Conv2d(c, c * 2, 5, 2, 2), _lrelu(),                             # dh2: / 2
            nn.Conv2d(c * 2, c * 4, 3, 2, 1), _lrelu(), TorchSpatialDropout(0.2),   # dh3: / 2
            nn.Conv2d(c * 4, c * 8, 3, 2, 1), _lrelu(), TorchSpatialDropout(0.2),   # dh4: / 2
            nn.Conv2d(c * 8, c * 2, 3, 1, 1), _lrelu(),                         # dh5
        )
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(c * 2 * (image_size // 16) ** 2, 1), nn.Sigmoid())

    def forward(self, image, normals):
        x = torch.cat([image, normals], dim=1)      # JoinTable({dx_I, dx_C}): image first
        return self.classifier(self.features(x).flatten(1))


# ---------------------------------------------------------------------------------------
# The surface-normal FCN


class NormalFCN(nn.Module):
    """The FCN that predicts surface normals back from an image (``style-gan-fcn/train_fcn.lua``).

    An AlexNet-like encoder (11 x 11 stride-4 convolution with padding 68, three max-pools),
    a 6 x 6 convolution and one stride-2 full convolution: an S x S image gives
    S/16 x S/16 class scores (512 -> 32). The output is, as the Lua graph's
    ``Transpose -> View(-1, classes) -> LogSoftMax``, log-probabilities of shape
    (B * h * w, classes), rows in (image, row, column) order.

    Args:
        num_classes (`int`, 40): normal clusters (``--classnum``).
        channels (`tuple`, (96, 256, 384, 384, 256, 1024, 512)): widths of the seven layers.
    """

    def __init__(self, num_classes=FCN_CLASSES, channels=(96, 256, 384, 384, 256, 1024, 512)):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        self.config = {"num_classes": num_classes, "channels": list(channels)}
        c1, c2, c3, c4, c5, c6, c7 = channels
        self.net = nn.Sequential(
            nn.Conv2d(3, c1, 11, 4, 100 - 32), *_bn_act(c1, _lrelu),    # fdh1: / 4
            nn.MaxPool2d(3, 2),
            nn.Conv2d(c1, c2, 5, 1, 2), *_bn_act(c2, _relu),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(c2, c3, 3, 1, 1), *_bn_act(c3, _relu),
            nn.Conv2d(c3, c4, 3, 1, 1), *_bn_act(c4, _relu),
            nn.Conv2d(c4, c5, 3, 1, 1), *_bn_act(c5, _relu),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(c5, c6, 6, 1, 1), *_bn_act(c6, _relu),
            nn.ConvTranspose2d(c6, c7, 4, 2, 1), *_bn_act(c7, _relu),
            nn.Conv2d(c7, num_classes, 3, 1, 1),
        )
        self.num_classes = num_classes

    def scores(self, image):
        """Class scores (B, classes, h, w) before the log-softmax."""
        return self.net(image)

    def forward(self, image):
        """image (B, 3, S, S) in [-1, 1] -> log-probabilities (B * h * w, classes)."""
        scores = self.scores(image).permute(0, 2, 3, 1).reshape(-1, self.num_classes)
        return F.log_softmax(scores, dim=1)
