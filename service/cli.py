"""The ``talkingface`` command.

    talkingface generate [--model MODEL] --image face.jpg (--audio speech.wav | --video talking.mp4) -o out.mp4
    talkingface generate --model pg2 --image person.jpg --pose pose.json -o out.png
    talkingface generate --model edn --video dance.mp4 [--target DIR] -o out.mp4
    talkingface models
    talkingface bench MODEL|api
    talkingface serve [--host --port --workers --insecure]
    talkingface worker
    talkingface keys create [--scope admin] [--scope metrics]
    talkingface jobs list|show ID|cancel ID
    talkingface data prepare [--model MODEL] --videos DIR --out DIR
    talkingface train MODEL --data DIR --out DIR
    talkingface eval [--model MODEL] --data DIR [--weights DIR]
    talkingface weights download MODEL [--weights DIR]
    talkingface weights import MODEL PATH... [--weights DIR]
    talkingface weights build-demo [--model MODEL]

This module is a shell: it names no model. ``generate`` takes one flag per option the
registered models declare (``models.common.pipeline.Option``); ``data prepare``,
``train``, ``eval``, ``weights build-demo`` and ``bench`` are built from the ``COMMANDS``
each system's ``commands.py`` exposes (``models.common.commands``). The arguments every
model of a subcommand takes are declared here; each model's own flags sit in a group of
their own in ``--help``, and one given for a model that does not declare it is refused.

Problems a user can fix (no face, not an image, missing weights, a flag of another
model, ...) print one line ``error: ...`` and exit with status 2; nothing else is caught.
"""

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from models.common.commands import Argument, Command, argument
from models.common.quantize import PRECISIONS
from models.errors import TalkingFaceError

DESCRIPTION = ("Talking-face video from a photo and a voice clip: generate clips, serve the API and its "
               "workers, prepare data, train, evaluate and benchmark the models.")
# The command line streams its output, so it takes far longer clips than the service.
CLI_MAX_AUDIO_SECONDS = 4 * 3600

# `talkingface bench api`: the HTTP service without models (service/bench_api.py).
API_BENCH = Command("service.bench_api:run", (
    argument("--clients", type=int, default=50, help="concurrent clients"),
    argument("--requests", type=int, default=20, help="submissions per client (without wrk)"),
    argument("--rate", type=float, default=100.0, help="jobs/s all clients offer in the open loop"),
    argument("--jobs", type=int, default=10, help="jobs timed from last frame to MP4 available (0: skip)"),
    argument("--busy-workers", type=int, default=0, help="worker processes kept busy rendering while "
                                                          "submissions are timed"),
    argument("--busy-seconds", type=float, default=120.0, help="audio seconds of each busy worker's clip"),
), help="submission latency and throughput of the HTTP service, without models")

# `talkingface bench queue`: the embedded and the Celery engines side by side (service/bench_queue.py).
QUEUE_BENCH = Command("service.bench_queue:run", (
    argument("--engine", choices=["embedded", "celery", "both"], default="both", help="the job engines to run"),
    argument("--workers-list", default="1,2", help="worker counts to run, comma-separated"),
    argument("--jobs", type=int, default=50, help="short jobs in the throughput batch"),
    argument("--latency-jobs", type=int, default=10, help="jobs run one at a time for the latencies"),
    argument("--broker", default="redis://127.0.0.1:6379/9", help="broker URL of the Celery engine"),
    argument("--database", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
             help="a PostgreSQL server (URL) where a database is made for each run and dropped after"),
), help="throughput and latency of the embedded and the Celery job engines (1 s clips, demo weights)")


# `talkingface bench stream`: streamed requests and live sessions, first frame and latency (service/bench_stream.py).
STREAM_BENCH = Command("service.bench_stream:run", (
    argument("--url", help="a running server to measure (default: one started for the run)"),
    argument("--key", help="its API key"),
    argument("--model", dest="stream_model",
             help="a model that streams (default: the service's default model), with the options it streams with"),
    argument("--chunk-frames", type=int, help="frames per network call in the live sessions (default: the server's)"),
    argument("--precision", choices=["fp32", "int8", "auto"],
             help="TALKINGFACE_PRECISION of the server started (the table says what its streams ran at)"),
    argument("--json", action="store_true", help="the numbers as JSON, not a table"),
), help="streamed talking faces: first decodable frame, frames/s against real time, live latency p50/p99")


