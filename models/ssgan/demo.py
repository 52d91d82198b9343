"""S^2-GAN demo weights: the three stages, reduced, on rendered rooms with exact normals.

``build_demo`` renders 2,000 rooms (``models.ssgan.data.render_scenes``: floor, walls and
ceiling, boxes and spheres, Lambertian shading in colour; 32 x 32 images and normals),
trains the Structure-GAN (32 x 32 normals), the normal FCN and the Style-GAN (32 x 32
images, FCN loss with lambda 0.1) with the authors' losses and update rules at width 8 for
a fixed number of steps, and exports the two generators (``weights/demo/ssgan``).

It scores what it made (``REPORT.json``):

* ``room_normals``: the share of normal pixels within 20 degrees of one of the five room
  directions (floor, ceiling, back, left, right wall), for the rendered set and for 256
  generated maps;
* ``fcn_accuracy``: the demo FCN's per-pixel cluster accuracy on rendered images and on the
  Style-GAN's images of generated normals (how well the image follows its normals);

and draws ``example.png`` (rows of normals then images, seed 0).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models.registry import DEMO_WEIGHTS

DEMO = {
    "count": 2000,                     # rendered rooms
    "size": 32,                        # normals and images
    "base_channels": 8,                # nplanes (64 published)
    "batch_size": 32,
    "fcn_channels": (8, 16, 16, 16, 16, 32, 16),
    "steps": {"structure": 600, "fcn": 150, "style": 450},
}
ROOM_DIRECTIONS = np.array([[0, 1, 0], [0, -1, 0], [0, 0, 1], [1, 0, 0], [-1, 0, 0]], np.float32)


def room_share(normals: torch.Tensor, degrees=20.0) -> float:
    """Share of pixels of (N, 3, H, W) normals within ``degrees`` of a room direction."""
    unit = normals / normals.norm(dim=1, keepdim=True).clamp_min(1e-8)
    cos = torch.einsum("bchw,kc->bkhw", unit, torch.from_numpy(ROOM_DIRECTIONS)).amax(1)
    return float((cos > np.cos(np.radians(degrees))).float().mean())


def build_demo(out_dir=None, work_dir=None, seed=0, progress=True, steps=None, count=None) -> dict:
    """Render, train the three stages, export and score; returns the report.

    Args:
        out_dir: the demo folder (default ``weights/demo/ssgan``).
        work_dir: where the rendered set and the runs go (default: a temporary folder, removed).
        seed: the rendering's and the training's seed.
        steps: {stage: steps} instead of ``DEMO["steps"]`` (tests use a few).
        count: rendered rooms instead of ``DEMO["count"]``.
    """
    from models.common.images import image_grid
    from models.ssgan import train as training
    from models.ssgan.data import write_scenes

    out_dir = Path(out_dir or DEMO_WEIGHTS / "ssgan")
    temporary = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="ssgan-demo-")) if temporary else Path(work_dir)
    steps = steps or DEMO["steps"]
    try:
        start = time.monotonic()
        images_dir, normals_dir = write_scenes(work / "rooms", count or DEMO["count"], DEMO["size"], seed)
        rendered = time.monotonic() - start
        run = work / "run"
        summary = training.train(images_dir, normals_dir, run, stage_steps=steps, name="ssgan-demo",
                                 structure_size=DEMO["size"], image_size=DEMO["size"],
                                 base_channels=DEMO["base_channels"], batch_size=DEMO["batch_size"],
                                 fcn_channels=DEMO["fcn_channels"], seed=seed, progress=progress, sample_every=0,
                                 checkpoint_every=10 ** 6, resume=False)
        seconds = time.monotonic() - start
        report = {"what": "S^2-GAN demo: rendered rooms, 32x32 normals and images, width 8",
                  "rooms": count or DEMO["count"], "steps": dict(steps), "seconds": round(seconds, 1),
                  "render_seconds": round(rendered, 1), "losses": summary["stages"], "seed": seed,
                  "settings": {k: v for k, v in DEMO.items() if k != "steps"}}
        training.export(run / "structure", run / "style", out_dir, name="ssgan-demo",
                        extra={"demo": {k: report[k] for k in ("what", "rooms", "steps", "seed")}})
        report.update(score(out_dir, run, images_dir, normals_dir))

        # example.png: normals row over image row, 8 samples of seed 0
        from models.ssgan.pipeline import SSGANPipeline

        pipe = SSGANPipeline.from_project(out_dir, device="cpu")
        torch.manual_seed(0)
        out = pipe(n=8, levels=True)
        grid = np.concatenate([image_grid(out.levels[0][1], 8), image_grid(out.images, 8)], axis=0)
        from PIL import Image

        Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(
            out_dir / "example.png")
        (out_dir / "REPORT.json").write_text(json.dumps(report, indent=2) + "\n")
        return report
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)


@torch.no_grad()
def score(weights_dir, run, images_dir, normals_dir) -> dict:
    """``room_normals`` and ``fcn_accuracy`` (see the module docstring)."""
    from models.ssgan import train as training
    from models.ssgan.data import read_pairs
    from models.ssgan.pipeline import SSGANPipeline

    images, normals, _ = read_pairs(images_dir, normals_dir, DEMO["size"])
    images, normals = images[:256], normals[:256]
    pipe = SSGANPipeline.from_project(weights_dir, device="cpu")
    _, pair = pipe.pick()
    generator = torch.Generator().manual_seed(1)
    z1 = torch.rand(256, pair.structure.config["noise_dim"], 1, 1, generator=generator) * 2 - 1
    z2 = torch.rand(256, pair.style.config["noise_dim"], 1, 1, generator=generator) * 2 - 1
    fake_normals = pair.structure(z1)
    fake_images = pair.style(z2, fake_normals)
    result = {"room_normals": {"rendered": round(room_share(normals), 4),
                               "generated": round(room_share(fake_normals), 4)}}
    if (Path(run) / "fcn" / "config.json").is_file():
        fcn, codebook = training.load_fcn(Path(run) / "fcn")
        codebook = torch.from_numpy(codebook)

        def accuracy(x, n):
            up = training.fcn_input(x)
            predicted = fcn(up).argmax(1)
            labels = training.normal_classes(n, codebook, up.shape[-1] // 16)
            return round(float((predicted == labels).float().mean()), 4)

        result["fcn_accuracy"] = {"rendered": accuracy(images, normals),
                                  "generated": accuracy(fake_images, fake_normals)}
    return result
