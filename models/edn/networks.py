"""Everybody Dance Now networks: pix2pixHD generators with a temporal input, the face
residual generator, the temporal multiscale discriminator, the face discriminator and
the VGG-19 of the perceptual loss.

Chan, Ginosar, Zhou and Efros, "Everybody Dance Now", ICCV 2019 (arXiv:1808.07371).
Layer for layer as the authors' code (carolineec/EverybodyDanceNow ``models/networks.py``,
itself NVIDIA/pix2pixHD's ``models/networks.py`` with a face generator and discriminator
added), so the state dicts that pix2pixHD's ``BaseModel.save_network`` writes
(``latest_net_G.pth``, ``latest_net_Gface.pth``, ``latest_net_D.pth``,
``latest_net_Dface.pth``: a bare ``state_dict()``) load strictly. Attribute names are
the checkpoints' parameter names; constructors take pix2pixHD's option names:

    GlobalGenerator          GlobalGenerator                      G, global stage
    LocalEnhancer            LocalEnhancer                        G, local stage
    FaceResidualGenerator    GlobalGenerator via define_G         Gface, --faceGtype global
    FaceUnetGenerator        UnetGenerator via define_G           Gface, --faceGtype unet
    MultiscaleDiscriminator  MultiscaleDiscriminator              D, temporal
    FaceDiscriminator        NLayerDiscriminator(addname='face')  Dface
    Vgg19Features            Vgg19                                VGGLoss's network

The generators and discriminators are pix2pixHD's (Wang et al., "High-Resolution Image
Synthesis and Semantic Manipulation with Conditional GANs", CVPR 2018, Sec. 3.2); EDN
adds the previous frame to the generator's input and two time steps to the
discriminator's (its section "Temporal smoothing"), and the face generator and
discriminator (its section "Face GAN").

Defaults are EDN's published configuration, from the commands of the authors' README
and the option defaults of ``options/base_options.py`` / ``train_options.py``:

* Generator input ``input_nc = 6``: ``Pix2PixHDModel.initialize`` builds G with
  ``label_nc`` (+1 without ``--no_instance``) channels and the README passes
  ``--label_nc 6 --no_instance``; the six are the 3-channel pose label and the previous
  generated frame (``inference``: ``torch.cat((input_label, prevouts), dim=1)``).
* Global stage: ``--ngf 64 --n_downsample_global 4 --n_blocks_global 9 --norm instance``
  (base option defaults; the README's global command sets none of them).
* Local stage: README ``--netG local --ngf 32``; ``--n_local_enhancers 1
  --n_blocks_local 3`` are defaults. Its inner global generator is 2x as wide (64).
* Face residual generator: README ``--face_generator --faceGtype global``, built in
  ``initialize`` as ``define_G(2 * output_nc, output_nc, 64, 'global',
  n_downsample_global=3, n_blocks_global=5, norm=opt.norm)``: input is the label crop
  and the generated crop (6 channels). ``--faceGtype``'s default, ``unet``, builds
  ``UnetGenerator(6, 3, 3, ngf=64, norm_layer=nn.BatchNorm2d)`` whatever ``--ngf`` and
  ``--norm`` say; its ``num_downs=3`` is below the five levels the class always builds,
  so the U-Net has five levels (a 128 face -> 4x4).
* Discriminator: ``netD_input_nc = 4 * output_nc = 12``, the labels and frames of two
  consecutive time steps (``discriminate_4``: ``cat(s0, s1, i0, i1)``); ``--ndf 64
  --n_layers_D 3``; least-squares GAN (no sigmoid); feature matching on, so the
  intermediate features are kept (``getIntermFeat``: keys ``scale<i>_layer<j>``).
  ``--num_D``: 3 in the README's local and face stages (the default here); the global
  stage ran ``train_options``' default 2.
* Face discriminator: ``define_D(2 * output_nc, ..., netD='face')`` is
  ``NLayerDiscriminator(6, ndf=64, n_layers=opt.n_layers_D, norm_layer=nn.BatchNorm2d)``
  with no sigmoid and no intermediate features; ``--ndf``, ``--norm`` and
  ``--n_layers_D_face`` are ignored by the authors' code. Its input is the label crop
  and a face crop.

Quirks of the authors' code kept on purpose:

* pix2pixHD's ``weights_init`` (conv weights N(0, 0.02), conv biases left at PyTorch's
  default, BatchNorm scale N(1, 0.02)) is applied by every constructor, as ``define_G``
  / ``define_D`` do.
* The discriminator's ``use_sigmoid`` (``--no_lsgan``) follows pix2pixHD: EDN's
  ``NLayerDiscriminator`` appends a bare ``nn.Sigmoid`` where pix2pixHD appends a list
  and crashes at construction. With intermediate features pix2pixHD builds the sigmoid
  stage but its forward never runs it (and ``MultiscaleDiscriminator`` does not keep it).
* In the U-Net every inner block starts with an in-place LeakyReLU, which rewrites the
  block's input before it is concatenated: the skip carries LeakyReLU(x), not x.
* The authors' test script (``test_fullts.py``) never calls ``eval()``: BatchNorm layers
  (the U-Net face generator, ``--norm batch``) normalise with the statistics of the test
  batch. Instance norm, the published choice, is the same in both modes.
* Inference feeds the generated frame back after the face residual is added, without
  clamping (the face box may leave [-1, 1]). Label maps are in [0, 1] (``ToTensor``,
  ``normalize=False``), frames in [-1, 1].

Not kept: pix2pixHD's ``Encoder`` (instance-wise features, unused with
``--no_instance``) and the print statements of ``define_G`` / ``define_D``.
"""

