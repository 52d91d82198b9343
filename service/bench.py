"""``talkingface bench``: speed and memory of a model, printed as JSON.

    talkingface bench atvgnet                       # networks alone, then end to end (10 s clip)
    talkingface bench atvgnet --memory 10 600       # peak RSS for a 10-s and a 10-min clip
    talkingface bench davs --random-weights         # networks, then end to end (2 s, audio and video)

Speed does not depend on the weights, so ``--random-weights`` measures without the
authors' checkpoints (ATVGnet's pre-processing arrays are still read from ``--weights``).
Each memory run is a fresh subprocess, so one run's peak cannot hide another's.

DAVS end to end is measured three ways per mode: this project's pipeline with and
without test-time fine-tuning, and the authors' flow (``Test_Gen_Models``: person-ID
features recomputed for every frame, one frame per network call) without it.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

EXAMPLE_IMAGE = Path(__file__).resolve().parent.parent / "examples" / "face.jpg"


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, repeats):
    fn()  # warm-up: allocator, kernels, caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def build_pipeline(weights, random_weights, device):
    from models import registry
    from models.atvgnet.networks import ATNet, VGNet
    from models.atvgnet.pipeline import ATVGnetPipeline
    from models.weights import weights_dir

    if random_weights:
        torch.manual_seed(0)
        return ATVGnetPipeline.with_networks(ATNet(), VGNet(), weights_dir(weights), device=device,
                                             info={"weights": "random"})
    return registry.load("atvgnet", weights=weights, device=device)


def speech_like(seconds, sample_rate=16000, seed=0):
    """Amplitude-modulated noise with a syllable rhythm: a stand-in voice of any length."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.3 * envelope * rng.standard_normal(len(t))).astype(np.float32)


def end_to_end(pipe, image, seconds, output):
    """Photo + clip -> MP4 on disk, streaming; returns (wall seconds, frames)."""
    from models import TalkingFaceInput
    from service import media

    audio = speech_like(seconds)
    start = time.perf_counter()
    inputs = TalkingFaceInput(image=image, audio=audio, sample_rate=16000)
    with media.Mp4Writer(output, fps=pipe.fps, audio=audio, sample_rate=16000) as writer:
        for chunk in pipe.frame_chunks(inputs):
            writer.write(chunk)
    return time.perf_counter() - start, writer.frames_written


def network_speed(pipe, repeats):
    """Frames per second of AT-net and VG-net alone, at 1 and 16 frames per call."""
    result = {}
    dev = pipe.device
    for frames in (1, 16):
        example6 = torch.randn(1, 6, device=dev)
        audio = torch.randn(1, frames, 28, 12, device=dev)
        image = torch.rand(1, 3, 128, 128, device=dev) * 2 - 1
        landmarks = torch.randn(1, frames, 136, device=dev) * 0.1
        example = torch.randn(1, 136, device=dev) * 0.1
        with torch.inference_mode():
            t_at = _timed(lambda: pipe.atnet(example6, audio), repeats)
            t_vg = _timed(lambda: pipe.vgnet(image, landmarks, example), repeats)
        result[f"atnet_fps_batch{frames}"] = round(frames / t_at, 2)
        result[f"vgnet_fps_batch{frames}"] = round(frames / t_vg, 2)
        if dev.type == "cuda":
            with torch.inference_mode(), torch.autocast("cuda"):
                half = pipe.vgnet(image, landmarks, example)[0].float()
            with torch.inference_mode():
                full = pipe.vgnet(image, landmarks, example)[0]
            result[f"vgnet_fp16_max_abs_diff_batch{frames}"] = float((half - full).abs().max())
    return result


