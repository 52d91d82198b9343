"""GRAN inference: noise -> images drawn in T steps on a canvas.

    pipe = registry.load("gran")                       # best weights found
    torch.manual_seed(0)
    out = pipe(n=4, levels=True)                       # out.levels: the canvas after each step

Im et al. 2016 (arXiv:1602.05110), Sec. 3: one noise vector z per image is fed at every
step; each step decodes a canvas update from z and the encoding of the previous update,
and the image is sigmoid(C_T), C_T the sum of the T updates (``networks.GRANGenerator``).

1. Check the request (GRAN is unconditional: no text, label or vector).
2. Draw the noise on the CPU from torch's global generator (the service seeds it), for
   ``max(n, batch)`` images: the authors' generator normalises every layer with the
   statistics of the batch it draws (it never uses running statistics), so an image is
   drawn among ``batch`` others, as the authors drew 100 at a time; one image alone would
   be normalised to nothing.
3. Run the recursion for ``steps`` steps (the trained T by default; the authors' sampling
   script uses 3); keep the first ``n`` images.
4. ``levels``: sigmoid of the canvas after each step (the paper's Fig. 2, drawing sequences).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models import weights as weights_lib
from models.common.device import pick_device
from models.common.pipeline import ImageGenerationPipeline, Option, load_project_networks, read_project
from models.errors import InvalidInput, WeightsMissing
from models.gran.networks import GRANGenerator, sequential_drawing
from models.types import ImageCondition, Images

STEPS_OPTION = Option("steps", int, None, "canvas steps T (default: the number the weights were trained with)",
                      minimum=1, maximum=16)
BATCH_OPTION = Option("batch", int, 32, "images drawn together: GRAN normalises each layer over the batch it "
                                        "draws (the authors drew 100)", minimum=2, maximum=256)


def to_uint8_unit(images: torch.Tensor) -> np.ndarray:
    """Images (n, C, H, W) in [0, 1] (GRAN's sigmoid output) -> uint8 RGB (n, H, W, 3)."""
    images = images.detach().float().cpu().clamp(0, 1)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


class GRANPipeline(ImageGenerationPipeline):
    """GRAN (Im, Kim, Jiang and Memisevic, 2016): unconditional images, drawn step by step."""

    name = "gran"
    levels = True
    options = (STEPS_OPTION, BATCH_OPTION)

    def __init__(self, generator: GRANGenerator, device="auto", info=None):
        self.device = pick_device(device)
        self.generator = generator.to(self.device).eval().requires_grad_(False)
        self.info = dict(info or {}, model="gran", device=str(self.device), image_size=generator.image_size,
                         num_steps=generator.num_steps)
        self.info.setdefault("weights", "unnamed")

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory, device="auto", verify=True):
        """The authors' pickled model (a ``.save`` file of their Theano code) in ``directory``.

        The pickle is read without Theano (``convert.load_pickle``, which refuses any class
        it does not know).
        """
        from models.gran.convert import networks_from_pickle

        directory = Path(directory)
        listed = [weights_lib.locate(f, directory) for f in cls.weight_files()]
        found = [p for p in listed if p] or sorted(directory.glob("*.save"))
        if not found:
            names = ", ".join(f.name for f in cls.weight_files())
            source = cls.weight_files()[0].source if cls.weight_files() else "weights/README.md"
            raise WeightsMissing(f"no GRAN model pickle (*.save, e.g. {names}) in {directory}; from {source}; "
                                 "or use the demo weights / train your own (talkingface train gran --images DIR)")
        generator = networks_from_pickle(found[0])["generator"]
        return cls(generator, device=device, info={"weights": f"the authors' {found[0].name}",
                                                   "weights_dir": str(directory)})

    @classmethod
    def from_project(cls, directory, device="auto", verify=True):
        """A GRAN weights folder of this project (a training run exported, the demo, a converted pickle)."""
        config = read_project(directory, verify)
        generator = load_project_networks(directory, {"generator": GRANGenerator}, config)["generator"]
        return cls(generator.float(), device=device, info={"weights": config.get("name", "project"),
                                                           "weights_dir": str(directory)})

    # -- inference ------------------------------------------------------------------------
    def draw_noise(self, count: int) -> torch.Tensor:
        """Step 2: z ~ N(0, 1) (count, z_dim), from torch's global CPU generator."""
        return torch.randn(count, self.generator.z_dim).to(self.device)

    @torch.no_grad()
    def generate(self, n: int, condition: ImageCondition, levels=False, progress=None, steps=None, batch=None,
                 **options) -> Images:
        """Steps 1-4: ``n`` images (n, S, S, 3) uint8; ``levels`` the canvas after each step."""
        # 1. Check inputs
        if n < 1:
            raise InvalidInput("n must be at least 1")
        steps = STEPS_OPTION.parse(steps) or self.generator.num_steps
        batch = BATCH_OPTION.parse(batch) or BATCH_OPTION.default
        # 2. Noise for the whole batch
        z = self.draw_noise(max(n, batch))
        # 3. The canvas recursion
        images, updates = self.generator(z, num_steps=steps)
        if progress is not None:
            progress(n, n)
        # 4. The drawing sequence
        drawn = []
        if levels:
            drawn = [(f"step {t + 1} of {steps}", to_uint8_unit(canvas[:n]))
                     for t, canvas in enumerate(sequential_drawing(updates))]
        info = dict(self.info, steps=steps, batch=max(n, batch), condition="none (unconditional)")
        return Images(images=to_uint8_unit(images[:n]), levels=drawn, info=info)
