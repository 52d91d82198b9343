"""StackGAN's part of the ``talkingface`` command (``models.common.commands``).

    talkingface train stackgan --images DIR [--captions FILE] --out RUN [--branch-num 3 ...]
    talkingface weights build-demo --model stackgan [--steps 1200]
    talkingface bench stackgan [--random-weights]

``--captions``: one line a caption, ``<image file name><TAB><caption>``; without it the
run is unconditional. The shell passes the arguments every model shares (``--out``,
``--max-steps``, ``--time-budget``, ``--batch-size``, ``--lr``, ``--device``, ``--seed``,
``--restart``, ``-q`` ...) with the ones below; each function returns what the shell shows.
"""

from __future__ import annotations

from models.common.commands import Command, argument
from models.errors import TalkingFaceError

# `train stackgan` flags -> TrainConfig fields; a flag not given (None) keeps the authors' value.
TRAIN_OPTIONS = ("max_steps", "time_budget", "batch_size", "lr", "device", "seed", "branch_num", "gf_dim",
                 "df_dim", "z_dim", "embedding_dim", "r_num", "text_dim", "encoder_steps")


def train(args) -> dict:
    """Train StackGAN++ on ``--images`` (``--captions``: text-conditional); returns the summary."""
    from models.stackgan import train as training

    if not getattr(args, "images", None):
        raise TalkingFaceError("train stackgan needs --images DIR, a folder of training images")
    options = {k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k, None) is not None}
    summary = training.train(args.images, args.out, captions=getattr(args, "captions", None),
                             resume=not getattr(args, "restart", False), progress=not getattr(args, "quiet", False),
                             **options)
    return {k: summary[k] for k in ("step", "stopped", "images", "conditional", "captions", "out_dir")}


def build_demo(args) -> dict:
    """``demo.build_demo`` into ``--out``; returns its report."""
    from models.stackgan import demo

    return demo.build_demo(args.out, work_dir=getattr(args, "work", None), seed=getattr(args, "seed", None) or 0,
                           steps=args.steps, progress=not getattr(args, "quiet", False))


def bench(args) -> dict:
    """Images per second at the published sizes (``bench.run``)."""
    from models.stackgan import bench as benchmark

    return benchmark.run(weights=getattr(args, "weights", None), random_weights=getattr(args, "random_weights", True),
                         device=getattr(args, "device", "auto"), repeats=getattr(args, "repeats", None) or 2)


COMMANDS = {
    "train": Command(train, (
        argument("--images", help="folder of training images (StackGAN: searched recursively)"),
        argument("--captions", help="caption file, '<image file name><TAB><caption>' lines; "
                                    "without it StackGAN trains unconditionally"),
        argument("--branch-num", type=int, help="StackGAN branches: 1 (64), 2 (64, 128), 3 (to 256, published)"),
        argument("--gf-dim", type=int, help="StackGAN generator width (64 = published)"),
        argument("--df-dim", type=int, help="StackGAN discriminator width (64 = published)"),
        argument("--z-dim", type=int, help="StackGAN noise size (100 = published)"),
        argument("--embedding-dim", type=int, help="StackGAN CA code size (128 = published)"),
        argument("--r-num", type=int, help="StackGAN residual blocks a stage (2 = published)"),
        argument("--text-dim", type=int, help="size of the project's caption embedding (128)"),
        argument("--encoder-steps", type=int, help="StackGAN text encoder training steps (400)"),
    ), help="StackGAN++ (v2 tree) with the authors' losses; Adam 2e-4, betas 0.5, 0.999"),
    "build-demo": Command(build_demo, (
        argument("--steps", type=int, default=1200, help="StackGAN demo GAN steps (default 1200)"),
    ), help="a 2-branch text-conditional StackGAN++ and its text encoder on captioned shapes"),
    "bench": Command(bench, (), help="StackGAN v1 (COCO) and v2 (256x256) generators, images/s"),
}
