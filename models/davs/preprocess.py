"""DAVS face alignment and network input tensors.

Zhou, Liu, Liu, Luo, Wang, "Talking Face Generation by Adversarially Disentangled
Audio-Visual Representation", AAAI 2019, https://arxiv.org/abs/1807.07860. Official code:
https://github.com/Hangz-nju-cuhk/Talking-Face-Generation-DAVS (``preprocess/face_align.py``,
``preprocess/process256_224.py``, ``Dataloader/Test_load_audio.py``,
``Dataloader/Test_load_video.py``, ``Dataloader/Data_load_sequence.py``).

The authors align a face from three key points: the two eye centres and the mouth centre
(the mean of the mouth corners). Here they come from dlib's 68 landmarks: the means of
points 36-41 and 42-47, and of points 48 and 54. Then, as in ``face_align.py``:

1. a similarity transform maps the key points onto the template
   ``2 * [(70, 112), (110, 112), (90, 150)]`` (fitted Procrustes-style: centroid onto
   centroid, scale = ratio of the point sets' standard deviations, rotation from the SVD of
   their cross-covariance); the image is warped onto a 356 x 436 canvas (``cv2.warpAffine``,
   bilinear, border grey 127);
2. the 268 x 268 square at ``[104:372, 44:312]`` is cut and resized to 260 x 260
   (``cv2.resize``, bilinear);
3. the loaders take ``[2:258, 2:258]``: the 256 x 256 face, ``align_face``'s output.

The networks get RGB floats in [0, 1], ``(N, 3, 256, 256)``, no mean/std: the loaders divide
by 255. Video frames (``Test_load_video.py``, ``Data_load_sequence.py``) are the 256 crop of
the 260 image as is (``face_tensor``). The identity image ``A`` of the test loaders is read
from a 256 x 256 file, cut to ``[2:258, 2:258]`` (254 x 254 there) and resized back to 256
in float (``identity_tensor``). The decoder returns ``(tanh + 1) / 2`` in [0, 1]; the authors
save ``uint8(x * 255)``, truncating (``tensor_to_images``).

``align_face``'s matrix maps photo pixels to face pixels, so the way back into the photo
is ``models.perception.paste.PasteBack(photo, matrix, FACE_SIZE)``, shared with ATVGnet.

Deviations: images are RGB here and BGR in the authors' code (each step acts on each channel
alone, so the pixels are the same); the authors stored the aligned frames as JPEG files
between alignment and loading, which is not repeated. ``process256_224.py`` (LRW training
frames, 106-point landmarks) lists each eye twice in the fit; ``eye_weight=2`` does the same.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from models.errors import InvalidInput
from models.perception.paste import to_3x3

__all__ = [
    "FACE_SIZE",
    "TEMPLATE",
    "align_face",
    "face_tensor",
    "identity_tensor",
    "invert_transform",
    "key_points",
    "similarity_from_points",
    "tensor_to_images",
]

TEMPLATE_POINTS = ((70.0, 112.0), (110.0, 112.0), (90.0, 150.0))  # left eye, right eye, mouth
TEMPLATE_SCALE = 2  # face_align.py ImageLoader.scale
TEMPLATE = np.array(TEMPLATE_POINTS) * TEMPLATE_SCALE  # in the warp canvas
CANVAS_SIZE = (178 * TEMPLATE_SCALE, 218 * TEMPLATE_SCALE)  # (width, height) of the warp
CROP_SIZE = 134 * TEMPLATE_SCALE  # 268: side of the square cut from the canvas
CROP_LEFT = CANVAS_SIZE[0] // 2 - CROP_SIZE // 2  # 44
CROP_TOP = CANVAS_SIZE[1] // 2 - CROP_SIZE // 2 + 10 * TEMPLATE_SCALE  # 104: 20 px below centre
RESIZED = 260  # side after cv2.resize, face_align.py output_scale
OFFSET = 2  # the loaders' crop_x = crop_y = 2
FACE_SIZE = 256  # opt.image_size
BORDER_GREY = 127  # warpAffine borderValue

# Landmark indices of dlib's 68-point (iBUG 300-W) scheme.
LEFT_EYE = slice(36, 42)  # the eye on the image's left (the subject's right)
RIGHT_EYE = slice(42, 48)
MOUTH_CORNERS = (48, 54)


# ---------------------------------------------------------------------------------------
# Similarity transform
# ---------------------------------------------------------------------------------------


def key_points(landmarks68: np.ndarray) -> np.ndarray:
    """Left-eye centre, right-eye centre and mouth centre of dlib's 68 landmarks.

    Args:
        landmarks68 (`np.ndarray`): ``(68, 2)`` (x, y) pixel coordinates.

    Returns:
        `np.ndarray`: float64 ``(3, 2)``, in the order of ``TEMPLATE``.
    """
    points = np.asarray(landmarks68, dtype=np.float64)
    if points.shape != (68, 2) or not np.all(np.isfinite(points)):
        raise InvalidInput(f"landmarks must be 68 finite (x, y) points, got shape {points.shape}")
    return np.stack([
        points[LEFT_EYE].mean(axis=0),
        points[RIGHT_EYE].mean(axis=0),
        points[list(MOUTH_CORNERS)].mean(axis=0),
    ])


def similarity_from_points(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2 x 3 similarity of ``face_align.py``'s ``transformation_from_points``.

    Both point sets are centred and divided by their standard deviation (over all
    coordinates); the rotation ``R`` maximises ``trace(R^T P_t^T P_s)`` (orthogonal
    Procrustes, from the SVD of the 2 x 2 cross-covariance, no reflection check as in the
    original); the scale is ``std(target) / std(source)``, not the least-squares scale.

    Args:
        source (`np.ndarray`): ``(n, 2)`` points in the input image.
        target (`np.ndarray`): ``(n, 2)`` points they should land on.

    Returns:
        `np.ndarray`: float64 ``(2, 3)`` ``[s R | t]`` with ``target ~ s R source + t``.

    Raises:
        InvalidInput: the source points coincide (no face geometry to fit).
    """
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_std, dst_std = src_c.std(), dst_c.std()
    if not src_std > 1e-9:
        raise InvalidInput("the face key points coincide; the landmarks are degenerate")
    u, _, vt = np.linalg.svd((src_c / src_std).T @ (dst_c / dst_std))
    rotation = (u @ vt).T  # (2, 2), applied to column vectors
    scale = dst_std / src_std
    translation = dst_mean - scale * rotation @ src_mean
    return np.concatenate([scale * rotation, translation[:, None]], axis=1)