import functools
from typing import NamedTuple

import torch
import torch.nn as nn

from models.common.blocks import ResnetBlock
from models.weights import WeightsInvalid

# ------------------------------------------------------------------ options


def norm_layer_for(norm):
    """pix2pixHD's ``get_norm_layer``: 'instance' (no affine, no running stats) or 'batch'."""
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False)
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True)
    raise ValueError(f"norm {norm!r} is not one of instance, batch")


def init_weights(module):
    """pix2pixHD's ``weights_init``: conv and transposed-conv weights N(0, 0.02), BatchNorm
    scales N(1, 0.02) and shifts 0. Conv biases keep PyTorch's default initialisation."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


# ------------------------------------------------------------------ generators

def global_generator_layers(input_nc, output_nc, ngf, n_downsampling, n_blocks, norm_layer):
    """The layers of pix2pixHD's ``GlobalGenerator.model``, in checkpoint order.

    7x7 stem, ``n_downsampling`` stride-2 convs doubling the width, ``n_blocks`` reflect-
    padded residual blocks, as many transposed convs halving it, 7x7 conv and tanh. The
    last three layers are the output head a ``LocalEnhancer`` leaves out.
    """
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0), norm_layer(ngf),
              nn.ReLU(True)]
    for i in range(n_downsampling):
        width = ngf * 2 ** i
        layers += [nn.Conv2d(width, 2 * width, kernel_size=3, stride=2, padding=1), norm_layer(2 * width),
                   nn.ReLU(True)]
    width = ngf * 2 ** n_downsampling
    layers += [ResnetBlock(width, padding_type="reflect", norm_layer=norm_layer, use_bias=True)
               for _ in range(n_blocks)]
    for i in range(n_downsampling):
        width = ngf * 2 ** (n_downsampling - i)
        layers += [nn.ConvTranspose2d(width, width // 2, kernel_size=3, stride=2, padding=1, output_padding=1),
                   norm_layer(width // 2), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
    return layers


class GlobalGenerator(nn.Module):
    """pix2pixHD's global generator G1 (Sec. 3.2, "Coarse-to-fine generator"), EDN's first stage.

    Args:
        input_nc (int, default 6): label channels plus the previous frame's (3 + 3).
        output_nc (int, default 3): RGB frame in [-1, 1].
        ngf (int, default 64): width of the first layer.
        n_downsample_global (int, default 4): stride-2 convolutions (H and W must be
            multiples of 2**n_downsample_global).
        n_blocks_global (int, default 9): residual blocks at the bottleneck.
        norm (str, default 'instance'): 'instance' or 'batch'.
    """

    def __init__(self, input_nc=6, output_nc=3, ngf=64, n_downsample_global=4, n_blocks_global=9, norm="instance"):
        super().__init__()
        if n_blocks_global < 0:
            raise ValueError("n_blocks_global must be >= 0")
        self.config = {"input_nc": input_nc, "output_nc": output_nc, "ngf": ngf,
                       "n_downsample_global": n_downsample_global, "n_blocks_global": n_blocks_global, "norm": norm}
        self.model = nn.Sequential(*global_generator_layers(
            input_nc, output_nc, ngf, n_downsample_global, n_blocks_global, norm_layer_for(norm)))
        init_weights(self)

    def forward(self, x):
        """x (B, input_nc, H, W) -> frame (B, output_nc, H, W) in [-1, 1]."""
        return self.model(x)


class LocalEnhancer(nn.Module):
    """pix2pixHD's coarse-to-fine generator G = {G1, G2} (Sec. 3.2), EDN's local stage.

    A global generator ``ngf * 2**n_local_enhancers`` wide without its output head
    (``model``) runs on the input downsampled ``n_local_enhancers`` times; each enhancer
    ``n`` adds its front end (``model<n>_1``: 7x7 stem and one stride-2 conv) on the
    input at its scale to the coarser result and runs its back end (``model<n>_2``:
    residual blocks and one transposed conv; the last one also the 7x7 conv and tanh).

    Args:
        input_nc (int, default 6), output_nc (int, default 3): as ``GlobalGenerator``.
        ngf (int, default 32): width of the finest enhancer.
        n_downsample_global (int, default 4), n_blocks_global (int, default 9): of the
            inner global generator.
        n_local_enhancers (int, default 1): enhancers, each doubling the resolution.
        n_blocks_local (int, default 3): residual blocks per enhancer.
        norm (str, default 'instance'): 'instance' or 'batch'.

    H and W must be multiples of 2**(n_downsample_global + n_local_enhancers).
    """

    def __init__(self, input_nc=6, output_nc=3, ngf=32, n_downsample_global=4, n_blocks_global=9,
                 n_local_enhancers=1, n_blocks_local=3, norm="instance"):
        super().__init__()
        self.config = {"input_nc": input_nc, "output_nc": output_nc, "ngf": ngf,
                       "n_downsample_global": n_downsample_global, "n_blocks_global": n_blocks_global,
                       "n_local_enhancers": n_local_enhancers, "n_blocks_local": n_blocks_local, "norm": norm}
        self.n_local_enhancers = n_local_enhancers
        norm_layer = norm_layer_for(norm)
        global_layers = global_generator_layers(input_nc, output_nc, ngf * 2 ** n_local_enhancers,
                                                n_downsample_global, n_blocks_global, norm_layer)
        self.model = nn.Sequential(*global_layers[:-3])     # without the output head
        for n in range(1, n_local_enhancers + 1):
            width = ngf * 2 ** (n_local_enhancers - n)
            front = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, width, kernel_size=7, padding=0), norm_layer(width),
                     nn.ReLU(True),
                     nn.Conv2d(width, 2 * width, kernel_size=3, stride=2, padding=1), norm_layer(2 * width),
                     nn.ReLU(True)]
            back = [ResnetBlock(2 * width, padding_type="reflect", norm_layer=norm_layer, use_bias=True)
                    for _ in range(n_blocks_local)]
            back += [nn.ConvTranspose2d(2 * width, width, kernel_size=3, stride=2, padding=1, output_padding=1),
                     norm_layer(width), nn.ReLU(True)]
            if n == n_local_enhancers:
                back += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
            # The checkpoint names them model<n>_1 and model<n>_2.
            self.add_module(f"model{n}_1", nn.Sequential(*front))
            self.add_module(f"model{n}_2", nn.Sequential(*back))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=[1, 1], count_include_pad=False)
        init_weights(self)

    def forward(self, x):
        """x (B, input_nc, H, W) -> frame (B, output_nc, H, W) in [-1, 1]."""
        pyramid = [x]                                       # full resolution first
        for _ in range(self.n_local_enhancers):
            pyramid.append(self.downsample(pyramid[-1]))
        out = self.model(pyramid[-1])
        for n in range(1, self.n_local_enhancers + 1):
            front, back = getattr(self, f"model{n}_1"), getattr(self, f"model{n}_2")
            out = back(front(pyramid[self.n_local_enhancers - n]) + out)
        return out


class FaceResidualGenerator(GlobalGenerator):
    """EDN's face residual generator G_f (section "Face GAN"; ``--faceGtype global``).

    A ``GlobalGenerator`` (same keys) with the face stage's fixed options: it reads the
    label crop and the generated crop of the face box (3 + 3 channels) and returns a
    residual in [-1, 1] added to the generated crop (``add_face_residual``).

    Args:
        input_nc (int, default 6), output_nc (int, default 3).
        ngf (int, default 64), n_downsample_global (int, default 3), n_blocks_global
            (int, default 5): fixed in the authors' ``initialize``.
        norm (str, default 'instance'): the run's ``--norm``.
    """

    def __init__(self, input_nc=6, output_nc=3, ngf=64, n_downsample_global=3, n_blocks_global=5, norm="instance"):
        super().__init__(input_nc, output_nc, ngf, n_downsample_global, n_blocks_global, norm)


class UnetSkipBlock(nn.Module):
    """One level of the pix2pix U-Net (the authors' ``UnetSkipConnectionBlock``).

    Down: [LeakyReLU,] 4x4 stride-2 conv[, norm]; the inner block; up: ReLU, 4x4
    stride-2 transposed conv, norm (tanh at the outermost level). Inner levels return
    ``cat(x, up(...))`` -- with the first LeakyReLU working in place, ``x`` is already
    LeakyReLU(x) by then, as in the authors' code. Convolutions have biases only with
    instance norm, and the outermost transposed conv always.
    """

    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False, innermost=False,
                 norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.outermost = outermost
        use_bias = getattr(norm_layer, "func", norm_layer) is nn.InstanceNorm2d
        input_nc = outer_nc if input_nc is None else input_nc
        down_conv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        if outermost:
            up_conv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            layers = [down_conv, submodule, nn.ReLU(True), up_conv, nn.Tanh()]
        elif innermost:
            up_conv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            layers = [nn.LeakyReLU(0.2, True), down_conv, nn.ReLU(True), up_conv, norm_layer(outer_nc)]
        else:
            up_conv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            layers = [nn.LeakyReLU(0.2, True), down_conv, norm_layer(inner_nc), submodule,
                      nn.ReLU(True), up_conv, norm_layer(outer_nc)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        y = self.model(x)           # rewrites x in place (the first LeakyReLU)
        return torch.cat([x, y], 1)


class FaceUnetGenerator(nn.Module):
    """EDN's U-Net face residual generator (``--faceGtype unet``, the option's default).

    Five levels whatever ``num_downs`` says (see the module docstring), BatchNorm always;
    the face box side must be a multiple of 32. Same inputs and output as
    ``FaceResidualGenerator``. In the authors' test script it runs in training mode.

    Args:
        input_nc (int, default 6), output_nc (int, default 3).
        ngf (int, default 64): fixed at 64 by the authors' ``define_G``.
    """

    def __init__(self, input_nc=6, output_nc=3, ngf=64):
        super().__init__()
        self.config = {"input_nc": input_nc, "output_nc": output_nc, "ngf": ngf}
        block = UnetSkipBlock(ngf * 8, ngf * 8, innermost=True)
        block = UnetSkipBlock(ngf * 4, ngf * 8, submodule=block)
        block = UnetSkipBlock(ngf * 2, ngf * 4, submodule=block)
        block = UnetSkipBlock(ngf, ngf * 2, submodule=block)
        self.model = UnetSkipBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True)
        init_weights(self)

    def forward(self, x):
        """x (B, input_nc, S, S) -> residual (B, output_nc, S, S) in [-1, 1]."""
        return self.model(x)


# ------------------------------------------------------------------ discriminators

class NLayerDiscriminator(nn.Module):
    """pix2pixHD's PatchGAN: 4x4 convs, ``n_layers`` of stride 2, then two of stride 1.

    Widths ndf, 2ndf, ... capped at 512; LeakyReLU(0.2); no norm after the first conv;
    one output channel (a map of patch scores). The stages are kept apart
    (``<prefix>model0`` ... ``<prefix>model<n_layers+1>``) when ``intermediate_features``
    (feature matching), else one ``<prefix>model`` sequence.

    Args:
        input_nc (int): input channels.
        ndf (int, default 64): width of the first layer.
        n_layers (int, default 3): stride-2 convolutions.
        norm_layer (callable, default nn.BatchNorm2d): from ``norm_layer_for``.
        use_sigmoid (bool, default False): end with a sigmoid (vanilla GAN); with
            ``intermediate_features`` it is built and never run, as in pix2pixHD.
        intermediate_features (bool, default False): return every stage's output.
        name_prefix (str, default ''): the authors' ``addname`` ('face' for Dface).
    """

    def __init__(self, input_nc, ndf=64, n_layers=3, norm_layer=nn.BatchNorm2d, use_sigmoid=False,
                 intermediate_features=False, name_prefix=""):
        super().__init__()
        self.n_layers, self.intermediate_features, self.name_prefix = n_layers, intermediate_features, name_prefix
        kw, padw = 4, 2                                     # padw = ceil((kw - 1) / 2)
        stages = [[nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]]
        nf = ndf
        for _ in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 512)
            stages.append([nn.Conv2d(nf_prev, nf, kernel_size=kw, stride=2, padding=padw), norm_layer(nf),
                           nn.LeakyReLU(0.2, True)])
        nf_prev, nf = nf, min(nf * 2, 512)
        stages.append([nn.Conv2d(nf_prev, nf, kernel_size=kw, stride=1, padding=padw), norm_layer(nf),
                       nn.LeakyReLU(0.2, True)])
        stages.append([nn.Conv2d(nf, 1, kernel_size=kw, stride=1, padding=padw)])
        if use_sigmoid:
            stages.append([nn.Sigmoid()])
        if intermediate_features:
            for n, stage in enumerate(stages):
                self.add_module(f"{name_prefix}model{n}", nn.Sequential(*stage))
        else:
            self.add_module(f"{name_prefix}model", nn.Sequential(*[layer for stage in stages for layer in stage]))

    def stages(self):
        """The stages a forward pass runs: n_layers + 2 with intermediate features, else one."""
        if self.intermediate_features:
            return [getattr(self, f"{self.name_prefix}model{n}") for n in range(self.n_layers + 2)]
        return [getattr(self, f"{self.name_prefix}model")]

    def forward(self, x):
        """x (B, input_nc, H, W) -> patch scores (B, 1, h, w), or every stage's output."""
        if not self.intermediate_features:
            return self.stages()[0](x)
        outputs = []
        for stage in self.stages():
            x = stage(x)
            outputs.append(x)
        return outputs


