"""Body keypoints (COCO-18) and the pose encodings of PG2, its PyTorch port and Everybody Dance Now.

Keypoints are the 18 body joints of OpenPose's COCO model, in its order (``COCO18``): nose,
neck, right shoulder / elbow / wrist, left shoulder / elbow / wrist, right hip / knee /
ankle, left hip / knee / ankle, right eye, left eye, right ear, left ear. "Right" is the
person's right. They come as float ``(18, 3)`` arrays of ``(x, y, confidence)`` in pixels,
a missing joint being ``(0, 0, 0)`` as OpenPose writes it, from

- ``body_keypoints``: MediaPipe's pose landmarker (the "full" model bundled in the
  ``mediapipe==0.10.14`` wheel; nothing is downloaded), its 33 landmarks mapped to COCO-18
  with the neck at the shoulders' midpoint;
- ``read_openpose_json``: an OpenPose JSON file (COCO-18 or BODY_25), validated.

The encodings follow the authors' code exactly (``tests/data/make_pose_reference.py`` runs
that code and ``tests/test_pose.py`` compares):

- PG2, Ma et al., "Pose Guided Person Image Generation", NeurIPS 2017
  (https://github.com/charliememory/Pose-Guided-Person-Image-Generation): the 18-channel
  pose map (``_getSparsePose`` then ``_sparse2dense`` of ``datasets/convert_market.py``,
  times 2 minus 1 as ``trainer.py`` feeds it) and the body mask (``_getPoseMask``).
  They take ``keypoints_rc``: ``(row, col)`` pairs with ``(-1, -1)`` for a missing joint.
  PG2 itself reads OpenPose's heat-map peaks (``(x, y, score, id)``, none when missing);
  ``(row, col)`` with -1 is the layout of the Market-1501 and DeepFashion keypoint files
  that later pose-transfer code (Siarohin et al.'s Deformable GANs, PyTorch ports of
  PG2) distributes; ``keypoints_to_rc`` converts.
- PG2's PyTorch port (https://github.com/budui/Human-Pose-Transfer), whose released
  ``G1.pth`` / ``G2.pth`` were trained on a different encoding, that of its
  ``tool/generate_pose_map_add_mask.py``: a Gaussian heat map a joint
  (``key_point_to_map``) and a body mask of larger disks (``key_point_to_mask``), over
  the same ``keypoints_rc``. Which weights take which: ``port_pose_map``.
- Everybody Dance Now, Chan et al., ICCV 2019 (https://github.com/carolineec/
  EverybodyDanceNow, ``data_prep/``): the stick figure of ``renderposeCOCO`` on the
  1080x1920 canvas of ``graph_train.py``, the label resizes, the 128x128 face box, the
  global pose normalisation of ``graph_posenorm.py`` and its 7-frame median smoothing.
  Only the body is drawn: the authors' labels add 8 face points and the hands from
  OpenPose's face and hand models, which this project does not run.

Example:

    >>> keypoints = body_keypoints(rgb)                      # (18, 3) x, y, confidence
    >>> pose = pg2_pose_map(keypoints_to_rc(keypoints), (128, 64))   # int8 (128, 64, 18)
    >>> port = port_pose_map(keypoints_to_rc(keypoints), (128, 64)).transpose(2, 0, 1)  # float32 (18, 128, 64)
    >>> label = edn_label(edn_stick_figure(keypoints))       # uint8 (512, 1024, 3)
"""

from __future__ import annotations

import functools
import json
import math
import threading
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image
from skimage.draw import disk
from skimage.morphology import dilation, erosion

from models.errors import InvalidInput, WeightsMissing

COCO18 = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
NUM_KEYPOINTS = len(COCO18)

# BODY_25 joint of each COCO-18 joint. BODY_25 is COCO-18 with a mid-hip joint (8) put
# between the wrists and the hips and six foot joints (19-24) appended; both share the
# joints' names and meaning, so the mapping drops those seven and keeps the order.
BODY25_TO_COCO18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)

# MediaPipe landmark of each COCO-18 joint (None: the neck, the shoulders' midpoint).
MEDIAPIPE_TO_COCO18 = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)

MAX_JSON_BYTES = 4 << 20  # an OpenPose file with faces and hands of a crowd is far smaller


# ---------------------------------------------------------------------------------------
# Keypoint arrays and OpenPose JSON
# ---------------------------------------------------------------------------------------


