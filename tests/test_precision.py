"""The int8 CPU path (models.common.quantize): ATVGnet's VG-net and DAVS's decoder and
person-ID encoder quantised, against fp32 on the bundled example with the demo weights.

Quality bound: frames within PSNR 35 dB of the fp32 frames and the lip-sync proxy within
0.05 of fp32's. Speed is not asserted here: ``talkingface bench atvgnet|davs`` prints it.
"""

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from models import TalkingFaceInput, metrics, registry
from models.common import quantize
from models.common.quantize import InvalidPrecision
from service.cli import main
from service.jobs.worker import Worker
from tests.test_api import make_settings

PSNR_BOUND_DB = 35.0
LIP_SYNC_BOUND = 0.05
# The first seconds of the example's voice keep the tests quick (DAVS draws 256x256 frames);
# `talkingface bench atvgnet|davs` measures the same on the whole example.
ATVGNET_SECONDS = 4.0
DAVS_SECONDS = 2.0


@pytest.fixture(scope="module")
def example():
    photo, voice = quantize.calibration_example()
    return photo, voice


def frames_of(pipe, photo, voice, **options):
    inputs = TalkingFaceInput(image=photo, audio=voice, sample_rate=16000)
    return np.concatenate(list(pipe.frame_chunks(inputs, **options)))


def is_int8(module):
    """Whether ``module`` holds int8 convolutions."""
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in module.modules())


def check_quality(fp32, int8, voice):
    psnr = metrics.psnr(fp32, int8)
    sync32 = metrics.lip_sync_proxy(fp32, voice, 16000)
    sync8 = metrics.lip_sync_proxy(int8, voice, 16000)
    assert psnr >= PSNR_BOUND_DB, f"int8 frames {psnr:.2f} dB from fp32"
    assert abs(sync8 - sync32) <= LIP_SYNC_BOUND, f"lip-sync proxy {sync8:.4f} (int8) against {sync32:.4f}"
    assert not np.array_equal(fp32, int8)       # the int8 networks did run


def test_atvgnet_int8_within_quality_bound(example):
    photo, voice = example
    voice = voice[:int(ATVGNET_SECONDS * 16000)]
    fp32 = registry.load("atvgnet", weights=registry.DEMO_WEIGHTS / "atvgnet", device="cpu", precision="fp32")
    int8 = registry.load("atvgnet", weights=registry.DEMO_WEIGHTS / "atvgnet", device="cpu", precision="int8")
    assert (fp32.precision, fp32.info["precision"]) == ("fp32", "fp32")
    assert (int8.precision, int8.info["precision"]) == ("int8", "int8")
    assert is_int8(int8.vgnet) and not is_int8(fp32.vgnet) and not is_int8(int8.atnet)
    check_quality(frames_of(fp32, photo, voice), frames_of(int8, photo, voice), voice)


def test_davs_int8_within_quality_bound(example):
    photo, voice = example
    voice = voice[:int(DAVS_SECONDS * 16000)]
    fp32 = registry.load("davs", weights=registry.DEMO_WEIGHTS / "davs", device="cpu", precision="fp32")
    int8 = registry.load("davs", weights=registry.DEMO_WEIGHTS / "davs", device="cpu", precision="int8")
    assert int8.info["precision"] == "int8" and is_int8(int8.decoder) and is_int8(int8.id_encoder)
    check_quality(frames_of(fp32, photo, voice, finetune_steps=0), frames_of(int8, photo, voice, finetune_steps=0),
                  voice)
    # Fine-tuning starts from the fp32 networks (int8 ones cannot be tuned) and still runs.
    tuned = frames_of(int8, photo, voice[:16000], finetune_steps=1)
    assert tuned.shape == (25, 256, 256, 3)


def test_fp32_networks_unchanged_by_int8():
    """fp32 keeps the very networks it is given, and building an int8 pipeline beside them
    changes neither their weights nor what the fp32 pipeline draws."""
    from models.atvgnet.networks import ATNet, VGNet
    from models.atvgnet.pipeline import ATVGnetPipeline

    photo, voice = quantize.calibration_example()
    voice = voice[:16000]
    torch.manual_seed(0)
    atnet, vgnet = ATNet(width=8), VGNet(ngf=8, n_blocks=1)
    arrays = registry.DEMO_WEIGHTS / "atvgnet"
    project = ATVGnetPipeline.from_project(arrays, device="cpu")       # the demo's PCA and crop arrays
    fp32 = ATVGnetPipeline(atnet, vgnet, project.pca.numpy(), project.mean.numpy(), project.shape_arrays,
                           device="cpu")
    assert fp32.precision == "fp32" and fp32.vgnet is vgnet and fp32.atnet is atnet
    before = {k: v.clone() for k, v in vgnet.state_dict().items()}
    frames = frames_of(fp32, photo, voice)
    int8 = ATVGnetPipeline(atnet, vgnet, project.pca.numpy(), project.mean.numpy(), project.shape_arrays,
                           device="cpu", precision="int8")
    assert int8.vgnet is not vgnet and is_int8(int8.vgnet)
    assert all(torch.equal(before[k], v) for k, v in vgnet.state_dict().items())
    assert np.array_equal(frames_of(fp32, photo, voice), frames)


def test_precision_is_validated(tmp_path, capsys):
    with pytest.raises(InvalidPrecision, match="precision must be one of fp32, int8, auto, got 'bf16'"):
        registry.load("atvgnet", weights=registry.DEMO_WEIGHTS / "atvgnet", device="cpu", precision="bf16")
    with pytest.raises(InvalidPrecision, match="dcgan has no int8 path"):
        registry.load("dcgan", precision="int8")
    with pytest.raises(InvalidPrecision, match="CPU only"):
        quantize.resolve_precision("int8", torch.device("cuda"))
    with pytest.raises(ValidationError, match="precision"):
        make_settings(tmp_path, None, precision="bf16")
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--image", "x.jpg", "--audio", "x.wav", "-o", str(tmp_path / "o.mp4"), "--precision", "bf16"])
    assert exit_info.value.code == 2 and "invalid choice: 'bf16'" in capsys.readouterr().err


def test_auto_is_int8_only_on_cpus_where_it_pays(monkeypatch):
    monkeypatch.setattr(quantize, "int8_pays", lambda: False)
    assert quantize.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert quantize.resolve_precision("int8", torch.device("cpu")) == "int8"
    monkeypatch.setattr(quantize, "int8_pays", lambda: True)
    assert quantize.resolve_precision("auto", torch.device("cpu")) == "int8"
    assert quantize.resolve_precision("auto", torch.device("cuda")) == "fp32"
    assert quantize.resolve_precision("FP32", torch.device("cpu")) == "fp32"


def test_worker_loads_with_the_precision_setting(tmp_path):
    settings = make_settings(tmp_path, registry.DEMO_WEIGHTS / "atvgnet", precision="int8", device="cpu")
    pipe = Worker(settings, models=["atvgnet"]).pipeline("atvgnet")
    assert pipe.info["precision"] == "int8" and is_int8(pipe.vgnet)
    settings = make_settings(tmp_path, registry.DEMO_WEIGHTS / "atvgnet", precision="fp32", device="cpu")
    assert Worker(settings, models=["atvgnet"]).pipeline("atvgnet").info["precision"] == "fp32"
