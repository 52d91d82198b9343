"""DAVS audio front end: SyncNet's MFCC and the 20 x 12 block of each video frame.

Zhou, Liu, Liu, Luo, Wang, "Talking Face Generation by Adversarially Disentangled
Audio-Visual Representation", AAAI 2019, https://arxiv.org/abs/1807.07860. Official code:
https://github.com/Hangz-nju-cuhk/Talking-Face-Generation-DAVS. The authors computed their
features with the Matlab MFCC code SyncNet ships (``preprocess/mfcc.m``, ``trifbank.m``,
``vec2frames.m``, driven by ``runmfcc.m`` and ``savemfcc.m``); ``syncnet_mfcc`` is a
numpy port of that computation, written from its formulas and checked against GNU Octave
running the original files (``tests/data/make_davs_mfcc_reference.py``):

1. a signal whose samples all lie in [-1, 1] is scaled by 2^15 (to 16-bit range);
2. pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]``, ``y[0] = x[0]``;
3. ``floor((N - 400) / 160) + 1`` frames of 400 samples (25 ms) every 160 samples
   (10 ms), the incomplete tail dropped; symmetric Hamming window
   ``0.54 - 0.46 cos(2 pi n / 399)``;
4. magnitude spectrum ``|FFT_512|``, bins 0..256;
5. 13 triangular filters evenly spaced on the mel scale ``1127 ln(1 + f / 700)``
   between 300 and 3700 Hz, evaluated at the bin frequencies ``linspace(0, 8000, 257)``
   (HTK-like, Huang et al. 2001 Eq. 6.141), unnormalised (peak 1);
6. ``log`` of the filterbank energies, DCT ``C[n] = sqrt(2/13) sum_m log E_m
   cos(pi n (m - 1/2) / 13)`` for n = 0..12 (no special scale for c0);
7. sinusoidal lifter ``1 + 11 sin(pi n / 22)``.

The networks read, for video frame ``l`` (25 fps, 4 MFCC frames per video frame), the 20
MFCC frames ``4l - 8 .. 4l + 11`` (0-based), i.e. the audio of video frames
``l - 2 .. l + 2``, without c0. ``savemfcc.m`` writes this 12 x 20 slice with ``fwrite``
(column-major float64) to ``<l>.bin`` for ``l = 2 .. floor(N / fs * 25) - 4``, and the test
loaders (``Dataloader/Test_load_audio.py``, ``Data_load_sequence.py``) read it back with
``np.fromfile(...).reshape(20, 12)``: rows are time, columns are c1..c12. ``frame_blocks``
returns exactly those arrays, stacked as the loaders stack them, ``(n, 1, 20, 12)``; the
MFCC encoder views its input as ``(-1, 1, 20, 12)``.

Deviations, all opt-out:

- Audio at another rate is resampled to 16 kHz (``models.perception.audio.resample``);
  the authors extracted 16-kHz wav files with ffmpeg, whose resampler differs slightly.
- ``mel_floor``: filterbank energies are raised to at least 1.0 before the log, the HTK
  mel floor that ``mfcc.m`` carries as a commented-out line. In 16-bit scale a filter
  energy below 1 takes (near) digital silence, where ``mfcc.m`` returns ``-inf`` and the
  networks would produce NaN; ``mel_floor=None`` restores the original behaviour.
- ``frame_blocks(..., pad=True)`` gives a block to every video frame, repeating the first
  or last MFCC frame where the 0.2 s window leaves the clip; the authors skip the first
  two frames and the last three or four.
"""

from __future__ import annotations

import functools

import numpy as np

from models.errors import InvalidInput
from models.perception.audio import resample

__all__ = [
    "BLOCK_FRAMES",
    "BLOCK_CEPSTRA",
    "FPS",
    "LOOKAHEAD",
    "MFCC_PER_VIDEO_FRAME",
    "MfccBlockStream",
    "SAMPLE_RATE",
    "frame_blocks",
    "syncnet_mfcc",
    "valid_frames",
    "video_frame_count",
]

