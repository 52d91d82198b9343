"""StackGAN's demo weights: a small text-conditional StackGAN++ on captioned rendered shapes.

    talkingface weights build-demo --model stackgan [--steps 1200]

1. ``captioned_shapes``: N images of a coloured disc or square on a plain background,
   each with its caption ("a red disc on a dark blue background": 8 shape colours,
   2 shapes, 5 backgrounds = 80 captions), rendered without any download.
2. ``train.Trainer``: the project's text encoder (``text.py``, Reed et al.'s matching
   objective) on those captions, then a 2-branch StackGAN++ tree (64 and 128 pixels,
   gf_dim 8) with the authors' losses, for a fixed number of steps (reproducible).
3. The generator (the live one: after 1,200 steps the authors' 0.999 average
   still holds 0.999^1200 = 30% of the initialisation) and the text encoder are exported (float16) with
   ``save_project`` into ``weights/demo/stackgan``, scored and drawn:
   ``REPORT.json`` (how often the drawn shape's and background's colours are the
   caption's, against chance) and ``examples.png``.

What the demo does: it draws the caption's colours on a plain background, shapes
roughly; it knows only the words of its captions.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SHAPE_COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 235), "yellow": (235, 220, 40),
                 "orange": (245, 140, 30), "purple": (150, 60, 200), "white": (240, 240, 240),
                 "cyan": (40, 210, 220)}
BACKGROUNDS = {"black": (15, 15, 15), "dark blue": (20, 30, 100), "dark green": (20, 80, 30),
               "dark red": (100, 20, 20), "grey": (120, 120, 120)}
SHAPES = ("disc", "square")
SIZE = 128
# The demo network: 2 branches (64, 128), reduced widths.
DEMO_CONFIG = {"branch_num": 2, "z_dim": 32, "embedding_dim": 16, "gf_dim": 8, "df_dim": 8, "r_num": 1,
               "text_dim": 32, "batch_size": 16, "encoder_steps": 300, "encoder_batch": 64}
DEMO_STEPS = 1200
EXAMPLE_CAPTIONS = ("a red disc on a dark blue background", "a yellow square on a black background",
                    "a white disc on a dark green background", "a cyan square on a dark red background")
DEMO_IMAGES = 1600


def caption(colour, shape, background) -> str:
    return f"a {colour} {shape} on a {background} background"


def all_captions() -> list[str]:
    return [caption(c, s, b) for c in SHAPE_COLOURS for s in SHAPES for b in BACKGROUNDS]


def captioned_shapes(count: int, size=SIZE, seed=0) -> tuple[np.ndarray, list[str]]:
    """uint8 (count, size, size, 3) images and their captions; the shape always covers the centre."""
    rng = np.random.default_rng(seed)
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    images = np.empty((count, size, size, 3), np.uint8)
    captions = []
    colours, backgrounds = list(SHAPE_COLOURS), list(BACKGROUNDS)
    for i in range(count):
        colour, background = colours[rng.integers(len(colours))], backgrounds[rng.integers(len(backgrounds))]
        shape = SHAPES[rng.integers(2)]
        cy, cx, radius = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6), rng.uniform(0.18, 0.3)
        if shape == "disc":
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
        else:
            mask = (np.abs(yy - cy) < radius * 0.9) & (np.abs(xx - cx) < radius * 0.9)
        jitter = rng.normal(0, 6, 3)
        fg = np.clip(np.array(SHAPE_COLOURS[colour]) + jitter, 0, 255)
        bg = np.clip(np.array(BACKGROUNDS[background]) + rng.normal(0, 4, 3), 0, 255)
        images[i] = np.round(np.where(mask[..., None], fg, bg)).astype(np.uint8)
        captions.append(caption(colour, shape, background))
    return images, captions


def write_captioned_shapes(folder, count: int, seed=0) -> Path:
    """``captioned_shapes`` as PNG files plus ``captions.txt`` (``<file><TAB><caption>`` lines)."""
    from PIL import Image

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, captions = captioned_shapes(count, seed=seed)
    lines = []
    for i, (image, text) in enumerate(zip(images, captions)):
        name = f"shape_{i:05d}.png"
        Image.fromarray(image).save(folder / "images" / name)
        lines.append(f"{name}\t{text}")
    (folder / "captions.txt").write_text("\n".join(lines) + "\n")
    return folder


def nearest(colour, palette: dict) -> str:
    names = list(palette)
    distances = [np.sum((np.asarray(colour, float) - np.asarray(palette[n], float)) ** 2) for n in names]
    return names[int(np.argmin(distances))]


def colour_scores(pipe, per_caption=2, seed=0) -> dict:
    """How often the drawn centre colour is the caption's shape colour and the border the background's.

    Every caption, ``per_caption`` images; the colours are the median of the central 8% square
    and of a 4-pixel border, named by the nearest palette colour. Chance is 1/8 and 1/5.
    """
    shape_hits = background_hits = total = 0
    torch.manual_seed(seed)
    for text in all_captions():
        images = pipe.generate(per_caption, _condition(text)).images
        size = images.shape[1]
        c0, c1 = int(size * 0.46), int(size * 0.54)
        for image in images:
            centre = np.median(image[c0:c1, c0:c1].reshape(-1, 3), axis=0)
            border = np.median(np.concatenate([image[:4].reshape(-1, 3), image[-4:].reshape(-1, 3),
                                               image[:, :4].reshape(-1, 3), image[:, -4:].reshape(-1, 3)]), axis=0)
            shape_hits += nearest(centre, SHAPE_COLOURS) in text
            background_hits += f"on a {nearest(border, BACKGROUNDS)} background" in text
            total += 1
    return {"images": total, "shape_colour_accuracy": round(shape_hits / total, 3),
            "background_accuracy": round(background_hits / total, 3),
            "chance": {"shape_colour": round(1 / len(SHAPE_COLOURS), 3), "background": round(1 / len(BACKGROUNDS), 3)}}


def _condition(text):
    from models.types import ImageCondition

    return ImageCondition(text=text)


def export(run_dir, out_dir, name="StackGAN++ demo (captioned shapes)", averaged=True, extra=None) -> Path:
    """A training run -> a project weights folder: the generator and the text encoder, float16.

    ``averaged``: the moving average of G (what the authors save), else the live G.
    """
    from models.common.pipeline import save_project
    from models.common.train import read_run_config
    from models.stackgan.networks import GNet
    from models.stackgan.text import CharCNNRNN
    from models.weights import load_weights

    run_dir = Path(run_dir)
    config = read_run_config(run_dir, "stackgan")
    file = "generator.safetensors" if averaged else "generator_train.safetensors"
    networks = {"generator": load_weights(GNet(**config["generator"]), run_dir / file)}
    if "text_encoder" in config:
        networks["text_encoder"] = load_weights(CharCNNRNN(**config["text_encoder"]),
                                                run_dir / "text_encoder.safetensors")
    for network in networks.values():
        network.half()              # float16 storage; loading copies it back into float32
    return save_project(out_dir, "stackgan", networks, name=name,
                        extra={"kind": "v2", "variant": "demo", "step": config["step"], "averaged": averaged,
                               "captions": config.get("captions", []), **(extra or {})})


def package_demo(run_dir, out_dir, seed=0, images=DEMO_IMAGES) -> dict:
    """Step 3: export the run's live generator (a 0.999 average over the demo's steps still
    holds much of its initialisation) and text encoder, score them, draw ``examples.png``."""
    from PIL import Image

    from models.common.images import image_grid
    from models.common.train import read_run_config
    from models.stackgan.pipeline import StackGANPipeline

    run = read_run_config(run_dir, "stackgan")
    last = run["loss_history"][-1] if run.get("loss_history") else {}
    out = export(run_dir, out_dir, averaged=False, extra={"training": {
        "images": images, "steps": run["step"], "seconds": run["elapsed_seconds"], "config": DEMO_CONFIG,
        "losses": {k: round(v, 4) for k, v in last.items() if k != "step"}}})
    pipe = StackGANPipeline.from_project(out, device="cpu")
    report = {"name": "StackGAN++ demo (captioned shapes)", "steps": run["step"],
              "train_seconds": run["elapsed_seconds"], "scores": colour_scores(pipe, seed=seed + 1)}
    torch.manual_seed(seed)
    rows = []
    for text in EXAMPLE_CAPTIONS:
        rows.append(pipe.generate(4, _condition(text)).images)
    Image.fromarray(image_grid(np.concatenate(rows), columns=4)).save(Path(out) / "examples.png")
    return report


def build_demo(out_dir, work_dir=None, seed=0, steps=DEMO_STEPS, images=DEMO_IMAGES, progress=False,
               threads=2) -> dict:
    """Steps 1-3 of the module docstring; returns the report (also ``REPORT.json``).

    ``threads``: torch's CPU threads (on a machine shared with other jobs, 1 wastes less).
    """
    from models.stackgan.train import train

    start = time.monotonic()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(work_dir or tmp)
        data = write_captioned_shapes(work / "data", images, seed=seed)
        train(data / "images", work / "run", captions=str(data / "captions.txt"), max_steps=steps, seed=seed,
              resume=False, progress=progress, sample_every=0, checkpoint_every=100, log_every=50, device="cpu",
              **DEMO_CONFIG)
        report = package_demo(work / "run", out_dir, seed=seed, images=images)
    report["build_seconds"] = round(time.monotonic() - start, 1)
    (Path(out_dir) / "REPORT.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
