"""ATVGnet's part of the ``talkingface`` command (``models.common.commands``).

    talkingface data prepare --videos DIR --out DIR [--basics DIR]
    talkingface train atvgnet --data DIR --stage atnet|vgnet --out DIR [--width --ngf --n-blocks ...]
    talkingface eval --model atvgnet --data DIR (--weights DIR | --atnet RUN --vgnet RUN)
    talkingface weights build-demo [--atnet-minutes 4 --vgnet-minutes 26]
    talkingface bench atvgnet [--memory 10 600]

The shell passes the arguments every model shares (``--data``, ``--out``, ``--device``,
``--seed``, ``-q`` ...) with the ones below; each function returns what the shell shows.
"""

from __future__ import annotations

from models.common import quantize
from models.common.commands import Command, argument
from models.errors import TalkingFaceError


def prepare(args) -> dict:
    """``dataset.prepare`` on a folder of videos; returns the manifest."""
    from models.atvgnet import dataset

    return dataset.prepare(args.videos, args.out, split=args.split, basics_dir=args.basics, workers=args.workers,
                           seed=args.seed, progress=not args.quiet)


def train(args) -> dict:
    """Train AT-net or VG-net (``--stage``); returns the summary's stage, step, stop reason and folder."""
    from models.atvgnet import train as training

    if args.stage is None:
        raise TalkingFaceError("train atvgnet needs --stage atnet or --stage vgnet")
    summary = training.train(args.data, args.stage, args.out, max_steps=args.max_steps,
                             time_budget=args.time_budget, batch_size=args.batch_size, lr=args.lr or 2e-4,
                             width=args.width, ngf=args.ngf, n_blocks=args.n_blocks, disc_width=args.disc_width,
                             pixel_warmup=args.pixel_warmup, whole_video=args.whole_video, ema=args.ema,
                             device=args.device, resume=not args.restart, seed=args.seed,
                             progress=not args.quiet)
    return {k: summary[k] for k in ("stage", "step", "stopped", "out_dir") if k in summary}


def evaluate(args) -> dict:
    """{clip: scores} of AT-net + VG-net on the prepared split, from two training runs or the authors' files."""
    import numpy as np

    from models import registry
    from models.atvgnet import evaluate as evaluation
    from models.atvgnet import train as training
    from models.weights import weights_dir

    if args.atnet or args.vgnet:
        if not (args.atnet and args.vgnet):
            raise TalkingFaceError("give both --atnet and --vgnet training folders, or --weights")
        atnet = training.load_trained(args.atnet, "atnet", device=args.device)
        vgnet = training.load_trained(args.vgnet, "vgnet", device=args.device)
        pca = None                                   # the dataset's own PCA, as in training
    else:
        folder = weights_dir(args.weights)
        atnet = registry.load_network("atvgnet", "atnet", folder / "atnet_lstm_18.pth")
        vgnet = registry.load_network("atvgnet", "vgnet", folder / "generator_23.pth")
        pca = (np.load(folder / "mean_lrw1.npy"), np.load(folder / "U_lrw1.npy"))
    device = next(atnet.parameters()).device
    return evaluation.evaluate(atnet, vgnet, args.data, split=args.split, pca=pca, max_clips=args.max_clips,
                               device=device)


def build_demo(args) -> dict:
    """``demo.build_demo`` into ``--out``; returns its report."""
    from models.atvgnet import demo

    return demo.build_demo(args.out, work_dir=args.work, atnet_seconds=args.atnet_minutes * 60,
                           vgnet_seconds=args.vgnet_minutes * 60, seed=args.seed, progress=not args.quiet)


def bench(args) -> dict:
    """Speed (``bench.run``), or with ``--memory`` peak RSS per clip length (``bench.memory``)."""
    from models.atvgnet import bench as benchmark

    if args.memory is not None:
        return benchmark.memory(args.memory, weights=args.weights, random_weights=args.random_weights,
                                device=args.device)
    return benchmark.run(weights=args.weights, random_weights=args.random_weights, device=args.device,
                         seconds=args.seconds, repeats=args.repeats, precision=args.precision)


COMMANDS = {
    "prepare": Command(prepare, (
        argument("--basics", help="folder with the authors' normalisation arrays (default: weights folder)"),
    ), help="25-fps aligned 128x128 crops, landmarks, MFCC windows and the landmark PCA"),
    "train": Command(train, (
        argument("--stage", choices=["atnet", "vgnet"], help="which network to train"),
        argument("--width", type=int, default=64, help="AT-net channel scale (64 = published)"),
        argument("--ngf", type=int, default=64, help="VG-net channel scale (64 = published)"),
        argument("--n-blocks", type=int, default=9, help="VG-net residual blocks (9 = published)"),
        argument("--disc-width", type=int, default=64, help="VG-net discriminator channel scale (64 = published)"),
        argument("--pixel-warmup", type=int, default=0,
                 help="VG-net: first steps on the pixel loss alone, without the discriminator (not in the paper)"),
        argument("--whole-video", action="store_true",
                 help="AT-net: draw the example frame from the whole clip, not frames 3-7"),
        argument("--ema", type=float, help="keep a moving average of the weights, e.g. 0.999"),
    ), help="AT-net (audio -> landmarks) and VG-net (landmarks -> frames), one stage a run"),
    "eval": Command(evaluate, (
        argument("--atnet", help="an AT-net training folder (instead of --weights)"),
        argument("--vgnet", help="a VG-net training folder (instead of --weights)"),
    ), help="the authors' files in --weights, or two training runs"),
    "build-demo": Command(build_demo, (
        argument("--atnet-minutes", type=float, default=4.0, help="AT-net training minutes (default 4)"),
        argument("--vgnet-minutes", type=float, default=26.0, help="VG-net training minutes (default 26)"),
    ), help="reduced AT-net and VG-net on the generated clips"),
    "bench": Command(bench, (
        argument("--memory", nargs="*", type=float, metavar="SECONDS",
                 help="instead: peak RSS of end-to-end runs on clips of these lengths (default 10 600)"),
        quantize.bench_argument(),
    ), help="AT-net and VG-net alone, then end to end (default a 10 s clip)"),
}