class MultiscaleDiscriminator(nn.Module):
    """pix2pixHD's multi-scale discriminators (Sec. 3.2) with EDN's temporal input ("Temporal smoothing").

    ``num_D`` PatchGANs, each on the input average-pooled once more than the previous
    one. The input is the labels and frames of two consecutive time steps,
    ``cat(label_t, label_t+1, frame_t, frame_t+1)`` (12 channels). Parameters are
    ``scale<i>_layer<j>`` (with feature matching) or ``layer<i>``; scale ``num_D - 1``
    sees the full resolution.

    Args:
        input_nc (int, default 12): 4 * output_nc.
        ndf (int, default 64), n_layers_D (int, default 3): of each PatchGAN.
        norm (str, default 'instance'): 'instance' or 'batch'.
        num_D (int, default 3): scales (3 in EDN's local and face stages, 2 in the global).
        no_lsgan (bool, default False): vanilla GAN, i.e. a final sigmoid (see
            ``NLayerDiscriminator``).
        no_ganFeat_loss (bool, default False): keep only the final outputs.

    Returns (forward): one list per scale, finest first: every stage's output with
    feature matching (the last is the patch-score map), else ``[scores]``.
    """

    def __init__(self, input_nc=12, ndf=64, n_layers_D=3, norm="instance", num_D=3, no_lsgan=False,
                 no_ganFeat_loss=False):
        super().__init__()
        self.config = {"input_nc": input_nc, "ndf": ndf, "n_layers_D": n_layers_D, "norm": norm, "num_D": num_D,
                       "no_lsgan": no_lsgan, "no_ganFeat_loss": no_ganFeat_loss}
        self.num_D, self.n_layers, self.intermediate_features = num_D, n_layers_D, not no_ganFeat_loss
        for i in range(num_D):
            patch = NLayerDiscriminator(input_nc, ndf, n_layers_D, norm_layer_for(norm), no_lsgan,
                                        self.intermediate_features)
            if self.intermediate_features:
                for j, stage in enumerate(patch.stages()):
                    self.add_module(f"scale{i}_layer{j}", stage)
            else:
                self.add_module(f"layer{i}", patch.stages()[0])
        self.downsample = nn.AvgPool2d(3, stride=2, padding=[1, 1], count_include_pad=False)
        init_weights(self)

    def scale_stages(self, index):
        """The stages of PatchGAN ``index`` (``scale<index>_layer<j>`` or ``layer<index>``)."""
        if self.intermediate_features:
            return [getattr(self, f"scale{index}_layer{j}") for j in range(self.n_layers + 2)]
        return [getattr(self, f"layer{index}")]

    def forward(self, x):
        """x (B, input_nc, H, W) -> [[stage outputs] for each scale], full resolution first."""
        result = []
        for i in range(self.num_D):
            outputs, h = [], x
            for stage in self.scale_stages(self.num_D - 1 - i):
                h = stage(h)
                outputs.append(h)
            result.append(outputs)
            if i != self.num_D - 1:
                x = self.downsample(x)
        return result


