"""DCGAN's part of the ``talkingface`` command (``models.common.commands``).

    talkingface train dcgan --images DIR --out RUN [--objective gan|improved|infogan|fgan|gan-int-cls]
                            [--divergence kl|reverse-kl|js|pearson|hellinger|gan] [--image-size 64]
                            [--channels 3] [--nz 100 --ngf 64 --ndf 64] [--embeddings FILE.npy]
    talkingface weights build-demo --model dcgan [--steps 600]
    talkingface bench dcgan [--random-weights]

The shell passes the arguments every model shares (``--out``, ``--max-steps``,
``--time-budget``, ``--batch-size``, ``--lr``, ``--device``, ``--seed``, ``--restart``,
``-q``) with the ones below; each function returns what the shell shows.
"""

from __future__ import annotations

from models.common.commands import Command, argument
from models.errors import TalkingFaceError

# `train dcgan` flags -> TrainConfig fields; a flag not given (None) keeps the reference's value.
TRAIN_OPTIONS = ("objective", "divergence", "image_size", "nz", "ngf", "ndf", "epochs", "limit", "categories",
                 "continuous", "embeddings", "max_steps", "time_budget", "batch_size", "lr", "device", "seed")


def train(args) -> dict:
    """Train on ``--images`` into ``--out``; returns the summary's objective, step, stop reason and folder."""
    from models.dcgan import train as training

    if not getattr(args, "images", None):
        raise TalkingFaceError("train dcgan needs --images, a folder of training images")
    if not getattr(args, "out", None):
        raise TalkingFaceError("train dcgan needs --out, the run folder to write")
    options = {k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k, None) is not None}
    if getattr(args, "channels", None) is not None:
        options["nc"] = args.channels
    summary = training.train(args.images, args.out, resume=not args.restart, progress=not args.quiet, **options)
    return {k: summary[k] for k in ("objective", "step", "stopped", "images", "out_dir")}


def build_demo(args) -> dict:
    """``demo.build_demo`` into ``--out``; returns its report."""
    from models.dcgan import demo

    return demo.build_demo(args.out, work_dir=args.work, steps=args.steps, seed=args.seed, progress=not args.quiet)


def bench(args) -> dict:
    """Images per second at the reference's sizes (``bench.run``)."""
    from models.dcgan import bench as benchmark

    return benchmark.run(weights=args.weights, random_weights=args.random_weights, device=args.device,
                         repeats=args.repeats)


COMMANDS = {
    "train": Command(train, (
        argument("--images", help="folder of training images (searched recursively; centre-cropped, resized)"),
        argument("--objective", choices=["gan", "improved", "infogan", "fgan", "gan-int-cls"],
                 help="gan (the reference's, default), improved (feature matching + minibatch discrimination), "
                      "infogan (categorical + continuous codes), fgan (--divergence), gan-int-cls (--embeddings)"),
        argument("--divergence", choices=["kl", "reverse-kl", "js", "pearson", "hellinger", "gan"],
                 help="f-GAN's divergence (Nowozin et al. Table 2; default gan)"),
        argument("--image-size", type=int, help="image side, a power of two from 16 (default 64, the reference's)"),
        argument("--channels", type=int, choices=[1, 3], help="image channels: 3 colour (default) or 1 grey"),
        argument("--nz", type=int, help="length of z (default 100)"),
        argument("--ngf", type=int, help="generator width (default 64)"),
        argument("--ndf", type=int, help="discriminator width (default 64)"),
        argument("--epochs", type=int, help="epochs of the full schedule when --max-steps is not given (default 25)"),
        argument("--limit", type=int, help="use at most this many images"),
        argument("--categories", type=int, help="infogan: values of the categorical code (default 10)"),
        argument("--continuous", type=int, help="infogan: continuous codes (default 2)"),
        argument("--embeddings", help="gan-int-cls: .npy of text embeddings, one row per image in sorted file order"),
    ), help="DCGAN's networks with one of the direct-family objectives; Adam 2e-4, beta1 0.5, batch 64"),
    "build-demo": Command(build_demo, (
        argument("--steps", type=int, default=600, help="training steps (default 600)"),
    ), help="a 32x32 DCGAN on scikit-learn's digits (GAN objective, a fixed number of steps)"),
    "bench": Command(bench, (), help="generator, discriminator and pipeline at 64x64, nz 100, ngf 64 (batches 1, 64)"),
}
