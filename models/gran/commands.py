"""GRAN's part of the ``talkingface`` command (``models.common.commands``).

    talkingface train gran --images DIR --out RUN [--preset cifar10|lsun|lsun128|mnist] [--width 32]
    talkingface weights build-demo --model gran
    talkingface weights convert --model gran gran_param_cifar10_ts5_2.save --out DIR
    talkingface bench gran

Each function returns what the shell shows.
"""

from __future__ import annotations

from models.common.commands import Command, argument


def build_demo(args) -> dict:
    """``demo.build_demo`` into ``--out``; returns its report."""
    from models.gran import demo

    return demo.build_demo(args.out, work_dir=getattr(args, "work", None), seed=getattr(args, "seed", 0) or 0,
                           progress=not getattr(args, "quiet", False))


def convert(args) -> dict:
    """The authors' pickled model (read without Theano) -> a project weights folder."""
    import json
    from pathlib import Path

    from models.gran.convert import convert_pickle

    out = convert_pickle(args.source, args.out)
    config = json.loads((Path(out) / "config.json").read_text())
    return {"out": str(out), "name": config.get("name"), "image_size": config.get("image_size"),
            "num_steps": config["generator"]["num_steps"],
            "networks": sorted(p.stem for p in Path(out).glob("*.safetensors"))}


def bench(args) -> dict:
    """Images per second at the published sizes (``bench.run``)."""
    from models.gran import bench as benchmark

    return benchmark.run(weights=getattr(args, "weights", None), random_weights=getattr(args, "random_weights", True),
                         device=getattr(args, "device", "auto"), repeats=getattr(args, "repeats", None) or 3)


COMMANDS = {
    "train": Command("models.gran.train:from_args", (
        argument("--images", help="folder of training images (any size; centre-cropped and resized)"),
        argument("--preset", choices=["cifar10", "lsun", "lsun128", "mnist"],
                 help="gran: the authors' sizes and settings (cifar10 32x32 by default; lsun 64x64; mnist 28x28)"),
        argument("--width", type=int, help="gran: narrowest width; the others double from it (the presets': "
                                           "256 for cifar10's 1024/512/256)"),
        argument("--num-steps", type=int, help="gran: canvas steps T (5 published)"),
        argument("--image-size", type=int, help="gran: image side (a multiple of 2^layers; the preset's by default)"),
        argument("--channels", type=int, choices=[1, 3], help="gran: 1 (grey) or 3 (colour) image channels"),
    ), help="generator and discriminator with the authors' losses, Adam and schedule (batch 100)"),
    "build-demo": Command(build_demo, (), help="a small GRAN on 32x32 digits, T = 3, a fixed number of steps"),
    "convert": Command(convert, (), help="the authors' pickled Theano model (.save), read without Theano"),
    "bench": Command(bench, (), help="the generator at the CIFAR-10 (32x32) and LSUN (64x64) sizes, T = 5"),
}
