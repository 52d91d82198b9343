"""PG2's demo weights: ``talkingface weights build-demo --model pg2``.

    talkingface weights build-demo --model pg2 [--g1-minutes 14 --g2-minutes 10]

Market-1501 cannot be shipped or fetched, so the demo weights learn from people this
project draws itself:

1. ``render_person``: an articulated figure at 128x64, Market-1501's frame: a head with
   hair, eyes, nose and ears, a torso, arms and legs as thick rounded limbs, hands and
   shoes, in a ``Look`` (skin, hair, shirt with or without stripes, sleeves, trousers or
   shorts, shoes, build) at a ``BodyPose`` (facing direction, lean, shoulder, elbow, hip
   and knee angles, size, position), on a plain or gradient background with a floor. The
   COCO-18 keypoints are exact: they are where the limbs are drawn; the face joints a
   person turned away does not show are missing, as OpenPose leaves them.
2. ``make_demo_images``: many persons, each in several random poses on a background of
   its own (Market's persons change cameras between images), named as Market-1501 names
   its crops (``0001_c1s1_000000_00.png``) with OpenPose JSON beside each image.
3. ``models.pg2.dataset.prepare`` (keypoints from that JSON), 90 % of the persons to train.
4. G1 and G2 with reduced widths (``DEMO_CONFIG``) trained within a time budget each,
   as ``DEMO_RECIPE`` says; ``export_weights`` into ``weights/demo/pg2``.
5. ``score_pairs`` on held-out persons (SSIM, and L1 inside the target's body mask),
   ``REPORT.json`` and ``example.png`` (condition | target pose | G1 | G2 | real target).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from models.common import demo
from models.common.train import save_png, tile_grid
from models.perception.pose import COCO18, to_openpose_json

SIZE = (128, 64)  # (H, W): Market-1501's crops
J = {name: i for i, name in enumerate(COCO18)}
SKIN = ((255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 51, 23))
HAIR = ((20, 17, 15), (59, 38, 26), (110, 70, 40), (215, 180, 110), (160, 160, 160), (150, 60, 30))
SHOES = ((25, 25, 25), (235, 235, 235), (100, 60, 30), (60, 60, 90))
EYES = (30, 20, 20)

# Body proportions in units of the figure's height (top of the head to the soles).
HEAD_RADIUS = 0.065
NECK_TO_HEAD = 0.09  # neck joint to the head's centre
TORSO = 0.30  # neck to pelvis
SHOULDER, HIP, TORSO_DEPTH = 0.11, 0.07, 0.06  # half widths and half depth
UPPER_ARM, FOREARM, THIGH, SHIN = 0.17, 0.15, 0.23, 0.23
ARM_WIDTH, LEG_WIDTH = 0.05, 0.075  # limb thickness
# Head points as (lateral, depth, down) in head radii: lateral + is the person's left,
# depth + their front; a point shows when it faces the camera by more than its threshold.
FACE = {"nose": (0.0, 0.8, 0.2, -0.2), "left_eye": (0.35, 0.8, 0.05, 0.2), "right_eye": (-0.35, 0.8, 0.05, 0.2),
        "left_ear": (0.9, -0.1, 0.05, -0.3), "right_ear": (-0.9, -0.1, 0.05, -0.3)}


# ---------------------------------------------------------------------------------------
# A person: how they look, how they stand


@dataclass(frozen=True)
class Look:
    """How one person looks, the same in every image of them."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    shirt: tuple[int, int, int]
    stripe: tuple[int, int, int] | None  # horizontal stripes on the shirt, or plain
    trousers: tuple[int, int, int]
    shoes: tuple[int, int, int]
    long_sleeves: bool
    shorts: bool
    long_hair: bool
    build: float  # width scale, about 1
    height: float  # figure height as a fraction of the image height

    def colours(self) -> set[tuple[int, int, int]]:
        """Every colour the person is drawn in."""
        return {c for c in (self.skin, self.hair, self.shirt, self.stripe, self.trousers, self.shoes, EYES) if c}


