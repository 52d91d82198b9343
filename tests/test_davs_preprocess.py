"""DAVS face alignment (face_align.py + the loaders' crop), network tensors and paste-back."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models.davs import preprocess as pp
from models.errors import InvalidInput
from models.perception.face import find_face
from models.perception.paste import PasteBack

FACE_JPG = Path(__file__).resolve().parent.parent / "examples" / "face.jpg"


def face_coords(canvas_xy):
    """Canvas pixel -> 256-face pixel, by hand: cut at (44, 104), 268 -> 260, offset 2."""
    canvas_xy = np.asarray(canvas_xy, dtype=np.float64)
    return (canvas_xy - [44, 104] + 0.5) * 260 / 268 - 0.5 - 2


# Where the authors' template points (70, 112), (110, 112), (90, 150) x 2 end up.
TEMPLATE_256 = face_coords([[140, 224], [220, 224], [180, 300]])


def landmarks_for(left_eye, right_eye, mouth, spread=4.0):
    """68 points whose eye centres and mouth-corner midpoint are the given points."""
    lm = np.zeros((68, 2))
    ring = spread * np.array([[np.cos(a), np.sin(a)] for a in np.linspace(0, 2 * np.pi, 7)[:-1]])
    lm[36:42] = np.asarray(left_eye) + ring
    lm[42:48] = np.asarray(right_eye) + ring
    lm[48] = np.asarray(mouth) + [-15.0, 2.0]
    lm[54] = np.asarray(mouth) + [15.0, -2.0]
    lm[:36] = lm[55:] = np.asarray(mouth) - [0.0, 40.0]  # unused by the alignment
    return lm


def similar_points(angle_deg, scale, shift):
    """The canvas template moved by a known similarity: a face in some photo."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (pp.TEMPLATE - pp.TEMPLATE.mean(axis=0)) @ rot.T * scale + shift


def blob_image(points, size=(480, 640), sigma=2.5):
    """Grey image with a bright Gaussian blob of its own colour channel at each point."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.full((h, w, 3), 20.0)
    for channel, (x, y) in enumerate(points):
        image[..., channel] += 220 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def blob_centre(image, channel, near, radius=9):
    """Intensity-weighted centroid of one channel's blob around ``near``."""
    x0, y0 = np.rint(near).astype(int)
    patch = image[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1, channel]
    weight = np.clip(patch.astype(np.float64) - 20, 0, None)
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    total = weight.sum()
    return np.array([x0 + (weight * xx).sum() / total, y0 + (weight * yy).sum() / total])


# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------


def test_template_lands_where_the_authors_put_it():
    np.testing.assert_allclose(TEMPLATE_256, [[91.119, 114.403], [168.731, 114.403],
                                              [129.925, 188.134]], atol=1e-3)


@pytest.mark.parametrize("angle,scale,shift", [(0, 1.0, (320, 240)), (17, 1.35, (300, 260)),
                                                (-28, 0.7, (350, 220))])
def test_key_points_land_on_the_template(angle, scale, shift):
    points = similar_points(angle, scale, shift)
    image = blob_image(points)
    face, matrix = pp.align_face(image, landmarks_for(*points))
    assert face.shape == (256, 256, 3) and face.dtype == np.uint8
    # The matrix maps the key points exactly onto the template...
    mapped = np.c_[points, np.ones(3)] @ matrix.T
    np.testing.assert_allclose(mapped, TEMPLATE_256, atol=1e-9)
    # ...and the warped pixels agree: each blob's centre is on its template point.
    for channel in range(3):
        centre = blob_centre(face, channel, TEMPLATE_256[channel])
        np.testing.assert_allclose(centre, TEMPLATE_256[channel], atol=0.15)


