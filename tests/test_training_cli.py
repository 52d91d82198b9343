"""`talkingface data prepare`, `train atvgnet` and `eval` chained on two generated videos."""

import json

import numpy as np
import pytest

from models.atvgnet import dataset, evaluate, train
from service.cli import main
from tests.test_atvgnet_dataset import _face_frames, _speech_like, _write


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    _write(folder / "one.mp4", _face_frames(1.2), _speech_like(2.0, seed=1))
    _write(folder / "two.mp4", _face_frames(0.85), _speech_like(2.0, seed=2))
    return folder


@pytest.fixture(scope="module")
def prepared(videos, project_basics, tmp_path_factory):
    """The two videos prepared with the project's normalisation arrays (``data prepare``
    reads the authors' from a folder: see ``test_data_prepare_from_the_command_line``)."""
    out = tmp_path_factory.mktemp("data")
    dataset.prepare(videos, out, split=0.5, basics=project_basics, workers=1, progress=False)
    return out


def assert_one_train_and_one_test_clip(prepared):
    assert len(dataset.list_clips(prepared, "train")) == 1 and len(dataset.list_clips(prepared, "test")) == 1
    statuses = [v["status"] for v in dataset.load_manifest(prepared)["videos"].values()]
    assert statuses == ["ok", "ok"]


def test_data_prepare_from_the_command_line(videos, reference_dir, tmp_path):
    out = tmp_path / "data"
    assert main(["data", "prepare", "--videos", str(videos), "--out", str(out), "--basics", str(reference_dir),
                 "--workers", "1", "--split", "0.5", "-q"]) == 0
    assert_one_train_and_one_test_clip(out)


