"""``talkingface bench``: speed and memory of a model, printed as JSON.

    talkingface bench atvgnet                       # networks alone, then end to end (10 s clip)
    talkingface bench atvgnet --memory 10 600       # peak RSS for a 10-s and a 10-min clip

Speed does not depend on the weights, so ``--random-weights`` measures without the
authors' checkpoints (the pre-processing arrays are still read from ``--weights``).
Each memory run is a fresh subprocess, so one run's peak cannot hide another's.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
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

    if args.memory is not None:
        return memory(args)
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


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        _one(*sys.argv[2:6])
