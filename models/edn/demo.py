"""Everybody Dance Now's demo target: ``talkingface weights build-demo --model edn``.

    talkingface weights build-demo --model edn [--minutes 22]

The target person is one this project draws (``render_dance``): an articulated cartoon
figure -- a head with hair, eyes, nose and mouth; a shirt, trousers and shoes; arms and
legs as thick rounded limbs -- in a room with a wall and a tiled floor, seen by a fixed
camera. It dances: every joint angle follows a smooth random trajectory (a few slow
sines), and it walks towards the camera and back and from side to side, so that its
ankles reach different image rows as EDN's pose normalisation (Sec. 4) needs. The figure
stands on the floor: the body is placed so that its lower ankle touches the floor row of
its distance, in a pinhole camera. Its COCO-18 keypoints are known exactly.

``build_demo`` writes the dance as two MP4s (the first seconds to train on, the next
ones held out), prepares them as any target video (``models.edn.dataset.prepare_target``,
MediaPipe keypoints: MediaPipe finds the figure, see ``DEMO_KEYPOINTS``), trains a reduced
global-stage generator within a time budget (``models.edn.train``), exports it as a
target folder and scores it on the held-out frames: PSNR / SSIM of the frames the
generator chains from the held-out labels (the previous frame its own output, as at
inference) against the real ones.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from models import metrics
from models.common.demo import write_report
from models.common.device import pick_device
from models.common.pipeline import load_project_networks, read_project
from models.common.train import save_png, tile_grid
from models.edn import dataset, train
from models.edn.networks import NETWORKS, blank_previous_frame, synthesize_frame
from models.perception.mp4 import Mp4Writer
from models.perception.pose import COCO18, EDN_CANVAS, NUM_KEYPOINTS

FPS = 25
FRAME_SIZE = (360, 640)  # (H, W) of the rendered video; 16:9, so it fills EDN's canvas
SUPERSAMPLE = 2  # drawn at twice the size, then area-averaged: smooth edges

# Colours (RGB).
SKIN = (224, 172, 140)
HAIR = (60, 38, 24)
SHIRT = (200, 40, 50)
TROUSERS = (40, 60, 130)
SHOES = (30, 30, 30)
WALL_TOP, WALL_BOTTOM = (205, 215, 225), (170, 185, 200)
FLOOR_A, FLOOR_B = (150, 120, 90), (135, 105, 78)

# The body in metres (a 1.7 m person), in a frontal plane; y is up.
HIP_HEIGHT = 0.95
TORSO = 0.52  # hips' centre to the neck
SHOULDER_HALF = 0.2
HIP_HALF = 0.11
UPPER_ARM, FOREARM = 0.3, 0.27
THIGH, SHIN = 0.45, 0.43
NECK_TO_NOSE = 0.2
HEAD_RADIUS = 0.11

# The camera: focal length (pixels of FRAME_SIZE), its height, the horizon row; the dancer
# stays between NEAR and FAR metres away and within LATERAL metres of the axis.
FOCAL = 600.0
CAMERA_HEIGHT = 0.9
HORIZON = 150.0
NEAR, FAR, LATERAL = 3.8, 6.3, 0.9


# ---------------------------------------------------------------------------------------
# Motion


@dataclass(frozen=True)
class Trajectory:
    """A smooth random signal: ``base + sum_k amp_k sin(2 pi f_k t + phase_k)``."""

    base: float
    amplitudes: tuple[float, ...]
    frequencies: tuple[float, ...]
    phases: tuple[float, ...]

    @classmethod
    def draw(cls, rng, base, amplitude, low=0.15, high=0.8, terms=3):
        """``terms`` sines of frequencies in [low, high] Hz whose amplitudes sum to ``amplitude``."""
        weights = rng.uniform(0.3, 1.0, terms)
        return cls(float(base), tuple(amplitude * weights / weights.sum()), tuple(rng.uniform(low, high, terms)),
                   tuple(rng.uniform(0, 2 * np.pi, terms)))

    def __call__(self, t: float) -> float:
        return self.base + sum(a * math.sin(2 * math.pi * f * t + p)
                               for a, f, p in zip(self.amplitudes, self.frequencies, self.phases))


def dance(seed: int) -> dict[str, Trajectory]:
    """The dance of ``seed``: a trajectory for every joint angle (radians) and the position.

    Arm angles are measured from hanging straight down, positive away from the body (an
    angle above pi/2 raises the hand above the shoulder); bends are the elbow's and the
    knee's. ``depth`` is the distance to the camera, ``lateral`` the sideways position.
    """
    rng = np.random.default_rng([seed, 7])
    moves = {}
    for side in ("right", "left"):
        moves[f"{side}_arm"] = Trajectory.draw(rng, 0.9, 1.3)
        moves[f"{side}_elbow"] = Trajectory.draw(rng, 0.9, 0.8)
        moves[f"{side}_leg"] = Trajectory.draw(rng, 0.12, 0.18)
        moves[f"{side}_knee"] = Trajectory.draw(rng, 0.35, 0.35)
    moves["lean"] = Trajectory.draw(rng, 0.0, 0.15)
    moves["head"] = Trajectory.draw(rng, 0.0, 0.2)
    # Walking towards the camera and back in about 8 s, and sideways.
    moves["depth"] = Trajectory.draw(rng, (NEAR + FAR) / 2, (FAR - NEAR) / 2, low=0.08, high=0.16, terms=2)
    moves["lateral"] = Trajectory.draw(rng, 0.0, LATERAL, low=0.05, high=0.15, terms=2)
    return moves


def _rotate(vector, angle):
    """``vector`` (x, y) turned by ``angle`` radians, counter-clockwise with y up."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * vector[0] - s * vector[1], s * vector[0] + c * vector[1]])


