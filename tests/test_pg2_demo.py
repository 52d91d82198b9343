"""PG2's demo: the rendered persons and their keypoints, the image files, the whole build at zero budgets."""

import argparse
import json
import math

import numpy as np
import pytest
import torch

from models.common.pipeline import read_project
from models.perception.pose import COCO18, read_openpose_json
from models.pg2 import commands, demo
from models.pg2.demo import (
    EYES,
    BodyPose,
    make_demo_images,
    random_background,
    random_look,
    random_pose,
    render_person,
)
from models.pg2.pipeline import PG2Pipeline
from models.types import PoseTransferInput

J = {name: i for i, name in enumerate(COCO18)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pixel(image, keypoints, name):
    x, y, _ = keypoints[J[name]]
    return tuple(int(v) for v in image[int(y), int(x)])


def test_every_visible_keypoint_lies_on_the_person():
    for person in range(60):
        look = random_look(np.random.default_rng([7, person]))
        for k in range(4):
            rng = np.random.default_rng([7, person, k])
            image, keypoints = render_person(look, random_pose(rng), random_background(rng))
            assert image.shape == (128, 64, 3) and image.dtype == np.uint8
            for name, (x, y, confidence) in zip(COCO18, keypoints):
                if confidence:
                    assert _pixel(image, keypoints, name) in look.colours(), (person, k, name)
                else:
                    assert x == y == 0


def _standing(yaw):
    return BodyPose(yaw=yaw, lean=0.0, arms=((-0.3, -0.2), (0.3, 0.2)), legs=((-0.05, -0.05), (0.05, 0.05)),
                    scale=1.0, shift=(0.0, 0.0))


def test_the_parts_at_the_keypoints_are_those_of_the_joints():
    look = random_look(np.random.default_rng(1))
    image, keypoints = render_person(look, _standing(0.0), np.zeros((128, 64, 3), np.uint8))
    assert keypoints[:, 2].all()  # facing the camera every joint shows
    for name in ("right_wrist", "left_wrist", "nose", "neck"):
        assert _pixel(image, keypoints, name) == look.skin, name
    for name in ("right_ankle", "left_ankle"):
        assert _pixel(image, keypoints, name) == look.shoes, name
    for name in ("right_eye", "left_eye"):
        assert _pixel(image, keypoints, name) == EYES, name
    for name in ("right_hip", "left_hip", "right_knee" if not look.shorts else "right_hip"):
        assert _pixel(image, keypoints, name) == look.trousers, name
    # facing the camera the person's right is on the image's left
    assert keypoints[J["right_shoulder"], 0] < keypoints[J["left_shoulder"], 0]
    assert keypoints[J["nose"], 1] < keypoints[J["neck"], 1] < keypoints[J["right_hip"], 1]


def test_a_person_turned_away_shows_no_face_and_in_profile_one_side():
    look = random_look(np.random.default_rng(2))
    _, back = render_person(look, _standing(math.pi))
    assert not back[[J["nose"], J["right_eye"], J["left_eye"]], 2].any()
    assert back[[J["right_ear"], J["left_ear"]], 2].all()
    assert back[J["right_shoulder"], 0] > back[J["left_shoulder"], 0]
    _, profile = render_person(look, _standing(math.pi / 2))  # facing the image's right: the right side shows
    assert profile[J["right_eye"], 2] and profile[J["right_ear"], 2] and profile[J["nose"], 2]
    assert not profile[J["left_eye"], 2] and not profile[J["left_ear"], 2]


def test_demo_images_are_named_as_market_with_their_openpose_json(tmp_path):
    make_demo_images(tmp_path, persons=2, poses=3, seed=0, progress=False)
    stems = sorted(p.stem for p in tmp_path.glob("*.png"))
    assert stems == [f"{p:04d}_c{k + 1}s1_{k:06d}_00" for p in (1, 2) for k in range(3)]
    keypoints = read_openpose_json((tmp_path / f"{stems[0]}_keypoints.json").read_bytes(), image_size=(128, 64))
    assert keypoints.shape == (18, 3) and keypoints[J["neck"], 2] == 1
    before = (tmp_path / f"{stems[0]}.png").read_bytes()
    make_demo_images(tmp_path, persons=2, poses=3, seed=0, progress=False)  # kept, and the same person again
    assert (tmp_path / f"{stems[0]}.png").read_bytes() == before


def test_build_demo_runs_end_to_end_with_zero_budgets(tmp_path):
    args = argparse.Namespace(out=str(tmp_path / "weights"), work=str(tmp_path / "work"), g1_minutes=0.0,
                              g2_minutes=0.0, seed=0, persons=8, poses=2, quiet=True)
    original = dict(demo.DEMO_CONFIG)
    demo.DEMO_CONFIG.update(channels_base=4, d_channels=4)
    try:
        report = commands.build_demo(args)
    finally:
        demo.DEMO_CONFIG.clear()
        demo.DEMO_CONFIG.update(original)
    assert report["g1"]["steps"] == report["g2"]["steps"] == 1
    held_out = report["held_out"]
    assert held_out["pairs"] > 0 and -1 <= held_out["ssim"] <= 1 and held_out["masked_l1"] >= 0
    assert report["data"]["persons"] == 8 and report["data"]["images"] == 16
    out = tmp_path / "weights"
    assert json.loads((out / "REPORT.json").read_text()) == report
    config = read_project(out)
    assert config["pose_encoding"] == "authors" and config["image_size"] == [128, 64]
    assert (out / "example.png").is_file()
    pipe = PG2Pipeline.from_project(out, device="cpu")
    image, keypoints = render_person(random_look(np.random.default_rng(0)), _standing(0.0))
    assert pipe(PoseTransferInput(image=image, pose=keypoints, pose_size=(128, 64))).shape == (128, 64, 3)
