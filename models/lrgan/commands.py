"""LR-GAN's part of the ``talkingface`` command (``models.common.commands``).

    talkingface train lrgan --images DIR --out RUN [--image-size 32 --ntimestep 2 --ngf 64 --ndf 64 ...]
    talkingface weights build-demo --model lrgan [--steps 400]
    talkingface weights convert --model lrgan cifar10_netG_s_1_epoch_100.pth --out DIR
    talkingface bench lrgan

A training run folder loads as it is: ``talkingface sample --model lrgan --weights RUN``.
"""

from __future__ import annotations

from models.common.commands import Command, argument
from models.errors import TalkingFaceError

# `train lrgan` flags -> TrainConfig fields; a flag not given (None) keeps the reference's value.
TRAIN_OPTIONS = ("max_steps", "time_budget", "batch_size", "lr", "image_size", "ntimestep", "maxobjscale", "rot",
                 "nc", "nz", "ngf", "ndf", "epochs", "device", "seed")


def train(args) -> dict:
    """Train on ``--images``; returns the summary's step, stop reason, last losses and folder."""
    from models.lrgan import train as training

    if not getattr(args, "images", None):
        raise TalkingFaceError("train lrgan needs --images, a folder of training images "
                               "(e.g. one written by models.common.images.write_demo_images)")
    options = {k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k, None) is not None}
    summary = training.train(args.images, args.out, resume=not args.restart, progress=not args.quiet, **options)
    return {k: summary[k] for k in ("step", "stopped", "losses", "out_dir")}


def build_demo(args) -> dict:
    """``demo.build_demo`` into ``--out``; returns its report."""
    from models.lrgan import demo

    return demo.build_demo(args.out, work_dir=args.work, steps=args.steps, seed=args.seed, progress=not args.quiet)


def convert(args) -> dict:
    """A generator file of the reference's train.py -> a project weights folder."""
    import json
    from pathlib import Path

    from models.lrgan.convert import convert_reference

    out = convert_reference(args.source, args.out, ntimestep=args.ntimestep, maxobjscale=args.maxobjscale,
                            rot=args.rot)
    config = json.loads((Path(out) / "config.json").read_text())
    return {"out": str(out), "name": config["name"], "dataset": config.get("dataset"), "generator": config["generator"]}


def bench(args) -> dict:
    """Images per second at the published sizes (``bench.run``)."""
    from models.lrgan import bench as benchmark

    return benchmark.run(weights=args.weights, random_weights=args.random_weights, device=args.device,
                         repeats=args.repeats)


POSE_FLAGS = (
    argument("--ntimestep", type=int, help="steps, one background + foregrounds (reference: 2; MNIST-TWO 3)"),
    argument("--maxobjscale", type=float, help="smallest pose scale, larger = smaller objects (1.2)"),
    argument("--rot", type=float, help="largest shear/rotation of the pose (0.1 colour, 0.3 MNIST)"),
)

COMMANDS = {
    "train": Command(train, (
        argument("--images", help="folder of training images (any size; resized and centre-cropped)"),
        argument("--image-size", type=int, help="image side (32 = CIFAR-10, the default; 64 = CUB-200)"),
        *POSE_FLAGS,
        argument("--nc", type=int, choices=[1, 3], help="image channels (3; 1 for MNIST)"),
        argument("--nz", type=int, help="noise size per step (100)"),
        argument("--ngf", type=int, help="generator width (64)"),
        argument("--ndf", type=int, help="discriminator width (64)"),
        argument("--epochs", type=int, help="epochs of the full schedule (the reference's --niter, 25)"),
    ), help="generator and discriminator with the reference's BCE losses, Adam 2e-4 (0.5, 0.999), batch 64"),
    "build-demo": Command(build_demo, (
        argument("--steps", type=int, default=400, help="training steps (default 400)"),
    ), help="a narrow LR-GAN (ngf 16) on the offline shapes set, 32x32"),
    "convert": Command(convert, POSE_FLAGS, help="a generator file of the reference's train.py "
                                                 "(<dataset>_netG_s_<session>_epoch_<n>.pth) -> a project folder"),
    "bench": Command(bench, (), help="the generator alone (batches 1 and 64) and the pipeline, 32x32 and 64x64"),
}
