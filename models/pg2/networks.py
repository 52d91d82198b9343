"""PG2 networks: the stage-I generator G1, the stage-II generator G2 and the discriminator.

Ma, Jia, Sun, Schiele, Tuytelaars and Van Gool, "Pose Guided Person Image Generation",
NeurIPS 2017 (arXiv:1705.09368). Layer for layer as the PyTorch port
(budui/Human-Pose-Transfer, ``implementations/PG2/model.py``), so its checkpoints
``network_G1_<iter>.pth``, ``network_G2_<iter>.pth`` and ``network_D_<iter>.pth`` (plain
state dicts written by ignite's ``ModelCheckpoint``) load unchanged and strictly.
Attribute names are the port's parameter names; class names say what a network is:

    PoseIntegrationGenerator  Generator1      G1, stage I "pose integration" (Sec. 3.1)
    ImageRefinementGenerator  Generator2      G2, stage II "image refinement" (Sec. 3.2)
    ImageDiscriminator        Discriminator   D, the DCGAN discriminator of Sec. 3.2

Both generators follow the authors' TensorFlow code (charliememory/Pose-Guided-Person-
Image-Generation, ``models.py``): G1 is ``GeneratorCNN_Pose_UAEAfterResidual``, a U-Net of
residual blocks with a fully connected bottleneck; G2 is ``UAE_noFC_After2Noise``
(Market-1501) or ``UAE_noFC_AfterNoise`` (DeepFashion, ``models256.py``), a U-Net without
one, whose output is the difference map added to G1's image. The discriminator is
``DCGANDiscriminator`` / ``DCGANDiscriminator_256`` of ``wgan_gp.py``. Images are RGB in
[-1, 1]; the target pose is 18 keypoint heat maps in [-1, 1] (COCO order).

``MARKET`` and ``DEEPFASHION`` hold the published sizes as the port's constructor
arguments; every constructor's defaults are ``MARKET``'s (128x64 images).

Padding. The authors' stride-2 convolutions pad "SAME": for an even input side TF pads
nothing on the top/left and one row/column (two for the discriminator's 5x5 kernels) on
the bottom/right. The port pads symmetrically (1, resp. 2), which gives the same output
size but samples the input one pixel further up and to the left. The port's weights were
trained with its padding, so it is the default here; ``tf_padding=True`` pads as TF does
and is what networks converted from the authors' TF checkpoint (``models.pg2.convert``)
are built with. The parameter names and shapes do not change with it, except that the
authors' discriminator convolutions carry biases (tflib's ``Conv2D``), which the port's do
not: ``ImageDiscriminator(tf_padding=True)`` has them.

Quirks of the port kept on purpose, because its weights depend on them:

* G1's decoder block 0 gets the ``up_fc`` map (``channels_base`` wide) beside the last
  encoder map; later decoder blocks get a 1x1-conv output as wide as their skip map.
* G2's ``num_skip_out_connect`` leading encoder blocks have no skip connection
  (Market-1501: the first; DeepFashion: none).
* The discriminator's fully connected layer assumes 128x64 (Market-1501, four stride-2
  convolutions) or 256x256 (DeepFashion, five) input: an 8x4 or 8x8 map.
* The authors' discriminator normalises with batch statistics even when testing
  (tflib's fused batch norm in training mode); the port's uses running statistics in
  eval mode as any ``nn.BatchNorm2d``. Only training uses the discriminator.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

# The published configurations as the port's constructor arguments (its ``stage1.toml`` /
# ``stage2.toml`` for Market-1501; the authors' ``run_DF_train.sh`` sizes for DeepFashion:
# ``repeat_num = log2(img_H) - 2`` G1 blocks, G2 two fewer, ``conv_hidden_num`` 128,
# ``z_num`` 64).
MARKET = {
    "g1": {"in_channels": 3 + 18, "num_repeat": 5, "middle_features_dim": 64, "channels_base": 128,
           "image_size": (128, 64)},
    "g2": {"in_channels": 3 + 3, "channels_base": 128, "num_repeat": 3, "num_skip_out_connect": 1},
    "discriminator": {"in_channels": 3, "channel_base": 64, "market_or_DF": True},
}
DEEPFASHION = {
    "g1": {"in_channels": 3 + 18, "num_repeat": 6, "middle_features_dim": 64, "channels_base": 128,
           "image_size": (256, 256)},
    "g2": {"in_channels": 3 + 3, "channels_base": 128, "num_repeat": 4, "num_skip_out_connect": 0},
    "discriminator": {"in_channels": 3, "channel_base": 64, "market_or_DF": False},
}


# ---------------------------------------------------------------------------------------
# Blocks


class SamePaddingConv2d(nn.Conv2d):
    """``nn.Conv2d`` padded as TensorFlow's ``padding="SAME"``: out = ceil(in / stride).

    The total padding ``max((out - 1) * stride + kernel - in, 0)`` is split with the odd
    pixel on the bottom/right, as TF does; it is computed from each input's size.
    Parameters are those of ``nn.Conv2d`` (``weight``, ``bias``).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, bias=True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, bias=bias)

    def forward(self, x):
        pads = []
        for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]   # F.pad order: left, right, top, bottom
        return super().forward(F.pad(x, pads))


