"""Make tests/data/edn_reference.npz by running the authors' Everybody Dance Now modules once.

Usage:  python tests/data/make_edn_reference.py PATH/TO/EverybodyDanceNow PATH/TO/pix2pixHD

The paths are checkouts of carolineec/EverybodyDanceNow and NVIDIA/pix2pixHD. Every
network is built by the authors' own factories (``define_G`` / ``define_D``, and
``Pix2PixHDModel.initialize`` for the published configurations) and gets the seeded
weights of ``tests/seeded.py``; the file stores the inputs, the outputs and the list of
state-dict keys and shapes of each authors' module, never weights.
``tests/test_edn_networks.py`` rebuilds the weights and compares.

What is stored:

* ``<case>.keys``, the inputs (``.label`` and ``.previous`` for generators, ``.x`` for
  the others) and the outputs (``.out``; ``.out<scale>_<stage>`` for multiscale
  discriminators; ``.train_out*`` for BatchNorm networks run in training mode, as the
  authors' test script leaves them) for reduced widths:
  global and local generators (one and two enhancers), the face generators (global and
  U-Net), the temporal multiscale discriminator (feature matching; without it on
  BatchNorm; with pix2pixHD's sigmoid), the face discriminator and the VGG-19 slices
  with ``VGGLoss``'s value.
* ``chain.*``: three frames of ``Pix2PixHDModel.inference`` chained as ``test_fullts.py``
  chains them (zeros first, then each output), with a face generator and a face box.
* ``<stage>.<network>.keys``: the key lists of the networks ``Pix2PixHDModel.initialize``
  builds for the README's global, local and face-stage commands (face generator global
  and U-Net), built on the meta device (no memory, no forward pass).

Shims, and why each leaves the authors' arithmetic as it is:

* ``torchvision`` is not a dependency of this project; ``networks.py`` imports it for
  ``Vgg19`` only. A stand-in ``torchvision.models.vgg19`` returns torchvision's layer list
  of VGG-19 ``features`` (configuration E: 3x3 convs padded 1 each followed by an
  in-place ReLU, 2x2 max pooling); its pretrained weights would be replaced by the
  seeded ones anyway.
* ``torch.Tensor.cuda`` and ``nn.Module.cuda`` return their object: ``encode_input`` and
  ``VGGLoss`` move to the GPU; this runs on the CPU.
* The authors' package is called ``models``, as is this project's: their ``models/``
  files are imported as package ``edn_models``, pix2pixHD's ``networks.py`` as a module.
* ``Pix2PixHDModel.initialize`` gets the parsed options of the README commands without
  ``--load_pretrain`` (it only loads files) and with ``gpu_ids = []``.
* ``inference`` runs under ``torch.no_grad()``: its ``Variable(..., volatile=True)`` meant
  that in PyTorch 0.3.
"""

import contextlib
import copy
import importlib.util
import io
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
from tests.seeded import seeded_state_dict  # noqa: E402

VGG19_E = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def install_shims():
    def vgg19(pretrained=False, **kwargs):
        layers, channels = [], 3
        for v in VGG19_E:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = v
        return types.SimpleNamespace(features=nn.Sequential(*layers))
    torchvision = types.ModuleType("torchvision")
    torchvision.models = types.ModuleType("torchvision.models")
    torchvision.models.vgg19 = vgg19
    sys.modules["torchvision"], sys.modules["torchvision.models"] = torchvision, torchvision.models
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    nn.Module.cuda = lambda self, *args, **kwargs: self


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def import_authors(edn_dir, pix2pixhd_dir):
    sys.path.insert(0, str(edn_dir))          # for their util/ and options/
    package = types.ModuleType("edn_models")
    package.__path__ = [str(edn_dir / "models")]
    sys.modules["edn_models"] = package
    networks = load_module("edn_models.networks", edn_dir / "models" / "networks.py")
    model = load_module("edn_models.pix2pixHD_model_fullts", edn_dir / "models" / "pix2pixHD_model_fullts.py")
    from options.train_options import TrainOptions
    p2phd = load_module("pix2pixhd_networks", pix2pixhd_dir / "models" / "networks.py")
    return types.SimpleNamespace(networks=networks, model=model, TrainOptions=TrainOptions, pix2pixhd=p2phd)


def quiet(factory, *args, **kwargs):
    """define_G / define_D print the whole network."""
    with contextlib.redirect_stdout(io.StringIO()):
        return factory(*args, **kwargs)


def key_list(state_dict):
    return np.array([f"{k} {tuple(v.shape)}" for k, v in state_dict.items()])


def seeded(net, data, name):
    """``net`` in eval mode with the seeded weights; its keys and shapes go into ``data``."""
    state = net.state_dict()
    net.load_state_dict(seeded_state_dict(state))
    data[f"{name}.keys"] = key_list(state)
    return net.eval()