class FaceDiscriminator(NLayerDiscriminator):
    """EDN's face discriminator D_f (section "Face GAN"): a BatchNorm PatchGAN on the face box.

    Input ``cat(label crop, face crop)`` (6 channels); output one patch-score map (no
    intermediate features, no sigmoid). Keys ``facemodel.<n>.*``.

    Args:
        input_nc (int, default 6): 2 * output_nc.
        ndf (int, default 64): fixed at 64 by the authors' ``define_D``.
        n_layers_D (int, default 3): the run's ``--n_layers_D``.
    """

    def __init__(self, input_nc=6, ndf=64, n_layers_D=3):
        super().__init__(input_nc, ndf, n_layers_D, nn.BatchNorm2d, use_sigmoid=False, intermediate_features=False,
                         name_prefix="face")
        self.config = {"input_nc": input_nc, "ndf": ndf, "n_layers_D": n_layers_D}
        init_weights(self)


# ------------------------------------------------------------------ perceptual loss network

# torchvision's VGG-19 ("configuration E"): conv widths, "M" for 2x2 max pooling.
VGG19_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                512, 512, 512, 512, "M")


class Vgg19Features(nn.Module):
    """The VGG-19 of pix2pixHD's perceptual loss ``VGGLoss`` (its VGG feature-matching term, Sec. 3.2).

    ``features`` are torchvision's ``vgg19().features[:30]`` (keys ``features.<n>.*``,
    same indices), so the ImageNet weights of ``vgg19-dcbb9e9d.pth`` load through
    ``torchvision_vgg19_features``. The forward returns the authors' five slices:
    relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 (``features`` up to 2, 7, 12, 21 and
    30). The authors feed frames in [-1, 1] as they are, without ImageNet normalisation;
    their loss is sum_i w_i * L1(vgg(x)_i, vgg(y)_i) with w = 1/32, 1/16, 1/8, 1/4, 1.

    Args:
        requires_grad (bool, default False): the authors freeze the network.
    """

    SLICE_ENDS = (2, 7, 12, 21, 30)

    def __init__(self, requires_grad=False):
        super().__init__()
        layers, channels = [], 3
        for v in VGG19_LAYERS:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(True)]
                channels = v
        self.features = nn.Sequential(*layers[:self.SLICE_ENDS[-1]])
        self.requires_grad_(requires_grad)

    def forward(self, x):
        """x (B, 3, H, W) -> [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1] (strides 1, 2, 4, 8, 16)."""
        outputs, start = [], 0
        for end in self.SLICE_ENDS:
            for layer in self.features[start:end]:
                x = layer(x)
            outputs.append(x)
            start = end
        return outputs


