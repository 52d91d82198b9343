"""DCGAN inference: noise (and InfoGAN's codes or a text embedding, where the weights take one) -> images.

    pipe = registry.load("dcgan")                        # best weights found
    torch.manual_seed(0)
    images = pipe(n=16).images                           # uint8 (16, H, W, 3)

Radford et al., ICLR 2016: the generator maps z ~ N(0, I) (nz numbers, as the reference
draws them: ``torch.randn(n, nz, 1, 1)``) to an image in [-1, 1]. The weights decide the
rest, read from what made them:

* the reference's ``netG_epoch_N.pth`` (pytorch/examples ``dcgan/main.py``, any ``--nz``,
  ``--ngf``, ``nc`` and a 64x64 layout; the sizes are read from the state dict's shapes)
  and project folders trained with ``--objective gan``, ``improved`` or ``fgan``: an
  unconditional generator, which refuses every condition;
* ``--objective infogan``: z is followed by the one-hot categorical code (``label``, 0 to
  k - 1; uniform at random when not given) and the continuous codes (``vector``, c
  numbers in [-1, 1] by the paper's prior; uniform at random when not given);
* ``--objective gan-int-cls``: the text embedding (``vector``, as long as the weights'
  ``embedding_dim``) is required; the project has no text encoder, so a caption itself
  is not taken.

Noise and codes are drawn on the CPU from torch's global generator, then moved to the
device, so that one seed gives the same images on every device.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from models import weights as weights_lib
from models.common.device import pick_device
from models.common.images import to_uint8
from models.common.pipeline import ImageGenerationPipeline, Option, load_project_networks, read_project
from models.dcgan import losses
from models.dcgan.networks import Generator, TextConditionalGenerator
from models.errors import InvalidInput, WeightsMissing
from models.types import ImageCondition, Images

CHUNK = 64      # images drawn per generator call
LABEL_OPTION = Option("label", int, None, "InfoGAN weights only: the categorical code's value, 0 to k - 1 "
                                          "(k from the weights)", minimum=0)
BATCH_NORM_OPTION = Option("batch_norm", str, "running", "running: the statistics learnt in training (default); "
                                                        "batch: each call's own, as the reference draws its samples",
                           choices=("running", "batch"))


@contextmanager
def batch_statistics(network: torch.nn.Module, enabled: bool):
    """Batch norm on the batch's own statistics inside the block, the stored ones left as they are."""
    kinds = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)
    layers = [m for m in network.modules() if isinstance(m, kinds)] if enabled else []
    for layer in layers:
        layer.train()
        layer.track_running_stats = False       # normalise by the batch, update nothing
    try:
        yield
    finally:
        for layer in layers:
            layer.eval()
            layer.track_running_stats = True


