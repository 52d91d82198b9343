"""The ``talkingface`` command.

    talkingface generate --model atvgnet --image face.jpg --audio speech.wav -o out.mp4
    talkingface generate --model davs --image face.jpg --video talking.mp4 -o out.mp4
    talkingface models
    talkingface bench atvgnet|davs
    talkingface serve [--host --port --workers]
    talkingface worker
    talkingface jobs list|show ID|cancel ID
    talkingface data prepare [--model atvgnet|davs] --videos DIR --out DIR
    talkingface train atvgnet --data DIR --stage atnet|vgnet --out DIR
    talkingface train davs --data DIR --out DIR
    talkingface eval --model atvgnet --data DIR (--weights DIR | --atnet RUN --vgnet RUN)
    talkingface eval --model davs --data DIR (--weights DIR | --run RUN) [--mode audio|video]

Problems a user can fix (no face, not an image, missing weights, ...) print one line
``error: ...`` and exit with status 2; nothing else is caught.
"""

import argparse
import json
import sys
from pathlib import Path

from models.errors import TalkingFaceError

# The command line streams its output, so it takes far longer clips than the service.
CLI_MAX_AUDIO_SECONDS = 4 * 3600


def cmd_generate(args):
    import numpy as np
    from tqdm.auto import tqdm

    from models import TalkingFaceInput, registry
    from service import media

    pipeline = registry.pipeline_class(registry.spec(args.model).name)
    extra = {}
    if args.finetune_steps is not None:
        if "finetune_steps" not in getattr(pipeline, "options", ()):
            raise TalkingFaceError(f"--finetune-steps applies to davs, not {args.model}")
        extra["finetune_steps"] = args.finetune_steps
    image = media.read_image(args.image)
    video = None
    if args.video and getattr(pipeline, "accepts_video", False):
        # The lips follow the video, which keeps its own sound.
        video = media.read_video(args.video, max_seconds=CLI_MAX_AUDIO_SECONDS)
        audio = media.read_video_audio(args.video, sample_rate=16000, max_seconds=CLI_MAX_AUDIO_SECONDS)
    else:
        audio = media.read_audio(args.audio or args.video, sample_rate=16000, max_seconds=CLI_MAX_AUDIO_SECONDS)
        media.check_speech(audio, 16000)
    pipe = registry.load(args.model, weights=args.weights, device=args.device, half=args.fp16)
    inputs = TalkingFaceInput(image=image, audio=audio, sample_rate=16000, face_index=args.face_index, video=video)
    reference = pipe.prepare_reference(image, args.face_index)
    if reference.n_faces > 1:
        which = "the largest" if args.face_index == 0 else f"face {args.face_index} (by size)"
        print(f"note: {reference.n_faces} faces found in {args.image}; using {which} "
              "(--face-index picks another)", file=sys.stderr)

    metadata = {"comment": f"talkingface {args.model}; weights: {pipe.info.get('weights')}"}
    bar = tqdm(unit="frame", desc=args.model, disable=args.quiet)

    def progress(done, total):
        bar.total = total
        bar.update(done - bar.n)

    with media.Mp4Writer(args.output, fps=pipe.fps, audio=audio, sample_rate=16000, metadata=metadata) as writer:
        for chunk in pipe.frame_chunks(inputs, paste_back=args.paste_back, progress=progress,
                                       reference=reference, **extra):
            writer.write(np.ascontiguousarray(chunk))
    bar.close()
    print(f"wrote {args.output} ({writer.frames_written} frames, {writer.frames_written / pipe.fps:.2f} s, "
          f"weights: {pipe.info.get('weights')}, device: {pipe.info.get('device')})")


def cmd_models(args):
    from models import registry

    for name, model in registry.REGISTRY.items():
        print(f"{name}  [{model.task}]  {model.paper}")
        kind, folder, missing = registry.weights_ready(name, args.weights)
        state = "ready" if not missing else "not ready"
        print(f"  uses the {'authors' if kind == 'authors' else 'project-trained'} weights in {folder} ({state})")
        for file, path in registry.file_status(name, args.weights):
            state = "found  " if path else ("absent " if file.optional else "MISSING")
            print(f"  {state} {file.name:<22} {file.role}")
            if not path:
                print(f"          from {file.source}")


