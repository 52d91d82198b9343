"""Paste-back: generated faces into the photo they were cut from, for both talking-face systems.

A system cuts its network's face out of the photo with some warp -- ATVGnet a square crop
scaled to 163 px, a similarity and an offset of 1 (``models.atvgnet.preprocess``), DAVS
one similarity onto its template (``models.davs.preprocess.align_face``). Each is an
affine map from photo pixel coordinates to face pixel coordinates, so one class goes
back for both: every photo pixel near the face is mapped into the face, the generated
faces are sampled there (``cv2.remap``, bilinear) and blended in with a feathered mask.
Pixels the mask does not reach stay the photo's, unchanged.

Coordinates are pixel centres at integers (the cv2 convention) on both sides.

Example:

    >>> face, matrix = align_face(photo, landmarks)          # DAVS: (2, 3) photo -> face
    >>> paste = PasteBack(photo, matrix, face_size=256, feather=12.0)
    >>> for chunk in generated_chunks:                       # (n, 256, 256, 3) uint8
    ...     frames = paste(chunk)                            # (n, H, W, 3) uint8
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["PasteBack", "paste_back", "to_3x3"]


def to_3x3(matrix: np.ndarray) -> np.ndarray:
    """A 2 x 3 or 3 x 3 affine matrix as float64 3 x 3 (last row ``0 0 1``).

    Raises:
        ValueError: the matrix has another shape, or its last row is not ``0 0 1``.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape == (2, 3):
        return np.vstack([matrix, [0.0, 0.0, 1.0]])
    if matrix.shape != (3, 3) or not np.array_equal(matrix[2], [0.0, 0.0, 1.0]):
        raise ValueError(f"expected a (2, 3) or affine (3, 3) matrix, got {matrix.shape}")
    return matrix


class PasteBack:
    """Blends generated square faces back into the photo they were aligned from.

    The maps and the blending mask are computed once per photo; calling the object
    warps a chunk of faces and blends them in, so a long video costs one remap and one
    blend a frame. The mask is the face square eroded by ``feather`` pixels and blurred
    with a Gaussian of sigma ``feather / 3`` (face pixels): 0 at the edge of the square
    and 1 from about ``2 * feather`` inside it, so no seam shows.

    Args:
        photo (`np.ndarray`): uint8 RGB ``(H, W, 3)``, the photo the face was cut from.
        matrix (`np.ndarray`): ``(2, 3)`` or ``(3, 3)`` affine map from photo pixel
            coordinates to face pixel coordinates.
        face_size (`int`): side of the square faces that will be pasted.
        feather (`float`, defaults to 8.0): width of the blend band in face pixels; 0
            gives a hard edge.
        bounds (`tuple[int, int, int, int]`, *optional*): ``(x0, y0, x1, y1)``, the photo
            rectangle the faces may cover. A system whose face was cut from a part of
            the photo only (ATVGnet's crop square) passes that part: outside it, its
            face holds the crop's black padding, not the photo.

    Attributes:
        region (`tuple[slice, slice] | None`): the photo rows and columns a paste can
            change; None when the face misses the photo.
    """

    def __init__(self, photo: np.ndarray, matrix: np.ndarray, face_size: int, feather: float = 8.0,
                 bounds: tuple[int, int, int, int] | None = None):
        photo = np.asarray(photo)
        if photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3 or 0 in photo.shape:
            raise ValueError(f"photo must be uint8 (H, W, 3), got {photo.dtype} {photo.shape}")
        if feather < 0:
            raise ValueError("feather must be >= 0")
        self.photo = np.ascontiguousarray(photo)
        self.face_size = int(face_size)
        self.feather = float(feather)
        self.region: tuple[slice, slice] | None = None
        forward = to_3x3(matrix)

        # Photo pixels the face square covers: its corners (one pixel out) mapped back.
        n = self.face_size
        corners = np.array([[-1, -1, 1], [n, -1, 1], [-1, n, 1], [n, n, 1]], dtype=np.float64)
        back = corners @ np.linalg.inv(forward)[:2].T  # (4, 2) photo coordinates
        x0, y0 = np.floor(back.min(axis=0)).astype(int)
        x1, y1 = np.ceil(back.max(axis=0)).astype(int) + 1
        left, top, right, bottom = (0, 0, photo.shape[1], photo.shape[0]) if bounds is None else bounds
        x0, y0 = max(x0, left, 0), max(y0, top, 0)
        x1, y1 = min(x1, right, photo.shape[1]), min(y1, bottom, photo.shape[0])
        if x0 >= x1 or y0 >= y1:
            return

        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)  # (h, w) photo pixel coordinates
        map_x = (forward[0, 0] * xs + forward[0, 1] * ys + forward[0, 2]).astype(np.float32)
        map_y = (forward[1, 0] * xs + forward[1, 1] * ys + forward[1, 2]).astype(np.float32)
        mask = cv2.remap(self._face_mask(), map_x, map_y, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)  # (h, w) in [0, 1]
        self.region = (slice(y0, y1), slice(x0, x1))
        self._mask = mask[..., None]  # (h, w, 1)
        self._maps = cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)
        self._background = self.photo[self.region].astype(np.float32) * (1.0 - self._mask)

    def _face_mask(self) -> np.ndarray:
        """Feathered (eroded, blurred) mask of the face square, float32 ``(n, n)`` in [0, 1]."""
        mask = np.ones((self.face_size, self.face_size), dtype=np.float32)
        if self.feather <= 0:
            return mask
        k = round(self.feather)
        if k > 0:
            mask = cv2.erode(mask, np.ones((2 * k + 1, 2 * k + 1), np.uint8),
                             borderType=cv2.BORDER_CONSTANT, borderValue=0)
        sigma = self.feather / 3.0
        return cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        """Blend faces into the photo.

        Args:
            faces (`np.ndarray`): uint8 RGB ``(n, face_size, face_size, 3)``, or one
                ``(face_size, face_size, 3)`` face.

        Returns:
            `np.ndarray`: uint8 ``(n, H, W, 3)`` frames.
        """
        faces = np.asarray(faces)
        if faces.ndim == 3:
            faces = faces[None]
        n = self.face_size
        if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[1:] != (n, n, 3):
            raise ValueError(f"faces must be uint8 (n, {n}, {n}, 3), got {faces.dtype} {faces.shape}")
        frames = np.empty((faces.shape[0],) + self.photo.shape, dtype=np.uint8)
        frames[:] = self.photo
        if self.region is None:
            return frames
        map1, map2 = self._maps
        for frame, face in zip(frames, faces):  # one frame at a time: memory does not grow with n
            warped = cv2.remap(np.ascontiguousarray(face), map1, map2, cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            blended = warped.astype(np.float32) * self._mask + self._background
            frame[self.region] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        return frames


def paste_back(photo: np.ndarray, faces: np.ndarray, matrix: np.ndarray, face_size: int,
               feather: float = 8.0, bounds: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """One-shot ``PasteBack(photo, matrix, face_size, feather, bounds)(faces)``.

    For a video build the ``PasteBack`` once and call it on each chunk.
    """
    return PasteBack(photo, matrix, face_size, feather=feather, bounds=bounds)(faces)