def torchvision_vgg19_features(state_dict):
    """The entries of a torchvision VGG-19 state dict that ``Vgg19Features`` has.

    Drops the layers past relu5_1 (``features.30`` on) and the classifier; refuses,
    in one line, a state dict that is not torchvision's VGG-19 layout (a key of
    another form, or a convolution ``Vgg19Features`` needs that is absent).
    """
    wanted, index = set(), 0
    for v in VGG19_LAYERS:                                  # the convolutions' keys, by index
        if index >= Vgg19Features.SLICE_ENDS[-1]:
            break
        if v != "M":
            wanted |= {f"features.{index}.weight", f"features.{index}.bias"}
        index += 1 if v == "M" else 2
    kept, foreign = {}, []
    for key, value in state_dict.items():
        head, _, rest = key.partition(".")
        index = rest.partition(".")[0]
        if key in wanted:
            kept[key] = value
        elif head == "classifier" or (head == "features" and index.isdigit()
                                      and int(index) >= Vgg19Features.SLICE_ENDS[-1]):
            continue
        else:
            foreign.append(key)
    missing = sorted(wanted - set(kept))
    if foreign or missing:
        raise WeightsInvalid("not a torchvision VGG-19 state dict: "
                             + "; ".join(filter(None, [foreign and f"unexpected {', '.join(foreign[:4])}",
                                                       missing and f"missing {', '.join(missing[:4])}"])))
    return kept


