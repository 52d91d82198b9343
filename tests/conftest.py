"""Shared fixtures: the optional components, the project's arrays, and weights folders
holding seeded stand-in networks.

The optional components (Chromium, espeak-ng, ffprobe, PostgreSQL, the authors' ATVGnet
arrays) are described in ``tests/components.py``: a test needing a missing one is skipped
with the reason, or, with ``TALKINGFACE_TEST_ALL=1`` (CI), fails, and then any skip at
all fails the run.

The authors' ATVGnet arrays are test data from ../shared/reference/atvgnet (beside the
checkout; $TALKINGFACE_TEST_REFERENCE overrides). They are never committed. Only the
tests that prove equivalence with the authors' code need them; the others use the
arrays the project ships with its demo weights (``weights/demo/atvgnet``).
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.atvgnet.networks import ATNet, VGNet
from models.common.pipeline import save_project
from tests import components
from tests.legacy_pickle import save_legacy
from tests.seeded import seeded_state_dict

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PROJECT_ARRAYS = ROOT / "weights" / "demo" / "atvgnet"


@pytest.fixture(scope="session", autouse=True)
def own_data_home(tmp_path_factory):
    """The command line's development signing key goes under $XDG_DATA_HOME: a temporary
    folder for the tests (and the commands they start), not the user's home."""
    saved = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("data-home"))
    yield
    if saved is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = saved


@pytest.fixture(scope="session", autouse=True)
def fp32_service():
    """Servers and workers started by the tests run fp32, whatever the CPU: the service's default
    (``auto``) is int8 on a CPU with VNNI, and the tests compare the service's frames with the
    fp32 networks'. The int8 path has tests of its own (``test_precision.py``) that ask for it."""
    saved = os.environ.get("TALKINGFACE_PRECISION")
    os.environ["TALKINGFACE_PRECISION"] = "fp32"
    yield
    if saved is None:
        os.environ.pop("TALKINGFACE_PRECISION", None)
    else:
        os.environ["TALKINGFACE_PRECISION"] = saved


# -- optional components ------------------------------------------------------------
@pytest.fixture(scope="session")
def reference_dir():
    """The folder of the authors' ATVGnet arrays (``U_lrw1.npy``, ``S.npy``, ...)."""
    return components.require("atvgnet-reference")


@pytest.fixture(scope="session")
def espeak_ng():
    return components.require("espeak-ng")


@pytest.fixture(scope="session")
def ffprobe():
    return components.require("ffprobe")


# -- the project's arrays -----------------------------------------------------------
@pytest.fixture(scope="session")
def project_basics():
    """The crop template and landmark-normalisation arrays the project made itself
    (``mean_shape_img``, ``mean_shape_norm``, ``S``, ``base_68``), as shipped with the demo weights."""
    with np.load(PROJECT_ARRAYS / "basics.npz") as basics:
        return {k: basics[k] for k in ("mean_shape_img", "mean_shape_norm", "S", "base_68")}


@pytest.fixture(scope="session")
def project_pca():
    """``{"mean": (136,), "basis": (136, 136)}``: the landmark PCA of the demo weights."""
    with np.load(PROJECT_ARRAYS / "pca.npz") as pca:
        return {"mean": pca["mean"], "basis": pca["basis"]}


def seeded_networks():
    """Full-size AT-net and VG-net holding the seeded stand-in weights."""
    atnet, vgnet = ATNet(), VGNet()
    atnet.load_state_dict(seeded_state_dict(atnet.state_dict()))
    vgnet.load_state_dict(seeded_state_dict(vgnet.state_dict()))
    return atnet, vgnet


# -- weights folders ------------------------------------------------------------------
@pytest.fixture(scope="session")
def seeded_weights_dir(tmp_path_factory, reference_dir):
    """A weights folder laid out as a user would: the authors' arrays and two checkpoints
    in the authors' file format (legacy, Python-2 pickled, ``module.`` prefixes) holding
    seeded stand-in weights. It loads verified, as the authors' release does."""
    folder = tmp_path_factory.mktemp("weights")
    for array in reference_dir.glob("*.npy"):
        shutil.copy(array, folder / array.name)
    save_legacy(seeded_state_dict(ATNet().state_dict()), folder / "atnet_lstm_18.pth")
    save_legacy(seeded_state_dict(VGNet().state_dict()), folder / "generator_23.pth")
    return folder


@pytest.fixture(scope="session")
def seeded_project_dir(tmp_path_factory, project_basics, project_pca):
    """A project weights folder (``config.json``, safetensors, ``SHA256SUMS``) with the
    same seeded full-size networks as ``seeded_weights_dir`` and the project's arrays; the
    demo's x2(1.1..1.5) component scaling is on, as for the authors' weights. It loads
    verified against its own sums, without the authors' arrays."""
    atnet, vgnet = seeded_networks()
    return save_project(tmp_path_factory.mktemp("project") / "seeded", "atvgnet", {"atnet": atnet, "vgnet": vgnet},
                        name="seeded stand-in", arrays={"basics": project_basics, "pca": project_pca},
                        extra={"scale_components": True})


@pytest.fixture(scope="session")
def authors_layout_dir(tmp_path_factory, project_basics, project_pca):
    """Every file of the authors' release present under its released name: the seeded
    checkpoints in the authors' format and the project's arrays standing in for theirs.

    The arrays do not have the published sha256, so the folder does not load verified;
    it is for tests of which files are found and which folder is picked.
    """
    folder = tmp_path_factory.mktemp("authors_layout")
    arrays = dict(project_basics, U_lrw1=project_pca["basis"], mean_lrw1=project_pca["mean"])
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    save_legacy(seeded_state_dict(ATNet().state_dict()), folder / "atnet_lstm_18.pth")
    save_legacy(seeded_state_dict(VGNet().state_dict()), folder / "generator_23.pth")
    return folder


# -- TALKINGFACE_TEST_ALL=1: no skips -----------------------------------------------------
_skipped = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_collectreport(report):
    if report.skipped:          # a whole module skipped while collecting
        _skipped.append(report.nodeid)


def pytest_terminal_summary(terminalreporter):
    if components.missing:
        terminalreporter.section("optional components")
        for name in sorted(components.missing):
            terminalreporter.line(components.reason(name, components.locate(name)[1]))
        if not components.TEST_ALL:
            terminalreporter.line("the tests needing them were skipped; TALKINGFACE_TEST_ALL=1 makes that a failure")
    if components.TEST_ALL and _skipped:
        terminalreporter.section("TALKINGFACE_TEST_ALL=1", red=True)
        count = f"{len(_skipped)} test{'s' if len(_skipped) > 1 else ''}"
        terminalreporter.line(f"{count} skipped; with TALKINGFACE_TEST_ALL=1 no test may skip:", red=True)
        for nodeid in _skipped:
            terminalreporter.line(f"  {nodeid}")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    if components.TEST_ALL and _skipped and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
