"""SGAN's networks: the pretrained bottom-up encoder E, the stacked top-down generators G1, G0,
and the discriminators D1, D0 with their Q heads.

Huang, Li, Poursaeed, Hopcroft and Belongie, Stacked Generative Adversarial Networks,
CVPR 2017 (arXiv:1612.04357); official code github.com/xunhuang1995/SGAN (Theano / Lasagne 0.1).

The stack has two levels (N = 2 in Sec. 3): the image ``x = h0``, the encoder's fc3 features
``h1 = E1(x)`` (256 units) and the class ``y = E2(h1)``. Top-down, ``h1 = G1(z1, y)`` and
``x = G0(h1, z0)``; ``D_i`` tells real ``h_i`` from generated ones and its ``Q_i`` head
recovers the noise ``z_i`` (the entropy loss, Sec. 3.4).

Layer for layer as the reference's ``mnist/train_joint.py`` (``MNIST_*`` defaults,
28 x 28 grey) and ``cifar/train_joint.py`` / ``cifar/sampling.py`` (``CIFAR_*``, 32 x 32 RGB,
the generators and the encoder; the CIFAR discriminators' semi-supervised heads are not
built here). What Lasagne / Theano do and how it maps to PyTorch:

* ``DenseLayer``: ``x.flatten(2) @ W + b`` with ``W`` (in, out): ``nn.Linear`` with the
  transposed weight.
* ``dnn.Conv2DDNNLayer``: ``flip_filters=False``, a cross-correlation: ``nn.Conv2d``, the
  kernel as it is.
* ``nn.Deconv2DLayer`` (the reference's ``nn.py``): Theano's ``AbstractConv2d_gradInputs``
  with its default ``filter_flip=True``, the transpose of a *true* convolution, its ``W``
  (incoming, outgoing, kh, kw): ``nn.ConvTranspose2d`` with the kernel flipped in both
  spatial axes; ``padding='half'`` (2 for 5 x 5) with stride 2 is PyTorch's ``padding=2,
  output_padding=1`` (the reference asks for twice the size), ``'valid'`` is ``padding=0``.
* ``nn.batch_norm``: the layer's bias is removed and a ``BatchNormLayer`` (``b``, ``g``,
  ``avg_batch_mean``, ``avg_batch_var``) normalises with ``eps=1e-6`` inside the square root,
  the biased batch variance in training and running averages with momentum 0.1 (the
  variance unbiased): ``nn.BatchNorm1d/2d(eps=1e-6, momentum=0.1)``, ``b`` -> bias,
  ``g`` -> weight.
* ``nn.relu`` / ``T.nnet.relu``: ReLU; ``nn.lrelu``: LeakyReLU(0.2); ``MaxPool2DLayer(2)``:
  ``max_pool2d(2)`` (floor).

``models.sgan.convert`` reads the reference's ``.npz`` files (``get_all_param_values`` order)
into these networks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-6       # nn.py BatchNormLayer: T.sqrt(1e-6 + var)
BN_MOMENTUM = 0.1   # new = 0.9 * avg + 0.1 * batch


# ---------------------------------------------------------------------------------------
# Blocks


class DenseBN(nn.Module):
    """``nn.batch_norm(DenseLayer(..., nonlinearity=relu))``: Linear without bias, BN, ReLU."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bn = nn.BatchNorm1d(out_features, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x):
        return F.relu(self.bn(self.linear(x)))