def body_pose(moves: dict[str, Trajectory], t: float) -> dict[str, np.ndarray]:
    """The joints (metres, y up, origin between the feet's floor point) at time ``t``.

    Names are COCO-18's plus ``head`` (the head's centre). The person faces the camera,
    so their right side is on the image's left (negative x).
    """
    lean = moves["lean"](t)
    up = _rotate((0.0, 1.0), lean)
    across = _rotate((1.0, 0.0), lean)
    hips = np.array([0.0, HIP_HEIGHT])
    joints = {"neck": hips + TORSO * up}
    for side, sign in (("right", -1.0), ("left", 1.0)):
        shoulder = joints["neck"] + sign * SHOULDER_HALF * across
        arm = moves[f"{side}_arm"](t)
        elbow = shoulder + _rotate((0.0, -UPPER_ARM), sign * arm + lean)
        wrist = elbow + _rotate((0.0, -FOREARM), sign * (arm + moves[f"{side}_elbow"](t)) + lean)
        hip = hips + sign * HIP_HALF * across
        leg = moves[f"{side}_leg"](t)
        knee = hip + _rotate((0.0, -THIGH), sign * leg)
        # A bent knee folds the shin back under the thigh (seen from the front: inwards).
        ankle = knee + _rotate((0.0, -SHIN), sign * (leg - 0.5 * abs(moves[f"{side}_knee"](t))))
        joints.update({f"{side}_shoulder": shoulder, f"{side}_elbow": elbow, f"{side}_wrist": wrist,
                       f"{side}_hip": hip, f"{side}_knee": knee, f"{side}_ankle": ankle})
    head_up = _rotate(up, moves["head"](t))
    head_across = _rotate(across, moves["head"](t))
    nose = joints["neck"] + NECK_TO_NOSE * head_up
    joints.update({
        "nose": nose,
        "head": nose + 0.02 * head_up,
        "right_eye": nose - 0.035 * head_across + 0.03 * head_up,
        "left_eye": nose + 0.035 * head_across + 0.03 * head_up,
        "right_ear": nose - 0.1 * head_across + 0.015 * head_up,
        "left_ear": nose + 0.1 * head_across + 0.015 * head_up,
    })
    floor = min(joints["right_ankle"][1], joints["left_ankle"][1]) - 0.05  # the shoe's sole
    return {name: p - np.array([0.0, floor]) for name, p in joints.items()}


