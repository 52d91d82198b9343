"""LAPGAN: a Laplacian pyramid of generative adversarial networks.

Denton, Chintala, Szlam and Fergus, "Deep Generative Image Models using a Laplacian
Pyramid of Adversarial Networks", NeurIPS 2015 (arXiv:1506.05751); reference code
github.com/facebook/eyescream (Torch7 / Lua, ``cifar/``).

The pyramid (Sec. 3 of the paper). With ``d`` the downsampling and ``u`` the upsampling
operator, the low-pass image of level k is ``l_k(I)`` and the band-pass (residual) image

    h_k = l_k(I) - u(l_{k+1}(I))                        (Eq. 3)

so that an image is rebuilt coarse to fine from its coarsest low-pass image and the
residuals, ``I_k = u(I_{k+1}) + h_k``. LAPGAN samples the same way (Eq. 4): the coarsest
image from a generator ``G_K(z_K)``, each finer one as ``u(I_{k+1}) + G_k(z_k, u(I_{k+1}))``.

eyescream builds the pyramid with ``image.scale(img, w, h)`` of Torch's ``image`` package
(mode "bilinear"): `image_scale` reproduces it exactly. Shrinking by a whole factor
averages boxes of pixels; enlarging interpolates linearly with the corners aligned
(``scale = (src - 1) / (dst - 1)``, the last pixel copied). Rows are scaled first, then
columns, as ``Main_scaleBilinear`` does. Every low-pass image is scaled from the full
image (``l_k(I) = image.scale(I, s_k)``), as ``coarse_to_fine_cifar10.lua`` does.

The networks are those of the CIFAR-10 scripts (``cifar/scripts/train_cifar*.lua``):

* `CoarseGenerator` / `CoarseDiscriminator` (the 8 x 8 level): fully connected, two hidden
  layers (``train_cifar_classcond.lua``; ``train_cifar.lua`` for the unconditional model,
  whose generator's second hidden layer is a sigmoid). The paper's CIFAR sizes are 1200
  units a layer in G, 600 in D (Sec. 4).
* `LevelGenerator` / `LevelDiscriminator` (16 x 16, 32 x 32): convolutional, 3 layers in
  G (7x7, 7x7, 5x5, "same" padding, ``nn.SpatialConvolutionUpsample`` with factor 1) and 2
  in D (5x5 valid, 5x5 stride 2), ``hidden_G = hidden_D = 64``
  (``train_cifar_coarse_to_fine*.lua``). The noise is one extra plane at the level's size;
  the class one-hot (class-conditional model) goes through a linear layer and a ReLU to
  one more plane. D sees the residual added to its condition (the fine image).

Parameter names follow the nngraph node names of the Lua scripts (``class1``, ``g2``,
``g3``, ``g4`` in G; ``c1``, ``d3``, ``d4``, ``d6`` in D; ``h1``, ``h2``, ``h3`` in the
coarse D); the coarse G is an ``nn.Sequential`` as in Lua. eyescream released no weights,
so no file of the authors has to load: the names are ours to keep stable.

Deviation: none in the layers. Inputs are batched tensors (NCHW), labels one-hot float
vectors (``condDim1 = 10``), as the Lua code passes them.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

# ---------------------------------------------------------------------------------------
# The pyramid operators: Torch7 image.scale(..., 'bilinear')


@lru_cache(maxsize=64)
def _scale_matrix_np(src_len: int, dst_len: int) -> np.ndarray:
    """(dst_len, src_len) float64 weights of Torch image's ``Main_scaleLinear_rowcol``.

    The weights' positions are computed in float32, as the C code does.
    """
    matrix = np.zeros((dst_len, src_len), np.float64)
    if dst_len == src_len:
        np.fill_diagonal(matrix, 1.0)
    elif dst_len > src_len:                       # linear interpolation, corners aligned
        if src_len == 1:
            matrix[:, 0] = 1.0
        else:
            scale = np.float32(src_len - 1) / np.float32(dst_len - 1)
            for di in range(dst_len - 1):
                position = np.float32(di) * scale
                index = int(position)
                fraction = float(position - np.float32(index))
                matrix[di, index] += 1.0 - fraction
                matrix[di, index + 1] += fraction
        matrix[dst_len - 1, src_len - 1] = 1.0
    else:                                         # area average over [di, di + 1) * scale
        scale = np.float32(src_len) / np.float32(dst_len)
        start_index, start_fraction = 0, 0.0
        for di in range(dst_len):
            end = np.float32(di + 1) * scale
            end_index = int(end)
            end_fraction = float(end - np.float32(end_index))
            row = np.zeros(src_len, np.float64)
            row[start_index] += 1.0 - start_fraction
            row[start_index + 1:end_index] += 1.0
            if end_index < src_len:
                row[end_index] += end_fraction
            matrix[di] = row / row.sum()
            start_index, start_fraction = end_index, end_fraction
    return matrix


def scale_matrix(src_len: int, dst_len: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """The (dst_len, src_len) matrix that scales one row or column as Torch's ``image.scale``."""
    return torch.as_tensor(_scale_matrix_np(int(src_len), int(dst_len)), dtype=dtype, device=device)


