"""Audio features shared by the talking-face systems.

``mfcc`` reproduces ``python_speech_features.mfcc`` (version 0.6, the library the ATVGnet
authors call in ``code/demo.py``) with its defaults, written from the formulas rather than
the library's code and vectorised over frames:

1. pre-emphasis ``y[n] = x[n] - a * x[n-1]`` (``y[0] = x[0]``);
2. framing into ``round_half_up(winlen * sr)``-sample frames every
   ``round_half_up(winstep * sr)`` samples, ``1 + ceil((N - L) / S)`` frames (one frame when
   ``N <= L``), zeros appended after the last sample; rectangular window;
3. power spectrum ``P = |rfft(frame, nfft)|^2 / nfft``;
4. triangular mel filterbank whose edges sit on the integer FFT bins
   ``floor((nfft + 1) * mel2hz(m_i) / sr)``, with ``mel(f) = 2595 log10(1 + f / 700)`` and
   ``m_i`` evenly spaced from ``mel(lowfreq)`` to ``mel(highfreq)``;
5. ``log`` of the filter energies (exact zeros replaced by the float64 machine epsilon);
6. orthonormal DCT-II, first ``numcep`` coefficients;
7. sinusoidal lifter ``1 + (L / 2) sin(pi n / L)``;
8. ``c0`` replaced by the log of the frame energy ``sum_k P_k`` (zeros replaced by eps).
"""

from __future__ import annotations

import decimal
import functools
import logging
import math

import numpy as np
from scipy.signal import resample_poly

logger = logging.getLogger(__name__)

__all__ = ["mfcc", "preemphasis", "resample"]

