"""PG2 training: the prepared dataset, the losses of both stages, a few steps, resuming, export.

Runs on a tiny dataset of rendered figures (``models.pg2.demo``: 6 persons x 2 poses,
keypoints from the OpenPose JSON beside each image) with tiny networks at Market-1501's
128 x 64, one torch thread.
"""

import argparse
import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import default_collate

from models.common.pipeline import load_project_networks, read_project
from models.common.train import load_safetensors
from models.errors import InvalidInput
from models.perception.pose import COCO18, pg2_pose_map, read_openpose_json, to_openpose_json
from models.pg2 import commands
from models.pg2.dataset import PG2Pairs, load_manifest, mirror_keypoints, prepare, read_annotations, read_pairs
from models.pg2.demo import make_demo_images
from models.pg2.networks import ImageRefinementGenerator, PoseIntegrationGenerator
from models.pg2.pipeline import PG2Pipeline
from models.pg2.train import (
    TrainConfig,
    Trainer,
    discriminator_loss,
    export_weights,
    generator_adversarial_loss,
    pose_mask_loss,
    read_config,
    train,
)
from models.types import PoseTransferInput

TINY = {"channels_base": 4, "d_channels": 4, "middle_features_dim": 8}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny networks gain nothing from a second thread, and lose a lot on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pg2")
    make_demo_images(root / "images", persons=6, poses=2, seed=3, progress=False)
    prepare(root / "images", root / "data", keypoints="openpose", split=0.7, seed=0, progress=False)
    return root / "data"


@pytest.fixture(scope="module")
def g1_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("g1-run")
    train(data_dir, "g1", out, max_steps=2, batch_size=2, progress=False, sample_every=0, **TINY)
    return out


def _batch(data_dir, size=2):
    pairs = PG2Pairs(data_dir, "train", flip=False)
    return default_collate([pairs[i] for i in range(size)])


def _trainer(data_dir, stage, out, **options):
    config = TrainConfig(data_dir=str(data_dir), stage=stage, out_dir=str(out), batch_size=2, progress=False,
                         **{**TINY, **options})
    return Trainer(config)


# ---------------------------------------------------------------------------------------
# The dataset


def test_prepare_pairs_images_of_one_person_and_splits_persons(data_dir):
    manifest = load_manifest(data_dir)
    assert manifest["image_size"] == [128, 64] and manifest["pose_encoding"] == "authors"
    assert all(entry["status"] == "ok" and entry["keypoints"] == "openpose" for entry in manifest["images"].values())
    train_pairs, test_pairs = read_pairs(data_dir, "train"), read_pairs(data_dir, "test")
    assert train_pairs and test_pairs
    split_of = manifest["persons"]
    for split, pairs in (("train", train_pairs), ("test", test_pairs)):
        for a, b in pairs:
            assert a != b and a.split("_")[0] == b.split("_")[0]
            assert split_of[a.split("_")[0]] == split
    # every ordered pair of a person's two images, both ways
    assert len(train_pairs) == 2 * sum(split == "train" for split in split_of.values())


def test_prepare_skips_market_junk_and_reports_missing_keypoints(tmp_path, data_dir):
    images = tmp_path / "images"
    images.mkdir()
    source = next((data_dir.parent / "images").glob("0001_*.png"))
    for name in ("-1_c1s1_000000_00.png", "0000_c1s1_000000_00.png", "0007_c1s1_000000_00.png"):
        (images / name).write_bytes(source.read_bytes())
    manifest = prepare(images, tmp_path / "data", keypoints="openpose", progress=False)
    statuses = {name: entry["status"] for name, entry in manifest["images"].items()}
    assert statuses == {"-1_c1s1_000000_00.png": "skipped", "0000_c1s1_000000_00.png": "skipped",
                        "0007_c1s1_000000_00.png": "error"}


def test_prepare_fits_a_larger_photo_and_its_keypoints_into_the_frame(tmp_path, data_dir):
    source = next((data_dir.parent / "images").glob("0001_*.png"))
    keypoints = read_openpose_json((source.parent / f"{source.stem}_keypoints.json").read_bytes())
    images = tmp_path / "images"
    images.mkdir()
    Image.open(source).resize((128, 256), Image.NEAREST).save(images / source.name)
    doubled = keypoints * [2, 2, 1]
    (images / f"{source.stem}_keypoints.json").write_text(to_openpose_json(doubled))
    prepare(images, tmp_path / "data", keypoints="openpose", progress=False)
    assert Image.open(tmp_path / "data" / "images" / source.name).size == (64, 128)
    found = read_annotations(tmp_path / "data")[source.name]
    expected = read_annotations(data_dir)[source.name]
    assert np.abs(found - expected).max() <= 1 and ((found == -1) == (expected == -1)).all()