def conv2d(in_channels, out_channels, kernel_size, stride=1, tf_padding=False, bias=True):
    """A convolution that keeps ``in / stride`` pixels: symmetric (the port) or TF "SAME" padding."""
    if tf_padding:
        return SamePaddingConv2d(in_channels, out_channels, kernel_size, stride, bias=bias)
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=bias)


def conv_relu(in_channels, out_channels, kernel_size=3, stride=1, tf_padding=False):
    """conv -> ReLU (``slim.conv2d(..., activation_fn=tf.nn.relu)``): keys ``0.weight``, ``0.bias``."""
    return nn.Sequential(conv2d(in_channels, out_channels, kernel_size, stride, tf_padding), nn.ReLU())


class ResidualBlock(nn.Module):
    """x + ReLU(conv(ReLU(conv(x)))), 3x3, width kept: the port's ``ResBlock``.

    The authors' G1 residual unit (Sec. 3.1, "each residual block consists of two
    convolution layers with stride=1"); note the ReLU before the sum. Parameters in
    ``main`` (0 and 2 the convolutions).
    """

    def __init__(self, channels):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU(),
        )

    def forward(self, x):
        return self.main(x) + x


class ResidualDownBlock(nn.Module):
    """G1 encoder block: residual block, then a stride-2 3x3 conv + ReLU (absent in the last).

    The port's ``_G1EncoderBlock``. Returns ``(skip, x)``: the residual block's output,
    kept for the decoder, and the downsampled map (the same map for the last block).
    """

    def __init__(self, in_channels, out_channels, is_last_block=True, tf_padding=False):
        super().__init__()
        self.is_last_block = is_last_block
        self.res = ResidualBlock(in_channels)
        if not is_last_block:
            self.conv = conv_relu(in_channels, out_channels, 3, 2, tf_padding)

    def forward(self, x):
        skip = self.res(x)
        return skip, (skip if self.is_last_block else self.conv(skip))


class ResidualUpBlock(nn.Module):
    """G1 decoder block: concat skip, residual block, then nearest x2 and a 1x1 conv + ReLU.

    The port's ``_G1DecoderBlock`` (the last block neither upsamples nor has ``conv``).
    """

    def __init__(self, in_channels, out_channels, is_last_block=True):
        super().__init__()
        self.is_last_block = is_last_block
        self.res = ResidualBlock(in_channels)
        if not is_last_block:
            self.conv = conv_relu(in_channels, out_channels, 1)

    def forward(self, x, skip):
        x = self.res(torch.cat([x, skip], dim=1))
        if self.is_last_block:
            return x
        return self.conv(F.interpolate(x, scale_factor=2))   # TF's resize_nearest_neighbor


class ConvDownBlock(nn.Module):
    """G2 encoder block: two 3x3 conv + ReLU, then a stride-2 conv + ReLU (absent in the last).

    The port's ``_G2EncoderBlock``: ``main`` (0, 2) and ``conv`` (0). Returns ``(skip, x)``
    as ``ResidualDownBlock``.
    """

    def __init__(self, in_channels, out_channels, is_last_block=True, tf_padding=False):
        super().__init__()
        self.is_last_block = is_last_block
        self.main = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1), nn.ReLU(),
        )
        if not is_last_block:
            self.conv = conv_relu(out_channels, out_channels, 3, 2, tf_padding)

    def forward(self, x):
        skip = self.main(x)
        return skip, (skip if self.is_last_block else self.conv(skip))


class ConvUpBlock(nn.Module):
    """G2 decoder block: two 3x3 conv + ReLU, then nearest x2 (not in the last): ``_G2DecoderBlock``."""

    def __init__(self, in_channels, out_channels, is_last_block=True):
        super().__init__()
        self.is_last_block = is_last_block
        self.main = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1), nn.ReLU(),
        )

    def forward(self, x):
        x = self.main(x)
        return x if self.is_last_block else F.interpolate(x, scale_factor=2)


# ---------------------------------------------------------------------------------------
# Generators