def _crop_and_resize_matrix() -> np.ndarray:
    """3 x 3 map from canvas pixels to 256-face pixels: cut, cv2.resize, loader offset.

    ``cv2.resize`` samples destination pixel ``x`` at source ``(x + 0.5) * 268 / 260 - 0.5``.
    """
    k = RESIZED / CROP_SIZE
    shift_x = k * (0.5 - CROP_LEFT) - 0.5 - OFFSET
    shift_y = k * (0.5 - CROP_TOP) - 0.5 - OFFSET
    return np.array([[k, 0.0, shift_x], [0.0, k, shift_y], [0.0, 0.0, 1.0]])


def invert_transform(matrix: np.ndarray) -> np.ndarray:
    """The inverse 2 x 3 affine map: aligned-face pixels -> input-image pixels."""
    return np.linalg.inv(to_3x3(matrix))[:2]


# ---------------------------------------------------------------------------------------
# Alignment
# ---------------------------------------------------------------------------------------


def _check_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise InvalidInput(
            f"the {name} must be uint8 RGB (H, W, 3), got {image.dtype} {image.shape}"
        )
    return np.ascontiguousarray(image)


def align_face(
    image: np.ndarray, landmarks68: np.ndarray, *, eye_weight: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Align a face as DAVS's ``face_align.py`` and the loaders' ``[2:258]`` crop do.

    Args:
        image (`np.ndarray`): uint8 RGB ``(H, W, 3)``.
        landmarks68 (`np.ndarray`): dlib's ``(68, 2)`` landmarks of the face
            (``models.perception.face.find_face``).
        eye_weight (`int`, defaults to 1): how many times each eye enters the fit; 1 is
            ``face_align.py`` (the test-time protocol), 2 is ``process256_224.py`` (LRW).

    Returns:
        `tuple`: ``(face, matrix)``: the uint8 RGB ``(256, 256, 3)`` aligned face and the
        float64 ``(2, 3)`` affine map from input-image pixel coordinates to face pixel
        coordinates (pixel centres at integers, the cv2 convention);
        ``invert_transform(matrix)`` goes back.
    """
    image = _check_rgb(image)
    points = key_points(landmarks68)
    if eye_weight < 1:
        raise ValueError("eye_weight must be >= 1")
    order = [0, 1] * eye_weight + [2]
    warp = similarity_from_points(points[order], TEMPLATE[order])  # (2, 3) image -> canvas

    # 1. Warp onto the canvas, 2. cut and resize, 3. the loaders' offset crop.
    canvas = cv2.warpAffine(image, warp, CANVAS_SIZE, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(BORDER_GREY,) * 3)
    square = canvas[CROP_TOP : CROP_TOP + CROP_SIZE, CROP_LEFT : CROP_LEFT + CROP_SIZE]
    resized = cv2.resize(square, (RESIZED, RESIZED), interpolation=cv2.INTER_LINEAR)
    face = np.ascontiguousarray(resized[OFFSET : OFFSET + FACE_SIZE, OFFSET : OFFSET + FACE_SIZE])
    matrix = (_crop_and_resize_matrix() @ to_3x3(warp))[:2]
    return face, matrix


# ---------------------------------------------------------------------------------------
# Network tensors
# ---------------------------------------------------------------------------------------


def _check_faces(faces: np.ndarray) -> np.ndarray:
    faces = np.asarray(faces)
    if faces.ndim == 3:
        faces = faces[None]
    if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[1:] != (FACE_SIZE, FACE_SIZE, 3):
        raise InvalidInput(
            f"faces must be uint8 (N, {FACE_SIZE}, {FACE_SIZE}, 3) RGB, "
            f"got {faces.dtype} {faces.shape}"
        )
    return faces


def face_tensor(faces: np.ndarray) -> torch.Tensor:
    """Aligned faces as the networks' input, the way the video loaders make it.

    ``image / 255`` in float64 (then float32, as the loaders' arrays are copied into
    FloatTensors), channels first. Use it for video frames (the lip-reading path).

    Args:
        faces (`np.ndarray`): uint8 RGB ``(256, 256, 3)`` or ``(N, 256, 256, 3)`` from
            ``align_face``.

    Returns:
        `torch.Tensor`: float32 ``(N, 3, 256, 256)`` in [0, 1], RGB.
    """
    faces = _check_faces(faces)
    scaled = faces.astype(np.float64) / 255  # (N, 256, 256, 3)
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(0, 3, 1, 2), dtype=np.float32))


def identity_tensor(face: np.ndarray) -> torch.Tensor:
    """The identity image ``A`` as the test loaders prepare it from a 256 x 256 face.

    ``Test_load_audio.py`` / ``Test_load_video.py``: ``image / 255`` in float64, the slice
    ``[2:258, 2:258]`` (254 x 254 of a 256 image), ``cv2.resize`` back to 256 x 256
    (bilinear), channels first.

    Args:
        face (`np.ndarray`): uint8 RGB ``(256, 256, 3)`` (or ``(N, 256, 256, 3)``).

    Returns:
        `torch.Tensor`: float32 ``(N, 3, 256, 256)`` in [0, 1], RGB.
    """
    faces = _check_faces(face)
    out = np.empty((faces.shape[0], 3, FACE_SIZE, FACE_SIZE), dtype=np.float32)
    for i, one in enumerate(faces):
        scaled = one.astype(np.float64) / 255
        cut = scaled[OFFSET : OFFSET + FACE_SIZE, OFFSET : OFFSET + FACE_SIZE]  # (254, 254, 3)
        resized = cv2.resize(cut, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)
        out[i] = resized.transpose(2, 0, 1)
    return torch.from_numpy(out)


def tensor_to_images(images: torch.Tensor) -> np.ndarray:
    """Decoder output in [0, 1] to uint8 RGB frames, truncating as ``util.tensor2im`` does.

    Args:
        images (`torch.Tensor`): ``(N, 3, H, W)`` or ``(3, H, W)``.

    Returns:
        `np.ndarray`: uint8 ``(N, H, W, 3)``.
    """
    array = images.detach().float().cpu().numpy()
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got {tuple(array.shape)}")
    # Clipped first: the decoder's range is [0, 1], but float error must not wrap around.
    return (np.clip(array.transpose(0, 2, 3, 1), 0.0, 1.0) * 255.0).astype(np.uint8)
