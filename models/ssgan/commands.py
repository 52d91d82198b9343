"""S^2-GAN's part of the ``talkingface`` command (``models.common.commands``).

    talkingface train ssgan --images DIR --normals DIR --out RUN [--stage all|structure|fcn|style|joint] [--joint]
    talkingface weights build-demo --model ssgan
    talkingface weights convert --model ssgan joint_SSGAN.net --out DIR   (or a folder of .net files)
    talkingface bench ssgan [--random-weights]

Training pairs an image with the normal map of the same file name (``--normals``; normals
stored as (n + 1) / 2 RGB, as the authors' NYUv2 JPGs); see ``models.ssgan.train``.
"""

from __future__ import annotations

from models.common.commands import Command, argument
from models.errors import TalkingFaceError

# `train ssgan` flags -> TrainConfig fields; a flag not given keeps the authors' value.
TRAIN_OPTIONS = ("max_steps", "time_budget", "batch_size", "lr", "base_channels", "structure_size", "image_size",
                 "codebook", "lamda", "device", "seed")


def train(args) -> dict:
    """All three stages and the export (or one ``--stage``); returns the summary."""
    from models.ssgan import train as training

    if not getattr(args, "images", None):
        raise TalkingFaceError("train ssgan needs --images DIR (training images) and --normals DIR "
                               "(their surface normals as RGB, the same file names)")
    if not getattr(args, "normals", None):
        raise TalkingFaceError("train ssgan needs --normals DIR: the surface normal map of each image, "
                               "saved as (n + 1) / 2 RGB under the image's file name")
    options = {k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k, None) is not None}
    if args.stage not in (None, "all"):
        options.update({k: getattr(args, k) for k in ("fcn_run", "structure_run", "style_run")
                        if getattr(args, k, None)})
    summary = training.train(args.images, args.normals, args.out, stage=args.stage or "all", fcn=not args.no_fcn,
                             joint=args.joint, resume=not args.restart, progress=not args.quiet, **options)
    return {k: summary[k] for k in ("step", "stopped", "out_dir") if k in summary}


def build_demo(args) -> dict:
    """``demo.build_demo`` into ``--out``; returns its report."""
    from models.ssgan import demo

    return demo.build_demo(args.out, work_dir=args.work, seed=args.seed or 0, progress=not args.quiet)


def convert(args) -> dict:
    """The authors' Torch7 ``.net`` file(s) -> a project weights folder (``convert.convert_files``)."""
    import json
    from pathlib import Path

    from models.ssgan.convert import convert_files

    out = convert_files(args.source, args.out)
    config = json.loads((Path(out) / "config.json").read_text())
    return {"out": str(out), "networks": sorted(p.stem for p in Path(out).glob("*.safetensors")),
            "converted_from": config.get("converted_from")}


def bench(args) -> dict:
    """Images per second at the published sizes (``bench.run``)."""
    from models.ssgan import bench as benchmark

    return benchmark.run(weights=args.weights, random_weights=args.random_weights, device=args.device,
                         repeats=args.repeats)


COMMANDS = {
    "train": Command(train, (
        argument("--images", help="ssgan: folder of training images (paired with --normals by file name)"),
        argument("--normals", help="folder of surface normal maps as (n + 1) / 2 RGB, one per image"),
        argument("--stage", choices=["all", "structure", "fcn", "style", "joint"], default="all",
                 help="ssgan: all (structure, FCN, style, then the export) or one stage"),
        argument("--fcn-run", help="--stage style: the FCN run whose loss guides the Style-GAN"),
        argument("--structure-run", help="--stage joint: the finished Structure-GAN run"),
        argument("--style-run", help="--stage joint: the finished Style-GAN run"),
        argument("--joint", action="store_true", help="--stage all: then fine-tune both GANs jointly (lr 1e-6)"),
        argument("--no-fcn", action="store_true", help="Style-GAN without the FCN loss (style-gan-nofcn)"),
        argument("--base-channels", type=int, help="G and D width nplanes (64 = published)"),
        argument("--structure-size", type=int, help="side of the normals (72 = published)"),
        argument("--image-size", type=int, help="side of the images (128 = published)"),
        argument("--codebook", help="the authors' codebook_40.txt (default: 40 directions on the hemisphere)"),
        argument("--lamda", type=float, help="weight of the FCN loss (0.1 = authors')"),
    ), help="Structure-GAN, the normal FCN and Style-GAN (Adam 2e-4, beta1 0.5; the authors' margin rule)"),
    "build-demo": Command(build_demo, (), help="the three stages, reduced, on rendered rooms (about 4 CPU minutes)"),
    "convert": Command(convert, (), help="the authors' Torch7 .net files (or a folder of them) -> a weights folder"),
    "bench": Command(bench, (), help="Structure-GAN, Style-GAN and the pipeline, batches 1 and 16, at 72 / 128"),
}
