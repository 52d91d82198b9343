"""DCGAN's demo weights: ``talkingface weights build-demo --model dcgan``.

    talkingface weights build-demo --model dcgan [--steps 600]

No data set can be fetched at run time, so the demo generator learns scikit-learn's
bundled handwritten digits (1,797 8x8 images, ``models.common.images.demo_images``),
upscaled to 32x32 and grey (``nc`` 1):

1. The digits are written as PNG files and read back by the training's own folder reader.
2. The reference's objective and hyper-parameters (``--objective gan``, Adam 2e-4, beta1
   0.5, batch 64) train a reduced DCGAN (``DEMO_CONFIG``: 32x32, ngf = ndf = 32, nz 100)
   for a fixed number of steps (``DEMO_STEPS``), so that the build is reproducible.
3. The generator is exported with ``save_project`` into ``weights/demo/dcgan`` (the
   discriminator is not needed to draw and is left out).
4. ``digit_scores`` rates 256 samples with a logistic-regression classifier fitted on the
   real digits at 8x8 (``digit_classifier``): the mean top-class probability (how digit-like the samples look to
   it) and how many of the ten classes the samples fall into, beside the same numbers for
   real digits; ``REPORT.json`` and ``example.png`` (64 samples of seed 0).
"""

from __future__ import annotations

import functools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models.common.images import image_grid, write_demo_images
from models.common.pipeline import save_project
from models.common.train import save_png

DEMO_CONFIG = {"image_size": 32, "nc": 1, "nz": 100, "ngf": 32, "ndf": 32, "batch_size": 64}
DEMO_STEPS = 600


@functools.lru_cache(maxsize=1)
def digit_classifier():
    """A logistic regression fitted on scikit-learn's 8x8 digits.

    Pixels are scaled from 0-16 to [0, 1] and C to 256: the same fit as C = 1 on the raw
    values, reached in fewer iterations.
    """
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    return LogisticRegression(C=256.0, max_iter=1000).fit(digits.data / 16, digits.target)


def digit_scores(images: np.ndarray) -> dict:
    """How digit-like uint8 (n, 32, 32, 3) images are to ``digit_classifier``."""
    grey = images[..., 0].astype(np.float64)
    small = grey.reshape(len(grey), 8, grey.shape[1] // 8, 8, grey.shape[2] // 8).mean((2, 4)) / 255
    probabilities = digit_classifier().predict_proba(small.reshape(len(small), 64))
    classes = np.bincount(probabilities.argmax(1), minlength=10)
    return {"mean_top_probability": round(float(probabilities.max(1).mean()), 4),
            "classes_found": int((classes > 0).sum()), "class_counts": classes.tolist()}


def build_demo(out_dir, work_dir=None, steps: int = DEMO_STEPS, seed: int = 0, progress: bool = True) -> dict:
    """Train the demo generator on the digits, export it to ``out_dir`` and score it.

    Returns the report also written as ``REPORT.json``.
    """
    from models import registry
    from models.common.images import demo_images
    from models.dcgan.train import TrainConfig, Trainer

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(work_dir or tmp)
        start = time.monotonic()
        images_dir = write_demo_images(work / "digits", "digits", DEMO_CONFIG["image_size"], seed=seed)
        config = TrainConfig(data_dir=str(images_dir), out_dir=str(work / "run"), objective="gan", max_steps=steps,
                             seed=seed, resume=False, sample_every=100, log_every=10, progress=progress, **DEMO_CONFIG)
        trainer = Trainer(config)
        summary = trainer.run()
        seconds = time.monotonic() - start
        name = f"DCGAN demo: scikit-learn digits at 32x32, GAN objective, {summary['step']} steps"
        save_project(out_dir, "dcgan", {"generator": trainer.generator}, name=name,
                     extra={"objective": "gan", "training_set": "scikit-learn digits (1,797), 32x32 grey",
                            "steps": summary["step"], "seed": seed})

    pipe = registry.load("dcgan", weights=out_dir, device="cpu")
    torch.manual_seed(0)
    samples = pipe(n=256).images
    save_png(out_dir / "example.png", image_grid(samples[:64], columns=8))
    real = demo_images("digits", DEMO_CONFIG["image_size"], 256, seed=seed + 1)
    report = {"name": name, "config": DEMO_CONFIG, "steps": summary["step"], "build_seconds": round(seconds, 1),
              "threads": torch.get_num_threads(), "last_losses": summary["losses"],
              "samples": digit_scores(samples), "real_digits": digit_scores(real),
              "files_bytes": sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())}
    (out_dir / "REPORT.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
