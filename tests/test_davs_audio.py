"""DAVS SyncNet-MFCC port against GNU Octave running the authors' mfcc.m, and block cutting.

The reference (tests/data/davs_mfcc_reference.npz, made by make_davs_mfcc_reference.py) holds
two clips, Octave's 13 x frames MFCC of each and the blocks savemfcc.m wrote, read back the
way the authors' loaders read them. Tolerance rule: |ours - octave| <= 1e-4 * max(1, |octave|),
absolute up to magnitude 1, relative above.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.davs import audio
from models.errors import InvalidInput
from models.perception.audio import resample

REFERENCE = Path(__file__).parent / "data" / "davs_mfcc_reference.npz"
SR = 16000


@pytest.fixture(scope="module")
def ref():
    with np.load(REFERENCE) as data:
        return {key: data[key] for key in data.files}


def assert_matches_octave(ours: np.ndarray, octave: np.ndarray) -> None:
    assert ours.shape == octave.shape
    bound = 1e-4 * np.maximum(1.0, np.abs(octave))
    assert np.all(np.abs(ours - octave) <= bound), np.max(np.abs(ours - octave) / bound)


# ---------------------------------------------------------------------------
# MFCC against Octave
# ---------------------------------------------------------------------------


def test_speech_mfcc_matches_octave(ref):
    speech = ref["speech"]
    assert ref["speech_fbe_min"].min() >= 1.0  # the mel floor never acts on this clip
    # As audioread gives it (scaled back by 2^15 inside), and in 16-bit scale as is.
    for signal in (speech / 32768.0, speech.astype(np.float32) / 32768, speech):
        assert_matches_octave(audio.syncnet_mfcc(signal, SR), ref["speech_mfcc"])
    assert ref["speech_mfcc"].shape == (13, (speech.shape[0] - 400) // 160 + 1)


def test_synthetic_mfcc_matches_octave_where_finite(ref):
    octave, fbe_min = ref["synthetic_mfcc"], ref["synthetic_fbe_min"]
    audible, silent = fbe_min >= 1.0, fbe_min == 0.0
    assert audible.sum() > 50 and silent.sum() > 5  # the clip has both kinds of frame
    ours = audio.syncnet_mfcc(ref["synthetic"], SR)
    assert_matches_octave(ours[:, audible], octave[:, audible])
    # Digital silence: Octave takes log(0); the default mel floor gives log(1) = 0 instead.
    assert not np.isfinite(octave[:, silent]).any()
    np.testing.assert_array_equal(ours[:, silent], 0.0)


def test_without_mel_floor_reproduces_octave_infinities(ref):
    octave = ref["synthetic_mfcc"]
    ours = audio.syncnet_mfcc(ref["synthetic"], SR, mel_floor=None)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(octave))
    np.testing.assert_array_equal(np.isposinf(ours), np.isposinf(octave))
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(octave))
    finite = np.isfinite(octave)
    assert_matches_octave(ours[finite], octave[finite])


def test_chunked_computation_equals_one_pass(ref, monkeypatch):
    whole = audio.syncnet_mfcc(ref["speech"], SR)
    monkeypatch.setattr(audio, "_CHUNK_FRAMES", 7)
    np.testing.assert_allclose(audio.syncnet_mfcc(ref["speech"], SR), whole, rtol=1e-12, atol=1e-12)


def test_other_rates_are_resampled_to_16k(ref):
    speech48 = resample(ref["speech"] / 32768.0, SR, 48000)
    ours = audio.syncnet_mfcc(speech48, 48000)
    np.testing.assert_array_equal(ours, audio.syncnet_mfcc(resample(speech48, 48000, SR), SR))
    # Band-limited speech survives the round trip: c1..c12 stay close to the 16-kHz ones.
    n = min(ours.shape[1], ref["speech_mfcc"].shape[1])
    assert np.median(np.abs(ours[1:, :n] - ref["speech_mfcc"][1:, :n])) < 0.1


@pytest.mark.parametrize("bad", [np.zeros(399), np.zeros((2, 1000)), np.array([np.nan] * 800)])
def test_bad_audio_is_refused(bad):
    with pytest.raises(InvalidInput):
        audio.syncnet_mfcc(bad, SR)


# ---------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------


def test_blocks_equal_savemfcc_files(ref):
    mfcc = audio.syncnet_mfcc(ref["speech"], SR)
    frames = audio.valid_frames(mfcc.shape[1])
    # savemfcc.m wrote <l>.bin for l = 2 .. floor(N / fs * 25) - 4.
    n_video = audio.video_frame_count(ref["speech"].shape[0], SR)
    np.testing.assert_array_equal(ref["speech_block_frames"], np.arange(2, n_video - 3))
    np.testing.assert_array_equal(ref["speech_block_frames"], np.asarray(frames))
    blocks = audio.frame_blocks(mfcc)
    assert blocks.shape == (len(frames), 1, 20, 12) and blocks.dtype == np.float32
    np.testing.assert_allclose(blocks[:, 0], ref["speech_blocks"], rtol=1e-6, atol=1e-5)
    # A sub-range is the same slice of the whole.
    np.testing.assert_array_equal(audio.frame_blocks(mfcc, 10, 17), blocks[8:15])


def test_block_layout_on_an_index_matrix():
    # mfcc[c, j] = 1000 c + j: every entry says where it came from.
    n = 98  # one second: (16000 - 400) // 160 + 1
    mfcc = 1000.0 * np.arange(13)[:, None] + np.arange(n)[None, :]
    assert audio.valid_frames(n) == range(2, 22)
    assert audio.video_frame_count(16000) == 25
    blocks = audio.frame_blocks(mfcc)
    assert blocks.shape == (20, 1, 20, 12)
    for k, frame in enumerate(range(2, 22)):
        for t in (0, 7, 19):
            for c in (0, 11):
                assert blocks[k, 0, t, c] == 1000 * (c + 1) + 4 * frame - 8 + t


def test_padded_blocks_repeat_the_edge_frames():
    n = 98
    mfcc = 1000.0 * np.arange(13)[:, None] + np.arange(n)[None, :]
    blocks = audio.frame_blocks(mfcc, 0, 25, pad=True)
    assert blocks.shape == (25, 1, 20, 12)
    column = blocks[:, 0, :, 0] - 1000  # (frame, t): the MFCC frame each row came from
    np.testing.assert_array_equal(column[0], np.clip(np.arange(-8, 12), 0, n - 1))
    np.testing.assert_array_equal(column[24], np.clip(np.arange(88, 108), 0, n - 1))
    np.testing.assert_array_equal(blocks[2:22], audio.frame_blocks(mfcc))
    with pytest.raises(ValueError):
        audio.frame_blocks(mfcc, 0, 25)  # frames 0, 1 and 22+ leave the clip
    with pytest.raises(ValueError):
        audio.frame_blocks(mfcc, pad=True)  # how many frames is the caller's to say


def test_a_burst_lands_in_the_rows_of_the_frames_it_sounds_in():
    # A 500 Hz tone (period 32 samples, so every 10-ms frame sees the same waveform) with
    # a 3 kHz burst during video frame 10, samples 6400..7039. MFCC frame j reads samples
    # [160 j, 160 j + 400) after pre-emphasis, which also reaches back to sample 160 j - 1,
    # so frames 38..44 hear the burst; block l row t is MFCC frame 4l - 8 + t.
    t = np.arange(SR) / SR
    signal = 0.1 * np.sin(2 * np.pi * 500 * t)
    signal[6400:7040] += 0.5 * np.sin(2 * np.pi * 3000 * t[6400:7040])
    blocks = audio.frame_blocks(audio.syncnet_mfcc(signal, SR), 2, 20)
    tone_only = blocks[0, 0, 1]  # block 2, row 1: MFCC frame 1
    touched = np.abs(blocks[:, 0] - tone_only).max(axis=2) > 1.0  # (frame, row)
    for k, frame in enumerate(range(2, 20)):
        rows = [r for r in range(20) if 38 <= 4 * frame - 8 + r <= 44]
        assert np.flatnonzero(touched[k]).tolist() == rows, frame
    # The block of frame 10 holds the burst in its middle rows, 6..12 of 0..19.
    assert np.flatnonzero(touched[8]).tolist() == [6, 7, 8, 9, 10, 11, 12]
