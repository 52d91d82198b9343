"""Training pairs for S^2-GAN: images with their surface normals.

The authors train on NYUv2 (RGB frames and TV-denoised surface normals stored as JPGs,
each normal n drawn as (n + 1) / 2 * 255, ``donkey.lua``). ``read_pairs`` reads that layout
from two folders paired by file name; ``render_scenes`` makes such pairs offline: small
rooms (floor, back and side walls) with boxes and spheres, their exact normals and
Lambertian shading in colour, seen by a pinhole camera.

Normals are in camera coordinates: x to the right, y up, z towards the camera.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.common.images import image_files, read_image_folder
from models.errors import InvalidInput


def read_pairs(images_dir, normals_dir, size: int, normals_size: int | None = None):
    """Images and normals paired by file stem: float (N, 3, size, size) each, in [-1, 1].

    The normals are read as the authors store them, (n + 1) / 2 as RGB (``x / 127.5 - 1``,
    no renormalisation). ``normals_size`` (default ``size``) is their side. Files without a
    partner are left out; InvalidInput when no pair is left.
    """
    images_dir, normals_dir = Path(images_dir), Path(normals_dir)
    images = {p.stem: p for p in image_files(images_dir)}
    normals = {p.stem: p for p in image_files(normals_dir)}
    stems = sorted(set(images) & set(normals))
    if not stems:
        raise InvalidInput(f"no file of {images_dir} has a normal map of the same name in {normals_dir}")
    image_tensor = _read(images_dir, [images[s] for s in stems], size)
    normal_tensor = _read(normals_dir, [normals[s] for s in stems], normals_size or size)
    return image_tensor, normal_tensor, stems


def read_normals(normals_dir, size: int) -> torch.Tensor:
    """Every normal map under ``normals_dir`` (Structure-GAN's training set): (N, 3, size, size) in [-1, 1]."""
    return read_image_folder(normals_dir, size)


def _read(folder, files, size):
    from PIL import Image

    from models.common.images import from_uint8

    arrays = []
    for path in files:
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                side = min(image.size)
                left, top = (image.width - side) // 2, (image.height - side) // 2
                # centre square, then bilinear to size (normal maps are not sharpened by bicubic overshoot)
                square = image.crop((left, top, left + side, top + side))
                arrays.append(np.asarray(square.resize((size, size), Image.BILINEAR) if side != size else square))
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read {path}: {exc}") from exc
    return from_uint8(np.stack(arrays))


# ---------------------------------------------------------------------------------------
# Rendered rooms


def _ray_directions(size, focal=1.1):
    ys, xs = np.mgrid[0:size, 0:size]
    u = (xs + 0.5) / size * 2 - 1
    v = 1 - (ys + 0.5) / size * 2
    d = np.stack([u, v, -np.full_like(u, focal)], axis=-1)
    return d / np.linalg.norm(d, axis=-1, keepdims=True)                 # (size, size, 3)


def _hit_plane(origin, d, axis, value, facing):
    """Distance along d to the plane coordinate[axis] == value, seen from the side ``facing``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (value - origin[axis]) / d[..., axis]
    normal = np.zeros(3)
    normal[axis] = facing
    return np.where(t > 1e-4, t, np.inf), np.broadcast_to(normal, d.shape)


def _hit_sphere(origin, d, centre, radius):
    oc = origin - centre
    b = (d * oc).sum(-1)
    c = (oc ** 2).sum() - radius ** 2
    disc = b ** 2 - c
    with np.errstate(invalid="ignore"):
        t = -b - np.sqrt(disc)
    t = np.where((disc > 0) & (t > 1e-4), t, np.inf)
    point = origin + d * np.where(np.isfinite(t), t, 0)[..., None]
    normal = (point - centre) / radius
    return t, normal


def _hit_box(origin, d, low, high):
    """Slab test of an axis-aligned box; the normal of the face entered."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (low - origin) / d
        t2 = (high - origin) / d
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    t_near = near.max(-1)
    t_far = far.min(-1)
    hit = (t_near <= t_far) & (t_near > 1e-4)
    axis = near.argmax(-1)
    normal = np.zeros(d.shape)
    sign = -np.sign(np.take_along_axis(d, axis[..., None], -1))[..., 0]
    np.put_along_axis(normal, axis[..., None], sign[..., None], -1)
    return np.where(hit, t_near, np.inf), normal


def render_scene(rng, size=32):
    """One room: uint8 image (size, size, 3) and uint8 normals (size, size, 3) as (n + 1) / 2."""
    d = _ray_directions(size)
    origin = np.array([rng.uniform(-0.3, 0.3), rng.uniform(0.0, 0.4), 0.0])
    width, depth = rng.uniform(1.6, 2.6), rng.uniform(3.5, 5.5)
    hits = [
        _hit_plane(origin, d, 1, -1.0, 1.0) + (rng.uniform(0.2, 0.9, 3),),           # floor
        _hit_plane(origin, d, 2, -depth, 1.0) + (rng.uniform(0.2, 0.9, 3),),         # back wall
        _hit_plane(origin, d, 0, -width, 1.0) + (rng.uniform(0.2, 0.9, 3),),         # left wall
        _hit_plane(origin, d, 0, width, -1.0) + (rng.uniform(0.2, 0.9, 3),),         # right wall
        _hit_plane(origin, d, 1, 2.2, -1.0) + (rng.uniform(0.5, 0.9, 3),),           # ceiling
    ]
    for _ in range(int(rng.integers(1, 4))):
        colour = rng.uniform(0.1, 1.0, 3)
        x, z = rng.uniform(-width + 0.5, width - 0.5), rng.uniform(-depth + 0.8, -1.8)
        if rng.random() < 0.5:
            r = rng.uniform(0.3, 0.7)
            hits.append(_hit_sphere(origin, d, np.array([x, -1.0 + r, z]), r) + (colour,))
        else:
            half = rng.uniform(0.25, 0.6, 3)
            height = rng.uniform(0.3, 1.2)
            low = np.array([x - half[0], -1.0, z - half[2]])
            high = np.array([x + half[0], -1.0 + height, z + half[2]])
            hits.append(_hit_box(origin, d, low, high) + (colour,))
    distances = np.stack([h[0] for h in hits])                             # (k, size, size)
    nearest = distances.argmin(0)
    normals = np.zeros((size, size, 3))
    albedo = np.zeros((size, size, 3))
    for k, (_, normal, colour) in enumerate(hits):
        mask = nearest == k
        normals[mask] = normal[mask]
        albedo[mask] = colour
    normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-8)
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(0.4, 1.0), rng.uniform(0.3, 1.0)])
    light /= np.linalg.norm(light)
    shade = 0.25 + 0.75 * np.clip((normals * light).sum(-1, keepdims=True), 0, 1)
    image = np.clip(albedo * shade, 0, 1)
    return (np.round(image * 255).astype(np.uint8),
            np.round((normals + 1) / 2 * 255).astype(np.uint8))


def render_scenes(count: int, size=32, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` rooms: uint8 images and normals, (count, size, size, 3) each."""
    rng = np.random.default_rng(seed)
    pairs = [render_scene(rng, size) for _ in range(count)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def write_scenes(folder, count: int, size=32, seed=0) -> tuple[Path, Path]:
    """``render_scenes`` as PNGs: ``folder/images/NNNNN.png`` and ``folder/normals/NNNNN.png``."""
    from PIL import Image

    folder = Path(folder)
    images, normals = render_scenes(count, size, seed)
    for sub, arrays in (("images", images), ("normals", normals)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for i, array in enumerate(arrays):
            Image.fromarray(array).save(folder / sub / f"{i:05d}.png")
    return folder / "images", folder / "normals"
