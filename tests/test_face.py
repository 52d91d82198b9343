"""Face detection, landmarks and ATVGnet's reference-face preparation (demo.py's steps).

The ATVGnet arrays (base_68.npy, mean_shape_img.npy, mean_shape_norm.npy, S.npy) are
looked for in $ATVGNET_BASICS_DIR when set, else in the weights folder
($TALKINGFACE_WEIGHTS_DIR or ./weights, and its atvgnet/ subfolder), else in
../shared/reference/atvgnet. Without them the tests use synthetic stand-ins with the
same shapes and properties (orthonormal basis, face-like templates), so they never skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import matplotlib.cbook as cbook
import matplotlib.pyplot as plt
import numpy as np
import pytest
import skimage.data
from scipy.spatial import procrustes
from skimage import transform as sktf

from models.atvgnet import preprocess as pp
from models.errors import InvalidInput, NoFaceFound
from models.perception import face
from models.perception.paste import PasteBack, paste_back
from models.weights import weights_dir

BASICS = ("base_68", "mean_shape_img", "mean_shape_norm", "S")


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut())


@pytest.fixture(scope="module")
def grace() -> np.ndarray:
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.ascontiguousarray(plt.imread(path))


@pytest.fixture(scope="module")
def astronaut_face(astronaut):
    return face.find_face(astronaut)


@pytest.fixture(scope="module")
def grace_face(grace):
    return face.find_face(grace)


def _basics_dirs() -> list[Path]:
    if os.environ.get("ATVGNET_BASICS_DIR"):
        return [Path(os.environ["ATVGNET_BASICS_DIR"])]
    root = weights_dir()
    shared = Path(__file__).resolve().parents[2] / "shared" / "reference" / "atvgnet"
    return [root / "atvgnet", root, shared]


def _synthetic_basics(landmarks163: np.ndarray) -> dict[str, np.ndarray]:
    """Stand-ins: a template from a real face, an orthonormal random basis."""
    rng = np.random.default_rng(0)
    angle = np.deg2rad(4.0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    turned = landmarks163 @ rot.T
    turned -= turned.min(axis=0)
    base_68 = np.rint(turned * (115.0 / turned.max()) + 10.0).astype(np.int64)  # in [10, 125]
    ms_img = landmarks163 * 2.7 + 110.0
    standardised = ms_img - ms_img.mean(axis=0)
    ms_norm = (standardised / np.linalg.norm(standardised)).reshape(1, 136)
    q, _ = np.linalg.qr(rng.standard_normal((136, 100)))
    return {"base_68": base_68, "mean_shape_img": ms_img, "mean_shape_norm": ms_norm, "S": q.T}


@pytest.fixture(scope="module")
def basics(astronaut, astronaut_face) -> dict[str, np.ndarray]:
    for folder in _basics_dirs():
        if all((folder / f"{name}.npy").is_file() for name in BASICS):
            return {name: np.load(folder / f"{name}.npy") for name in BASICS}
    box, landmarks, _ = astronaut_face
    _, landmarks163, _ = pp.crop_face(astronaut, box, landmarks)
    return _synthetic_basics(landmarks163)


def demo_crop(image: np.ndarray, box: face.Box, shape: np.ndarray):
    """demo.py crop_image's arithmetic, stated directly (in-bounds faces only)."""
    x, y = box.left, box.top
    w, h = box.right - box.left, box.bottom - box.top
    cx, cy = x + int(0.5 * w), y + int(0.5 * h)
    r = int(0.64 * h)
    nx, ny = cx - r, cy - r
    roi = cv2.resize(image[ny : ny + 2 * r, nx : nx + 2 * r], (163, 163),
                     interpolation=cv2.INTER_AREA)
    return roi, (shape - np.array([nx, ny])) * (163.0 / (2 * r))


def open_mouth_constant(ms_norm: np.ndarray, S: np.ndarray) -> np.ndarray:
    """ms_norm plus the demo's open-mouth offset: -0.06 on basis vector 1, mouth points
    only, projected onto the basis and subtracted."""
    offset = np.zeros(136)
    offset[96:] = -0.06 * S[1, 96:]
    return ms_norm.reshape(136) - S.T @ (S @ offset)


# ---------------------------------------------------------------------------
# detection and landmarks
# ---------------------------------------------------------------------------


def test_predictor_path_exists():
    path = face.predictor_path()
    assert path.name == "shape_predictor_68_face_landmarks.dat"
    assert path.is_file() and path.stat().st_size > 50_000_000


