"""Uploaded photos -> RGB arrays, checked by content (Pillow restricted to JPEG, PNG, WebP and
BMP), with the pixel count checked from the header before anything is decoded.

The service (``service.media``), the command line and the demo tooling read photos here.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from models.errors import InvalidInput
from models.perception.decode import Source, display_name, unreadable

MAX_IMAGE_PIXELS = 50_000_000  # a 48 MP phone photo passes; ~150 MB once decoded to RGB
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")


class ImageTooLarge(InvalidInput):
    """An image, but with more pixels than accepted."""


def read_image(source: Source, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an uploaded photo into an RGB array.

    Args:
        source (`str | os.PathLike | bytes`): a file path or the file's bytes.
        max_pixels (`int`, defaults to `MAX_IMAGE_PIXELS`): largest width * height
            accepted, checked from the header before the pixels are decoded.

    Returns:
        `np.ndarray`: uint8 (H, W, 3) RGB, upright (EXIF orientation applied);
        transparent areas are composited onto white.

    Raises:
        InvalidInput: not a JPEG/PNG/WebP/BMP, truncated or corrupt, or too many pixels.
    """
    name = display_name(source)
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        # `formats` stops Pillow from trying its other ~40 decoders on untrusted bytes.
        with Image.open(fp, formats=IMAGE_FORMATS) as img:
            if img.width * img.height > max_pixels:
                raise ImageTooLarge(
                    f"{name} is {img.width}x{img.height} pixels; "
                    f"at most {max_pixels:,} pixels are accepted"
                )
            img.load()  # decode now, inside the try: truncated data fails here
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except InvalidInput:
        raise
    except FileNotFoundError as exc:
        raise unreadable(source, exc) from None
    except Image.DecompressionBombError:  # only reached when max_pixels exceeds Pillow's cap
        raise ImageTooLarge(f"{name} has too many pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError):
        # UnidentifiedImageError and "image file is truncated" are both OSErrors.
        raise InvalidInput(f"{name} is not an image (JPEG, PNG, WebP or BMP expected)") from None


def to_rgb(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> uint8 (H, W, 3)."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        # 16-bit grayscale: Pillow's convert("RGB") clips instead of scaling.
        gray = (np.asarray(img, dtype=np.float32) / 257.0).clip(0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
