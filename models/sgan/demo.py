"""SGAN's demo weights: ``talkingface weights build-demo --model sgan``.

MNIST cannot be fetched at run time, so the demo learns scikit-learn's bundled handwritten
digits (1,797 images of 8 x 8, with their labels), framed as MNIST (20 x 20 in 28 x 28):

1. ``write_labelled_digits``: ``work/digits/<label>/*.png``, what ``talkingface train sgan
   --images`` reads (labels from the sub-folder names).
2. ``train.Trainer`` with ``DEMO_CONFIG`` (the MNIST networks at reduced widths, so that the
   folder stays under 3 MB and the build under ~4 CPU minutes) for a fixed number of steps
   (``DEMO_STEPS``: E, then the generators independently, then jointly), so the build is
   reproducible.
3. ``save_project`` of G1 and G0 in float16 into ``weights/demo/sgan``.
4. ``REPORT.json``: E's accuracy on the digits, and how often E classifies an image sampled
   for label k (100 a class) as k, for the trained G and for untrained G (chance level);
   ``example.png``: one row a class, as the pipeline samples them.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models.common.pipeline import save_project
from models.sgan import train as training

DEMO_STEPS = {"encoder_steps": 300, "independent_steps": 300, "max_steps": 1200}
DEMO_CONFIG = {
    "encoder": dict(in_channels=1, image_size=28, channels=(16, 32), feature_dim=256, num_classes=10),
    "g1": dict(z_dim=50, num_classes=10, feature_dim=256, hidden=256, z_embed=0, y_embed=0),
    "g0": dict(z_dim=50, feature_dim=256, z_embed=(128,), base_channels=64, base_size=4,
               channels=(64, 32, 32), out_channels=1),
    "d1": dict(feature_dim=256, hidden=256, z_dim=50),
    "d0": dict(in_channels=1, image_size=28, channels=(16, 32, 64), hidden=256, z_dim=50),
}
DEMO_BATCH = 64
DEMO_LR = 2e-4      # twice the reference's 1e-4: a few hundred generator steps instead of 100,000


def labelled_digits(size=28, digit=20):
    """scikit-learn's digits framed as MNIST frames its own: each upscaled to ``digit`` x ``digit``
    and centred in ``size`` x ``size`` black. Returns (uint8 (N, size, size), labels (N,))."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    margin = (size - digit) // 2
    images = [np.pad(np.asarray(Image.fromarray((d * 255 / 16).astype(np.uint8)).resize((digit, digit),
                                                                                      Image.BICUBIC)),
                     ((margin, size - digit - margin), (margin, size - digit - margin)))
              for d in digits.images]
    return np.stack(images), digits.target.astype(np.int64)


def write_labelled_digits(folder, size=28) -> Path:
    """``folder/<label>/digit_<i>.png`` for every bundled digit."""
    from PIL import Image

    folder = Path(folder)
    images, labels = labelled_digits(size)
    for i, (image, label) in enumerate(zip(images, labels)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / str(label) / f"digit_{i:04d}.png")
    return folder


@torch.no_grad()
def label_accuracy(encoder, g1, g0, per_class=100, seed=0) -> float:
    """How often E classifies G0(G1(z1, y), z0) as y (batch norms on running averages)."""
    encoder.eval(), g1.eval(), g0.eval()
    generator = torch.Generator().manual_seed(seed)
    k = g1.num_classes
    y = torch.arange(k).repeat_interleave(per_class)
    z1 = torch.rand(len(y), g1.z_dim, generator=generator)
    z0 = torch.rand(len(y), g0.z_dim, generator=generator)
    images = g0(g1(z1, torch.nn.functional.one_hot(y, k).float()), z0)
    return float((encoder.classify_logits(encoder(images)).argmax(1) == y).float().mean())


def build_demo(out_dir, work_dir=None, seed=0, progress=True) -> dict:
    """Train the demo SGAN on the bundled digits and write ``out_dir``; returns the report."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(work_dir) if work_dir else Path(tmp)
        data = write_labelled_digits(work / "digits")
        start = time.monotonic()
        config = training.TrainConfig(data_dir=str(data), out_dir=str(work / "run"), batch_size=DEMO_BATCH,
                                      lr=DEMO_LR, disc_lr=DEMO_LR, seed=seed, resume=False, progress=progress,
                                      sample_every=0, checkpoint_every=10 ** 9,
                                      name="demo: the scikit-learn digits, 28 x 28, reduced widths",
                                      **DEMO_STEPS, **DEMO_CONFIG)
        trainer = training.Trainer(config)
        summary = trainer.run()
        seconds = time.monotonic() - start
        images, labels = labelled_digits()
        x = torch.from_numpy(images).float().div(255)[:, None]
        trainer.encoder.eval()
        with torch.no_grad():
            encoder_accuracy = float((trainer.encoder.classify_logits(trainer.encoder(x)).argmax(1)
                                      == torch.from_numpy(labels)).float().mean())
        trained = label_accuracy(trainer.encoder, trainer.g1, trainer.g0)
        torch.manual_seed(seed + 1)
        untrained = label_accuracy(trainer.encoder, training.Generator1(**DEMO_CONFIG["g1"]),
                                   training.Generator0(**DEMO_CONFIG["g0"]))
        g1, g0 = trainer.g1.cpu().eval(), trainer.g0.cpu().eval()
        save_project(out_dir, "sgan", {"g1": g1.half(), "g0": g0.half()}, name=config.name,
                     extra={"dataset": "digits (scikit-learn), 28 x 28 grey", "storage": "float16",
                            "classes": trainer.classes, "steps": summary["step"], "recipe": DEMO_STEPS,
                            "batch_size": DEMO_BATCH, "lr": DEMO_LR, "seed": seed})
        g1.float(), g0.float()
    report = {"steps": summary["step"], "train_seconds": round(seconds, 1),
              "encoder_accuracy_on_digits": round(encoder_accuracy, 4),
              "sample_label_accuracy": round(trained, 4), "untrained_sample_label_accuracy": round(untrained, 4),
              "last_losses": summary["losses"],
              "note": "label accuracy: E (trained on the digits) classifies 100 samples a class as the asked label"}
    (out_dir / "REPORT.json").write_text(json.dumps(report, indent=2) + "\n")
    write_example(out_dir)
    return report


def write_example(out_dir, per_class=8, seed=0):
    """``example.png``: the demo weights through the pipeline, one row a label."""
    from models.common.images import image_grid
    from models.common.train import save_png
    from models.sgan.pipeline import SGANPipeline
    from models.types import ImageCondition

    pipe = SGANPipeline.from_project(out_dir, device="cpu")
    torch.manual_seed(seed)
    rows = [pipe(n=per_class, condition=ImageCondition(label=k)).images for k in range(pipe.num_classes)]
    save_png(Path(out_dir) / "example.png", image_grid(np.concatenate(rows), columns=per_class))