@pytest.mark.parametrize(
    ("photo", "centre_range"),
    [("astronaut", ((190, 250), (90, 150))), ("grace", ((230, 320), (190, 280)))],
)
def test_detects_one_plausible_face(photo, centre_range, request):
    image = request.getfixturevalue(photo)
    box, landmarks, n_faces = request.getfixturevalue(f"{photo}_face")
    assert n_faces == 1
    assert len(face.detect_faces(image)) == 1
    (x_lo, x_hi), (y_lo, y_hi) = centre_range
    assert x_lo < (box.left + box.right) / 2 < x_hi
    assert y_lo < (box.top + box.bottom) / 2 < y_hi
    assert 60 <= box.width <= 300 and 0.8 < box.height / box.width < 1.25
    assert box.area == box.width * box.height
    assert landmarks.shape == (68, 2) and landmarks.dtype == np.int64
    inside = ((landmarks[:, 0] >= box.left - 5) & (landmarks[:, 0] <= box.right + 5)
              & (landmarks[:, 1] >= box.top - 5) & (landmarks[:, 1] <= box.bottom + 15))
    assert inside.mean() > 0.9
    # anatomy: eyes above the nose tip above the mouth, left eye left of right eye
    assert landmarks[36:42, 1].mean() < landmarks[30, 1] < landmarks[48:68, 1].mean()
    assert landmarks[36:42, 0].mean() < landmarks[42:48, 0].mean()


def test_landmarks_same_from_gray_and_rgb(astronaut, astronaut_face):
    box, landmarks, _ = astronaut_face
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(face.landmarks68(gray, box), landmarks)


def test_no_face_raises():
    grey = np.full((240, 320, 3), 128, dtype=np.uint8)
    assert face.detect_faces(grey) == []
    with pytest.raises(NoFaceFound, match="no face found in the image"):
        face.find_face(grey)


def test_rejects_non_image():
    with pytest.raises(InvalidInput):
        face.find_face(np.zeros((64, 64, 3), dtype=np.float32))
    with pytest.raises(InvalidInput):
        face.find_face(np.zeros((64, 64, 4), dtype=np.uint8))


def test_two_faces_largest_first(astronaut):
    small = cv2.resize(astronaut, (320, 320), interpolation=cv2.INTER_AREA)
    right = np.zeros_like(astronaut[:, :320])
    right[96:416] = small
    image = np.ascontiguousarray(np.concatenate([astronaut, right], axis=1))  # (512, 832, 3)

    boxes = face.detect_faces(image)
    assert len(boxes) == 2
    assert boxes[0].area > boxes[1].area
    assert boxes[0].right <= 512 < boxes[1].left

    box, _, n_faces = face.find_face(image, face_index=1)
    assert n_faces == 2 and box == boxes[1]
    with pytest.raises(InvalidInput, match="2 faces"):
        face.find_face(image, face_index=2)


# ---------------------------------------------------------------------------
# crop
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("photo", ["astronaut", "grace"])
def test_crop_matches_demo_arithmetic(photo, request):
    image = request.getfixturevalue(photo)
    box, landmarks, _ = request.getfixturevalue(f"{photo}_face")
    roi, landmarks163, crop = pp.crop_face(image, box, landmarks)
    expected_roi, expected_landmarks = demo_crop(image, box, landmarks)

    assert roi.dtype == np.uint8 and roi.shape == (163, 163, 3)
    np.testing.assert_array_equal(roi, expected_roi)
    assert landmarks163.dtype == np.float64
    np.testing.assert_array_equal(landmarks163, expected_landmarks)
    r = int(0.64 * box.height)
    assert crop.size == 2 * r and crop.scale == 163.0 / (2 * r)
    assert (crop.x0, crop.y0) == (box.left + int(0.5 * box.width) - r,
                                  box.top + int(0.5 * box.height) - r)


def test_crop_leaving_the_image_is_padded(astronaut, astronaut_face):
    box, landmarks, _ = astronaut_face
    roi, landmarks163, crop = pp.crop_face(astronaut, box, landmarks)
    # Shift the photo so the crop square starts 7 px left of and 6 px above the image.
    dx, dy = crop.x0 + 7, crop.y0 + 6
    shifted = np.ascontiguousarray(astronaut[dy:, dx:])
    moved = face.Box(box.left - dx, box.top - dy, box.right - dx, box.bottom - dy)
    roi2, landmarks2, crop2 = pp.crop_face(shifted, moved, landmarks - np.array([dx, dy]))

    assert roi2.shape == (163, 163, 3) and roi2.dtype == np.uint8
    assert (crop2.x0, crop2.y0, crop2.size) == (-7, -6, crop.size)
    assert not roi2[:5, :5].any()  # black padding, not wrapped-around pixels
    np.testing.assert_array_equal(roi2[16:, 16:], roi[16:, 16:])
    np.testing.assert_allclose(landmarks2, landmarks163)

    # End to end on the shifted photo, with the detector's own box.
    box3, landmarks3, _ = face.find_face(shifted)
    roi3, landmarks3_163, crop3 = pp.crop_face(shifted, box3, landmarks3)
    assert roi3.shape == (163, 163, 3) and (crop3.x0 < 0 or crop3.y0 < 0)
    assert np.all((landmarks3_163 > -10) & (landmarks3_163 < 173))  # dlib's chin may overshoot


