"""ATVGnet networks: AT-net, VG-net and the regression-based discriminator.

Chen, Maddox, Duan and Xu, "Hierarchical Cross-Modal Talking Face Generation with Dynamic
Pixel-Wise Loss", CVPR 2019 (arXiv:1905.03820). Layer for layer as the authors' released
code (lelechen63/ATVGnet, ``code/models.py``), so their checkpoints ``atnet_lstm_18.pth``
and ``generator_23.pth`` load unchanged once the ``module.`` prefix of
``nn.DataParallel`` is removed (``models.weights.strip_module_prefix``). Attribute names,
typos included (``audio_eocder``), are the checkpoints' parameter names.

The authors loop over time steps; here every per-frame computation runs once on all
frames folded into the batch, which gives the same numbers faster.

Quirks of the authors' code that the released weights depend on, kept on purpose:

* VG-net's ConvGRU is built without ``batch_first`` while VG-net stacks frames on
  dimension 1. The GRU therefore runs along the *batch* dimension and sees the frames as
  a batch: at batch size 1 (the demo, and this project's pipeline) every frame is
  generated independently from a zero state, and the hidden-to-hidden weights only
  contribute their bias. At batch size B > 1 (training) the recurrence runs across the B
  clips of the batch.
* VG-net's landmark encoder is shared between the example landmarks and the per-frame
  landmarks, and the attention map is computed from the encoded landmarks *before*
  ``lmark_feature``.
* GL_Discriminator averages its per-frame decisions with ``AvgPool1d(16)``: it scores
  16-frame clips, as in training, and ``decoder`` is defined but never used.
* ResnetBlocks of VG-net carry dropout (identity in eval mode); the ConvGRU's dropout
  acts only between layers, and it has one layer, so it never applies.
"""

import torch
import torch.nn as nn

from models.common.blocks import ConvGRU, ResnetBlock, conv_norm_act


def _repeat_frames(x, frames):
    """(B, ...) -> (B*T, ...): a per-clip tensor repeated for each of its T frames."""
    return x.unsqueeze(1).expand(x.shape[0], frames, *x.shape[1:]).flatten(0, 1)


class ATNet(nn.Module):
    """AT-net (audio transformation network), the LSTM variant of the authors' demo.

    Maps an example landmark's 6 PCA coefficients and a sequence of 28x12 MFCC windows
    (one per 25-fps video frame) to the 6 PCA coefficients of each frame's landmarks
    (paper Sec. 3.1, Eq. 1: the audio features and the identity landmark feature are
    concatenated and fed to a 3-layer LSTM).

    Args:
        width: channel scale; 64 is the published network. Smaller values give the
            reduced-width variant used for quick training runs.
    """

    def __init__(self, width=64):
        super().__init__()
        w = width
        self.config = {"width": width}
        self.lmark_encoder = nn.Sequential(
            nn.Linear(6, 4 * w), nn.ReLU(True),
            nn.Linear(4 * w, 8 * w), nn.ReLU(True),
        )
        self.audio_eocder = nn.Sequential(
            conv_norm_act(1, w), conv_norm_act(w, 2 * w),
            nn.MaxPool2d(3, stride=(1, 2)),
            conv_norm_act(2 * w, 4 * w), conv_norm_act(4 * w, 4 * w), conv_norm_act(4 * w, 8 * w),
            nn.MaxPool2d(3, stride=(2, 2)),
        )
        # A 28x12 window leaves a 12x2 map after the two poolings.
        self.audio_eocder_fc = nn.Sequential(
            nn.Linear(8 * w * 12 * 2, 32 * w), nn.ReLU(True),
            nn.Linear(32 * w, 4 * w), nn.ReLU(True),
        )
        self.lstm = nn.LSTM(12 * w, 4 * w, 3, batch_first=True)
        self.lstm_fc = nn.Sequential(nn.Linear(4 * w, 6))

    def forward(self, example_landmark, audio):
        """example_landmark (B, 6), audio (B, T, 28, 12) -> PCA coefficients (B, T, 6)."""
        return self.step(example_landmark, audio)[0]

    def step(self, example_landmark, audio, state=None):
        """``forward`` that also takes and returns the LSTM state ``(h, c)``.

        Feeding a long clip in consecutive pieces with the state carried over gives the
        same result as feeding it whole, with memory bounded by the piece length.
        """
        batch, frames = audio.shape[:2]
        identity = self.lmark_encoder(example_landmark)
        sound = self.audio_eocder(audio.reshape(batch * frames, 1, *audio.shape[2:]))
        sound = self.audio_eocder_fc(sound.flatten(1)).view(batch, frames, -1)
        features = torch.cat([identity.unsqueeze(1).expand(-1, frames, -1), sound], 2)
        out, state = self.lstm(features, state)
        return self.lstm_fc(out), state