class PoseIntegrationGenerator(nn.Module):
    """G1 (Sec. 3.1, Fig. 2): condition image + target pose -> coarse target image.

    ``start_conv`` (3x3 to ``channels_base``); ``num_repeat`` encoder blocks, block i
    ``(i + 1) * channels_base`` wide; ``down_fc`` to the ``middle_features_dim``-d
    bottleneck and ``up_fc`` back to a ``channels_base``-wide map; ``num_repeat`` decoder
    blocks joined to the encoder by skip connections; ``end_conv`` to RGB (no activation).
    The port's ``Generator1``, the authors' ``GeneratorCNN_Pose_UAEAfterResidual``.

    Args:
        in_channels (int, default 21): image (3) + pose heat maps (18).
        num_repeat (int, default 5): encoder / decoder blocks, ``log2(height) - 2``
            (5 for Market-1501, 6 for DeepFashion).
        middle_features_dim (int, default 64): bottleneck length (``z_num``).
        channels_base (int, default 128): width of the first block (``conv_hidden_num``, n).
        image_size ((int, int), default (128, 64)): input height and width, each divisible
            by ``2 ** (num_repeat - 1)``.
        tf_padding (bool, default False): pad the stride-2 convolutions as TF's "SAME"
            (for weights converted from the authors' TF checkpoint).
    """

    def __init__(self, in_channels=21, num_repeat=5, middle_features_dim=64, channels_base=128,
                 image_size=(128, 64), tf_padding=False):
        super().__init__()
        self.config = {"in_channels": in_channels, "num_repeat": num_repeat,
                       "middle_features_dim": middle_features_dim, "channels_base": channels_base,
                       "image_size": tuple(image_size), "tf_padding": tf_padding}
        self.num_repeat = num_repeat
        self.channels_base = channels_base
        self.start_conv = conv_relu(in_channels, channels_base)
        self.encoder = nn.ModuleList([
            ResidualDownBlock(channels_base * (i + 1), channels_base * (i + 2), i == num_repeat - 1, tf_padding)
            for i in range(num_repeat)
        ])
        scale = 2 ** (num_repeat - 1)
        self.encoder_output_size = (int(image_size[0] / scale), int(image_size[1] / scale))
        map_pixels = self.encoder_output_size[0] * self.encoder_output_size[1]
        self.down_fc = nn.Linear(map_pixels * num_repeat * channels_base, middle_features_dim)
        self.up_fc = nn.Linear(middle_features_dim, map_pixels * channels_base)
        # Decoder block i sees skip map num_repeat - 1 - i ((num_repeat - i) * channels_base
        # wide) beside an equally wide map, except block 0, which gets up_fc's map.
        skip_channels = [(num_repeat - i) * channels_base for i in range(num_repeat)]
        in_channels_list = [skip + (channels_base if i == 0 else skip) for i, skip in enumerate(skip_channels)]
        self.decoder = nn.ModuleList([
            ResidualUpBlock(in_channels_list[i], (num_repeat - i - 1) * channels_base, i == num_repeat - 1)
            for i in range(num_repeat)
        ])
        self.end_conv = nn.Conv2d(in_channels_list[-1], 3, kernel_size=3, stride=1, padding=1)

    def forward(self, condition_img, target_pose):
        """condition_img (B, 3, H, W), target_pose (B, 18, H, W) -> G1's image (B, 3, H, W)."""
        x = self.start_conv(torch.cat([condition_img, target_pose], dim=1))
        skips = []
        for block in self.encoder:
            skip, x = block(x)
            skips.append(skip)
        z = self.down_fc(x.flatten(1))                                  # (B, middle_features_dim)
        x = self.up_fc(z).view(x.size(0), self.channels_base, *self.encoder_output_size)
        for block, skip in zip(self.decoder, reversed(skips)):
            x = block(x, skip)
        return self.end_conv(x)