def test_crop_rejects_tiny_box(astronaut):
    with pytest.raises(InvalidInput):
        pp.crop_face(astronaut, face.Box(10, 10, 11, 11), np.zeros((68, 2), np.int64))


# ---------------------------------------------------------------------------
# template and alignment
# ---------------------------------------------------------------------------


def test_choose_template_uses_eye_opening():
    base, close = np.zeros((68, 2)), np.ones((68, 2))
    open_eyes = np.zeros((68, 2))
    open_eyes[37:39, 1], open_eyes[40:42, 1] = 50.0, 55.0  # gap sum -10 < -9
    closed_eyes = np.zeros((68, 2))
    closed_eyes[37:39, 1], closed_eyes[40:42, 1] = 50.0, 54.0  # gap sum -8
    assert pp.choose_template(open_eyes, base, close) is base
    assert pp.choose_template(closed_eyes, base, close) is close
    assert pp.choose_template(closed_eyes, base, None) is base


@pytest.mark.parametrize("photo", ["astronaut", "grace"])
def test_align_puts_template_points_in_place(photo, basics, request):
    image = request.getfixturevalue(photo)
    box, landmarks, _ = request.getfixturevalue(f"{photo}_face")
    roi, landmarks163, _ = pp.crop_face(image, box, landmarks)
    template = pp.choose_template(landmarks163, basics["base_68"])
    face128, tform, landmarks128 = pp.align_face(roi, landmarks163, template)

    assert face128.dtype == np.uint8 and face128.shape == (128, 128, 3)
    assert isinstance(tform, sktf.SimilarityTransform)
    assert landmarks128.shape == (68, 2)
    error = np.linalg.norm(landmarks128[27:45] - (template[27:45] - 1), axis=1)
    assert error.mean() < 4.0
    assert np.all((landmarks128 > -5) & (landmarks128 < 133))

    # demo.py's steps, stated directly: estimate, warp, truncate, cut.
    expected_tform = sktf.estimate_transform(
        "similarity", np.float32(template[27:45]), np.float32(landmarks163[27:45]))
    warped = sktf.warp(roi, expected_tform, output_shape=(163, 163))
    expected = np.array(warped * 255, dtype=np.uint8)[1:129, 1:129]
    np.testing.assert_array_equal(face128, expected)


# ---------------------------------------------------------------------------
# landmark normalisation
# ---------------------------------------------------------------------------


def test_norm_landmarks_single_image_is_a_constant(astronaut_face, grace_face, basics):
    ms_img, ms_norm, S = basics["mean_shape_img"], basics["mean_shape_norm"], basics["S"]
    pred_a, norm_a = pp.norm_landmarks(astronaut_face[1], ms_img, ms_norm, S)
    pred_g, norm_g = pp.norm_landmarks(grace_face[1], ms_img, ms_norm, S)

    assert pred_a.shape == norm_a.shape == (1, 136)
    assert not np.allclose(norm_a, norm_g, atol=1e-3)  # the faces do differ...
    np.testing.assert_array_equal(pred_a, pred_g)  # ...their normalised landmarks do not
    np.testing.assert_allclose(pred_a[0], open_mouth_constant(ms_norm, S), atol=1e-12)
    assert np.abs(pred_a[0] - ms_norm.reshape(136)).max() > 1e-4  # the offset is not nil


def test_norm_landmarks_sequence(astronaut_face, grace_face, basics):
    ms_img, ms_norm, S = basics["mean_shape_img"], basics["mean_shape_norm"], basics["S"]
    a, g = astronaut_face[1].astype(np.float64), grace_face[1].astype(np.float64)
    frames = np.stack([a, g, 0.5 * (a + g) + 3.0])
    pred, norm = pp.norm_landmarks(frames, ms_img, ms_norm, S)

    assert pred.shape == norm.shape == (3, 136)
    constant = open_mouth_constant(ms_norm, S)
    np.testing.assert_allclose(pred[-1], constant, atol=1e-12)
    for i, frame in enumerate(frames):
        _, aligned, _ = procrustes(ms_img, frame)
        np.testing.assert_allclose(norm[i], aligned.reshape(136), atol=1e-12)
        # every frame relative to the last one, re-projected onto the basis
        np.testing.assert_allclose(pred[i], constant + S.T @ (S @ (norm[i] - norm[-1])),
                                   atol=1e-12)


