"""LR-GAN's inference pipeline: noise -> a background, then foregrounds pasted on it.

Yang, Kannan, Batra and Parikh, "LR-GAN: Layered Recursive Generative Adversarial Networks
for Image Generation", ICLR 2017 (github.com/jwyang/lr-gan.pytorch).

    pipe = registry.load("lrgan")                    # the demo weights when none are configured
    torch.manual_seed(0)
    out = pipe(n=4, levels=True)                     # out.images (4, 32, 32, 3) uint8
    # out.levels: [("background", ...), ("foreground 1", ...)]: the canvas after each step

The model is unconditional: one noise vector per step and image, (ntimestep, n, nz), drawn
from torch's global generator on the CPU (the same seed gives the same images on any
device). ``levels`` shows the canvas after each step, as the paper's figures do.

Weights: no authors' files are released. ``from_pretrained`` reads a generator file the
reference's train.py saved (``<dataset>_netG_s_<session>_epoch_<n>.pth``, see
``models.lrgan.convert``); ``from_project`` a folder of this project (a training run or an
exported one, ``config.json`` + ``generator.safetensors``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from models.common.device import pick_device
from models.common.images import to_uint8
from models.common.pipeline import ImageGenerationPipeline, load_project_networks, read_project
from models.errors import WeightsMissing
from models.lrgan.convert import find_generator, load_reference_generator
from models.lrgan.networks import LRGANGenerator
from models.types import ImageCondition, Images


class LRGANPipeline(ImageGenerationPipeline):
    """LR-GAN's generator as an unconditional image generator, with its layers as levels.

    Args:
        generator (`LRGANGenerator`): the network (its ``config`` gives the sizes).
        device (`str`, defaults to "auto"): where it runs.
        info (`dict`, optional): what the weights are (``weights``, ``weights_dir`` ...).
    """

    name = "lrgan"
    levels = True

    def __init__(self, generator: LRGANGenerator, device="auto", info=None):
        self.device = pick_device(device)
        self.generator = generator.to(self.device).eval()
        config = generator.config
        self.info = dict(info or {}, model="lrgan", device=str(self.device), image_size=config["image_size"],
                         ntimestep=config["ntimestep"], channels=config["nc"])
        self.info.setdefault("weights", "random")

    # -- weights --------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory, device="auto", verify=True):
        """A folder holding one generator file of the reference's train.py (``*netG*.pth``)."""
        path = find_generator(directory)
        generator = load_reference_generator(path)
        return cls(generator, device=device, info={"weights": path.name, "weights_dir": str(directory)})

    @classmethod
    def from_project(cls, directory, device="auto", verify=True):
        """A project folder: ``config.json`` (``generator`` arguments) + ``generator.safetensors``."""
        config = read_project(directory, verify=verify)
        if "generator" not in config:
            raise WeightsMissing(f"{Path(directory) / 'config.json'} has no generator entry: not LR-GAN weights")
        generator = load_project_networks(directory, {"generator": LRGANGenerator}, config)["generator"]
        return cls(generator, device=device, info={"weights": config.get("name", "project"),
                                                   "weights_dir": str(directory)})

    # -- sampling -------------------------------------------------------------------------
    def sample_noise(self, n: int) -> torch.Tensor:
        """(ntimestep, n, nz) standard normal noise from torch's global generator, on the CPU."""
        config = self.generator.config
        return torch.randn(config["ntimestep"], n, config["nz"])

    def generate(self, n: int, condition: ImageCondition, levels=False, progress=None, **options) -> Images:
        """``n`` images; with ``levels`` the canvas after each step (background, then each foreground)."""
        # 1. Noise, drawn on the CPU so that a seed means the same images everywhere
        noise = self.sample_noise(n).to(self.device)
        # 2. The recursive generation (background, then each foreground composited)
        with torch.inference_mode():
            final, canvases, _, _ = self.generator(noise)
        # 3. uint8 images, and the layers when asked
        steps = []
        if levels:
            names = ["background"] + [f"foreground {t}" for t in range(1, len(canvases))]
            steps = [(name, to_uint8(canvas)) for name, canvas in zip(names, canvases)]
        if progress is not None:
            progress(n, n)
        return Images(images=to_uint8(final), levels=steps,
                      info={**self.info, "condition": "none (unconditional)", "n": n})