def blocky(shape, block=4, generator=None):
    """uint8 images of constant ``block``x``block`` squares, like rendered stick figures."""
    low = torch.randint(0, 256, (*shape[:-2], shape[-2] // block, shape[-1] // block), dtype=torch.uint8,
                        generator=generator)
    return low.repeat_interleave(block, -2).repeat_interleave(block, -1)


def blocky_frames(shape, block=4):
    """Frames in [-1, 1] of constant squares with half-precision values: real-looking
    inputs that compress well."""
    low = (torch.rand(*shape[:-2], shape[-2] // block, shape[-1] // block) * 2 - 1).half().float()
    return low.repeat_interleave(block, -2).repeat_interleave(block, -1)


def generator_input(label_u8, previous):
    """The generator's input as ``inference`` forms it: label in [0, 1], previous frame in [-1, 1]."""
    return torch.cat((label_u8.float() / 255, previous), 1)


def readme_options(authors, args):
    parser = authors.TrainOptions()
    parser.initialize()
    opt = parser.parser.parse_args(args)
    opt.isTrain, opt.gpu_ids = True, []
    return opt


README = {   # the README's training commands, --name/--dataroot/--checkpoints_dir/--load_pretrain left out
    "global_stage": "--loadSize 512 --no_instance --no_flip --tf_log --label_nc 6",
    "local_stage": "--netG local --ngf 32 --num_D 3 --resize_or_crop none --no_instance --no_flip --tf_log "
                   "--label_nc 6",
    "face_stage": "--face_discrim --face_generator --faceGtype global --niter_fix_main 10 --netG local --ngf 32 "
                  "--num_D 3 --resize_or_crop none --no_instance --no_flip --tf_log --label_nc 6",
}
README["face_unet_stage"] = README["face_stage"].replace("--faceGtype global", "--faceGtype unet")


def published_key_lists(authors, data):
    for stage, args in README.items():
        opt = readme_options(authors, args.split())
        model = authors.model.Pix2PixHDModel()
        with torch.device("meta"), contextlib.redirect_stdout(io.StringIO()):
            model.initialize(opt)
        for attr, network in [("netG", "G"), ("netD", "D"), ("netDface", "Dface"), ("faceGen", "Gface")]:
            if hasattr(model, attr):
                data[f"{stage}.{network}.keys"] = key_list(getattr(model, attr).state_dict())


def main(edn_dir, pix2pixhd_dir):
    install_shims()
    authors = import_authors(edn_dir, pix2pixhd_dir)
    nets = authors.networks
    torch.manual_seed(0)
    data = {}
    published_key_lists(authors, data)

    with torch.no_grad():
        # Generators: Pix2PixHDModel.initialize's define_G calls at reduced widths.
        generators = {
            "global": ((6, 3, 4, "global"), {"n_downsample_global": 4, "n_blocks_global": 2}, (1, 32, 64)),
            "global_batch": ((6, 3, 4, "global"), {"n_downsample_global": 3, "n_blocks_global": 2, "norm": "batch"},
                             (2, 32, 32)),
            "local": ((6, 3, 4, "local"), {"n_downsample_global": 3, "n_blocks_global": 2, "n_local_enhancers": 1,
                                           "n_blocks_local": 2}, (1, 64, 128)),
            "local2": ((6, 3, 2, "local"), {"n_downsample_global": 2, "n_blocks_global": 1, "n_local_enhancers": 2,
                                            "n_blocks_local": 1}, (1, 64, 64)),
            "face": ((6, 3, 4, "global"), {"n_downsample_global": 3, "n_blocks_global": 2, "n_local_enhancers": 0,
                                           "n_blocks_local": 0}, (1, 32, 32)),
        }
        built = {}
        for name, (args, kwargs, (batch, h, w)) in generators.items():
            net = built[name] = seeded(quiet(nets.define_G, *args, **kwargs), data, name)
            data[f"{name}.label"] = blocky((batch, 3, h, w))
            data[f"{name}.previous"] = blocky_frames((batch, 3, h, w))
            x = generator_input(data[f"{name}.label"], data[f"{name}.previous"])
            data[f"{name}.out"] = net(x)
            if kwargs.get("norm") == "batch":
                data[f"{name}.train_out"] = copy.deepcopy(net).train()(x)

        # define_G's 'unet' fixes ngf at 64; the class itself is built at a reduced width.
        unet = seeded(nets.UnetGenerator(6, 3, 3, ngf=4, norm_layer=nn.BatchNorm2d), data, "face_unet")
        data["face_unet.label"] = blocky((1, 3, 64, 64))
        data["face_unet.previous"] = blocky_frames((1, 3, 64, 64))
        x = generator_input(data["face_unet.label"], data["face_unet.previous"])
        data["face_unet.out"] = unet(x)
        data["face_unet.train_out"] = copy.deepcopy(unet).train()(x)

        # Discriminators: initialize's define_D calls (input 4 * output_nc, intermediate features).
        discriminators = {
            "discriminator": (nets.define_D, (12, 4, 3, "instance", False, 3, True), (1, 12, 32, 64)),
            "discriminator_plain": (nets.define_D, (12, 4, 2, "batch", False, 2, False), (2, 12, 16, 32)),
            # EDN's NLayerDiscriminator cannot build a sigmoid; pix2pixHD's can.
            "discriminator_sigmoid": (authors.pix2pixhd.define_D, (12, 4, 2, "instance", True, 2, False),
                                      (1, 12, 32, 64)),
            "discriminator_sigmoid_feat": (authors.pix2pixhd.define_D, (12, 4, 2, "instance", True, 2, True),
                                           (1, 12, 32, 64)),
        }
        for name, (factory, args, shape) in discriminators.items():
            net = seeded(quiet(factory, *args), data, name)
            data[f"{name}.x"] = blocky_frames(shape)
            outputs = net(data[f"{name}.x"])
            for i, scale in enumerate(outputs):
                for j, value in enumerate(scale):
                    data[f"{name}.out{i}_{j}"] = value
            if args[3] == "batch":
                for i, scale in enumerate(copy.deepcopy(net).train()(data[f"{name}.x"])):
                    for j, value in enumerate(scale):
                        data[f"{name}.train_out{i}_{j}"] = value

        # Face discriminator: define_D(2 * output_nc, ..., netD='face') fixes ndf 64 and BatchNorm.
        face_d = seeded(quiet(nets.define_D, 6, 4, 3, "instance", False, 1, True, netD="face"), data,
                        "face_discriminator")
        data["face_discriminator.x"] = blocky_frames((2, 6, 32, 32))
        data["face_discriminator.out"] = face_d(data["face_discriminator.x"])
        data["face_discriminator.train_out"] = copy.deepcopy(face_d).train()(data["face_discriminator.x"])

        # VGG-19 slices; the seeded weights are keyed by torchvision's names (features.<n>),
        # the names of the vgg19-*.pth file the authors' Vgg19 is filled from.
        loss = nets.VGGLoss([])
        vgg = loss.vgg
        authors_keys = list(vgg.state_dict())
        as_torchvision = {k: "features." + k.split(".", 1)[1] for k in authors_keys}
        weights = seeded_state_dict({as_torchvision[k]: v for k, v in vgg.state_dict().items()})
        vgg.load_state_dict({k: weights[as_torchvision[k]] for k in authors_keys})
        data["vgg19.keys"] = key_list(weights)
        data["vgg19.x"] = torch.rand(1, 3, 16, 32) * 2 - 1
        data["vgg19.y"] = torch.rand(1, 3, 16, 32) * 2 - 1
        slices = vgg(data["vgg19.x"])
        data["vgg19.relu1_first8"] = slices[0][:, :8]       # the whole 64-channel map is most of the file
        for i, value in enumerate(slices[1:], 2):
            data[f"vgg19.relu{i}"] = value
        data["vgg19.loss"] = loss(data["vgg19.x"], data["vgg19.y"]).reshape(1)

        # Inference chained over three frames, as test_fullts.py does, with a face generator.
        model = authors.model.Pix2PixHDModel()
        model.opt = types.SimpleNamespace(face_generator=True)
        model.netG, model.faceGen = built["global"], built["face"]
        data["chain.labels"] = blocky((3, 1, 3, 32, 64))
        data["chain.face_box"] = torch.tensor([[8, 24, 36, 52]], dtype=torch.int32)   # miny maxy minx maxx
        previous, frames = torch.zeros(data["chain.labels"][0].size()), []
        for label in data["chain.labels"]:
            previous = model.inference(label.float() / 255, previous, data["chain.face_box"]).data
            frames.append(previous)
        data["chain.frames"] = torch.stack(frames)

    arrays = {}
    for key, value in data.items():
        if isinstance(value, np.ndarray):
            arrays[key] = value
        elif value.dtype in (torch.uint8, torch.int32):
            arrays[key] = value.numpy()
        else:
            arrays[key] = value.numpy().astype(np.float32)
    np.savez_compressed(HERE / "edn_reference.npz", **arrays)
    for key, value in arrays.items():
        if not key.endswith(".keys"):
            print(f"{key:40s} {str(value.shape):22s} {value.dtype}  |max| {np.abs(value.astype(np.float64)).max():.4g}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
