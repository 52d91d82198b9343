"""DAVS training: clip sampling, losses, a few steps, checkpoints, resuming, the pipeline.

Runs on a small synthetic dataset in the prepared format (manifest.json with word labels,
videos/<name>/{frames,mfcc,landmarks}.npy, audio.wav) with tiny networks at 128 x 128
(256 x 256 where the pipeline loads the run), one torch thread.
"""

import csv
import json
import wave

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import default_collate

from models import TalkingFaceInput, registry
from models.davs.pipeline import DAVSPipeline
from models.davs.train import (
    DAVSClips,
    TrainConfig,
    Trainer,
    confusion_weight,
    l2_contrastive_loss,
    mouth_box,
    read_config,
    train,
    uniform_softmax_loss,
)
from models.errors import InvalidInput
from service import cli
from service.media import read_image
from tests.conftest import EXAMPLES

TINY = {"feature_length": 16, "id_channels": 4, "lip_channels": 4, "mfcc_channels": 4,
        "decoder_channels": 4, "disc_channels": 4}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny networks gain nothing from a second thread, and lose a lot on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _frames(rng, frames, colour):
    """Face-like 260 x 260 frames: a colour gradient, two dark 'eyes', a 'mouth' opening and closing."""
    y, x = np.mgrid[0:260, 0:260].astype(np.float32) / 259.0
    base = np.stack([colour[0] * x, colour[1] * y, colour[2] * (1 - x)], -1) * 180 + 40
    video = np.repeat(base[None], frames, 0)
    video[:, 100:116, 80:110] = video[:, 100:116, 150:180] = 30
    for t in range(frames):
        opening = int(6 + 10 * (1 + np.sin(t / 2)))
        video[t, 180: 180 + opening, 100:160] = 20
    video += rng.normal(0, 3, video.shape)
    return np.clip(video, 0, 255).astype(np.uint8)


def make_dataset(root, videos, seed=0):
    """Write a prepared DAVS dataset: ``videos`` maps name -> (frames, split, label)."""
    rng = np.random.default_rng(seed)
    manifest = {"version": 1, "model": "davs", "fps": 25, "sample_rate": 16000, "image_size": 260,
                "first_frame": 2, "labels": sorted({v[2] for v in videos.values() if v[2]}), "videos": {}}
    for name, (frames, split, label) in videos.items():
        manifest["videos"][name] = {"status": "ok", "message": None, "frames": frames, "split": split,
                                    "source": f"/raw/{name}.mp4", "label": label, "first_frame": 2}
        folder = root / "videos" / name
        folder.mkdir(parents=True)
        np.save(folder / "frames.npy", _frames(rng, frames, rng.uniform(0.3, 1.0, 3)))
        np.save(folder / "mfcc.npy", rng.normal(0, 10, (frames, 1, 20, 12)).astype(np.float32))
        np.save(folder / "landmarks.npy", rng.uniform(60, 200, (frames, 68, 2)).astype(np.float32))
        with wave.open(str(folder / "audio.wav"), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(16000)
            f.writeframes(np.zeros(640 * (frames + 6), np.int16).tobytes())
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("davs_data"), {
        "long": (40, "train", "hello"),
        "exact": (25, "train", "bye"),
        "unlabelled": (30, "train", None),
        "short": (20, "train", "hello"),      # fewer than the 25 frames of a clip
        "held_out": (30, "test", "bye"),
    })


def _config(data_dir, out_dir, **overrides):
    options = dict(TINY, image_size=128, batch_size=2, progress=False, sample_every=0, log_every=1, device="cpu")
    options.update(overrides)
    return TrainConfig(data_dir=str(data_dir), out_dir=str(out_dir), **options)


# ---------------------------------------------------------------------------------------
# Data


