"""Shared fixtures: the authors' arrays and a weights folder in the authors' format.

The authors' ATVGnet arrays are test data from ../shared/reference/atvgnet (beside the
checkout; $TALKINGFACE_TEST_REFERENCE overrides). They are never committed.
"""

import os
import shutil
from pathlib import Path

import pytest

from models.atvgnet.networks import ATNet, VGNet
from tests.legacy_pickle import save_legacy
from tests.seeded import seeded_state_dict

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def reference_dir():
    path = Path(os.environ.get("TALKINGFACE_TEST_REFERENCE", ROOT.parent / "shared" / "reference" / "atvgnet"))
    if not (path / "U_lrw1.npy").is_file():
        pytest.fail(f"the authors' ATVGnet arrays are not in {path}; set TALKINGFACE_TEST_REFERENCE")
    return path


@pytest.fixture(scope="session")
def seeded_weights_dir(tmp_path_factory, reference_dir):
    """A weights folder laid out as a user would: the authors' arrays and two checkpoints
    in the authors' file format (legacy, Python-2 pickled, ``module.`` prefixes) holding
    seeded stand-in weights."""
    folder = tmp_path_factory.mktemp("weights")
    for array in reference_dir.glob("*.npy"):
        shutil.copy(array, folder / array.name)
    save_legacy(seeded_state_dict(ATNet().state_dict()), folder / "atnet_lstm_18.pth")
    save_legacy(seeded_state_dict(VGNet().state_dict()), folder / "generator_23.pth")
    return folder
