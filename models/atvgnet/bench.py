"""``talkingface bench atvgnet``: speed and memory of ATVGnet, returned as a dict.

    talkingface bench atvgnet                       # networks alone, then end to end (10 s clip)
    talkingface bench atvgnet --precision both      # fp32 and int8 side by side, int8's quality
    talkingface bench atvgnet --memory 10 600       # peak RSS for a 10-s and a 10-min clip

Speed does not depend on the weights, so ``random_weights`` measures without the authors'
checkpoints (the pre-processing arrays are still read from ``weights``). Each memory run
is a fresh subprocess (``python -m models.atvgnet.bench --one ...``), so one run's peak
cannot hide another's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial

import torch

from models.common import bench

SECONDS = 10.0          # clip length of the end-to-end run
MEMORY_SECONDS = (10.0, 600.0)


def random_pipeline(weights, device, precision="fp32"):
    """ATVGnet with freshly initialised AT-net and VG-net and the arrays of ``weights``."""
    from models.atvgnet.networks import ATNet, VGNet
    from models.atvgnet.pipeline import ATVGnetPipeline
    from models.weights import weights_dir

    return ATVGnetPipeline.with_networks(ATNet(), VGNet(), weights_dir(weights), device=device,
                                         info={"weights": "random"}, precision=precision)


def random_weights_folder(folder, arrays):
    """A weights folder for the service: AT-net and VG-net at the published size with random
    weights, saved as the authors' checkpoints, beside the authors' arrays (their folder ``arrays``)."""
    import shutil
    from pathlib import Path

    import torch

    from models.atvgnet.networks import ATNet, VGNet
    from models.weights import weights_dir

    folder, source = Path(folder), weights_dir(arrays)
    found = list(source.glob("*.npy"))
    if not any(p.name == "U_lrw1.npy" for p in found):
        raise RuntimeError(f"--random-weights needs the authors' arrays (U_lrw1.npy, ...) in {source}; "
                           "give their folder with --weights")
    for array in found:
        shutil.copy(array, folder / array.name)
    torch.save(ATNet().state_dict(), folder / "atnet_lstm_18.pth")
    torch.save(VGNet().state_dict(), folder / "generator_23.pth")
    return folder


def build_pipeline(weights, random_weights, device, precision=None):
    """The pipeline to measure (``models.common.bench.load_pipeline``)."""
    return bench.load_pipeline("atvgnet", weights, random_weights, device, random_pipeline, precision)


def example_frames(pipe, inputs):
    """All frames of ``inputs`` as one uint8 array (the quality comparison's clip)."""
    import numpy as np

    return np.concatenate(list(pipe.frame_chunks(inputs)))


def end_to_end(pipe, image, seconds, output):
    """Photo + clip -> MP4 on disk, streaming; returns (wall seconds, frames)."""
    from models import TalkingFaceInput

    audio = bench.speech_like(seconds)
    start = time.perf_counter()
    inputs = TalkingFaceInput(image=image, audio=audio, sample_rate=16000)
    frames = bench.write_chunks(pipe.frame_chunks(inputs), output, pipe.fps, audio=audio)
    return time.perf_counter() - start, frames


def network_speed(pipe, repeats):
    """Frames per second of AT-net and VG-net alone, at 1 and 16 frames per call.

    On CUDA it also says how far VG-net's fp16 autocast output is from fp32.
    """
    result = {}
    dev = pipe.device
    for frames in (1, 16):
        example6 = torch.randn(1, 6, device=dev)
        audio = torch.randn(1, frames, 28, 12, device=dev)
        image = torch.rand(1, 3, 128, 128, device=dev) * 2 - 1
        landmarks = torch.randn(1, frames, 136, device=dev) * 0.1
        example = torch.randn(1, 136, device=dev) * 0.1
        with torch.inference_mode():
            t_at = bench.timed(partial(pipe.atnet, example6, audio), repeats)
            t_vg = bench.timed(partial(pipe.vgnet, image, landmarks, example), repeats)
        result[f"atnet_fps_batch{frames}"] = round(frames / t_at, 2)
        result[f"vgnet_fps_batch{frames}"] = round(frames / t_vg, 2)
        if dev.type == "cuda":
            with torch.inference_mode(), torch.autocast("cuda"):
                half = pipe.vgnet(image, landmarks, example)[0].float()
            with torch.inference_mode():
                full = pipe.vgnet(image, landmarks, example)[0]
            result[f"vgnet_fp16_max_abs_diff_batch{frames}"] = float((half - full).abs().max())
    return result


def run(weights=None, random_weights=False, device="auto", seconds=None, repeats=3, precision="fp32") -> dict:
    """Networks alone, then photo + ``seconds`` of voice -> MP4 (default ``SECONDS``), per precision.

    Args:
        precision: "fp32", "int8", "auto", or "both" (fp32 and int8 side by side, then
            the int8 path's distance from fp32 on the bundled example).

    Returns:
        The header (``models.common.bench.header``) and the CPU; the seconds to load (int8:
        with calibration), frames per second of each network, the clip's frames, wall
        seconds, frames per second and real-time factor, at the top level for one
        precision, under ``fp32`` and ``int8`` for both, then ``int8_speedup`` (end-to-end
        frames per second, int8 over fp32) and ``quality``
        (``models.common.bench.precision_quality``); then the peak RSS.
    """
    seconds = seconds or SECONDS
    image = bench.example_photo()
    result, pipes = {}, {}
    for each in bench.bench_precisions(precision):
        start = time.perf_counter()
        pipe = pipes[each] = build_pipeline(weights, random_weights, device, each)
        load_seconds = time.perf_counter() - start
        if not result:
            result = dict(bench.header(pipe), cpu=bench.cpu_model(), clip_seconds=seconds)
        measured = {"precision": pipe.precision, "load_seconds": round(load_seconds, 2)}
        measured.update(network_speed(pipe, repeats))
        pipe.prepare_reference(image)     # one-time loads (the landmark model) before timing, as a worker has them
        with tempfile.TemporaryDirectory() as tmp:
            wall, frames = end_to_end(pipe, image, seconds, os.path.join(tmp, "bench.mp4"))
        measured.update({"frames": frames, "end_to_end_seconds": round(wall, 2), "fps": round(frames / wall, 2),
                         "real_time_factor": round(wall / seconds, 3)})
        result[each] = measured
    if len(pipes) == 2:
        result["int8_speedup"] = round(result["int8"]["fps"] / result["fp32"]["fps"], 3)
        result["quality"] = bench.precision_quality(pipes.__getitem__, example_frames)
    else:
        result.update(result.pop(next(iter(pipes))))      # one precision: its numbers at the top level
    result["peak_rss_mib"] = round(bench.peak_rss_mib(), 1)
    return result


def memory(lengths=None, weights=None, random_weights=False, device="auto") -> dict:
    """Peak RSS of a fresh process per clip length (default ``MEMORY_SECONDS``); the ratio to the first.

    Streaming keeps memory flat: a 10-minute clip should need about what a 10-second one does.
    """
    lengths = lengths or list(MEMORY_SECONDS)
    runs = []
    for seconds in lengths:
        command = [sys.executable, "-m", "models.atvgnet.bench", "--one", str(seconds), device, weights or "",
                   "1" if random_weights else "0"]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    base = runs[0]["peak_rss_mib"]
    for r in runs:
        r["ratio_to_first"] = round(r["peak_rss_mib"] / base, 3)
    return {"model": "atvgnet", "runs": runs}


def one_run(seconds, device, weights, random_weights) -> dict:
    """One end-to-end run of ``seconds`` and this process's peak RSS (a ``memory`` subprocess)."""
    pipe = build_pipeline(weights or None, random_weights, device)
    image = bench.example_photo()
    with tempfile.TemporaryDirectory() as tmp:
        wall, frames = end_to_end(pipe, image, float(seconds), os.path.join(tmp, "bench.mp4"))
    return {"clip_seconds": float(seconds), "frames": frames, "wall_seconds": round(wall, 1),
            "peak_rss_mib": round(bench.peak_rss_mib(), 1)}


if __name__ == "__main__":
    # `memory`'s subprocess: one JSON line on stdout.
    if sys.argv[1] == "--one":
        seconds, device, weights, random_weights = sys.argv[2:6]
        sys.stdout.write(json.dumps(one_run(seconds, device, weights, random_weights == "1")) + "\n")
