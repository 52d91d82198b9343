"""Face detection and 68-point landmarks with dlib, shared by the talking-face systems.

The detector is dlib's HOG frontal face detector and the landmarks come from dlib's
68-point shape predictor (iBUG 300-W annotation), the combination used by the ATVGnet
demo (Chen et al., "Hierarchical Cross-Modal Talking Face Generation with Dynamic
Pixel-Wise Loss", CVPR 2019, https://github.com/lelechen63/ATVGnet, ``code/demo.py``).

The predictor file ships inside the ``face_recognition_models`` package, so nothing is
downloaded at run time. Detection and landmarks run on the grayscale image, as in the
demo: ``cv2.COLOR_RGB2GRAY`` on an RGB image gives exactly what the demo's
``cv2.COLOR_BGR2GRAY`` gives on the same picture read as BGR.

Example:

    >>> box, landmarks, n_faces = find_face(rgb)       # largest face
    >>> landmarks.shape, landmarks.dtype
    ((68, 2), dtype('int64'))
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.errors import InvalidInput, NoFaceFound, WeightsMissing

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
N_LANDMARKS = 68

_lock = threading.Lock()


# ---------------------------------------------------------------------------------------
# Model files and lazily built dlib objects
# ---------------------------------------------------------------------------------------


def predictor_path() -> Path:
    """Path of dlib's 68-point shape predictor inside ``face_recognition_models``.

    The package is located without importing it: its ``__init__`` imports
    ``pkg_resources``, which is slow and missing from recent setuptools.

    Returns:
        Path to ``shape_predictor_68_face_landmarks.dat``.

    Raises:
        WeightsMissing: the package is not installed or the file is not in it.
    """
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise WeightsMissing(
            "the face landmark model is missing: install the 'face_recognition_models' "
            "package (pip install face_recognition_models), which ships "
            f"{PREDICTOR_FILE}"
        )
    for location in locations:
        path = Path(location) / "models" / PREDICTOR_FILE
        if path.is_file():
            return path
    raise WeightsMissing(
        f"{PREDICTOR_FILE} was not found in the 'face_recognition_models' package at "
        f"{locations[0]}/models; reinstall the package"
    )


@functools.cache
def _detector():
    import dlib

    return dlib.get_frontal_face_detector()


@functools.cache
def _predictor():
    import dlib

    return dlib.shape_predictor(str(predictor_path()))


def get_detector():
    """The process-wide dlib frontal face detector, built on first use."""
    with _lock:
        return _detector()


def get_predictor():
    """The process-wide dlib 68-point shape predictor, loaded on first use."""
    with _lock:
        return _predictor()


# ---------------------------------------------------------------------------------------
# Boxes and images
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """A face box in pixel coordinates, as dlib reports it.

    ``width`` and ``height`` are ``right - left`` and ``bottom - top``, the convention of
    the ATVGnet demo's ``rect_to_bb`` (dlib's own ``width()`` adds one).
    """

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def area(self) -> int:
        return self.width * self.height

    def to_dlib(self):
        """The box as a ``dlib.rectangle``."""
        import dlib

        return dlib.rectangle(int(self.left), int(self.top), int(self.right), int(self.bottom))


def to_gray(image: np.ndarray) -> np.ndarray:
    """Grayscale uint8 version of an RGB (H, W, 3) or gray (H, W) uint8 image.

    Raises:
        InvalidInput: not a uint8 image of one of those shapes.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InvalidInput(f"the image must be 8-bit (uint8), got {image.dtype}")
    if image.ndim == 2:
        gray = image
    elif image.ndim == 3 and image.shape[2] == 3:
        gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    else:
        raise InvalidInput(
            f"the image must be RGB (H, W, 3) or gray (H, W), got shape {image.shape}"
        )
    if gray.shape[0] == 0 or gray.shape[1] == 0:
        raise InvalidInput("the image is empty")
    return np.ascontiguousarray(gray)


# ---------------------------------------------------------------------------------------
# Detection and landmarks
# ---------------------------------------------------------------------------------------


def detect_faces(rgb: np.ndarray, upsample: int = 1) -> list[Box]:
    """Detect frontal faces.

    Args:
        rgb: uint8 RGB (H, W, 3) or gray (H, W) image.
        upsample (int, defaults to 1): times dlib upsamples the image before detecting,
            1 as in the ATVGnet demo; more finds smaller faces, slower.

    Returns:
        The boxes, largest area first (ties keep the detector's order).
    """
    gray = to_gray(rgb)
    rects = get_detector()(gray, int(upsample))
    boxes = [Box(int(r.left()), int(r.top()), int(r.right()), int(r.bottom())) for r in rects]
    return sorted(boxes, key=lambda b: b.area, reverse=True)


def landmarks68(rgb_or_gray: np.ndarray, box: Box) -> np.ndarray:
    """The 68 landmarks of the face in ``box``.

    Args:
        rgb_or_gray: the image the box was found in, uint8 RGB (H, W, 3) or gray (H, W).
        box: the face box.

    Returns:
        int64 (68, 2) array of (x, y) pixel coordinates, as the demo's ``shape_to_np``.
    """
    gray = to_gray(rgb_or_gray)
    shape = get_predictor()(gray, box.to_dlib())
    coords = np.zeros((shape.num_parts, 2), dtype=np.int64)
    for i in range(shape.num_parts):
        part = shape.part(i)
        coords[i] = (part.x, part.y)
    return coords


def find_face(rgb: np.ndarray, face_index: int = 0) -> tuple[Box, np.ndarray, int]:
    """Detect the faces of an image and return the landmarks of one of them.

    Args:
        rgb: uint8 RGB (H, W, 3) image.
        face_index (int, defaults to 0): which face, 0 being the largest.

    Returns:
        ``(box, landmarks, n_faces)``: the chosen face's box, its int64 (68, 2) landmarks
        and how many faces were found.

    Raises:
        NoFaceFound: no face was detected.
        InvalidInput: the image is not uint8 RGB/gray, or ``face_index`` is out of range.
    """
    gray = to_gray(rgb)
    boxes = detect_faces(gray)
    if not boxes:
        raise NoFaceFound("no face found in the image")
    if face_index < 0 or face_index >= len(boxes):
        found = f"{len(boxes)} face" + ("" if len(boxes) == 1 else "s")
        raise InvalidInput(
            f"face_index {face_index} is out of range: {found} found in the image "
            f"(valid indices 0 to {len(boxes) - 1}, largest first)"
        )
    box = boxes[face_index]
    return box, landmarks68(gray, box), len(boxes)