class DeconvBN(nn.Module):
    """``nn.batch_norm(Deconv2DLayer(..., 5x5, nonlinearity=relu))``: the transposed true
    convolution (no bias), BN, ReLU. ``stride`` 2 is ``padding='half'``, 1 is ``'valid'``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.deconv = deconv(in_channels, out_channels, stride, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x):
        return F.relu(self.bn(self.deconv(x)))


def deconv(in_channels, out_channels, stride, bias=True) -> nn.ConvTranspose2d:
    """The reference's 5x5 ``Deconv2DLayer``: stride 2 with 'half' padding doubles the size,
    stride 1 with 'valid' padding adds 4."""
    if stride == 2:
        return nn.ConvTranspose2d(in_channels, out_channels, 5, stride=2, padding=2, output_padding=1, bias=bias)
    return nn.ConvTranspose2d(in_channels, out_channels, 5, stride=1, padding=0, bias=bias)


# ---------------------------------------------------------------------------------------
# Published sizes

MNIST_ENCODER = dict(in_channels=1, image_size=28, channels=(32, 32), feature_dim=256, num_classes=10)
MNIST_G1 = dict(z_dim=50, num_classes=10, feature_dim=256, hidden=512, z_embed=0, y_embed=0)
MNIST_G0 = dict(z_dim=50, feature_dim=256, z_embed=(128,), base_channels=128, base_size=4,
                channels=(128, 64, 64), out_channels=1)
CIFAR_ENCODER = dict(in_channels=3, image_size=32, channels=(64, 128), feature_dim=256, num_classes=10)
CIFAR_G1 = dict(z_dim=50, num_classes=10, feature_dim=256, hidden=512, z_embed=256, y_embed=512)
CIFAR_G0 = dict(z_dim=16, feature_dim=256, z_embed=(128, 128), base_channels=256, base_size=5,
                channels=(256, 128, 128), out_channels=3)
MNIST_D1 = dict(feature_dim=256, hidden=256, z_dim=50)
MNIST_D0 = dict(in_channels=1, image_size=28, channels=(32, 64, 128), hidden=256, z_dim=50)


# ---------------------------------------------------------------------------------------
# The encoder E (pretrained, frozen while the generators train)


class Encoder(nn.Module):
    """E = E2 o E1, the reference's ``enc_layers``: conv1 (5x5 valid) ReLU, max-pool 2, conv2
    (5x5 valid) ReLU, max-pool 2, fc3 ReLU (``h1``, 256 units), fc4 softmax (``y``).

    Args:
        in_channels (`int`, 1): 1 for MNIST, 3 for CIFAR-10.
        image_size (`int`, 28): 28 (MNIST) or 32 (CIFAR-10).
        channels (`tuple`, (32, 32)): conv1 / conv2 filters ((64, 128) for CIFAR-10).
        feature_dim (`int`, 256): fc3, the level-1 features h1.
        num_classes (`int`, 10): fc4.
    """

    def __init__(self, in_channels=1, image_size=28, channels=(32, 32), feature_dim=256, num_classes=10):
        super().__init__()
        self.config = dict(in_channels=in_channels, image_size=image_size, channels=list(channels),
                           feature_dim=feature_dim, num_classes=num_classes)
        self.conv1 = nn.Conv2d(in_channels, channels[0], 5)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 5)
        side = ((image_size - 4) // 2 - 4) // 2                           # 28 -> 24 -> 12 -> 8 -> 4
        self.fc3 = nn.Linear(channels[1] * side * side, feature_dim)
        self.fc4 = nn.Linear(feature_dim, num_classes)

    def forward(self, x):
        """E1: images (B, C, H, W) as the reference feeds them -> h1 (B, 256), the fc3 ReLU features."""
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc3(h.flatten(1)))

    def classify_logits(self, h1):
        """E2 before its softmax: h1 (B, 256) -> class scores (B, 10)."""
        return self.fc4(h1)

    def classify(self, h1):
        """E2: h1 (B, 256) -> class probabilities (B, 10), ``enc_layer_fc4``'s softmax."""
        return F.softmax(self.fc4(h1), dim=1)


# ---------------------------------------------------------------------------------------
# The generators


class Generator1(nn.Module):
    """G1: (z1, y) -> h1, the reference's ``gen1_layers``.

    MNIST (``z_embed = y_embed = 0``): concat(z1, one-hot y) -> 512 BN ReLU -> 512 BN ReLU
    -> 256 ReLU. CIFAR-10: z1 -> 256 BN ReLU and y -> 512 BN ReLU first, then the same.

    Args:
        z_dim (`int`, 50): noise z1, uniform in [0, 1).
        num_classes (`int`, 10): the one-hot label y.
        feature_dim (`int`, 256): h1.
        hidden (`int`, 512): the two hidden layers.
        z_embed, y_embed (`int`, 0): the CIFAR-10 embeddings of z1 and y (0: none).
    """

    def __init__(self, z_dim=50, num_classes=10, feature_dim=256, hidden=512, z_embed=0, y_embed=0):
        super().__init__()
        self.config = dict(z_dim=z_dim, num_classes=num_classes, feature_dim=feature_dim, hidden=hidden,
                           z_embed=z_embed, y_embed=y_embed)
        self.z_dim, self.num_classes = z_dim, num_classes
        self.embed_z = DenseBN(z_dim, z_embed) if z_embed else None
        self.embed_y = DenseBN(num_classes, y_embed) if y_embed else None
        joined = (z_embed or z_dim) + (y_embed or num_classes)
        self.fc1 = DenseBN(joined, hidden)
        self.fc2 = DenseBN(hidden, hidden)
        self.fc3 = nn.Linear(hidden, feature_dim)

    def forward(self, z1, y_onehot):
        """z1 (B, z_dim), y one-hot float (B, 10) -> h1 (B, 256), non-negative like E1's features."""
        z = self.embed_z(z1) if self.embed_z is not None else z1
        y = self.embed_y(y_onehot) if self.embed_y is not None else y_onehot
        h = self.fc2(self.fc1(torch.cat([z, y], dim=1)))
        return F.relu(self.fc3(h))