def default_model() -> str:
    """The model a user gets without asking: the service's ``default_model`` setting."""
    from service.settings import Settings

    return Settings().default_model


def _listing(words, last="and") -> str:
    """"a", "a and b", "a, b and c" (or with ``last`` = "or")."""
    words = list(words)
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"


# ---------------------------------------------------------------------------------------
# The models' flags on one subcommand


class ModelFlags:
    """The flags the models bring to one subcommand, added once each and checked against the chosen model.

    Every flag is added with a suppressed default, so after parsing a flag is in the
    Namespace exactly when the user gave it. ``resolve`` then refuses a flag the chosen
    model does not declare and fills in the chosen model's own defaults -- which may
    differ between models declaring the same flag. A flag several models declare is
    parsed as the first of them declares it, with every model's ``choices`` allowed;
    ``resolve`` then holds the value to the chosen model's own.

    Args:
        parser: the subcommand's parser.
        arguments: {model: its Arguments}.
        helps: {model: one line shown above its flags}.
    """

    def __init__(self, parser, arguments: dict[str, tuple[Argument, ...]], helps: dict[str, str] | None = None):
        self.arguments = {model: {arg.dest: arg for arg in args} for model, args in arguments.items()}
        self.owners: dict[str, list[str]] = {}       # dest -> the models declaring it, in registry order
        first: dict[str, Argument] = {}
        for model, args in self.arguments.items():
            for dest, arg in args.items():
                self.owners.setdefault(dest, []).append(model)
                first.setdefault(dest, arg)
        self.names = {dest: arg.name for dest, arg in first.items()}
        groups = {}
        for model in self.arguments:
            groups[(model,)] = parser.add_argument_group(f"{model} only", (helps or {}).get(model))
        for dest, arg in first.items():
            owners = tuple(self.owners[dest])
            if len(owners) == len(self.arguments):
                group = parser                   # every model declares it
            elif owners in groups:
                group = groups[owners]
            else:
                group = groups[owners] = parser.add_argument_group(f"{_listing(owners)} only")
            overrides = {"default": argparse.SUPPRESS}
            choices = [c for m in owners for c in self.arguments[m][dest].keywords.get("choices") or ()]
            if arg.keywords.get("choices") and len(set(choices)) > len(arg.keywords["choices"]):
                overrides["choices"] = list(dict.fromkeys(choices))
            helps = {m: self.arguments[m][dest].keywords.get("help") for m in owners}
            if len(set(helps.values())) > 1:          # each model says what the flag is to it
                overrides["help"] = "; ".join(f"{m}: {h}" for m, h in helps.items() if h)
            arg.add_to(group, **overrides)

    def resolve(self, args: argparse.Namespace, model: str, what: str) -> None:
        """Check ``args`` against ``model``'s flags and complete them with its defaults.

        Raises:
            TalkingFaceError: ``model`` takes no part in this subcommand (``what``), or a
                flag of another model was given: ``--x applies to <owners>, not <model>``,
                naming every flag of those owners, so the user sees what belongs where.
        """
        if model not in self.arguments:
            others = _listing(self.arguments) if self.arguments else "none"
            raise TalkingFaceError(f"{model} has no `talkingface {what}` (models that have: {others})")
        own = self.arguments[model]
        foreign = {tuple(self.owners[dest]) for dest in self.owners if dest not in own and hasattr(args, dest)}
        if foreign:
            lines = []
            for owners in sorted(foreign):
                flags = [self.names[d] for d, o in self.owners.items() if tuple(o) == owners]
                verb = "applies" if len(flags) == 1 else "apply"
                lines.append(f"{_listing(flags)} {verb} to {_listing(owners)}, not {model}")
            raise TalkingFaceError("; ".join(lines))
        for dest, arg in own.items():
            if not hasattr(args, dest):
                setattr(args, dest, arg.default)
            elif arg.keywords.get("choices") and getattr(args, dest) not in arg.keywords["choices"]:
                allowed = ", ".join(map(str, arg.keywords["choices"]))
                raise TalkingFaceError(f"{arg.name} of {model} is one of {allowed}, not {getattr(args, dest)!r}")


def _commands(subcommand: str, extra: dict[str, Command] | None = None) -> dict[str, Command]:
    """{model: Command} of every registered model that has ``subcommand`` (``models/<system>/commands.py``)."""
    from models import registry

    commands = {name: registry.commands(name)[subcommand] for name in registry.REGISTRY
                if subcommand in registry.commands(name)}
    commands.update(extra or {})
    return commands


