"""GRAN's demo weights: a small GRAN trained on the offline ``digits`` set at 32 x 32, T = 3.

    talkingface weights build-demo --model gran [--out weights/demo/gran]

The recipe is fixed (``DEMO``): 1,797 scikit-learn digits upscaled to 32 x 32 (grey, one
channel), the CIFAR-10 architecture at a 32nd of its widths (generator 32/16/8 for
1024/512/256, discriminator 16/16/8), T = 3, batch 32, a fixed number of steps (not a time budget,
so the build is reproducible), the authors' losses and Adam at a larger learning rate
than their 20 epochs of CIFAR-10 use. The generator and discriminator are exported in
float16 with ``save_project``; the pipeline reads them back in float32.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models.common.images import demo_images, from_uint8, image_grid
from models.common.pipeline import save_project
from models.common.train import save_png
from models.gran.networks import GRANDiscriminator, GRANGenerator, sequential_drawing
from models.gran.pipeline import to_uint8_unit

DEMO = {
    "images": "digits", "image_size": 32, "channels": 1,
    "widths": [32, 16, 8], "d_widths": [16, 16, 8], "num_hid": 100, "num_steps": 3,
    "batch_size": 32, "max_steps": 600, "lr_g": 1e-3, "lr_d": 4e-4, "weight_decay": 5e-6,
}
DEMO_DIR = Path(__file__).resolve().parents[2] / "weights" / "demo" / "gran"


def build_demo(out_dir=None, work_dir=None, seed=0, progress=True, max_steps=None, threads=1) -> dict:
    """Train the demo recipe, export it to ``out_dir`` (the shipped folder by default); a report."""
    from models.gran.train import train

    torch.set_num_threads(threads)
    out_dir = Path(out_dir or DEMO_DIR)
    work = Path(work_dir or tempfile.mkdtemp(prefix="gran_demo_"))
    recipe = dict(DEMO, max_steps=max_steps or DEMO["max_steps"])
    images = from_uint8(demo_images(recipe["images"], recipe["image_size"], seed=seed), channels=recipe["channels"])
    start = time.monotonic()
    summary = train(None, work / "run", images=images, preset="cifar10", channels=recipe["channels"],
                    image_size=recipe["image_size"], widths=recipe["widths"], d_widths=recipe["d_widths"],
                    num_hid=recipe["num_hid"], num_steps=recipe["num_steps"], batch_size=recipe["batch_size"],
                    max_steps=recipe["max_steps"], lr_g=recipe["lr_g"], lr_d=recipe["lr_d"],
                    weight_decay=recipe["weight_decay"], epochs=10_000, seed=seed, resume=False,
                    progress=progress, sample_every=0, checkpoint_every=10_000, device="cpu")
    seconds = time.monotonic() - start
    config = json.loads((work / "run" / "config.json").read_text())
    generator = GRANGenerator(**config["generator"])
    discriminator = GRANDiscriminator(**config["discriminator"])
    from models.common.train import load_safetensors

    load_safetensors(generator, work / "run" / "generator.safetensors")
    load_safetensors(discriminator, work / "run" / "discriminator.safetensors")
    report = {"recipe": recipe, "steps": summary["step"], "train_seconds": round(seconds, 1),
              "losses": summary["losses"], "seed": seed}
    save_project(out_dir, "gran", {"generator": generator.half(), "discriminator": discriminator.half()},
                 name=f"demo: GRAN on 32x32 digits, T = {recipe['num_steps']}, {summary['step']} steps",
                 extra={"image_size": generator.image_size, "report": report})
    # An example: 8 samples, each row the canvas after steps 1..T.
    generator = generator.float().eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        _, updates = generator(torch.randn(32, generator.z_dim))
    drawn = [to_uint8_unit(canvas[:8]) for canvas in sequential_drawing(updates)]
    tiles = np.stack(drawn, axis=1).reshape(-1, *drawn[0].shape[1:])
    save_png(out_dir / "example.png", image_grid(tiles, columns=len(drawn)))
    return {**report, "out": str(out_dir)}