class Generator0(nn.Module):
    """G0: (h1, z0) -> x, the reference's ``gen0_layers``.

    z0 -> dense 128 BN ReLU (twice for CIFAR-10); concat(h1, that) -> dense C*s*s BN ReLU ->
    (C, s, s) -> deconv 5x5 /2 BN ReLU -> deconv 5x5 valid BN ReLU -> deconv 5x5 /2 BN ReLU
    -> deconv 5x5 valid, sigmoid. MNIST: C=128, s=4, 4 -> 8 -> 12 -> 24 -> 28, channels
    128, 64, 64, 1; CIFAR-10: C=256, s=5, 5 -> 10 -> 14 -> 28 -> 32, channels 256, 128, 128, 3.

    Args:
        z_dim (`int`, 50): noise z0, uniform in [0, 1) (16 for CIFAR-10).
        feature_dim (`int`, 256): h1.
        z_embed (`tuple`, (128,)): the dense layers embedding z0.
        base_channels, base_size (`int`, 128, 4): the fc layer's (C, s, s).
        channels (`tuple`, (128, 64, 64)): outputs of the first three deconvolutions.
        out_channels (`int`, 1): image channels.
    """

    def __init__(self, z_dim=50, feature_dim=256, z_embed=(128,), base_channels=128, base_size=4,
                 channels=(128, 64, 64), out_channels=1):
        super().__init__()
        self.config = dict(z_dim=z_dim, feature_dim=feature_dim, z_embed=list(z_embed),
                           base_channels=base_channels, base_size=base_size, channels=list(channels),
                           out_channels=out_channels)
        self.z_dim, self.base_channels, self.base_size = z_dim, base_channels, base_size
        sizes = [z_dim, *z_embed]
        self.embed_z = nn.Sequential(*(DenseBN(a, b) for a, b in zip(sizes[:-1], sizes[1:])))
        self.fc = DenseBN(feature_dim + sizes[-1], base_channels * base_size * base_size)
        self.deconv1 = DeconvBN(base_channels, channels[0], stride=2)
        self.deconv2 = DeconvBN(channels[0], channels[1], stride=1)
        self.deconv3 = DeconvBN(channels[1], channels[2], stride=2)
        self.deconv4 = deconv(channels[2], out_channels, stride=1)

    @property
    def image_size(self) -> int:
        return (self.base_size * 2 + 4) * 2 + 4

    def forward(self, h1, z0):
        """h1 (B, 256), z0 (B, z_dim) -> images (B, C, H, W) in [0, 1] (the reference's sigmoid)."""
        h = self.fc(torch.cat([h1, self.embed_z(z0)], dim=1))             # ConcatLayer([fc3, z_embed])
        h = h.view(-1, self.base_channels, self.base_size, self.base_size)
        h = self.deconv3(self.deconv2(self.deconv1(h)))
        return torch.sigmoid(self.deconv4(h))


# ---------------------------------------------------------------------------------------
# The discriminators (MNIST, mnist/train_joint.py)


class Discriminator1(nn.Module):
    """D1 and Q1 on h1: dense 256 ReLU, dense 256 ReLU (Lasagne's default rectify), then two
    heads: ``adv`` (1, sigmoid: probability of real) and ``z_recon`` (z_dim, sigmoid: Q1's
    estimate of z1, uniform in [0, 1))."""

    def __init__(self, feature_dim=256, hidden=256, z_dim=50):
        super().__init__()
        self.config = dict(feature_dim=feature_dim, hidden=hidden, z_dim=z_dim)
        self.fc1 = nn.Linear(feature_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.z_recon = nn.Linear(hidden, z_dim)
        self.adv = nn.Linear(hidden, 1)

    def logits(self, h1):
        """(adversarial logit (B,), Q1's z1 estimate (B, z_dim))."""
        h = F.relu(self.fc2(F.relu(self.fc1(h1))))
        return self.adv(h).squeeze(1), torch.sigmoid(self.z_recon(h))

    def forward(self, h1):
        """h1 (B, 256) -> (probability real (B,), z1 estimate (B, z_dim))."""
        logit, z = self.logits(h1)
        return torch.sigmoid(logit), z


class Discriminator0(nn.Module):
    """D0 and Q0 on images: conv 32, 64, 128 (5x5, stride 2, pad 2, LeakyReLU 0.2), dense 256
    ReLU, then the heads ``adv`` (1, sigmoid) and ``z_recon`` (z_dim, sigmoid)."""

    def __init__(self, in_channels=1, image_size=28, channels=(32, 64, 128), hidden=256, z_dim=50):
        super().__init__()
        self.config = dict(in_channels=in_channels, image_size=image_size, channels=list(channels),
                           hidden=hidden, z_dim=z_dim)
        self.conv1 = nn.Conv2d(in_channels, channels[0], 5, stride=2, padding=2)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 5, stride=2, padding=2)
        self.conv3 = nn.Conv2d(channels[1], channels[2], 5, stride=2, padding=2)
        side = image_size
        for _ in range(3):
            side = (side - 1) // 2 + 1                                     # 28 -> 14 -> 7 -> 4
        self.fc = nn.Linear(channels[2] * side * side, hidden)
        self.z_recon = nn.Linear(hidden, z_dim)
        self.adv = nn.Linear(hidden, 1)

    def logits(self, x):
        """(adversarial logit (B,), Q0's z0 estimate (B, z_dim))."""
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = F.leaky_relu(self.conv2(h), 0.2)
        h = F.leaky_relu(self.conv3(h), 0.2)
        h = F.relu(self.fc(h.flatten(1)))
        return self.adv(h).squeeze(1), torch.sigmoid(self.z_recon(h))

    def forward(self, x):
        """images (B, C, H, W) in [0, 1] -> (probability real (B,), z0 estimate (B, z_dim))."""
        logit, z = self.logits(x)
        return torch.sigmoid(logit), z
