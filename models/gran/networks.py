"""GRAN: Generative Recurrent Adversarial Networks (Im, Kim, Jiang and Memisevic, 2016).

"Generating Images with Recurrent Adversarial Networks", arXiv:1602.05110; the authors'
Theano code is github.com/jiwoongim/GRAN (``recGenI28/32/64/128.py`` for the generators,
``convnet_cuda28/32/64/128.py`` for the discriminators, ``gran.py`` for the model).

The generator draws an image in ``T`` steps on a canvas (Sec. 3, Eqs. 1-4 of the paper):

    h_c,0 = 0
    h_z   = tanh(BN(W_z z))                       the same noise z at every step (L0a)
    dC_t  = f([h_z, h_c,t-1])                     decoder: BN-linear + ReLU, deconvolutions (L1, L2 ...)
    h_c,t = g(dC_t)                               encoder of the step's update: convolutions, BN-linear + tanh
    C_T   = sum_t dC_t,   x = sigmoid(C_T)        the image is a squashing of the summed canvas

Faithful to the reference, and so unlike most PyTorch GANs:

* every batch normalisation normalises with the statistics of the batch being drawn, at
  training and at sampling time, as ``(x - mean) / (std + 1e-6)`` with the biased standard
  deviation (``Batch_Norm_layer``, ``BN_Conv_layer``); the running statistics the layers
  hold (``stat_mean``, ``stat_std``) are never collected nor used; they are kept as
  buffers only so that the authors' parameter sets load strictly;
* convolutions are cuDNN's true convolutions (``dnn_conv``'s default ``conv_mode='conv'``,
  the kernel flipped) with stride 2 and padding 2; a deconvolution is the gradient of such
  a convolution with respect to its input (``GpuDnnConvGradI``), doubling the size;
* parameters keep the reference's names, layouts and shapes: dense weights ``W`` are
  ``(in, out)``, convolution weights ``(in, out, k, k)`` for the encoder's and the
  discriminator's convolutions (the reference stores ``(tnkern, bnkern, k, k)`` and
  transposes) and for the deconvolutions (``(bnkern, tnkern, k, k)``), layers named
  ``L0a``, ``L1`` ... as the reference's attributes. A state dict key is the attribute path
  of the array in the authors' pickled model (``gen_network.L2.W`` -> ``L2.W``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

TINY = 1e-6     # the reference's epsilon: x / (std + TINY)

# The reference's configurations (model_params of its main_* files and class defaults):
# generator widths are ``nkerns * ckern`` without the image's channels, the first
# feature map is ``first_size`` square (the reference's ``filter_sizes[0]``).
CONFIGS = {
    # RecGenI28 / convnet28 (MNIST): nkerns [8,4,1] * ckern 32, filter sizes [7,5,5];
    # the encoder has batch normalisation on both convolutions (L6, L5), named from L5.
    "mnist": {"generator": {"z_dim": 100, "widths": (256, 128), "channels": 1, "first_size": 7, "num_steps": 5,
                            "encoder_bias": False, "encoder_start": 5},
              "discriminator": {"channels": 1, "widths": (80, 40), "image_size": 28, "num_hid": 100}},
    # RecGenI32 / convnet32 (CIFAR-10, main_granI_cifar10.py): nkerns [8,4,2,1] * 128, T = 5.
    "cifar10": {"generator": {"z_dim": 100, "widths": (1024, 512, 256), "channels": 3, "first_size": 4,
                              "num_steps": 5},
                "discriminator": {"channels": 3, "widths": (1024, 512, 256), "image_size": 32, "num_hid": 100}},
    # RecGenI64 / convnet64 (LSUN churches, main_granI_lsun.py): nkerns [1,8,4,2,1] * 172, T = 5.
    "lsun": {"generator": {"z_dim": 100, "widths": (172, 1376, 688, 344), "channels": 3, "first_size": 4,
                           "num_steps": 5},
             "discriminator": {"channels": 3, "widths": (1376, 688, 344, 172), "image_size": 64, "num_hid": 100}},
    # RecGenI128 / convnet128: nkerns [1,1,8,4,2,1] * 172; discriminator [1,8,4,2,1,1] * 384.
    "lsun128": {"generator": {"z_dim": 100, "widths": (172, 172, 1376, 688, 344), "channels": 3,
                              "first_size": 4, "num_steps": 5},
                "discriminator": {"channels": 3, "widths": (3072, 1536, 768, 384, 384), "image_size": 128,
                                  "num_hid": 100}},
}


# ---------------------------------------------------------------------------------------
# Layers (the reference's batch_norm_layer.py, batch_norm_conv_layer.py, conv_layer.py, deconv.py)


def activation(x: torch.Tensor, kind: str) -> torch.Tensor:
    """The reference's ``activation_fn_th`` for the kinds GRAN uses."""
    if kind == "relu":
        return F.relu(x)
    if kind == "tanh":
        return torch.tanh(x)
    if kind == "sigmoid":
        return torch.sigmoid(x)
    if kind == "linear":
        return x
    raise ValueError(f"unknown activation {kind!r}")


