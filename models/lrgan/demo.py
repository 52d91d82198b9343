"""LR-GAN's demo weights: ``talkingface weights build-demo --model lrgan``.

    talkingface weights build-demo --model lrgan [--steps 400]

No weights are released and the paper's sets cannot be fetched at run time, so the demo
learns the offline ``shapes`` set (``models.common.images.demo_images``): one coloured disc
or square on a plain background, 32 x 32, exactly a foreground on a background. The
reference's recipe (losses, Adam 2e-4 / 0.5, two steps, maxobjscale 1.2, rot 0.1) with a
narrower network and half the batch (``DEMO_CONFIG``: ngf = ndf = 16, batches of 32; nz
stays 100), for a fixed number of steps so that the build is reproducible; the generator
is exported in float16 (``weights/demo/lrgan``, about 1.4 MB) with ``example.png`` (per
row: background, final image, foreground appearance, foreground mask) and ``REPORT.json``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from models.common.demo import write_report
from models.common.images import write_demo_images
from models.common.pipeline import load_project_networks, read_project
from models.common.train import save_png
from models.lrgan.networks import LRGANGenerator

DEMO_SET, DEMO_SIZE, DEMO_IMAGES = "shapes", 32, 2000
DEMO_CONFIG = dict(ngf=16, ndf=16, nz=100, batch_size=32, image_size=DEMO_SIZE)
DEMO_STEPS = 400


def layer_stats(generator: LRGANGenerator, count=256, seed=1) -> dict:
    """What the foreground layer does on ``count`` samples: its mask and how much it changes the canvas."""
    noise = torch.randn(generator.ntimestep, count, generator.nz, generator=torch.Generator().manual_seed(seed))
    generator.eval()
    with torch.no_grad():
        final, canvases, _, masks = generator(noise)
    changed = (final - canvases[0]).abs().amax(1)                         # (N, S, S)
    return {"samples": count, "mask_mean": round(masks[0].mean().item(), 4),
            "canvas_pixels_changed_by_foreground": round((changed > 0.1).float().mean().item(), 4),
            "final_std_over_pixels": round(final.std(dim=(2, 3)).mean().item(), 4)}


def build_demo(out_dir, work_dir=None, steps: int = DEMO_STEPS, seed: int = 0, progress: bool = True,
               **sizes) -> dict:
    """Write the offline images, train LR-GAN on them for ``steps`` steps, export into ``out_dir``.

    Args:
        out_dir: the weights folder to write (``weights/demo/lrgan`` for the shipped one).
        work_dir (optional): folder for the images and the run (a new temporary one by default);
            an interrupted build resumes from it.
        steps: optimisation steps (fixed, for a reproducible build).
        seed: of the images and the training.
        progress: progress bars.
        sizes: override ``DEMO_CONFIG``.

    Returns:
        The report also written as ``REPORT.json``.
    """
    from models.lrgan import train

    work = Path(work_dir or tempfile.mkdtemp(prefix="build-lrgan-demo-"))
    images = write_demo_images(work / "images", DEMO_SET, DEMO_SIZE, DEMO_IMAGES, seed=seed)
    # An interrupted build continues from its last checkpoint in work_dir (every 50 steps);
    # a resumed run draws the same batches and noise as an uninterrupted one.
    run = train.train(images, work / "run", max_steps=steps, seed=seed, device="cpu", progress=progress,
                      sample_every=100, checkpoint_every=50, **dict(DEMO_CONFIG, **sizes))
    out_dir = train.export(work / "run", out_dir, name="demo (project-trained on the offline shapes set)",
                           half=True, extra={"demo_set": DEMO_SET, "demo_images": DEMO_IMAGES})
    generator = load_project_networks(out_dir, {"generator": LRGANGenerator}, read_project(out_dir))["generator"]
    noise = torch.randn(generator.ntimestep, 8, generator.nz, generator=torch.Generator().manual_seed(seed))
    save_png(out_dir / "example.png", train.sample_grid(generator, noise))
    report = {"steps": run["step"], "trained_seconds": round(run["elapsed"], 1), "losses": run["losses"],
              "data": {"set": DEMO_SET, "images": DEMO_IMAGES, "size": DEMO_SIZE},
              "config": dict(DEMO_CONFIG, **sizes), "layers": layer_stats(generator),
              "example.png": "per row: background, final image, foreground appearance, foreground mask"}
    return write_report(out_dir, report)
