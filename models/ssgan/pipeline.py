"""S^2-GAN inference: Structure-GAN draws surface normals, Style-GAN paints them.

Wang and Gupta, "Generative Image Modeling using Style and Structure Adversarial Networks",
ECCV 2016 (arXiv:1603.05631), as ``joint-ssgan/test.lua`` of github.com/xiaolonw/ss-gan:

1. z_hat ~ U(-1, 1)^100 -> Structure-GAN -> unit surface normals (72 x 72);
2. ``nn.SpatialReSampling`` to 128 x 128 (bilinear, corners aligned) and per-pixel
   L2 normalisation;
3. z_tilde ~ U(-1, 1)^100 and the normals -> Style-GAN -> the RGB image (128 x 128).

``levels=True`` returns the normals (step 2, drawn as RGB (n + 1) / 2, as the authors save
them) and the image. Both noises come from torch's global generator on the CPU, drawn for
all ``n`` images before any network runs, so that a seed gives the same images on any
device and in any chunking.

Weights: the authors' Torch7 files (``joint_SSGAN.net``: the jointly fine-tuned pair;
``Structure_GAN.net`` with ``joint_Style_GAN.net`` (Style-GAN trained with the FCN loss) or
``Style_GAN_nofcn.net``), converted as they load (``models.ssgan.convert``), or a project
folder (``config.json`` + ``structure.safetensors`` + ``style.safetensors``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from models import weights as weights_lib
from models.common.device import pick_device
from models.common.images import to_uint8
from models.common.pipeline import ImageGenerationPipeline, Option, load_project_networks, read_project
from models.errors import InvalidInput
from models.ssgan.networks import StructureGenerator, StyleGenerator, resample_normals
from models.types import ImageCondition, Images

# The authors' releases (README of github.com/xiaolonw/ss-gan), in the order a folder is read.
RELEASE_ORDER = ("joint_SSGAN.net", "Structure_GAN.net", "joint_Style_GAN.net", "Style_GAN_nofcn.net", "FCN.net")
# variant -> (file of the Structure-GAN, file of the Style-GAN)
VARIANTS = {
    "joint": ("joint_SSGAN.net", "joint_SSGAN.net"),          # Sec. 4: joint learning of both
    "fcn": ("Structure_GAN.net", "joint_Style_GAN.net"),      # Style-GAN with the FCN constraint
    "nofcn": ("Structure_GAN.net", "Style_GAN_nofcn.net"),    # Style-GAN without it
}
GENERATORS = {"structure": StructureGenerator, "style": StyleGenerator}
CHUNK = 16   # images per forward pass


@dataclass
class Variant:
    """One Structure-GAN / Style-GAN pair and what it is called in ``Images.info``."""

    structure: StructureGenerator
    style: StyleGenerator
    weights: str


class SSGANPipeline(ImageGenerationPipeline):
    """Unconditional image generation through surface normals (S^2-GAN).

    Example:

        >>> from models import registry
        >>> pipe = registry.load("ssgan")                    # demo weights when no release is at hand
        >>> torch.manual_seed(0)
        >>> out = pipe(n=4, levels=True)
        >>> out.images.shape, [name for name, _ in out.levels]
        ((4, 32, 32, 3), ['normals', 'image'])
    """

    name = "ssgan"
    levels = True
    options = (
        Option("variant", str, None, "authors' weights: joint (S^2-GAN fine-tuned jointly), fcn (Structure-GAN + "
                                     "Style-GAN trained with the FCN loss) or nofcn; default: the first at hand",
               choices=tuple(VARIANTS)),
        Option("batch_statistics", bool, False, "normalise with each batch's statistics, as the authors' test.lua "
                                                "(images then depend on the batch); default: running statistics"),
    )

    def __init__(self, variants: dict, device="auto", info=None):
        """``variants``: {name: Variant, or a callable returning one (loaded on first use)}."""
        if not variants:
            raise weights_lib.WeightsMissing("no S^2-GAN weights were given")
        self.device = pick_device(device)
        self._variants = dict(variants)
        first = next(iter(self._variants.values()))
        self.info = {"model": self.name, "device": str(self.device),
                     "weights": first.weights if isinstance(first, Variant) else "the authors' Torch7 files",
                     **(info or {})}

    # -- weights --------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory, device="auto", verify=True):
        """The authors' Torch7 files in ``directory`` (every variant whose files are there)."""
        directory = Path(directory)
        paths = {f.name: weights_lib.locate(f, directory) for f in cls.weight_files()}
        variants = {}
        for name, (structure_file, style_file) in VARIANTS.items():
            if paths.get(structure_file) and paths.get(style_file):
                variants[name] = _lazy_variant(paths[structure_file], paths[style_file])
        if not variants:
            needed = "; ".join(f"{k}: {' + '.join(sorted(set(v)))}" for k, v in VARIANTS.items())
            raise weights_lib.WeightsMissing(
                f"no S^2-GAN weights in {directory.resolve()}: one of the pairs ({needed}) is needed, "
                "from the authors' Dropbox folder linked in the README of github.com/xiaolonw/ss-gan "
                "(see weights/README.md), or pass --weights DIR")
        return cls(variants, device=device, info={"weights_dir": str(directory)})

    @classmethod
    def from_project(cls, directory, device="auto", verify=True):
        """A project weights folder (training, the demo, or ``talkingface weights convert``)."""
        config = read_project(directory, verify)
        missing = [f"{k}.safetensors" for k in GENERATORS if not (Path(directory) / f"{k}.safetensors").is_file()]
        if missing:
            raise weights_lib.WeightsMissing(f"missing {', '.join(missing)} in the S^2-GAN weights folder {directory}")
        networks = load_project_networks(directory, GENERATORS, config)
        variant = Variant(networks["structure"].eval(), networks["style"].eval(), config.get("name", "project"))
        return cls({config.get("variant", "project"): variant}, device=device,
                   info={"weights_dir": str(directory)})

    def pick(self, variant=None) -> tuple[str, Variant]:
        """The pair to draw with (the first at hand when ``variant`` is None), on the device."""
        name = variant or next(iter(self._variants))
        if name not in self._variants:
            raise InvalidInput(f"the ssgan weights in use have no {name} variant; they have "
                               f"{', '.join(self._variants)}")
        chosen = self._variants[name]
        if callable(chosen):
            chosen = self._variants[name] = chosen()
        chosen.structure.to(self.device)
        chosen.style.to(self.device)
        return name, chosen

    # -- inference ------------------------------------------------------------------------
    def draw_noise(self, n: int, variant: Variant) -> tuple[torch.Tensor, torch.Tensor]:
        """z_hat (Structure-GAN) and z_tilde (Style-GAN), uniform in [-1, 1], from the global CPU generator."""
        z_structure = torch.rand(n, variant.structure.config["noise_dim"], 1, 1) * 2 - 1
        z_style = torch.rand(n, variant.style.config["noise_dim"], 1, 1) * 2 - 1
        return z_structure, z_style

    @torch.no_grad()
    def generate(self, n: int, condition: ImageCondition, levels=False, progress=None, variant=None,
                 batch_statistics=False, **options) -> Images:
        """``n`` images: normals from the Structure-GAN, painted by the Style-GAN."""
        # 1. Check inputs and pick the weights
        if n < 1:
            raise InvalidInput("n must be at least 1")
        name, pair = self.pick(variant)
        size = pair.style.config["image_size"]
        # 2. Noise for every image, before any network runs
        z_structure, z_style = self.draw_noise(n, pair)
        # 3. Structure, then style, chunk by chunk
        if batch_statistics and n < 2:
            raise InvalidInput("batch_statistics needs at least 2 images (n >= 2)")
        norms = [m for net in (pair.structure, pair.style) for m in net.modules()
                 if isinstance(m, torch.nn.BatchNorm2d)]
        momenta = [m.momentum for m in norms]
        pair.structure.train(batch_statistics)
        pair.style.train(batch_statistics)
        for m in norms:      # batch statistics without moving the running ones
            m.momentum = 0.0 if batch_statistics else m.momentum
        normals, images = [], []
        chunk = n if batch_statistics else CHUNK
        try:
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                coarse = pair.structure(z_structure[start:stop].to(self.device))
                fine = resample_normals(coarse, size)                       # (b, 3, size, size), unit
                normals.append(fine.cpu())
                images.append(pair.style(z_style[start:stop].to(self.device), fine).cpu())
                if progress is not None:
                    progress(stop, n)
        finally:
            pair.structure.eval()
            pair.style.eval()
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
        normals, images = torch.cat(normals), torch.cat(images)
        # 4. uint8 images; the normals drawn as (n + 1) / 2
        steps = [("normals", to_uint8(normals)), ("image", to_uint8(images))] if levels else []
        info = {**self.info, "weights": pair.weights, "variant": name, "noise": "uniform [-1, 1], 2 x "
                f"{pair.structure.config['noise_dim']}", "structure_size": pair.structure.config["image_size"],
                "image_size": size, "batch_statistics": bool(batch_statistics), "condition": None}
        return Images(images=to_uint8(images), levels=steps, info=info)


def _lazy_variant(structure_file, style_file):
    """A callable converting the authors' files when the variant is first used."""
    def load() -> Variant:
        from models.ssgan.convert import load_torch_file

        structure = load_torch_file(structure_file, only=("structure",))["structure"]
        style = load_torch_file(style_file, only=("style",))["style"]
        label = Path(structure_file).name if structure_file == style_file else \
            f"{Path(structure_file).name} + {Path(style_file).name}"
        return Variant(structure, style, f"the authors' {label}")
    return load
