"""What the image generators share: image tensors <-> uint8, grids, folders of training images.

    images = read_image_folder("faces/", size=64)          # float (N, 3, 64, 64) in [-1, 1]
    write_demo_images("digits/", "digits", size=32)        # offline training images
    uint8 = to_uint8(generator(noise))                     # (n, H, W, 3) for the service

The generators work in [-1, 1] (a tanh output), as their authors' code does; the
service speaks uint8 RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.errors import InvalidInput

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DEMO_SETS = ("digits", "scenes", "shapes")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images (n, C, H, W) in [-1, 1] -> uint8 RGB (n, H, W, 3); one channel becomes grey."""
    images = images.detach().float().cpu().clamp(-1, 1)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[1] != 3:
        raise ValueError(f"images must have 1 or 3 channels, got {images.shape[1]}")
    return ((images + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def from_uint8(images: np.ndarray, channels=3) -> torch.Tensor:
    """uint8 RGB (n, H, W, 3) -> float (n, channels, H, W) in [-1, 1] (channels 1: the mean)."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return tensor.mean(1, keepdim=True) if channels == 1 else tensor


def image_grid(images: np.ndarray, columns: int | None = None, padding=2, pad_value=0) -> np.ndarray:
    """uint8 (n, H, W, 3) -> one uint8 image, ``columns`` wide (default: as square as can be)."""
    n, height, width, _ = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    grid = np.full((padding + rows * (height + padding), padding + columns * (width + padding), 3), pad_value,
                   np.uint8)
    for i, image in enumerate(images):
        top, left = padding + (i // columns) * (height + padding), padding + (i % columns) * (width + padding)
        grid[top:top + height, left:left + width] = image
    return grid


def resize_nearest(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (n, h, w, 3) -> (n, *size, 3) by nearest neighbour (shows a coarse level's pixels)."""
    rows = (np.arange(size[0]) * images.shape[1] // size[0])
    cols = (np.arange(size[1]) * images.shape[2] // size[1])
    return images[:, rows][:, :, cols]


def level_grid(levels: list, images: np.ndarray, padding=2) -> np.ndarray:
    """One row per image: its coarse-to-fine levels (scaled to the final size), then the image."""
    size = images.shape[1:3]
    columns = [resize_nearest(level, size) for _, level in levels] + [images]
    tiles = np.stack(columns, axis=1).reshape(-1, *images.shape[1:])
    return image_grid(tiles, columns=len(columns), padding=padding)


def _square(image, size):
    from PIL import Image

    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)


def image_files(folder) -> list[Path]:
    """The image files under ``folder`` (recursively), sorted; InvalidInput when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InvalidInput(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def read_image_folder(folder, size: int, channels=3, limit: int | None = None) -> torch.Tensor:
    """Every image under ``folder``, centre-cropped square and resized: float (N, C, size, size) in [-1, 1].

    Images that cannot be decoded are skipped; InvalidInput when none can be.
    """
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in image_files(folder)[:limit]:
        try:
            with Image.open(path) as image:
                images.append(np.asarray(_square(image.convert("RGB"), size)))
        except (UnidentifiedImageError, OSError, ValueError):
            continue
    if not images:
        raise InvalidInput(f"no image under {folder} could be read")
    return from_uint8(np.stack(images), channels)


# ---------------------------------------------------------------------------------------
# Offline training images for demos and tests


def demo_images(kind: str, size: int, count: int | None = None, seed=0) -> np.ndarray:
    """uint8 (N, size, size, 3) training images made without any download.

    * ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797), upscaled, white on black.
    * ``scenes``: random crops of scikit-image's bundled photographs.
    * ``shapes``: rendered coloured discs and squares on plain backgrounds (a foreground on a
      background, what the layered models separate).
    """
    rng = np.random.default_rng(seed)
    if kind == "digits":
        from PIL import Image
        from sklearn.datasets import load_digits

        digits = load_digits().images                       # (1797, 8, 8), 0..16
        count = count or len(digits)
        picked = digits[np.resize(rng.permutation(len(digits)), count)]     # repeats past 1,797
        out = [np.asarray(Image.fromarray((d * 255 / 16).astype(np.uint8)).resize((size, size), Image.BICUBIC))
               for d in picked]
        return np.repeat(np.stack(out)[..., None], 3, axis=3)
    if kind == "scenes":
        from PIL import Image
        from skimage import data

        photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.hubble_deep_field()]
        count = count or 1000
        out = []
        for _ in range(count):
            photo = photos[rng.integers(len(photos))]
            side = int(rng.integers(min(photo.shape[:2]) // 4, min(photo.shape[:2])))
            top = int(rng.integers(0, photo.shape[0] - side + 1))
            left = int(rng.integers(0, photo.shape[1] - side + 1))
            crop = Image.fromarray(photo[top:top + side, left:left + side])
            out.append(np.asarray(crop.resize((size, size), Image.BICUBIC)))
        return np.stack(out)
    if kind == "shapes":
        count = count or 1000
        yy, xx = np.mgrid[0:size, 0:size] / size
        out = np.empty((count, size, size, 3), np.uint8)
        for i in range(count):
            background = rng.uniform(0, 0.5, 3)
            colour = rng.uniform(0.5, 1.0, 3)
            cy, cx, radius = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.12, 0.3)
            if rng.random() < 0.5:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
            else:
                mask = (np.abs(yy - cy) < radius) & (np.abs(xx - cx) < radius)
            image = np.where(mask[..., None], colour, background)
            out[i] = np.round(image * 255).astype(np.uint8)
        return out
    raise InvalidInput(f"unknown demo image set {kind!r}; known: {', '.join(DEMO_SETS)}")


def write_demo_images(folder, kind: str, size: int, count: int | None = None, seed=0) -> Path:
    """``demo_images`` written as PNG files into ``folder`` (for ``talkingface train ... --images``)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(demo_images(kind, size, count, seed)):
        Image.fromarray(image).save(folder / f"{kind}_{i:05d}.png")
    return folder