def _add_commands(parser, commands: dict[str, Command], what: str, func) -> None:
    """The models' flags after the shell's own, and what running the subcommand needs."""
    flags = ModelFlags(parser, {m: c.arguments for m, c in commands.items()}, {m: c.help for m, c in commands.items()})
    parser.set_defaults(func=func, commands=commands, flags=flags, what=what)


def _run(args):
    """Check the chosen model's flags, then run its Command; returns what it returns."""
    args.flags.resolve(args, args.model, args.what)
    return args.commands[args.model](args)


# ---------------------------------------------------------------------------------------
# Subcommands


def option_argument(option) -> Argument:
    """The ``generate`` flag of a declared ``Option``: ``--paste-back``, ``--finetune-steps N`` ..."""
    flag = "--" + option.name.replace("_", "-")
    flags = ("-" + option.name, flag) if len(option.name) == 1 else (flag,)     # -n as well as --n
    if option.type is bool:
        action = argparse.BooleanOptionalAction if option.default else "store_true"
        return argument(*flags, action=action, default=bool(option.default), help=option.help)
    keywords = {"type": option.type, "default": option.default, "help": option.help}
    if option.choices:
        keywords["choices"] = list(option.choices)
    elif option.type in (int, float):
        keywords["metavar"] = "N"
    return argument(*flags, **keywords)


def cmd_generate(args):
    from models import registry
    from models.common.pipeline import check_options
    from models.errors import InvalidInput
    from service import render

    name = registry.spec(args.model).name
    if registry.spec(name).task == "image-generation":
        raise TalkingFaceError(f"{name} draws images from noise: `talkingface sample --model {name} -o DIR`")
    args.flags.resolve(args, name, "generate")
    task = render.TASKS[registry.spec(name).task]
    files = {role: getattr(args, role) for role in ("image", "audio", "video", "pose") if getattr(args, role)}
    try:
        task.check_roles(files, name, prefix="--")
    except InvalidInput as exc:
        raise TalkingFaceError(exc.message) from None
    if not (args.stream and args.output == "-"):
        render.check_output(args.output)
    pipeline = registry.pipeline_class(name)
    options = check_options(pipeline, {option: getattr(args, option, None) for option in pipeline.declared_options()})
    if args.stream and not (task.name == "talking-face" and pipeline.streams(options) and not (
            args.video and pipeline.accepts_video)):
        flags = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in pipeline.stream_options.items())
        condition = f" (it streams with {flags})" if pipeline.can_stream and flags else ""
        raise TalkingFaceError(f"{name} cannot stream its output with these options{condition}; leave out --stream")
    if task.name == "talking-face":
        return _generate_video(args, name, pipeline, options)
    # The files are checked before the weights load.
    inputs = task.read(pipeline, files, options, render.Limits(max_seconds=CLI_MAX_AUDIO_SECONDS))
    pipe = registry.load(name, weights=args.weights, device=args.device, precision=args.precision)
    with _progress_bar(name, args.quiet) as progress:
        result = task.render(pipe, inputs, args.output, options=options, progress=progress)
    shape = (f"{result.info['size'][1]} x {result.info['size'][0]}" if "size" in result.info
             else f"{result.frames} frames, {result.seconds:.2f} s")
    print(f"wrote {args.output} ({shape}, weights: {result.info.get('weights')}, "
          f"device: {result.info.get('device')})")


@contextlib.contextmanager
def _progress_bar(name, quiet, unit="frame"):
    """``progress(done, total)`` drawing a tqdm bar of frames (or ``unit``)."""
    from tqdm.auto import tqdm

    bar = tqdm(unit=unit, desc=name, disable=quiet)

    def progress(done, total):
        bar.total = total
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        bar.close()