def test_clips_are_cut_as_the_authors_loader_cuts_them(data_dir):
    clips = DAVSClips(data_dir, "train", seed=1)
    assert [(name, frames, label) for name, frames, label in clips.videos] == [
        ("exact", 25, 0), ("long", 40, 1), ("unlabelled", 30, -1)]
    assert clips.skipped == ["short"] and clips.labels == ["bye", "hello"] and clips.labelled == 2
    stored = np.load(data_dir / "videos" / "long" / "frames.npy")
    mfcc = np.load(data_dir / "videos" / "long" / "mfcc.npy")
    seen = set()
    for epoch in range(6):
        clips.set_epoch(epoch)
        item = clips[1]
        start = item["start"]
        assert 0 <= start <= 15 and item["label"] == 1
        assert item["video"].shape == (25, 3, 256, 256) and item["video"].dtype == torch.float32
        np.testing.assert_array_equal(item["mfcc"].numpy(), mfcc[start: start + 25])
        # The 256 crop at an offset 0..4, maybe mirrored: exactly one of the 50 candidates.
        video = (item["video"].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        matches = []
        for top in range(5):
            for left in range(5):
                crop = stored[start, top: top + 256, left: left + 256]
                for mirror in (False, True):
                    if np.array_equal(video[0], crop[:, ::-1] if mirror else crop):
                        matches.append((top, left, mirror))
        assert len(matches) == 1
        top, left, mirror = matches[0]
        crops = stored[start: start + 25, top: top + 256, left: left + 256]
        np.testing.assert_array_equal(video, crops[:, :, ::-1] if mirror else crops)  # one cut for the clip
        seen.add((start, *matches[0]))
    assert len(seen) >= 4  # the draws vary with the epoch
    # Seeded: another instance draws the same item; the test loaders' centre crop without augmentation.
    again = DAVSClips(data_dir, "train", seed=1)
    again.set_epoch(5)
    torch.testing.assert_close(again[1]["video"], item["video"])
    centre = DAVSClips(data_dir, "test", augment=False)[0]
    expected = np.load(data_dir / "videos" / "held_out" / "frames.npy")[centre["start"], 2:258, 2:258]
    np.testing.assert_allclose(centre["video"][0].permute(1, 2, 0).numpy(), expected / 255.0, atol=1e-6)
    # Smaller networks get the crop averaged down.
    small = DAVSClips(data_dir, "test", augment=False, image_size=128)[0]["video"]
    assert small.shape == (25, 3, 128, 128)
    torch.testing.assert_close(small, torch.nn.functional.avg_pool2d(centre["video"], 2))


# ---------------------------------------------------------------------------------------
# Losses


def test_losses_follow_the_authors_definitions():
    anchor = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.6, 0.0]])
    other = torch.tensor([[0.0, 0.0], [3.0, 3.0], [1.0, 0.0]])
    # Matched pairs: d = 0, 1, 0.4; unmatched pairs closer than the margin 1: (0, 2) d = 1 -> 0,
    # (2, 0) d = 0.6 -> 0.4; all others are farther.
    expected = (0 + 1 + 0.16 + 0.4 ** 2) / (2 * 3)
    assert float(l2_contrastive_loss(anchor, other, margin=1.0)) == pytest.approx(expected, rel=1e-5)
    assert float(uniform_softmax_loss(torch.zeros(4, 7))) == 0.0
    one_hot = torch.tensor([[100.0, 0.0, 0.0, 0.0]])
    assert float(uniform_softmax_loss(one_hot)) == pytest.approx((0.75 ** 2 + 3 * 0.25 ** 2) / 4, rel=1e-4)
    # The uniform-softmax weight: the authors' 10^6 at 500 words, the same worst case elsewhere.
    assert confusion_weight(500) == pytest.approx(1e6)
    assert confusion_weight(12) * 11 / 144 == pytest.approx(1e6 * 499 / 500 ** 2)
    assert mouth_box(256) == (slice(170, 234), slice(64, 192))
    assert mouth_box(128) == (slice(85, 117), slice(32, 96))
    with pytest.raises(InvalidInput, match="image_size"):
        TrainConfig(data_dir="d", out_dir="o", image_size=64)


