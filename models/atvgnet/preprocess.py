"""ATVGnet pre- and post-processing of the reference face.

Chen, Maddox, Duan, Xu, "Hierarchical Cross-Modal Talking Face Generation with Dynamic
Pixel-Wise Loss", CVPR 2019, https://arxiv.org/abs/1905.03820. Official code:
https://github.com/lelechen63/ATVGnet (``code/demo.py``: ``crop_image``,
``generator_demo_example_lips``, ``normLmarks``).

The released AT-net and VG-net weights were trained on faces prepared exactly this way,
so every step follows the demo's arithmetic, rounding and truncation included:

1. ``crop_face``: a square of side ``2 * int(0.64 * h)`` around the dlib box centre,
   resized to 163 x 163 with ``cv2.INTER_AREA``.
2. ``choose_template`` + ``align_face``: a similarity transform fitted from the
   template's points 27-44 (nose and eyes) to the face's, the crop warped onto the
   template with scikit-image, truncated to uint8 and cut to ``[1:129, 1:129]``.
3. ``norm_landmarks``: Procrustes normalisation of 68-point landmarks and the shape-basis
   re-projection with the demo's fixed open-mouth offset.

``face_transform`` is the way back, for the service: the affine map from photo pixels to
the 128 x 128 face, with which ``models.perception.paste.PasteBack`` warps the generated
faces into the original photo and blends them with a feathered mask.

Deviations from the demo: it reads the photo as BGR, this module works on RGB (every step
acts on each channel alone, so the result is the same picture); where the crop square
leaves the image the demo's numpy slicing returns a wrong or empty array, here the image
is padded with black first (identical results whenever the square is inside the image).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import procrustes
from skimage import transform as sktf

from models.errors import InvalidInput
from models.perception.face import Box

ROI_SIZE = 163  # side of the resized face crop, demo.py crop_image
FACE_SIZE = 128  # side of VG-net's input, cut from the warped crop at offset 1
FACE_OFFSET = 1  # dst[1:129, 1:129] in demo.py generator_demo_example_lips
CROP_RADIUS = 0.64  # half side of the crop square, in units of the box height
EYES_OPEN_THRESHOLD = -9  # sum of eyelid gaps (163 px) below which eyes count as open
ALIGN_POINTS = slice(27, 45)  # nose bridge, nose, eyes: the points the similarity fits
MOUTH_START = 48  # first mouth point of the 68-point scheme
OPEN_MOUTH_PARAM = (1, -0.06)  # (shape-basis index, value) of the demo's mouth offset


# ---------------------------------------------------------------------------------------
# 1. Crop
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Crop:
    """Where the 163 x 163 crop came from in the photo.

    Attributes:
        x0: left edge of the crop square in the photo (may be negative).
        y0: top edge of the crop square in the photo (may be negative).
        size: side of the square in photo pixels, ``2 * r``.
        scale: ``163 / size``, photo pixels to crop pixels.
    """

    x0: int
    y0: int
    size: int
    scale: float

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``: the crop square in the photo (may leave the photo)."""
        return self.x0, self.y0, self.x0 + self.size, self.y0 + self.size


def _take_square(image: np.ndarray, x0: int, y0: int, size: int) -> np.ndarray:
    """``image[y0:y0+size, x0:x0+size]`` with black where the square leaves the image."""
    height, width = image.shape[:2]
    if x0 >= 0 and y0 >= 0 and x0 + size <= width and y0 + size <= height:
        return image[y0 : y0 + size, x0 : x0 + size]
    out = np.zeros((size, size) + image.shape[2:], dtype=image.dtype)
    xa, ya = max(x0, 0), max(y0, 0)
    xb, yb = min(x0 + size, width), min(y0 + size, height)
    if xa < xb and ya < yb:
        out[ya - y0 : yb - y0, xa - x0 : xb - x0] = image[ya:yb, xa:xb]
    return out


def crop_face(
    rgb: np.ndarray, box: Box, landmarks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, Crop]:
    """Cut the square face crop and resize it to 163 x 163 (demo.py ``crop_image``).

    With ``(x, y, w, h)`` the box as ``rect_to_bb`` gives it, the centre is
    ``(x + int(0.5 w), y + int(0.5 h))`` and the half side ``r = int(0.64 h)``.

    Args:
        rgb: uint8 (H, W, 3) photo.
        box: the face box from ``models.perception.face``.
        landmarks: (68, 2) landmarks of that face in photo pixels.

    Returns:
        ``(roi, landmarks163, crop)``: uint8 (163, 163, 3) crop, float64 (68, 2)
        landmarks in crop pixels, and the ``Crop`` that locates it in the photo.

    Raises:
        InvalidInput: the box is too small to crop.
    """
    x, y, w, h = box.left, box.top, box.width, box.height
    center_x = x + int(0.5 * w)
    center_y = y + int(0.5 * h)
    r = int(CROP_RADIUS * h)
    if r < 1:
        raise InvalidInput("the face is too small to crop")
    x0, y0, size = center_x - r, center_y - r, 2 * r

    roi = _take_square(np.asarray(rgb), x0, y0, size)
    roi = cv2.resize(roi, (ROI_SIZE, ROI_SIZE), interpolation=cv2.INTER_AREA)
    scale = ROI_SIZE / float(size)
    landmarks163 = (np.asarray(landmarks) - np.array([x0, y0])) * scale
    return roi, landmarks163, Crop(x0=int(x0), y0=int(y0), size=int(size), scale=scale)