def test_prepare_train_and_evaluate_from_the_command_line(prepared, tmp_path, capsys):
    assert_one_train_and_one_test_clip(prepared)
    for stage, sizes in (("atnet", ["--width", "4"]), ("vgnet", ["--ngf", "8", "--n-blocks", "1"])):
        assert main(["train", "atvgnet", "--data", str(prepared), "--stage", stage, "--out", str(tmp_path / stage),
                     "--max-steps", "2", "--batch-size", "1", "--device", "cpu", "-q", *sizes]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["stage"] == stage and summary["step"] == 2
    report = tmp_path / "eval.json"
    assert main(["eval", "--model", "atvgnet", "--data", str(prepared), "--atnet", str(tmp_path / "atnet"),
                 "--vgnet", str(tmp_path / "vgnet"), "--json", str(report)]) == 0
    table = capsys.readouterr().out
    assert "psnr" in table and "lip_sync" in table and "mean" in table
    [row] = json.loads(report.read_text()).values()
    assert row["frames"] == 50 and 0 < row["psnr"] < 100 and -1 <= row["ssim"] <= 1


def test_generated_clip_follows_the_pipeline_steps(prepared, tmp_path):
    # The evaluation's generator must be the inference pipeline's: same networks,
    # same inputs -> same frames as running VG-net on AT-net's landmarks by hand.
    import torch

    from models.atvgnet.networks import ATNet, VGNet
    torch.manual_seed(0)
    atnet, vgnet = ATNet(width=4).eval(), VGNet(ngf=8, n_blocks=1).eval()
    clip = dataset.load_clip(prepared, dataset.list_clips(prepared, "test")[0])
    with np.load(prepared / "pca.npz") as arrays:
        mean, basis = arrays["mean"], arrays["basis"]
    frames = evaluate.generate_clip(atnet, vgnet, clip, mean, basis, chunk=7)
    m, b = torch.tensor(mean), torch.tensor(basis[:, :6])
    example = (torch.tensor(clip["landmarks"][:1]) * 5 - m) @ b
    windows = torch.tensor(np.stack([clip["mfcc"][4 * k: 4 * k + 28] for k in range(len(clip["frames"]))]))
    with torch.no_grad():
        landmarks = atnet(example, windows[None])[0] @ b.T + m
        image = torch.tensor(clip["frames"][0]).permute(2, 0, 1)[None].float() / 127.5 - 1
        expected = vgnet(image, landmarks[None], example @ b.T + m)[0][0]
    expected = ((expected + 1) / 2 * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    assert frames.shape == expected.shape
    assert np.abs(frames.astype(int) - expected).max() <= 1


def test_eval_needs_both_training_folders(prepared, tmp_path, capsys):
    assert main(["eval", "--data", str(prepared), "--atnet", str(tmp_path)]) == 2
    assert "both --atnet and --vgnet" in capsys.readouterr().err


def test_train_refuses_a_missing_dataset(tmp_path, capsys):
    code = main(["train", "atvgnet", "--data", str(tmp_path / "none"), "--stage", "atnet",
                 "--out", str(tmp_path / "run"), "--max-steps", "1"])
    assert code == 2 and "error:" in capsys.readouterr().err


def test_training_runs_load_strictly(prepared, tmp_path):
    train.train(prepared, "atnet", tmp_path / "a", max_steps=1, batch_size=1, width=4, device="cpu", progress=False)
    net = train.load_trained(tmp_path / "a", "atnet")
    assert net.config == {"width": 4}


@pytest.fixture(scope="module")
def exported(prepared, project_basics, tmp_path_factory):
    """Two tiny training runs exported as a project weights folder."""
    from models.atvgnet.export import BASICS, export_weights
    runs = tmp_path_factory.mktemp("runs")
    train.train(prepared, "atnet", runs / "atnet", max_steps=1, batch_size=1, width=4, device="cpu", progress=False)
    train.train(prepared, "vgnet", runs / "vgnet", max_steps=1, batch_size=1, ngf=8, n_blocks=1, device="cpu",
                progress=False)
    basics = {k: project_basics[k] for k in BASICS}
    return export_weights(runs / "atnet", runs / "vgnet", prepared, basics, tmp_path_factory.mktemp("w") / "mine",
                          name="mine (test)")


def test_exported_weights_drive_the_pipeline(exported):
    from models import TalkingFaceInput, registry
    from service import media
    from tests.conftest import EXAMPLES
    assert registry.resolve_weights("atvgnet", exported) == ("project", exported)
    pipe = registry.load("atvgnet", weights=exported, device="cpu")
    assert pipe.info["weights"] == "mine (test)" and pipe.scale_components is False
    assert pipe.atnet.config == {"width": 4} and pipe.vgnet.config["ngf"] == 8
    audio = media.read_audio(EXAMPLES / "speech.wav")[:16000]
    video = pipe(TalkingFaceInput(image=media.read_image(EXAMPLES / "face.jpg"), audio=audio, sample_rate=16000))
    assert video.frames.shape == (24, 128, 128, 3)


def test_exported_weights_are_checked_against_their_sums(exported, tmp_path):
    import shutil

    from models import registry
    from models.weights import WeightsInvalid
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    with open(copy / "atnet.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\0\0\1")
    with pytest.raises(WeightsInvalid, match="SHA256SUMS"):
        registry.load("atvgnet", weights=copy, device="cpu")


def test_exporting_again_over_a_report_keeps_the_folder_loadable(exported, tmp_path):
    import shutil

    from models import registry
    from models.atvgnet.export import BASICS, export_weights
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    (copy / "REPORT.json").write_text("{}")           # left by an earlier build, rewritten after export
    config = json.loads((copy / "config.json").read_text())
    basics = dict(np.load(copy / "basics.npz"))
    runs = {stage: tmp_path / stage for stage in ("atnet", "vgnet")}
    for stage, run in runs.items():                   # a run folder as export reads it
        run.mkdir()
        shutil.copyfile(copy / f"{stage}.safetensors", run / f"{stage}.safetensors")
        (run / "config.json").write_text(json.dumps({"stage": stage, "network": config[stage], "step": 1,
                                                     "files": {"generator": f"{stage}.safetensors"}}))
    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(copy / "pca.npz", data / "pca.npz")
    export_weights(runs["atnet"], runs["vgnet"], data, {k: basics[k] for k in BASICS}, copy, name="again")
    (copy / "REPORT.json").write_text('{"rewritten": true}')
    assert "REPORT.json" not in (copy / "SHA256SUMS").read_text()
    assert registry.load("atvgnet", weights=copy, device="cpu").info["weights"] == "again"


def test_weights_are_picked_in_order(exported, authors_layout_dir, tmp_path, monkeypatch):
    from dataclasses import replace

    from models import registry
    monkeypatch.delenv("TALKINGFACE_WEIGHTS_DIR", raising=False)
    spec = registry.REGISTRY["atvgnet"]
    monkeypatch.setitem(registry.REGISTRY, "atvgnet", replace(spec, demo=exported))
    # 1. an explicit folder; 2. the authors' files in the default folder; 3. the shipped demo weights.
    assert registry.resolve_weights("atvgnet", authors_layout_dir) == ("authors", authors_layout_dir)
    monkeypatch.setenv("TALKINGFACE_WEIGHTS_DIR", str(authors_layout_dir))
    assert registry.resolve_weights("atvgnet") == ("authors", authors_layout_dir)
    monkeypatch.setenv("TALKINGFACE_WEIGHTS_DIR", str(tmp_path))
    assert registry.resolve_weights("atvgnet") == ("project", exported)
    assert registry.weights_ready("atvgnet") == ("project", exported, [])
    # The service's weights folder (weights_root) is searched as the default one is, and
    # may be a project folder of the model; an explicit folder is the only one tried.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert registry.resolve_weights("atvgnet", weights_root=empty) == ("project", exported)
    assert registry.resolve_weights("atvgnet", weights_root=authors_layout_dir) == ("authors", authors_layout_dir)
    assert registry.resolve_weights("atvgnet", weights_root=exported) == ("project", exported)
    assert registry.resolve_weights("atvgnet", empty) == ("authors", empty)
    monkeypatch.setitem(registry.REGISTRY, "atvgnet", replace(spec, demo=tmp_path / "none"))
    kind, folder, missing = registry.weights_ready("atvgnet")
    assert (kind, folder) == ("authors", tmp_path) and "generator_23.pth" in missing