def _generate_video(args, name, pipeline, options):
    from models import registry
    from service import render

    face_index = options.get("face_index", 0)
    # The files are checked before the weights load; reading them needs only what the
    # model takes (``accepts_video``), which its class declares.
    inputs = render.read_inputs(pipeline, image=args.image, audio=args.audio, video=args.video, face_index=face_index,
                                limits=render.Limits(max_seconds=CLI_MAX_AUDIO_SECONDS))
    pipe = registry.load(name, weights=args.weights, device=args.device, half=args.fp16, precision=args.precision)
    if args.stream:
        from service import stream

        # The face is kept by the photo's sha256 (a process making several clips of it).
        reference = pipe.cached_reference(stream.file_key(args.image), inputs.image, face_index)
    else:
        reference = pipe.prepare_reference(inputs.image, face_index)
    if reference.n_faces > 1:
        which = "the largest" if face_index == 0 else f"face {face_index} (by size)"
        print(f"note: {reference.n_faces} faces found in {args.image}; using {which} "
              "(--face-index picks another)", file=sys.stderr)

    if args.stream:
        with _progress_bar(name, args.quiet) as progress:
            result = stream.stream_to_file(pipe, inputs, args.output, options=options, progress=progress,
                                           reference=reference)
        print(f"streamed {'to stdout' if args.output == '-' else args.output} ({result.frames} frames, "
              f"{result.seconds:.2f} s)", file=sys.stderr)
        return
    with _progress_bar(name, args.quiet) as progress:
        result = render.render(pipe, inputs, args.output, options=options, progress=progress, reference=reference)
    print(f"wrote {args.output} ({result.frames} frames, {result.seconds:.2f} s, "
          f"weights: {result.info.get('weights')}, device: {result.info.get('device')})")


def cmd_sample(args):
    from models import registry
    from models.common.pipeline import check_options
    from service import render

    name = registry.spec(args.model).name
    if registry.spec(name).task != "image-generation":
        raise TalkingFaceError(f"{name} is not an image generator (`talkingface generate` runs it)")
    args.flags.resolve(args, name, "sample")
    pipeline = registry.pipeline_class(name)
    options = check_options(pipeline, {option: getattr(args, option, None) for option in pipeline.declared_options()})
    output = Path(args.output)
    layout = {".zip": "zip", ".png": "png"}.get(output.suffix.lower(), "folder")
    if layout == "folder":
        output.mkdir(parents=True, exist_ok=True)
    else:
        render.check_output(output)
    condition = render.read_image_condition(pipeline, {"condition": args.vector}, options)
    pipe = registry.load(name, weights=args.weights, device=args.device)
    with _progress_bar(name, args.quiet, unit="image") as progress:
        result = render.render_images(pipe, condition, output, options=options, progress=progress, layout=layout)
    height, width = result.info["size"]
    levels = f", levels {', '.join(result.info['levels'])}" if result.info["levels"] else ""
    print(f"wrote {output} ({result.frames} images of {width} x {height}{levels}, seed {result.info['seed']}, "
          f"weights: {result.info.get('weights')}, device: {result.info.get('device')})")


def cmd_models(args):
    from models import registry
    from models.weights import recorded_sha256, weights_dir

    authors_folder = weights_dir(args.weights).resolve()
    for name, model in registry.REGISTRY.items():
        print(f"{name}  [{model.task}]  {model.paper}")
        kind, folder, missing = registry.weights_ready(name, args.weights)
        status = registry.file_status(name, args.weights)
        if missing:
            print(f"  NOT READY: the authors' weights in {folder} lack {', '.join(missing)}")
        else:
            weights = "the authors' weights" if kind == "authors" else "project-trained weights"
            print(f"  ready: uses {weights} in {folder}")
        if not status:
            continue
        # The authors' files: required when they are what runs, else what upgrades the model.
        using_authors = kind == "authors"
        purpose = "" if using_authors else " (optional: for the paper quality)"
        print(f"  the authors' files in {authors_folder}{purpose}:")
        for file, path in status:
            if path:
                state = "found  "
            elif file.optional or not using_authors:
                state = "absent "         # not needed for what runs now
            else:
                state = "MISSING"
            print(f"    {state} {file.name:<22} {file.role}")
            if path and recorded_sha256(path):
                print(f"            sha256 {recorded_sha256(path)} (recorded when installed)")
            if not path:
                print(f"            from {file.source}")
        if not all(path for _, path in status):
            print(f"  get them: talkingface weights download {name} (without internet: "
                  f"talkingface weights import {name} PATH)")


def cmd_bench(args):
    args.model = args.target
    result = _run(args)
    # A bench that lays its numbers out as a table returns the text.
    print(result if isinstance(result, str) else json.dumps(result, indent=2))


