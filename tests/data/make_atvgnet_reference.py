"""Make tests/data/atvgnet_reference.npz by running the authors' ATVGnet modules once.

Usage:  python tests/data/make_atvgnet_reference.py PATH/TO/ATVGnet/code

PATH is the ``code/`` folder of a checkout of lelechen63/ATVGnet. Its ``models.py`` was
written for Python 2 and PyTorch 0.4 on CUDA; the shims below let it run unchanged on
the CPU under Python 3 and a current PyTorch (nothing of it is copied here). The
networks get the seeded weights of ``tests/seeded.py``; the file stores the inputs and
the outputs only, and ``tests/test_atvgnet_networks.py`` rebuilds the weights.
"""

import builtins
import collections
import collections.abc
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
from tests.seeded import seeded_state_dict  # noqa: E402


def install_shims():
    builtins.xrange = range                                   # Python 2
    collections.Iterable = collections.abc.Iterable           # Python < 3.10
    torch.Tensor.cuda = lambda self, *args, **kwargs: self    # the hidden states are made with .cuda()
    # convolutional_rnn imports a fused CUDA backend that no longer exists; the CPU path never uses it.
    thnn = types.ModuleType("torch.nn._functions.thnn")
    thnn.rnnFusedPointwise = None
    sys.modules["torch.nn._functions"] = types.ModuleType("torch.nn._functions")
    sys.modules["torch.nn._functions.thnn"] = thnn
    # models.py and ops.py import torchvision without using it.
    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")
    sys.modules["torchvision"], sys.modules["torchvision.models"] = tv, tv.models
    # VG_net passes ngf/2, an int under Python 2 and a float under Python 3.
    conv_init = nn.Conv2d.__init__

    def int_channels(self, in_channels, *args, **kwargs):
        conv_init(self, int(in_channels), *args, **kwargs)
    nn.Conv2d.__init__ = int_channels


def main(code_dir):
    install_shims()
    sys.path.insert(0, str(code_dir))
    import models as authors

    torch.manual_seed(0)
    data = {}
    frames = 2

    at = authors.AT_net().eval()
    at.load_state_dict(seeded_state_dict(at.state_dict()))
    data["atnet.example_landmark"] = torch.randn(2, 6)
    data["atnet.audio"] = torch.randn(2, frames, 28, 12) * 10
    with torch.no_grad():
        data["atnet.out"] = at(data["atnet.example_landmark"], data["atnet.audio"])

    vg = authors.VG_net().eval()
    vg.load_state_dict(seeded_state_dict(vg.state_dict()))
    data["vgnet.image"] = torch.rand(2, 3, 128, 128) * 2 - 1
    data["vgnet.landmarks"] = torch.randn(2, frames, 136) * 0.3
    data["vgnet.example_landmark"] = torch.randn(2, 136) * 0.3
    with torch.no_grad():
        outs = vg(data["vgnet.image"], data["vgnet.landmarks"], data["vgnet.example_landmark"])
    for name, value in zip(["frames", "attention", "color", "landmark_attention"], outs):
        data[f"vgnet.{name}"] = value

    disc = authors.GL_Discriminator().eval()
    disc.load_state_dict(seeded_state_dict(disc.state_dict()))
    # Stored in half precision to keep the file small, so the reference runs on those values.
    data["discriminator.xs"] = (torch.rand(1, 16, 3, 128, 128) * 2 - 1).half().float()
    data["discriminator.example_landmark"] = torch.randn(1, 136) * 0.3
    with torch.no_grad():
        score, landmarks = disc(data["discriminator.xs"], data["discriminator.example_landmark"])
    data["discriminator.score"], data["discriminator.landmarks"] = score, landmarks

    arrays = {k: v.numpy().astype(np.float16 if k == "discriminator.xs" else np.float32)
              for k, v in data.items()}
    np.savez_compressed(HERE / "atvgnet_reference.npz", **arrays)
    print({k: v.shape for k, v in arrays.items()})


if __name__ == "__main__":
    main(Path(sys.argv[1]))
