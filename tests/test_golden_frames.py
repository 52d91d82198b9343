"""Both talking-face systems still draw what they drew when the golden frames were made.

``tests/data/make_golden_frames.py`` wrote ``golden_frames.npz`` with the shipped demo
weights on fixed inputs. Refactorings must leave every frame as it was. The frames are
uint8 after rounding, so a different CPU's float kernels may flip a rare pixel by one
grey level; anything more is a change of behaviour.
"""

from pathlib import Path

import numpy as np
import pytest

from tests.data.make_golden_frames import draw_all

GOLDEN = Path(__file__).parent / "data" / "golden_frames.npz"


@pytest.fixture(scope="module")
def drawn():
    return draw_all()


@pytest.mark.parametrize("name", ["atvgnet", "atvgnet_paste_back", "davs_audio", "davs_audio_finetune1",
                                  "davs_video"])
def test_frames_equal_the_golden_frames(drawn, name):
    with np.load(GOLDEN) as golden:
        expected = golden[name]
    frames = drawn[name]
    assert frames.shape == expected.shape
    diff = np.abs(frames.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3, (
        f"{name}: {np.mean(diff > 0):.2%} of the values differ, by up to {diff.max()}")