def generator_config(state_dict: dict) -> dict:
    """``Generator`` arguments (nz, ngf, nc, image_size) read from a reference state dict's shapes."""
    convs = sorted((int(m.group(1)), v) for k, v in state_dict.items()
                   if (m := re.fullmatch(r"main\.(\d+)\.weight", k)) and v.ndim == 4)
    if len(convs) < 3:
        raise weights_lib.WeightsInvalid("not a DCGAN generator state dict (no main.N.weight convolutions)")
    first, last = convs[0][1], convs[-1][1]
    depth = len(convs) - 1
    width = first.shape[1]
    return {"nz": first.shape[0], "ngf": width // 2 ** (depth - 1), "nc": last.shape[1], "image_size": 2 ** (depth + 2)}


def find_reference_generator(directory) -> Path | None:
    """The reference's generator file in ``directory``: a registry-listed name, else the
    ``netG_epoch_N.pth`` of the highest N, else ``netG.pth``."""
    directory = Path(directory)
    for file in DCGANPipeline.weight_files():
        if file.name.startswith("netG") and (path := weights_lib.locate(file, directory)):
            return path
        for alias in file.aliases:
            if alias.startswith("netG") and (directory / alias).is_file():
                return directory / alias
    epochs = [(int(m.group(1)), p) for p in directory.glob("netG_epoch_*.pth")
              if (m := re.fullmatch(r"netG_epoch_(\d+)\.pth", p.name))]
    return max(epochs)[1] if epochs else None


class DCGANPipeline(ImageGenerationPipeline):
    """DCGAN (Radford et al., ICLR 2016) and the generators its objectives train.

    Args:
        generator: a ``Generator`` or ``TextConditionalGenerator``.
        objective: the objective that trained it (``losses.OBJECTIVES``; "gan" for the
            reference's files).
        codes: InfoGAN: ``{"noise": nz, "categories": k, "continuous": c}``.
        device: "auto", "cpu", "cuda" ...
        info: what to report about the weights.
    """

    name = "dcgan"
    options = (LABEL_OPTION, BATCH_NORM_OPTION)
    vector_size = 0               # the weights decide: InfoGAN's c, or GAN-INT-CLS's embedding length

    def __init__(self, generator, objective="gan", codes=None, device="auto", info=None):
        if objective not in losses.OBJECTIVES:
            raise WeightsMissing(f"unknown DCGAN objective {objective!r} in the weights' config")
        self.device = pick_device(device)
        self.generator = generator.to(self.device).eval().requires_grad_(False)
        self.objective = objective
        self.codes = codes or {}
        if objective == "infogan":
            expected = self.codes.get("noise", 0) + self.codes.get("categories", 0) + self.codes.get("continuous", 0)
            if not self.codes or expected != generator.nz:
                raise WeightsMissing(f"InfoGAN weights need their codes (noise + categories + continuous = "
                                     f"{generator.nz}); the config gives {self.codes}")
        self.info = dict(info or {}, model="dcgan", device=str(self.device), objective=objective,
                         image_size=generator.config["image_size"])

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory, device="auto", verify=True):
        """The reference's ``netG_epoch_N.pth`` in ``directory`` (see ``find_reference_generator``)."""
        directory = Path(directory)
        path = find_reference_generator(directory)
        if path is None:
            raise WeightsMissing(f"no DCGAN generator in {directory.resolve()}: put the netG_epoch_24.pth (or any "
                                 "netG_epoch_N.pth) that pytorch/examples' dcgan/main.py wrote there, or pass "
                                 "--weights with a folder trained by `talkingface train dcgan` (see weights/README.md)")
        generator = Generator(**generator_config(weights_lib.read_state_dict(path)))
        weights_lib.load_weights(generator, path, path.name)
        return cls(generator, "gan", device=device,
                   info={"weights": f"reference main.py file {path.name}", "weights_dir": str(directory)})

    @classmethod
    def from_project(cls, directory, device="auto", verify=True):
        """A folder this project wrote: a training run (``talkingface train dcgan``) or an export."""
        config = read_project(directory, verify)
        objective = config.get("objective") or "gan"
        network = TextConditionalGenerator if objective == "gan-int-cls" else Generator
        generator = load_project_networks(directory, {"generator": network}, config)["generator"]
        codes = None
        if objective == "infogan":
            d = config.get("discriminator", {})
            categories, continuous = int(d.get("categories", 0)), int(d.get("continuous", 0))
            codes = {"noise": generator.nz - categories - continuous, "categories": categories,
                     "continuous": continuous}
        return cls(generator, objective, codes=codes, device=device,
                   info={"weights": config.get("name", "project"), "weights_dir": str(directory)})

    # -- inference ------------------------------------------------------------------------
    def takes(self) -> dict:
        """What the loaded weights take: ``{"label": k or None, "vector": length or None, "required": bool}``."""
        if self.objective == "infogan":
            return {"label": self.codes["categories"] or None, "vector": self.codes["continuous"] or None,
                    "required": False}
        if self.objective == "gan-int-cls":
            return {"label": None, "vector": self.generator.embedding_dim, "required": True}
        return {"label": None, "vector": None, "required": False}

    def check_weights_condition(self, condition: ImageCondition, n: int) -> ImageCondition:
        """Step 1: ``condition`` against what the loaded weights take (the class declares the union)."""
        takes = self.takes()
        what = f"these dcgan weights ({self.objective})"
        if condition.label is not None:
            if takes["label"] is None:
                raise InvalidInput(f"{what} take no label: only InfoGAN weights take one (their categorical code)")
            if not 0 <= condition.label < takes["label"]:
                raise InvalidInput(f"{what} take a label from 0 to {takes['label'] - 1}, got {condition.label}")
        if condition.vector is not None and takes["vector"] is None:
            raise InvalidInput(f"{what} take no vector: InfoGAN weights take their continuous codes, "
                               "GAN-INT-CLS weights a text embedding")
        if takes["required"] and condition.vector is None:
            raise InvalidInput(f"{what} need a text embedding of {takes['vector']} numbers as the condition vector")
        return self.check_condition(condition, n, vector_size=takes["vector"])

    def draw_inputs(self, n: int, condition: ImageCondition) -> tuple:
        """Step 2: the generator's inputs on the CPU, from torch's global generator."""
        if self.objective == "infogan":
            noise = torch.randn(n, self.codes["noise"])
            vector = None if condition.vector is None else torch.from_numpy(np.array(condition.vector))
            _, one_hot, cont = losses.sample_codes(n, self.codes["categories"], self.codes["continuous"],
                                                   condition.label, vector)
            return (torch.cat([noise, one_hot, cont], 1)[:, :, None, None],)
        z = torch.randn(n, self.generator.nz, 1, 1)
        if self.objective == "gan-int-cls":
            return z, torch.from_numpy(np.array(condition.vector))
        return (z,)

    @torch.no_grad()
    def generate(self, n: int, condition: ImageCondition, levels=False, progress=None, batch_norm=None,
                 **options) -> Images:
        """Steps 1-3; ``levels`` is ignored (DCGAN draws at one scale).

        ``batch_norm``: "running" (default) normalises with the statistics learnt in
        training; "batch" with each chunk's own (``CHUNK`` images), as the reference's
        ``main.py`` draws its sample grids with the generator in training mode. The images
        then depend on how many are drawn together.
        """
        batch_norm = BATCH_NORM_OPTION.parse(batch_norm) or "running"
        # 1. Check the condition against the weights.
        condition = self.check_weights_condition(condition, n)
        # 2. Draw z (and codes) on the CPU.
        inputs = self.draw_inputs(n, condition)
        # 3. Generate in chunks.
        chunks = []
        with batch_statistics(self.generator, batch_norm == "batch"):
            for start in range(0, n, CHUNK):
                part = [x[start:start + CHUNK].to(self.device) for x in inputs]
                chunks.append(to_uint8(self.generator(*part)))
                if progress is not None:
                    progress(min(start + CHUNK, n), n)
        used = {kind: ("given" if getattr(condition, kind) is not None else "sampled")
                for kind, taken in (("label", self.takes()["label"]), ("vector", self.takes()["vector"])) if taken}
        return Images(images=np.concatenate(chunks), info=dict(self.info, condition=used, batch_norm=batch_norm))