def run(args):
    from service import media

    if args.target == "davs":
        return run_davs(args)
    if args.memory is not None:
        return memory(args)
    args.seconds = args.seconds or 10.0
    pipe = build_pipeline(args.weights, args.random_weights, args.device)
    image = media.read_image(EXAMPLE_IMAGE)
    result = {"model": "atvgnet", "weights": pipe.info.get("weights"), "device": str(pipe.device),
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    result.update(network_speed(pipe, args.repeats))
    with tempfile.TemporaryDirectory() as tmp:
        wall, frames = end_to_end(pipe, image, args.seconds, os.path.join(tmp, "bench.mp4"))
    result.update({"clip_seconds": args.seconds, "frames": frames, "end_to_end_seconds": round(wall, 2),
                   "real_time_factor": round(wall / args.seconds, 3), "peak_rss_mib": round(peak_rss_mib(), 1)})
    return result


def memory(args):
    """Peak RSS of a fresh process per clip length; the ratio to the shortest."""
    lengths = args.memory or [10.0, 600.0]
    runs = []
    for seconds in lengths:
        command = [sys.executable, "-m", "service.bench", "--one", str(seconds), args.device,
                   args.weights or "", "1" if args.random_weights else "0"]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    base = runs[0]["peak_rss_mib"]
    for r in runs:
        r["ratio_to_first"] = round(r["peak_rss_mib"] / base, 3)
    return {"model": "atvgnet", "runs": runs}


def _one(seconds, device, weights, random_weights):
    from service import media

    pipe = build_pipeline(weights or None, random_weights == "1", device)
    image = media.read_image(EXAMPLE_IMAGE)
    with tempfile.TemporaryDirectory() as tmp:
        wall, frames = end_to_end(pipe, image, float(seconds), os.path.join(tmp, "bench.mp4"))
    print(json.dumps({"clip_seconds": float(seconds), "frames": frames, "wall_seconds": round(wall, 1),
                      "peak_rss_mib": round(peak_rss_mib(), 1)}))


# ---------------------------------------------------------------------------- DAVS

DAVS_SECONDS = 2.0


def build_davs_pipeline(weights, random_weights, device):
    from models import registry
    from models.davs.networks import Decoder, IdentityEncoder, LipFeatureEncoder, MfccEncoder
    from models.davs.pipeline import DAVSPipeline

    if random_weights:
        torch.manual_seed(0)
        return DAVSPipeline.with_networks(IdentityEncoder(), Decoder(), MfccEncoder(), LipFeatureEncoder(),
                                          device=device, info={"weights": "random"})
    return registry.load("davs", weights=weights, device=device)


def davs_network_speed(pipe, repeats):
    """Frames per second of each network alone, one frame per call and ``chunk_frames`` per call,
    and the seconds of one fine-tuning step."""
    dev, n = pipe.device, pipe.chunk_frames
    image = torch.rand(1, 3, 256, 256, device=dev)
    with torch.inference_mode():
        features = pipe.id_encoder(image)
    length = features[0].shape[1]
    result = {"chunk_frames": n}
    for batch in (1, n):
        faces = torch.rand(batch, 3, 256, 256, device=dev)
        mfcc = torch.randn(batch, 1, 20, 12, device=dev)
        words = torch.randn(batch, length, device=dev)
        expanded = [f.expand(batch, *f.shape[1:]) for f in features]
        with torch.inference_mode():
            timings = {
                "id_encoder": _timed(lambda: pipe.id_encoder(faces), repeats),
                "mfcc_encoder": _timed(lambda: pipe.mfcc_encoder(mfcc), repeats),
                "lip_feature_encoder": _timed(lambda: pipe.lip_feature_encoder(faces), repeats),
                "decoder": _timed(lambda: pipe.decoder(expanded, words), repeats),
            }
        for name, seconds in timings.items():
            result[f"{name}_fps_batch{batch}"] = round(batch / seconds, 2)
    reference = types.SimpleNamespace(image=image)
    words = torch.randn(1, length, device=dev)
    result["finetune_step_seconds"] = round(_timed(lambda: pipe.finetune(reference, words, 1), 1), 3)
    return result


def authors_frame_by_frame(pipe, inputs):
    """The authors' test flow, for comparison: for every frame E_p(A), the word feature and
    the decoder, each at batch 1 (``Test_Gen_Models/*.test``). No fine-tuning. Yields uint8 frames."""
    from models.davs import audio as davs_audio
    from models.davs import preprocess
    from models.davs.pipeline import AUDIO_WORD_SCALE, VIDEO_WORD_SCALE

    reference = pipe.prepare_reference(inputs.image, inputs.face_index)
    if inputs.video is not None:
        sources = ((pipe.lip_feature_encoder, preprocess.face_tensor(face), VIDEO_WORD_SCALE)
                   for faces in pipe.aligned_video(inputs.video) for face in faces)
    else:
        audio = pipe.prepare_audio(inputs.audio, inputs.sample_rate)
        mfcc = davs_audio.syncnet_mfcc(audio)
        total = davs_audio.video_frame_count(len(audio))
        blocks = (torch.from_numpy(davs_audio.frame_blocks(mfcc, i, i + 1, pad=True)) for i in range(total))
        sources = ((pipe.mfcc_encoder, block, AUDIO_WORD_SCALE) for block in blocks)
    with torch.inference_mode():
        for encoder, data, scale in sources:
            identity = pipe.id_encoder(reference.image)
            word = encoder(data[None].to(pipe.device))[:, 0]
            yield preprocess.tensor_to_images(pipe.decoder(identity, word * scale))


def _driving_video(image, seconds, path):
    """A driving video of the example photo drifting a few pixels, written as an MP4."""
    import cv2

    from service import media

    with media.Mp4Writer(path, fps=25) as writer:
        for i in range(int(seconds * 25)):
            shift = np.float32([[1, 0, 3 * np.sin(i / 5)], [0, 1, 2 * np.cos(i / 7)]])
            writer.write(cv2.warpAffine(image, shift, image.shape[1::-1], borderMode=cv2.BORDER_REFLECT))
    return path


def davs_end_to_end(pipe, image, seconds, mode, tmp, flow="ours", finetune_steps=None):
    """Photo + clip (audio) or photo + MP4 (video) -> MP4 on disk; (wall seconds, frames)."""
    from models import TalkingFaceInput
    from service import media

    start = time.perf_counter()
    if mode == "video":
        path = os.path.join(tmp, "driving.mp4")
        video = media.read_video(path)
        audio, inputs = None, TalkingFaceInput(image=image, audio=None, sample_rate=16000, video=video)
    else:
        audio = speech_like(seconds)
        inputs = TalkingFaceInput(image=image, audio=audio, sample_rate=16000)
    if flow == "ours":
        chunks = pipe.frame_chunks(inputs, finetune_steps=finetune_steps)
    else:
        chunks = authors_frame_by_frame(pipe, inputs)
    with media.Mp4Writer(os.path.join(tmp, f"{mode}-{flow}.mp4"), fps=pipe.fps, audio=audio,
                         sample_rate=16000) as writer:
        for chunk in chunks:
            writer.write(chunk)
    return time.perf_counter() - start, writer.frames_written


def run_davs(args):
    from models.errors import TalkingFaceError
    from service import media

    if args.memory is not None:
        raise TalkingFaceError("--memory measures atvgnet; davs streams the same way (talkingface bench atvgnet)")
    seconds = args.seconds or DAVS_SECONDS
    pipe = build_davs_pipeline(args.weights, args.random_weights, args.device)
    image = media.read_image(EXAMPLE_IMAGE)
    result = {"model": "davs", "weights": pipe.info.get("weights"), "device": str(pipe.device),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "clip_seconds": seconds}
    result["networks"] = davs_network_speed(pipe, args.repeats)
    modes = ("audio", "video") if args.mode == "both" else (args.mode,)
    runs = (("ours", None), ("ours_no_finetune", 0), ("authors_per_frame_no_finetune", 0))
    with tempfile.TemporaryDirectory() as tmp:
        if "video" in modes:
            _driving_video(image, seconds, os.path.join(tmp, "driving.mp4"))
        for mode in modes:
            measured = {}
            for name, steps in runs:
                flow = "authors" if name.startswith("authors") else "ours"
                wall, frames = davs_end_to_end(pipe, image, seconds, mode, tmp, flow, steps)
                measured[name] = {"seconds": round(wall, 2), "frames": frames, "fps": round(frames / wall, 3)}
            measured["speedup_vs_authors"] = round(measured["ours_no_finetune"]["fps"]
                                                   / measured["authors_per_frame_no_finetune"]["fps"], 2)
            measured["finetune_seconds"] = round(measured["ours"]["seconds"]
                                                 - measured["ours_no_finetune"]["seconds"], 2)
            result[f"end_to_end_{mode}"] = measured
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return result


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        _one(*sys.argv[2:6])
