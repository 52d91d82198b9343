"""LAPGAN's demo weights: a class-conditional 8 -> 16 -> 32 pyramid on scikit-learn's digits.

    talkingface weights build-demo --model lapgan          # -> weights/demo/lapgan

1. The 1,797 bundled 8 x 8 digits of ``sklearn.datasets.load_digits`` are enlarged to
   32 x 32 (bicubic, as ``models.common.images.demo_images("digits")`` does) and written
   as PNG files into one sub-folder per digit: the layout ``talkingface train lapgan
   --images`` reads labels from.
2. ``train.train`` on that folder for a fixed number of steps (reproducible, whatever the
   machine's speed) with eyescream's networks and losses, but, so that it takes a few
   minutes on two idle CPU cores, Adam (lr 1e-3, betas 0.5 / 0.999) instead of
   eyescream's SGD (lr 0.02, momentum from 0, which after a few thousand steps still draws
   one shape for every class), and smaller networks and batches:
   G_K / D_K 256 / 128 units (paper: 1200 / 600), the convolutional levels 16 planes
   (eyescream: 64), batches of 32 (eyescream: 128), and one global mean / std
   (``normalizeGlobal``: the digits' border pixels never change, which per-pixel
   normalisation turns into divisions by 1e-7) and one grey channel.
3. The generators are exported with ``save_project`` in float16 (loaded back as float32),
   with the training set's mean and std, and a preview of every digit with its levels.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models.common.images import image_grid, level_grid
from models.common.pipeline import save_project
from models.lapgan import networks as nets
from models.lapgan.pipeline import NORMALIZATION_FILE

DEMO_STEPS = 2000
DEMO_SETTINGS = dict(channels=1, coarse_hidden_g=256, coarse_hidden_d=128, hidden_g=16, hidden_d=16, batch_size=32,
                     normalize="global", optimizer="adam", lr=1e-3, sample_every=500, checkpoint_every=500,
                     log_every=50)
SIZE = 32


def write_digits(folder, size=SIZE) -> Path:
    """scikit-learn's digits, enlarged to ``size``, as ``folder/<digit>/<index>.png``; the folder."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = Path(folder)
    for index, (image, label) in enumerate(zip(digits.images, digits.target)):
        pixels = Image.fromarray((image * 255 / 16).astype(np.uint8)).resize((size, size), Image.BICUBIC)
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        pixels.convert("RGB").save(folder / str(label) / f"{index:04d}.png")
    return folder


def export(run_dir, out_dir, name: str, float16=True, extra=None) -> Path:
    """The generators of a training run -> a project weights folder (``save_project``)."""
    from models.common.pipeline import load_project_networks, read_project
    from models.lapgan.pipeline import generator_names, read_normalization

    run_dir = Path(run_dir)
    config = read_project(run_dir)
    names = generator_names(config)
    generators = load_project_networks(run_dir, {n: nets.network_class(n) for n in names}, config)
    if float16:
        generators = {n: g.half() for n, g in generators.items()}
    mean, std = read_normalization(run_dir)
    keep = {k: config[k] for k in ("sizes", "class_names", "normalize") if k in config}
    return save_project(out_dir, "lapgan", generators, name=name,
                        arrays={NORMALIZATION_FILE: {"mean": mean.numpy(), "std": std.numpy()}},
                        extra={**keep, "storage": "float16" if float16 else "float32", **(extra or {})})


def preview(out_dir, seed=0, per_class=4) -> np.ndarray:
    """Every digit ``per_class`` times, each row its levels 8 -> 16 -> 32 then the image."""
    from models import registry
    from models.types import ImageCondition

    pipe = registry.load("lapgan", weights=out_dir, device="cpu")
    rows = []
    for label in range(pipe.classes):
        torch.manual_seed(seed + label)
        out = pipe(n=per_class, condition=ImageCondition(label=label), levels=True)
        rows.append(level_grid(out.levels[:-1], out.images))
    return image_grid(np.stack(rows), columns=5)


def build_demo(out_dir, work_dir=None, seed=0, steps=None, progress=True) -> dict:
    """Steps 1-3 into ``out_dir``; returns a report (steps, seconds, losses, files)."""
    from PIL import Image

    from models.lapgan.train import train

    steps = steps or DEMO_STEPS
    torch.set_num_threads(min(2, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(work_dir or tmp)
        images = write_digits(work / "digits")
        start = time.monotonic()
        summary = train(images, work / "run", resume=False, progress=progress, max_steps=steps, seed=seed,
                        device="cpu", extra={"name": "demo: digits 8-16-32"}, **DEMO_SETTINGS)
        seconds = time.monotonic() - start
        notes = {"trained_on": "scikit-learn load_digits (1,797 images, 10 classes) at 32x32",
                 "steps": summary["step"], "train_seconds": round(seconds, 1), "settings": DEMO_SETTINGS,
                 "final_losses": summary["losses"]}
        out = export(work / "run", out_dir, "demo: class-conditional digits 8-16-32", extra={"demo": notes})
    Image.fromarray(preview(out, seed)).save(Path(out) / "preview.png")
    files = sorted(p.name for p in Path(out).iterdir())
    return {"out": str(out), **notes, "files": files,
            "bytes": sum(p.stat().st_size for p in Path(out).iterdir())}