_EPS = np.finfo(np.float64).eps


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _round_half_up(value: float) -> int:
    """Rounds to the nearest integer, ties away from zero, on the float's exact value."""
    return int(decimal.Decimal(value).quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP))


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """``mel(f) = 2595 * log10(1 + f / 700)`` (O'Shaughnessy's mel scale)."""
    return 2595 * np.log10(1 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """``f(m) = 700 * (10 ** (m / 2595) - 1)``, the inverse of ``_hz_to_mel``."""
    return 700 * (10 ** (mel / 2595.0) - 1)


@functools.lru_cache(maxsize=32)
def _mel_filterbank(
    nfilt: int, nfft: int, sample_rate: float, lowfreq: float, highfreq: float
) -> np.ndarray:
    """Triangular mel filters on integer FFT bins, shape ``(nfilt, nfft // 2 + 1)``.

    Filter ``j`` rises linearly from bin ``b[j]`` (weight 0) to ``b[j+1]`` (weight 1) and
    falls to ``b[j+2]`` (weight 0, excluded), with
    ``b = floor((nfft + 1) * mel2hz(linspace(mel(lowfreq), mel(highfreq), nfilt + 2)) / sr)``.
    """
    mel_points = np.linspace(_hz_to_mel(lowfreq), _hz_to_mel(highfreq), nfilt + 2)
    edges = np.floor((nfft + 1) * _mel_to_hz(mel_points) / sample_rate)  # (nfilt + 2,)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (nfilt, 1)
    bins = np.arange(nfft // 2 + 1, dtype=np.float64)[None, :]  # (1, n_bins)
    rising = (bins >= left) & (bins < centre)
    falling = (bins >= centre) & (bins < right)
    with np.errstate(divide="ignore", invalid="ignore"):
        # A zero-width slope has no bins, so its nan/inf values are never selected.
        up = (bins - left) / (centre - left)
        down = (right - bins) / (right - centre)
    bank = np.where(rising, up, np.where(falling, down, 0.0))
    bank.setflags(write=False)
    return bank


@functools.lru_cache(maxsize=32)
def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II as a ``(n_in, n_out)`` matrix, so ``x @ D`` transforms rows.

    ``X_k = s_k * sum_n x_n cos(pi * k * (2n + 1) / (2N))`` with ``s_0 = sqrt(1 / N)`` and
    ``s_k = sqrt(2 / N)`` otherwise; only the first ``n_out`` coefficients are kept.
    """
    n = np.arange(n_in, dtype=np.float64)[:, None]
    k = np.arange(n_out, dtype=np.float64)[None, :]
    matrix = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    matrix[:, 0] = np.sqrt(1.0 / n_in)
    matrix.setflags(write=False)
    return matrix


@functools.lru_cache(maxsize=32)
def _lifter(n_coeffs: int, ceplifter: float) -> np.ndarray:
    """Sinusoidal cepstral lifter ``1 + (L / 2) * sin(pi * n / L)``; all ones when ``L <= 0``."""
    if ceplifter <= 0:
        lift = np.ones(n_coeffs)
    else:
        lift = 1 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(n_coeffs) / ceplifter)
    lift.setflags(write=False)
    return lift


def _frames(signal: np.ndarray, frame_len: int, frame_step: int) -> np.ndarray:
    """Overlapping frames ``(n_frames, frame_len)`` with zeros appended after the end.

    ``n_frames = 1 + ceil((N - frame_len) / frame_step)``, or 1 when ``N <= frame_len``.
    """
    length = signal.shape[0]
    if length <= frame_len:
        n_frames = 1
    else:
        n_frames = 1 + math.ceil((length - frame_len) / frame_step)
    padded_len = (n_frames - 1) * frame_step + frame_len
    if padded_len > length:
        signal = np.concatenate([signal, np.zeros(padded_len - length, dtype=signal.dtype)])
    # A strided view: no copy until the FFT reads it.
    return np.lib.stride_tricks.sliding_window_view(signal, frame_len)[::frame_step][:n_frames]


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def preemphasis(signal: np.ndarray, coeff: float = 0.97) -> np.ndarray:
    """First-order pre-emphasis ``y[n] = x[n] - coeff * x[n-1]``, with ``y[0] = x[0]``.

    Args:
        signal (`np.ndarray`): 1-D signal; float arrays keep their dtype, others become float64.
        coeff (`float`, defaults to 0.97): the filter coefficient; 0 returns the signal unchanged.

    Returns:
        `np.ndarray`: the filtered signal, same length.
    """
    x = np.asarray(signal)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if coeff == 0 or x.shape[0] == 0:
        return x
    out = np.empty_like(x)
    out[0] = x[0]
    out[1:] = x[1:] - coeff * x[:-1]
    return out


def mfcc(
    signal: np.ndarray,
    sample_rate: float = 16000,
    winlen: float = 0.025,
    winstep: float = 0.01,
    numcep: int = 13,
    nfilt: int = 26,
    nfft: int = 512,
    preemph: float = 0.97,
    ceplifter: float = 22,
    append_energy: bool = True,
) -> np.ndarray:
    """Mel-frequency cepstral coefficients, equal to ``python_speech_features.mfcc``.

    The steps and formulas are listed in the module docstring; the filterbank spans
    0 Hz to ``sample_rate / 2`` and the analysis window is rectangular, as in the
    library's defaults.

    Args:
        signal (`np.ndarray`): 1-D mono signal (any real dtype).
        sample_rate (`float`, defaults to 16000): samples per second.
        winlen (`float`, defaults to 0.025): frame length in seconds.
        winstep (`float`, defaults to 0.01): hop between frames in seconds.
        numcep (`int`, defaults to 13): cepstral coefficients kept (at most ``nfilt``).
        nfilt (`int`, defaults to 26): number of mel filters.
        nfft (`int`, defaults to 512): FFT size; longer frames are truncated to it.
        preemph (`float`, defaults to 0.97): pre-emphasis coefficient, 0 for none.
        ceplifter (`float`, defaults to 22): lifter parameter ``L``, ``<= 0`` for none.
        append_energy (`bool`, defaults to True): replace ``c0`` by the log frame energy.

    Returns:
        `np.ndarray`: float64 array ``(n_frames, min(numcep, nfilt))``.

    Raises:
        ValueError: for an empty or non-1-D signal or non-positive sizes.
    """
    x = np.asarray(signal)
    if x.ndim != 1:
        raise ValueError(f"signal must be 1-D, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("signal is empty")
    if not np.isrealobj(x):
        raise ValueError("signal must be real")
    if sample_rate <= 0 or winlen <= 0 or winstep <= 0 or numcep < 1 or nfilt < 1 or nfft < 1:
        raise ValueError("sample_rate, winlen, winstep, numcep, nfilt and nfft must be positive")
    frame_len = _round_half_up(winlen * sample_rate)
    frame_step = _round_half_up(winstep * sample_rate)
    if frame_len < 1 or frame_step < 1:
        raise ValueError("winlen and winstep must each cover at least one sample")
    if frame_len > nfft:
        logger.warning(
            "frame length %d exceeds the FFT size %d; frames are truncated", frame_len, nfft
        )

    # 1. Pre-emphasis (in the input's float dtype, as the reference does), then float64.
    emphasized = preemphasis(x, preemph).astype(np.float64, copy=False)

    # 2. Frames and power spectrum P = |rfft|^2 / nfft.
    frames = _frames(emphasized, frame_len, frame_step)  # (T, frame_len)
    power = np.square(np.abs(np.fft.rfft(frames, nfft, axis=1))) / nfft  # (T, nfft // 2 + 1)
    energy = power.sum(axis=1)  # (T,)
    energy = np.where(energy == 0, _EPS, energy)

    # 3. Mel filter energies, log, DCT-II (orthonormal), lifter.
    bank = _mel_filterbank(nfilt, nfft, float(sample_rate), 0.0, float(sample_rate) / 2)
    feat = power @ bank.T  # (T, nfilt)
    feat = np.where(feat == 0, _EPS, feat)
    n_coeffs = min(numcep, nfilt)
    cepstra = np.log(feat) @ _dct_matrix(nfilt, n_coeffs)  # (T, n_coeffs)
    cepstra *= _lifter(n_coeffs, float(ceplifter))

    # 4. c0 -> log frame energy.
    if append_energy:
        cepstra[:, 0] = np.log(energy)
    return cepstra


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling by the reduced ratio ``target_sr / gcd : orig_sr / gcd``.

    Uses ``scipy.signal.resample_poly`` (Kaiser-windowed FIR, zero-phase), so the output
    has ``ceil(len * up / down)`` samples.

    Args:
        audio (`np.ndarray`): 1-D mono signal.
        orig_sr (`int`): its sample rate.
        target_sr (`int`): the wanted sample rate.

    Returns:
        `np.ndarray`: float32 signal at ``target_sr`` (the input as float32 when the rates match).
    """
    orig_sr, target_sr = int(orig_sr), int(target_sr)
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} and {target_sr}")
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"audio must be 1-D, got shape {x.shape}")
    if orig_sr == target_sr:
        return x.astype(np.float32, copy=False)
    g = math.gcd(orig_sr, target_sr)
    out = resample_poly(x.astype(np.float64, copy=False), target_sr // g, orig_sr // g)
    return out.astype(np.float32)
