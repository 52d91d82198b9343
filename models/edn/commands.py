"""Everybody Dance Now's part of the ``talkingface`` command (``models.common.commands``).

    talkingface data prepare --model edn --videos FILE --out DIR [--stages global local]
    talkingface train edn --data DIR [--video FILE] --stage global --out RUN1 [--ngf 16 ...]
    talkingface train edn --data DIR --stage local --pretrain RUN1 --out RUN2
    talkingface train edn --data DIR --stage face --pretrain RUN2 --out RUN3 --export TARGET
    talkingface weights build-demo --model edn [--minutes 22]

The shell passes the arguments every model shares (``--data``, ``--out``, ``--device``,
``--seed``, ``-q`` ...) with the ones below; each function returns what the shell shows.
"""

from __future__ import annotations

from pathlib import Path

from models.common.commands import Command, argument
from models.errors import TalkingFaceError


def _one_video(path) -> Path:
    """``--videos``: the target's video, or a folder holding just that one file."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if len(files) != 1:
            raise TalkingFaceError(f"EDN trains one person from one video: {path} holds {len(files)} files; "
                                   "give the video itself")
        path = files[0]
    return path


def prepare(args) -> dict:
    """``dataset.prepare_target`` on the target's video; returns the manifest, with ``videos`` as the shell reads it."""
    from models.edn import dataset

    video = _one_video(args.videos)
    manifest = dataset.prepare_target(video, args.out, sizes=tuple(args.stages), max_frames=args.max_frames,
                                      progress=None if args.quiet else _bar("prepare"))
    return {**manifest, "videos": {video.name: {"status": "ok", "usable": manifest["usable"],
                                                "skipped": len(manifest["skipped"])}}}


def _bar(name):
    from tqdm.auto import tqdm

    bar = tqdm(desc=name, unit="frame")

    def progress(done, total):
        bar.total = total
        bar.update(done - bar.n)
    return progress


def train(args) -> dict:
    """One stage (``--stage``), after preparing ``--video`` into ``--data`` when given; ``--export`` a target."""
    from models.edn import dataset
    from models.edn import train as training

    if args.stage is None:
        raise TalkingFaceError("train edn needs --stage global, local or face")
    if args.stage == "face" and not args.pretrain:
        raise TalkingFaceError("train edn --stage face needs --pretrain RUN (the global or local run)")
    if args.video:
        need = args.stage if args.stage != "face" else training.read_config(args.pretrain)["generator_class"]
        if not dataset.is_prepared(args.data, args.video, need):
            have = dataset.read_manifest(args.data)["sizes"] if dataset.is_prepared(args.data, args.video, ()) else {}
            dataset.prepare_target(args.video, args.data, sizes=tuple({*have, need}),
                                   progress=None if args.quiet else _bar("prepare"))
    sizes = {k: getattr(args, k) for k in ("ngf", "n_downsample_global", "n_blocks_global", "ndf", "num_d")
             if getattr(args, k) is not None}
    summary = training.train(args.data, args.out, stage=args.stage, load_pretrain=args.pretrain,
                             max_steps=args.max_steps, time_budget=args.time_budget,
                             batch_size=args.batch_size or 1, lr=args.lr or 2e-4, vgg_path=args.vgg, use_l1=args.use_l1,
                             niter_fix_global=args.niter_fix_global, niter_fix_main=args.niter_fix_main,
                             face_type=args.face_type, device=args.device, resume=not args.restart, seed=args.seed,
                             progress=not args.quiet, **sizes)
    result = {k: summary[k] for k in ("stage", "step", "stopped", "vgg_loss", "out_dir")}
    if args.export:
        result["target"] = str(training.export_target(args.out, args.export))
    return result


def build_demo(args) -> dict:
    """``demo.build_demo`` into ``--out``; returns its report."""
    from models.edn import demo

    return demo.build_demo(args.out, work_dir=args.work, train_seconds=args.minutes * 60, seed=args.seed,
                           progress=not args.quiet)


def bench(args) -> dict:
    """Frames per second of each stage at the published sizes (``bench.run``)."""
    from models.edn import bench as benchmark

    return benchmark.run(device=args.device, repeats=args.repeats)


COMMANDS = {
    "prepare": Command(prepare, (
        argument("--stages", nargs="+", choices=["global", "local"], default=["global"],
                 help="label and frame sizes to store: global (256x512), local (512x1024, also the face stage's)"),
        argument("--max-frames", type=int, help="read no more than this many frames"),
    ), help="one target video: MediaPipe keypoints on EDN's canvas, stick-figure labels, frames, face boxes"),
    "train": Command(train, (
        argument("--stage", choices=["global", "local", "face"], help="which of the README's three stages"),
        argument("--video", help="the target's video, prepared into --data first (unless it already is)"),
        argument("--pretrain", help="the previous stage's run folder (--load_pretrain)"),
        argument("--export", metavar="DIR", help="then write a target folder the pipeline loads"),
        argument("--ngf", type=int, help="generator width (64 global, 32 local)"),
        argument("--n-downsample-global", type=int, help="stride-2 convolutions of the generator (4)"),
        argument("--n-blocks-global", type=int, help="residual blocks of the generator (9)"),
        argument("--ndf", type=int, help="discriminator width (64)"),
        argument("--num-d", type=int, help="discriminator scales (2 global, 3 local and face)"),
        argument("--vgg", help="VGG-19 ImageNet weights (torchvision's vgg19-dcbb9e9d.pth) for the perceptual "
                               "loss; without it the loss is off"),
        argument("--use-l1", action="store_true", help="add the authors' --use_l1 term (10 x L1 of frame t)"),
        argument("--niter-fix-global", type=int, default=0, help="local stage: epochs training the enhancer alone"),
        argument("--niter-fix-main", type=int, help="face stage: epochs training the face discriminator alone (10)"),
        argument("--face-type", choices=["face", "face_unet"], default="face",
                 help="face stage: residual generator (face = the README's --faceGtype global)"),
    ), help="global, local or face stage on one prepared target (defaults: the README's)"),
    "build-demo": Command(build_demo, (
        argument("--minutes", type=float, default=22.0, help="training minutes (default 22)"),
    ), help="a reduced global stage on a rendered dancing figure"),
    "bench": Command(bench, (), help="global (512x256) and local (1024x512) generators, the face GAN, labels "
                                     "and pose detection"),
}