SAMPLE_RATE = 16000  # Hz, save_mfccs.m opt.fs
FPS = 25  # video frames per second (LRW, VoxCeleb)
WINDOW_LENGTH = 400  # samples, Tw = 25 ms
HOP_LENGTH = 160  # samples, Ts = 10 ms
N_FFT = 512  # 2 ^ nextpow2(400)
PREEMPHASIS = 0.97  # opt.alpha
FREQ_RANGE = (300.0, 3700.0)  # Hz, opt.R
N_FILTERS = 13  # opt.M
N_CEPSTRA = 13  # opt.C, c0 included
LIFTER = 22  # opt.L
INT16_SCALE = 2.0**15  # mfcc.m: "Explode samples to the range of 16 bit shorts"
MEL_FLOOR = 1.0  # HTK's mel floor, commented out in mfcc.m

MFCC_PER_VIDEO_FRAME = 4  # 100 MFCC frames/s over 25 video frames/s
BLOCK_FRAMES = 20  # MFCC frames per block (0.2 s = 5 video frames), opt.mfcc_length
BLOCK_CEPSTRA = 12  # c1..c12, opt.mfcc_width
BLOCK_OFFSET = -8  # video frame l's block starts at MFCC frame 4l - 8 (savemfcc.m: 4l - 7, 1-based)
FIRST_FRAME = 2  # the first video frame with a whole block (4 * 2 - 8 = 0)
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640: video frame l starts at sample 640 l
# Video frame l's block ends with MFCC frame 4l + 11, which reads samples up to
# 160 (4l + 11) + 400 = 640 l + 2160: a stream makes frame l once those samples are in.
LOOKAHEAD = HOP_LENGTH * (BLOCK_OFFSET + BLOCK_FRAMES - 1) + WINDOW_LENGTH  # 2160 samples, 135 ms

_CHUNK_FRAMES = 4096  # MFCC frames transformed at a time: bounds the FFT's memory


# ---------------------------------------------------------------------------------------
# Fixed matrices of mfcc.m
# ---------------------------------------------------------------------------------------


def _hz_to_mel(hz):
    """``1127 ln(1 + f / 700)``: natural-log mel scale of HTK and mfcc.m."""
    return 1127.0 * np.log(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel):
    """``700 exp(m / 1127) - 700``, the inverse of ``_hz_to_mel``."""
    return 700.0 * np.exp(np.asarray(mel, dtype=np.float64) / 1127.0) - 700.0


@functools.lru_cache(maxsize=1)
def _filterbank() -> np.ndarray:
    """The ``(13, 257)`` triangular filters of trifbank.m, Eq. 6.141 of Huang et al. 2001.

    Filter ``m`` rises from 0 at ``c[m]`` to 1 at ``c[m+1]`` and falls to 0 at ``c[m+2]``,
    the ``c`` evenly spaced in mel from 300 to 3700 Hz, evaluated at the bin frequencies.
    """
    freqs = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)[None, :]  # (1, 257)
    low, high = _hz_to_mel(FREQ_RANGE[0]), _hz_to_mel(FREQ_RANGE[1])
    cutoffs = _mel_to_hz(low + np.arange(N_FILTERS + 2) * ((high - low) / (N_FILTERS + 1)))
    left, centre, right = cutoffs[:-2, None], cutoffs[1:-1, None], cutoffs[2:, None]  # (13, 1)
    rising = (freqs - left) / (centre - left)
    falling = (right - freqs) / (right - centre)
    bank = np.zeros((N_FILTERS, freqs.shape[1]))
    up = (freqs >= left) & (freqs <= centre)
    down = (freqs >= centre) & (freqs <= right)
    bank[up] = np.broadcast_to(rising, bank.shape)[up]
    bank[down] = np.broadcast_to(falling, bank.shape)[down]  # the down-slope is written last
    bank.setflags(write=False)
    return bank