def test_mirror_keypoints_reflects_columns_and_swaps_sides():
    rc = np.full((18, 2), -1)
    rc[COCO18.index("right_wrist")] = (50, 10)
    rc[COCO18.index("nose")] = (20, 30)
    mirrored = mirror_keypoints(rc, 64)
    assert tuple(mirrored[COCO18.index("left_wrist")]) == (50, 53)
    assert tuple(mirrored[COCO18.index("nose")]) == (20, 33)
    assert tuple(mirrored[COCO18.index("right_wrist")]) == (-1, -1)
    assert np.array_equal(mirror_keypoints(mirrored, 64), rc)


def test_a_mirrored_pair_is_the_mirror_image_with_the_mirrored_pose(data_dir):
    plain, flipped = PG2Pairs(data_dir, flip=False), PG2Pairs(data_dir, seed=0, flip=True)
    index = next(i for i in range(len(flipped)) if np.random.default_rng([0, 0, i]).random() < 0.5)
    a, b = plain[index], flipped[index]
    assert torch.equal(b["condition"], a["condition"].flip(-1)) and torch.equal(b["target"], a["target"].flip(-1))
    keypoints = mirror_keypoints(read_annotations(data_dir)[a["target_name"]], 64)
    assert torch.equal(b["target_pose"], torch.from_numpy(pg2_pose_map(keypoints, (128, 64))).permute(2, 0, 1).float())
    assert set(b["target_mask"].unique().tolist()) <= {0.0, 1.0} and b["target_mask"].sum() > 0
    assert a["condition"].min() >= -1 and a["condition"].max() <= 1


# ---------------------------------------------------------------------------------------
# Losses


