"""Uploaded photos -> RGB arrays, checked by content (Pillow restricted to JPEG, PNG, WebP and
BMP), with the pixel count checked from the header before anything is decoded.

The service (``service.media``), the command line and the demo tooling read photos here.
``check_image`` is what the service's API process uses instead of ``read_image``: it
tells whether an upload is a whole image without holding its pixels where it can.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from models.errors import InvalidInput
from models.perception.decode import Source, display_name, unreadable

MAX_IMAGE_PIXELS = 50_000_000  # a 48 MP phone photo passes; ~150 MB once decoded to RGB
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")


class ImageTooLarge(InvalidInput):
    """An image, but with more pixels than accepted."""


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says: format, size and Pillow mode (no pixel decoded)."""

    format: str
    width: int
    height: int
    mode: str
    progressive: bool = False

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decoded_bytes(self) -> int:
        """Bytes Pillow allocates to decode it whole (multi-band modes take 4 bytes a pixel)."""
        per_pixel = 1 if self.mode in ("1", "L", "P") else 2 if self.mode.startswith("I;16") else 4
        return self.pixels * per_pixel


def check_image(source: Source, max_pixels: int = MAX_IMAGE_PIXELS, admit=None) -> ImageHeader:
    """Whether an upload is a whole image within the pixel cap, with as little memory as its format allows.

    The header is read first (too many pixels: refused before anything is decoded). Then the data:

    - PNG: every chunk's CRC and the final chunk (Pillow's ``verify``): no pixel is decoded;
    - JPEG: decoded at 1/8 scale (libjpeg's DCT scaling still reads all the data, so a truncated
      file fails); a progressive JPEG also holds its DCT coefficients, 2 bytes a pixel and band;
    - WebP and BMP: decoded whole.

    Args:
        source (`str | os.PathLike | bytes`): a file path or the file's bytes.
        max_pixels (`int`, defaults to `MAX_IMAGE_PIXELS`): largest width * height accepted.
        admit (`callable`, optional): ``admit(nbytes)`` returns a context manager held while
            ``nbytes`` of memory are in use (the service's decode budget); None: no limit.

    Returns:
        `ImageHeader`: the image's format, size and mode.

    Raises:
        ImageTooLarge: more than `max_pixels` pixels.
        InvalidInput: not a JPEG/PNG/WebP/BMP, truncated or corrupt.
    """
    admit = admit or (lambda nbytes: contextlib.nullcontext())
    with _opened(source, max_pixels) as img:
        header = _header(img)
        if header.format == "PNG":
            img.verify()
        elif header.format == "JPEG":
            scaled = header.pixels // 64 * 4
            coefficients = header.pixels * 2 * Image.getmodebands(header.mode) if header.progressive else 0
            with admit(scaled + coefficients):
                img.draft("RGB", (max(1, header.width // 8), max(1, header.height // 8)))
                img.load()
        else:
            # libwebp decodes into a canvas of its own before Pillow copies it: twice the pixels.
            with admit(header.decoded_bytes * (2 if header.format == "WEBP" else 1)):
                img.load()
        return header


def _header(img) -> ImageHeader:
    return ImageHeader(img.format, img.width, img.height, img.mode,
                       progressive=bool(img.info.get("progressive") or img.info.get("progression")))


@contextlib.contextmanager
def _opened(source: Source, max_pixels: int):
    """Pillow's lazy open of an upload (header only), with the pixel cap and one error for bad data."""
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
            yield img
    except InvalidInput:
        raise
    except FileNotFoundError as exc:
        raise unreadable(source, exc) from None
    except Image.DecompressionBombError:  # only reached when max_pixels exceeds Pillow's cap
        raise ImageTooLarge(f"{name} has too many pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError):
        # UnidentifiedImageError and "image file is truncated" are both OSErrors.
        raise InvalidInput(f"{name} is not an image (JPEG, PNG, WebP or BMP expected)") from None


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
    with _opened(source, max_pixels) as img:
        img.load()  # decode now, inside _opened: truncated data fails here
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)


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