@functools.lru_cache(maxsize=1)
def _cepstral_matrix() -> np.ndarray:
    """``(13, 13)`` lifter x DCT, ``(1 + 11 sin(pi n / 22)) sqrt(2/13) cos(pi n (m - 1/2) / 13)``.

    Row ``n`` = 0..12 is the cepstrum, column ``m`` = 1..13 the filter.
    """
    n = np.arange(N_CEPSTRA, dtype=np.float64)[:, None]
    m = np.arange(1, N_FILTERS + 1, dtype=np.float64)[None, :]
    dct = np.sqrt(2.0 / N_FILTERS) * np.cos(n * (np.pi * (m - 0.5) / N_FILTERS))
    lifter = 1.0 + 0.5 * LIFTER * np.sin(np.pi * n / LIFTER)
    matrix = lifter * dct
    matrix.setflags(write=False)
    return matrix


@functools.lru_cache(maxsize=1)
def _hamming() -> np.ndarray:
    """Symmetric Hamming window ``0.54 - 0.46 cos(2 pi n / (N - 1))`` (runmfcc.m)."""
    n = np.arange(WINDOW_LENGTH, dtype=np.float64)
    window = 0.54 - 0.46 * np.cos(2 * np.pi * n / (WINDOW_LENGTH - 1))
    window.setflags(write=False)
    return window


# ---------------------------------------------------------------------------------------
# MFCC
# ---------------------------------------------------------------------------------------


def syncnet_mfcc(
    audio: np.ndarray, sample_rate: int = SAMPLE_RATE, *, mel_floor: float | None = MEL_FLOOR
) -> np.ndarray:
    """SyncNet's MFCC (``mfcc.m`` with DAVS's ``save_mfccs.m`` options), c0 included.

    The steps are listed in the module docstring. The signal is processed
    ``_CHUNK_FRAMES`` MFCC frames at a time, so memory stays at a few MiB besides the
    output (13 float64 a 10 ms) whatever the clip length.

    Args:
        audio (`np.ndarray`): 1-D mono signal, float in [-1, 1] or 16-bit-scale values
            (int16 or float); a signal entirely within [-1, 1] is scaled by 2^15 as
            ``mfcc.m`` does, which shifts c0 only.
        sample_rate (`int`, defaults to 16000): its rate; other rates are resampled to
            16 kHz first.
        mel_floor (`float` or `None`, defaults to 1.0): lower bound of the filterbank
            energies before the log; `None` keeps ``mfcc.m``'s ``log(0) = -inf``.

    Returns:
        `np.ndarray`: float64 ``(13, n_frames)``, ``n_frames = floor((N - 400) / 160) + 1``
        for ``N`` samples at 16 kHz; column ``j`` covers samples ``[160 j, 160 j + 400)``.

    Raises:
        InvalidInput: the audio is not a 1-D real signal, is not finite, or is shorter than
            one 25 ms frame.
    """
    x = np.asarray(audio)
    if x.ndim != 1 or not np.isrealobj(x) or x.dtype == np.bool_:
        raise InvalidInput(f"the audio must be a 1-D real signal, got shape {x.shape} {x.dtype}")
    if int(sample_rate) != SAMPLE_RATE:
        x = resample(x, int(sample_rate), SAMPLE_RATE)
    x = x.astype(np.float64)
    if x.shape[0] < WINDOW_LENGTH:
        raise InvalidInput(
            f"the audio is too short: {x.shape[0]} samples at 16 kHz, at least "
            f"{WINDOW_LENGTH} (25 ms) are needed"
        )
    if not np.all(np.isfinite(x)):
        raise InvalidInput("the audio contains NaN or infinite samples")

    # 1. 16-bit range (mfcc.m decides on the whole signal), 2. pre-emphasis.
    if np.max(np.abs(x)) <= 1:
        x *= INT16_SCALE
    emphasized = np.empty_like(x)
    emphasized[0] = x[0]
    emphasized[1:] = x[1:] - PREEMPHASIS * x[:-1]

    # 3.-7. Frames, |FFT|, filterbank, log, lifter x DCT; chunked over frames.
    return _cepstra(emphasized, mel_floor)