def as_keypoints(keypoints, name: str = "keypoints") -> np.ndarray:
    """``keypoints`` as a float64 ``(18, 3)`` array of finite ``(x, y, confidence)``.

    Args:
        keypoints: an ``(18, 3)`` array or a flat sequence of 54 numbers (OpenPose's layout).
        name: what the error message calls the input.

    Raises:
        InvalidInput: wrong count or a value that is not a finite number.
    """
    try:
        array = np.asarray(keypoints, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be numbers") from None
    if array.size != 3 * NUM_KEYPOINTS:
        raise InvalidInput(f"{name} must hold 18 (x, y, confidence) triples, got {array.size} numbers")
    if not np.isfinite(array).all():
        raise InvalidInput(f"{name} must be finite numbers")
    return array.reshape(NUM_KEYPOINTS, 3).copy()


def read_openpose_json(data: bytes | str | dict, person: int = 0,
                       image_size: tuple[int, int] | None = None) -> np.ndarray:
    """One person's body keypoints from an OpenPose JSON file.

    OpenPose writes ``{"people": [{"pose_keypoints_2d": [x0, y0, c0, x1, ...]}, ...]}``
    (``"pose_keypoints"`` before version 1.2). Both the COCO model's 18 joints (54
    numbers) and BODY_25's 25 joints (75 numbers, mapped by ``BODY25_TO_COCO18``) are read.

    Args:
        data: the file's bytes or text, or the parsed object.
        person: index into ``people``.
        image_size: ``(height, width)`` of the image the keypoints belong to; when given,
            every detected joint (confidence > 0) must lie inside it.

    Returns:
        float64 ``(18, 3)``: ``(x, y, confidence)`` in COCO-18 order, missing joints as
        OpenPose wrote them (``(0, 0, 0)``).

    Raises:
        InvalidInput: not JSON, no such person, a wrong count, a value that is not a finite
            number, a confidence outside [0, 1] or a joint outside the image.
    """
    if isinstance(data, (bytes, bytearray, str)):
        if len(data) > MAX_JSON_BYTES:
            raise InvalidInput(f"the pose JSON is larger than {MAX_JSON_BYTES >> 20} MiB")

        def refuse_constant(name):
            raise InvalidInput(f"the pose JSON holds {name}, which is not a number")
        try:
            data = json.loads(data, parse_constant=refuse_constant)
        except (UnicodeDecodeError, ValueError):
            raise InvalidInput("the pose file is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("people"), list):
        raise InvalidInput('the pose JSON must be an object with a "people" list, as OpenPose writes it')
    people = data["people"]
    if isinstance(person, bool) or not isinstance(person, int) or not 0 <= person < len(people):
        raise InvalidInput(f"the pose JSON has {len(people)} people; person {person!r} does not exist")
    entry = people[person]
    values = None
    if isinstance(entry, dict):
        values = entry.get("pose_keypoints_2d", entry.get("pose_keypoints"))
    if not isinstance(values, list):
        raise InvalidInput(f'person {person} has no "pose_keypoints_2d" list')
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise InvalidInput(f"person {person}'s keypoints must all be numbers")
    if len(values) not in (54, 75):
        raise InvalidInput(f"person {person} has {len(values)} keypoint numbers; expected 54 (COCO-18, "
                           "18 joints) or 75 (BODY_25, 25 joints), as (x, y, confidence) triples")
    keypoints = np.asarray(values, dtype=np.float64).reshape(-1, 3)
    if len(keypoints) == 25:
        keypoints = keypoints[list(BODY25_TO_COCO18)]
    keypoints = as_keypoints(keypoints, f"person {person}'s keypoints")
    check_keypoints(keypoints, image_size)
    return keypoints


def check_keypoints(keypoints: np.ndarray, image_size: tuple[int, int] | None = None) -> None:
    """Refuse confidences outside [0, 1] and detected joints outside the image.

    Args:
        keypoints: float ``(18, 3)`` from ``as_keypoints``.
        image_size: ``(height, width)``; when None only negative coordinates are refused.

    Raises:
        InvalidInput: naming the first joint that is wrong.
    """
    for name, (x, y, confidence) in zip(COCO18, keypoints):
        if not 0 <= confidence <= 1:
            raise InvalidInput(f"the {name}'s confidence is {confidence:g}; confidences lie in [0, 1]")
        if confidence == 0:
            continue
        if x < 0 or y < 0:
            raise InvalidInput(f"the {name} lies at ({x:g}, {y:g}); coordinates cannot be negative")
        if image_size is not None and (x >= image_size[1] or y >= image_size[0]):
            raise InvalidInput(f"the {name} lies at ({x:g}, {y:g}), outside the "
                               f"{image_size[1]}x{image_size[0]} image")


def to_openpose_json(keypoints) -> str:
    """OpenPose's JSON for one person's ``(18, 3)`` keypoints, or several people's ``(P, 18, 3)``.

    The layout of OpenPose 1.3 with the COCO model; ``read_openpose_json`` reads it back
    unchanged.
    """
    array = np.asarray(keypoints, dtype=np.float64)
    people = array[None] if array.ndim == 2 else array
    if people.ndim != 3:
        raise InvalidInput("keypoints must be (18, 3) or (people, 18, 3)")
    entries = []
    for one in people:
        entry = {"person_id": [-1], "pose_keypoints_2d": as_keypoints(one).ravel().tolist()}
        for part in ("face", "hand_left", "hand_right"):
            entry[f"{part}_keypoints_2d"] = []
        for part in ("pose", "face", "hand_left", "hand_right"):
            entry[f"{part}_keypoints_3d"] = []
        entries.append(entry)
    return json.dumps({"version": 1.3, "people": entries})


# ---------------------------------------------------------------------------------------
# MediaPipe
# ---------------------------------------------------------------------------------------

_lock = threading.Lock()


@functools.cache
def _mediapipe_pose():
    try:
        from mediapipe.python.solutions import pose as mp_pose
    except ImportError:
        raise WeightsMissing("body keypoints need MediaPipe: pip install 'talkingface[pose]' "
                             "(mediapipe==0.10.14, which ships its pose models)") from None
    # Model complexity 1 is the "full" landmark model inside the wheel; the lite (0) and
    # heavy (2) ones would be downloaded on first use.
    return mp_pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=False)


def body_keypoints(image_rgb: np.ndarray, min_visibility: float = 0.5) -> np.ndarray:
    """COCO-18 keypoints of the most prominent person in an RGB image, by MediaPipe.

    MediaPipe's landmarks are mapped by ``MEDIAPIPE_TO_COCO18``; the neck, which MediaPipe
    lacks, is the shoulders' midpoint with the lower of their confidences. A landmark
    counts when it lies inside the image and MediaPipe's visibility reaches
    ``min_visibility`` (0.5, the threshold of MediaPipe's own drawing code); the others
    are missing, ``(0, 0, 0)`` as in OpenPose's output.

    Args:
        image_rgb: uint8 ``(H, W, 3)``.
        min_visibility: visibility below which a landmark is missing.

    Returns:
        float64 ``(18, 3)``: ``(x, y, confidence)`` in pixels, confidence = visibility.

    Raises:
        InvalidInput: not a uint8 RGB image, or no person found.
        WeightsMissing: MediaPipe is not installed.
    """
    image = np.asarray(image_rgb)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise InvalidInput(f"the image must be uint8 RGB (H, W, 3), got {image.dtype} {image.shape}")
    with _lock:
        result = _mediapipe_pose().process(np.ascontiguousarray(image))
    if result.pose_landmarks is None:
        raise InvalidInput("no person was found in the image")
    height, width = image.shape[:2]
    landmarks = np.array([(lm.x * width, lm.y * height, lm.visibility) for lm in result.pose_landmarks.landmark])
    inside = ((landmarks[:, 0] >= 0) & (landmarks[:, 0] < width) & (landmarks[:, 1] >= 0)
              & (landmarks[:, 1] < height) & (landmarks[:, 2] >= min_visibility))
    landmarks[~inside] = 0
    keypoints = np.zeros((NUM_KEYPOINTS, 3))
    for joint, landmark in enumerate(MEDIAPIPE_TO_COCO18):
        if landmark is not None:
            keypoints[joint] = landmarks[landmark]
    left, right = keypoints[COCO18.index("left_shoulder")], keypoints[COCO18.index("right_shoulder")]
    if left[2] > 0 and right[2] > 0:
        neck_x, neck_y = (left[:2] + right[:2]) / 2
        keypoints[COCO18.index("neck")] = (neck_x, neck_y, min(left[2], right[2]))
    return keypoints


# ---------------------------------------------------------------------------------------
# PG2 (Ma et al. 2017): pose map and body mask
# ---------------------------------------------------------------------------------------

PG2_RADIUS = 4
# Joint pairs (1-based COCO-18) of _getPoseMask: the 17 limbs of OpenPose's COCO skeleton
# with the shoulder-ear pair replaced by neck-ear, plus hip-hip, hip-shoulder and ear-ear
# pairs that close the torso and the head.
PG2_MASK_LIMBS = ((2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
                  (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18), (2, 17), (2, 18), (9, 12), (12, 6),
                  (9, 3), (17, 18))


def keypoints_to_rc(keypoints, min_confidence: float = 0.1) -> np.ndarray:
    """``(x, y, confidence)`` keypoints as PG2's ``(row, col)``, ``(-1, -1)`` where missing.

    PG2's keypoints are integer pixel positions (heat-map peaks), and a joint exists when
    its heat-map peak passed the OpenPose demo's threshold ``thre1`` of 0.1; so the
    coordinates are truncated to integers and joints of confidence 0.1 or less are
    missing.

    Returns:
        int64 ``(18, 2)``.
    """
    keypoints = as_keypoints(keypoints)
    rc = np.trunc(keypoints[:, [1, 0]]).astype(np.int64)
    rc[keypoints[:, 2] <= min_confidence] = -1
    return rc


def _check_rc(keypoints_rc, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """float64 (18, 2) positions and the mask of present joints; joints must lie in the image."""
    height, width = size
    if height < 2 or width < 2:
        raise InvalidInput(f"the pose image must be at least 2x2, got {width}x{height}")
    try:
        rc = np.asarray(keypoints_rc, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput("keypoints_rc must be numbers") from None
    if rc.shape != (NUM_KEYPOINTS, 2) or not np.isfinite(rc).all():
        raise InvalidInput(f"keypoints_rc must be 18 finite (row, col) pairs, got shape {rc.shape}")
    present = (rc[:, 0] != -1) & (rc[:, 1] != -1)
    outside = present & ((rc[:, 0] < 0) | (rc[:, 0] >= height) | (rc[:, 1] < 0) | (rc[:, 1] >= width))
    if outside.any():
        joint = int(np.argmax(outside))
        raise InvalidInput(f"the {COCO18[joint]} at (row, col) {tuple(rc[joint])} lies outside the "
                           f"{width}x{height} pose image (use (-1, -1) for a missing joint)")
    return rc, present


@functools.cache
def _disk(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets of the pixels within ``radius`` of a centre pixel."""
    rows, cols = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    inside = np.sqrt((rows ** 2 + cols ** 2).astype(np.float64)) <= radius
    return rows[inside], cols[inside]


def _stamp(plane: np.ndarray, rows: np.ndarray, cols: np.ndarray, radius: int) -> None:
    """Set the disks around the centres ``(rows, cols)``, truncated to integers as ``int()``."""
    d_rows, d_cols = _disk(radius)
    r = np.trunc(rows).astype(np.int64)[:, None] + d_rows
    c = np.trunc(cols).astype(np.int64)[:, None] + d_cols
    inside = (r >= 0) & (r < plane.shape[0]) & (c >= 0) & (c < plane.shape[1])
    plane[r[inside], c[inside]] = 1


def pg2_pose_map(keypoints_rc, size: tuple[int, int]) -> np.ndarray:
    """PG2's pose input: one channel a joint, a solid disk of radius 4 on -1 elsewhere.

    ``_getSparsePose(peaks, H, W, 18, radius=4, mode='Solid')`` drawn dense by
    ``_sparse2dense``, then ``pose * 2 - 1`` as the trainer feeds it. A disk is centred on
    the joint's truncated coordinates and clipped at the image border.

    Args:
        keypoints_rc: ``(18, 2)`` ``(row, col)``, ``(-1, -1)`` for a missing joint.
        size: ``(H, W)``: 128x64 for Market-1501, 256x256 for DeepFashion.

    Returns:
        int8 ``(H, W, 18)`` in {-1, 1}.
    """
    rc, present = _check_rc(keypoints_rc, size)
    pose = np.zeros((*size, NUM_KEYPOINTS), np.int8)
    for joint in np.flatnonzero(present):
        _stamp(pose[:, :, joint], rc[joint, :1], rc[joint, 1:], PG2_RADIUS)
    return pose * 2 - 1


def pg2_pose_mask(keypoints_rc, size: tuple[int, int]) -> np.ndarray:
    """PG2's body mask for the pose-mask loss: ``_getPoseMask`` (radius 4, solid).

    Each limb of ``PG2_MASK_LIMBS`` whose two joints exist is drawn as disks of radius 4
    at both joints and at ``int(length / 4) - 1`` evenly spaced points between them; the
    drawing is then closed (dilated, then eroded) with a 5x5 square.

    Args:
        keypoints_rc: ``(18, 2)`` ``(row, col)``, ``(-1, -1)`` for a missing joint.
        size: ``(H, W)``.

    Returns:
        uint8 ``(H, W)`` in {0, 1}.
    """
    rc, present = _check_rc(keypoints_rc, size)
    centres = []
    for a, b in PG2_MASK_LIMBS:
        if not (present[a - 1] and present[b - 1]):
            continue
        (r0, c0), (r1, c1) = rc[a - 1], rc[b - 1]
        samples = int(np.sqrt((r0 - r1) ** 2 + (c0 - c1) ** 2) / PG2_RADIUS)
        # The authors' arithmetic, in their order: r0 + (r1 - r0) * i / n.
        steps = np.arange(1, samples) if samples > 1 else np.arange(0)
        rows = np.concatenate([[r0, r1], r0 + (r1 - r0) * steps / samples])
        cols = np.concatenate([[c0, c1], c0 + (c1 - c0) * steps / samples])
        centres.append((rows, cols))
    mask = np.zeros(size, np.uint8)
    if centres:
        _stamp(mask, np.concatenate([r for r, _ in centres]), np.concatenate([c for _, c in centres]), PG2_RADIUS)
    square = np.ones((5, 5), np.uint8)
    return erosion(dilation(mask, square), square)


# ---------------------------------------------------------------------------------------
# PG2's PyTorch port (budui/Human-Pose-Transfer): Gaussian pose map and body mask
# ---------------------------------------------------------------------------------------

PORT_SIGMA = 6
PORT_RADIUS = 6
# 0-based joint pairs of the port's LIMB_SEQ: OpenPose's 19 COCO limbs, shoulder-ear included.
PORT_MASK_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                   (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17))


def port_pose_map(keypoints_rc, size: tuple[int, int], sigma: float = PORT_SIGMA) -> np.ndarray:
    """The PyTorch port's pose input: a Gaussian heat map a joint (``key_point_to_map``).

    Channel ``k`` is ``exp(-((row - r_k)^2 + (col - c_k)^2) / (2 sigma^2))``, 1 at the joint,
    and all 0 when joint ``k`` is missing. The port's dataset (``load_bone_data`` of
    ``dataset/base.py``) feeds it to the network transposed to ``(18, H, W)``.

    Which encoding a PG2 generator takes depends on its weights:

    - the port's released ``G1.pth`` / ``G2.pth``: this one (values in [0, 1]);
    - weights converted from the authors' TensorFlow checkpoints, and this project's own
      PG2 training: ``pg2_pose_map`` (values in {-1, 1}).

    Args:
        keypoints_rc: ``(18, 2)`` ``(row, col)``, -1 for a missing joint.
        size: ``(H, W)``: 128x64 for Market-1501, the port's dataset.
        sigma: the Gaussian's standard deviation in pixels (the port's 6).

    Returns:
        float32 ``(H, W, 18)`` in [0, 1].
    """
    rc, present = _check_rc(keypoints_rc, size)
    rows, cols = np.mgrid[:size[0], :size[1]]
    pose = np.zeros((*size, NUM_KEYPOINTS), np.float32)
    for joint in np.flatnonzero(present):
        # The port's float64 arithmetic, one joint at a time, rounded to float32 on storing.
        pose[:, :, joint] = np.exp(-((rows - rc[joint, 0]) ** 2 + (cols - rc[joint, 1]) ** 2) / (2 * sigma ** 2))
    return pose


def port_pose_mask(keypoints_rc, size: tuple[int, int], radius: int = PORT_RADIUS) -> np.ndarray:
    """The PyTorch port's body mask for its pose-mask loss (``key_point_to_mask``).

    Disks of ``radius`` (the pixels strictly inside the circle, as ``skimage.draw.circle``
    drew them and ``skimage.draw.disk`` still does) at every present joint and, for each
    limb of ``PORT_MASK_LIMBS`` whose two joints exist, at ``int(length / radius) - 1``
    evenly spaced points between them (``expand_key_points``); the drawing is then closed
    (dilated, then eroded) with a square of side ``radius + 3``. Unlike PG2's mask, a lone
    joint is drawn too. Goes with ``port_pose_map``, for the port's released weights.

    Args:
        keypoints_rc: ``(18, 2)`` ``(row, col)``, -1 for a missing joint.
        size: ``(H, W)``.
        radius: disk radius and limb sampling step in pixels (the port's 6).

    Returns:
        bool ``(H, W)``, as the port saves it.
    """
    rc, present = _check_rc(keypoints_rc, size)
    centres = list(rc[present])
    for a, b in PORT_MASK_LIMBS:
        if present[a] and present[b]:
            samples = int(np.linalg.norm(rc[a] - rc[b]) / radius)
            # The port's arithmetic, in its order: from + (i / n) * (to - from).
            centres += [rc[a] + (i / samples) * (rc[b] - rc[a]) for i in range(1, samples)]
    mask = np.zeros(size, bool)
    for centre in centres:
        mask[disk(centre, radius, shape=size)] = True
    square = np.ones((radius + 3, radius + 3), np.uint8)
    return erosion(dilation(mask, square), square)


# ---------------------------------------------------------------------------------------
# Everybody Dance Now (Chan et al. 2019): stick figures, labels, face boxes
# ---------------------------------------------------------------------------------------

EDN_CANVAS = (1080, 1920)  # graph_train.py's myshape: every frame is scaled onto it first
EDN_LABEL_SIZE = (512, 1024)  # (H, W) of the saved labels (output_dim 512)
EDN_GLOBAL_LABEL_WIDTH = 512  # the global stage's --loadSize
EDN_FACE_BUFFER = 70  # boxbuffer: half the face box side on the canvas
EDN_FACE_BOX = 128  # side of the face box in the label
EDN_SMOOTHING_WINDOW = 7  # w_size of graph_posenorm.py's transform_interp
# OpenPose's COCO palette as renderposeCOCO hands it to OpenCV (so read as BGR).
EDN_COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
               (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
               (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
# 0-based joint pairs of renderposeCOCO: OpenPose's COCO limbs without the shoulder-ear ones.
EDN_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
             (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))


def edn_fit_to_canvas(keypoints, image_size: tuple[int, int]) -> np.ndarray:
    """Keypoints of an ``(H, W)`` frame moved onto EDN's 1080x1920 canvas.

    ``scale_resize`` and ``fix_scale_coords``: the frame is scaled to fit the canvas
    and centred along the other axis. Every joint moves, missing ones included; their
    confidence stays 0.
    """
    keypoints = as_keypoints(keypoints)
    height, width = image_size
    if height <= 0 or width <= 0:
        raise InvalidInput(f"the frame size must be positive, got {width}x{height}")
    if (height, width) == EDN_CANVAS:
        return keypoints
    row_scale = EDN_CANVAS[0] / float(height)
    col_scale = EDN_CANVAS[1] / float(width)
    if row_scale == col_scale:
        scale, shift = row_scale, (0.0, 0.0)
    elif col_scale > row_scale:
        scale, shift = row_scale, ((EDN_CANVAS[1] - row_scale * float(width)) / 2.0, 0.0)
    else:
        scale, shift = col_scale, (0.0, (EDN_CANVAS[0] - col_scale * float(height)) / 2.0)
    keypoints[:, 0] = scale * keypoints[:, 0] + shift[0]
    keypoints[:, 1] = scale * keypoints[:, 1] + shift[1]
    return keypoints


def edn_stick_figure(posepts) -> np.ndarray:
    """EDN's pose label before resizing: ``renderposeCOCO`` on a white 1080x1920 canvas.

    Joints of confidence > 0 are discs of radius 8; each limb whose two joints exist is
    an ellipse 4 pixels thick, blended 60 % over the drawing so far (``addWeighted``).
    OpenCV draws in BGR with the palette given as is, then the channels are swapped, as
    ``graph_train.py`` saves it. Only the ellipse's bounding box is blended, which gives
    the same pixels as blending the whole canvas.

    Args:
        posepts: ``(18, 3)`` or a flat list of 54 numbers, ``(x, y, confidence)`` on the
            canvas (see ``edn_fit_to_canvas``).

    Returns:
        uint8 RGB ``(1080, 1920, 3)``.
    """
    points = [tuple(map(float, joint)) for joint in as_keypoints(posepts, "posepts")]
    canvas = np.full((*EDN_CANVAS, 3), 255, np.uint8)
    for (x, y, confidence), colour in zip(points, EDN_COLOURS):
        if confidence > 0:
            cv2.circle(canvas, (int(x), int(y)), 8, colour, thickness=-1)
    for a, b in EDN_LIMBS:
        (xa, ya, ca), (xb, yb, cb) = points[a], points[b]
        if not (ca > 0 and cb > 0):
            continue
        length = ((ya - yb) ** 2 + (xa - xb) ** 2) ** 0.5
        angle = math.degrees(math.atan2(ya - yb, xa - xb))
        centre = (int((xa + xb) / 2), int((ya + yb) / 2))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), 4), int(angle), 0, 360, 1)
        left, top, w, h = cv2.boundingRect(polygon)
        x0, y0 = max(left, 0), max(top, 0)
        x1, y1 = min(left + w, EDN_CANVAS[1]), min(top + h, EDN_CANVAS[0])
        if x0 >= x1 or y0 >= y1:
            continue
        region = canvas[y0:y1, x0:x1]
        drawn = region.copy()
        cv2.fillConvexPoly(drawn, polygon - np.array([x0, y0], polygon.dtype), EDN_COLOURS[a])
        region[...] = cv2.addWeighted(region, 0.4, drawn, 0.6, 0)
    return np.ascontiguousarray(canvas[:, :, ::-1])


def edn_label(canvas: np.ndarray) -> np.ndarray:
    """The saved label: the canvas resized to 1024x512 with PIL's LANCZOS (``ANTIALIAS``)."""
    image = Image.fromarray(np.asarray(canvas, np.uint8))
    return np.asarray(image.resize(EDN_LABEL_SIZE[::-1], Image.LANCZOS))


def edn_global_stage_label(label: np.ndarray) -> np.ndarray:
    """The label as the global stage (``--loadSize 512``) loads it: 512 wide, NEAREST.

    pix2pixHD's ``scale_width`` transform with ``Image.NEAREST`` for labels; a 1024x512
    label becomes 512x256.
    """
    image = Image.fromarray(np.asarray(label, np.uint8))
    width, height = image.size
    if width == EDN_GLOBAL_LABEL_WIDTH:
        return np.asarray(image)
    new_height = int(EDN_GLOBAL_LABEL_WIDTH * height / width)
    return np.asarray(image.resize((EDN_GLOBAL_LABEL_WIDTH, new_height), Image.NEAREST))


def edn_face_box(posepts) -> tuple[int, int, int, int]:
    """EDN's face box in the 1024x512 label, ``(min_row, max_row, min_col, max_col)``.

    The face centre is ``aveface``'s: the nose, else the ears' midpoint, else the right
    ear, else the left ear (whatever its confidence). A 140-pixel square around it on
    the canvas, clipped to the canvas and scaled to the label, is grown to 128x128 and
    pushed inside the label by ``makebox128``.
    """
    p = as_keypoints(posepts, "posepts")
    nose, right_ear, left_ear = p[0], p[16], p[17]
    if nose[2] > 0:
        x, y = nose[0], nose[1]
    elif right_ear[2] > 0 and left_ear[2] > 0:
        x, y = 0.5 * (right_ear[0] + left_ear[0]), 0.5 * (right_ear[1] + left_ear[1])
    elif right_ear[2] > 0:
        x, y = right_ear[0], right_ear[1]
    else:
        x, y = left_ear[0], left_ear[1]
    row_scale = float(EDN_LABEL_SIZE[0]) / float(EDN_CANVAS[0])
    col_scale = float(EDN_LABEL_SIZE[1]) / float(EDN_CANVAS[1])
    min_col = int(max(x - EDN_FACE_BUFFER, 0) * col_scale)
    min_row = int(max(y - EDN_FACE_BUFFER, 0) * row_scale)
    max_col = int(min(x + EDN_FACE_BUFFER, EDN_CANVAS[1]) * col_scale)
    max_row = int(min(y + EDN_FACE_BUFFER, EDN_CANVAS[0]) * row_scale)
    min_row, max_row = _grow_to_box(min_row, max_row, EDN_LABEL_SIZE[0])
    min_col, max_col = _grow_to_box(min_col, max_col, EDN_LABEL_SIZE[1])
    return min_row, max_row, min_col, max_col


def _grow_to_box(low: int, high: int, limit: int) -> tuple[int, int]:
    """One axis of ``makebox128``: extend the far end by half the shortfall, then clamp."""
    if high - low != EDN_FACE_BOX:
        high = high + (EDN_FACE_BOX - (high - low)) // 2
        low = high - EDN_FACE_BOX
        if high > limit:
            high, low = limit, limit - EDN_FACE_BOX
        if low < 0:
            low, high = 0, EDN_FACE_BOX
    return low, high


# ---------------------------------------------------------------------------------------
# Everybody Dance Now: global pose normalisation and median smoothing
# ---------------------------------------------------------------------------------------


def edn_pose_stats(posepts) -> tuple[float, float, float] | None:
    """``get_pose_stats`` for COCO-18: ``(height, min ankle y, max ankle y)`` or None.

    The head is the nose, or the ears' midpoint when the nose is missing and both ears
    exist; the height runs from the head to the ankles' midpoint. As in the reference, a
    frame counts when the head, the right ankle and the *left ear* exist (the check that
    meant the left ankle reads the left ear), so a missing left ankle's (0, 0) can enter.
    """
    p = [tuple(map(float, joint)) for joint in as_keypoints(posepts, "posepts")]
    nose, right_ankle, left_ankle, right_ear, left_ear = p[0], p[10], p[13], p[16], p[17]
    head_found, (head_x, head_y) = nose[2] > 0, nose[:2]
    if not head_found:
        head_found = right_ear[2] > 0 and left_ear[2] > 0
        head_x, head_y = 0.5 * (right_ear[0] + left_ear[0]), 0.5 * (right_ear[1] + left_ear[1])
    if not (head_found and right_ankle[2] > 0 and left_ear[2] > 0):
        return None
    feet_x = (right_ankle[0] + left_ankle[0]) * 0.5
    feet_y = (right_ankle[1] + left_ankle[1]) * 0.5
    height = math.sqrt((head_x - feet_x) ** 2 + (head_y - feet_y) ** 2)
    return height, min(right_ankle[1], left_ankle[1]), max(right_ankle[1], left_ankle[1])


@dataclass(frozen=True)
class EdnNormalisation:
    """The global pose normalisation from a source dancer to the target person.

    The ankles' lowest image row of each video (``*_toe``, the position nearest the
    camera) and a far position (``*_horizon``) define how a source frame's ankle row
    maps to the target's; the scale is interpolated between ``scale_far`` and
    ``scale_close`` along the same line (Sec. 4 of the paper, ``graph_posenorm.py``).
    """

    scale_close: float  # target height / source height near the camera
    scale_far: float  # target height / source height far from it
    target_toe: float  # largest ankle row (y) of the target video
    target_horizon: float  # far ankle row of the target video
    source_toe: float
    source_horizon: float


def _video_stats(poses, name: str) -> tuple[float, float, list[float], dict[float, list[float]]]:
    """``get_keypoints_stats``: max ankle row, its median, the rows, and heights by row."""
    max_toe, toes, heights_at = 0, [], {}
    for posepts in poses:
        stats = edn_pose_stats(posepts)
        if stats is None:
            continue
        height, _, toe = stats
        max_toe = max(max_toe, toe)
        toes.append(toe)
        heights_at.setdefault(toe, []).append(height)
    if not toes:
        raise InvalidInput(f"no frame of the {name} video shows the head, the right ankle and the left ear")
    return max_toe, np.median(toes), toes, heights_at


def _horizon(max_toe: float, median: float, toes: list[float], frac: float, name: str) -> float:
    """The far ankle row: the highest row above the median within ``frac`` of the toe-median gap."""
    above = -1 * np.array(toes) + median
    above = above[(above > 0) & (above < frac * (max_toe - median))]
    if len(above) == 0:
        raise InvalidInput(f"the {name} person's ankles never move away from the camera; "
                           "the pose normalisation needs a video where they walk back and forth")
    return (above[np.argmax(above)] - median) * -1


def _tallest_near(heights_at: dict[float, list[float]], row: float, reach: float) -> float:
    tallest = 0
    for toe in filter(lambda t: abs(t - row) <= reach, heights_at):
        tallest = max(tallest, max(heights_at[toe]))
    return tallest


def fit_edn_normalisation(target_poses, source_poses, target_median_frac: float = 0.5,
                          source_median_frac: float = 0.5) -> EdnNormalisation:
    """EDN's global pose normalisation fitted to two videos' keypoints.

    ``graph_posenorm.py --calculate_scale_translation``: each video's ankle rows give its
    nearest position (the largest row) and a horizon above the median; a source range
    shorter than the target's is centred in the target's; the scales compare the
    tallest person within 5 % of the range around each position (the close one falling
    back to the tallest of all when more than 10 % shorter).

    The authors draw frames at random, with replacement, until they hold as many usable
    frames as the video has frames; here every usable frame counts once.

    Args:
        target_poses: ``(N, 18, 3)`` keypoints of the person the model was trained on.
        source_poses: ``(M, 18, 3)`` keypoints of the dancer who drives it.
        target_median_frac, source_median_frac: how far above the median ankle row the
            horizon may lie, as a fraction of the gap from the median to the nearest row.

    Raises:
        InvalidInput: a video without usable frames or whose ankles never move.
    """
    target_toe, target_median, target_toes, target_heights = _video_stats(target_poses, "target")
    source_toe, source_median, source_toes, source_heights = _video_stats(source_poses, "source")
    target_horizon = _horizon(target_toe, target_median, target_toes, target_median_frac, "target")
    source_horizon = _horizon(source_toe, source_median, source_toes, source_median_frac, "source")
    if source_toe - source_horizon < target_toe - target_horizon:
        middle = 0.5 * (target_toe + target_horizon)
        half = 0.5 * (source_toe - source_horizon)
        target_toe, target_horizon = middle + half, middle - half

    frac = 0.05
    target_reach, source_reach = (target_toe - target_horizon) * frac, (source_toe - source_horizon) * frac
    close = [_tallest_near(target_heights, target_toe, target_reach),
             _tallest_near(source_heights, source_toe, source_reach)]
    far = [_tallest_near(target_heights, target_horizon, target_reach),
           _tallest_near(source_heights, source_horizon, source_reach)]
    for i, heights_at in enumerate((target_heights, source_heights)):
        tallest = max(heights_at.values())[0]  # the reference's: first height of the greatest list
        if tallest - close[i] > 0.1 * tallest:
            close[i] = tallest
    if close[1] == 0 or far[1] == 0:
        raise InvalidInput("the source video has no usable frame near its nearest or farthest position")
    return EdnNormalisation(scale_close=close[0] / float(close[1]), scale_far=far[0] / float(far[1]),
                            target_toe=target_toe, target_horizon=target_horizon,
                            source_toe=source_toe, source_horizon=source_horizon)


def edn_normalise(source_poses, normalisation: EdnNormalisation, canvas_width: int = EDN_CANVAS[1]) -> np.ndarray:
    """Source keypoints moved and scaled into the target's space (``transform_interp``).

    A frame's ankle row sets, by linear interpolation between the two videos' horizon
    and nearest rows, a vertical shift and a scale; the scale is about a fixed anchor,
    the canvas's middle column at the lower ankle of the first usable frame. As in the
    reference, frames before the first usable one (see ``edn_pose_stats``) are dropped
    and a later unusable frame keeps the previous frame's shift and scale.

    Returns:
        float64 ``(K, 18, 3)``, K = number of frames from the first usable one on.

    Raises:
        InvalidInput: no usable frame.
    """
    n = normalisation
    frames = [as_keypoints(p, "posepts") for p in source_poses]
    anchor, shift, scale, out = None, 0, 0, []
    for posepts in frames:
        stats = edn_pose_stats(posepts)
        if stats is None and anchor is None:
            continue
        if stats is not None:
            fraction = (stats[2] - n.source_horizon) / float(n.source_toe - n.source_horizon)
            target_row = n.target_horizon + fraction * float(n.target_toe - n.target_horizon)
            shift = target_row - stats[2]
            scale = n.scale_far + fraction * float(n.scale_close - n.scale_far)
        if anchor is None:
            right_ankle_y, left_ankle_y = posepts[10, 1], posepts[13, 1]
            anchor = (canvas_width // 2, right_ankle_y if right_ankle_y > left_ankle_y else left_ankle_y)
        offset = (anchor[0] - scale * anchor[0], anchor[1] - scale * anchor[1] + shift)
        posepts[:, 0] = posepts[:, 0] * scale + offset[0]
        posepts[:, 1] = posepts[:, 1] * scale + offset[1]
        out.append(posepts)
    if anchor is None:
        raise InvalidInput("no frame of the source video shows the head, the right ankle and the left ear")
    return np.stack(out)


def edn_median_smooth(poses, window: int = EDN_SMOOTHING_WINDOW) -> np.ndarray:
    """Sliding-window median of keypoints, ``getmedians_adapt`` as ``transform_interp`` uses it.

    Output ``i`` is the median of frames ``i .. i + window - 1``, joint by joint: when
    the median confidence is above 0, the median of the frames where the joint exists,
    else the plain median (which leaves it missing).

    Returns:
        float64 ``(N - window + 1, 18, 3)`` (none when N < window).
    """
    frames = np.stack([as_keypoints(p, "posepts") for p in poses]) if len(poses) else np.zeros((0, 18, 3))
    out = np.zeros((max(len(frames) - window + 1, 0), NUM_KEYPOINTS, 3))
    for i in range(len(out)):
        for joint in range(NUM_KEYPOINTS):
            values = frames[i:i + window, joint]
            median = np.median(values, axis=0)
            if median[2] > 0:
                found = values[values[:, 2] > 0]
                median = np.median(found, axis=0) if len(found) else np.zeros(3)
            out[i, joint] = median
    return out
