"""LR-GAN's networks: the layered recursive generator and its DCGAN discriminator.

Paper: Yang, Kannan, Batra and Parikh, "LR-GAN: Layered Recursive Generative Adversarial
Networks for Image Generation", ICLR 2017, https://arxiv.org/abs/1703.01560.
Reference code: github.com/jwyang/lr-gan.pytorch (``_netG`` and ``_netD`` of train.py) with
its compositor github.com/jwyang/stnm.pytorch (``stnm_cuda_kernel.cu``).

The generator (Sec. 3 of the paper) draws an image in ``ntimestep`` steps. An LSTM cell
runs over the per-step noise vectors z_t. Step 1 draws the background x_0 = G_b(z_0) from the
noise itself (so one step is DCGAN); each later step t draws a foreground appearance
f_t = G_f(h_t), its shape mask m_t and its pose a_t (six affine numbers, a linear layer of
h_t clamped to a scale/rotation/translation box) and pastes it on the canvas (Eq. 3-4):

    x_t = ST(m_t, a_t) * ST(f_t, a_t) + (1 - ST(m_t, a_t)) * x_{t-1}

ST is a spatial transformer: bilinear sampling of the foreground and its mask through the
affine grid of a_t, zero outside the foreground (the reference's STNM CUDA kernel). Here it
is ``torch.nn.functional.affine_grid`` + ``grid_sample`` (``composite``), no extension. From
step 3 on, the foreground generator's input also sees the previous layer's features through
an encoder (``encoderconv``, ``encoderfc``, ``nlnet``), as in the reference.

Parameter names and shapes are the reference's, so its saved ``netG``/``netD`` state dicts
load strictly. The reference's defaults are ``nz`` 100, ``ngf``/``ndf`` 64, ``maxobjscale``
1.2, two steps; its CIFAR-10 run is 32 x 32 colour with ``rot`` 0.1 (MNIST: one channel,
``rot`` 0.3). The reference builds its layer widths with ``max(depth // 2, 64)``; kept.

Deviations: none in the forward pass. The reference's grid generator and compositor keep
no parameters, so they are functions here.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LRGANDiscriminator", "LRGANGenerator", "affine_grid", "clamp_pose", "composite"]


# ---------------------------------------------------------------------------------------
# The spatial transformer with mask (STNM)


def affine_grid(theta: torch.Tensor, size) -> torch.Tensor:
    """The sampling grid of the reference's ``AffineGridGen``, in ``grid_sample``'s (x, y) order.

    The reference's grid is (row, column, 1) on [-1, 1] (corners on pixel centres) times
    ``theta``'s transpose, so its first output is the source row and its second the source
    column. ``grid_sample`` wants (column, row): ``theta``'s rows and first two columns swap.

    Args:
        theta: (N, 2, 3), the reference's pose matrix [[x_s, x_r, x_t], [y_r, y_s, y_t]].
        size: (N, C, H, W) of the output.

    Returns:
        (N, H, W, 2) source coordinates (x, y) in [-1, 1] for ``grid_sample(align_corners=True)``.
    """
    swapped = theta[:, [1, 0]][:, :, [1, 0, 2]]          # (N, 2, 3) acting on (x, y, 1)
    return F.affine_grid(swapped, list(size), align_corners=True)


def composite(canvas: torch.Tensor, foreground: torch.Tensor, mask: torch.Tensor,
              theta: torch.Tensor) -> torch.Tensor:
    """Eq. 4: paste the transformed ``foreground`` on ``canvas`` through its transformed ``mask``.

    As the STNM kernel: both are sampled bilinearly at the grid of ``theta`` (pixels outside
    the foreground count as 0, so there the canvas stays), then
    ``out = (1 - m) * canvas + m * f``.

    Args:
        canvas: (N, C, H, W), the image so far.
        foreground: (N, C, H, W) appearance f_t.
        mask: (N, 1, H, W) shape m_t in [0, 1].
        theta: (N, 2, 3) pose a_t (reference layout, see ``affine_grid``).
    """
    grid = affine_grid(theta, canvas.shape)
    warped = F.grid_sample(foreground, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    alpha = F.grid_sample(mask, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return (1 - alpha) * canvas + alpha * warped


def clamp_pose(pose: torch.Tensor, maxobjscale: float, rot: float) -> torch.Tensor:
    """The reference's ``clampT``: (N, 6) [x_s, x_r, x_t, y_r, y_s, y_t] into their box.

    Scales in [maxobjscale, 2 maxobjscale] (a scale above 1 shrinks the object), shears /
    rotations in [-rot, rot], translations in [-1, 1].
    """
    low = pose.new_tensor([maxobjscale, -rot, -1.0, -rot, maxobjscale, -1.0])
    high = pose.new_tensor([2 * maxobjscale, rot, 1.0, rot, 2 * maxobjscale, 1.0])
    return torch.clamp(pose, low, high)


# ---------------------------------------------------------------------------------------
# Generator


def _up_stack(nz: int, ngf: int, first: int, second: int, image_size: int, bias: bool):
    """The reference's ``buildNetGbg``/``buildNetGfg``: 1 -> 4 -> ... -> image_size / 2.

    Returns the Sequential (``convt<size>``, ``bn<size>``, ``relu<size>``) and its output depth.
    """
    layers = OrderedDict()
    layers["convt1"] = nn.ConvTranspose2d(nz, first * ngf, 4, 4, 0, bias=bias)
    layers["bn1"] = nn.BatchNorm2d(first * ngf)
    layers["relu1"] = nn.ReLU(True)
    size, depth_in, depth_out = 4, first * ngf, second * ngf
    while size < image_size / 2:
        layers[f"convt{size}"] = nn.ConvTranspose2d(depth_in, depth_out, 4, 2, 1, bias=bias)
        layers[f"bn{size}"] = nn.BatchNorm2d(depth_out)
        layers[f"relu{size}"] = nn.ReLU(True)
        depth_in, depth_out = depth_out, max(depth_out // 2, 64)
        size *= 2
    return nn.Sequential(layers), depth_in


class LRGANGenerator(nn.Module):
    """LR-GAN's generator (the reference's ``_netG``).

    Args:
        image_size (`int`, defaults to 32): output side (a power of two, at least 8).
        ntimestep (`int`, defaults to 2): steps: one background, then ``ntimestep - 1`` foregrounds.
        maxobjscale (`float`, defaults to 1.2): the smallest pose scale (larger: smaller objects).
        nz (`int`, defaults to 100): noise size per step.
        ngf (`int`, defaults to 64): generator width.
        nc (`int`, defaults to 3): image channels (1 for the MNIST sets).
        rot (`float`, defaults to 0.1): the largest |shear / rotation| entry of the pose.

    ``forward(noise)``, noise (ntimestep, N, nz), returns as the reference
    ``(final, canvases, foregrounds, masks)``: the last canvas (N, nc, S, S) in [-1, 1]; the
    canvas after every step (background first); each step's foreground appearance
    (N, nc, S, S) and mask (N, 1, S, S) in [0, 1], before their transformation.
    """

    def __init__(self, image_size=32, ntimestep=2, maxobjscale=1.2, nz=100, ngf=64, nc=3, rot=0.1):
        super().__init__()
        if image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two of at least 8, got {image_size}")
        if ntimestep < 1:
            raise ValueError(f"ntimestep must be at least 1, got {ntimestep}")
        self.config = dict(image_size=image_size, ntimestep=ntimestep, maxobjscale=maxobjscale, nz=nz, ngf=ngf,
                           nc=nc, rot=rot)
        self.image_size, self.ntimestep, self.nz = image_size, ntimestep, nz
        self.maxobjscale, self.rot = maxobjscale, rot
        self.nsize_out = 2

        # the recurrence over the steps' noise (Sec. 3.1)
        self.lstmcell = nn.LSTMCell(nz, nz)
        # background generator G_b: DCGAN on z_0
        self.Gbgc, self.depth_in_bg = _up_stack(nz, ngf, 4, 2, image_size, bias=True)
        self.Gbgi = nn.Sequential(nn.ConvTranspose2d(self.depth_in_bg, nc, 4, 2, 1, bias=True), nn.Tanh())
        # foreground generator G_f: a shared trunk, then appearance and mask heads
        self.Gfgc, self.depth_in = _up_stack(nz, ngf, 8, 4, image_size, bias=False)
        self.Gfgi = nn.Sequential(nn.ConvTranspose2d(self.depth_in, nc, 4, 2, 1, bias=False), nn.Tanh())
        self.Gfgm = nn.Sequential(nn.ConvTranspose2d(self.depth_in, 1, 4, 2, 1, bias=True), nn.Sigmoid())
        # pose: six affine numbers, starting at the identity scaled by maxobjscale
        self.Gtransform = nn.Linear(nz, 6)
        with torch.no_grad():
            self.Gtransform.weight.zero_()
            self.Gtransform.bias.zero_()
            self.Gtransform.bias[0] = maxobjscale
            self.Gtransform.bias[4] = maxobjscale
        # from step 3 on: the previous layer's features, pooled to 2 x 2, join h_t
        encoder = OrderedDict()
        side = image_size // 2
        while side > self.nsize_out:
            encoder[f"avgpool{side}"] = nn.AvgPool2d(4, 2, 1)
            encoder[f"bn{side}"] = nn.BatchNorm2d(self.depth_in)
            encoder[f"lrelu{side}"] = nn.LeakyReLU(0.2, inplace=True)
            side //= 2
        self.encoderconv = nn.Sequential(encoder)
        self.encoderfc = nn.Sequential(nn.Linear(self.depth_in * self.nsize_out ** 2, nz), nn.BatchNorm1d(nz),
                                       nn.Tanh())
        self.nlnet = nn.Sequential(nn.Linear(2 * nz, nz), nn.BatchNorm1d(nz), nn.Tanh())

    def encode(self, features: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """The foreground input from step 3 on: h_t joined with the previous layer's features."""
        if features.shape[1] != self.depth_in:
            raise ValueError(f"with {self.ntimestep} steps the background features ({features.shape[1]} channels) "
                             f"must be as deep as the foreground's ({self.depth_in}); choose another ngf")
        encoded = self.encoderfc(self.encoderconv(features).flatten(1))       # (N, nz)
        return self.nlnet(torch.cat([hidden, encoded], 1))

    def forward(self, noise: torch.Tensor):
        steps, batch, nz = noise.shape
        hx = noise.new_zeros(batch, nz)
        cx = noise.new_zeros(batch, nz)
        canvases, foregrounds, masks = [], [], []
        features = canvas = None
        for t in range(self.ntimestep):
            hx, cx = self.lstmcell(noise[t], (hx, cx))
            if t == 0:
                # the background sees z_0 itself: one step is DCGAN
                features = self.Gbgc(noise[t].view(batch, nz, 1, 1))
                canvas = self.Gbgi(features)
            else:
                latent = self.encode(features, hx) if self.ntimestep > 2 else hx      # (N, nz)
                features = self.Gfgc(latent.view(batch, nz, 1, 1))
                foreground, mask = self.Gfgi(features), self.Gfgm(features)
                pose = clamp_pose(self.Gtransform(latent), self.maxobjscale, self.rot).view(batch, 2, 3)
                canvas = composite(canvas, foreground, mask, pose)
                foregrounds.append(foreground)
                masks.append(mask)
            canvases.append(canvas)
        return canvases[-1], canvases, foregrounds, masks


