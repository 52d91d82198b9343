"""The reference's saved generators (``<dataset>_netG_s_<session>_epoch_<n>.pth``) -> our generator.

jwyang/lr-gan.pytorch's train.py saves ``netG.state_dict()`` with ``torch.save``; its keys are
``LRGANGenerator``'s, so the file loads unchanged. What the file does not hold is read from its
name: the dataset's settings in the reference's train.py and README (``ntimestep``,
``maxobjscale``, ``rot``); the sizes (``nz``, ``ngf``, ``nc``, image size) come from the tensors.

    talkingface weights convert --model lrgan cifar10_netG_s_1_epoch_100.pth --out DIR
"""

from __future__ import annotations

import re
from pathlib import Path

from models import weights as weights_lib
from models.common.pipeline import save_project
from models.errors import InvalidInput, WeightsMissing
from models.lrgan.networks import LRGANGenerator

# The README's commands and train.py's per-dataset settings (lfw falls in train.py's image
# folder branch, which sets neither nc nor rot: colour and CIFAR-10's rot are taken).
DATASETS = {
    "cifar10": dict(ntimestep=2, maxobjscale=1.2, rot=0.1),
    "cub200": dict(ntimestep=2, maxobjscale=1.2, rot=0.1),
    "lfw": dict(ntimestep=2, maxobjscale=1.3, rot=0.1),
    "mnist-one": dict(ntimestep=2, maxobjscale=1.2, rot=0.3),
    "mnist-two": dict(ntimestep=3, maxobjscale=2.0, rot=0.3),
}
GENERATOR_PATTERN = "*netG*.pth"


def dataset_of(path) -> str | None:
    """The dataset a reference file name starts with (``cifar10_netG_s_1_epoch_100.pth``), if known."""
    match = re.match(r"(.+?)_netG", Path(path).name)
    return match.group(1) if match and match.group(1) in DATASETS else None


def generator_config(state_dict: dict, dataset: str | None = None, **overrides) -> dict:
    """``LRGANGenerator`` arguments for a reference state dict.

    Sizes from the tensors; ``ntimestep``, ``maxobjscale`` and ``rot`` from ``dataset``'s
    settings (CIFAR-10's when unknown), then ``overrides`` (None values ignored).
    """
    try:
        nz = state_dict["lstmcell.weight_ih"].shape[1]
        ngf = state_dict["Gbgc.convt1.weight"].shape[1] // 4
        nc = state_dict["Gbgi.0.weight"].shape[1]
    except KeyError as exc:
        raise InvalidInput(f"not an LR-GAN generator state dict: it has no {exc.args[0]}") from None
    sides = [int(m.group(1)) for k in state_dict if (m := re.fullmatch(r"encoderconv\.bn(\d+)\.weight", k))]
    if not sides:
        raise InvalidInput("not an LR-GAN generator state dict: it has no encoderconv layers")
    config = dict(image_size=2 * max(sides), nz=nz, ngf=ngf, nc=nc, **DATASETS[dataset or "cifar10"])
    config.update({k: v for k, v in overrides.items() if v is not None})
    return config


def find_generator(directory) -> Path:
    """The one reference generator file in ``directory``; WeightsMissing naming the pattern when none."""
    directory = Path(directory)
    found = sorted(directory.glob(GENERATOR_PATTERN)) if directory.is_dir() else []
    if not found:
        raise WeightsMissing(f"no LR-GAN generator ({GENERATOR_PATTERN}, as the reference's train.py saves it) "
                             f"in {directory}: no weights are released; train them (talkingface train lrgan "
                             "--images DIR) or use the demo weights (weights/README.md)")
    if len(found) > 1:
        raise InvalidInput(f"{directory} holds several LR-GAN generators ({', '.join(p.name for p in found)}); "
                           "keep one, or convert one with talkingface weights convert --model lrgan")
    return found[0]


def load_reference_generator(path, **overrides) -> LRGANGenerator:
    """A reference ``netG`` file loaded strictly into ``LRGANGenerator`` (eval mode)."""
    path = Path(path)
    state_dict = weights_lib.read_state_dict(path)
    generator = LRGANGenerator(**generator_config(state_dict, dataset_of(path), **overrides))
    return weights_lib.load_weights(generator, state_dict, path.name).eval()


def convert_reference(source, out_dir, **overrides) -> Path:
    """A reference ``netG`` file (or a folder holding one) -> a project weights folder."""
    source = Path(source)
    path = find_generator(source) if source.is_dir() else source
    generator = load_reference_generator(path, **overrides)
    return save_project(out_dir, "lrgan", {"generator": generator}, name=path.stem,
                        extra={"source": path.name, "dataset": dataset_of(path)})
