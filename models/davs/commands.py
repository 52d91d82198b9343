"""DAVS's part of the ``talkingface`` command (``models.common.commands``).

    talkingface data prepare --model davs --videos DIR --out DIR [--labels folder|FILE]
    talkingface train davs --data DIR --out DIR [--image-size 256 --feature-length 256 ...]
    talkingface eval --model davs --data DIR (--weights DIR | --run RUN) [--mode audio|video]
    talkingface weights build-demo --model davs [--minutes 25]
    talkingface bench davs [--mode audio|video|both]

The shell passes the arguments every model shares (``--data``, ``--out``, ``--device``,
``--seed``, ``-q`` ...) with the ones below; each function returns what the shell shows.
"""

from __future__ import annotations

from pathlib import Path

from models.common import quantize
from models.common.commands import Command, argument
from models.errors import TalkingFaceError

# `train davs` flags -> TrainConfig fields; a flag not given (None) keeps the authors' value.
TRAIN_OPTIONS = ("max_steps", "time_budget", "batch_size", "lr", "image_size", "feature_length",
                 "id_channels", "lip_channels", "mfcc_channels", "decoder_channels", "disc_channels",
                 "sample_every", "checkpoint_every", "device", "seed")


def prepare(args) -> dict:
    """``dataset.prepare`` with word labels; returns the manifest (its ``labels`` are the words)."""
    from models.davs import dataset

    return dataset.prepare(args.videos, args.out, split=args.split, labels=args.labels, workers=args.workers,
                           seed=args.seed, progress=not args.quiet)


def train(args) -> dict:
    """Train every DAVS network together; returns the summary's step, stop reason, word terms and folder."""
    from models.davs import train as training

    options = {k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k, None) is not None}
    summary = training.train(args.data, args.out, resume=not args.restart, progress=not args.quiet,
                             word_labels=not args.no_word_labels, **options)
    return {k: summary[k] for k in ("step", "stopped", "word_terms", "out_dir")}


def evaluate(args) -> dict:
    """{clip: scores} of DAVS on the prepared split, networks from ``--weights`` or a training ``--run``."""
    from models import registry
    from models.davs import evaluate as evaluation
    from models.davs import train as training
    from models.davs.pipeline import DAVSPipeline

    if args.run and args.weights:
        raise TalkingFaceError("give --weights or --run, not both")
    if not (Path(args.data) / "manifest.json").is_file():
        raise TalkingFaceError(f"{args.data} is not a prepared dataset (run `talkingface data prepare "
                               "--model davs`)")
    options = {} if args.finetune_steps is None else {"finetune_steps": args.finetune_steps}
    if args.run:
        # A run folder holds every network it trains; the four of inference are loaded strictly.
        networks = training.load_trained(args.run, device=args.device)
        info = {"weights": training.read_config(args.run).get("name", "training run"), "weights_dir": args.run}
        pipe = DAVSPipeline.with_networks(**networks, device=args.device, info=info, **options)
    else:
        pipe = registry.load("davs", weights=args.weights, device=args.device, **options)
    return evaluation.evaluate(pipe, args.data, split=args.split, mode=args.mode or "audio",
                               finetune_steps=args.finetune_steps, max_clips=args.max_clips)


def build_demo(args) -> dict:
    """``demo.build_demo`` into ``--out``; returns its report."""
    from models.davs import demo

    return demo.build_demo(args.out, work_dir=args.work, train_seconds=args.minutes * 60, seed=args.seed,
                           progress=not args.quiet)


def bench(args) -> dict:
    """Networks alone, then end to end in each ``--mode`` (``bench.run``)."""
    from models.davs import bench as benchmark

    return benchmark.run(weights=args.weights, random_weights=args.random_weights, device=args.device,
                         seconds=args.seconds, mode=args.mode, repeats=args.repeats, precision=args.precision)


COMMANDS = {
    "prepare": Command(prepare, (
        argument("--labels", help="word labels: 'folder' (the first folder under --videos, as LRW's word "
                                  "folders) or a CSV/JSON file mapping videos to labels"),
    ), help="faces aligned to the authors' 256x256 template, MFCC blocks and word labels"),
    "train": Command(train, (
        argument("--image-size", type=int, help="network input side: 256 (published), 192 or 128"),
        argument("--feature-length", type=int, help="person-ID and word-ID length (256)"),
        argument("--id-channels", type=int, help="identity encoder width (32)"),
        argument("--lip-channels", type=int, help="lip encoder (FAN) width (64)"),
        argument("--mfcc-channels", type=int, help="audio encoder width (64)"),
        argument("--decoder-channels", type=int, help="decoder width (64)"),
        argument("--disc-channels", type=int, help="sequence discriminator width (64)"),
        argument("--no-word-labels", action="store_true", help="train without the word classifiers"),
        argument("--sample-every", type=int, help="steps between sample images (500)"),
        argument("--checkpoint-every", type=int, help="steps between checkpoints (1000)"),
    ), help="all networks together (defaults: the authors' sizes)"),
    "eval": Command(evaluate, (
        argument("--run", help="a training run folder (instead of --weights)"),
        argument("--mode", choices=["audio", "video"],
                 help="lips from the clip's audio (default) or from its own frames"),
        argument("--finetune-steps", type=int, help="test-time fine-tuning steps (default 5, the authors')"),
    ), help="a project weights folder or the authors' file in --weights, or a training run"),
    "build-demo": Command(build_demo, (
        argument("--minutes", type=float, default=25.0, help="training minutes (default 25)"),
    ), help="one reduced DAVS on the generated clips, each sentence its word label"),
    "bench": Command(bench, (
        argument("--mode", choices=["audio", "video", "both"], default="both",
                 help="what drives the lips in the end-to-end runs (default both)"),
        quantize.bench_argument(),
    ), help="each network alone, then end to end (default a 2 s clip), ours and the authors' flow"),
}
