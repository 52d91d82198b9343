"""``talkingface bench edn``: frames per second of Everybody Dance Now at the published sizes.

    talkingface bench edn --random-weights

Speed does not depend on the weights, so the networks are freshly initialised at EDN's
published configuration (``models.edn.networks``' defaults): the global generator on
512x256 labels and the local enhancer on 1024x512 ones, each alone and with the face
residual generator; the labels (stick figure and resizes) and MediaPipe's pose detection,
the per-frame work around the networks, are timed on their own.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from models.common import bench
from models.common.device import pick_device
from models.edn.networks import FaceBox, FaceResidualGenerator, GlobalGenerator, LocalEnhancer, synthesize_frame
from models.edn.pipeline import label_tensor, stage_label_size
from models.perception import pose as pose_lib


def canvas_pose() -> np.ndarray:
    """An upright person in the middle of EDN's 1080x1920 canvas (x, y, confidence)."""
    xs = (0, 0, -60, -80, -90, 60, 80, 90, -40, -45, -50, 40, 45, 50, -15, 15, -30, 30)
    ys = (0, 0.15, 0.15, 0.35, 0.5, 0.15, 0.35, 0.5, 0.5, 0.75, 1.0, 0.5, 0.75, 1.0, -0.02, -0.02, 0, 0)
    return np.array([(960 + x, 190 + 700 * y, 1.0) for x, y in zip(xs, ys)])


def run(weights=None, random_weights=True, device="auto", repeats=3, **_) -> dict:
    """Frames per second of each stage's generator, with and without the face GAN, and of the labels."""
    dev = pick_device(device)
    result = {"device": str(dev), "threads": torch.get_num_threads(), "weights": "random (published sizes)"}
    posepts = canvas_pose()
    result["labels_per_s"] = {stage: round(1.0 / bench.timed(partial(label_tensor, posepts, stage_label_size(stage)),
                                                              repeats), 2) for stage in ("global", "local")}
    photo = bench.example_photo()
    try:
        result["pose_detection_per_s"] = round(1.0 / bench.timed(partial(pose_lib.body_keypoints, photo), repeats), 2)
    except Exception as exc:                    # MediaPipe missing: the rest still measures
        result["pose_detection_per_s"] = f"not measured: {exc}"
    torch.manual_seed(0)
    face = FaceResidualGenerator().to(dev).eval()
    box = FaceBox(*pose_lib.edn_face_box(posepts))
    for stage, generator in (("global", GlobalGenerator()), ("local", LocalEnhancer())):
        generator = generator.to(dev).eval()
        label = label_tensor(posepts, stage_label_size(stage)).to(dev)
        previous = torch.zeros(1, 3, *label.shape[2:], device=dev)
        size = f"{label.shape[3]}x{label.shape[2]}"
        with torch.inference_mode():
            alone = bench.timed(partial(synthesize_frame, generator, label, previous), repeats)
            numbers = {"size": size, "generator_frames_per_s": round(1.0 / alone, 3)}
            if stage == "local":    # the face GAN works on the full-size labels' 128x128 box
                with_face = bench.timed(partial(synthesize_frame, generator, label, previous, face, box), repeats)
                numbers["with_face_frames_per_s"] = round(1.0 / with_face, 3)
        result[stage] = numbers
    result["peak_rss_mib"] = round(bench.peak_rss_mib(), 1)
    return result
