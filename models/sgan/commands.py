"""SGAN's part of the ``talkingface`` command (``models.common.commands``).

    talkingface train sgan --images DIGITS/ --out RUN [--encoder mnist/pretrained/encoder.npz]
    talkingface weights build-demo --model sgan
    talkingface weights convert --model sgan cifar/pretrained/generator.npz --out DIR
    talkingface bench sgan

``--images`` holds one sub-folder of images a class (``0/`` ... ``9/``).
"""

from __future__ import annotations

from models.common.commands import Command, argument
from models.errors import TalkingFaceError

# `train sgan` flags -> TrainConfig fields; a flag not given (None) keeps the reference's value.
TRAIN_OPTIONS = ("max_steps", "time_budget", "batch_size", "lr", "disc_lr", "encoder_steps", "independent_steps",
                 "device", "seed")


def train(args) -> dict:
    """Train E, then G1 / G0 (``models.sgan.train``); returns the summary's step, stop reason and folder."""
    from models.sgan import train as training

    if not getattr(args, "images", None):
        raise TalkingFaceError("train sgan needs --images DIR: a folder with one sub-folder of images a class")
    options = {k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k, None) is not None}
    if getattr(args, "encoder", None):
        options["encoder_file"] = args.encoder
    summary = training.train(args.images, args.out, resume=not args.restart, progress=not args.quiet, **options)
    return {k: summary[k] for k in ("step", "stopped", "out_dir")}


def build_demo(args) -> dict:
    """``demo.build_demo`` into ``--out``; returns its report."""
    from models.sgan import demo

    return demo.build_demo(args.out, work_dir=args.work, seed=args.seed, progress=not args.quiet)


def convert(args) -> dict:
    """The reference's ``.npz`` file(s) -> a project weights folder (``convert.convert``)."""
    import json
    from pathlib import Path

    from models.sgan.convert import convert as convert_npz

    out = convert_npz(args.source, args.out)
    config = json.loads((Path(out) / "config.json").read_text())
    return {"out": str(out), "name": config.get("name"), "dataset": config.get("dataset"),
            "networks": sorted(p.stem for p in Path(out).glob("*.safetensors"))}


def bench(args) -> dict:
    """Images per second at the published sizes (``bench.run``)."""
    from models.sgan import bench as benchmark

    return benchmark.run(device=args.device, repeats=args.repeats)


COMMANDS = {
    "train": Command(train, (
        argument("--images", help="folder of class sub-folders (0/, 1/, ...) of images; the labels are SGAN's "
                                  "top level"),
        argument("--encoder", help="the authors' pretrained encoder.npz (MNIST): no encoder stage"),
        argument("--disc-lr", type=float, help="discriminators' Adam lr (reference 1e-4)"),
        argument("--encoder-steps", type=int, help="steps training the encoder first (default 2000)"),
        argument("--independent-steps", type=int, help="steps of independent training before joint (default 0)"),
    ), help="the encoder E, then G1 / G0 with D1 / D0 and their Q heads; the reference's Adam lr is 1e-4"),
    "build-demo": Command(build_demo, (), help="reduced MNIST-shaped SGAN on scikit-learn's digits, fixed steps"),
    "convert": Command(convert, (), help="the reference's Lasagne .npz (encoder.npz, generator.npz, "
                                         "gen1/gen0_params_epochN.npz, or their folder)"),
    "bench": Command(bench, (), help="G1 + G0 at the MNIST (28x28) and CIFAR-10 (32x32) sizes, and the pipeline"),
}