def batch_normalise(x: torch.Tensor, dims) -> torch.Tensor:
    """``(x - mean) / (std + 1e-6)`` over ``dims`` with the biased std, as the reference's layers."""
    mean = x.mean(dim=dims, keepdim=True)
    std = x.var(dim=dims, unbiased=False, keepdim=True).sqrt()
    return (x - mean) / (std + TINY)


def true_conv(x: torch.Tensor, weight_in_out: torch.Tensor) -> torch.Tensor:
    """cuDNN's convolution (kernel flipped), stride 2, padding 2; weight stored (in, out, k, k)."""
    return F.conv2d(x, weight_in_out.transpose(0, 1).flip(2, 3), stride=2, padding=2)


class BatchNormLinear(nn.Module):
    """``Batch_Norm_layer``: ``act(eta * BN(x W + zbias) + beta)`` with the batch's statistics."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.W = nn.Parameter(torch.empty(in_features, out_features))    # (D, M)
        self.zbias = nn.Parameter(torch.zeros(out_features))
        self.eta = nn.Parameter(torch.ones(out_features))
        self.beta = nn.Parameter(torch.zeros(out_features))
        self.register_buffer("stat_mean", torch.zeros(out_features))     # never used (see module docstring)
        self.register_buffer("stat_std", torch.zeros(out_features))
        bound = (6.0 / (in_features + out_features)) ** 0.5              # initialize_weight(..., 'uniform')
        nn.init.uniform_(self.W, -bound, bound)

    def forward(self, x: torch.Tensor, act: str) -> torch.Tensor:
        z = batch_normalise(x @ self.W + self.zbias, dims=0)
        return activation(self.eta * z + self.beta, act)


def _conv_bound(in_channels, out_channels, kernel_size):
    # init_conv_filters: fan_in = prod(filter_shape[1:]), fan_out = filter_shape[0] k^2 / 4
    shape = (in_channels, out_channels, kernel_size, kernel_size)
    fan_in = shape[1] * kernel_size ** 2
    fan_out = shape[0] * kernel_size ** 2 / 4
    return (6.0 / (fan_in + fan_out)) ** 0.5


class BatchNormConv(nn.Module):
    """``BN_Conv_layer``: true convolution (no bias), batch normalisation, ``eta``, ``beta``, activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5):
        super().__init__()
        self.W = nn.Parameter(torch.empty(in_channels, out_channels, kernel_size, kernel_size))
        self.eta = nn.Parameter(torch.ones(out_channels))
        self.beta = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("stat_mean", torch.zeros(out_channels))
        self.register_buffer("stat_std", torch.zeros(out_channels))
        bound = _conv_bound(in_channels, out_channels, kernel_size)
        nn.init.uniform_(self.W, -bound, bound)

    def forward(self, x: torch.Tensor, act: str) -> torch.Tensor:
        h = batch_normalise(true_conv(x, self.W), dims=(0, 2, 3))       # (B, out, H/2, W/2)
        return activation(self.eta[:, None, None] * h + self.beta[:, None, None], act)