# ---------------------------------------------------------------------------------------
# Steps


def test_steps_lower_the_reconstruction_loss_on_a_fixed_batch(data_dir, tmp_path):
    trainer = Trainer(_config(data_dir, tmp_path / "run"))
    assert trainer.use_words and trainer.loss_names[-1] == "id_word_acc"
    batch = default_collate([trainer.dataset[1], trainer.dataset[0]])
    first = trainer.train_step(batch)
    for _ in range(7):
        trainer.step += 1
        last = trainer.train_step(batch)
    assert set(first) == set(trainer.loss_names)
    assert all(np.isfinite(v) for v in last.values())
    reconstruction = ("g_l1_audio", "g_l1_image")
    # About 8 % lower after 8 steps at the authors' learning rate (2e-4).
    assert sum(last[k] for k in reconstruction) < 0.96 * sum(first[k] for k in reconstruction)
    # The discriminators moved too.
    assert last["domain_d"] != first["domain_d"] and last["d_sequence_fake"] != first["d_sequence_fake"]


def test_without_labels_the_word_terms_are_off(data_dir, tmp_path):
    trainer = Trainer(_config(data_dir, tmp_path / "run", word_labels=False))
    assert not trainer.use_words
    assert "word_classifier" not in trainer.nets and "id_word_classifier" not in trainer.nets
    losses = trainer.train_step(default_collate([trainer.dataset[0], trainer.dataset[2]]))
    assert set(losses) == set(trainer.loss_names) and "audio_ce" not in losses
    with pytest.raises(InvalidInput, match="manifest.json is missing"):
        Trainer(_config(tmp_path / "nothing", tmp_path / "run2"))


def test_the_reconstruction_objectives_train_the_generator_alone(data_dir, tmp_path):
    # Not the authors' training: the demo recipe's L1 (+ temporal, + contrastive) terms only.
    batch = None
    for objectives, names in (("reconstruction", {"loss_g", "g_l1_audio", "g_l1_image", "g_temporal",
                                                  "embedding_l2"}),
                              ("audio_reconstruction", {"loss_g", "g_l1_audio", "g_temporal"})):
        trainer = Trainer(_config(data_dir, tmp_path / objectives, objectives=objectives))
        assert not trainer.use_words and trainer.opt_d is None
        assert set(trainer.nets) == {"id_encoder", "decoder", "mfcc_encoder", "lip_feature_encoder"}
        assert set(trainer.loss_names) == names
        batch = batch or default_collate([trainer.dataset[1], trainer.dataset[0]])
        lips = {k: v.clone() for k, v in trainer.nets["lip_feature_encoder"].state_dict().items()}
        first = trainer.train_step(batch)
        for _ in range(7):
            trainer.step += 1
            last = trainer.train_step(batch)
        assert set(first) == names and all(np.isfinite(v) for v in last.values())
        assert last["g_l1_audio"] < 0.96 * first["g_l1_audio"]
        lips_moved = any(not torch.equal(v, trainer.nets["lip_feature_encoder"].state_dict()[k])
                         for k, v in lips.items() if v.is_floating_point())
        assert lips_moved == (objectives == "reconstruction")
    # A run of these objectives checkpoints, resumes and loads as weights.
    train(data_dir, tmp_path / "run", max_steps=1, objectives="audio_reconstruction",
          **dict(TINY, image_size=128, batch_size=2, progress=False, device="cpu", sample_every=1))
    summary = train(data_dir, tmp_path / "run", max_steps=2, objectives="audio_reconstruction",
                    **dict(TINY, image_size=128, batch_size=2, progress=False, device="cpu", sample_every=0))
    assert summary["step"] == 2 and not summary["word_terms"]
    assert not (tmp_path / "run" / "sequence_discriminator.safetensors").exists()
    assert read_config(tmp_path / "run")["train"]["objectives"] == "audio_reconstruction"
    with pytest.raises(InvalidInput, match="objectives"):
        TrainConfig(data_dir="d", out_dir="o", objectives="gan")