def _cepstra(emphasized: np.ndarray, mel_floor: float | None) -> np.ndarray:
    """Steps 3-7 over a pre-emphasised signal: ``(13, floor((N - 400) / 160) + 1)`` float64.

    Each column is computed by itself, whatever the other columns: the sums run in
    ``einsum``'s own loops, not in a BLAS product whose rounding depends on how many rows
    it is given. So ``MfccBlockStream``, which computes a few columns at a time as the
    samples arrive, gets exactly the columns of the whole signal.
    """
    n_frames = (emphasized.shape[0] - WINDOW_LENGTH) // HOP_LENGTH + 1
    frames = np.lib.stride_tricks.sliding_window_view(emphasized, WINDOW_LENGTH)[::HOP_LENGTH]
    window, bank, cepstral = _hamming(), _filterbank(), _cepstral_matrix()
    out = np.empty((N_CEPSTRA, max(0, n_frames)))
    for start in range(0, n_frames, _CHUNK_FRAMES):
        chunk = frames[start : start + _CHUNK_FRAMES] * window  # (T, 400)
        magnitude = np.abs(np.fft.rfft(chunk, N_FFT, axis=1))  # (T, 257)
        energies = np.einsum("tk,mk->tm", magnitude, bank)  # (T, 13)
        if mel_floor is not None:
            energies = np.maximum(energies, mel_floor)
        with np.errstate(divide="ignore", invalid="ignore"):  # log(0) = -inf only without mel_floor
            out[:, start : start + chunk.shape[0]] = np.einsum("nm,tm->nt", cepstral, np.log(energies))
    return out


# ---------------------------------------------------------------------------------------
# Per-video-frame blocks
# ---------------------------------------------------------------------------------------


