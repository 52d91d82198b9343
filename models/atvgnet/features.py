"""AT-net audio input: MFCC windows, one per 25-fps video frame.

ATVGnet (Chen et al., "Hierarchical Cross-Modal Talking Face Generation with Dynamic
Pixel-Wise Loss", CVPR 2019, arXiv:1905.03820; https://github.com/lelechen63/ATVGnet)
prepares its audio in ``code/demo.py`` as follows: the 16-kHz clip gets ``PAD`` zeros at
each end, 13 MFCCs are taken every 10 ms (``python_speech_features.mfcc`` defaults), and
video frame ``k`` reads MFCC rows ``[4k, 4k + 28)`` without ``c0``, for
``k = 0 .. floor(M / 4) - 7`` where ``M`` is the number of MFCC rows.

Here each range of frames is computed from only the samples its rows read, so memory is
bounded by the number of frames asked for, not by the clip length; the values equal those
of the demo's whole-clip computation. ``MfccStream`` does the same for a clip whose
samples arrive in pieces: frame ``k`` reads no sample at or past ``640 k + LOOKAHEAD``, so
it is computed as soon as those samples are in, with the whole clip's values.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from models.perception.audio import mfcc

__all__ = [
    "FPS",
    "HOP",
    "LOOKAHEAD",
    "MfccStream",
    "PAD",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "WINDOW",
    "iter_mfcc_windows",
    "mfcc_windows",
    "num_frames",
]

SAMPLE_RATE = 16000  # Hz, the rate demo.py loads audio at
FPS = 25  # video frames per second
PAD = 1920  # zero samples demo.py adds before and after the clip (0.12 s)
WINDOW = 28  # MFCC rows per video frame (0.28 s of audio)
HOP = 4  # MFCC rows between consecutive video frames (100 rows/s / 25 fps)

# MFCC framing at SAMPLE_RATE with the library defaults (winlen 0.025 s, winstep 0.01 s).
_FRAME_LEN = 400  # samples per MFCC frame
_FRAME_STEP = 160  # samples between MFCC frames
_PREEMPH = 0.97
_FIRST_FRAME = 3  # demo.py's loop starts at ind = 3 and reads rows [(ind - 3) * 4, (ind + 4) * 4)

SAMPLES_PER_FRAME = HOP * _FRAME_STEP  # 640: clip samples between consecutive video frames
# Frame k reads padded samples [640 k, 640 k + 4720), i.e. clip samples before 640 k + 2800:
# 0.175 s of audio past the frame's own time.
LOOKAHEAD = _FRAME_STEP * (WINDOW - 1) + _FRAME_LEN - PAD


def _num_mfcc_rows(n_padded: int) -> int:
    """MFCC rows for a signal of ``n_padded`` samples: ``1 + ceil((N - 400) / 160)``, >= 1."""
    if n_padded <= _FRAME_LEN:
        return 1
    return 1 + -(-(n_padded - _FRAME_LEN) // _FRAME_STEP)


def num_frames(n_samples: int) -> int:
    """Number of video frames (MFCC windows) demo.py produces for a 16-kHz clip.

    With ``M`` MFCC rows of the padded clip, the demo's loop runs ``ind = 3 ..
    floor(M / 4) - 4``, so the count is ``max(0, floor(M / 4) - 6)``. A 10 s clip gives 249.

    Args:
        n_samples (`int`): clip length in samples at 16 kHz.

    Returns:
        `int`: the number of frames, 0 when the clip is too short for any.
    """
    n_samples = int(n_samples)
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    rows = _num_mfcc_rows(n_samples + 2 * PAD)
    return max(0, rows // HOP - (WINDOW // HOP - 1))


def _check_audio(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"audio must be 1-D mono, got shape {x.shape}")
    if not np.isrealobj(x):
        raise ValueError("audio must be real")
    return x


def _padded_slice(audio: np.ndarray, begin: int, end: int, offset: int = 0, length: int | None = None) -> np.ndarray:
    """Samples ``[begin, end)`` of ``PAD zeros + clip + PAD zeros`` as float64, 0 <= begin <= end.

    ``audio`` holds the clip's samples ``[offset, offset + len(audio))`` of its ``length``
    (default: all of it). Indices past the padded signal read zeros; the padded clip is
    never built.
    """
    length = offset + audio.shape[0] if length is None else length
    out = np.zeros(end - begin, dtype=np.float64)
    a = max(begin, PAD)
    b = min(end, PAD + length)
    if b > a:
        if a - PAD < offset or b - PAD > offset + audio.shape[0]:
            raise ValueError(f"samples [{a - PAD}, {b - PAD}) are not among those held, "
                             f"[{offset}, {offset + audio.shape[0]})")
        out[a - begin : b - begin] = audio[a - PAD - offset : b - PAD - offset]
    return out


def mfcc_windows(audio: np.ndarray, start: int, stop: int) -> np.ndarray:
    """MFCC windows of video frames ``[start, stop)``, exactly as demo.py computes them.

    Frame ``k`` is demo.py's ``ind = k + 3``: rows ``[4k, 4k + 28)`` of the padded clip's
    MFCCs, coefficients 1..12. Only the samples those rows read are processed:

    - rows ``[4 * start, 4 * stop + 24)`` read padded samples
      ``[160 * r0, 160 * (r1 - 1) + 400)``;
    - pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]`` needs the sample before the slice (the
      padded clip's first sample is kept unchanged), so it is applied here and the MFCC is
      run with ``preemph=0``;
    - samples past the padded clip are zeros *after* pre-emphasis, as in the reference's
      framing, which appends zeros to the emphasised signal.

    Args:
        audio (`np.ndarray`): 1-D mono clip at 16 kHz (float; ints are used as they are).
        start (`int`): first video frame, ``0 <= start <= stop``.
        stop (`int`): one past the last video frame, ``stop <= num_frames(len(audio))``.

    Returns:
        `np.ndarray`: float32 ``(stop - start, 28, 12)``.

    Raises:
        ValueError: for a non-1-D clip or an out-of-range ``start``/``stop``.
    """
    x = _check_audio(audio)
    return _windows(x, 0, x.shape[0], start, stop)


def _windows(x: np.ndarray, offset: int, length: int, start: int, stop: int) -> np.ndarray:
    """``mfcc_windows`` of a clip of ``length`` samples of which ``x`` holds ``[offset, offset + len(x))``."""
    start, stop = int(start), int(stop)
    total = num_frames(length)
    if not 0 <= start <= stop <= total:
        raise ValueError(f"frame range [{start}, {stop}) is outside [0, {total}) for this clip")
    count = stop - start
    if count == 0:
        return np.zeros((0, WINDOW, 12), dtype=np.float32)

    # 1. MFCC rows the frames read, and the padded-clip samples those rows read.
    row_begin = HOP * start
    row_end = HOP * (stop - 1) + WINDOW
    sample_begin = _FRAME_STEP * row_begin
    sample_end = _FRAME_STEP * (row_end - 1) + _FRAME_LEN
    n_padded = length + 2 * PAD

    # 2. Pre-emphasis over the slice, with the sample before it (none at the clip's start).
    context = 1 if sample_begin > 0 else 0
    emph_end = min(sample_end, n_padded)
    raw = _padded_slice(x, sample_begin - context, emph_end, offset, length)
    emphasized = np.zeros(sample_end - sample_begin, dtype=np.float64)  # zeros past the clip
    n_valid = emph_end - sample_begin
    if context:
        emphasized[:n_valid] = raw[1:] - _PREEMPH * raw[:-1]
    else:
        emphasized[0] = raw[0]
        emphasized[1:n_valid] = raw[1:] - _PREEMPH * raw[:-1]

    # 3. MFCC of the slice: exactly rows [row_begin, row_end) of the whole-clip MFCC.
    rows = mfcc(emphasized, SAMPLE_RATE, preemph=0.0)  # (row_end - row_begin, 13)

    # 4. Window k: rows [4 (k - start), 4 (k - start) + 28), c0 dropped.
    index = HOP * np.arange(count)[:, None] + np.arange(WINDOW)[None, :]  # (count, 28)
    return rows[index, 1:].astype(np.float32)


def iter_mfcc_windows(audio: np.ndarray, chunk_frames: int) -> Iterator[tuple[int, np.ndarray]]:
    """All of a clip's MFCC windows in order, ``chunk_frames`` video frames at a time.

    Args:
        audio (`np.ndarray`): 1-D mono clip at 16 kHz.
        chunk_frames (`int`): frames per chunk (the last chunk may be shorter).

    Yields:
        `tuple[int, np.ndarray]`: the chunk's first frame and its float32 ``(n, 28, 12)`` windows.
    """
    x = _check_audio(audio)
    chunk_frames = int(chunk_frames)
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    total = num_frames(x.shape[0])
    for start in range(0, total, chunk_frames):
        yield start, mfcc_windows(x, start, min(start + chunk_frames, total))


class MfccStream:
    """A clip's MFCC windows as its samples arrive, equal to ``mfcc_windows`` of the whole clip.

    ``push`` the samples in pieces of any length; ``ready()`` is how many frames can be
    computed from what has arrived (all of them once ``end()`` says the clip is over);
    ``windows(stop)`` returns the windows from the first not yet taken up to ``stop``.
    Only the samples that frames not yet taken read are held: a long clip needs no more
    memory than a short one.

    Example:
        ```py
        stream = MfccStream()
        for piece in pieces:
            stream.push(piece)
            windows = stream.windows(stream.ready())   # (n, 28, 12), n may be 0
        stream.end()
        last = stream.windows(stream.ready())
        ```
    """

    def __init__(self):
        self.samples_in = 0         # clip samples pushed so far
        self.frames_taken = 0       # windows returned so far
        self.ended = False
        self._held = np.zeros(0, dtype=np.float64)     # clip samples [_offset, samples_in)
        self._offset = 0

    def push(self, samples: np.ndarray) -> None:
        """Append 16-kHz mono ``samples`` (any length) to the clip."""
        if self.ended:
            raise ValueError("the clip has ended: no more samples can be pushed")
        x = _check_audio(samples)
        self._held = np.concatenate([self._held, x.astype(np.float64)])
        self.samples_in += x.shape[0]

    def end(self) -> None:
        """The clip is complete: its last frames (which read the closing silence) become ready."""
        self.ended = True

    def ready(self) -> int:
        """How many frames the samples so far determine (all frames once ended)."""
        if self.ended:
            return num_frames(self.samples_in)
        if self.samples_in < LOOKAHEAD:
            return 0
        # Frame k needs clip samples [.., 640 k + LOOKAHEAD); such a frame exists in any
        # clip at least that long (num_frames(640 k + 2800) = k + 4).
        return (self.samples_in - LOOKAHEAD) // SAMPLES_PER_FRAME + 1

    def windows(self, stop: int) -> np.ndarray:
        """Float32 windows of frames ``[frames_taken, stop)``, ``stop <= ready()``; then drops the
        samples no later frame reads."""
        stop = int(stop)
        if not self.frames_taken <= stop <= self.ready():
            raise ValueError(f"frames up to {stop} are not ready (taken {self.frames_taken}, "
                             f"ready {self.ready()})")
        out = _windows(self._held, self._offset, self.samples_in, self.frames_taken, stop)
        self.frames_taken = stop
        # Frame k's first read is clip sample 640 k - PAD - 1 (pre-emphasis reads one before).
        keep_from = min(max(0, SAMPLES_PER_FRAME * stop - PAD - 1), self.samples_in)
        if keep_from > self._offset:
            self._held = self._held[keep_from - self._offset:].copy()
            self._offset = keep_from
        return out