def cmd_bench(args):
    if args.target == "api":
        from service import bench_api

        result = bench_api.run(args)
    elif args.target == "davs":
        from models.davs import bench

        if args.memory is not None:
            raise TalkingFaceError("--memory measures atvgnet; davs streams the same way (talkingface bench atvgnet)")
        result = bench.run(args.weights, args.random_weights, args.device, args.seconds, args.mode, args.repeats)
    else:
        from models.atvgnet import bench

        if args.memory is not None:
            result = bench.memory(args.memory, args.weights, args.random_weights, args.device)
        else:
            result = bench.run(args.weights, args.random_weights, args.device, args.seconds, args.repeats)
    print(json.dumps(result, indent=2))


def _settings(args):
    from service.settings import Settings

    overrides = {k: v for k, v in (("host", getattr(args, "host", None)), ("port", getattr(args, "port", None)),
                                   ("workers", getattr(args, "workers", None))) if v is not None}
    return Settings(**overrides)


def cmd_serve(args):
    import logging

    import uvicorn

    from service.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = _settings(args)
    # No access log: one line per request costs more than the request at high rates.
    uvicorn.run(create_app(settings, start_workers=True), host=settings.host, port=settings.port,
                log_level="info", access_log=False, timeout_graceful_shutdown=10)


def cmd_worker(args):
    from service.jobs.worker import worker_main

    worker_main(_settings(args).model_dump_json(), worker_id=args.id)


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


def cmd_data(args):
    if args.model == "davs":
        from models.davs import dataset

        if args.basics:
            raise TalkingFaceError("--basics applies to atvgnet; davs aligns faces on a fixed template")
        manifest = dataset.prepare(args.videos, args.out, split=args.split, labels=args.labels,
                                   workers=args.workers, seed=args.seed, progress=not args.quiet)
        print(f"{args.out}: {len(manifest['labels'])} word labels")
    else:
        from models.atvgnet import dataset

        if args.labels:
            raise TalkingFaceError("--labels applies to davs; atvgnet is trained without word labels")
        manifest = dataset.prepare(args.videos, args.out, split=args.split, basics_dir=args.basics,
                                   workers=args.workers, seed=args.seed, progress=not args.quiet)
    statuses = [v["status"] for v in manifest["videos"].values()]
    print(f"{args.out}: {statuses.count('ok')} clips ready, {statuses.count('no_face')} without a face, "
          f"{statuses.count('error')} unreadable (manifest.json lists them)")


def cmd_train(args):
    if args.model == "davs":
        return _train_davs(args)
    from models.atvgnet import train

    if args.stage is None:
        raise TalkingFaceError("train atvgnet needs --stage atnet or --stage vgnet")
    summary = train.train(args.data, args.stage, args.out, max_steps=args.max_steps, time_budget=args.time_budget,
                          batch_size=args.batch_size, lr=args.lr, width=args.width, ngf=args.ngf,
                          n_blocks=args.n_blocks, disc_width=args.disc_width, pixel_warmup=args.pixel_warmup,
                          whole_video=args.whole_video, ema=args.ema, device=args.device,
                          resume=not args.restart, seed=args.seed, progress=not args.quiet)
    print(json.dumps({k: summary[k] for k in ("stage", "step", "stopped", "out_dir") if k in summary}))


# `train davs` options -> TrainConfig fields; None (not given) keeps the authors' value.
DAVS_TRAIN_OPTIONS = ("max_steps", "time_budget", "batch_size", "lr", "image_size", "feature_length",
                      "id_channels", "lip_channels", "mfcc_channels", "decoder_channels", "disc_channels",
                      "sample_every", "checkpoint_every", "device", "seed")


def _train_davs(args):
    from models.davs import train

    if args.stage is not None:
        raise TalkingFaceError("--stage applies to atvgnet; davs trains all its networks together")
    options = {k: getattr(args, k) for k in DAVS_TRAIN_OPTIONS if getattr(args, k, None) is not None}
    summary = train.train(args.data, args.out, resume=not args.restart, progress=not args.quiet,
                          word_labels=not args.no_word_labels, **options)
    print(json.dumps({k: summary[k] for k in ("step", "stopped", "word_terms", "out_dir")}))