def test_g1_loss_is_eq1():
    generated = torch.tensor([[[[0.5, -0.5], [1.0, 0.0]]]]).repeat(1, 3, 1, 1)
    target = torch.zeros(1, 3, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    # ||(G1 - y) * (1 + M)||_1 over 12 values: per channel 0.5 * 2 + 0.5 + 1.0 * 2 + 0 = 3.5
    assert pose_mask_loss(generated, target, mask).item() == pytest.approx(3 * 3.5 / 12)
    # the authors' form: mean|G1 - y| + mean(|G1 - y| * M)
    diff = (generated - target).abs()
    assert pose_mask_loss(generated, target, mask).item() == pytest.approx((diff.mean() + (diff * mask).mean()).item())


def test_discriminator_and_adversarial_losses_are_the_authors():
    real, condition, fake = torch.tensor([[2.0], [-1.0]]), torch.tensor([[0.5], [1.5]]), torch.tensor([[-0.3], [0.7]])
    # sigmoid_cross_entropy_with_logits: label 1 -> softplus(-z), label 0 -> softplus(z)
    expected = 0.5 * F.softplus(-real).mean() + 0.25 * F.softplus(condition).mean() + 0.25 * F.softplus(fake).mean()
    assert discriminator_loss(real, condition, fake).item() == pytest.approx(expected.item())
    assert generator_adversarial_loss(fake).item() == pytest.approx(F.softplus(-fake).mean().item())


def test_stage2_losses_equal_a_direct_computation(data_dir, g1_run, tmp_path):
    trainer = _trainer(data_dir, "g2", tmp_path / "g2", g1_run=str(g1_run))
    batch = _batch(data_dir)
    x, y, pose, mask = batch["condition"], batch["target"], batch["target_pose"], batch["target_mask"]
    with torch.no_grad():
        stage1 = trainer.g1(x, pose)
        fake = stage1 + trainer.g2(x, stage1)
        # D sees the authors' triplet in one batch: target, condition, G1's image, G2's image
        logits = trainer.discriminator.train()(torch.cat([y, x, stage1, fake])).chunk(4)
    l1 = ((fake - y).abs() * (1 + mask)).mean()
    gan = F.softplus(-logits[3]).mean()
    d_loss = 0.5 * F.softplus(-logits[0]).mean() + 0.25 * F.softplus(logits[1]).mean() + 0.25 * F.softplus(
        logits[3]).mean()
    losses = trainer.train_step(batch)
    assert trainer.l1_weight == 10.0
    assert losses["l1_loss2"] == pytest.approx(l1.item(), rel=1e-5)
    assert losses["gan_loss2"] == pytest.approx(gan.item(), rel=1e-5)
    assert losses["g_loss2"] == pytest.approx((gan + 10.0 * l1).item(), rel=1e-5)
    assert losses["d_loss"] == pytest.approx(d_loss.item(), rel=1e-5)
    for parameter in trainer.g1.parameters():  # G1 is frozen in stage II
        assert parameter.grad is None and not parameter.requires_grad


# ---------------------------------------------------------------------------------------
# Steps, resuming, export


def test_a_few_g1_steps_lower_its_loss(data_dir, tmp_path):
    trainer = _trainer(data_dir, "g1", tmp_path / "g1", lr=1e-3)
    batch = _batch(data_dir, 4)
    first = trainer.train_step(batch)["g_loss1"]
    for _ in range(8):
        last = trainer.train_step(batch)["g_loss1"]
    assert last < 0.8 * first


def test_a_few_g2_steps_lower_its_l1_and_the_discriminator_loss(data_dir, g1_run, tmp_path):
    trainer = _trainer(data_dir, "g2", tmp_path / "g2", g1_run=str(g1_run), lr=1e-3)
    batch = _batch(data_dir, 4)
    first = trainer.train_step(batch)
    for _ in range(8):
        last = trainer.train_step(batch)
    assert last["l1_loss2"] < first["l1_loss2"]
    assert last["d_loss"] < first["d_loss"]


def test_resume_continues_from_the_saved_step(data_dir, tmp_path):
    options = dict(batch_size=2, progress=False, sample_every=0, lr=1e-3, **TINY)
    train(data_dir, "g1", tmp_path / "straight", max_steps=4, **options)
    first = train(data_dir, "g1", tmp_path / "resumed", max_steps=2, **options)
    second = train(data_dir, "g1", tmp_path / "resumed", max_steps=4, **options)
    assert (first["step"], second["step"]) == (2, 4)
    assert read_config(tmp_path / "resumed")["step"] == 4
    with open(tmp_path / "resumed" / "log.csv") as f:
        assert [row["step"] for row in csv.DictReader(f)] == ["2", "4"]  # one row per call: log_every is 10
    straight = PoseIntegrationGenerator(**read_config(tmp_path / "straight")["networks"]["g1"])
    resumed = PoseIntegrationGenerator(**read_config(tmp_path / "resumed")["networks"]["g1"])
    assert load_safetensors(straight, tmp_path / "straight" / "g1.safetensors") == 4
    assert load_safetensors(resumed, tmp_path / "resumed" / "g1.safetensors") == 4
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_a_g2_run_resumes_and_refuses_other_sizes(data_dir, g1_run, tmp_path):
    options = dict(g1_run=str(g1_run), batch_size=2, progress=False, sample_every=0, **TINY)
    assert train(data_dir, "g2", tmp_path / "g2", max_steps=1, **options)["step"] == 1
    assert train(data_dir, "g2", tmp_path / "g2", max_steps=2, **options)["step"] == 2
    with pytest.raises(InvalidInput, match="networks.g2.channels_base is 4, not 8"):
        train(data_dir, "g2", tmp_path / "g2", max_steps=3, **{**options, "channels_base": 8})
    with pytest.raises(InvalidInput, match="g1_run"):
        train(data_dir, "g2", tmp_path / "other", max_steps=1, batch_size=2)


def test_export_writes_a_folder_the_pipeline_loads(data_dir, g1_run, tmp_path):
    train(data_dir, "g2", tmp_path / "g2", g1_run=str(g1_run), max_steps=1, batch_size=2, progress=False,
          sample_every=0, **TINY)
    out = export_weights(g1_run, tmp_path / "g2", tmp_path / "weights", name="tiny")
    config = read_project(out)
    assert (config["model"], config["name"], config["pose_encoding"]) == ("pg2", "tiny", "authors")
    assert config["image_size"] == [128, 64] and config["variant"] == "market"
    networks = load_project_networks(out, {"g1": PoseIntegrationGenerator, "g2": ImageRefinementGenerator}, config)
    assert networks["g1"].config["channels_base"] == 4
    pipe = PG2Pipeline.from_project(out, device="cpu")
    photo = np.full((256, 128, 3), 120, np.uint8)
    pose = np.zeros((18, 3))
    pose[COCO18.index("neck")] = (64, 60, 1.0)
    pose[COCO18.index("nose")] = (64, 30, 1.0)
    assert pipe(PoseTransferInput(image=photo, pose=pose, pose_size=(256, 128))).shape == (128, 64, 3)


def test_export_refuses_a_g2_trained_on_another_g1(data_dir, tmp_path):
    options = dict(batch_size=2, progress=False, sample_every=0, **TINY)
    train(data_dir, "g1", tmp_path / "g1", max_steps=1, **options)
    train(data_dir, "g2", tmp_path / "g2", g1_run=str(tmp_path / "g1"), max_steps=1, **options)
    train(data_dir, "g1", tmp_path / "g1", max_steps=2, **options)  # G1 moves on
    with pytest.raises(InvalidInput, match="another G1"):
        export_weights(tmp_path / "g1", tmp_path / "g2", tmp_path / "weights")
    with pytest.raises(InvalidInput, match="not g1"):
        export_weights(tmp_path / "g2", tmp_path / "g2", tmp_path / "weights")


def test_train_command_runs_one_stage(data_dir, tmp_path):
    args = argparse.Namespace(data=str(data_dir), out=str(tmp_path / "run"), stage="g1", g1_run=None, max_steps=1,
                              time_budget=None, batch_size=2, lr=None, channels_base=4, middle_features_dim=8,
                              d_channels=4, l1_weight=None, device="cpu", seed=0, restart=False, no_flip=False,
                              quiet=True)
    summary = commands.train(args)
    assert (summary["stage"], summary["step"]) == ("g1", 1)
    assert read_config(tmp_path / "run")["train"]["lr"] == 2e-5  # the authors' rate when --lr is not given