def test_norm_landmarks_rejects_bad_shapes(basics):
    with pytest.raises(InvalidInput):
        pp.norm_landmarks(np.zeros((5, 2)), basics["mean_shape_img"],
                          basics["mean_shape_norm"], basics["S"])
    with pytest.raises(InvalidInput):
        pp.norm_landmarks(np.ones((68, 2)), basics["mean_shape_img"],
                          basics["mean_shape_norm"], basics["S"])


# ---------------------------------------------------------------------------
# paste back
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aligned_grace(grace, grace_face, basics):
    box, landmarks, _ = grace_face
    roi, landmarks163, crop = pp.crop_face(grace, box, landmarks)
    template = pp.choose_template(landmarks163, basics["base_68"])
    face128, tform, _ = pp.align_face(roi, landmarks163, template)
    return face128, crop, tform


def _outside_square(shape, crop, margin=2) -> np.ndarray:
    outside = np.ones(shape[:2], dtype=bool)
    y0, x0 = max(crop.y0 - margin, 0), max(crop.x0 - margin, 0)
    outside[y0 : crop.y0 + crop.size + margin, x0 : crop.x0 + crop.size + margin] = False
    return outside


def test_paste_back_round_trip(grace, aligned_grace):
    face128, crop, tform = aligned_grace
    frames = paste_back(grace, face128[None], pp.face_transform(crop, tform), pp.FACE_SIZE, bounds=crop.bounds)
    assert frames.shape == (1,) + grace.shape and frames.dtype == np.uint8

    s = crop.size
    centre = (slice(crop.y0 + s // 4, crop.y0 + 3 * s // 4),
              slice(crop.x0 + s // 4, crop.x0 + 3 * s // 4))
    diff = np.abs(frames[0].astype(np.int16) - grace.astype(np.int16))
    assert diff[centre].mean() < 10.0  # resampled twice, so close but not equal
    # compared with a blur of the photo the round trip is much closer: no misplacement
    blurred = cv2.GaussianBlur(grace, (0, 0), 0.9).astype(np.int16)
    assert np.abs(frames[0].astype(np.int16) - blurred)[centre].mean() < 4.0
    outside = _outside_square(grace.shape, crop)
    np.testing.assert_array_equal(frames[0][outside], grace[outside])


def test_paste_back_replaces_the_face(grace, aligned_grace):
    face128, crop, tform = aligned_grace
    paste = PasteBack(grace, pp.face_transform(crop, tform), pp.FACE_SIZE, feather=8.0, bounds=crop.bounds)
    faces = np.stack([np.full((128, 128, 3), (255, 0, 0), np.uint8), face128,
                      np.full((128, 128, 3), (0, 0, 255), np.uint8)])
    frames = paste(faces)
    assert frames.shape == (3,) + grace.shape

    s = crop.size
    centre = (slice(crop.y0 + 3 * s // 8, crop.y0 + 5 * s // 8),
              slice(crop.x0 + 3 * s // 8, crop.x0 + 5 * s // 8))
    assert np.all(frames[0][centre] == (255, 0, 0))
    assert np.all(frames[2][centre] == (0, 0, 255))
    outside = _outside_square(grace.shape, crop)
    for frame in frames:
        np.testing.assert_array_equal(frame[outside], grace[outside])

    # feathered edge: between the photo and the pasted colour, no step
    row = frames[0][crop.y0 + s // 2, :, 0].astype(np.int16)
    left = np.flatnonzero(row[: crop.x0 + s // 2] == 255)[0]
    assert np.all(row[left - 4 : left] < 255)

    # chunks give the same frames as one call
    np.testing.assert_array_equal(np.concatenate([paste(faces[:1]), paste(faces[1:])]), frames)


def test_paste_back_face_leaving_the_image(astronaut, astronaut_face, basics):
    box, landmarks, _ = astronaut_face
    _, _, crop = pp.crop_face(astronaut, box, landmarks)
    dx, dy = crop.x0 + 20, crop.y0 + 15
    shifted = np.ascontiguousarray(astronaut[dy:, dx:])
    moved = face.Box(box.left - dx, box.top - dy, box.right - dx, box.bottom - dy)
    roi, landmarks163, crop2 = pp.crop_face(shifted, moved, landmarks - np.array([dx, dy]))
    face128, tform, _ = pp.align_face(roi, landmarks163, basics["base_68"])
    frames = paste_back(shifted, np.stack([face128] * 2), pp.face_transform(crop2, tform), pp.FACE_SIZE,
                        bounds=crop2.bounds)
    assert frames.shape == (2,) + shifted.shape
    outside = _outside_square(shifted.shape, crop2)
    np.testing.assert_array_equal(frames[1][outside], shifted[outside])