# ---------------------------------------------------------------------------------------
# 2. Template choice and similarity alignment
# ---------------------------------------------------------------------------------------


def choose_template(
    landmarks163: np.ndarray, base_68: np.ndarray, base_68_close: np.ndarray | None = None
) -> np.ndarray:
    """Pick the alignment template as the demo does.

    The demo uses ``base_68`` when the summed gap between the upper (37, 38) and lower
    (41, 40) eyelids, in 163-crop pixels, is below -9 (eyes open), else
    ``base_68_close``.

    Args:
        landmarks163: (68, 2) landmarks in the 163 crop (``crop_face``).
        base_68: the open-eye template, (68, 2).
        base_68_close (defaults to None): the closed-eye template; when None,
            ``base_68`` is always used.

    Returns:
        The chosen (68, 2) template.
    """
    lm = np.asarray(landmarks163)
    eyes_open = np.sum(lm[37:39, 1] - lm[40:42, 1]) < EYES_OPEN_THRESHOLD
    if eyes_open or base_68_close is None:
        return base_68
    return base_68_close


def _estimate_similarity(src: np.ndarray, dst: np.ndarray) -> sktf.SimilarityTransform:
    if hasattr(sktf.SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        tform = sktf.SimilarityTransform.from_estimate(src, dst)
        ok = bool(tform)
    else:
        tform = sktf.SimilarityTransform()
        ok = tform.estimate(src, dst)
    if not ok or not np.all(np.isfinite(tform.params)):
        raise InvalidInput("the face landmarks are degenerate; cannot align the face")
    return tform


def align_face(
    roi163: np.ndarray, landmarks163: np.ndarray, template: np.ndarray
) -> tuple[np.ndarray, sktf.SimilarityTransform, np.ndarray]:
    """Warp the 163 crop onto the template and cut VG-net's 128 x 128 input.

    As demo.py ``generator_demo_example_lips``: the transform is estimated from
    ``float32(template[27:45])`` to ``float32(landmarks163[27:45])`` and used by
    ``skimage.transform.warp`` as the output-to-input map; the float result is scaled by
    255 and truncated to uint8, then cut to ``[1:129, 1:129]``.

    Args:
        roi163: uint8 (163, 163, 3) crop from ``crop_face``.
        landmarks163: (68, 2) landmarks in that crop.
        template: (68, 2) template (``choose_template``).

    Returns:
        ``(face128, transform, landmarks128)``: uint8 (128, 128, 3) aligned face; the
        ``SimilarityTransform`` (template frame -> crop frame); float64 (68, 2)
        landmarks in the 128 face (the 163 landmarks mapped through the inverse
        transform, minus the offset 1).
    """
    roi163 = np.asarray(roi163)
    if roi163.shape[:2] != (ROI_SIZE, ROI_SIZE) or roi163.dtype != np.uint8:
        raise ValueError(f"roi163 must be uint8 (163, 163[, C]), got {roi163.dtype} {roi163.shape}")
    src = np.float32(np.asarray(template)[ALIGN_POINTS, :])
    dst = np.float32(np.asarray(landmarks163)[ALIGN_POINTS, :])
    tform = _estimate_similarity(src, dst)

    warped = sktf.warp(roi163, tform, output_shape=(ROI_SIZE, ROI_SIZE))
    warped = np.array(warped * 255, dtype=np.uint8)  # truncation, as the demo
    end = FACE_OFFSET + FACE_SIZE
    face128 = np.ascontiguousarray(warped[FACE_OFFSET:end, FACE_OFFSET:end])

    landmarks128 = tform.inverse(np.asarray(landmarks163, dtype=np.float64)) - FACE_OFFSET
    return face128, tform, landmarks128


# ---------------------------------------------------------------------------------------
# 3. Landmark normalisation
# ---------------------------------------------------------------------------------------


def open_mouth_params(ms_norm: np.ndarray, S: np.ndarray) -> np.ndarray:
    """The demo's fixed mouth offset in shape-basis parameters, (1, K).

    Shape parameter 1 set to -0.06, turned into a landmark offset on the mouth points
    (48 on) only, added to the normalised mean shape and projected back onto ``S``.
    """
    ms_norm = np.reshape(np.asarray(ms_norm, dtype=np.float64), (1, -1))
    S = np.asarray(S, dtype=np.float64)
    mouth_params = np.zeros((1, S.shape[0]))
    mouth_params[:, OPEN_MOUTH_PARAM[0]] = OPEN_MOUTH_PARAM[1]
    shifted = ms_norm.copy()
    shifted[:, MOUTH_START * 2 :] += (mouth_params @ S)[:, MOUTH_START * 2 :]
    return np.reshape(S @ (shifted[0] - ms_norm[0]), (1, S.shape[0]))


def norm_landmarks(
    lmarks: np.ndarray, ms_img: np.ndarray, ms_norm: np.ndarray, S: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Normalise 68-point landmarks as demo.py ``normLmarks``.

    Each frame is Procrustes-aligned to ``ms_img`` (``scipy.spatial.procrustes``: both
    centred and scaled to unit Frobenius norm, the frame rotated and scaled onto the
    template). Its shape parameters relative to the last frame (``idx = -1``) are then
    taken, the open-mouth offset (``open_mouth_params``) subtracted, and the result
    re-projected onto the basis around ``ms_norm``.

    Quirk, kept on purpose: since every frame's parameters are taken relative to the
    last frame, the last frame always comes out as the same constant,
    ``ms_norm - open_mouth_params(ms_norm, S) @ S``, whatever the face. In the demo the
    input is a single reference image, so the landmark that conditions AT-net and VG-net
    is that constant (a mean face with a slightly open mouth), not the person's own
    landmarks. The released weights were used that way, so the behaviour is kept.

    Args:
        lmarks: (68, 2) landmarks of one image, or (n, 68, 2) of a sequence
            ((136,) and (n, 136) are read the same way).
        ms_img: (68, 2) pixel-space mean shape (``mean_shape_img.npy``).
        ms_norm: (1, 136) normalised mean shape (``mean_shape_norm.npy``).
        S: (K, 136) shape basis with orthonormal rows (``S.npy``, K = 100).

    Returns:
        ``(pred_seq, norm_list)``, both float64 (n, 136): the re-projected landmarks and
        the Procrustes-aligned landmarks.

    Raises:
        InvalidInput: the landmarks are not 68 points or are degenerate (all equal).
    """
    lmarks = np.asarray(lmarks, dtype=np.float64)
    if lmarks.size == 0 or lmarks.size % 136 != 0:
        raise InvalidInput(f"expected 68-point landmarks, got shape {lmarks.shape}")
    lmarks = lmarks.reshape(-1, 68, 2)
    ms_img = np.asarray(ms_img, dtype=np.float64)
    ms_norm = np.reshape(np.asarray(ms_norm, dtype=np.float64), (1, 136))
    S = np.asarray(S, dtype=np.float64)

    norm_list = []
    reference = None
    for frame in lmarks:
        try:
            mtx1, mtx2, _ = procrustes(ms_img, frame)
        except ValueError as exc:
            raise InvalidInput(f"degenerate face landmarks: {exc}") from exc
        reference = mtx1.reshape(136)  # the standardised template, same for every frame
        norm_list.append(mtx2.reshape(136))
    norm = np.stack(norm_list)  # (n, 136)

    init_params = S @ (norm[-1] - reference)  # (K,)
    params = (norm - reference) @ S.T - init_params - open_mouth_params(ms_norm, S)  # (n, K)
    pred_seq = params @ S + ms_norm  # (n, 136)
    return pred_seq, norm


# ---------------------------------------------------------------------------------------
# 4. The way back into the photo
# ---------------------------------------------------------------------------------------


def face_transform(crop: Crop, transform: sktf.SimilarityTransform) -> np.ndarray:
    """The affine map from photo pixels to VG-net's 128 face: ``crop_face`` + ``align_face``.

    A photo pixel goes to the 163 crop (pixel centres, scale ``163 / size``), through the
    inverse of the similarity transform into the aligned frame, and is shifted by the
    offset 1 into the 128 face. ``models.perception.paste.PasteBack`` takes it, with
    ``crop.bounds`` (outside the crop square the face holds the crop's black padding):

        >>> roi, lm163, crop = crop_face(photo, box, landmarks)
        >>> face, tform, _ = align_face(roi, lm163, choose_template(lm163, base_68))
        >>> paste = PasteBack(photo, face_transform(crop, tform), FACE_SIZE, bounds=crop.bounds)
        >>> frames = paste(generated)          # (n, 128, 128, 3) -> (n, H, W, 3)

    Returns:
        float64 (3, 3) matrix.
    """
    s = crop.scale
    to_crop = np.array([[s, 0.0, (0.5 - crop.x0) * s - 0.5],
                        [0.0, s, (0.5 - crop.y0) * s - 0.5],
                        [0.0, 0.0, 1.0]])
    to_face = np.array([[1.0, 0.0, -FACE_OFFSET], [0.0, 1.0, -FACE_OFFSET], [0.0, 0.0, 1.0]])
    return to_face @ np.linalg.inv(np.asarray(transform.params, dtype=np.float64)) @ to_crop