# ------------------------------------------------------------------ inference steps

class FaceBox(NamedTuple):
    """A face box in pixels, in the order of EDN's ``*_facetexts128/*.txt`` files:
    rows ``top:bottom``, columns ``left:right`` (``miny maxy minx maxx``; 128x128 in
    the 1024x512 frames of ``data_prep``)."""

    top: int
    bottom: int
    left: int
    right: int

    @classmethod
    def from_text(cls, text):
        """From a face-text file's content, e.g. ``"19 147 328 456"``."""
        values = [int(v) for v in text.split()]
        if len(values) != 4:
            raise ValueError(f"a face box is four integers (miny maxy minx maxx), got {text!r}")
        return cls(*values)


def blank_previous_frame(label, output_nc=3):
    """What the first frame is conditioned on: zeros (mid-grey in [-1, 1]), (B, output_nc, H, W).

    The authors' ``test_fullts.py``: ``previous_cond = torch.zeros(data['label'].size())``.
    """
    return label.new_zeros(label.shape[0], output_nc, *label.shape[2:])


def chain_generator_input(label, previous):
    """The generator's input: ``cat(label, previous frame)`` on channels, label first.

    Args:
        label (Tensor): (B, 3, H, W) pose label in [0, 1].
        previous (Tensor): (B, 3, H, W) the previous generated frame, face residual
            included and unclamped, or ``blank_previous_frame`` for the first.
    Returns (B, 6, H, W): ``Pix2PixHDModel.inference``'s ``input_concat``.
    """
    return torch.cat((label, previous), dim=1)