def video_frame_count(n_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Video frames at 25 fps in ``n_samples`` of audio: ``floor(N / fs * 25)`` (savemfcc.m)."""
    return int(n_samples) * FPS // int(sample_rate)


def valid_frames(n_mfcc_frames: int) -> range:
    """The video frames whose 20-frame MFCC block lies wholly inside the clip.

    Frame ``l`` needs MFCC frames ``4l - 8 .. 4l + 11``, so ``l`` runs from 2 to
    ``floor((n_mfcc_frames - 12) / 4)``. ``savemfcc.m`` writes ``2 .. floor(N / fs * 25) - 4``,
    the same frames or one fewer at the end.

    Args:
        n_mfcc_frames (`int`): columns of ``syncnet_mfcc``'s output.

    Returns:
        `range`: the frame indices (empty for clips under about 0.23 s).
    """
    stop = (int(n_mfcc_frames) - BLOCK_FRAMES - BLOCK_OFFSET) // MFCC_PER_VIDEO_FRAME + 1
    return range(FIRST_FRAME, max(FIRST_FRAME, stop))


def frame_blocks(
    mfcc: np.ndarray, start: int | None = None, stop: int | None = None, *, pad: bool = False
) -> np.ndarray:
    """The MFCC encoder's input for video frames ``start .. stop - 1``.

    Block ``l`` is ``mfcc[1:13, 4l - 8 : 4l + 12].T``: 20 MFCC frames by c1..c12, spanning
    the audio of video frames ``l - 2 .. l + 2`` (its centre lies 7.5 ms after that of
    frame ``l``), the array the authors' loaders get
    from ``<l>.bin``. Vectorised; ask for a range to work through a long clip in chunks.

    Args:
        mfcc (`np.ndarray`): ``(13, n_mfcc_frames)`` from ``syncnet_mfcc``.
        start (`int`, optional): first video frame; defaults to 2 (0 with ``pad``).
        stop (`int`, optional): one past the last frame; defaults to the end of
            ``valid_frames``. Required with ``pad``: use ``video_frame_count``.
        pad (`bool`, defaults to False): allow frames whose block leaves the clip, repeating
            the first or last MFCC frame; without it such frames raise ``ValueError``.

    Returns:
        `np.ndarray`: float32 ``(stop - start, 1, 20, 12)``; ``[k, 0, t, c]`` is cepstrum
        ``c + 1`` of MFCC frame ``4 (start + k) - 8 + t``.

    Raises:
        ValueError: ``mfcc`` is not ``(13, n)``, the range is reversed or negative, or
            (without ``pad``) reaches frames outside ``valid_frames``.
    """
    mfcc = np.asarray(mfcc)
    if mfcc.ndim != 2 or mfcc.shape[0] != N_CEPSTRA or mfcc.shape[1] == 0:
        raise ValueError(f"mfcc must be ({N_CEPSTRA}, n_frames), n_frames > 0, got {mfcc.shape}")
    valid = valid_frames(mfcc.shape[1])
    if pad and stop is None:
        raise ValueError("frame_blocks(pad=True) needs stop, e.g. video_frame_count(len(audio))")
    start = (0 if pad else valid.start) if start is None else int(start)
    stop = valid.stop if stop is None else int(stop)
    if start < 0 or stop < start:
        raise ValueError(f"invalid frame range [{start}, {stop})")
    if not pad and start < stop and (start < valid.start or stop > valid.stop):
        raise ValueError(
            f"frames [{start}, {stop}) leave the clip: whole blocks exist for frames "
            f"[{valid.start}, {valid.stop}); pass pad=True to repeat the edge MFCC frames"
        )
    frames = np.arange(start, stop)[:, None]  # (n, 1)
    columns = MFCC_PER_VIDEO_FRAME * frames + BLOCK_OFFSET + np.arange(BLOCK_FRAMES)  # (n, 20)
    if pad:
        columns = np.clip(columns, 0, mfcc.shape[1] - 1)
    blocks = mfcc[1 : 1 + BLOCK_CEPSTRA][:, columns]  # (12, n, 20)
    return np.ascontiguousarray(blocks.transpose(1, 2, 0)[:, None], dtype=np.float32)


# ---------------------------------------------------------------------------------------
# Blocks as the samples arrive
# ---------------------------------------------------------------------------------------


class MfccBlockStream:
    """The blocks of ``frame_blocks(syncnet_mfcc(clip), 0, video_frame_count(N), pad=True)``
    computed as the clip's 16-kHz samples arrive, bit for bit.

    ``push`` samples in pieces of any length; ``ready()`` is how many video frames' blocks
    the samples so far determine: frame ``l`` once MFCC frame ``4l + 11`` exists, i.e.
    samples ``[0, 640 l + LOOKAHEAD)`` are in; after ``end()``, every frame of the clip
    (``video_frame_count(N)``), the last MFCC frame repeated where a block leaves the clip.
    ``blocks(stop)`` returns the blocks from the first not yet taken up to ``stop``. Only the
    samples of MFCC frames not yet computed and the MFCC frames that later blocks read are
    held: memory does not grow with the clip.

    ``syncnet_mfcc`` scales a signal by 2^15 when all of it lies in [-1, 1], a decision on
    the whole clip that a stream cannot make. Here it is fixed at the start: with
    ``full_scale`` (the default) the samples are a voice in [-1, 1], as decoded audio is,
    samples beyond it are clipped to it, and all are scaled by 2^15; without it they are
    taken as they are (16-bit range). The blocks equal the whole clip's whenever the
    choice is the one ``syncnet_mfcc`` makes for that clip (any clip within [-1, 1] with
    ``full_scale``).

    Example:
        ```py
        stream = MfccBlockStream()
        for piece in pieces:                       # float at 16 kHz, in [-1, 1]
            stream.push(piece)
            blocks = stream.blocks(stream.ready())   # (n, 1, 20, 12), n may be 0
        stream.end()
        last = stream.blocks(stream.ready())
        ```
    """

    def __init__(self, full_scale: bool = True, *, mel_floor: float | None = MEL_FLOOR):
        self.full_scale = bool(full_scale)
        self.mel_floor = mel_floor
        self.samples_in = 0  # samples pushed so far
        self.frames_taken = 0  # video frames whose blocks were returned
        self.ended = False
        self._previous = None  # the last (scaled) sample, for the pre-emphasis of the next
        self._emphasized = np.zeros(0)  # pre-emphasised samples from 160 * (MFCC frames computed)
        self._columns = np.zeros((N_CEPSTRA, 0))  # MFCC frames [_first_column, columns_made)
        self._first_column = 0

    @property
    def columns_made(self) -> int:
        """MFCC frames computed so far (of the whole clip's)."""
        return self._first_column + self._columns.shape[1]

    def push(self, samples: np.ndarray) -> None:
        """Append 16-kHz mono ``samples`` (any length); computes the MFCC frames they complete."""
        if self.ended:
            raise ValueError("the clip has ended: no more samples can be pushed")
        x = np.asarray(samples)
        if x.ndim != 1 or not np.isrealobj(x) or x.dtype == np.bool_:
            raise InvalidInput(f"the audio must be a 1-D real signal, got shape {x.shape} {x.dtype}")
        x = x.astype(np.float64)
        if not np.all(np.isfinite(x)):
            raise InvalidInput("the audio contains NaN or infinite samples")
        if x.shape[0] == 0:
            return
        if self.full_scale:
            x = np.clip(x, -1.0, 1.0) * INT16_SCALE
        self.samples_in += x.shape[0]
        self._append_emphasized(x)
        self._compute_columns()

    def end(self) -> None:
        """The clip is complete: its last frames (whose blocks repeat its last MFCC frame) become ready."""
        self.ended = True

    def ready(self) -> int:
        """How many video frames' blocks the samples so far determine (all of the clip's once ended)."""
        if self.ended:
            return video_frame_count(self.samples_in)
        # Frame l reads MFCC frames up to 4l + 11; any clip that long has frame l.
        last_whole = BLOCK_FRAMES + BLOCK_OFFSET  # 12 MFCC frames complete frame 0's block
        return max(0, (self.columns_made - last_whole) // MFCC_PER_VIDEO_FRAME + 1)

    def blocks(self, stop: int) -> np.ndarray:
        """Float32 ``(n, 1, 20, 12)`` blocks of video frames ``[frames_taken, stop)``, ``stop <= ready()``;
        then drops the MFCC frames no later block reads."""
        stop = int(stop)
        if not self.frames_taken <= stop <= self.ready():
            raise ValueError(f"frames up to {stop} are not ready (taken {self.frames_taken}, "
                             f"ready {self.ready()})")
        frames = np.arange(self.frames_taken, stop)[:, None]  # (n, 1)
        columns = MFCC_PER_VIDEO_FRAME * frames + BLOCK_OFFSET + np.arange(BLOCK_FRAMES)  # (n, 20)
        columns = np.clip(columns, 0, self.columns_made - 1) - self._first_column
        blocks = self._columns[1 : 1 + BLOCK_CEPSTRA][:, columns]  # (12, n, 20)
        self.frames_taken = stop
        self._drop_columns()
        return np.ascontiguousarray(blocks.transpose(1, 2, 0)[:, None], dtype=np.float32)

    def _append_emphasized(self, x: np.ndarray) -> None:
        """Pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]`` (``y[0] = x[0]``), carried across pieces."""
        emphasized = np.empty_like(x)
        emphasized[1:] = x[1:] - PREEMPHASIS * x[:-1]
        emphasized[0] = x[0] if self._previous is None else x[0] - PREEMPHASIS * self._previous
        self._previous = x[-1]
        self._emphasized = np.concatenate([self._emphasized, emphasized])

    def _compute_columns(self) -> None:
        """The MFCC frames whose 400 samples are all in; keeps the samples of the next ones."""
        if self._emphasized.shape[0] < WINDOW_LENGTH:
            return
        new = _cepstra(self._emphasized, self.mel_floor)
        self._columns = np.concatenate([self._columns, new], axis=1)
        self._emphasized = self._emphasized[HOP_LENGTH * new.shape[1] :].copy()

    def _drop_columns(self) -> None:
        """Forget the MFCC frames before the first one frame ``frames_taken`` reads (clipped)."""
        if self.columns_made == 0:
            return
        first_needed = MFCC_PER_VIDEO_FRAME * self.frames_taken + BLOCK_OFFSET
        keep_from = min(max(0, first_needed), self.columns_made - 1)
        if keep_from > self._first_column:
            self._columns = self._columns[:, keep_from - self._first_column :].copy()
            self._first_column = keep_from
