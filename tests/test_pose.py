"""Body keypoints and the PG2 / PG2 port / Everybody Dance Now pose encodings (``models.perception.pose``).

The encodings are compared, exactly, with ``tests/data/pose_reference.npz``: what the
authors' code (PG2's ``convert_market.py``, EDN's ``data_prep/``) and the PyTorch port's
``tool/generate_pose_map_add_mask.py`` made of the same fixed keypoints, written by
``tests/data/make_pose_reference.py``. MediaPipe runs on the
public-domain astronaut photo of scikit-image.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from models.errors import InvalidInput
from models.perception import pose
from service.api import errors

REFERENCE = Path(__file__).resolve().parent / "data" / "pose_reference.npz"


@pytest.fixture(scope="module")
def ref():
    with np.load(REFERENCE) as data:
        return dict(data)


# ---------------------------------------------------------------------------------------
# PG2
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", range(4))
def test_pg2_pose_map_equals_the_authors(ref, case):
    size, rc = tuple(ref[f"pg2.{case}.size"]), ref[f"pg2.{case}.rc"]
    pose_map = pose.pg2_pose_map(rc, size)
    assert pose_map.dtype == np.int8 and pose_map.shape == (*size, 18)
    np.testing.assert_array_equal(pose_map, ref[f"pg2.{case}.map"])


@pytest.mark.parametrize("case", range(4))
def test_pg2_pose_mask_equals_the_authors(ref, case):
    size, rc = tuple(ref[f"pg2.{case}.size"]), ref[f"pg2.{case}.rc"]
    mask = pose.pg2_pose_mask(rc, size)
    assert mask.dtype == np.uint8 and mask.shape == size
    np.testing.assert_array_equal(mask, ref[f"pg2.{case}.mask"])


def test_the_reference_cases_cover_borders_and_missing_joints(ref):
    market = ref["pg2.0.rc"]
    assert (market == -1).all(axis=1).sum() == 2 and [127, 63] in market.tolist() and ref["pg2.0.mask"].any()
    assert (ref["pg2.2.map"] == -1).all() and not ref["pg2.2.mask"].any()      # nobody
    assert not ref["pg2.3.mask"].any() and (ref["pg2.3.map"][..., 5] == 1).sum() == 49   # one joint: no limb


def test_a_missing_joint_leaves_its_channel_at_minus_one():
    rc = np.full((18, 2), -1)
    rc[1] = (10, 10)
    pose_map = pose.pg2_pose_map(rc, (128, 64))
    assert set(np.unique(pose_map)) == {-1, 1}
    assert (pose_map[..., 0] == -1).all() and pose_map[10, 10, 1] == 1 and pose_map[10, 14, 1] == 1
    assert pose_map[10, 15, 1] == -1 and pose_map[13, 13, 1] == -1     # radius 4: 3^2 + 3^2 > 16


def test_keypoints_to_rc_truncates_and_drops_unsure_joints():
    keypoints = np.zeros((18, 3))
    keypoints[0] = (30.9, 12.2, 0.8)
    keypoints[1] = (5, 6, 0.1)
    rc = pose.keypoints_to_rc(keypoints)
    assert rc.dtype == np.int64
    assert rc[0].tolist() == [12, 30] and rc[1].tolist() == [-1, -1] and (rc[2:] == -1).all()


@pytest.mark.parametrize("rc, message", [
    (np.zeros((17, 2)), "18 finite"),
    (np.full((18, 2), np.nan), "18 finite"),
    (np.full((18, 2), 128.0), "outside the 64x128"),
    (np.full((18, 2), [3.0, -2.0]), "outside"),
])
def test_pg2_and_port_refuse_bad_keypoints(rc, message):
    for encode in (pose.pg2_pose_map, pose.pg2_pose_mask, pose.port_pose_map, pose.port_pose_mask):
        with pytest.raises(InvalidInput, match=message):
            encode(rc, (128, 64))


# ---------------------------------------------------------------------------------------
# PG2's PyTorch port
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", range(4))
def test_port_pose_map_equals_key_point_to_map(ref, case):
    size, rc = tuple(ref[f"pg2.{case}.size"]), ref[f"pg2.{case}.rc"]
    pose_map = pose.port_pose_map(rc, size)
    assert pose_map.dtype == np.float32 and pose_map.shape == (*size, 18)
    np.testing.assert_array_equal(pose_map, ref[f"port.{case}.map"])


@pytest.mark.parametrize("case", range(4))
def test_port_pose_mask_equals_key_point_to_mask(ref, case):
    size, rc = tuple(ref[f"pg2.{case}.size"]), ref[f"pg2.{case}.rc"]
    mask = pose.port_pose_mask(rc, size)
    assert mask.dtype == bool and mask.shape == size
    np.testing.assert_array_equal(mask, ref[f"port.{case}.mask"])


def test_port_encodings_of_integer_keypoints_as_the_port_reads_them(ref):
    # The reference ran the port on int64 keypoints here, as its annotation CSVs hold.
    rc = ref["pg2.0.rc"].astype(np.int64)
    np.testing.assert_array_equal(pose.port_pose_map(rc, (128, 64)), ref["port.0.map"])
    np.testing.assert_array_equal(pose.port_pose_mask(rc, (128, 64)), ref["port.0.mask"])


def test_the_port_reference_differs_from_pg2_where_expected(ref):
    market = ref["port.0.map"]
    assert market.min() == 0 and market.max() == 1 and market[127, 63, 13] == 1
    assert not market[..., [4, 17]].any() and (market[..., 0] == 1).sum() == 1    # missing joints: zero
    assert not ref["port.2.map"].any() and not ref["port.2.mask"].any()    # nobody
    assert ref["port.3.mask"].sum() == 109 and not ref["pg2.3.mask"].any()  # a lone joint is drawn
    assert ref["port.0.mask"].sum() > ref["pg2.0.mask"].sum()              # radius 6, not 4


def test_port_pose_map_is_a_gaussian_of_sigma_6():
    rc = np.full((18, 2), -1)
    rc[2] = (40, 20)
    pose_map = pose.port_pose_map(rc, (128, 64))
    assert pose_map[40, 20, 2] == 1 and not np.delete(pose_map, 2, axis=2).any()
    np.testing.assert_allclose(pose_map[46, 20, 2], np.exp(-0.5), rtol=1e-7)
    np.testing.assert_allclose(pose_map[40, 26, 2], pose_map[34, 20, 2], rtol=0)
    # The port's dataset feeds it channels first.
    assert pose_map.transpose(2, 0, 1).shape == (18, 128, 64)


# ---------------------------------------------------------------------------------------
# Everybody Dance Now
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", range(5))
def test_edn_stick_figure_equals_render_pose_coco(ref, case):
    canvas = pose.edn_stick_figure(ref["edn.figure.posepts"][case])
    assert canvas.dtype == np.uint8 and canvas.shape == (1080, 1920, 3)
    np.testing.assert_array_equal(canvas, ref[f"edn.figure.{case}.canvas"])


def test_edn_stick_figure_takes_a_flat_list(ref):
    posepts = ref["edn.figure.posepts"][1]
    np.testing.assert_array_equal(pose.edn_stick_figure(posepts.ravel().tolist()), ref["edn.figure.1.canvas"])


@pytest.mark.parametrize("case", range(3))
def test_edn_labels_equal_graph_train_and_the_global_stage_loader(ref, case):
    label = pose.edn_label(ref[f"edn.figure.{case}.canvas"])
    assert label.shape == (512, 1024, 3)
    np.testing.assert_array_equal(label, ref[f"edn.figure.{case}.label"])
    small = pose.edn_global_stage_label(label)
    assert small.shape == (256, 512, 3)
    np.testing.assert_array_equal(small, ref[f"edn.figure.{case}.global_label"])


def test_edn_face_box_equals_graph_train(ref):
    boxes = [list(pose.edn_face_box(p)) for p in ref["edn.face.posepts"]]
    assert boxes == ref["edn.face.boxes"].tolist()
    assert all(b[1] - b[0] == 128 and b[3] - b[2] == 128 for b in boxes)


def test_edn_fit_to_canvas_equals_scale_resize(ref):
    for size, fitted in zip(ref["edn.fit.sizes"], ref["edn.fit.fitted"]):
        np.testing.assert_array_equal(pose.edn_fit_to_canvas(ref["edn.fit.posepts"], tuple(size)), fitted)


def fitted(normalisation):
    n = normalisation
    return np.array([n.scale_close, n.scale_far, n.target_toe, n.target_horizon, n.source_toe, n.source_horizon])


@pytest.mark.parametrize("run", ["a", "b"])
def test_edn_normalisation_fit_equals_graph_posenorm(ref, run):
    # graph_posenorm.py fits on the source's frames [start, end) and transforms [start, end].
    normalisation = pose.fit_edn_normalisation(ref[f"edn.norm.{run}.target"], ref[f"edn.norm.{run}.source"][:-1])
    np.testing.assert_array_equal(fitted(normalisation), ref[f"edn.norm.{run}.fitted"])
    assert normalisation.scale_close > 0 and normalisation.scale_far > 0


@pytest.mark.parametrize("run", ["a", "b", "c"])
def test_edn_normalise_and_smooth_equal_transform_interp(ref, run):
    normalisation = pose.EdnNormalisation(*ref[f"edn.norm.{run}.fitted"])
    normalised = pose.edn_normalise(ref[f"edn.norm.{run}.source"], normalisation)
    np.testing.assert_array_equal(normalised, ref[f"edn.norm.{run}.normalised"])
    smoothed = pose.edn_median_smooth(normalised)
    np.testing.assert_array_equal(smoothed, ref[f"edn.norm.{run}.smoothed"])
    assert [list(pose.edn_face_box(p)) for p in smoothed] == ref[f"edn.norm.{run}.boxes"].tolist()


def test_edn_normalise_drops_the_frames_before_the_first_usable_one(ref):
    source = ref["edn.norm.c.source"]
    assert pose.edn_pose_stats(source[0]) is None and pose.edn_pose_stats(source[1]) is None
    assert pose.edn_pose_stats(source[7]) is None and pose.edn_pose_stats(source[2]) is not None
    assert len(ref["edn.norm.c.normalised"]) == len(source) - 2


def test_transform_interp_labels_are_the_smoothed_stick_figures(ref):
    smoothed = ref["edn.norm.c.smoothed"]
    for label, frame in zip(ref["edn.norm.c.labels"], (0, 5)):
        np.testing.assert_array_equal(pose.edn_label(pose.edn_stick_figure(smoothed[frame])), label)


def test_edn_median_smooth_of_a_short_video_is_empty():
    assert pose.edn_median_smooth(np.zeros((6, 18, 3))).shape == (0, 18, 3)


def test_edn_normalisation_refuses_videos_without_usable_frames(ref):
    headless = ref["edn.norm.a.target"].copy()
    headless[:, [0, 16, 17], 2] = 0
    with pytest.raises(InvalidInput, match="target video"):
        pose.fit_edn_normalisation(headless, ref["edn.norm.a.source"])
    still = np.repeat(ref["edn.norm.a.source"][:1], 10, axis=0)
    with pytest.raises(InvalidInput, match="never move"):
        pose.fit_edn_normalisation(ref["edn.norm.a.target"], still)
    with pytest.raises(InvalidInput, match="source video"):
        pose.edn_normalise(headless, pose.EdnNormalisation(*ref["edn.norm.a.fitted"]))


# ---------------------------------------------------------------------------------------
# OpenPose JSON
# ---------------------------------------------------------------------------------------


def some_keypoints(seed=0):
    rng = np.random.default_rng(seed)
    keypoints = np.column_stack([rng.uniform(0, 640, 18), rng.uniform(0, 480, 18), rng.uniform(0.05, 1, 18)])
    keypoints[[4, 9]] = 0
    return keypoints


def test_openpose_json_round_trip():
    keypoints = some_keypoints()
    text = pose.to_openpose_json(keypoints)
    assert json.loads(text)["people"][0]["pose_keypoints_2d"] == keypoints.ravel().tolist()
    for data in (text, text.encode(), json.loads(text)):
        np.testing.assert_array_equal(pose.read_openpose_json(data, image_size=(480, 640)), keypoints)
    crowd = pose.to_openpose_json(np.stack([keypoints, some_keypoints(1)]))
    np.testing.assert_array_equal(pose.read_openpose_json(crowd, person=1), some_keypoints(1))


def test_openpose_json_of_older_versions_and_body_25():
    coco = some_keypoints()
    old = {"version": 1.0, "people": [{"pose_keypoints": coco.ravel().tolist()}]}
    np.testing.assert_array_equal(pose.read_openpose_json(old), coco)
    # BODY_25: COCO-18's joints with the mid hip at 8 and six foot joints at the end.
    body25 = np.vstack([coco[:8], [[1, 2, 0.5]], coco[8:], np.full((6, 3), 0.7)])
    np.testing.assert_array_equal(pose.read_openpose_json({"people": [{"pose_keypoints_2d": body25.ravel().tolist()}]}),
                                  coco)


def keypoint_list(**changes):
    values = some_keypoints().ravel().tolist()
    for index, value in changes.items():
        values[int(index[1:])] = value
    return values


@pytest.mark.parametrize("data, message", [
    (b"\xff\xfe", "not valid JSON"),
    ("{people: []}", "not valid JSON"),
    ('{"people": [{"pose_keypoints_2d": [NaN]}]}', "NaN"),
    ("[]", '"people" list'),
    ({"people": []}, "has 0 people"),
    ({"people": [{"face_keypoints_2d": []}]}, "no \"pose_keypoints_2d\""),
    ({"people": [{"pose_keypoints_2d": keypoint_list()[:-1]}]}, "53 keypoint numbers"),
    ({"people": [{"pose_keypoints_2d": [0.0] * 45}]}, "expected 54"),
    ({"people": [{"pose_keypoints_2d": keypoint_list(k5="7")}]}, "numbers"),
    ({"people": [{"pose_keypoints_2d": keypoint_list(k5=True)}]}, "numbers"),
    ({"people": [{"pose_keypoints_2d": keypoint_list(k2=1.5)}]}, r"confidence is 1\.5"),
    ({"people": [{"pose_keypoints_2d": keypoint_list(k3=-4.0)}]}, "neck lies at .* negative"),
    (" " * (pose.MAX_JSON_BYTES + 1), "larger than"),
])
def test_bad_openpose_json_is_invalid_input(data, message):
    with pytest.raises(InvalidInput, match=message):
        pose.read_openpose_json(data)


def test_openpose_keypoints_outside_the_image_are_refused():
    keypoints = some_keypoints()
    keypoints[2, :2] = (700, 10)
    with pytest.raises(InvalidInput, match="right_shoulder lies at .* outside the 640x480 image"):
        pose.read_openpose_json(pose.to_openpose_json(keypoints), image_size=(480, 640))
    with pytest.raises(InvalidInput, match="person 2 does not exist"):
        pose.read_openpose_json(pose.to_openpose_json(keypoints), person=2)


def test_bad_pose_input_is_a_400_from_the_service():
    app = FastAPI()
    errors.install(app)

    @app.post("/pose")
    async def read_pose(request: Request):
        return {"keypoints": pose.read_openpose_json(await request.body()).tolist()}

    client = TestClient(app)
    good = client.post("/pose", content=pose.to_openpose_json(some_keypoints()))
    assert good.status_code == 200 and np.array_equal(good.json()["keypoints"], some_keypoints())
    bad = client.post("/pose", content=json.dumps({"people": [{"pose_keypoints_2d": [1.0, 2.0]}]}))
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_input" and "2 keypoint numbers" in bad.json()["error"]["message"]


# ---------------------------------------------------------------------------------------
# MediaPipe
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mediapipe():
    return pytest.importorskip("mediapipe", reason="MediaPipe (pip install 'talkingface[pose]')")


@pytest.fixture(scope="module")
def astronaut_keypoints(mediapipe):
    image = np.ascontiguousarray(skimage.data.astronaut())
    return image, pose.body_keypoints(image)


def joint(keypoints, name):
    return keypoints[pose.COCO18.index(name)]


def test_body_keypoints_of_the_astronaut_sit_where_her_face_and_shoulders_are(astronaut_keypoints):
    image, keypoints = astronaut_keypoints
    assert keypoints.shape == (18, 3)
    nose, neck = joint(keypoints, "nose"), joint(keypoints, "neck")
    right_eye, left_eye = joint(keypoints, "right_eye"), joint(keypoints, "left_eye")
    right_shoulder, left_shoulder = joint(keypoints, "right_shoulder"), joint(keypoints, "left_shoulder")
    for found in (nose, neck, right_eye, left_eye, right_shoulder, left_shoulder, joint(keypoints, "right_ear")):
        assert found[2] >= 0.5
    # She faces the camera: her right is the image's left.
    assert right_eye[0] < nose[0] < left_eye[0] and right_shoulder[0] < neck[0] < left_shoulder[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < neck[1]
    np.testing.assert_allclose(neck[:2], (right_shoulder[:2] + left_shoulder[:2]) / 2)
    # The face is in the upper left quarter of the photo, around (220, 120).
    assert 150 < nose[0] < 300 and 60 < nose[1] < 200
    assert 150 < left_shoulder[0] - right_shoulder[0] < 300
    # Her legs are below the frame: missing, as OpenPose writes them.
    for name in ("right_knee", "left_knee", "right_ankle", "left_ankle"):
        assert joint(keypoints, name).tolist() == [0, 0, 0]
    present = keypoints[:, 2] > 0
    assert (keypoints[present, 0] < image.shape[1]).all() and (keypoints[present, 1] < image.shape[0]).all()


def test_body_keypoints_round_trip_through_openpose_json(astronaut_keypoints):
    image, keypoints = astronaut_keypoints
    again = pose.read_openpose_json(pose.to_openpose_json(keypoints), image_size=image.shape[:2])
    np.testing.assert_array_equal(again, keypoints)


def test_body_keypoints_download_nothing(mediapipe, monkeypatch):
    def offline(*args, **kwargs):
        raise AssertionError("MediaPipe tried to download a model")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    pose._mediapipe_pose.cache_clear()
    keypoints = pose.body_keypoints(np.ascontiguousarray(skimage.data.astronaut()))
    assert joint(keypoints, "nose")[2] > 0.5


def test_body_keypoints_of_an_empty_picture_or_a_non_image_are_invalid_input(mediapipe):
    with pytest.raises(InvalidInput, match="no person"):
        pose.body_keypoints(np.full((256, 256, 3), 127, np.uint8))
    with pytest.raises(InvalidInput, match="uint8 RGB"):
        pose.body_keypoints(np.zeros((64, 64), np.float32))