def image_scale(images: torch.Tensor, height: int, width: int | None = None) -> torch.Tensor:
    """``image.scale(img, width, height)`` of Torch7 (mode "bilinear") on a batch (..., H, W).

    Rows first (width), then columns (height), as ``Main_scaleBilinear``.
    """
    width = height if width is None else width
    rows = scale_matrix(images.shape[-1], width, images.dtype, images.device)     # (W', W)
    cols = scale_matrix(images.shape[-2], height, images.dtype, images.device)    # (H', H)
    return cols @ (images @ rows.t())                                              # (..., H', W')


def downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """``d``: the low-pass image at ``size`` x ``size`` (box average for a whole factor)."""
    return image_scale(images, size)


def upsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """``u``: bilinear enlargement to ``size`` x ``size``, corners aligned."""
    return image_scale(images, size)


def laplacian_pyramid(images: torch.Tensor, sizes) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Eq. 3: the coarsest low-pass image and the band-pass images, coarse to fine.

    Args:
        images: (n, C, H, W), the full images.
        sizes: the pyramid's sizes coarse to fine, e.g. ``(8, 16, 32)``.

    Returns:
        ``(l_K, [h_{K-1}, ..., h_0])``: ``l_K = image.scale(I, sizes[0])`` and, for each
        finer size s with coarser size c, ``h = image.scale(I, s) - u(image.scale(I, c), s)``.
    """
    lows = [image_scale(images, size) for size in sizes]
    residuals = [lows[k] - upsample(lows[k - 1], sizes[k]) for k in range(1, len(sizes))]
    return lows[0], residuals


def reconstruct(coarsest: torch.Tensor, residuals, sizes) -> list[torch.Tensor]:
    """``I_k = u(I_{k+1}) + h_k`` from the coarsest image up: every level's image, coarse to fine."""
    images = [coarsest]
    for size, residual in zip(sizes[1:], residuals):
        images.append(upsample(images[-1], size) + residual)
    return images


def one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Class indices (n,) -> float one-hot vectors (n, classes), eyescream's ``labelvector``."""
    return nn.functional.one_hot(labels.long(), classes).float()


# ---------------------------------------------------------------------------------------
# Layers