class BiasConv(nn.Module):
    """``Conv_layer``: true convolution plus a bias ``c``, activation (the encoder's last convolution)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5):
        super().__init__()
        self.W = nn.Parameter(torch.empty(in_channels, out_channels, kernel_size, kernel_size))
        self.c = nn.Parameter(torch.zeros(out_channels))
        bound = _conv_bound(in_channels, out_channels, kernel_size)
        nn.init.uniform_(self.W, -bound, bound)

    def forward(self, x: torch.Tensor, act: str) -> torch.Tensor:
        return activation(true_conv(x, self.W) + self.c[:, None, None], act)


class Deconv(nn.Module):
    """``Deconv_layer.deconv``: the input-gradient of a stride-2, pad-2 true convolution, plus ``b``.

    ``W`` is ``(in, out, k, k)``, the forward convolution's (out, in) kernel; the output is
    twice the input's size.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5):
        super().__init__()
        self.W = nn.Parameter(torch.empty(in_channels, out_channels, kernel_size, kernel_size))
        self.b = nn.Parameter(torch.zeros(out_channels))
        # init_conv_filters with filter_shape (bnkern, tnkern, k, k) = (in, out, k, k)
        fan_in = out_channels * kernel_size ** 2
        fan_out = in_channels * kernel_size ** 2 / 4
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        nn.init.uniform_(self.W, -bound, bound)

    def forward(self, x: torch.Tensor, act: str) -> torch.Tensor:
        y = F.conv_transpose2d(x, self.W.flip(2, 3), stride=2, padding=2, output_padding=1)  # (B, out, 2H, 2W)
        return activation(y + self.b[:, None, None], act)


# ---------------------------------------------------------------------------------------
# The generator and the discriminator


