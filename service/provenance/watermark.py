"""An invisible watermark in frames: invisible-watermark's ``dwtDctSvd``, in NumPy.

The method (Navas et al., 2008; the ``invisible-watermark`` package's ``dwtDctSvd``):

* the U plane of the frame in OpenCV's YUV (``U = 0.492 (B - Y) + 128``) is Haar-transformed
  once; its approximation band is cut into 4 x 4 blocks (8 x 8 pixels each);
* block ``k`` carries bit ``k mod 48`` of the payload in its largest singular value ``s``
  (the package takes it of the block's DCT, which has the same singular values): ``s`` is
  moved to ``(floor(s / 36) + 0.25 + 0.5 * bit) * 36``, so reading ``s mod 36`` above or
  below 18 gives the bit back;
* a reader averages each bit's votes over every block of every frame it sees (``Reader``).

The change is a smooth shift of blue-difference over 8 x 8 pixels (PSNR about 42 dB), and
the 8 x 8 blocks line up with the 2 x 2 chroma subsampling of H.264 and JPEG, so the mark
survives a re-encode (H.264 at CRF 23; JPEG at quality 90 from 256 x 256). Not cropping or
scaling (the block grid moves), and flat pure black or white areas carry none (the blue
channel cannot move past 0 or 255).

This module writes the package's format without its dependencies (opencv-python, PyWavelets,
torch): the package's ``WatermarkDecoder(...).decode(bgr, "dwtDctSvd")`` reads what
``embed`` writes and ``read`` reads what the package writes (tests/test_provenance.py).
Unlike the package, the Y and V planes are left exactly as they were, and frames are done
in batches (a chunk of frames at once).
"""

from __future__ import annotations

import numpy as np

SCALE = 36.0                  # quantisation step of the singular value (the package's default)
PAYLOAD_BITS = 48
MIN_VOTES = 4                 # blocks a bit needs in one frame before a frame is marked at all
POWER_STEPS = 4               # power iterations for the top singular pair: U blocks are positive and
                              # near rank 1, so this is exact to 1e-4 on natural pictures

# OpenCV's RGB -> YUV (BT.601 luma; U = B2U (B - Y) + 128).
KR, KG, KB = 0.299, 0.587, 0.114
B2U = 0.492111
# A change dU of U with Y and V kept: blue moves by dU / B2U, green by -KB / KG of that, red not at all.
DB_PER_DU = 1.0 / B2U
DG_PER_DU = -KB / KG / B2U