class VGNet(nn.Module):
    """VG-net (visual generating network): landmarks + example face -> frames.

    Paper Sec. 3.2: the example image and landmark differences are encoded, a ConvGRU
    (Sec. 3.2, 'temporal'), a landmark-driven attention that mixes the generated and
    reference features (Eq. 3), and the dynamic pixel-wise attention of Eq. 4:
    ``output = att * color + (1 - att) * image``.

    Args:
        ngf: channel scale; 64 is the published network (it fixes every channel count
            of the authors' code, which hard-codes those of ngf = 64).
    """

    def __init__(self, ngf=64, n_blocks=9, use_dropout=True):
        super().__init__()
        c = ngf
        self.config = {"ngf": ngf, "n_blocks": n_blocks, "use_dropout": use_dropout}
        self.image_encoder1 = nn.Sequential(
            nn.ReflectionPad2d(3),
            conv_norm_act(3, c, 7, 1, 0),
            conv_norm_act(c, c, 3, 2, 1),
            conv_norm_act(c, 2 * c, 3, 2, 1),
        )
        self.image_encoder2 = nn.Sequential(
            conv_norm_act(2 * c, 4 * c, 3, 2, 1),
            conv_norm_act(4 * c, 8 * c, 3, 2, 1),
        )
        # 136 landmark coordinates -> one 8x8 map (the 128x128 image's bottleneck size).
        self.landmark_encoder = nn.Sequential(nn.Linear(136, 64), nn.ReLU(True))
        self.landmark_encoder_stage2 = nn.Sequential(conv_norm_act(1, 4 * c))
        self.lmark_att = nn.Sequential(
            nn.ConvTranspose2d(8 * c, 4 * c, kernel_size=3, stride=2, padding=1, output_padding=1),
            nn.BatchNorm2d(4 * c), nn.ReLU(True),
            nn.ConvTranspose2d(4 * c, 2 * c, kernel_size=3, stride=2, padding=1, output_padding=1),
            nn.BatchNorm2d(2 * c), nn.ReLU(True),
            conv_norm_act(2 * c, 1, activation=nn.Sigmoid, norm=None),
        )
        self.lmark_feature = nn.Sequential(conv_norm_act(4 * c, 8 * c))

        blocks = [ResnetBlock(8 * c, "zero", nn.BatchNorm2d, use_dropout, use_bias=False)
                  for _ in range(n_blocks)]
        self.generator1 = nn.Sequential(*blocks, *self._up(8 * c), *self._up(4 * c))
        self.base = nn.Sequential(*self._up(2 * c), *self._up(c))
        self.generator_color = nn.Sequential(nn.Conv2d(c // 2, 3, kernel_size=7, padding=3), nn.Tanh())
        self.generator_attention = nn.Sequential(nn.Conv2d(c // 2, 1, kernel_size=7, padding=3), nn.Sigmoid())
        self.bottle_neck = nn.Sequential(conv_norm_act(16 * c, 2 * c))
        self.convGRU = ConvGRU(2 * c, 8 * c, kernel_size=3, num_layers=1, dilation=2, dropout=0.5)

    @staticmethod
    def _up(channels):
        return [nn.ConvTranspose2d(channels, channels // 2, kernel_size=3, stride=2, padding=1,
                                   output_padding=1, bias=False),
                nn.BatchNorm2d(channels // 2), nn.ReLU(True)]

    def forward(self, image, landmarks, example_landmark):
        """image (B, 3, 128, 128) in [-1, 1], landmarks (B, T, 136), example_landmark (B, 136).

        Returns ``(frames, attention, color, landmark_attention)``, shaped
        (B, T, 3, 128, 128), (B, T, 1, 128, 128), (B, T, 3, 128, 128), (B, T, 1, 32, 32).
        """
        batch, frames = landmarks.shape[:2]
        image_feature1 = self.image_encoder1(image)
        image_feature = self.image_encoder2(image_feature1)
        size = image_feature.shape[2:]

        example = self.landmark_encoder(example_landmark.reshape(batch, -1)).view(batch, 1, *size)
        example = self.landmark_encoder_stage2(example)
        example_feature = self.lmark_feature(example)

        landmark = self.landmark_encoder(landmarks.reshape(batch * frames, -1)).view(-1, 1, *size)
        landmark = self.landmark_encoder_stage2(landmark)
        lmark_atts = self.lmark_att(torch.cat([landmark, _repeat_frames(example, frames)], 1))
        landmark = self.lmark_feature(landmark)

        gru_input = self.bottle_neck(torch.cat(
            [_repeat_frames(image_feature, frames), landmark - _repeat_frames(example_feature, frames)], 1))
        # (B, T, ...) goes in as (seq=B, batch=T, ...): the authors' layout, see the module docstring.
        gru_output, _ = self.convGRU(gru_input.unflatten(0, (batch, frames)))

        feature = self.generator1(gru_output.flatten(0, 1))
        feature = _repeat_frames(image_feature1, frames) * (1 - lmark_atts) + feature * lmark_atts
        base = self.base(feature)
        color = self.generator_color(base)
        att = self.generator_attention(base)
        output = att * color + (1 - att) * _repeat_frames(image, frames)
        return tuple(x.unflatten(0, (batch, frames)) for x in (output, att, color, lmark_atts))


class GLDiscriminator(nn.Module):
    """The regression-based discriminator of the paper (Sec. 3.3, Eq. 5-6).

    From a 16-frame clip and the example landmark it returns a real/fake score of the
    clip and regresses the landmarks of every frame (added to the example landmark).
    Named ``GL_Discriminator`` in the authors' code.

    Args:
        width: channels of the first image convolution (then x2, x4, x8); 64 is the
            authors' network. Smaller widths make reduced-width training runs cheaper.
    """

    def __init__(self, width=64):
        super().__init__()
        w = width
        self.config = {"width": width}
        self.image_encoder_dis = nn.Sequential(
            conv_norm_act(3, w, 3, 2, 1, norm=None),
            conv_norm_act(w, 2 * w, 3, 2, 1),
            conv_norm_act(2 * w, 4 * w, 3, 2, 1),
            conv_norm_act(4 * w, 8 * w, 3, 2, 1),
        )
        self.encoder = nn.Sequential(nn.Linear(136, 256), nn.ReLU(True), nn.Linear(256, 512), nn.ReLU(True))
        self.decoder = nn.Sequential(nn.Linear(1024, 512), nn.ReLU(True), nn.Linear(512, 136), nn.Tanh())
        self.img_fc = nn.Sequential(nn.Linear(8 * w * 8 * 8, 512), nn.ReLU(True))
        self.lstm = nn.LSTM(1024, 256, 3, batch_first=True)
        self.lstm_fc = nn.Sequential(nn.Linear(256, 136), nn.Tanh())
        self.decision = nn.Sequential(nn.Linear(256, 1))
        self.aggregator = nn.AvgPool1d(kernel_size=16)
        self.activate = nn.Sigmoid()

    def forward(self, xs, example_landmark):
        """xs (B, 16, 3, 128, 128), example_landmark (B, 136) -> (score (B,), landmarks (B, 16, 136))."""
        batch, frames = xs.shape[:2]
        identity = self.encoder(example_landmark)
        image = self.image_encoder_dis(xs.flatten(0, 1))
        image = self.img_fc(image.flatten(1)).view(batch, frames, -1)
        out, _ = self.lstm(torch.cat([identity.unsqueeze(1).expand(-1, frames, -1), image], 2))
        decision = self.activate(self.aggregator(self.decision(out).transpose(1, 2)))
        landmarks = self.lstm_fc(out) + example_landmark.unsqueeze(1)
        return decision.view(batch), landmarks
