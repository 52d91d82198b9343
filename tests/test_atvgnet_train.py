"""ATVGnet training: clip sampling, losses, checkpoints, resuming, logs, stops.

Runs on small synthetic datasets in the prepared-dataset format (manifest.json, pca.npz,
videos/<name>/{frames,landmarks,mouth,mfcc}.npy, audio.wav) with tiny networks; the
discriminator is the published one unless a test narrows it, so VG-net runs use batches
of one clip.
"""

import csv
import json
import wave

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import default_collate

from models.atvgnet.networks import ATNet, VGNet
from models.atvgnet.train import (
    ATNetClips,
    TrainConfig,
    Trainer,
    VGNetClips,
    landmark_loss,
    load_trained,
    mouth_weights,
    pixel_loss,
    train,
)
from models.errors import InvalidInput

TINY_ATNET = {"width": 4}
TINY_VGNET = {"ngf": 8, "n_blocks": 1}


def _frames(rng, frames, colour):
    """Smooth faces-like frames: a colour gradient and a 'mouth' box that moves per frame."""
    y, x = np.mgrid[0:128, 0:128].astype(np.float32) / 127.0
    base = np.stack([colour[0] * x, colour[1] * y, colour[2] * (1 - x)], -1) * 200 + 20
    video = np.repeat(base[None], frames, 0)
    for t in range(frames):
        top = 80 + int(8 * np.sin(t / 2))
        video[t, top: top + 12, 44:84] = 40
    video += rng.normal(0, 4, video.shape)
    return np.clip(video, 0, 255).astype(np.uint8)