def grid(height: int, width: int) -> tuple[int, int]:
    """(rows, columns) of 4 x 4 approximation blocks in a frame of this size."""
    return (height // 4 * 2) // 4, (width // 4 * 2) // 4


def fits(height: int, width: int) -> bool:
    """Whether a frame is large enough to carry the payload (about 112 x 112 pixels and up)."""
    rows, cols = grid(height, width)
    return rows * cols >= MIN_VOTES * PAYLOAD_BITS


def payload_bits(payload: bytes) -> np.ndarray:
    """The payload's bits, most significant first (the package's order)."""
    if len(payload) * 8 != PAYLOAD_BITS:
        raise ValueError(f"the payload must be {PAYLOAD_BITS // 8} bytes, got {len(payload)}")
    return np.unpackbits(np.frombuffer(payload, np.uint8)).astype(np.float32)


def _blocks(frames: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The approximation band of U as (n, rows, cols, 4, 4) float32 blocks."""
    n = frames.shape[0]
    pixels = frames[:, :rows * 8, :cols * 8].reshape(n, rows * 4, 2, cols * 4, 2, 3)
    pairs = pixels[:, :, 0].astype(np.uint16)
    pairs += pixels[:, :, 1]
    sums = (pairs[:, :, :, 0] + pairs[:, :, :, 1]).astype(np.float32)      # each channel over 2 x 2 pixels
    # Haar's approximation is the 2 x 2 sum / 2; U is linear in R, G, B.
    band = (sums[..., 2] * ((1 - KB) * B2U) - sums[..., 0] * (KR * B2U) - sums[..., 1] * (KG * B2U)
            + 4 * 128.0) / 2
    return band.reshape(n, rows, 4, cols, 4).transpose(0, 1, 3, 2, 4)


def _top_singular(blocks: np.ndarray):
    """(s, u, v): the largest singular value of each block and its vectors, by power iteration."""
    gram = np.swapaxes(blocks, -1, -2) @ blocks
    v = np.full(blocks.shape[:-1], 0.5, dtype=blocks.dtype)
    for _ in range(POWER_STEPS):
        v = (gram @ v[..., None])[..., 0]
        v /= np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    bv = (blocks @ v[..., None])[..., 0]
    s = np.linalg.norm(bv, axis=-1)
    return s, bv / np.maximum(s, 1e-12)[..., None], v


def embed(frames: np.ndarray, payload: bytes) -> np.ndarray:
    """``frames`` (uint8 RGB, (n, H, W, 3) or one (H, W, 3)) with ``payload`` marked in them.

    Frames too small to carry it (``fits``) come back unchanged; the input is not modified.
    """
    frames = np.asarray(frames)
    one = frames.ndim == 3
    batch = frames[None] if one else frames
    n, height, width = batch.shape[:3]
    if not fits(height, width):
        return frames
    rows, cols = grid(height, width)
    s, u, v = _top_singular(_blocks(batch, rows, cols))
    bits = payload_bits(payload)[np.arange(rows * cols) % PAYLOAD_BITS].reshape(rows, cols)
    shift = (s // SCALE + 0.25 + 0.5 * bits) * SCALE - s
    band = shift[..., None, None] * u[..., :, None] * v[..., None, :]          # (n, rows, cols, 4, 4)
    du = band.transpose(0, 1, 3, 2, 4).reshape(n, rows * 4, 1, cols * 4, 1) / 2  # per 2 x 2 pixels
    out = np.array(batch, dtype=np.uint8, copy=True, order="C")
    for channel, per_du in ((2, DB_PER_DU), (1, DG_PER_DU)):
        plane = out[:, :rows * 8, :cols * 8, channel].reshape(n, rows * 4, 2, cols * 4, 2)
        moved = np.add(plane, np.rint(du * per_du).astype(np.int16), dtype=np.int16)
        np.clip(moved, 0, 255, out=moved)
        np.copyto(plane, moved, casting="unsafe")
    return out[0] if one else out


class Reader:
    """Votes for each payload bit, gathered over frames; ``add`` chunks, then ``payloads``.

    Two readings are kept: the package's (a block votes 1 when ``s mod 36 > 18``) and a
    weighted one (a block votes ``sin(2 pi (s mod 36) / 36)``: +1 where a 0 was written, -1
    where a 1 was, near 0 where a re-encode left ``s`` by the boundary). Neither is always
    the better after a re-encode, so a caller tries both.
    """

    def __init__(self):
        self.ones = np.zeros(PAYLOAD_BITS)       # the package's votes for 1
        self.weighted = np.zeros(PAYLOAD_BITS)   # sum of the weighted votes
        self.votes = np.zeros(PAYLOAD_BITS)
        self.frames = 0

    def add(self, frames: np.ndarray) -> None:
        """Count the votes of frames (uint8 RGB, (n, H, W, 3) or (H, W, 3)); small frames count none."""
        frames = np.asarray(frames)
        batch = frames[None] if frames.ndim == 3 else frames
        height, width = batch.shape[1:3]
        if not fits(height, width):
            return
        rows, cols = grid(height, width)
        phase = (_top_singular(_blocks(batch, rows, cols))[0].astype(np.float64) % SCALE) / SCALE
        phase = phase.reshape(len(batch), -1)
        index = np.arange(rows * cols) % PAYLOAD_BITS
        self.ones += np.bincount(index, weights=(phase > 0.5).sum(0), minlength=PAYLOAD_BITS)
        self.weighted += np.bincount(index, weights=np.sin(2 * np.pi * phase).sum(0), minlength=PAYLOAD_BITS)
        self.votes += np.bincount(index, minlength=PAYLOAD_BITS) * len(batch)
        self.frames += len(batch)

    def scores(self) -> np.ndarray:
        """Each bit's mean weighted vote, -1 (surely 1) to 1 (surely 0); 0 where nothing was read."""
        return self.weighted / np.maximum(self.votes, 1)

    def payloads(self) -> list[bytes]:
        """The payload of the weighted votes, then the package's (whatever was read: check before believing)."""
        counted = self.ones / np.maximum(self.votes, 1)
        return [np.packbits(self.scores() < 0).tobytes(), np.packbits(counted > 0.5).tobytes()]

    def clarity(self) -> float:
        """How one-sided the votes are, 0 (a coin toss: no mark) to 1 (every block exactly on its mark)."""
        return float(np.mean(np.abs(self.scores())))
