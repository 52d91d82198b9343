"""LAPGAN's part of the ``talkingface`` command (``models.common.commands``).

    talkingface train lapgan --images DIR --out RUN [--max-steps N] [--normalize global]
    talkingface weights build-demo --model lapgan [--steps 1200]
    talkingface bench lapgan

``--images`` is a folder of images; one sub-folder per class (``DIR/0/``, ``DIR/1/`` ...)
trains the class-conditional model (labels in sorted sub-folder order), images directly in
it the unconditional one. The run folder loads with ``--weights RUN``. eyescream released
no weights, so there is no ``convert``.
"""

from __future__ import annotations

from models.common.commands import Command, argument
from models.errors import TalkingFaceError

# `train lapgan` flags -> TrainConfig fields; a flag not given (None) keeps eyescream's value.
TRAIN_OPTIONS = ("max_steps", "time_budget", "batch_size", "lr", "device", "seed", "normalize", "hidden_g",
                 "hidden_d", "coarse_hidden_g", "coarse_hidden_d", "limit", "optimizer")


def train(args) -> dict:
    """Train every pyramid level on ``--images``; returns the run's step, stop reason and folder."""
    from models.lapgan import train as training

    if not getattr(args, "images", None):
        raise TalkingFaceError("train lapgan needs --images DIR: a folder of images (one sub-folder per class "
                               "for the class-conditional model)")
    options = {k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k, None) is not None}
    if getattr(args, "unconditional", False):
        options["conditional"] = False
    summary = training.train(args.images, args.out or "runs/lapgan", resume=not args.restart,
                             progress=not args.quiet, **options)
    return {k: summary[k] for k in ("step", "stopped", "classes", "sizes", "losses", "out_dir")}


def build_demo(args) -> dict:
    """``demo.build_demo`` into ``--out``; returns its report."""
    from models.lapgan import demo

    return demo.build_demo(args.out, work_dir=args.work, seed=args.seed or 0, steps=args.steps,
                           progress=not args.quiet)


def bench(args) -> dict:
    """Images per second at the published sizes (``bench.run``)."""
    from models.lapgan import bench as benchmark

    return benchmark.run(weights=getattr(args, "weights", None), random_weights=getattr(args, "random_weights", True),
                         device=args.device, repeats=args.repeats)


COMMANDS = {
    "train": Command(train, (
        argument("--images", help="folder of training images; one sub-folder per class (named by "
                                  "the class) trains the class-conditional model"),
        argument("--normalize", choices=["pixel", "global"],
                 help="per-pixel mean/std of the training set (eyescream, default) or one mean/std"),
        argument("--hidden-g", type=int, help="planes of the convolutional generators (64 = eyescream)"),
        argument("--hidden-d", type=int, help="planes of the convolutional discriminators (64)"),
        argument("--coarse-hidden-g", type=int, help="units of the 8x8 generator's layers (1200 = paper)"),
        argument("--coarse-hidden-d", type=int, help="units of the 8x8 discriminator's layers (600)"),
        argument("--optimizer", choices=["sgd", "adam"],
                 help="sgd: eyescream's schedule (default); adam: Adam at --lr, betas 0.5/0.999 (the demo's)"),
        argument("--unconditional", action="store_true", help="ignore class sub-folders"),
        argument("--limit", type=int, help="read at most this many images"),
    ), help="all pyramid levels (8 -> 16 -> 32) side by side; eyescream's SGD, lr 0.02, batch 128"),
    "build-demo": Command(build_demo, (
        argument("--steps", type=int, default=None, help="training steps (default: the demo's fixed count)"),
    ), help="class-conditional 8 -> 16 -> 32 LAPGAN on scikit-learn's digits (labels from load_digits)"),
    "bench": Command(bench, (), help="sampling at 32x32 (CIFAR-10 sizes), batches 1 and 64; each level alone"),
}