def project(points: dict[str, np.ndarray], depth: float, lateral: float) -> tuple[dict[str, np.ndarray], float]:
    """Pinhole projection of a body standing ``depth`` metres away: pixels, and pixels per metre."""
    scale = FOCAL / depth
    centre_x = FRAME_SIZE[1] / 2
    return ({name: np.array([centre_x + (lateral + p[0]) * scale, HORIZON - (p[1] - CAMERA_HEIGHT) * scale])
             for name, p in points.items()}, scale)


# ---------------------------------------------------------------------------------------
# Drawing


def background(size=FRAME_SIZE) -> np.ndarray:
    """The room: a shaded wall above the horizon, a tiled floor in perspective below it.

    Drawn at 4x and area-averaged, so that the far tiles blur instead of aliasing.
    """
    k = 4
    height, width = size[0] * k, size[1] * k
    horizon = HORIZON * k
    image = np.zeros((height, width, 3), np.float32)
    rows = np.arange(height, dtype=np.float32)[:, None, None]
    image[:] = np.array(WALL_TOP) + (np.array(WALL_BOTTOM) - np.array(WALL_TOP)) * (rows / horizon)
    # Floor tiles: a checkerboard of 0.5 m squares on the ground plane.
    ys, xs = np.mgrid[int(horizon) + 1:height, 0:width].astype(np.float32)
    distance = FOCAL * k * CAMERA_HEIGHT / (ys - horizon)
    ground_x = (xs - width / 2) * distance / (FOCAL * k)
    checker = (np.floor(distance / 0.5) + np.floor(ground_x / 0.5)) % 2
    image[int(horizon) + 1:] = np.where(checker[..., None] > 0, FLOOR_A, FLOOR_B)
    image = cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)
    # A skirting board and a window on the wall.
    image[int(HORIZON) - 6:int(HORIZON) + 1] = (235, 235, 230)
    image[40:110, 470:580] = (120, 160, 200)
    image[40:110, 523:527] = image[73:77, 470:580] = (235, 235, 230)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _limb(canvas, a, b, width, colour):
    a, b = tuple(int(round(v)) for v in a), tuple(int(round(v)) for v in b)
    cv2.line(canvas, a, b, colour, max(1, int(round(width))), cv2.LINE_AA)
    for end in (a, b):
        cv2.circle(canvas, end, max(1, int(round(width / 2))), colour, -1, cv2.LINE_AA)


