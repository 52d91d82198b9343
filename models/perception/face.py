"""Face detection, 68-point landmarks and face tracking with dlib, shared by the talking-face systems.

The detector is dlib's HOG frontal face detector and the landmarks come from dlib's
68-point shape predictor (iBUG 300-W annotation), the combination used by the ATVGnet
demo (Chen et al., "Hierarchical Cross-Modal Talking Face Generation with Dynamic
Pixel-Wise Loss", CVPR 2019, https://github.com/lelechen63/ATVGnet, ``code/demo.py``).

The predictor file ships inside the ``face_recognition_models`` package, so nothing is
downloaded at run time. Detection and landmarks run on the grayscale image, as in the
demo: ``cv2.COLOR_RGB2GRAY`` on an RGB image gives exactly what the demo's
``cv2.COLOR_BGR2GRAY`` gives on the same picture read as BGR.

In videos one face is followed from frame to frame by ``FaceTracker`` (the DAVS
pipeline's driving videos, both dataset preparations; ``follow_face`` adds the
preparations' search for the first face).

Example:

    >>> box, landmarks, n_faces = find_face(rgb)       # largest face
    >>> landmarks.shape, landmarks.dtype
    ((68, 2), dtype('int64'))
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.errors import InvalidInput, NoFaceFound, WeightsMissing

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"

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


# ---------------------------------------------------------------------------------------
# Following one face through a video
# ---------------------------------------------------------------------------------------


def _overlap(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    w = min(a.right, b.right) - max(a.left, b.left)
    h = min(a.bottom, b.bottom) - max(a.top, b.top)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / float(a.area + b.area - inter)


class FaceTracker:
    """Follows one face from frame to frame of a video, cheaply.

    dlib's detector costs ~0.2 s on a whole 600 x 500 frame (more on larger ones), its
    landmark model ~6 ms. So once a face is found, the next frame is searched only in a
    window around it. The whole frame is searched (as a photo is: largest face,
    ``upsample`` 1) while no face was found yet. When the window holds no face, the
    whole frame is searched again if ``redetect``; a frame where the face is not found
    at all keeps the last box (counted in ``missed_frames``).

    The defaults are the fast tracker of the DAVS pipeline's driving videos. The dataset
    preparations use :meth:`for_datasets`: a wider window at full resolution that keeps
    to the same person (most overlapping box), with results unchanged from the data
    they were made with.

    Args:
        window (`float`, defaults to 2.0): side of the square search window centred on
            the last face, in face sides (the larger of box width and height).
        margin (`float`, *optional*): instead of ``window``, the search window is the last
            box grown by this many face sides each way.
        face_side (`int`, *optional*, defaults to 120): the window is scaled so that the
            face is this many pixels wide (comfortably above the detector's smallest face,
            ~80 px) before the detector runs on it; None: not scaled.
        upsample (`int`, defaults to 0): dlib's upsampling of the window.
        pick (`str`, defaults to "largest"): which detection of the window is the face:
            ``"largest"``, or ``"overlap"``, the one overlapping the last box most (none
            overlapping: the face is not found).
        redetect (`bool`, defaults to True): search the whole frame when the window has no face.
        box (`Box`, *optional*): the face's box to start from; None: found by the first call.

    Example:

        >>> tracker = FaceTracker()
        >>> for frame in frames:
        ...     landmarks = tracker(frame)          # (68, 2) float64, None before a face
    """

    def __init__(self, window: float = 2.0, margin: float | None = None, face_side: int | None = 120,
                 upsample: int = 0, pick: str = "largest", redetect: bool = True, box: Box | None = None):
        if pick not in ("largest", "overlap"):
            raise ValueError(f"pick must be 'largest' or 'overlap', got {pick!r}")
        self.window = float(window)
        self.margin = margin
        self.face_side = face_side
        self.upsample = int(upsample)
        self.pick = pick
        self.redetect = bool(redetect)
        self.box = box
        self.missed_frames = 0  # frames where the last box was kept

    @classmethod
    def for_datasets(cls, box: Box | None = None) -> FaceTracker:
        """The tracker of the dataset preparations: the box grown by one face side each
        way, searched at full resolution (``upsample`` 1), the most overlapping detection,
        the last box when there is none."""
        return cls(margin=1.0, face_side=None, upsample=1, pick="overlap", redetect=False, box=box)

    def _window(self, shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` of the search window around the last box, inside the frame."""
        box, (height, width) = self.box, shape
        side = max(box.width, box.height)
        if self.margin is not None:
            m = round(self.margin * side)
            return (max(box.left - m, 0), max(box.top - m, 0),
                    min(box.right + m, width), min(box.bottom + m, height))
        half = self.window * side / 2
        cx, cy = (box.left + box.right) / 2, (box.top + box.bottom) / 2
        return (int(max(cx - half, 0)), int(max(cy - half, 0)),
                int(min(cx + half, width)), int(min(cy + half, height)))

    def _near(self, gray: np.ndarray) -> Box | None:
        """The face in the window around the last box, in frame coordinates, or None."""
        x0, y0, x1, y1 = self._window(gray.shape)
        if x1 - x0 < 8 or y1 - y0 < 8:  # no face fits: the detector's smallest is 40 px upsampled
            return None
        window = gray[y0:y1, x0:x1]
        scale = 1.0
        if self.face_side is not None:
            scale = self.face_side / max(self.box.width, self.box.height, 1)
            window = cv2.resize(window, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found = [Box(round(x0 + b.left / scale), round(y0 + b.top / scale),
                     round(x0 + b.right / scale), round(y0 + b.bottom / scale))
                 for b in detect_faces(window, upsample=self.upsample)]  # largest first
        if self.pick == "largest":
            return found[0] if found else None
        best, best_overlap = None, 0.0
        for box in found:
            overlap = _overlap(box, self.box)
            if overlap > best_overlap:
                best, best_overlap = box, overlap
        return best

    def find(self, gray: np.ndarray) -> Box | None:
        """This frame's face box (also kept as ``box``); None while no face was ever found.

        Args:
            gray (`np.ndarray`): the frame, uint8 gray (H, W) (``to_gray``).
        """
        box = self._near(gray) if self.box is not None else None
        if box is None and (self.box is None or self.redetect):
            boxes = detect_faces(gray)  # the whole frame, as for the photo
            box = boxes[0] if boxes else None
        if box is None:
            if self.box is not None:
                self.missed_frames += 1
            return self.box
        self.box = box
        return box

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        """The 68 landmarks of the followed face in an RGB frame, float64 (68, 2); None
        until a face was found once."""
        gray = to_gray(frame)
        box = self.find(gray)
        return None if box is None else landmarks68(gray, box).astype(np.float64)


def follow_face(frames: Iterable[np.ndarray], tracker: FaceTracker, search_frames: int, name: str
                ) -> tuple[tuple[np.ndarray, np.ndarray, Box], Iterator[tuple[np.ndarray, np.ndarray, Box]]]:
    """Find the face of a video, then follow it through every frame (dataset preparation).

    The face is the largest one of the first frame that has a face, within the first
    ``search_frames`` frames; that search happens now (the frames it read are held, at
    most ``search_frames``). The frames before that frame are followed from that face's
    box; that frame keeps the box it was found with; the later ones are followed as they
    come, lazily.

    Args:
        frames: uint8 RGB (H, W, 3) frames, in order.
        tracker (`FaceTracker`): a tracker without a box (``FaceTracker.for_datasets()``).
        search_frames (`int`): frames searched for the first face.
        name (`str`): how error messages name the video.

    Returns:
        ``(first, followed)``: ``first`` is ``(frame, gray, box)`` of the first frame with
        a face; ``followed`` yields ``(frame, gray, box)`` for every frame of the video,
        in order, from the first one.

    Raises:
        NoFaceFound: no face in the first ``search_frames`` frames.
    """
    frames = iter(frames)
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    box = None
    for frame in frames:
        gray = to_gray(frame)
        pending.append((frame, gray))
        box = tracker.find(gray)
        if box is not None or len(pending) >= search_frames:
            break
    if box is None:
        raise NoFaceFound(f"no face found in the first {len(pending)} frames of {name}")
    first = pending[-1] + (box,)

    def followed() -> Iterator[tuple[np.ndarray, np.ndarray, Box]]:
        for frame, gray in pending[:-1]:
            yield frame, gray, tracker.find(gray)
        tracker.box = first[2]
        yield first
        pending.clear()
        for frame in frames:
            gray = to_gray(frame)
            yield frame, gray, tracker.find(gray)

    return first, followed()