def _eval_atvgnet(args):
    """{clip: scores} of AT-net + VG-net on the prepared split."""
    import numpy as np

    from models import registry
    from models.atvgnet import evaluate, train
    from models.weights import weights_dir

    if args.run or args.mode or args.finetune_steps is not None:
        raise TalkingFaceError("--run, --mode and --finetune-steps apply to davs, not atvgnet")
    if args.atnet or args.vgnet:
        if not (args.atnet and args.vgnet):
            raise TalkingFaceError("give both --atnet and --vgnet training folders, or --weights")
        atnet = train.load_trained(args.atnet, "atnet", device=args.device)
        vgnet = train.load_trained(args.vgnet, "vgnet", device=args.device)
        pca = None                                   # the dataset's own PCA, as in training
    else:
        folder = weights_dir(args.weights)
        atnet = registry.load_network("atvgnet", "atnet", folder / "atnet_lstm_18.pth")
        vgnet = registry.load_network("atvgnet", "vgnet", folder / "generator_23.pth")
        pca = (np.load(folder / "mean_lrw1.npy"), np.load(folder / "U_lrw1.npy"))
    device = next(atnet.parameters()).device
    return evaluate.evaluate(atnet, vgnet, args.data, split=args.split, pca=pca, max_clips=args.max_clips,
                             device=device)


def _eval_davs(args):
    """{clip: scores} of DAVS on the prepared split, networks from --weights or --run."""
    from models import registry
    from models.davs import evaluate, train
    from models.davs.pipeline import DAVSPipeline

    if args.atnet or args.vgnet:
        raise TalkingFaceError("--atnet and --vgnet apply to atvgnet; give davs --weights or --run")
    if args.run and args.weights:
        raise TalkingFaceError("give --weights or --run, not both")
    if not (Path(args.data) / "manifest.json").is_file():
        raise TalkingFaceError(f"{args.data} is not a prepared dataset (run `talkingface data prepare "
                               "--model davs`)")
    options = {} if args.finetune_steps is None else {"finetune_steps": args.finetune_steps}
    if args.run:
        # A run folder holds every network it trains; the four of inference are loaded strictly.
        networks = train.load_trained(args.run, device=args.device)
        info = {"weights": train.read_config(args.run).get("name", "training run"), "weights_dir": args.run}
        pipe = DAVSPipeline.with_networks(**networks, device=args.device, info=info, **options)
    else:
        pipe = registry.load("davs", weights=args.weights, device=args.device, **options)
    return evaluate.evaluate(pipe, args.data, split=args.split, mode=args.mode or "audio",
                             finetune_steps=args.finetune_steps, max_clips=args.max_clips)


