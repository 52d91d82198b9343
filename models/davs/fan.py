"""The one-stack face alignment network (FAN) inside DAVS's lip-feature encoder.

Bulat and Tzimiropoulos, "How far are we from solving the 2D & 3D Face Alignment
problem?", ICCV 2017 (arXiv:1703.07332): a stem, one hourglass and a 1x1 head that
draws 68 landmark heatmaps at a quarter of the input size. DAVS (Zhou et al., AAAI 2019)
reads the lips through these heatmaps; layer for layer as ``FAN_use`` in the authors'
``network/FAN_feature_extractor.py``, so the checkpoint's ``lip_feature_encoder.model.*``
entries load unchanged.

Quirks kept on purpose:

* The hourglass upsamples with ``F.upsample(mode='bilinear')`` of PyTorch 0.2, which
  aligned corners (``align_corners=True`` in today's terms).
* The hourglass applies ``Dropout(0.5)`` to its upper branch at every level: identity
  in eval mode, active while training.
* ``FAN_use`` builds ``conv5``, ``avgpool``, ``conv6`` and ``fc`` and never uses them;
  they are kept because the checkpoint holds their parameters.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv3x3(in_channels, out_channels):
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)


class FanConvBlock(nn.Module):
    """FAN's pre-activation residual block (the authors' ``ConvBlock``).

    Three BN-ReLU-conv steps with out/2, out/4 and out/4 channels, their outputs
    concatenated to ``out_channels`` and added to the input (through BN-ReLU-1x1 conv
    when the channel count changes).
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        half, quarter = out_channels // 2, out_channels // 4
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, half)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = _conv3x3(half, quarter)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = _conv3x3(quarter, quarter)
        self.downsample = None
        if in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.BatchNorm2d(in_channels), nn.ReLU(True),
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, bias=False),
            )

    def forward(self, x):
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.cat((out1, out2, out3), 1) + residual


class HourGlass(nn.Module):
    """Recursive hourglass of ``depth`` levels, every block ``features`` channels wide.

    Level ``l`` owns ``b1_l`` (upper branch, full size), ``b2_l`` (after 2x2 max pooling)
    and ``b3_l`` (before upsampling back); the innermost level adds ``b2_plus_1``.
    """

    def __init__(self, depth=4, features=256):
        super().__init__()
        self.depth = depth
        self.dropout = nn.Dropout(0.5)
        self._build(depth, features)

    def _build(self, level, features):
        # The checkpoint names blocks by level ("m0.b1_4", ...) in this recursive order.
        self.add_module(f"b1_{level}", FanConvBlock(features, features))
        self.add_module(f"b2_{level}", FanConvBlock(features, features))
        if level > 1:
            self._build(level - 1, features)
        else:
            self.add_module(f"b2_plus_{level}", FanConvBlock(features, features))
        self.add_module(f"b3_{level}", FanConvBlock(features, features))

    def _level(self, level, x):
        upper = self.dropout(self._modules[f"b1_{level}"](x))
        lower = self._modules[f"b2_{level}"](F.max_pool2d(x, 2, stride=2))
        if level > 1:
            lower = self._level(level - 1, lower)
        else:
            lower = self._modules[f"b2_plus_{level}"](lower)
        lower = self._modules[f"b3_{level}"](lower)
        # PyTorch 0.2's bilinear upsampling aligned corners.
        lower = F.interpolate(lower, size=upper.shape[2:], mode="bilinear", align_corners=True)
        return upper + lower

    def forward(self, x):
        return self._level(self.depth, x)


class FAN(nn.Module):
    """Stem + one hourglass + heatmap head: image (N, 3, S, S) -> heatmaps (N, 68, S/4, S/4).

    Args:
        base_channels (int, default 64): stem width; the hourglass is 4x as wide (256).
        num_landmarks (int, default 68): heatmaps drawn.
        feature_length (int, default 256) and image_size (int, default 256): only shape
            the unused ``fc`` (kept for the checkpoint), as in ``FanFusion``.
    """

    def __init__(self, base_channels=64, num_landmarks=68, feature_length=256, image_size=256):
        super().__init__()
        b, width = base_channels, 4 * base_channels
        self.conv1 = nn.Conv2d(3, b, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(b)
        self.conv2 = FanConvBlock(b, 2 * b)
        self.conv3 = FanConvBlock(2 * b, 2 * b)
        self.conv4 = FanConvBlock(2 * b, width)
        self.m0 = HourGlass(4, width)
        self.top_m_0 = FanConvBlock(width, width)
        self.conv_last0 = nn.Conv2d(width, width, kernel_size=1, stride=1, padding=0)
        self.l0 = nn.Conv2d(width, num_landmarks, kernel_size=1, stride=1, padding=0)
        self.bn_end0 = nn.BatchNorm2d(width)
        # Built by the authors, never called; the checkpoint holds their parameters.
        self.conv5 = nn.Conv2d(width, width, kernel_size=5, stride=3, padding=1)
        self.avgpool = nn.MaxPool2d((2, 2), 2)
        self.conv6 = nn.Conv2d(num_landmarks, 1, 3, 2, 1)
        self.fc = nn.Linear((image_size // 8) ** 2, feature_length)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))                  # (N, b, S/2, S/2)
        x = F.max_pool2d(self.conv2(x), 2)                   # (N, 2b, S/4, S/4)
        x = self.conv4(self.conv3(x))
        x = self.top_m_0(self.m0(x))
        x = self.bn_end0(self.conv_last0(x))
        return self.l0(F.relu(x))                            # (N, 68, S/4, S/4)