# ---------------------------------------------------------------------------------------
# Checkpoints, resuming, the pipeline


def _weights(folder):
    return {name: load_file(str(folder / f"{name}.safetensors"))
            for name in ("id_encoder", "decoder", "lip_feature_encoder", "sequence_discriminator")}


def test_a_resumed_run_continues_as_an_uninterrupted_one(data_dir, tmp_path):
    split = tmp_path / "split"
    summary = train(data_dir, split, max_steps=2, **dict(TINY, image_size=128, batch_size=2, progress=False,
                                                        device="cpu", sample_every=2, log_every=1))
    assert summary["step"] == 2 and summary["stopped"] == "max_steps"
    names = {p.name for p in split.iterdir()}
    assert {"config.json", "train_state.pt", "log.csv", "id_encoder.safetensors", "word_classifier.safetensors",
            "id_word_classifier.safetensors", "domain_discriminator.safetensors"} <= names
    assert (split / "samples" / "step_00000002.png").is_file()
    at_two = _weights(split)
    summary = train(data_dir, split, max_steps=3, **dict(TINY, image_size=128, batch_size=2, progress=False,
                                                        device="cpu", sample_every=0, log_every=1))
    assert summary["step"] == 3
    whole = tmp_path / "whole"
    train(data_dir, whole, max_steps=3, **dict(TINY, image_size=128, batch_size=2, progress=False, device="cpu",
                                               sample_every=0, log_every=1))
    resumed, uninterrupted = _weights(split), _weights(whole)
    for net in resumed:
        for key, value in resumed[net].items():
            torch.testing.assert_close(value, uninterrupted[net][key], rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(at_two["decoder"][k], resumed["decoder"][k]) for k in at_two["decoder"])
    with open(split / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    config = read_config(split)
    assert config["step"] == 3 and config["labels"] == ["bye", "hello"] and config["word_terms"]
    assert [p["step"] for p in config["loss_history"]] == [1, 2, 3]
    # Other network sizes cannot continue this run.
    with pytest.raises(InvalidInput, match="other network sizes"):
        train(data_dir, split, max_steps=4, **dict(TINY, image_size=128, decoder_channels=8, progress=False,
                                                   device="cpu"))


def test_the_pipeline_loads_a_run_and_its_export(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    code = cli.main(["train", "davs", "--data", str(data_dir), "--out", str(run), "--max-steps", "1",
                     "--batch-size", "1", "--device", "cpu", "--feature-length", "16", "--id-channels", "4",
                     "--lip-channels", "4", "--mfcc-channels", "4", "--decoder-channels", "4",
                     "--disc-channels", "4", "-q"])
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "step": 1, "stopped": "max_steps", "word_terms": True, "out_dir": str(run)}
    saved = load_file(str(run / "decoder.safetensors"))

    from models.davs.export import export_weights
    exported = export_weights(run, tmp_path / "weights", name="tiny")
    assert sorted(p.name for p in exported.iterdir()) == [
        "SHA256SUMS", "config.json", "decoder.safetensors", "id_encoder.safetensors",
        "lip_feature_encoder.safetensors", "mfcc_encoder.safetensors"]
    config = json.loads((exported / "config.json").read_text())
    assert config["model"] == "davs" and config["step"] == 1 and config["labels"] == ["bye", "hello"]
    for folder in (run, exported):
        pipe = registry.load("davs", weights=folder, device="cpu")
        assert isinstance(pipe, DAVSPipeline)
        for key, value in pipe.decoder.state_dict().items():
            torch.testing.assert_close(value, saved[key])
    photo = read_image(EXAMPLES / "face.jpg")
    audio = np.random.default_rng(0).normal(0, 0.1, 12000).astype(np.float32)
    video = pipe(TalkingFaceInput(image=photo, audio=audio, sample_rate=16000), finetune_steps=1)
    assert video.frames.shape == (18, 256, 256, 3) and video.frames.dtype == np.uint8