def test_pixels_follow_the_matrix():
    # Bilinear sampling reproduces a linear ramp, so each face pixel must hold the ramp's
    # value at the image point the inverse matrix gives, wherever that point is inside.
    h, w = 480, 640
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    image = np.stack([xx * 255 / (w - 1), yy * 255 / (h - 1), np.full((h, w), 60.0)], axis=-1)
    image = np.rint(image).astype(np.uint8)
    points = similar_points(23, 1.2, (310, 250))
    face, matrix = pp.align_face(image, landmarks_for(*points))
    back = pp.invert_transform(matrix)
    v, u = np.mgrid[0:256, 0:256].astype(np.float64)
    x = back[0, 0] * u + back[0, 1] * v + back[0, 2]
    y = back[1, 0] * u + back[1, 1] * v + back[1, 2]
    inside = (x > 3) & (x < w - 4) & (y > 3) & (y < h - 4)
    assert inside.mean() > 0.9
    np.testing.assert_allclose(face[..., 0][inside], (x * 255 / (w - 1))[inside], atol=2.0)
    np.testing.assert_allclose(face[..., 1][inside], (y * 255 / (h - 1))[inside], atol=2.0)


def test_outside_the_image_is_grey_127():
    points = similar_points(0, 0.5, (60, 60))  # a small face in the corner
    image = np.full((200, 200, 3), 200, dtype=np.uint8)
    face, _ = pp.align_face(image, landmarks_for(*points))
    assert (face[:10, :10] == 127).all()


def test_fit_is_the_std_scaled_procrustes_of_face_align():
    # Three points that no similarity maps exactly onto the template.
    src = np.array([[210.0, 305.0], [290.0, 296.0], [262.0, 390.0]])
    dst = pp.TEMPLATE
    m = pp.similarity_from_points(src, dst)
    a = m[:, :2]
    scale = np.sqrt(abs(np.linalg.det(a)))
    assert np.linalg.det(a) > 0
    np.testing.assert_allclose(a @ a.T / scale**2, np.eye(2), atol=1e-12)  # s R
    np.testing.assert_allclose(scale, (dst - dst.mean(0)).std() / (src - src.mean(0)).std())
    np.testing.assert_allclose(m @ [*src.mean(0), 1], dst.mean(0), atol=1e-9)  # centroids
    # The rotation is the one that best fits at that scale (brute force over angles).
    theta = np.linspace(-np.pi, np.pi, 72001)[:, None]  # (K, 1)
    x, y = (src - src.mean(0)).T * scale  # (3,) each
    moved_x = np.cos(theta) * x - np.sin(theta) * y + dst.mean(0)[0]  # (K, 3)
    moved_y = np.sin(theta) * x + np.cos(theta) * y + dst.mean(0)[1]
    cost = ((moved_x - dst[:, 0]) ** 2 + (moved_y - dst[:, 1]) ** 2).sum(axis=1)
    best = theta[np.argmin(cost), 0]
    np.testing.assert_allclose(np.arctan2(a[1, 0], a[0, 0]), best, atol=1e-4)


def test_eye_weight_two_counts_each_eye_twice():
    src = np.array([[210.0, 305.0], [290.0, 296.0], [262.0, 390.0]])
    lm = landmarks_for(*src)
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    _, single = pp.align_face(image, lm)
    _, double = pp.align_face(image, lm, eye_weight=2)
    order = [0, 1, 0, 1, 2]  # process256_224.py: left, right, left, right, mouth
    to_canvas = pp.similarity_from_points(src[order], pp.TEMPLATE[order])
    xy = np.c_[np.random.default_rng(2).uniform(0, 600, size=(20, 2)), np.ones(20)]
    np.testing.assert_allclose(xy @ double.T, face_coords(xy @ to_canvas.T), atol=1e-9)
    assert np.abs(single - double).max() > 1e-3  # not an exact fit, so the weights matter


def test_inverse_round_trips():
    points = similar_points(12, 0.9, (300, 240))
    _, matrix = pp.align_face(np.zeros((480, 640, 3), np.uint8), landmarks_for(*points))
    back = pp.invert_transform(matrix)
    xy = np.random.default_rng(0).uniform(0, 600, size=(50, 2))
    there = np.c_[xy, np.ones(50)] @ matrix.T
    np.testing.assert_allclose(np.c_[there, np.ones(50)] @ back.T, xy, atol=1e-9)


def test_bad_inputs_are_refused():
    lm = landmarks_for((100, 100), (150, 100), (125, 150))
    with pytest.raises(InvalidInput):
        pp.align_face(np.zeros((100, 100), np.uint8), lm)
    with pytest.raises(InvalidInput):
        pp.align_face(np.zeros((100, 100, 3), np.float32), lm)
    with pytest.raises(InvalidInput):
        pp.align_face(np.zeros((100, 100, 3), np.uint8), lm[:5])
    with pytest.raises(InvalidInput):
        pp.align_face(np.zeros((100, 100, 3), np.uint8), np.zeros((68, 2)))