class GRANGenerator(nn.Module):
    """The recurrent generator (``RecGenI28/32/64/128``): ``T`` canvas updates from one noise vector.

    Args:
        z_dim (`int`, defaults to 100): noise size (the reference's ``num_z`` / ``dim_sample``).
        widths (`tuple`, defaults to CIFAR-10's (1024, 512, 256)): feature maps of the decoder
            from the first ``first_size`` square map to the last before the image
            (``nkerns * ckern`` less the image channels); the encoder mirrors them.
        channels (`int`, defaults to 3): image channels.
        first_size (`int`, defaults to 4): side of the first feature map; the image is
            ``first_size * 2 ** len(widths)`` square.
        num_steps (`int`, defaults to 5): ``T``, the steps the weights were trained with.
        encoder_bias (`bool`, defaults to True): the encoder's last convolution is a biased
            ``Conv_layer`` (32, 64, 128) rather than a ``BN_Conv_layer`` (MNIST).
        encoder_start (`int`, optional): index of the encoder's last convolution's name
            (``L<k+2>`` by default; MNIST's reference names them from ``L5``).
        kernel_size (`int`, defaults to 5): the (de)convolutions' kernels.
    """

    def __init__(self, z_dim=100, widths=(1024, 512, 256), channels=3, first_size=4, num_steps=5,
                 encoder_bias=True, encoder_start=None, kernel_size=5):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        depth = len(widths)
        encoder_start = depth + 2 if encoder_start is None else int(encoder_start)
        self.config = {"z_dim": z_dim, "widths": list(widths), "channels": channels, "first_size": first_size,
                       "num_steps": num_steps, "encoder_bias": encoder_bias, "encoder_start": encoder_start,
                       "kernel_size": kernel_size}
        self.z_dim, self.widths, self.channels, self.first_size = z_dim, widths, channels, first_size
        self.num_steps = num_steps
        self.image_size = first_size * 2 ** depth
        num_hid = widths[0] * first_size * first_size
        maps = widths + (channels,)
        self.L0a = BatchNormLinear(z_dim, z_dim)            # W_h_z
        self.L1 = BatchNormLinear(2 * z_dim, num_hid)        # W_h_hf
        self.L0b = BatchNormLinear(num_hid, z_dim)           # W_z_f
        # Decoder L2 ... L<depth+1>: maps[i] -> maps[i+1]; encoder: maps[i+1] -> maps[i], named
        # from L<encoder_start> (i = 0, the last applied) upwards (the first applied, on the canvas).
        self.decoder_names = [f"L{2 + i}" for i in range(depth)]
        self.encoder_names = [f"L{encoder_start + i}" for i in range(depth)]
        for i, name in enumerate(self.decoder_names):
            self.add_module(name, Deconv(maps[i], maps[i + 1], kernel_size))
        for i, name in enumerate(self.encoder_names):
            layer = BiasConv if (i == 0 and encoder_bias) else BatchNormConv
            self.add_module(name, layer(maps[i + 1], maps[i], kernel_size))

    def decode(self, z: torch.Tensor, h_c: torch.Tensor) -> torch.Tensor:
        """``forward`` of the reference: the canvas update dC_t (B, C, S, S), before any squashing."""
        h_z = self.L0a(z, "tanh")                                           # (B, z_dim)
        h = self.L1(torch.cat([h_z, h_c], dim=1), "relu")                   # (B, num_hid)
        h = h.reshape(h.shape[0], self.widths[0], self.first_size, self.first_size)
        for i, name in enumerate(self.decoder_names):
            last = i == len(self.decoder_names) - 1
            h = getattr(self, name)(h, "linear" if last else "relu")        # sigmoid after the sum
        return h

    def encode(self, canvas_update: torch.Tensor) -> torch.Tensor:
        """``backward`` of the reference: h_c,t (B, z_dim) from the step's update."""
        h = canvas_update
        for name in reversed(self.encoder_names):
            h = getattr(self, name)(h, "relu")
        return self.L0b(h.flatten(1), "tanh")

    def forward(self, z: torch.Tensor, num_steps: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``get_samples``: (sigmoid(sum_t dC_t) in [0, 1], [dC_1, ..., dC_T]).

        Args:
            z: (B, z_dim) noise, fed at every step (the reference's ``Zs[0]``).
            num_steps: T, the trained ``num_steps`` when None (the reference samples with 3).
        """
        steps = self.num_steps if num_steps is None else num_steps
        h_c = z.new_zeros(z.shape[0], self.z_dim)
        updates = []
        for _ in range(steps):
            update = self.decode(z, h_c)
            h_c = self.encode(update)
            updates.append(update)
        return torch.sigmoid(torch.stack(updates).sum(0)), updates


def sequential_drawing(updates: list[torch.Tensor]) -> list[torch.Tensor]:
    """``GRAN.sequential_drawing``: sigmoid of the canvas after each step, sigmoid(sum_{s<=t} dC_s)."""
    canvas, drawn = torch.zeros_like(updates[0]), []
    for update in updates:
        canvas = canvas + update
        drawn.append(torch.sigmoid(canvas))
    return drawn


class GRANDiscriminator(nn.Module):
    """The discriminator (``convnet28/32/64/128``): BN convolutions, a tanh layer, a sigmoid unit.

    Args:
        channels (`int`, defaults to 3): image channels.
        widths (`tuple`, defaults to CIFAR-10's (1024, 512, 256)): the convolutions' maps
            (``L1`` ...), each halving the size.
        image_size (`int`, defaults to 32): side of the images.
        num_hid (`int`, defaults to 100): the tanh layer (``conv_num_hid``).
        num_class (`int`, defaults to 1): outputs (one: real or generated).
        kernel_size (`int`, defaults to 5).
    """

    def __init__(self, channels=3, widths=(1024, 512, 256), image_size=32, num_hid=100, num_class=1, kernel_size=5):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        self.config = {"channels": channels, "widths": list(widths), "image_size": image_size, "num_hid": num_hid,
                       "num_class": num_class, "kernel_size": kernel_size}
        self.channels, self.image_size = channels, image_size
        final = image_size
        for _ in widths:
            final = (final + 4 - kernel_size) // 2 + 1
        maps = (channels,) + widths
        self.conv_names = [f"L{i + 1}" for i in range(len(widths))]
        for i, name in enumerate(self.conv_names):
            self.add_module(name, BatchNormConv(maps[i], maps[i + 1], kernel_size))
        num_conv = widths[-1] * final * final
        self.W = nn.Parameter(torch.empty(num_conv, num_hid))
        self.hbias = nn.Parameter(torch.zeros(num_hid))
        self.W_y = nn.Parameter(torch.empty(num_hid, num_class))
        for weight in (self.W, self.W_y):
            bound = (6.0 / sum(weight.shape)) ** 0.5
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``propagate``: P(real) (B, num_class) of images (B, C, S, S) in [0, 1]."""
        h = x.reshape(x.shape[0], self.channels, self.image_size, self.image_size)
        for name in self.conv_names:
            h = getattr(self, name)(h, "relu")
        h = torch.tanh(h.flatten(1) @ self.W + self.hbias)
        return torch.sigmoid(h @ self.W_y)

    def weight_decay(self) -> torch.Tensor:
        """``weight_decay_l2``: 0.5 (|W|^2 + |W_y|^2), added to the discriminator's cost times lambda."""
        return 0.5 * (self.W.pow(2).sum() + self.W_y.pow(2).sum())
