"""PG2's part of the ``talkingface`` command (``models.common.commands``).

    talkingface data prepare --model pg2 --videos IMAGES --out DIR [--variant market|deepfashion]
    talkingface train pg2 --data DIR --stage g1 --out RUN1 [--channels-base 128 ...]
    talkingface train pg2 --data DIR --stage g2 --g1-run RUN1 --out RUN2
    talkingface weights build-demo --model pg2 [--g1-minutes 14 --g2-minutes 10]
    talkingface weights convert --model pg2 model.ckpt-NNN --out DIR
    talkingface bench pg2

``data prepare`` reads person images (``--videos`` names their folder); see
``models.pg2.dataset``. The shell passes the arguments every model shares (``--data``,
``--out``, ``--device``, ``--seed``, ``-q`` ...) with the ones below; each function returns
what the shell shows.
"""

from __future__ import annotations

from models.common.commands import Command, argument
from models.errors import TalkingFaceError

# `train pg2` flags -> TrainConfig fields; a flag not given (None) keeps the authors' value.
TRAIN_OPTIONS = ("max_steps", "time_budget", "batch_size", "lr", "channels_base", "middle_features_dim",
                 "d_channels", "l1_weight", "g1_run", "device", "seed")


def prepare(args) -> dict:
    """``dataset.prepare`` on a folder of person images; returns the manifest.

    The manifest's ``images`` are also given as ``videos``, the entries the shell counts.
    """
    from models.pg2 import dataset

    manifest = dataset.prepare(args.videos, args.out, variant=args.variant, keypoints=args.keypoints,
                               split=args.split, seed=args.seed, progress=not args.quiet)
    return {**manifest, "videos": manifest["images"]}


def train(args) -> dict:
    """Train G1 or G2 (``--stage``); returns the summary's stage, step, stop reason and folder."""
    from models.pg2 import train as training

    if args.stage not in training.STAGES:
        raise TalkingFaceError("train pg2 needs --stage g1 or --stage g2")
    options = {k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k, None) is not None}
    summary = training.train(args.data, args.stage, args.out, resume=not args.restart, flip=not args.no_flip,
                             progress=not args.quiet, **options)
    return {k: summary[k] for k in ("stage", "step", "stopped", "out_dir")}


def build_demo(args) -> dict:
    """``demo.build_demo`` into ``--out``; returns its report."""
    from models.pg2 import demo

    return demo.build_demo(args.out, work_dir=args.work, g1_seconds=args.g1_minutes * 60,
                           g2_seconds=args.g2_minutes * 60, seed=args.seed, persons=args.persons,
                           poses=args.poses, progress=not args.quiet)


def convert(args) -> dict:
    """The authors' TensorFlow checkpoint -> a project weights folder (``convert.convert_tf_checkpoint``)."""
    import json
    from pathlib import Path

    from models.pg2.convert import convert_tf_checkpoint

    out = convert_tf_checkpoint(args.source, args.out)
    config = json.loads((Path(out) / "config.json").read_text())
    return {"out": str(out), "name": config.get("name"), "dataset": config.get("dataset"),
            "networks": sorted(p.stem for p in Path(out).glob("*.safetensors"))}


def bench(args) -> dict:
    """Images per second at the published sizes (``bench.run``)."""
    from models.pg2 import bench as benchmark

    return benchmark.run(device=args.device, repeats=args.repeats)


COMMANDS = {
    "prepare": Command(prepare, (
        argument("--variant", choices=["market", "deepfashion"], default="market",
                 help="image size: market 128x64 (default), deepfashion 256x256"),
        argument("--keypoints", choices=["auto", "openpose", "mediapipe"], default="auto",
                 help="OpenPose JSON beside each image (<stem>_keypoints.json), MediaPipe, "
                      "or auto (the JSON when present)"),
    ), help="person images (the person id starts the file name, as Market-1501's 0001_c1s1_...) -> pose pairs"),
    "train": Command(train, (
        argument("--stage", choices=["g1", "g2"], help="g1 (pose integration) or g2 with its discriminator"),
        argument("--g1-run", help="g2: the folder of the finished G1 run (G1 stays frozen)"),
        argument("--channels-base", type=int, help="G1 / G2 width (128 = published)"),
        argument("--middle-features-dim", type=int, help="G1's bottleneck (64 = published)"),
        argument("--d-channels", type=int, help="discriminator width (64 = published)"),
        argument("--l1-weight", type=float, help="lambda of G2's L1 term (authors: 10 Market-1501, 50 DeepFashion)"),
        argument("--no-flip", action="store_true", help="no mirrored pairs"),
    ), help="G1, or G2 with its discriminator (--stage); the authors' Adam lr is 2e-5"),
    "build-demo": Command(build_demo, (
        argument("--g1-minutes", type=float, default=14.0, help="G1 training minutes (default 14)"),
        argument("--g2-minutes", type=float, default=10.0, help="G2 training minutes (default 10)"),
        argument("--persons", type=int, default=600, help="rendered persons (default 600)"),
        argument("--poses", type=int, default=4, help="images of each person (default 4)"),
    ), help="reduced G1 and G2 on rendered figures"),
    "convert": Command(convert, (), help="the authors' TF checkpoint (Market-1501 or DeepFashion): "
                                         "a folder --weights loads, with TF's padding"),
    "bench": Command(bench, (), help="G1 and G2 alone (batches 1 and 8) and the pipeline, at 128x64 and 256x256"),
}