def _settings(args):
    from pydantic import ValidationError

    from service.settings import Settings

    overrides = {k: v for k, v in (("host", getattr(args, "host", None)), ("port", getattr(args, "port", None)),
                                   ("workers", getattr(args, "workers", None)),
                                   ("insecure", getattr(args, "insecure", None) or None)) if v is not None}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        # Where and what only: pydantic's own text repeats the value, which may hold API keys.
        first = exc.errors()[0]
        where = "TALKINGFACE_" + "_".join(str(part) for part in first["loc"][:1]).upper()
        raise TalkingFaceError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None


def cmd_serve(args):
    import logging

    from service import server
    from service.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = _settings(args)
    server.check_bind(settings)           # before anything starts
    server.run(create_app(settings, start_workers=True), settings)


def cmd_keys(args):
    """``keys create``: a new random key, printed once, and the settings entry (its hash) to add."""
    import hashlib
    import secrets

    key = "tfk_" + secrets.token_urlsafe(32)
    scopes = sorted(set(args.scope or ()))
    entry = ":".join(["sha256", hashlib.sha256(key.encode()).hexdigest()] + (["+".join(scopes)] if scopes else []))
    print(key)
    print(f"settings entry: {entry}")
    print("The key is shown this once: give it to its user. Add the entry to TALKINGFACE_API_KEYS "
          "(comma-separated entries); the service keeps only the hash.", file=sys.stderr)


def cmd_worker(args):
    from models import registry
    from service.jobs.worker import worker_main

    models = [m.strip() for m in (args.models or "").split(",") if m.strip()] or None
    unknown = [m for m in models or () if m not in registry.REGISTRY]
    if unknown:
        raise TalkingFaceError(f"unknown model {unknown[0]!r} in --models; models are {_listing(registry.REGISTRY)}")
    worker_main(_settings(args).model_dump_json(), worker_id=args.id, models=models)


def cmd_jobs(args):
    from service.api.serialize import job_body
    from service.jobs.store import FINAL, JobStore

    store = JobStore(_settings(args).db_url)
    if args.action == "list":
        rows, more = store.list_jobs(status=args.status, limit=args.limit)
        for row in rows:
            print(f"{row['id']}  {row['status']:<9} {row['model']:<8} {100 * (row['progress'] or 0):5.1f}%  "
                  f"attempts {row['attempts']}  {row['error_code'] or ''}")
        if more:
            print("... more (use --limit)")
        return
    row = store.get_job(args.id) if args.id else None
    if row is None:
        raise TalkingFaceError(f"no job {args.id}")
    if args.action == "cancel":
        if row["status"] in FINAL:
            raise TalkingFaceError(f"job {args.id} is already {row['status']}")
        row = store.cancel(args.id)
    print(json.dumps(job_body(row), indent=2))


def cmd_verify(args):
    """Exit 0 when the file is labelled as made by talkingface, 1 when nothing says so, 2 when unreadable."""
    from models.errors import InvalidInput
    from service.provenance.verify import describe, verify

    try:
        report = verify(args.file)
    except InvalidInput as exc:
        if not args.json:
            raise TalkingFaceError(exc.message) from None
        print(json.dumps({"file": args.file, "error": {"code": exc.code, "message": exc.message}}, indent=2))
        raise SystemExit(2) from None
    print(json.dumps(report, indent=2) if args.json else describe(report))
    if not report["labelled"]:
        raise SystemExit(1)


def cmd_data(args):
    manifest = _run(args)
    if "labels" in manifest:
        # A dataset of a model that learns words says how many it found.
        print(f"{args.out}: {len(manifest['labels'])} word labels")
    statuses = [v["status"] for v in manifest["videos"].values()]
    print(f"{args.out}: {statuses.count('ok')} clips ready, {statuses.count('no_face')} without a face, "
          f"{statuses.count('error')} unreadable (manifest.json lists them)")


def cmd_train(args):
    # The image generators train on --images (their own flag); the others on a prepared --data.
    takes_images = any(a.name == "--images" for a in args.commands[args.model].arguments)
    if args.data is None and not takes_images:
        raise TalkingFaceError(f"train {args.model} needs --data (a folder `talkingface data prepare` wrote)")
    print(json.dumps(_run(args)))


def cmd_convert(args):
    print(json.dumps(_run(args)))


