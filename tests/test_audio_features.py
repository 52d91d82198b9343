"""MFCC port and ATVGnet MFCC windows against python_speech_features and demo.py's procedure."""

from __future__ import annotations

import numpy as np
import pytest
import python_speech_features as psf

from models.atvgnet import features
from models.perception import audio

SR = 16000


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def demo_windows(speech: np.ndarray) -> np.ndarray:
    """ATVGnet demo.py's audio preparation, with python_speech_features as the reference."""
    speech = np.concatenate([np.zeros(1920), speech, np.zeros(1920)])
    mfcc = psf.mfcc(speech, 16000, winstep=0.01)
    windows = []
    ind = 3
    while ind <= int(mfcc.shape[0] / 4) - 4:
        windows.append(mfcc[(ind - 3) * 4 : (ind + 4) * 4, 1:])
        ind += 1
    if not windows:
        return np.zeros((0, 28, 12))
    return np.stack(windows)


def speech_like(n: int, seed: int = 0) -> np.ndarray:
    """Float32 noise shaped by a slow envelope, with a silent gap (exact zeros)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = rng.standard_normal(n) * (0.3 + 0.25 * np.sin(2 * np.pi * 3 * t))
    x[n // 3 : n // 3 + 3000] = 0.0
    return (0.2 * x).astype(np.float32)


# ---------------------------------------------------------------------------
# mfcc port
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [399, 400, 401, SR * 3 + 77])
def test_mfcc_matches_reference_on_noise(n):
    x = np.random.default_rng(n).standard_normal(n)
    assert_close(audio.mfcc(x, SR), psf.mfcc(x, SR))


def test_mfcc_matches_reference_on_chirp():
    t = np.arange(2 * SR) / SR
    x = np.sin(2 * np.pi * (100 * t + 1900 * t**2)).astype(np.float32)  # 100 Hz -> 7.7 kHz
    assert_close(audio.mfcc(x, SR), psf.mfcc(x, SR))


def test_mfcc_matches_reference_with_exact_zeros():
    x = np.random.default_rng(1).standard_normal(SR)
    x[2000:6000] = 0.0  # whole frames of zeros: energies take the eps path
    x[-1000:] = 0.0
    ours = audio.mfcc(x, SR)
    ref = psf.mfcc(x, SR)
    assert np.any(ref[:, 0] == np.log(np.finfo(float).eps))
    assert_close(ours, ref)


def test_mfcc_matches_reference_on_silence():
    x = np.zeros(1000)
    assert_close(audio.mfcc(x, SR), psf.mfcc(x, SR))


def test_mfcc_matches_reference_with_other_parameters():
    x = np.random.default_rng(2).standard_normal(SR + 333)
    ours = audio.mfcc(x, SR, winstep=0.0125, numcep=20, nfilt=40, ceplifter=0)
    ref = psf.mfcc(x, SR, winstep=0.0125, numcep=20, nfilt=40, ceplifter=0)
    assert ours.shape[1] == 20
    assert_close(ours, ref)


def test_mfcc_matches_reference_without_energy_on_int16():
    x = (np.random.default_rng(3).standard_normal(5000) * 3000).astype(np.int16)
    ours = audio.mfcc(x, 8000, winlen=0.032, numcep=12, preemph=0.95, append_energy=False)
    ref = psf.mfcc(x, 8000, winlen=0.032, numcep=12, preemph=0.95, appendEnergy=False)
    assert_close(ours, ref)


def test_mfcc_rejects_empty_signal():
    with pytest.raises(ValueError):
        audio.mfcc(np.zeros(0), SR)


# ---------------------------------------------------------------------------
# ATVGnet windows
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n",
    [0, 1, 100, 399, 400, 1919, 2000, 2240, 2400, 2560, 4000, 16000, 16001, 16160,
     16000 * 10 + 123, 16000 * 10 + 160 * 4],
)  # fmt: skip
def test_num_frames_matches_demo_loop(n):
    x = np.random.default_rng(n).standard_normal(n)
    assert features.num_frames(n) == demo_windows(x).shape[0]


def test_num_frames_matches_demo_loop_at_every_step_boundary():
    # The count only changes with the number of MFCC rows, i.e. every 160 samples.
    for n in range(0, 12000, 53):
        rows = psf.mfcc(np.zeros(n + 3840), 16000, winstep=0.01).shape[0]
        assert features.num_frames(n) == max(0, len(range(3, int(rows / 4) - 4 + 1)))


def test_ten_second_clip_gives_about_250_frames():
    n = features.num_frames(10 * SR)
    assert abs(n - 10 * features.FPS) <= 1


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return speech_like(SR * 3 + 1234)


@pytest.fixture(scope="module")
def demo_result(clip) -> np.ndarray:
    return demo_windows(clip)


def test_mfcc_windows_shape_and_dtype(clip, demo_result):
    total = features.num_frames(clip.shape[0])
    windows = features.mfcc_windows(clip, 0, total)
    assert windows.shape == (total, features.WINDOW, 12)
    assert windows.dtype == np.float32
    assert_close(windows, demo_result)


@pytest.mark.parametrize("which", ["start", "middle", "end", "one", "single_last"])
def test_mfcc_windows_ranges_match_demo(clip, demo_result, which):
    total = demo_result.shape[0]
    start, stop = {
        "start": (0, 7),
        "middle": (31, 44),
        "end": (total - 9, total),
        "one": (17, 18),
        "single_last": (total - 1, total),
    }[which]
    assert_close(features.mfcc_windows(clip, start, stop), demo_result[start:stop])


def test_mfcc_windows_reads_only_the_samples_it_needs(clip, demo_result):
    # Samples far from the asked-for frames must not change them.
    start, stop = 40, 45
    corrupted = clip.copy()
    corrupted[:4000] = 1.0
    corrupted[-4000:] = -1.0
    assert_close(features.mfcc_windows(corrupted, start, stop), demo_result[start:stop])


def test_mfcc_windows_on_short_clip_matches_demo():
    x = speech_like(SR // 2 + 7, seed=5)
    ref = demo_windows(x)
    assert ref.shape[0] > 0
    assert_close(features.mfcc_windows(x, 0, ref.shape[0]), ref)
    assert_close(features.mfcc_windows(x, ref.shape[0] - 2, ref.shape[0]), ref[-2:])


@pytest.mark.parametrize("start, stop", [(-1, 3), (3, 2), (0, 10_000)])
def test_mfcc_windows_rejects_out_of_range(clip, start, stop):
    with pytest.raises(ValueError):
        features.mfcc_windows(clip, start, stop)


def test_mfcc_windows_empty_range(clip):
    assert features.mfcc_windows(clip, 5, 5).shape == (0, 28, 12)


def test_iter_mfcc_windows_concatenates_to_demo(clip, demo_result):
    chunks = list(features.iter_mfcc_windows(clip, 13))
    starts = [s for s, _ in chunks]
    assert starts == list(range(0, demo_result.shape[0], 13))
    assert all(w.shape[0] <= 13 for _, w in chunks)
    assert_close(np.concatenate([w for _, w in chunks]), demo_result)


def test_iter_mfcc_windows_yields_nothing_for_a_too_short_clip():
    assert list(features.iter_mfcc_windows(np.zeros(10, dtype=np.float32), 8)) == []


def test_iter_mfcc_windows_rejects_bad_chunk(clip):
    with pytest.raises(ValueError):
        next(features.iter_mfcc_windows(clip, 0))


# ---------------------------------------------------------------------------
# resample
# ---------------------------------------------------------------------------


def test_resample_keeps_frequency_and_duration():
    sr_in, sr_out, seconds = 44100, 16000, 2.0
    t = np.arange(int(sr_in * seconds)) / sr_in
    x = np.sin(2 * np.pi * 1000.0 * t).astype(np.float32)
    y = audio.resample(x, sr_in, sr_out)
    assert y.dtype == np.float32
    assert abs(y.shape[0] - x.shape[0] * sr_out / sr_in) <= 1
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.shape[0])))
    peak_hz = np.argmax(spectrum) * sr_out / y.shape[0]
    assert abs(peak_hz - 1000.0) <= sr_out / y.shape[0]
    # Amplitude survives away from the filter's edge effects.
    assert np.max(np.abs(y[1000:-1000])) == pytest.approx(1.0, abs=0.02)


def test_resample_identity_when_rates_match():
    x = np.linspace(-1, 1, 100)
    y = audio.resample(x, 16000, 16000)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x.astype(np.float32))