class ImageRefinementGenerator(nn.Module):
    """G2 (Sec. 3.2, Fig. 2): condition image + G1's image -> difference map.

    The refined image is ``stage1_image + G2(condition_image, stage1_image)``. A U-Net
    without the fully connected bottleneck: ``start_conv``, ``num_repeat`` encoder blocks
    (block i ``(i + 1) * channels_base`` wide), ``num_repeat`` decoder blocks
    ``channels_base`` wide, ``end_conv`` to RGB. The port's ``Generator2``; the authors'
    ``UAE_noFC_After2Noise`` / ``UAE_noFC_AfterNoise`` without noise (``noise_dim=0``, as
    their trainers build it).

    Args:
        in_channels (int, default 6): condition image (3) + G1's image (3).
        channels_base (int, default 128): width (``conv_hidden_num``).
        num_repeat (int, default 3): encoder / decoder blocks, two fewer than G1's.
        num_skip_out_connect (int, default 1): leading encoder blocks without a skip
            connection (1 for Market-1501, 0 for DeepFashion).
        tf_padding (bool, default False): pad the stride-2 convolutions as TF's "SAME".
    """

    def __init__(self, in_channels=6, channels_base=128, num_repeat=3, num_skip_out_connect=1, tf_padding=False):
        super().__init__()
        self.config = {"in_channels": in_channels, "channels_base": channels_base, "num_repeat": num_repeat,
                       "num_skip_out_connect": num_skip_out_connect, "tf_padding": tf_padding}
        self.num_repeat = num_repeat
        self.num_skip_out_connect = num_skip_out_connect
        self.start_conv = conv_relu(in_channels, channels_base)
        self.encoder = nn.ModuleList([
            ConvDownBlock(channels_base * max(i, 1), channels_base * (i + 1), i == num_repeat - 1, tf_padding)
            for i in range(num_repeat)
        ])
        # Decoder block i concatenates encoder block num_repeat - 1 - i's output when that
        # block has a skip connection; block 0 gets the last encoder map itself.
        in_channels_list = []
        for i in range(num_repeat):
            x_channels = num_repeat * channels_base if i == 0 else channels_base
            has_skip = i < num_repeat - num_skip_out_connect
            in_channels_list.append(x_channels + ((num_repeat - i) * channels_base if has_skip else 0))
        self.decoder = nn.ModuleList([
            ConvUpBlock(in_channels_list[i], channels_base, i == num_repeat - 1) for i in range(num_repeat)
        ])
        self.end_conv = nn.Conv2d(channels_base, 3, kernel_size=3, stride=1, padding=1)

    def forward(self, condition_image, stage1_image):
        """condition_image, stage1_image (B, 3, H, W) -> difference map (B, 3, H, W)."""
        x = self.start_conv(torch.cat([condition_image, stage1_image], dim=1))
        skips = []
        for i, block in enumerate(self.encoder):
            skip, x = block(x)
            if i >= self.num_skip_out_connect:
                skips.append(skip)
        for i, block in enumerate(self.decoder):
            if i < self.num_repeat - self.num_skip_out_connect:
                x = torch.cat([x, skips[-1 - i]], dim=1)
            x = block(x)
        return self.end_conv(x)


# ---------------------------------------------------------------------------------------
# Discriminator


class ImageDiscriminator(nn.Module):
    """D (Sec. 3.2): an image -> one real/fake logit. DCGAN, 5x5 stride-2 convolutions.

    ``main``: conv + LeakyReLU(0.2), then (conv, BatchNorm, LeakyReLU) x 3 (x 4 for
    DeepFashion), widths ``channel_base`` x 1, 2, 4, 8 (, 8); ``fc`` on the flattened 8x4
    (8x8) map. The port's ``Discriminator``; the authors' ``DCGANDiscriminator`` (``_256``).
    The authors train it on real targets against condition images and G2's images.

    Args:
        in_channels (int, default 3): image channels.
        channel_base (int, default 64): width of the first convolution (``DIM``).
        market_or_DF (bool, default True): True for Market-1501 (128x64 input, four
            convolutions), False for DeepFashion (256x256, five).
        tf_padding (bool, default False): TF "SAME" padding and convolution biases, as the
            authors' tflib ``Conv2D`` (for weights converted from their TF checkpoint).
    """

    def __init__(self, in_channels=3, channel_base=64, market_or_DF=True, tf_padding=False):
        super().__init__()
        self.config = {"in_channels": in_channels, "channel_base": channel_base, "market_or_DF": market_or_DF,
                       "tf_padding": tf_padding}
        widths = [channel_base, channel_base * 2, channel_base * 4, channel_base * 8]
        if not market_or_DF:
            widths.append(channel_base * 8)
        conv = lambda i, o: conv2d(i, o, 5, 2, tf_padding, bias=tf_padding)
        layers = [conv(in_channels, widths[0]), nn.LeakyReLU(0.2, inplace=True)]
        for i, o in zip(widths[:-1], widths[1:]):
            layers += [conv(i, o), nn.BatchNorm2d(o), nn.LeakyReLU(0.2, inplace=True)]
        self.main = nn.Sequential(*layers)
        self.fc = nn.Linear(8 * 8 * channel_base * (4 if market_or_DF else 8), 1)

    def forward(self, x):
        """x (B, 3, 128, 64) or (B, 3, 256, 256) in [-1, 1] -> logits (B, 1)."""
        return self.fc(self.main(x).flatten(1))


# Registry network name -> class; their constructor arguments are the port's (``MARKET``).
NETWORKS = {"g1": PoseIntegrationGenerator, "g2": ImageRefinementGenerator, "discriminator": ImageDiscriminator}