# ---------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------


def test_face_tensor_is_rgb_over_255():
    faces = np.random.default_rng(1).integers(0, 256, size=(2, 256, 256, 3), dtype=np.uint8)
    x = pp.face_tensor(faces)
    assert x.shape == (2, 3, 256, 256) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert x[1, 2, 10, 20] == torch.tensor(faces[1, 10, 20, 2] / 255, dtype=torch.float32)
    assert pp.face_tensor(faces[0]).shape == (1, 3, 256, 256)
    with pytest.raises(InvalidInput):
        pp.face_tensor(np.zeros((260, 260, 3), np.uint8))


def test_identity_tensor_cuts_254_and_resizes_to_256():
    # Column ramp: the loader's slice [2:258] keeps columns 2..255 (254 of them) and
    # cv2.resize samples them at (x + 0.5) * 254 / 256 - 0.5.
    ramp = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (256, 1, 3))
    x = pp.identity_tensor(ramp)
    assert x.shape == (1, 3, 256, 256) and x.dtype == torch.float32
    cols = np.arange(1, 255)
    expected = ((cols + 0.5) * 254 / 256 - 0.5 + 2) / 255
    np.testing.assert_allclose(x[0, 0, 100, 1:255].numpy(), expected, atol=1e-6)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_tensor_to_images_truncates_like_tensor2im():
    t = torch.tensor([0.0, 0.5, 0.999, 1.0, 1.2, -0.1]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    img = pp.tensor_to_images(t)
    assert img.shape == (1, 1, 6, 3) and img.dtype == np.uint8
    assert img[0, 0, :, 0].tolist() == [0, 127, 254, 255, 255, 0]


# ---------------------------------------------------------------------------
# A real photo with dlib
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_and_landmarks():
    rgb = cv2.cvtColor(cv2.imread(str(FACE_JPG)), cv2.COLOR_BGR2RGB)
    _, landmarks, _ = find_face(rgb)
    return rgb, landmarks


def test_real_face_aligns_onto_the_template(photo_and_landmarks):
    rgb, landmarks = photo_and_landmarks
    face, matrix = pp.align_face(rgb, landmarks)
    mapped = np.c_[pp.key_points(landmarks), np.ones(3)] @ matrix.T
    # Three points, four degrees of freedom: close to the template, not on it.
    assert np.abs(mapped - TEMPLATE_256).max() < 5.0
    # dlib finds the same face in the aligned crop, with its key points where the matrix says.
    _, again, _ = find_face(face)
    error = np.linalg.norm(pp.key_points(again) - mapped, axis=1)
    assert error.max() < 5.0 and error.mean() < 3.0, error


def test_paste_back_restores_the_photo(photo_and_landmarks):
    rgb, landmarks = photo_and_landmarks
    face, matrix = pp.align_face(rgb, landmarks)
    paste = PasteBack(rgb, matrix, pp.FACE_SIZE, feather=12.0)
    shifted = np.roll(face, 2, axis=1)
    frames = paste(np.stack([face, shifted, np.zeros_like(face)]))
    assert frames.shape == (3,) + rgb.shape and frames.dtype == np.uint8
    ys, xs = paste.region
    # Pasting the aligned face back gives the photo again, up to two resamplings (the
    # face is shrunk by 0.88 on the way in), and far better than a face 2 px off.
    error = [np.abs(f[ys, xs].astype(int) - rgb[ys, xs]).mean() for f in frames[:2]]
    assert error[0] < 5.0 and error[1] > 1.5 * error[0], error
    # A black face darkens the face area only, the key points' surroundings fully.
    changed = np.any(frames[2] != rgb, axis=-1)
    assert not changed[: ys.start].any() and not changed[ys.stop :].any()
    assert not changed[:, : xs.start].any() and not changed[:, xs.stop :].any()
    for x, y in np.rint(pp.key_points(landmarks)).astype(int):
        assert (frames[2][y - 3 : y + 4, x - 3 : x + 4] == 0).all()