def crop_face(image, box):
    """image[:, :, top:bottom, left:right]: one box for the whole batch, as the authors
    take ``face_coords[0]``."""
    return image[:, :, box.top:box.bottom, box.left:box.right]


def face_generator_input(label, generated, box):
    """The face generator's input: ``cat(label crop, generated crop)`` (B, 6, h, w).

    The label crop is of the pose label alone, not of the chained input.
    """
    return torch.cat((crop_face(label, box), crop_face(generated, box)), dim=1)


def add_face_residual(generated, residual, box):
    """A copy of ``generated`` whose face box is ``crop + residual`` (no clamping)."""
    out = generated.clone()
    out[:, :, box.top:box.bottom, box.left:box.right] = crop_face(generated, box) + residual
    return out


def synthesize_frame(generator, label, previous, face_generator=None, face_box=None):
    """One step of EDN's inference (``Pix2PixHDModel.inference``).

    ``generator(cat(label, previous))``, then, with a face generator, its residual added
    on ``face_box``. The result is the frame and the next step's ``previous``.
    """
    frame = generator(chain_generator_input(label, previous))
    if face_generator is None:
        return frame
    if face_box is None:
        raise ValueError("a face generator needs the face box")
    return add_face_residual(frame, face_generator(face_generator_input(label, frame, face_box)), face_box)


# Network name -> constructor, for the registry's ``load_network("edn", name, ...)``.
NETWORKS = {
    "global": GlobalGenerator,
    "local": LocalEnhancer,
    "face": FaceResidualGenerator,
    "face_unet": FaceUnetGenerator,
    "discriminator": MultiscaleDiscriminator,
    "face_discriminator": FaceDiscriminator,
}