def draw_figure(canvas: np.ndarray, joints: dict[str, np.ndarray], scale: float):
    """Draw the figure (projected joints, ``scale`` pixels a metre) onto ``canvas`` in place."""
    j = {name: p * SUPERSAMPLE for name, p in joints.items()}
    s = scale * SUPERSAMPLE
    # Legs and shoes.
    for side in ("right", "left"):
        _limb(canvas, j[f"{side}_hip"], j[f"{side}_knee"], 0.17 * s, TROUSERS)
        _limb(canvas, j[f"{side}_knee"], j[f"{side}_ankle"], 0.14 * s, TROUSERS)
        toe = j[f"{side}_ankle"] + np.array([0.0, 0.04 * s])
        cv2.ellipse(canvas, tuple(int(v) for v in toe), (int(0.07 * s), int(0.035 * s)), 0, 0, 360, SHOES, -1,
                    cv2.LINE_AA)
    # Torso: a shirt from the shoulders to the hips.
    torso = np.array([j["right_shoulder"], j["left_shoulder"], j["left_hip"] + (j["left_hip"] - j["right_hip"]) * 0.3,
                      j["right_hip"] + (j["right_hip"] - j["left_hip"]) * 0.3])
    cv2.fillConvexPoly(canvas, np.round(torso).astype(np.int32), SHIRT, cv2.LINE_AA)
    _limb(canvas, j["right_shoulder"], j["left_shoulder"], 0.1 * s, SHIRT)
    _limb(canvas, j["right_hip"], j["left_hip"], 0.12 * s, TROUSERS)
    # Neck and head.
    _limb(canvas, j["neck"], j["nose"] * 0.4 + j["neck"] * 0.6, 0.08 * s, SKIN)
    centre = tuple(int(v) for v in j["head"])
    radius = int(HEAD_RADIUS * s)
    cv2.circle(canvas, centre, radius, SKIN, -1, cv2.LINE_AA)
    up = (j["head"] - j["nose"]) / max(np.linalg.norm(j["head"] - j["nose"]), 1e-6)
    tilt = math.degrees(math.atan2(-up[0], -up[1])) if np.any(up) else 0.0
    cv2.ellipse(canvas, centre, (radius + 2, radius + 2), tilt, 180, 360, HAIR, -1, cv2.LINE_AA)
    for ear in ("right_ear", "left_ear"):
        cv2.circle(canvas, tuple(int(v) for v in j[ear]), int(0.025 * s), SKIN, -1, cv2.LINE_AA)
    for eye in ("right_eye", "left_eye"):
        cv2.circle(canvas, tuple(int(v) for v in j[eye]), int(0.017 * s), (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(canvas, tuple(int(v) for v in j[eye]), max(1, int(0.009 * s)), (20, 20, 20), -1, cv2.LINE_AA)
    cv2.circle(canvas, tuple(int(v) for v in j["nose"]), max(1, int(0.012 * s)), (190, 130, 105), -1, cv2.LINE_AA)
    mouth = j["nose"] + (j["nose"] - j["head"]) * 2.2
    cv2.ellipse(canvas, tuple(int(v) for v in mouth), (int(0.03 * s), int(0.012 * s)), tilt, 0, 180,
                (150, 40, 50), max(1, int(0.008 * s)), cv2.LINE_AA)
    # Arms: short sleeves, then skin; hands.
    for side in ("right", "left"):
        shoulder, elbow, wrist = j[f"{side}_shoulder"], j[f"{side}_elbow"], j[f"{side}_wrist"]
        _limb(canvas, shoulder, elbow, 0.1 * s, SKIN)
        _limb(canvas, shoulder, shoulder + (elbow - shoulder) * 0.45, 0.12 * s, SHIRT)
        _limb(canvas, elbow, wrist, 0.085 * s, SKIN)
        cv2.circle(canvas, tuple(int(v) for v in wrist + (wrist - elbow) * 0.2), int(0.045 * s), SKIN, -1,
                   cv2.LINE_AA)


def render_frame(moves: dict[str, Trajectory], t: float, room: np.ndarray | None = None):
    """The frame at ``t`` seconds, uint8 RGB ``FRAME_SIZE``, and its COCO-18 keypoints (18, 3).

    The keypoints are ``(x, y, 1)`` in the frame's pixels, ``(0, 0, 0)`` for a joint
    outside the frame (OpenPose's missing joint).
    """
    room = background() if room is None else room
    joints, scale = project(body_pose(moves, t), moves["depth"](t), moves["lateral"](t))
    canvas = cv2.resize(room, None, fx=SUPERSAMPLE, fy=SUPERSAMPLE, interpolation=cv2.INTER_NEAREST)
    draw_figure(canvas, joints, scale)
    frame = cv2.resize(canvas, FRAME_SIZE[::-1], interpolation=cv2.INTER_AREA)
    keypoints = np.zeros((NUM_KEYPOINTS, 3))
    height, width = FRAME_SIZE
    for i, name in enumerate(COCO18):
        x, y = joints[name]
        if 0 <= x < width and 0 <= y < height:
            keypoints[i] = (x, y, 1.0)
    return frame, keypoints


def render_dance(seconds: float, seed: int = 0, start: float = 0.0):
    """Yield ``(frame, keypoints)`` of the dance of ``seed`` from ``start`` for ``seconds`` at 25 fps."""
    moves, room = dance(seed), background()
    for i in range(int(round(seconds * FPS))):
        yield render_frame(moves, start + i / FPS, room)


def write_dance(path, seconds: float, seed: int = 0, start: float = 0.0) -> np.ndarray:
    """The dance of ``seed`` from ``start`` for ``seconds`` as an MP4 at ``path``; returns its keypoints (N, 18, 3)."""
    keypoints, chunk = [], []
    with Mp4Writer(path, fps=FPS) as writer:
        for frame, points in render_dance(seconds, seed, start):
            chunk.append(frame)
            keypoints.append(points)
            if len(chunk) == 25:
                writer.write(np.stack(chunk))
                chunk = []
        if chunk:
            writer.write(np.stack(chunk))
    return np.stack(keypoints)


# ---------------------------------------------------------------------------------------
# The demo target


# Reduced global stage for a 2-core CPU (published: ngf 64, 4 downsamplings, 9 blocks, ndf 64).
# The four downsamplings are kept: the labels are white but for the figure, and with reflect
# padding the generator knows where a pixel is only from what its receptive field sees. With
# three (about 120 pixels) a 255-step build drew the horizon at row 55 of 256 instead of 107,
# except beside the figure.
DEMO_SIZES = {"ngf": 16, "n_downsample_global": 4, "n_blocks_global": 3, "ndf": 16}
# How the demo trains, where it departs from the README's global command:
# - the authors' --use_l1 term (10 x L1 of frame t) stands in for the VGG loss, whose
#   ImageNet weights are not fetched;
# - Adam at 1e-3, not 2e-4: on this CPU a step takes 3-8 s, so the run has a few hundred
#   steps; after 80 steps the 2e-4 run drew the red shirt only, the 1e-3 run also the
#   trousers, with a lower L1 (1.4 against 1.6).
DEMO_RECIPE = {"use_l1": True, "lr": 1e-3}
# MediaPipe finds the drawn figure in every frame (median error 1-7 pixels of 360x640
# against the drawn joints, the ankles the worst), so the demo data are prepared like any
# target video, with the keypoints inference will use.
DEMO_KEYPOINTS = "mediapipe"


def _tile(x: torch.Tensor, is_label=False) -> np.ndarray:
    x = x[0].detach().float().cpu()
    x = x.clamp(0, 1) if is_label else x.clamp(-1, 1).add(1).div(2)
    return (x * 255).round().byte().permute(1, 2, 0).numpy()


def _frames(data_dir, kind, stage="global"):
    """The stored labels or frames of a prepared folder, in order, uint8 (H, W, 3)."""
    for i in range(dataset.read_manifest(data_dir)["usable"]):
        yield np.array(Image.open(Path(data_dir) / stage / kind / f"{i:06d}.png").convert("RGB"))


@torch.no_grad()
def score_chained(generator, data_dir, limit=None, device="cpu") -> tuple[dict, list[np.ndarray]]:
    """PSNR / SSIM of the frames ``generator`` chains from a prepared video's labels against its frames.

    As at inference: frame t is drawn from label t and the generated frame t-1 (zeros for
    the first). Returns the scores and the tiles (label, generated, real) of the middle frame.
    """
    count = dataset.read_manifest(data_dir)["usable"]
    count = count if limit is None else min(limit, count)
    psnr, ssim, previous, middle = [], [], None, None
    for i, (label, real) in enumerate(zip(_frames(data_dir, "label"), _frames(data_dir, "img"))):
        if i == count:
            break
        x = torch.from_numpy(label).permute(2, 0, 1)[None].float().div(255.0).to(device)
        previous = synthesize_frame(generator, x, blank_previous_frame(x) if previous is None else previous)
        fake = previous[0].clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        psnr.append(metrics.psnr(fake, real))
        ssim.append(metrics.ssim(fake, real))
        if i == count // 2:
            middle = [label, fake, real]
    return {"frames": count, "psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim))}, middle


def mean_frame_baseline(data_dir, heldout_dir) -> dict:
    """PSNR / SSIM of always drawing the mean training frame: what the background alone earns."""
    total, count = 0.0, 0
    for frame in _frames(data_dir, "img"):
        total, count = total + frame.astype(np.float64), count + 1
    mean = np.round(total / count).astype(np.uint8)
    scores = np.array([(metrics.psnr(mean, f), metrics.ssim(mean, f)) for f in _frames(heldout_dir, "img")])
    return {"psnr": float(scores[:, 0].mean()), "ssim": float(scores[:, 1].mean())}


def keypoint_error(work: Path, data: dict) -> dict:
    """Pixel error (of the 360x640 frame) of the keypoints the data were prepared with, against the drawn joints."""
    errors = []
    for part, folder in data.items():
        truth = np.load(work / "videos" / f"{part}_keypoints.npy")[np.load(Path(folder) / "frame_index.npy")]
        found = dataset.target_keypoints(folder)
        scale = FRAME_SIZE[0] / EDN_CANVAS[0]  # canvas -> frame: a 16:9 frame fills the canvas
        both = (found[..., 2] > 0) & (truth[..., 2] > 0)
        errors.append(np.linalg.norm(found[..., :2] * scale - truth[..., :2], axis=-1)[both])
    errors = np.concatenate(errors)
    return {"source": DEMO_KEYPOINTS, "median_error_px": float(np.median(errors)),
            "p90_error_px": float(np.percentile(errors, 90))}


def build_demo(out_dir, work_dir=None, train_seconds=22 * 60, seed=0, progress=True, seconds=12.0,
               heldout_seconds=2.0, recipe=None, **sizes) -> dict:
    """Render the dance, prepare it, train a reduced global stage, export the target, score it.

    Args:
        out_dir: the target folder to write (``weights/demo/edn`` for the shipped one).
        work_dir (optional): the videos, prepared data and run; an interrupted build resumes
            from it. Defaults to a new temporary folder.
        train_seconds: the training budget (0: two steps, for tests).
        seed (int, defaults to 0): of the dance and the training.
        progress (bool, defaults to True): progress bars.
        seconds, heldout_seconds: length of the training video and of the held-out one
            that follows it (the same dance, later).
        recipe (dict, optional): training options in place of ``DEMO_RECIPE``.
        sizes: override ``DEMO_SIZES``.

    Returns:
        The report, also written as ``REPORT.json``: the training's steps, minutes, losses
        and stop reason; PSNR / SSIM of the chained frames on the held-out video and on as
        many first training frames, and those of the mean training frame (a background-only
        baseline); MediaPipe's keypoint error against the drawn joints; the sizes. The
        middle held-out frame is left as ``sample.png`` (label | generated | real).
    """
    started = time.monotonic()
    work = Path(work_dir or tempfile.mkdtemp(prefix="build-edn-demo-"))
    (work / "videos").mkdir(parents=True, exist_ok=True)
    data = {}
    for part, (length, start) in {"target": (seconds, 0.0), "heldout": (heldout_seconds, seconds)}.items():
        video, truth = work / "videos" / f"{part}.mp4", work / "videos" / f"{part}_keypoints.npy"
        if not video.is_file():
            np.save(truth, write_dance(video, length, seed, start))
        data[part] = work / f"data_{part}"
        if not dataset.is_prepared(data[part], video, "global"):
            dataset.prepare_target(video, data[part], sizes=("global",))
    prepare_minutes = (time.monotonic() - started) / 60

    sizes = dict(DEMO_SIZES, **sizes)
    recipe = dict(DEMO_RECIPE if recipe is None else recipe)
    run = train.train(data["target"], work / "run", stage="global", time_budget=train_seconds or None,
                      max_steps=None if train_seconds else 2, seed=seed, device="auto", progress=progress,
                      sample_every=50, checkpoint_every=100, **recipe, **sizes)
    # float16 storage keeps the folder under 10 MB; it is scored as loaded, in float32.
    out_dir = train.export_target(work / "run", out_dir, name="demo (project-trained on a rendered dancing figure)",
                                  half=True)

    device = pick_device("auto")
    config = read_project(out_dir)
    generator = load_project_networks(out_dir, {"generator": NETWORKS[config["generator_class"]]},
                                      config)["generator"].to(device).eval()
    heldout, tiles = score_chained(generator, data["heldout"], device=device)
    seen, _ = score_chained(generator, data["target"], limit=heldout["frames"], device=device)
    save_png(Path(out_dir) / "sample.png", tile_grid([tiles]))
    report = {
        "steps": run["step"], "train_minutes": round(run["elapsed"] / 60, 1), "stopped": run["stopped"],
        "losses": run["losses"], "vgg_loss": run["vgg_loss"],
        "heldout": heldout, "training_frames": seen,
        "mean_frame_baseline": mean_frame_baseline(data["target"], data["heldout"]),
        "keypoints": keypoint_error(work, data),
        "frames": {part: dataset.read_manifest(folder)["usable"] for part, folder in data.items()},
        "sizes": sizes, "recipe": recipe, "prepare_minutes": round(prepare_minutes, 1),
        "build_minutes": round((time.monotonic() - started) / 60, 1), "work_dir": str(work),
        "sample": "sample.png: label | generated | real, the middle held-out frame",
    }
    return write_report(out_dir, report)