class SpatialConvolutionUpsample(nn.Conv2d):
    """eyescream's ``nn.SpatialConvolutionUpsample``: a "same" convolution to
    ``out_planes * factor**2`` planes, viewed as ``out_planes`` planes ``factor`` times larger.

    The view is a plain reshape of the memory (not a pixel shuffle), as in Lua. The CIFAR
    models use ``factor = 1``: a padded convolution.
    """

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int, factor: int = 1):
        if kernel_size % 2 != 1:
            raise ValueError("kernel_size has to be odd")
        super().__init__(in_planes, out_planes * factor * factor, kernel_size, padding=(kernel_size - 1) // 2)
        self.factor = factor
        self.out_planes = out_planes

    def forward(self, x):
        n, _, h, w = x.shape
        return super().forward(x).reshape(n, self.out_planes, h * self.factor, w * self.factor)


def _torch7_normal_(linear: nn.Linear, std: float):
    """``setWeights(w, std)`` of ``train_cifar.lua``: N(0, std) weights, zero biases."""
    nn.init.normal_(linear.weight, 0.0, std)
    nn.init.zeros_(linear.bias)


# ---------------------------------------------------------------------------------------
# The coarsest level (8 x 8): fully connected


class CoarseGenerator(nn.Module):
    """G_K: noise z_K (and a class one-hot) -> the coarsest image, (n, C, s, s).

    ``train_cifar_classcond.lua``: JoinTable(noise, class) -> Linear -> ReLU -> Linear ->
    ReLU -> Linear -> View. ``train_cifar.lua`` (``classes = 0``): the second activation is
    a Sigmoid and the weights start N(0, 0.05).

    Args:
        image_size (`int`, 8): side of the coarsest image.
        channels (`int`, 3): colour planes.
        noise_dim (`int`, 100): length of z_K, uniform in [-1, 1].
        classes (`int`, 10): length of the one-hot condition; 0 for the unconditional model.
        hidden (`int`, 1200): units of each hidden layer (the paper's CIFAR-10 G_K).
    """

    def __init__(self, image_size=8, channels=3, noise_dim=100, classes=10, hidden=1200):
        super().__init__()
        self.config = dict(image_size=image_size, channels=channels, noise_dim=noise_dim, classes=classes,
                           hidden=hidden)
        self.image_size, self.channels, self.noise_dim, self.classes = image_size, channels, noise_dim, classes
        second = nn.ReLU() if classes else nn.Sigmoid()
        self.net = nn.Sequential(
            nn.Linear(noise_dim + classes, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), second,
            nn.Linear(hidden, channels * image_size * image_size),
        )
        if not classes:
            for index in (0, 2, 4):
                _torch7_normal_(self.net[index], 0.05)

    def forward(self, noise: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """noise (n, noise_dim), label one-hot (n, classes) or None -> (n, C, s, s)."""
        x = noise if not self.classes else torch.cat([noise, label], dim=1)     # JoinTable(2, 2)
        return self.net(x).view(-1, self.channels, self.image_size, self.image_size)


class CoarseDiscriminator(nn.Module):
    """D_K: an image (and its class one-hot) -> probability that it is real, (n, 1).

    JoinTable(Reshape(image), class) -> Linear (h1) -> ReLU -> Dropout -> Linear (h2) ->
    ReLU -> Dropout -> Linear (h3) -> Sigmoid. Unconditional (``classes = 0``): weights
    start N(0, 0.005), as ``train_cifar.lua`` sets them.

    Args:
        image_size (`int`, 8), channels (`int`, 3), classes (`int`, 10): as the generator's.
        hidden (`int`, 600): units of each hidden layer (the paper's CIFAR-10 D_K).
        dropout (`float`, 0.5): ``nn.Dropout()``'s default.
    """

    def __init__(self, image_size=8, channels=3, classes=10, hidden=600, dropout=0.5):
        super().__init__()
        self.config = dict(image_size=image_size, channels=channels, classes=classes, hidden=hidden,
                           dropout=dropout)
        self.classes = classes
        self.h1 = nn.Linear(channels * image_size * image_size + classes, hidden)
        self.h2 = nn.Linear(hidden, hidden)
        self.h3 = nn.Linear(hidden, 1)
        self.dropout = nn.Dropout(dropout)
        if not classes:
            for linear in (self.h1, self.h2, self.h3):
                _torch7_normal_(linear, 0.005)

    def forward(self, image: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        x = image.flatten(1)
        if self.classes:
            x = torch.cat([x, label], dim=1)
        x = self.dropout(torch.relu(self.h1(x)))
        x = self.dropout(torch.relu(self.h2(x)))
        return torch.sigmoid(self.h3(x))


# ---------------------------------------------------------------------------------------
# The finer levels (16 x 16, 32 x 32): convolutional, conditioned on u(I_{k+1})


class LevelGenerator(nn.Module):
    """G_k: noise plane z_k, class one-hot, coarse image u(I_{k+1}) -> the residual h_k.

    ``train_cifar_coarse_to_fine_classcond.lua``: the class vector -> Linear (class1) ->
    ReLU -> one plane; JoinTable(noise, class plane, coarse) (5 planes) -> g2 (7x7) -> ReLU
    -> g3 (7x7) -> ReLU -> g4 (5x5). Unconditional (``classes = 0``): JoinTable(noise,
    coarse), 4 planes.

    Args:
        image_size (`int`, 32): side of the level's images.
        channels (`int`, 3): colour planes.
        classes (`int`, 10): length of the one-hot condition; 0 for the unconditional model.
        hidden (`int`, 64): ``--hidden_G``.
        noise_planes (`int`, 1): planes of z_k (``opt.noiseDim = {1, fine, fine}``).
    """

    def __init__(self, image_size=32, channels=3, classes=10, hidden=64, noise_planes=1):
        super().__init__()
        self.config = dict(image_size=image_size, channels=channels, classes=classes, hidden=hidden,
                           noise_planes=noise_planes)
        self.image_size, self.classes, self.noise_planes = image_size, classes, noise_planes
        if classes:
            self.class1 = nn.Linear(classes, image_size * image_size)
        in_planes = noise_planes + (1 if classes else 0) + channels
        self.g2 = SpatialConvolutionUpsample(in_planes, hidden, 7, 1)
        self.g3 = SpatialConvolutionUpsample(hidden, hidden, 7, 1)
        self.g4 = SpatialConvolutionUpsample(hidden, channels, 5, 1)

    def forward(self, noise: torch.Tensor, label: torch.Tensor | None, coarse: torch.Tensor) -> torch.Tensor:
        """noise (n, 1, s, s), label one-hot (n, classes) or None, coarse (n, C, s, s) -> h (n, C, s, s)."""
        planes = [noise]
        if self.classes:
            class_plane = torch.relu(self.class1(label)).view(-1, 1, self.image_size, self.image_size)
            planes.append(class_plane)
        planes.append(coarse)
        x = torch.cat(planes, dim=1)                                  # JoinTable(2, 2)
        return self.g4(torch.relu(self.g3(torch.relu(self.g2(x)))))


class LevelDiscriminator(nn.Module):
    """D_k: residual h_k, class one-hot, coarse image -> probability that h_k is real, (n, 1).

    CAddTable(residual, coarse) (the fine image), JoinTable with the class plane (c1 ->
    ReLU), d3 (5x5 valid) -> ReLU -> d4 (5x5, stride 2) -> Reshape -> ReLU -> Dropout ->
    d6 (Linear) -> Sigmoid.

    Args:
        image_size (`int`, 32), channels (`int`, 3), classes (`int`, 10): as the generator's.
        hidden (`int`, 64): ``--hidden_D``.
        dropout (`float`, 0.5): ``nn.Dropout()``'s default.
    """

    def __init__(self, image_size=32, channels=3, classes=10, hidden=64, dropout=0.5):
        super().__init__()
        self.config = dict(image_size=image_size, channels=channels, classes=classes, hidden=hidden,
                           dropout=dropout)
        self.image_size, self.classes = image_size, classes
        side = ((image_size - 5 + 1) - 5) // 2 + 1
        if side < 1:
            raise ValueError(f"a LevelDiscriminator needs images of at least 10 pixels, got {image_size}")
        if classes:
            self.c1 = nn.Linear(classes, image_size * image_size)
        self.d3 = nn.Conv2d(channels + (1 if classes else 0), hidden, 5)
        self.d4 = nn.Conv2d(hidden, hidden, 5, stride=2)
        self.d6 = nn.Linear(hidden * side * side, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, residual: torch.Tensor, label: torch.Tensor | None, coarse: torch.Tensor) -> torch.Tensor:
        x = residual + coarse                                         # CAddTable: the fine image
        if self.classes:
            class_plane = torch.relu(self.c1(label)).view(-1, 1, self.image_size, self.image_size)
            x = torch.cat([x, class_plane], dim=1)
        x = self.d4(torch.relu(self.d3(x))).flatten(1)
        return torch.sigmoid(self.d6(self.dropout(torch.relu(x))))


# ---------------------------------------------------------------------------------------
# Published configuration (CIFAR-10, class-conditional, 8 -> 16 -> 32)

SIZES = (8, 16, 32)
LEVEL_NAMES = ("coarse", "level1", "level2")     # coarse to fine; G_K, ..., G_0


def published_config(classes=10, sizes=SIZES, coarse_hidden=(1200, 600), level_hidden=(64, 64), channels=3,
                     noise_dim=100) -> dict:
    """{network name: constructor arguments} of the CIFAR-10 model: generators ``coarse``,
    ``level1``, ... and their discriminators ``coarse_d``, ``level1_d``, ...
    """
    config = {
        "coarse": dict(image_size=sizes[0], channels=channels, noise_dim=noise_dim, classes=classes,
                       hidden=coarse_hidden[0]),
        "coarse_d": dict(image_size=sizes[0], channels=channels, classes=classes, hidden=coarse_hidden[1]),
    }
    for k, size in enumerate(sizes[1:], start=1):
        config[f"level{k}"] = dict(image_size=size, channels=channels, classes=classes, hidden=level_hidden[0])
        config[f"level{k}_d"] = dict(image_size=size, channels=channels, classes=classes, hidden=level_hidden[1])
    return config


def network_class(name: str):
    """The class of a network named as in `published_config`."""
    if name == "coarse":
        return CoarseGenerator
    if name == "coarse_d":
        return CoarseDiscriminator
    return LevelDiscriminator if name.endswith("_d") else LevelGenerator


def level_names(levels: int) -> tuple[str, ...]:
    """The generators' names coarse to fine: ``coarse``, ``level1``, ..., ``level{levels - 1}``."""
    return ("coarse",) + tuple(f"level{k}" for k in range(1, levels))