def cmd_eval(args):
    import math

    from models import metrics

    results = _eval_davs(args) if args.model == "davs" else _eval_atvgnet(args)
    if not results:
        raise TalkingFaceError(f"no prepared clips in the {args.split} split of {args.data}")
    print(metrics.format_table(results, add_mean=True))
    if args.json:
        clean = {clip: {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
                 for clip, row in results.items()}
        with open(args.json, "w") as f:
            json.dump(clean, f, indent=2)


def cmd_weights(args):
    out = args.out or str(Path(__file__).resolve().parent.parent / "weights" / "demo" / args.model)
    if args.model == "davs":
        from models.davs import demo

        report = demo.build_demo(out, work_dir=args.work, train_seconds=args.minutes * 60, seed=args.seed,
                                 progress=not args.quiet)
    else:
        from models.atvgnet import demo

        report = demo.build_demo(out, work_dir=args.work, atnet_seconds=args.atnet_minutes * 60,
                                 vgnet_seconds=args.vgnet_minutes * 60, seed=args.seed, progress=not args.quiet)
    print(json.dumps(report, indent=2))


def build_parser():
    parser = argparse.ArgumentParser(prog="talkingface", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="make a talking-face MP4 from a photo and a voice clip (or a video)")
    gen.add_argument("--model", default="atvgnet", help="atvgnet (default) or davs")
    gen.add_argument("--image", required=True, help="face photo (JPEG, PNG, WebP, BMP)")
    driver = gen.add_mutually_exclusive_group(required=True)
    driver.add_argument("--audio", help="voice clip (WAV, MP3, AAC, FLAC, OGG, or a video's sound)")
    driver.add_argument("--video", help="driving video (MP4, MOV, MKV, WebM, AVI): davs follows its lips "
                                        "and keeps its sound; atvgnet uses its sound")
    gen.add_argument("-o", "--output", required=True, help="MP4 file to write")
    gen.add_argument("--finetune-steps", type=int, metavar="N",
                     help="davs: test-time fine-tuning steps on the photo (default 5, the authors'; 0: off)")
    gen.add_argument("--weights", help="weights folder (default $TALKINGFACE_WEIGHTS_DIR or ./weights)")
    gen.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    gen.add_argument("--paste-back", action="store_true", help="put the face back into the full photo")
    gen.add_argument("--face-index", type=int, default=0, help="which face, 0 = largest")
    gen.add_argument("--fp16", action="store_true", help="half-precision autocast on CUDA")
    gen.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=cmd_generate)

    mod = sub.add_parser("models", help="list models and whether their weight files are found")
    mod.add_argument("--weights", help="weights folder (default $TALKINGFACE_WEIGHTS_DIR or ./weights)")
    mod.set_defaults(func=cmd_models)

    ben = sub.add_parser("bench", help="measure speed and memory; prints JSON")
    ben.add_argument("target", choices=["atvgnet", "davs", "api"], help="a model, or the HTTP service")
    ben.add_argument("--weights", help="weights folder (its arrays are used even with --random-weights)")
    ben.add_argument("--random-weights", action="store_true",
                     help="random-initialised networks (speed does not depend on the weights)")
    ben.add_argument("--device", default="auto")
    ben.add_argument("--seconds", type=float, help="clip length for the end-to-end run (default 10; davs 2)")
    ben.add_argument("--mode", choices=["audio", "video", "both"], default="both",
                     help="davs: what drives the lips in the end-to-end runs")
    ben.add_argument("--repeats", type=int, default=3)
    ben.add_argument("--memory", nargs="*", type=float, metavar="SECONDS",
                     help="instead: peak RSS of end-to-end runs on clips of these lengths (default 10 600)")
    ben.add_argument("--clients", type=int, default=50, help="api: concurrent clients")
    ben.add_argument("--requests", type=int, default=20, help="api: submissions per client (without wrk)")
    ben.add_argument("--rate", type=float, default=100.0, help="api: jobs/s all clients offer in the open loop")
    ben.add_argument("--jobs", type=int, default=10, help="api: jobs timed from last frame to MP4 available")
    ben.set_defaults(func=cmd_bench)

    srv = sub.add_parser("serve", help="run the HTTP API with embedded workers (settings: TALKINGFACE_* env)")
    srv.add_argument("--host")
    srv.add_argument("--port", type=int)
    srv.add_argument("--workers", type=int, help="worker processes to start (0: none, use `talkingface worker`)")
    srv.set_defaults(func=cmd_serve)

    wrk = sub.add_parser("worker", help="run one worker against the job store of the same settings")
    wrk.add_argument("--id", help="worker id (default: a new one)")
    wrk.set_defaults(func=cmd_worker)

    job = sub.add_parser("jobs", help="list, show or cancel jobs in the job store")
    job.add_argument("action", choices=["list", "show", "cancel"])
    job.add_argument("id", nargs="?")
    job.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "canceled"])
    job.add_argument("--limit", type=int, default=20)
    job.set_defaults(func=cmd_jobs)

    data = sub.add_parser("data", help="prepare training data from talking-head videos")
    data.add_argument("action", choices=["prepare"])
    data.add_argument("--model", default="atvgnet", choices=["atvgnet", "davs"], help="whose data format")
    data.add_argument("--videos", required=True, help="folder of videos (any container ffmpeg reads)")
    data.add_argument("--out", required=True, help="dataset folder to write (resumable)")
    data.add_argument("--split", type=float, default=0.9, help="fraction of videos for training")
    data.add_argument("--basics", help="folder with the authors' normalisation arrays (default: weights folder)")
    data.add_argument("--labels", help="davs word labels: 'folder' (the first folder under --videos, as LRW's "
                                       "word folders) or a CSV/JSON file mapping videos to labels")
    data.add_argument("--workers", type=int, help="parallel videos (default: up to 4)")
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("-q", "--quiet", action="store_true")
    data.set_defaults(func=cmd_data)

    trn = sub.add_parser("train", help="train a model on a prepared dataset")
    trn.add_argument("model", choices=["atvgnet", "davs"])
    trn.add_argument("--data", required=True)
    trn.add_argument("--stage", choices=["atnet", "vgnet"], help="atvgnet: which network to train")
    trn.add_argument("--out", required=True, help="run folder: checkpoints, config.json, log.csv, samples/")
    trn.add_argument("--max-steps", type=int)
    trn.add_argument("--time-budget", type=float, help="seconds; stops cleanly with a checkpoint")
    trn.add_argument("--batch-size", type=int)
    trn.add_argument("--lr", type=float, default=2e-4)
    trn.add_argument("--width", type=int, default=64, help="AT-net channel scale (64 = published)")
    trn.add_argument("--ngf", type=int, default=64, help="VG-net channel scale (64 = published)")
    trn.add_argument("--n-blocks", type=int, default=9, help="VG-net residual blocks (9 = published)")
    trn.add_argument("--disc-width", type=int, default=64, help="VG-net discriminator channel scale (64 = published)")
    trn.add_argument("--pixel-warmup", type=int, default=0,
                     help="VG-net: first steps on the pixel loss alone, without the discriminator (not in the paper)")
    trn.add_argument("--whole-video", action="store_true",
                     help="AT-net: draw the example frame from the whole clip, not frames 3-7")
    trn.add_argument("--ema", type=float, help="keep a moving average of the weights, e.g. 0.999")
    davs = trn.add_argument_group("davs (defaults: the authors' sizes)")
    davs.add_argument("--image-size", type=int, help="network input side: 256 (published), 192 or 128")
    davs.add_argument("--feature-length", type=int, help="person-ID and word-ID length (256)")
    davs.add_argument("--id-channels", type=int, help="identity encoder width (32)")
    davs.add_argument("--lip-channels", type=int, help="lip encoder (FAN) width (64)")
    davs.add_argument("--mfcc-channels", type=int, help="audio encoder width (64)")
    davs.add_argument("--decoder-channels", type=int, help="decoder width (64)")
    davs.add_argument("--disc-channels", type=int, help="sequence discriminator width (64)")
    davs.add_argument("--no-word-labels", action="store_true", help="train without the word classifiers")
    davs.add_argument("--sample-every", type=int, help="steps between sample images (500)")
    davs.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (1000)")
    trn.add_argument("--device", default="auto")
    trn.add_argument("--seed", type=int, default=0)
    trn.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in --out")
    trn.add_argument("-q", "--quiet", action="store_true")
    trn.set_defaults(func=cmd_train)

    evl = sub.add_parser("eval", help="PSNR, SSIM, LMD, CPBD and lip-sync proxy on a prepared split")
    evl.add_argument("--model", default="atvgnet", choices=["atvgnet", "davs"])
    evl.add_argument("--data", required=True)
    evl.add_argument("--split", default="test", choices=["train", "test"])
    evl.add_argument("--weights", help="the authors' weights folder, or for davs a project weights folder "
                                       "(default $TALKINGFACE_WEIGHTS_DIR or ./weights)")
    evl.add_argument("--atnet", help="an AT-net training folder (instead of --weights)")
    evl.add_argument("--vgnet", help="a VG-net training folder (instead of --weights)")
    evl.add_argument("--run", help="davs: a training run folder (instead of --weights)")
    evl.add_argument("--mode", choices=["audio", "video"],
                     help="davs: lips from the clip's audio (default) or from its own frames")
    evl.add_argument("--finetune-steps", type=int, help="davs: test-time fine-tuning steps (default 5, the authors')")
    evl.add_argument("--max-clips", type=int)
    evl.add_argument("--device", default="cpu")
    evl.add_argument("--json", help="also write the per-clip results here")
    evl.set_defaults(func=cmd_eval)

    wts = sub.add_parser("weights", help="build the demo weights from generated data")
    wts.add_argument("action", choices=["build-demo"])
    wts.add_argument("--model", default="atvgnet", choices=["atvgnet", "davs"])
    wts.add_argument("--out", help="weights folder to write (default weights/demo/<model>)")
    wts.add_argument("--work", help="folder for the generated clips, dataset and runs (default: a temporary one)")
    wts.add_argument("--atnet-minutes", type=float, default=4.0)
    wts.add_argument("--vgnet-minutes", type=float, default=26.0)
    wts.add_argument("--minutes", type=float, default=25.0, help="davs: training minutes")
    wts.add_argument("--seed", type=int, default=0)
    wts.add_argument("-q", "--quiet", action="store_true")
    wts.set_defaults(func=cmd_weights)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except TalkingFaceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
