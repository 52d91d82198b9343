"""``talkingface bench davs``: speed of DAVS's networks and pipeline, returned as a dict.

    talkingface bench davs --random-weights         # networks, then end to end (2 s, audio and video)
    talkingface bench davs --precision both         # fp32 and int8 side by side, int8's quality

End to end is measured three ways per mode (lips from the audio, or from a driving
video): this project's pipeline with and without test-time fine-tuning, and the authors'
flow (``Test_Gen_Models``: person-ID features recomputed for every frame, one frame per
network call) without it, in fp32 as their code runs. With ``precision="both"`` this
project's flows run at fp32 and at int8, and the int8 frames are compared with the fp32
ones on the bundled example.
"""

from __future__ import annotations

import os
import tempfile
import time
import types
from functools import partial

import numpy as np
import torch

from models.common import bench

SECONDS = 2.0           # clip length of the end-to-end runs
FLOWS = (("ours", None), ("ours_no_finetune", 0), ("authors_per_frame_no_finetune", 0))   # name, fine-tuning steps


def random_pipeline(weights, device, precision="fp32"):
    """DAVS with its four inference networks freshly initialised at the published sizes."""
    from models.davs.networks import Decoder, IdentityEncoder, LipFeatureEncoder, MfccEncoder
    from models.davs.pipeline import DAVSPipeline

    return DAVSPipeline.with_networks(IdentityEncoder(), Decoder(), MfccEncoder(), LipFeatureEncoder(),
                                      device=device, info={"weights": "random"}, precision=precision)


def random_weights_folder(folder, arrays=None):
    """A weights folder for the service: DAVS's four inference networks at the published sizes
    with random weights, as a project folder (``arrays`` unused: DAVS needs none)."""
    import torch

    from models.common.pipeline import save_project
    from models.davs.pipeline import NETWORKS

    torch.manual_seed(0)
    networks = {name: network_class() for name, (network_class, _) in NETWORKS.items()}
    return save_project(folder, "davs", networks, name="random (published size)")


def build_pipeline(weights, random_weights, device, precision=None):
    """The pipeline to measure (``models.common.bench.load_pipeline``)."""
    return bench.load_pipeline("davs", weights, random_weights, device, random_pipeline, precision)


def example_frames(pipe, inputs):
    """All frames of ``inputs`` without fine-tuning, as one uint8 array (the quality comparison's clip)."""
    return np.concatenate(list(pipe.frame_chunks(inputs, finetune_steps=0)))


def network_speed(pipe, repeats):
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
                "id_encoder": bench.timed(partial(pipe.id_encoder, faces), repeats),
                "mfcc_encoder": bench.timed(partial(pipe.mfcc_encoder, mfcc), repeats),
                "lip_feature_encoder": bench.timed(partial(pipe.lip_feature_encoder, faces), repeats),
                "decoder": bench.timed(partial(pipe.decoder, expanded, words), repeats),
            }
        for name, seconds in timings.items():
            result[f"{name}_fps_batch{batch}"] = round(batch / seconds, 2)
    reference = types.SimpleNamespace(image=image)
    words = torch.randn(1, length, device=dev)
    result["finetune_step_seconds"] = round(bench.timed(lambda: pipe.finetune(reference, words, 1), 1), 3)
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


def driving_video(image, seconds, path):
    """A driving video of the example photo drifting a few pixels, written as an MP4."""
    import cv2

    shift = (np.float32([[1, 0, 3 * np.sin(i / 5)], [0, 1, 2 * np.cos(i / 7)]]) for i in range(int(seconds * 25)))
    frames = (cv2.warpAffine(image, m, image.shape[1::-1], borderMode=cv2.BORDER_REFLECT) for m in shift)
    bench.write_chunks(frames, path, fps=25)
    return path