def make_dataset(root, videos, seed=0):
    """Write a prepared dataset: ``videos`` maps name -> (frames, split, status)."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(136, 136)))
    np.savez(root / "pca.npz", mean=rng.normal(0, 0.5, 136).astype(np.float32),
             basis=basis.astype(np.float32))
    shape = rng.normal(0, 0.2, 136).astype(np.float32)
    manifest = {"version": 1, "fps": 25, "sample_rate": 16000, "videos": {}}
    for name, (frames, split, status) in videos.items():
        manifest["videos"][name] = {"status": status, "message": None if status == "ok" else "no face",
                                    "frames": frames, "split": split, "source": f"/raw/{name}.mp4"}
        if status != "ok":
            continue
        folder = root / "videos" / name
        folder.mkdir(parents=True)
        np.save(folder / "frames.npy", _frames(rng, frames, rng.uniform(0.2, 1.0, 3)))
        landmarks = shape + rng.normal(0, 0.02, (frames, 136))
        np.save(folder / "landmarks.npy", landmarks.astype(np.float32))
        np.save(folder / "mouth.npy", rng.uniform(40, 90, (frames, 20, 2)).astype(np.float32))
        np.save(folder / "mfcc.npy", rng.normal(size=(4 * (frames - 1) + 28, 12)).astype(np.float32))
        with wave.open(str(folder / "audio.wav"), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(16000)
            f.writeframes(np.zeros(640 * frames, np.int16).tobytes())
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("dataset"), {
        "long": (40, "train", "ok"),
        "medium": (30, "train", "ok"),
        "short": (20, "train", "ok"),  # too short for AT-net (24), long enough for VG-net (16)
        "tiny": (12, "train", "ok"),  # too short for both
        "faceless": (50, "train", "no_face"),
        "held_out": (30, "test", "ok"),
    })


def _config(data_dir, out_dir, stage, **overrides):
    sizes = TINY_ATNET if stage == "atnet" else TINY_VGNET
    options = dict(sizes, batch_size=2 if stage == "atnet" else 1, progress=False, sample_every=0,
                   log_every=1, device="cpu")
    options.update(overrides)
    return TrainConfig(data_dir=str(data_dir), stage=stage, out_dir=str(out_dir), **options)


# ---------------------------------------------------------------------------------------
# Datasets


def test_atnet_clips_sample_as_the_authors_dataset(data_dir):
    clips = ATNetClips(data_dir, "train", seed=3)
    assert [name for name, _ in clips.videos] == ["long", "medium"]
    assert sorted(clips.skipped) == ["short", "tiny"]
    assert len(ATNetClips(data_dir, "test", seed=3)) == 1

    with np.load(data_dir / "pca.npz") as pca:
        mean, basis = pca["mean"].astype(np.float64), pca["basis"][:, :6].astype(np.float64)
    seen = set()
    for epoch in range(8):
        clips.set_epoch(epoch)
        for index, (name, _) in enumerate(clips.videos):
            item = clips[index]
            r = item["frame"]
            seen.add(r)
            assert 3 <= r <= 7
            assert item["example_landmark"].shape == (6,)
            assert item["landmarks"].shape == (16, 6)
            assert item["audio"].shape == (16, 28, 12)
            assert item["audio"].dtype == item["landmarks"].dtype == torch.float32
            landmarks = np.load(data_dir / "videos" / name / "landmarks.npy").astype(np.float64)
            mfcc = np.load(data_dir / "videos" / name / "mfcc.npy")
            expected = (landmarks * 5 - mean) @ basis
            np.testing.assert_allclose(item["example_landmark"], expected[r], atol=1e-4)
            np.testing.assert_allclose(item["landmarks"], expected[r + 1: r + 17], atol=1e-4)
            for j, k in enumerate(range(r + 1, r + 17)):
                np.testing.assert_array_equal(item["audio"][j], mfcc[4 * k: 4 * k + 28])
    assert len(seen) >= 3  # the draw really varies over 3..7

    # Seedable: the same (seed, epoch, index) gives the same clip.
    again = ATNetClips(data_dir, "train", seed=3)
    again.set_epoch(7)
    torch.testing.assert_close(again[1]["landmarks"], clips[1]["landmarks"])


def test_atnet_clips_whole_video_reach_past_the_first_frames(data_dir):
    clips = ATNetClips(data_dir, "train", seed=0, whole_video=True)
    assert "short" in [name for name, _ in clips.videos]  # 20 frames: r = 3 fits
    frames = dict(clips.videos)
    draws = []
    for epoch in range(30):
        clips.set_epoch(epoch)
        for index, (name, _) in enumerate(clips.videos):
            r = clips[index]["frame"]
            assert 3 <= r <= frames[name] - 17
            draws.append(r)
    assert max(draws) > 7


def test_vgnet_clips_hold_16_frames_and_an_example(data_dir):
    clips = VGNetClips(data_dir, "train", seed=1)
    assert [name for name, _ in clips.videos] == ["long", "medium", "short"]
    assert clips.skipped == ["tiny"]
    for index, (name, n) in enumerate(clips.videos):
        item = clips[index]
        frames = np.load(data_dir / "videos" / name / "frames.npy")
        landmarks = np.load(data_dir / "videos" / name / "landmarks.npy")
        start, example = item["start"], item["example_frame"]
        assert 0 <= start <= n - 16 and 0 <= example < n
        assert item["images"].shape == (16, 3, 128, 128)
        assert item["landmarks"].shape == (16, 136)
        assert item["example_image"].shape == (3, 128, 128)
        assert item["example_landmark"].shape == (136,)
        assert item["images"].min() >= -1 and item["images"].max() <= 1
        expected = frames[start: start + 16].transpose(0, 3, 1, 2) / 127.5 - 1
        np.testing.assert_allclose(item["images"], expected, atol=1e-6)
        np.testing.assert_allclose(item["example_image"], frames[example].transpose(2, 0, 1) / 127.5 - 1,
                                   atol=1e-6)
        np.testing.assert_allclose(item["landmarks"], landmarks[start: start + 16] * 5, rtol=1e-6)
        np.testing.assert_allclose(item["example_landmark"], landmarks[example] * 5, rtol=1e-6)

    pca_clips = VGNetClips(data_dir, "train", seed=1, landmarks="pca")
    item = pca_clips[0]
    with np.load(data_dir / "pca.npz") as pca:
        mean, basis = pca["mean"].astype(np.float64), pca["basis"][:, :6].astype(np.float64)
    raw = np.load(data_dir / "videos" / "long" / "landmarks.npy")[item["start"]: item["start"] + 16] * 5.0
    np.testing.assert_allclose(item["landmarks"], ((raw - mean) @ basis) @ basis.T + mean, atol=1e-4)


def test_a_split_without_usable_clips_is_refused(tmp_path):
    make_dataset(tmp_path, {"tiny": (12, "train", "ok")})
    with pytest.raises(InvalidInput, match="no usable"):
        Trainer(_config(tmp_path, tmp_path / "run", "atnet"))


# ---------------------------------------------------------------------------------------
# Losses and steps


def test_mouth_weighting_is_100_on_the_mouth_y_coordinates():
    weights = mouth_weights()
    heavy = torch.nonzero(weights == 100).flatten().tolist()
    assert heavy == [2 * point + 1 for point in range(48, 68)]  # y of points 48-67
    assert (weights != 100).sum() == 116 and weights[weights != 100].eq(1).all()
    predicted, target = torch.zeros(2, 16, 136), torch.zeros(2, 16, 136)
    target[..., 97] = 0.1  # y of point 48
    target[..., 96] = 0.1  # x of point 48
    expected = ((0.1 * 100) ** 2 + 0.1 ** 2) / 136
    torch.testing.assert_close(landmark_loss(predicted, target, weights), torch.tensor(expected))


def test_pixel_loss_weights_differences_by_the_attention():
    fake, real = torch.zeros(1, 2, 3, 4, 4, requires_grad=True), torch.ones(1, 2, 3, 4, 4)
    attention = torch.zeros(1, 2, 1, 4, 4, requires_grad=True)
    attention.data[:, 0] = 1.0
    loss = pixel_loss(fake, real, attention)
    torch.testing.assert_close(loss, torch.tensor((1.5 + 0.5) / 2))
    loss.backward()
    assert attention.grad is None  # the attention is detached
    torch.testing.assert_close(fake.grad[0, 0], torch.full((3, 4, 4), -1.5 / 96))


def test_atnet_mse_drops_on_a_fixed_batch(data_dir, tmp_path):
    trainer = Trainer(_config(data_dir, tmp_path, "atnet", lr=1e-3))
    batch = default_collate([trainer.dataset[0], trainer.dataset[1]])
    losses = [trainer.train_step(batch)["loss"] for _ in range(30)]
    assert losses[-1] < 0.7 * losses[0], losses


def test_vgnet_pixel_loss_drops_on_a_fixed_batch(data_dir, tmp_path):
    trainer = Trainer(_config(data_dir, tmp_path, "vgnet", lr=1e-3))
    batch = default_collate([trainer.dataset[0]])
    steps = [trainer.train_step(batch) for _ in range(5)]
    assert set(steps[0]) == set(trainer.loss_names)
    assert all(np.isfinite(list(step.values())).all() for step in steps)
    pixel = [step["loss_pix"] for step in steps]
    assert np.mean(pixel[-2:]) < 0.8 * np.mean(pixel[:2]), pixel


def test_pixel_warmup_trains_the_generator_alone_then_the_authors_losses_start(data_dir, tmp_path):
    trainer = Trainer(_config(data_dir, tmp_path, "vgnet", lr=1e-3, pixel_warmup=3, disc_width=8))
    assert trainer.discriminator.image_encoder_dis[0][0].out_channels == 8
    discriminator = {k: v.clone() for k, v in trainer.discriminator.state_dict().items()}
    batch = default_collate([trainer.dataset[0]])
    warmup = [trainer.train_step(batch) for _ in range(3)]
    for step in warmup:
        trainer.step += 1                      # as Trainer.run counts them
    assert all(set(step) == {"loss_g", "loss_pix"} for step in warmup)
    assert all(step["loss_g"] == pytest.approx(10 * step["loss_pix"]) for step in warmup)
    for key, value in trainer.discriminator.state_dict().items():
        torch.testing.assert_close(value, discriminator[key], rtol=0, atol=0, msg=key)
    assert warmup[-1]["loss_pix"] < warmup[0]["loss_pix"]
    after = trainer.train_step(batch)
    assert set(after) == set(trainer.loss_names)
    assert any(not torch.equal(v, discriminator[k]) for k, v in trainer.discriminator.state_dict().items())


def test_a_warmup_run_logs_empty_discriminator_columns(data_dir, tmp_path):
    train(data_dir, "vgnet", tmp_path, max_steps=2, pixel_warmup=1, batch_size=1, device="cpu", progress=False,
          sample_every=0, log_every=1, disc_width=8, **TINY_VGNET)
    rows = _read_log(tmp_path)
    assert rows[0]["loss_disc"] == "" and float(rows[0]["loss_pix"]) > 0
    assert float(rows[1]["loss_disc"]) > 0


# ---------------------------------------------------------------------------------------
# Checkpoints, resuming, logs


def _read_log(out_dir):
    with open(out_dir / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_atnet_checkpoint_resume_and_load_trained(data_dir, tmp_path):
    run = tmp_path / "run"
    summary = train(data_dir, "atnet", run, max_steps=4, checkpoint_every=2, log_every=2, sample_every=2,
                    batch_size=1, device="cpu", progress=False, **TINY_ATNET)
    assert summary["step"] == 4 and summary["stopped"] == "max_steps"
    for name in ("atnet.safetensors", "atnet.train.pt", "config.json", "log.csv", "pca.npz",
                 "samples/atnet_00000002.png", "samples/atnet_00000004.npz"):
        assert (run / name).is_file(), name
    assert not (run / "discriminator.safetensors").exists()

    config = json.loads((run / "config.json").read_text())
    assert config["stage"] == "atnet" and config["step"] == 4
    assert config["network"] == {"width": 4}
    assert config["pca"] == "pca.npz" and config["data_dir"] == str(data_dir.resolve())
    assert config["files"]["generator"] == "atnet.safetensors"
    assert config["train"]["batch_size"] == 1 and config["train"]["lr"] == 2e-4
    assert [point["step"] for point in config["loss_history"]] == [2, 4]
    assert set(config["loss_summary"]["loss"]) == {"first", "last", "min"}
    rows = _read_log(run)
    assert [int(row["step"]) for row in rows] == [2, 4]
    assert float(rows[-1]["loss"]) == pytest.approx(config["loss_history"][-1]["loss"], rel=1e-6)
    samples = np.load(run / "samples" / "atnet_00000004.npz")
    assert samples["predicted"].shape == samples["target"].shape == (1, 16, 6)

    # The optimiser state is tensors and containers only.
    state = torch.load(run / "atnet.train.pt", weights_only=True)
    assert state["step"] == 4 and state["optimizer_g"]["state"]

    # A resumed trainer starts from exactly the saved weights and step.
    resumed = Trainer(_config(data_dir, run, "atnet", batch_size=1))
    assert resumed.load_checkpoint() and resumed.step == 4
    saved = load_file(run / "atnet.safetensors")
    for key, value in resumed.generator.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)

    # Continuing to step 7 equals training 7 steps at once.
    summary = train(data_dir, "atnet", run, max_steps=7, checkpoint_every=2, log_every=2, batch_size=1,
                    device="cpu", progress=False, **TINY_ATNET)
    assert summary["step"] == 7
    straight = tmp_path / "straight"
    train(data_dir, "atnet", straight, max_steps=7, batch_size=1, device="cpu", progress=False, **TINY_ATNET)
    a, b = load_file(run / "atnet.safetensors"), load_file(straight / "atnet.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert [int(row["step"]) for row in _read_log(run)] == [2, 4, 6, 7]

    net = load_trained(run, "atnet")
    assert isinstance(net, ATNet) and not net.training and net.config == {"width": 4}
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, a[key], rtol=0, atol=0)
    with pytest.raises(InvalidInput, match="atnet run"):
        load_trained(run, "vgnet")
    with pytest.raises(InvalidInput, match="width"):
        train(data_dir, "atnet", run, max_steps=8, width=8, device="cpu", progress=False)


def test_vgnet_checkpoint_resumes_exactly_with_the_discriminator(data_dir, tmp_path):
    options = dict(batch_size=1, device="cpu", progress=False, sample_every=1, log_every=1, **TINY_VGNET)
    run, straight = tmp_path / "run", tmp_path / "straight"
    train(data_dir, "vgnet", run, max_steps=1, **options)
    for name in ("vgnet.safetensors", "discriminator.safetensors", "vgnet.train.pt",
                 "samples/vgnet_00000001.png"):
        assert (run / name).is_file(), name
    state = torch.load(run / "vgnet.train.pt", weights_only=True)
    assert state["optimizer_d"]["state"]
    summary = train(data_dir, "vgnet", run, max_steps=2, **options)
    assert summary["step"] == 2
    train(data_dir, "vgnet", straight, max_steps=2, **options)
    # Dropout makes this equal only if the RNG state was restored too.
    for name in ("vgnet.safetensors", "discriminator.safetensors"):
        a, b = load_file(run / name), load_file(straight / name)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{name} {key}")
    net = load_trained(run, "vgnet")
    assert isinstance(net, VGNet) and not net.training
    assert net.config == {"ngf": 8, "n_blocks": 1, "use_dropout": True}
    rows = _read_log(run)
    assert [int(row["step"]) for row in rows] == [1, 2]
    assert list(rows[0]) == ["step", "time", "loss_disc", "loss_real", "loss_fake", "loss_lmark_r",
                             "loss_lmark_f", "loss_g", "loss_gen", "loss_pix", "loss_lmark"]


def test_time_budget_stops_early_with_a_checkpoint(data_dir, tmp_path):
    summary = train(data_dir, "atnet", tmp_path, max_steps=100_000, time_budget=0.5, log_every=1000,
                    batch_size=2, device="cpu", progress=False, **TINY_ATNET)
    assert summary["stopped"] == "time_budget"
    assert 0 < summary["step"] < 100_000
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["step"] == summary["step"]
    assert torch.load(tmp_path / "atnet.train.pt", weights_only=True)["step"] == summary["step"]
    # The partial logging window is written at the stop.
    assert int(_read_log(tmp_path)[-1]["step"]) == summary["step"]


def test_ema_weights_are_saved_and_differ_from_the_raw_ones(data_dir, tmp_path):
    train(data_dir, "atnet", tmp_path, max_steps=5, ema=0.9, batch_size=2, lr=1e-3, device="cpu",
          progress=False, **TINY_ATNET)
    raw, ema = load_file(tmp_path / "atnet.safetensors"), load_file(tmp_path / "atnet_ema.safetensors")
    assert raw.keys() == ema.keys()
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())
    net = load_trained(tmp_path, "atnet", ema=True)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, ema[key], rtol=0, atol=0)