@dataclass(frozen=True)
class BodyPose:
    """One pose: angles in radians, measured in the image plane from straight down,
    positive towards the image's right."""

    yaw: float  # facing direction: 0 towards the camera, pi away, pi/2 towards the image's right
    lean: float  # torso from upright
    arms: tuple[tuple[float, float], tuple[float, float]]  # (upper arm, forearm) of the right, left arm
    legs: tuple[tuple[float, float], tuple[float, float]]  # (thigh, shin) of the right, left leg
    scale: float  # times the look's height
    shift: tuple[float, float]  # (x, y) pixels from the centred position


def _colour(rng, saturation=(0.3, 0.9), value=(0.25, 0.95)) -> tuple[int, int, int]:
    hsv = np.uint8([[[rng.integers(0, 180), rng.uniform(*saturation) * 255, rng.uniform(*value) * 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def random_look(rng: np.random.Generator) -> Look:
    """A person's clothes, skin and hair, drawn from ``rng``."""
    shirt = _colour(rng)
    return Look(skin=SKIN[rng.integers(len(SKIN))], hair=HAIR[rng.integers(len(HAIR))], shirt=shirt,
                stripe=_colour(rng) if rng.random() < 0.3 else None,
                trousers=_colour(rng, (0.1, 0.7), (0.15, 0.7)), shoes=SHOES[rng.integers(len(SHOES))],
                long_sleeves=bool(rng.random() < 0.5), shorts=bool(rng.random() < 0.25),
                long_hair=bool(rng.random() < 0.3), build=float(rng.uniform(0.85, 1.2)),
                height=float(rng.uniform(0.84, 0.94)))


def random_pose(rng: np.random.Generator) -> BodyPose:
    """A plausible standing or walking pose, drawn from ``rng``."""
    yaw = float(rng.integers(8) * math.pi / 4 + rng.normal(0, 0.2))
    forward = math.sin(yaw)  # where the person faces in the image (-1 left .. 1 right)
    arms, legs = [], []
    for side in (-1, 1):  # the right arm hangs on the image's left when facing the camera
        outward = side * math.cos(yaw)
        if rng.random() < 0.15:  # a raised arm
            upper = outward * rng.uniform(1.6, 2.6) + rng.normal(0, 0.2)
        else:
            upper = outward * abs(rng.normal(0.2, 0.2)) + forward * rng.normal(0, 0.4)
        arms.append((upper, upper + rng.choice([-1, 1]) * rng.uniform(0, 1.6)))
        thigh = outward * abs(rng.normal(0.05, 0.08)) + forward * rng.normal(0, 0.3)
        legs.append((thigh, thigh - forward * rng.uniform(0, 0.6)))  # knees bend backwards
    return BodyPose(yaw=yaw, lean=float(rng.normal(0, 0.06)), arms=tuple(map(tuple, arms)),
                    legs=tuple(map(tuple, legs)), scale=float(rng.uniform(0.95, 1.03)),
                    shift=(float(rng.normal(0, 2.5)), float(rng.normal(0, 2))))


def random_background(rng: np.random.Generator, size=SIZE) -> np.ndarray:
    """A plain or vertical-gradient wall and a floor below a random line: uint8 (H, W, 3)."""
    height, width = size
    top, bottom = np.array(_colour(rng, (0, 0.5), (0.3, 0.95))), np.array(_colour(rng, (0, 0.5), (0.3, 0.95)))
    if rng.random() < 0.5:
        bottom = top
    t = np.linspace(0, 1, height)[:, None, None]
    image = np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3)).copy()
    floor = int(rng.uniform(0.75, 0.95) * height)
    image[floor:] = _colour(rng, (0, 0.4), (0.2, 0.8))
    return np.round(image).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# Drawing


def _down(angle: float) -> np.ndarray:
    """Unit vector at ``angle`` from straight down, positive towards the image's right."""
    return np.array([math.sin(angle), math.cos(angle)])


def _line(image, a, b, colour, width):
    """A thick segment with round ends (OpenCV rounds thick lines); no anti-aliasing, so every
    pixel is one of the person's colours."""
    pa, pb = (tuple(int(round(v * 16)) for v in p) for p in (a, b))
    cv2.line(image, pa, pb, colour, max(1, int(round(width))), cv2.LINE_8, shift=4)


def _disc(image, centre, radius, colour):
    cv2.circle(image, tuple(int(round(v * 16)) for v in centre), max(1, int(round(radius * 16))), colour,
               -1, cv2.LINE_8, shift=4)


def _ellipse(image, centre, axes, angle, colour):
    cv2.ellipse(image, tuple(int(round(v * 16)) for v in centre), tuple(max(1, int(round(v * 16))) for v in axes),
                math.degrees(angle), 0, 360, colour, -1, cv2.LINE_8, shift=4)


def render_person(look: Look, pose: BodyPose, background: np.ndarray | None = None,
                  size: tuple[int, int] = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``look`` in ``pose``; returns uint8 (H, W, 3) and its float (18, 3) keypoints.

    Keypoints are ``(x, y, confidence)`` in pixels, COCO-18 order; confidence 1 for a
    joint that is drawn, 0 (and position 0, 0) for a face point turned away from the
    camera or a joint outside the image. Every visible keypoint lies on the part drawn
    for it (the hand on the wrist, the shoe on the ankle, the eye dot on the eye ...).
    """
    height, width = size
    image = np.array(background if background is not None else np.full((*size, 3), 200, np.uint8))
    unit = look.height * pose.scale * height  # pixels of figure height
    build = look.build * unit
    cos_yaw, sin_yaw = math.cos(pose.yaw), math.sin(pose.yaw)

    # 1. The skeleton. The pelvis is placed so that the figure stands centred in the frame.
    pelvis = np.array([width / 2 + pose.shift[0],
                       (height - unit) / 2 + (NECK_TO_HEAD + HEAD_RADIUS + TORSO) * unit + pose.shift[1]])
    up = -_down(pose.lean)
    across = np.array([-up[1], up[0]])  # towards the image's right, across the torso
    neck = pelvis + up * TORSO * unit
    head = neck + up * NECK_TO_HEAD * unit
    radius = HEAD_RADIUS * unit
    points = {"neck": neck}
    for side, sign in (("right", -1), ("left", 1)):  # the person's left is lateral +
        points[f"{side}_shoulder"] = neck + across * sign * SHOULDER * build * cos_yaw
        points[f"{side}_hip"] = pelvis + across * sign * HIP * build * cos_yaw
    for side, (upper, lower) in zip(("right", "left"), pose.arms):
        points[f"{side}_elbow"] = points[f"{side}_shoulder"] + _down(upper) * UPPER_ARM * unit
        points[f"{side}_wrist"] = points[f"{side}_elbow"] + _down(lower) * FOREARM * unit
    for side, (thigh, shin) in zip(("right", "left"), pose.legs):
        points[f"{side}_knee"] = points[f"{side}_hip"] + _down(thigh) * THIGH * unit
        points[f"{side}_ankle"] = points[f"{side}_knee"] + _down(shin) * SHIN * unit
    shown = set(points)
    for name, (lateral, depth, below, threshold) in FACE.items():
        points[name] = head + np.array([lateral * cos_yaw + depth * sin_yaw, below]) * radius
        if -lateral * sin_yaw + depth * cos_yaw > threshold:  # the point's depth towards the camera
            shown.add(name)

    # 2. Far limbs, torso, near limbs, then the head, back to front. The side nearer the
    # camera is the one whose lateral direction points at it; facing the camera, both arms
    # are in front of the torso.
    near = {"right": sin_yaw > -0.3, "left": sin_yaw < 0.3}
    if look.long_hair:
        _line(image, head, neck + up * 0.02 * unit - across * 0.5 * radius * sin_yaw, look.hair, 2.2 * radius)
    for side in ("right", "left"):
        if not near[side]:
            _draw_leg(image, look, points, side, unit)
            _draw_arm(image, look, points, side, unit)
    _draw_torso(image, look, points, neck, pelvis, across, build, cos_yaw, sin_yaw)
    for side in ("right", "left"):
        if near[side]:
            _draw_leg(image, look, points, side, unit)
    for side in ("right", "left"):
        if near[side]:
            _draw_arm(image, look, points, side, unit)
    _line(image, neck, head, look.skin, 0.07 * unit)
    _draw_head(image, look, points, head, radius, pose.yaw, shown)

    keypoints = np.zeros((len(COCO18), 3))
    for name, (x, y) in points.items():
        if name in shown and 0 <= x < width and 0 <= y < height:
            keypoints[J[name]] = (x, y, 1.0)
    return image, keypoints


def _draw_arm(image, look, points, side, unit):
    shoulder, elbow, wrist = (points[f"{side}_{joint}"] for joint in ("shoulder", "elbow", "wrist"))
    _line(image, shoulder, elbow, look.shirt, ARM_WIDTH * unit)
    _line(image, elbow, wrist, look.shirt if look.long_sleeves else look.skin, 0.85 * ARM_WIDTH * unit)
    _disc(image, wrist, 0.6 * ARM_WIDTH * unit, look.skin)  # the hand


def _draw_leg(image, look, points, side, unit):
    hip, knee, ankle = (points[f"{side}_{joint}"] for joint in ("hip", "knee", "ankle"))
    _line(image, hip, knee, look.trousers, LEG_WIDTH * unit)
    _line(image, knee, ankle, look.skin if look.shorts else look.trousers, 0.8 * LEG_WIDTH * unit)
    _ellipse(image, ankle + np.array([0, 0.01 * unit]), (0.045 * unit, 0.025 * unit), 0, look.shoes)


def _draw_torso(image, look, points, neck, pelvis, across, build, cos_yaw, sin_yaw):
    """Shirt from the shoulders to the waist, trousers from the waist to the hips."""
    shoulder = math.hypot(SHOULDER * build * cos_yaw, TORSO_DEPTH * build * sin_yaw) + 0.5 * ARM_WIDTH * build
    hip = math.hypot(HIP * build * cos_yaw, TORSO_DEPTH * build * sin_yaw) + 0.5 * LEG_WIDTH * build
    waist = neck + (pelvis - neck) * 0.8
    waist_half = shoulder + (hip - shoulder) * 0.8

    def quad(top, top_half, bottom, bottom_half):
        return np.array([top - across * top_half, top + across * top_half,
                         bottom + across * bottom_half, bottom - across * bottom_half])

    shirt = quad(neck, shoulder, waist, waist_half)
    cv2.fillConvexPoly(image, np.round(shirt * 16).astype(np.int32), look.shirt, cv2.LINE_8, shift=4)
    if look.stripe is not None:
        mask = np.zeros(image.shape[:2], np.uint8)
        cv2.fillConvexPoly(mask, np.round(shirt * 16).astype(np.int32), 1, shift=4)
        rows = np.arange(image.shape[0])[:, None]
        period = max(4, int(round((waist[1] - neck[1]) / 4)))
        stripes = (mask > 0) & ((rows - int(neck[1])) % period >= period // 2) & (rows > neck[1] + 2)
        image[stripes] = look.stripe
    trousers = quad(waist, waist_half, pelvis, hip)
    cv2.fillConvexPoly(image, np.round(trousers * 16).astype(np.int32), look.trousers, cv2.LINE_8, shift=4)


def _draw_head(image, look, points, head, radius, yaw, shown):
    """Skin, the hair cap (over the back of the head when turned away), ears, nose, eyes."""
    _ellipse(image, head, (0.85 * radius, radius), 0, look.skin)
    away = (1 - math.cos(yaw)) / 2  # 0 facing the camera .. 1 facing away
    cap = np.zeros(image.shape[:2], np.uint8)
    centre = head + np.array([-0.3 * radius * math.sin(yaw), -0.65 * radius * (1 - away)])
    _ellipse(cap, centre, (1.0 * radius, (0.5 + 0.6 * away) * radius), 0, 1)
    skull = np.zeros_like(cap)
    _ellipse(skull, head + np.array([0, -0.05 * radius]), (0.95 * radius, 1.1 * radius), 0, 1)
    image[(cap > 0) & (skull > 0)] = look.hair
    for name in ("left_ear", "right_ear", "nose"):
        if name in shown:
            _disc(image, np.floor(points[name]), max(0.2 * radius, 1.0), look.skin)  # on the joint's pixel
    for name in ("left_eye", "right_eye"):
        if name in shown:
            x, y = (int(v) for v in points[name])
            image[y, x] = EYES


# ---------------------------------------------------------------------------------------
# The data set


def make_demo_images(out_dir, persons: int = 600, poses: int = 4, seed: int = 0, progress: bool = True) -> Path:
    """Write ``persons`` x ``poses`` renderings with OpenPose JSON beside each into ``out_dir``.

    Person ``p`` (from 1) in pose ``k`` is ``<p:04d>_c<k+1>s1_<k:06d>_00.png`` with
    ``<same stem>_keypoints.json``; its look comes from ``(seed, p)``, each image's pose
    and background from ``(seed, p, k)``, so a person is the same whatever else is made.
    Existing files are kept (an interrupted build resumes).
    """
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for person in tqdm(range(1, persons + 1), desc="pg2 demo persons", unit="person", disable=not progress):
        look = random_look(np.random.default_rng([seed, person]))
        for k in range(poses):
            stem = f"{person:04d}_c{k + 1}s1_{k:06d}_00"
            if (out_dir / f"{stem}_keypoints.json").is_file():
                continue
            rng = np.random.default_rng([seed, person, k])
            image, keypoints = render_person(look, random_pose(rng), random_background(rng))
            Image.fromarray(image).save(out_dir / f"{stem}.png")
            (out_dir / f"{stem}_keypoints.json").write_text(to_openpose_json(keypoints))
    return out_dir


# ---------------------------------------------------------------------------------------
# Scores on held-out persons


@torch.no_grad()
def score_pairs(g1, g2, data_dir, split: str = "test", max_pairs: int | None = 200, device="cpu") -> dict:
    """Mean SSIM and body-mask L1 of the generated images against the real targets.

    On the first ``max_pairs`` pairs of ``split`` (not mirrored): ``ssim`` (colour, the
    project's ``models.metrics.ssim``) and ``masked_l1`` (mean ``|generated - target|`` on
    [-1, 1] images inside the target's body mask ``pg2_pose_mask``, every channel) of
    G1 + G2, the same of G1 alone (``*_g1``) and of the condition image itself
    (``*_condition``: what copying the input scores).
    """
    from models import metrics
    from models.pg2.dataset import PG2Pairs

    pairs = PG2Pairs(data_dir, split, flip=False)
    count = len(pairs) if max_pairs is None else min(len(pairs), max_pairs)
    scores = {key: [] for key in ("ssim", "masked_l1", "ssim_g1", "masked_l1_g1", "ssim_condition",
                                  "masked_l1_condition")}
    for index in range(count):
        item = pairs[index]
        x, target = item["condition"][None].to(device), item["target"][None].to(device)
        pose, mask = item["target_pose"][None].to(device), item["target_mask"][None].to(device)
        coarse = g1(x, pose)
        images = {"": g2(x, coarse) + coarse, "_g1": coarse, "_condition": x}
        for suffix, image in images.items():
            image = image.clamp(-1, 1)
            scores[f"masked_l1{suffix}"].append(float(((image - target).abs() * mask).sum() / (3 * mask.sum())))
            scores[f"ssim{suffix}"].append(metrics.ssim(_uint8(image), _uint8(target)))
    return {**{key: float(np.mean(values)) for key, values in scores.items()}, "pairs": count}


def _uint8(image: torch.Tensor) -> np.ndarray:
    return ((image[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def example_grid(g1, g2, data_dir, split: str = "test", count: int = 4, device="cpu") -> np.ndarray:
    """Rows of condition | target pose | G1 | G1 + G2 | real target for the first ``count``
    pairs of different persons in ``split``: uint8 (count * H, 5 * W, 3)."""
    from models.pg2.dataset import PG2Pairs

    pairs = PG2Pairs(data_dir, split, flip=False)
    rows, seen = [], set()
    for index, (condition, _) in enumerate(pairs.pairs):
        person = condition.split("_", 1)[0]
        if person in seen:
            continue
        seen.add(person)
        item = pairs[index]
        x, pose = item["condition"][None].to(device), item["target_pose"][None].to(device)
        coarse = g1(x, pose)
        skeleton = pose.amax(1, keepdim=True).expand(-1, 3, -1, -1)
        rows.append([_uint8(t) for t in (x, skeleton, coarse, g2(x, coarse) + coarse, item["target"][None])])
        if len(rows) == count:
            break
    return tile_grid(rows)


# ---------------------------------------------------------------------------------------
# The whole build


DEMO_CONFIG = {"channels_base": 8, "d_channels": 16}  # published: 128 and 64
# How the demo trains each stage, where it departs from the authors' training
# (``models.pg2.train``), for a 2-core CPU and minutes instead of days:
# - batch 4 instead of 16, both stages;
# - G1 with Adam at 1e-3 instead of 2e-5: in a few hundred steps the authors' rate barely
#   moves G1 (at 2e-4 and width 16, 240 steps still drew the condition image's layout:
#   held-out SSIM 0.44, no better than copying the condition);
# - G2 and D keep the authors' 2e-5: at 2e-4 the adversarial term tinted G2's images within
#   minutes and G1 + G2 scored below G1 alone (held-out SSIM 0.32 against 0.44).
DEMO_RECIPE = {"g1": {"batch_size": 4, "lr": 1e-3}, "g2": {"batch_size": 4}}


def build_demo(out_dir, work_dir=None, g1_seconds: float = 14 * 60, g2_seconds: float = 10 * 60, seed: int = 0,
               persons: int = 600, poses: int = 4, progress: bool = True, recipe: dict | None = None,
               **sizes) -> dict:
    """Render the data, train G1 then G2, export them into ``out_dir`` and score them.

    Args:
        out_dir: the weights folder to write (``weights/demo/pg2`` for the shipped one).
        work_dir (optional): folder for the images, the dataset and the runs; an
            interrupted build resumes from it. Defaults to a new temporary folder.
        g1_seconds, g2_seconds: the training budget of each stage (0: a single step, for tests).
        seed (int, defaults to 0): of the renderings, the split and the training.
        persons, poses: how many persons, and images of each.
        progress (bool, defaults to True): progress bars.
        recipe (dict, optional): {stage: training options} in place of ``DEMO_RECIPE``.
        sizes: override ``DEMO_CONFIG`` (``channels_base``, ``d_channels``).

    Returns:
        The report also written as ``REPORT.json``: each stage's steps, seconds, stop
        reason and last losses; the held-out scores (``score_pairs``); the data's counts.
    """
    from models.pg2 import dataset, train

    sizes = dict(DEMO_CONFIG, **sizes)
    recipe = {stage: dict(options) for stage, options in (DEMO_RECIPE if recipe is None else recipe).items()}
    work = Path(work_dir or tempfile.mkdtemp(prefix="build-pg2-demo-"))
    make_demo_images(work / "images", persons, poses, seed=seed, progress=progress)
    manifest = dataset.prepare(work / "images", work / "data", keypoints="openpose", split=0.9, seed=seed,
                               progress=progress)
    runs = {}
    for stage, seconds, extra in (("g1", g1_seconds, {}), ("g2", g2_seconds, {"g1_run": str(work / "g1")})):
        runs[stage] = train.train(work / "data", stage, work / stage, time_budget=seconds or None,
                                  # The budget ends the run; without one, a single step (tests).
                                  max_steps=10**9 if seconds else 1, seed=seed, device="auto", progress=progress,
                                  sample_every=100, **recipe.get(stage, {}), **sizes, **extra)
    out_dir = train.export_weights(work / "g1", work / "g2", out_dir, name="demo (project-trained on rendered figures)")
    g1, g2 = train.load_trained(work / "g1", "g1"), train.load_trained(work / "g2", "g2")
    save_png(out_dir / "example.png", example_grid(g1, g2, work / "data"))
    report = {"held_out": score_pairs(g1, g2, work / "data"),
              **{f"{stage}": {"steps": run["step"], "trained_seconds": round(run["elapsed"], 1),
                              "stopped": run["stopped"], "losses": run["losses"]} for stage, run in runs.items()},
              "data": {"persons": len(manifest["persons"]), "images": len(manifest["images"]),
                       "pairs": manifest["pairs"]},
              "config": sizes, "recipe": recipe, "work_dir": str(work)}
    return demo.write_report(out_dir, report)