def end_to_end(pipe, image, seconds, mode, tmp, flow="ours", finetune_steps=None):
    """Photo + clip (audio) or photo + ``tmp/driving.mp4`` (video) -> MP4 on disk; (wall seconds, frames)."""
    from models import TalkingFaceInput
    from models.perception.video import read_video

    start = time.perf_counter()
    if mode == "video":
        video = read_video(os.path.join(tmp, "driving.mp4"))
        audio, inputs = None, TalkingFaceInput(image=image, audio=None, sample_rate=16000, video=video)
    else:
        audio = bench.speech_like(seconds)
        inputs = TalkingFaceInput(image=image, audio=audio, sample_rate=16000)
    if flow == "ours":
        chunks = pipe.frame_chunks(inputs, finetune_steps=finetune_steps)
    else:
        chunks = authors_frame_by_frame(pipe, inputs)
    frames = bench.write_chunks(chunks, os.path.join(tmp, f"{mode}-{flow}.mp4"), pipe.fps, audio=audio)
    return time.perf_counter() - start, frames


def run(weights=None, random_weights=False, device="auto", seconds=None, mode="both", repeats=3,
        precision="fp32") -> dict:
    """Networks alone, then end to end on ``seconds`` (default ``SECONDS``) in each mode, per precision.

    Args:
        mode: "audio", "video" or "both": what drives the lips in the end-to-end runs.
        precision: "fp32", "int8", "auto", or "both" (fp32 and int8 side by side, then
            the int8 path's distance from fp32 on the bundled example).

    Returns:
        The header (``models.common.bench.header``) and the CPU; the seconds to load (int8:
        with calibration), ``networks`` (each network's frames per second) and per mode
        the seconds, frames and frames per second of this project's flows, their speed-up
        over the authors' flow (fp32) and the fine-tuning's seconds: at the top level for
        one precision (the authors' flow beside ours), under ``fp32`` and ``int8`` for
        both, with the authors' flow per mode and ``quality``
        (``models.common.bench.precision_quality``); then the peak RSS.
    """
    seconds = seconds or SECONDS
    image = bench.example_photo()
    modes = ("audio", "video") if mode == "both" else (mode,)
    result, pipes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        if "video" in modes:
            driving_video(image, seconds, os.path.join(tmp, "driving.mp4"))
        for each in bench.bench_precisions(precision):
            start = time.perf_counter()
            pipe = pipes[each] = build_pipeline(weights, random_weights, device, each)
            load_seconds = time.perf_counter() - start
            if not result:
                result = dict(bench.header(pipe), cpu=bench.cpu_model(), clip_seconds=seconds)
            measured = {"precision": pipe.precision, "load_seconds": round(load_seconds, 2),
                        "networks": network_speed(pipe, repeats)}
            pipe.prepare_reference(image)     # one-time loads (the landmark model) before timing, as a worker has them
            for one in modes:
                flows = {}
                for name, steps in FLOWS[:2]:
                    wall, frames = end_to_end(pipe, image, seconds, one, tmp, "ours", steps)
                    flows[name] = {"seconds": round(wall, 2), "frames": frames, "fps": round(frames / wall, 3)}
                flows["finetune_seconds"] = round(flows["ours"]["seconds"] - flows["ours_no_finetune"]["seconds"], 2)
                measured[f"end_to_end_{one}"] = flows
            result[each] = measured
        # The authors' flow, as their code runs it: fp32.
        authors = pipes.get("fp32") or build_pipeline(weights, random_weights, device, "fp32")
        name = FLOWS[2][0]
        for one in modes:
            wall, frames = end_to_end(authors, image, seconds, one, tmp, "authors", 0)
            result[f"{name}_{one}"] = {"seconds": round(wall, 2), "frames": frames, "fps": round(frames / wall, 3)}
            for each in bench.bench_precisions(precision):
                flows = result[each][f"end_to_end_{one}"]
                flows["speedup_vs_authors"] = round(flows["ours_no_finetune"]["fps"] / (frames / wall), 2)
    if len(pipes) == 2:
        result["quality"] = bench.precision_quality(pipes.__getitem__, example_frames)
    else:       # one precision: its numbers at the top level, the authors' flow beside ours
        measured = result.pop(next(iter(pipes)))
        for one in modes:
            measured[f"end_to_end_{one}"][name] = result.pop(f"{name}_{one}")
        result.update(measured)
    result["peak_rss_mib"] = round(bench.peak_rss_mib(), 1)
    return result