# ---------------------------------------------------------------------------------------
# Discriminator


class LRGANDiscriminator(nn.Module):
    """The reference's ``_netD``: DCGAN's discriminator, a probability per image.

    Args:
        image_size (`int`, defaults to 32): input side.
        ndf (`int`, defaults to 64): width.
        nc (`int`, defaults to 3): image channels.

    ``forward(images)`` (N, nc, S, S) -> (N, 1) in (0, 1).
    """

    def __init__(self, image_size=32, ndf=64, nc=3):
        super().__init__()
        self.config = dict(image_size=image_size, ndf=ndf, nc=nc)
        layers = OrderedDict()
        depth_in, depth_out, size = nc, ndf, image_size
        while size > 4:
            layers[f"conv{size}"] = nn.Conv2d(depth_in, depth_out, 4, 2, 1, bias=False)
            if size < image_size:
                layers[f"bn{size}"] = nn.BatchNorm2d(depth_out)
            layers[f"lrelu{size}"] = nn.LeakyReLU(0.2, inplace=True)
            depth_in, depth_out, size = depth_out, 2 * depth_out, size // 2
        layers[f"conv{size}"] = nn.Conv2d(depth_in, 1, 4, 1, 0, bias=False)
        layers[f"sigmoid{size}"] = nn.Sigmoid()
        self.main = nn.Sequential(layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.main(images).view(-1, 1)
