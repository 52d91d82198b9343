"""StackGAN inference: noise (and a caption or its embedding) -> images, with the coarse steps.

    pipe = registry.load("stackgan")                     # authors' files found, else the demo
    out = pipe(n=4, condition=ImageCondition(text="a red disc on a dark blue background"), levels=True)
    out.images        # uint8 (4, H, W, 3), the finest branch
    out.levels        # [("stage-I 64x64", ...), ("stage-II 256x256", ...)] or the v2 branches

Zhang et al., ICCV 2017 (v1) and TPAMI 2018 (v2, StackGAN++). The steps, as the
authors' ``sample`` / ``evaluate``:

1. The variant: one set of weights per ``variant`` found (the authors' releases v1-coco,
   v2-birds, v2-dog, v2-cat, v2-bedroom, v2-church; this project's demo or a trained
   folder); a request's ``variant`` picks one, the first found otherwise.
2. The condition. Text-conditional variants (v1-coco, v2-birds, the demo) need one: a
   ``vector``, the text embedding the weights were trained on (1024-d char-CNN-RNN of Reed
   et al. for the authors' weights, ``text_dim`` numbers in general), used as it is; or
   ``text``, encoded by the variant's own text encoder (``models.stackgan.text``; only the
   project's weights have one: the authors' Torch7 encoder is not part of this project).
   Unconditional variants (dog, cat, bedroom, church) refuse any condition.
3. Sampling, in chunks of ``CHUNK`` images: z ~ N(0, I) drawn from torch's global
   generator on the CPU, then the generator, whose conditioning augmentation draws its
   eps inside (v1: Stage-I's, then Stage-II's), as the authors' code does; so after
   ``torch.manual_seed(s)`` a request of up to ``CHUNK`` images is what the authors'
   code gives for the same seed, weights and embeddings (their batch drawn at once).
4. Eval mode (BatchNorm running statistics, as the authors' ``netG.eval()``); [-1, 1] ->
   uint8. ``levels``: v1's Stage-I 64 x 64 and Stage-II 256 x 256, v2's branches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import weights as weights_lib
from models.common.device import pick_device
from models.common.images import to_uint8
from models.common.pipeline import (
    TEXT_OPTION,
    ImageGenerationPipeline,
    Option,
    load_project_networks,
    read_project,
)
from models.errors import InvalidInput, WeightsMissing
from models.registry import DEMO_WEIGHTS
from models.stackgan.networks import BIRDS_V2, COCO_V1, LSUN_IMAGENET_V2, GNet, Stage2Generator
from models.stackgan.text import CharCNNRNN
from models.types import ImageCondition, Images

# variant -> (released file, kind, constructor arguments, what it draws)
RELEASES = {
    "v1-coco": ("netG_epoch_90.pth", "v1", COCO_V1, "StackGAN-v1 COCO (text-conditional)"),
    "v2-birds": ("netG_210000.pth", "v2", BIRDS_V2, "StackGAN-v2 CUB birds (text-conditional)"),
    "v2-dog": ("netG_600000.pth", "v2", LSUN_IMAGENET_V2, "StackGAN-v2 ImageNet dogs (unconditional)"),
    "v2-cat": ("netG_200000.pth", "v2", LSUN_IMAGENET_V2, "StackGAN-v2 ImageNet cats (unconditional)"),
    "v2-bedroom": ("netG_364000.pth", "v2", LSUN_IMAGENET_V2, "StackGAN-v2 LSUN bedrooms (unconditional)"),
    "v2-church": ("netG_270000.pth", "v2", LSUN_IMAGENET_V2, "StackGAN-v2 LSUN churches (unconditional)"),
}
VARIANTS = (*RELEASES, "demo", "project")
VARIANT_OPTION = Option("variant", str, None, "weights to use: " + ", ".join(VARIANTS)
                        + "; the first found when not given", choices=VARIANTS)
CHUNK = 16   # images drawn in one batch


@dataclass
class Variant:
    """One StackGAN generator and what it takes."""

    kind: str                         # "v1" (Stage-II with Stage-I inside) or "v2" (GNet)
    generator: torch.nn.Module
    weights: str                      # what they are, for reports
    text_encoder: CharCNNRNN | None = None
    encoder_name: str = ""

    @property
    def conditional(self) -> bool:
        return self.kind == "v1" or bool(self.generator.b_condition)

    @property
    def text_dim(self) -> int:
        return int(self.generator.config["text_dim"])

    @property
    def z_dim(self) -> int:
        return int(self.generator.config["z_dim"])


class StackGANPipeline(ImageGenerationPipeline):
    """StackGAN v1 / v2 (Zhang et al.): noise + text embedding (or none) -> images, coarse to fine."""

    name = "stackgan"
    options = (TEXT_OPTION, VARIANT_OPTION)
    vector_size = 0                   # the loaded weights decide (1024 for the authors', demo's own)
    # The demo and the first releases (v1-coco, v2-birds) are text-conditional; the LSUN /
    # ImageNet ones are not: ``check_condition`` leaves the requirement to ``generate``,
    # which knows the variant.
    condition_required = True
    levels = True

    def __init__(self, variants: dict[str, Variant], device="auto", info=None):
        if not variants:
            raise WeightsMissing("no StackGAN generator was given")
        self.device = pick_device(device)
        for variant in variants.values():
            variant.generator = variant.generator.float().to(self.device).eval().requires_grad_(False)
            if variant.text_encoder is not None:
                variant.text_encoder = variant.text_encoder.float().to(self.device).eval().requires_grad_(False)
        self.variants = variants
        first = next(iter(variants.values()))
        self.info = dict(info or {}, model="stackgan", device=str(self.device), weights=first.weights,
                         variants=list(variants))

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory, device="auto", verify=True):
        """The authors' released generators found in ``directory`` (any of them), then the demo's."""
        directory = Path(directory)
        variants = {}
        files = {f.name: f for f in cls.weight_files()}
        for name, (file_name, kind, config, what) in RELEASES.items():
            file = files.get(file_name)
            if file is None or weights_lib.locate(file, directory) is None:
                continue
            path = weights_lib.require(file, directory, verify)
            network = Stage2Generator(**config) if kind == "v1" else GNet(**config)
            variants[name] = Variant(kind, weights_lib.load_weights(network, path, file_name),
                                     f"{what}, {file_name}")
        if not variants:
            listed = "; ".join(f"{f.name} ({f.role})" for f in cls.weight_files())
            raise WeightsMissing(f"no StackGAN generator in {directory.resolve()}: put one of {listed} there "
                                 "(see weights/README.md), or pass --weights DIR")
        if (DEMO_WEIGHTS / "stackgan" / "config.json").is_file():
            variants.setdefault("demo", cls.read_variant(DEMO_WEIGHTS / "stackgan", verify))
        return cls(variants, device=device, info={"weights_dir": str(directory)})

    @classmethod
    def from_project(cls, directory, device="auto", verify=True):
        """A StackGAN weights folder this project wrote (the demo, an export, or a training run)."""
        config = read_project(directory, verify)
        name = config.get("variant") if config.get("variant") in ("demo", "project") else "project"
        return cls({name: cls.read_variant(directory, verify, config)}, device=device,
                   info={"weights_dir": str(directory)})

    @staticmethod
    def read_variant(directory, verify=True, config=None) -> Variant:
        config = config or read_project(directory, verify)
        kind = config.get("kind", "v2")
        classes = {"generator": Stage2Generator if kind == "v1" else GNet}
        if "text_encoder" in config:
            classes["text_encoder"] = CharCNNRNN
        networks = load_project_networks(directory, classes, config)
        return Variant(kind, networks["generator"], config.get("name", "project"), networks.get("text_encoder"),
                       f"project text encoder: CharCNNRNN ({config.get('name', 'project')})")

    @classmethod
    def requires_condition(cls, options: dict) -> bool:
        """The demo and the text-conditional releases need one; the unconditional releases and a
        project folder (its own config says) are left to ``embed``."""
        return options.get("variant") in (None, "demo", "v1-coco", "v2-birds")

    @classmethod
    def check_condition(cls, condition: ImageCondition | None, n: int, vector_size=None) -> ImageCondition:
        """As the base's, less the requirement of a condition, which depends on the variant
        (``embed`` enforces it: the unconditional variants take none)."""
        condition = condition or ImageCondition()
        if not condition.given():
            return condition
        return super().check_condition(condition, n, vector_size)

    # -- inference ------------------------------------------------------------------------
    def pick(self, variant=None) -> tuple[str, Variant]:
        if variant is None:
            return next(iter(self.variants.items()))
        if variant not in self.variants:
            raise InvalidInput(f"the stackgan weights in use have no {variant} variant; they have "
                               f"{', '.join(self.variants)}")
        return variant, self.variants[variant]

    def embed(self, n: int, condition: ImageCondition, name: str, variant: Variant):
        """Step 2: the text embeddings (n, text_dim) on the device, or None; and what was used."""
        given = condition.given()
        if not variant.conditional:
            if given:
                raise InvalidInput(f"stackgan variant {name} is unconditional: it takes no {given[0]} condition")
            return None, "none (unconditional)"
        if not given:
            raise InvalidInput(f"stackgan variant {name} needs a condition: a caption (text) or its text "
                               f"embedding (vector of {variant.text_dim} numbers)")
        if condition.text is not None and condition.vector is not None:
            raise InvalidInput("give a caption or a text embedding, not both")
        if condition.vector is not None:
            checked = self.check_condition(condition, n, vector_size=variant.text_dim)
            return torch.from_numpy(checked.vector).to(self.device), "embedding given"
        if variant.text_encoder is None:
            raise InvalidInput(f"stackgan variant {name} has no text encoder in this project (the authors' "
                               "char-CNN-RNN is Torch7): give the caption's 1024-d embedding as the vector "
                               "condition, or use the demo variant")
        if variant.text_encoder.config["text_dim"] != variant.text_dim:
            raise WeightsMissing(f"the text encoder of {name} does not fit its generator")
        with torch.no_grad():
            embedding = variant.text_encoder.encode([condition.text])
        return embedding.expand(n, -1), variant.encoder_name

    @torch.no_grad()
    def generate(self, n: int, condition: ImageCondition, levels=False, progress=None, variant=None, **options):
        """Steps 1-4: ``n`` images (and their levels)."""
        name, chosen = self.pick(VARIANT_OPTION.parse(variant))
        embedding, used = self.embed(n, condition or ImageCondition(), name, chosen)
        steps: list[list[torch.Tensor]] = []
        for start in range(0, n, CHUNK):
            m = min(CHUNK, n - start)
            noise = torch.empty(m, chosen.z_dim).normal_().to(self.device)
            chunk = None if embedding is None else embedding[start:start + m]
            if chosen.kind == "v1":
                low, image, _, _ = chosen.generator(chunk, noise)
                outputs = [low, image]
            else:
                outputs, _, _ = chosen.generator(noise, chunk)
            steps.append([to_uint8(o) for o in outputs])
            if progress is not None:
                progress(start + m, n)
        by_level = [np.concatenate([chunk[i] for chunk in steps]) for i in range(len(steps[0]))]
        names = (["stage-I", "stage-II"] if chosen.kind == "v1"
                 else [f"branch {i + 1}" for i in range(len(by_level))])
        level_list = [(f"{label} {a.shape[2]}x{a.shape[1]}", a) for label, a in zip(names, by_level)]
        info = dict(self.info, variant=name, weights=chosen.weights, condition=used)
        if condition is not None and condition.text is not None:
            info["text"] = condition.text
        return Images(images=by_level[-1], levels=level_list if levels else [], info=info)