def cmd_eval(args):
    import math

    from models import metrics
    from service.render import check_output

    if args.json:
        check_output(args.json)
    results = _run(args)
    if not results:
        raise TalkingFaceError(f"no prepared clips in the {args.split} split of {args.data}")
    print(metrics.format_table(results, add_mean=True))
    if args.json:
        clean = {clip: {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
                 for clip, row in results.items()}
        with open(args.json, "w") as f:
            json.dump(clean, f, indent=2)


def cmd_weights(args):
    from models import registry

    args.out = args.out or str(registry.DEMO_WEIGHTS / args.model)
    print(json.dumps(_run(args), indent=2))


def cmd_weights_install(args):
    """``weights download`` and ``weights import``: one line a file, then whether the model is ready."""
    from models import weights_install

    if args.action == "download":
        report = weights_install.download(args.model, args.weights, progress=not args.quiet)
    else:
        report = weights_install.import_files(args.model, args.paths, args.weights)
    print("\n".join(report.lines()))
    if not report.complete:
        raise TalkingFaceError(report.problem())


# ---------------------------------------------------------------------------------------
# The parser


def add_generate(gen):
    from models import registry

    names = [name for name, model in registry.REGISTRY.items() if model.task != "image-generation"]
    video_models = [name for name in names if registry.accepts_video(name)]
    default = default_model()
    gen.add_argument("--model", default=default, help=f"{_listing(names, 'or')} (default {default})")
    gen.add_argument("--image", help="face photo, or the person's photo (JPEG, PNG, WebP, BMP)")
    driver = gen.add_mutually_exclusive_group()
    driver.add_argument("--audio", help="talking face: voice clip (WAV, MP3, AAC, FLAC, OGG, or a video's sound)")
    lips = f"the lips follow it with {_listing(video_models, 'or')} (its sound is kept); " if video_models else ""
    motion_models = [name for name in names if registry.spec(name).task == "motion-transfer"]
    dance = f"; {_listing(motion_models, 'or')}: the dancer whose motion the target performs" if motion_models else ""
    driver.add_argument("--video", help=f"talking face: driving video (MP4, MOV, MKV, WebM, AVI): {lips}"
                                        f"other models use its sound{dance}")
    pose_models = [name for name in names if registry.spec(name).task == "pose-transfer"]
    if pose_models:
        driver.add_argument("--pose", help=f"{_listing(pose_models, 'or')}: the target pose, OpenPose JSON "
                                           "(keypoints in the photo's pixels) or a photo whose pose is taken")
    gen.add_argument("-o", "--output", required=True, help="file to write: MP4 for a talking face, PNG for a pose")
    gen.add_argument("--weights", help="weights folder (default $TALKINGFACE_WEIGHTS_DIR or ./weights)")
    gen.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    gen.add_argument("--fp16", action="store_true", help="half-precision autocast on CUDA")
    gen.add_argument("--precision", choices=PRECISIONS, default="auto",
                     help="fp32, int8 (atvgnet, davs; CPU) or auto (default: int8 on CPUs where it is faster)")
    gen.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    gen.add_argument("--stream", action="store_true",
                     help="talking face: write fragmented MP4 as the frames are made (-o - for stdout: "
                          "`... --stream -o - | ffplay -`)")
    # One flag per option any model declares; the common ones (every model's) come first.
    options = {name: tuple(option_argument(o) for o in registry.declared_options(name).values()) for name in names}
    gen.set_defaults(func=cmd_generate, flags=ModelFlags(gen, options))


def add_sample(smp):
    from models import registry

    names = [name for name, model in registry.REGISTRY.items() if model.task == "image-generation"]
    smp.add_argument("--model", required=True, help=_listing(names, "or") if names else "an image generator")
    smp.add_argument("-o", "--output", required=True,
                     help="a folder (one PNG an image, levels/ for the coarse-to-fine steps, info.json), "
                          "a .png (one image, or a grid) or a .zip")
    smp.add_argument("--vector", metavar="NPY", help="condition vector, a NumPy .npy file of (d,) or (n, d) numbers "
                                                     "(a text embedding, InfoGAN's codes)")
    smp.add_argument("--weights", help="weights folder (default $TALKINGFACE_WEIGHTS_DIR or ./weights)")
    smp.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    smp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    options = {name: tuple(option_argument(o) for o in registry.declared_options(name).values()) for name in names}
    smp.set_defaults(func=cmd_sample, flags=ModelFlags(smp, options))


def add_bench(ben):
    commands = _commands("bench", extra={"api": API_BENCH, "queue": QUEUE_BENCH, "stream": STREAM_BENCH})
    ben.add_argument("target", choices=list(commands), help="a model, or the HTTP service (api)")
    ben.add_argument("--weights", help="weights folder (its arrays are used even with --random-weights)")
    ben.add_argument("--random-weights", action="store_true",
                     help="random-initialised networks (speed does not depend on the weights)")
    ben.add_argument("--device", default="auto")
    ben.add_argument("--seconds", type=float, help="clip length for the end-to-end run (default: the model's)")
    ben.add_argument("--repeats", type=int, default=3)
    _add_commands(ben, commands, "bench", cmd_bench)


def _model_choice(parser, commands, **keywords):
    """``--model``: one of the models that have this subcommand, the default model unless given."""
    parser.add_argument("--model", default=default_model(), choices=list(commands), **keywords)


def add_data(data):
    commands = _commands("prepare")
    data.add_argument("action", choices=["prepare"])
    _model_choice(data, commands, help="whose data format")
    data.add_argument("--videos", required=True, help="folder of videos (any container ffmpeg reads)")
    data.add_argument("--out", required=True, help="dataset folder to write (resumable)")
    data.add_argument("--split", type=float, default=0.9, help="fraction of videos for training")
    data.add_argument("--workers", type=int, help="parallel videos (default: up to 4)")
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("-q", "--quiet", action="store_true")
    _add_commands(data, commands, "data prepare", cmd_data)


def add_train(trn):
    commands = _commands("train")
    trn.add_argument("model", choices=list(commands))
    trn.add_argument("--data", help="prepared dataset folder (talking-face, pose and motion models)")
    trn.add_argument("--out", required=True, help="run folder: checkpoints, config.json, log.csv, samples/")
    trn.add_argument("--max-steps", type=int)
    trn.add_argument("--time-budget", type=float, help="seconds; stops cleanly with a checkpoint")
    trn.add_argument("--batch-size", type=int)
    trn.add_argument("--lr", type=float, default=None, help="learning rate (default: the model's own, the authors')")
    trn.add_argument("--device", default="auto")
    trn.add_argument("--seed", type=int, default=0)
    trn.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in --out")
    trn.add_argument("-q", "--quiet", action="store_true")
    _add_commands(trn, commands, "train", cmd_train)


def add_eval(evl):
    commands = _commands("eval")
    _model_choice(evl, commands)
    evl.add_argument("--data", required=True)
    evl.add_argument("--split", default="test", choices=["train", "test"])
    evl.add_argument("--weights", help="weights folder: the authors' files, or one this project trained "
                                       "(default $TALKINGFACE_WEIGHTS_DIR or ./weights)")
    evl.add_argument("--max-clips", type=int)
    evl.add_argument("--device", default="cpu")
    evl.add_argument("--json", help="also write the per-clip results here")
    _add_commands(evl, commands, "eval", cmd_eval)


def add_weights(wts):
    from models import registry

    actions = wts.add_subparsers(dest="action", required=True, metavar="{download,import,build-demo,convert}")
    with_files = [name for name, model in registry.REGISTRY.items() if model.files]
    folder = "weights folder to fill (default $TALKINGFACE_WEIGHTS_DIR or ./weights)"

    get = actions.add_parser("download", help="fetch the authors' files of a model from their sources, verified")
    get.add_argument("model", choices=with_files)
    get.add_argument("--weights", metavar="DIR", help=folder)
    get.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    get.set_defaults(func=cmd_weights_install)

    take = actions.add_parser("import", help="install the authors' files of a model from what you have, verified "
                                             "(no internet needed)")
    take.add_argument("model", choices=with_files)
    take.add_argument("paths", nargs="+", metavar="PATH",
                      help="a folder, a zip or tar archive, or loose files, under the authors' names")
    take.add_argument("--weights", metavar="DIR", help=folder)
    take.set_defaults(func=cmd_weights_install)

    commands = _commands("build-demo")
    demo = actions.add_parser("build-demo", help="build the demo weights from generated data")
    _model_choice(demo, commands)
    demo.add_argument("--out", help="weights folder to write (default weights/demo/<model>)")
    demo.add_argument("--work", help="folder for the generated clips, dataset and runs (default: a temporary one)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("-q", "--quiet", action="store_true")
    _add_commands(demo, commands, "weights build-demo", cmd_weights)

    commands = _commands("convert")
    if commands:
        convert = actions.add_parser("convert", help="turn the authors' checkpoint of another framework "
                                                     "(TensorFlow) into a weights folder")
        convert.add_argument("--model", required=True, choices=list(commands))
        convert.add_argument("source", help="the authors' checkpoint: a file, its prefix or its folder")
        convert.add_argument("--out", required=True, help="weights folder to write")
        _add_commands(convert, commands, "weights convert", cmd_convert)


# Subcommands whose flags come from the registered models: name -> (help, builder).
MODEL_SUBCOMMANDS = {
    "generate": ("make a talking-face MP4 from a photo and a voice clip (or a video), or a person in a new pose",
                 add_generate),
    "sample": ("draw images with an image generator (DCGAN, LAPGAN, StackGAN, ...)", add_sample),
    "bench": ("measure speed and memory; prints JSON", add_bench),
    "data": ("prepare training data from talking-head videos", add_data),
    "train": ("train a model on a prepared dataset", add_train),
    "eval": ("PSNR, SSIM, LMD, CPBD and lip-sync proxy on a prepared split", add_eval),
    "weights": ("download or import the authors' weights, verified; build the demo weights", add_weights),
}


def build_parser(command=None):
    """The ``talkingface`` parser.

    Args:
        command (optional): the subcommand about to run. Only its model-dependent parts are
            built then (the others are listed with their help line alone), so that
            ``talkingface jobs`` or ``serve`` do not import every model first.
    """
    from service.settings import KEY_SCOPES

    parser = argparse.ArgumentParser(prog="talkingface", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    def model_subcommand(name):
        help_line, build = MODEL_SUBCOMMANDS[name]
        subparser = sub.add_parser(name, help=help_line)
        if command is None or command == name:
            build(subparser)

    model_subcommand("generate")
    model_subcommand("sample")

    mod = sub.add_parser("models", help="list models and whether their weight files are found")
    mod.add_argument("--weights", help="weights folder (default $TALKINGFACE_WEIGHTS_DIR or ./weights)")
    mod.set_defaults(func=cmd_models)

    model_subcommand("bench")

    srv = sub.add_parser("serve", help="run the HTTP API with embedded workers (settings: TALKINGFACE_* env)")
    srv.add_argument("--host")
    srv.add_argument("--port", type=int)
    srv.add_argument("--workers", type=int, help="worker processes to start (0: none, use `talkingface worker`)")
    srv.add_argument("--insecure", action="store_true",
                     help="serve beyond loopback without API keys (TALKINGFACE_INSECURE=1): anyone who reaches "
                          "the port can use it")
    srv.set_defaults(func=cmd_serve)

    key = sub.add_parser("keys", help="make API keys: prints a new key once and the settings entry (its hash)")
    key.add_argument("action", choices=["create"])
    key.add_argument("--scope", action="append", choices=KEY_SCOPES,
                     help="admin: sees and acts on every key's jobs and files; metrics: may read /metrics "
                          "(repeat for both)")
    key.set_defaults(func=cmd_keys)

    wrk = sub.add_parser("worker", help="run one worker against the job store of the same settings")
    wrk.add_argument("--id", help="worker id (default: a new one)")
    wrk.add_argument("--models", help="comma-separated models this worker serves (default: all); with a broker "
                                      "(TALKINGFACE_BROKER_URL) it consumes only their queues")
    wrk.set_defaults(func=cmd_worker)

    job = sub.add_parser("jobs", help="list, show or cancel jobs in the job store")
    job.add_argument("action", choices=["list", "show", "cancel"])
    job.add_argument("id", nargs="?")
    job.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "canceled"])
    job.add_argument("--limit", type=int, default=20)
    job.set_defaults(func=cmd_jobs)

    ver = sub.add_parser("verify", help="say whether an MP4, image or zip of PNGs is labelled as made by "
                                        "talkingface: its metadata, C2PA manifest and watermark")
    ver.add_argument("file")
    ver.add_argument("--json", action="store_true", help="the report as JSON")
    ver.set_defaults(func=cmd_verify)

    for name in ("data", "train", "eval", "weights"):
        model_subcommand(name)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    # The first word that is not a flag names the subcommand (the top level has no other arguments).
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        args.func(args)
    except TalkingFaceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`talkingface jobs list | head`): not an error. Point stdout
        # at /dev/null so that Python's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
