"""What the model benchmarks share: timing, peak memory, a stand-in voice, streaming to MP4.

    talkingface bench MODEL            # models/<system>/bench.py: run, printed as JSON

Each system's ``bench.py`` times its networks alone and its pipeline end to end, and
returns the numbers as a dict; the command line prints it. Speed does not depend on the
weights, so every system can be measured with random networks (``load_pipeline``).
"""

from __future__ import annotations

import resource
import time

import numpy as np
import torch

from models.common.demo import EXAMPLE_IMAGE
from models.perception.image import read_image
from models.perception.mp4 import Mp4Writer

__all__ = ["EXAMPLE_IMAGE", "bench_precisions", "example_photo", "header", "load_pipeline", "peak_rss_mib",
           "precision_quality", "speech_like", "timed", "write_chunks"]


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeats: int) -> float:
    """The best of ``repeats`` wall-clock seconds of ``fn()``, after one warm-up call.

    The warm-up pays for the allocator, kernel selection and caches once; CUDA work is
    waited for, so the time is the work's and not its launch's.
    """
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def speech_like(seconds: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated noise with a syllable rhythm: a stand-in voice of any length."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.3 * envelope * rng.standard_normal(len(t))).astype(np.float32)


def example_photo() -> np.ndarray:
    """The bundled example photo, uint8 RGB."""
    return read_image(EXAMPLE_IMAGE)


def load_pipeline(model: str, weights, random_weights: bool, device, random_pipeline, precision=None):
    """The pipeline to measure: ``model``'s with the weights the registry picks, or with random networks.

    Args:
        model: the registry name.
        weights: a weights folder, or None for the registry's choice.
        random_weights: build ``random_pipeline(weights, device)`` instead, after seeding
            torch, so that two runs measure the same networks.
        device: "cpu", "cuda", ... or "auto".
        random_pipeline: the system's pipeline built around freshly initialised networks.
        precision: "fp32", "int8" or "auto" for a model with an int8 path
            (``random_pipeline(weights, device, precision)``); None: the model's default.
    """
    extra = {} if precision is None else {"precision": precision}
    if random_weights:
        torch.manual_seed(0)
        return random_pipeline(weights, device, **extra)
    from models import registry

    return registry.load(model, weights=weights, device=device, **extra)


def bench_precisions(precision: str) -> tuple[str, ...]:
    """The precisions a ``--precision`` value measures: "both" is fp32 and int8 side by side."""
    from models.common.quantize import check_precision

    return ("fp32", "int8") if precision == "both" else (check_precision(precision),)


def precision_quality(build, frames_of) -> dict:
    """How far the int8 path is from fp32 on the bundled example (photo + voice).

    Args:
        build: ``precision -> pipeline``.
        frames_of: ``(pipeline, TalkingFaceInput) -> uint8 frames (T, H, W, 3)``.

    Returns:
        ``psnr_int8_vs_fp32_db`` over the whole clip, the lip-sync proxy
        (``models.metrics.lip_sync_proxy``) of each precision and their difference, and
        the example's frame count.
    """
    from models import TalkingFaceInput, metrics
    from models.common.quantize import calibration_example

    photo, voice = calibration_example()
    inputs = TalkingFaceInput(image=photo, audio=voice, sample_rate=16000)
    frames = {precision: frames_of(build(precision), inputs) for precision in ("fp32", "int8")}
    sync = {precision: metrics.lip_sync_proxy(f, voice, 16000) for precision, f in frames.items()}
    return {"example_frames": len(frames["fp32"]),
            "psnr_int8_vs_fp32_db": round(metrics.psnr(frames["fp32"], frames["int8"]), 2),
            "lip_sync_fp32": round(sync["fp32"], 4), "lip_sync_int8": round(sync["int8"], 4),
            "lip_sync_abs_diff": round(abs(sync["fp32"] - sync["int8"]), 4)}


def header(pipe) -> dict:
    """What every result starts with: the model, its weights, the device, threads and torch."""
    return {"model": pipe.name, "weights": pipe.info.get("weights"), "device": str(pipe.device),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def cpu_model() -> str:
    """The CPU's model name and whether it has int8 dot-product instructions (what int8's speed depends on)."""
    from models.common.quantize import int8_pays

    name = "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            name = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {torch.backends.cpu.get_cpu_capability()}{', VNNI' if int8_pays() else ', no VNNI'}"


def write_chunks(chunks, output, fps: float, audio: np.ndarray | None = None, sample_rate: int = 16000) -> int:
    """Stream uint8 frame chunks into the MP4 ``output``, as the service does; returns the frames written."""
    with Mp4Writer(output, fps=fps, audio=audio, sample_rate=sample_rate) as writer:
        for chunk in chunks:
            writer.write(chunk)
    return writer.frames_written
