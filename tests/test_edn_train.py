"""Everybody Dance Now's target data, training stages and target export, on a rendered dancer.

Tiny networks on the real label sizes (256x512 global, 512x1024 local); a few steps each.
"""

import json

import numpy as np
import pytest
import torch

from models.common.pipeline import load_project_networks, read_project
from models.edn import dataset, demo, train
from models.edn.networks import NETWORKS, GlobalGenerator, MultiscaleDiscriminator
from models.errors import InvalidInput
from models.perception import pose as pose_lib
from models.perception.mp4 import Mp4Writer

TINY = {"ngf": 4, "n_downsample_global": 2, "n_blocks_global": 1, "ndf": 4, "n_layers_d": 2}
QUIET = {"progress": False, "log_every": 1, "sample_every": 0, "checkpoint_every": 1000}


def write_clip(path, frames=16, blank=(), seed=0, size=None):
    """A rendered dance as an MP4; the frames in ``blank`` show the empty room."""
    room, moves, out = demo.background(), demo.dance(seed), []
    for i in range(frames):
        frame = room if i in blank else demo.render_frame(moves, i / demo.FPS, room)[0]
        out.append(frame if size is None else np.ascontiguousarray(frame[::2, ::2]))
    with Mp4Writer(path, fps=demo.FPS) as writer:
        writer.write(np.stack(out))
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """16 frames, frames 6 and 7 without anybody, prepared for both stages."""
    root = tmp_path_factory.mktemp("edn")
    video = write_clip(root / "dance.mp4", blank=(6, 7))
    dataset.prepare_target(video, root / "data", sizes=("global", "local"))
    return root / "data"


def one_pair(data_dir):
    """Frames 0 and 1 only: a single training pair, so that the losses can fall within a few steps."""
    return dataset.read_manifest(data_dir)["usable"] - 2


# ---------------------------------------------------------------------------------------
# The rendered dancer and the prepared data


def test_renderer_keypoints_land_on_its_limbs():
    room, moves = demo.background(), demo.dance(3)
    for t in (0.0, 1.3, 4.1):
        frame, keypoints = demo.render_frame(moves, t, room)
        assert keypoints.shape == (18, 3) and (keypoints[:, 2] == 1).all()
        for x, y, _ in keypoints:
            # The figure covers every joint: the pixel is not the room's.
            assert np.abs(frame[int(y), int(x)].astype(int) - room[int(y), int(x)]).sum() > 30


def test_renderer_walks_towards_the_camera_and_back():
    moves = demo.dance(0)
    ankles = [max(demo.render_frame(moves, t)[1][[10, 13], 1]) for t in np.arange(0, 14, 0.5)]
    assert max(ankles) - min(ankles) > 30                    # ankle rows of a 360-row frame


def test_prepare_target_skips_frames_without_a_person(data_dir):
    manifest = dataset.read_manifest(data_dir)
    assert manifest["frames"] == 16 and manifest["skipped"] == [6, 7] and manifest["usable"] == 14
    assert np.load(data_dir / "frame_index.npy").tolist() == [0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13, 14, 15]
    keypoints = dataset.target_keypoints(data_dir)
    assert keypoints.shape == (14, 18, 3) and keypoints.dtype == np.float32
    boxes = np.load(data_dir / "face_boxes.npy")
    assert (boxes[:, 1] - boxes[:, 0] == 128).all() and (boxes[:, 3] - boxes[:, 2] == 128).all()


def test_prepared_labels_and_frames_line_up(data_dir):
    from PIL import Image

    keypoints = dataset.target_keypoints(data_dir)
    room = dataset.stage_frame(dataset.canvas_frame(demo.background()), dataset.STAGE_SIZES["global"])
    for i in (0, 9):
        label = np.array(Image.open(data_dir / "local" / "label" / f"{i:06d}.png"))
        assert np.array_equal(label, pose_lib.edn_label(pose_lib.edn_stick_figure(keypoints[i])))
        small = np.array(Image.open(data_dir / "global" / "label" / f"{i:06d}.png"))
        assert small.shape == (256, 512, 3) and np.array_equal(small, pose_lib.edn_global_stage_label(label))
        frame = np.array(Image.open(data_dir / "global" / "img" / f"{i:06d}.png"))
        assert frame.shape == (256, 512, 3)
        # The frame was moved as the keypoints were: at the shoulders and hips the figure
        # (its shirt, its trousers) covers the room.
        for joint in (2, 5, 8, 11):
            col, row = (keypoints[i, joint, :2] * (512 / 1920, 256 / 1080)).astype(int)
            assert np.abs(frame[row, col].astype(int) - room[row, col]).sum() > 40


def test_pairs_are_consecutive_frames_with_the_first_frames_face_box(data_dir):
    pairs = dataset.TargetPairs(data_dir, "global")
    # Usable frames 0..13 are video frames 0-5 and 8-15: no pair across the gap.
    assert pairs.pairs == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12]
    item = pairs[5]
    assert item["index"] == 6
    for key in ("label", "next_label", "image", "next_image"):
        assert item[key].shape == (3, 256, 512)
    assert 0 <= item["label"].min() and item["label"].max() <= 1
    assert -1 <= item["image"].min() and item["image"].max() <= 1 and item["image"].min() < -0.5
    box = np.load(data_dir / "face_boxes.npy")[6]
    assert item["face_box"].tolist() == [v // 2 for v in box]
    assert dataset.TargetPairs(data_dir, "local")[5]["face_box"].tolist() == box.tolist()
    assert len(dataset.TargetPairs(data_dir, "global", slice(0, 3))) == 2


# ---------------------------------------------------------------------------------------
# Losses and the step's structure


def test_lsgan_and_feature_matching_equal_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    real = [[torch.randn(2, 3, 5, 5, generator=g), torch.randn(2, 4, 3, 3, generator=g),
             torch.randn(2, 1, 2, 2, generator=g)] for _ in range(2)]
    fake = [[torch.randn_like(x) for x in scale] for scale in real]
    assert torch.isclose(train.lsgan_loss(fake, True),
                         ((fake[0][2] - 1) ** 2).mean() + ((fake[1][2] - 1) ** 2).mean())
    assert torch.isclose(train.lsgan_loss(fake, False), (fake[0][2] ** 2).mean() + (fake[1][2] ** 2).mean())
    assert torch.isclose(train.lsgan_loss(fake[0][2], True), ((fake[0][2] - 1) ** 2).mean())
    # pix2pixHD: 1/num_D * 4/(n_layers_D + 1) * lambda_feat * L1, every stage but the scores.
    n_layers, lam = 1, 10.0
    direct = sum(0.5 * 2.0 * lam * (f[j] - r[j]).abs().mean() for f, r in zip(fake, real) for j in range(2))
    assert torch.isclose(train.feature_matching_loss(fake, real, n_layers, lam), direct)


def test_vgg_loss_weights_the_five_slices():
    class Slices(torch.nn.Module):
        def forward(self, x):
            return [x * (i + 1) for i in range(5)]

    x, y = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    expected = sum(w * (i + 1) for i, w in enumerate(train.VGG_WEIGHTS))
    assert torch.isclose(train.vgg_loss(Slices(), x, y), torch.tensor(expected))


def test_temporal_discriminator_sees_labels_then_frames(data_dir, tmp_path):
    trainer = train.Trainer(train.TrainConfig(data_dir=str(data_dir), out_dir=str(tmp_path), **TINY, **QUIET))
    seen = []
    trainer.discriminator.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    batch = next(iter(trainer.epoch_loader(0)))
    trainer.train_step(batch)
    real, fake_detached, fake = seen
    out = trainer.last_outputs
    assert real.shape[1] == 12
    # discriminate_4: cat(s0, s1, i0, i1)
    assert torch.equal(real, torch.cat((batch["label"], batch["next_label"], batch["image"], batch["next_image"]), 1))
    assert torch.equal(fake, torch.cat((batch["label"], batch["next_label"], out["fake0"], out["fake1"]), 1))
    assert torch.equal(fake_detached, fake)


def test_first_frame_from_a_blank_frame_and_the_second_from_the_first(data_dir, tmp_path):
    trainer = train.Trainer(train.TrainConfig(data_dir=str(data_dir), out_dir=str(tmp_path), **TINY, **QUIET))
    inputs = []
    trainer.generator.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    batch = dataset.TargetPairs(data_dir)[0]
    label0, label1 = batch["label"][None], batch["next_label"][None]
    fake0, fake1 = trainer.generate_pair(label0, label1, None)
    assert torch.equal(inputs[0][:, 3:], torch.zeros_like(fake0)) and torch.equal(inputs[0][:, :3], label0)
    assert torch.equal(inputs[1][:, 3:], fake0) and torch.equal(inputs[1][:, :3], label1)
    # Not detached: frame t's losses reach the generator through frame t-1 as well.
    (grad,) = torch.autograd.grad(fake1.sum(), fake0)
    assert grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------
# Stages


def losses(run_dir, name):
    config = json.loads((run_dir / "config.json").read_text())
    return [point[name] for point in config["loss_history"]]


@pytest.fixture(scope="module")
def global_run(data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("edn") / "global"
    summary = train.train(data_dir, run, max_steps=6, holdout=one_pair(data_dir), lr=2e-3, use_l1=True,
                          **TINY, **QUIET)
    return run, summary


def test_global_stage_lowers_its_losses_and_resumes(global_run, data_dir):
    run, summary = global_run
    assert summary["step"] == 6 and summary["stage"] == "global"
    l1 = losses(run, "g_l1")
    assert len(l1) == 6 and l1[-1] < l1[0]
    assert losses(run, "loss_d")[-1] < losses(run, "loss_d")[0]
    resumed = train.train(data_dir, run, max_steps=8, holdout=one_pair(data_dir), lr=2e-3, use_l1=True,
                          **TINY, **QUIET)
    assert resumed["step"] == 8
    rows = (run / "log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 9))
    config = train.read_config(run)
    assert config["generator_class"] == "global" and config["label_size"] == [256, 512]
    assert config["discriminator"]["num_D"] == 2 and config["discriminator"]["input_nc"] == 12


def test_a_run_of_other_sizes_does_not_resume(global_run, data_dir):
    run, _ = global_run
    with pytest.raises(InvalidInput, match="other network sizes"):
        train.train(data_dir, run, max_steps=9, **{**TINY, "ngf": 8}, **QUIET)


def test_without_a_vgg_file_the_vgg_term_is_off_and_said_so(global_run, caplog):
    run, summary = global_run
    assert summary["vgg_loss"].startswith("off: no vgg_path")
    assert train.read_config(run)["vgg_loss"].startswith("off")
    assert "g_vgg" not in summary["losses"] and "g_vgg" not in (run / "log.csv").read_text()


def test_with_a_vgg_file_the_vgg_term_is_on(data_dir, tmp_path):
    from models.edn.networks import Vgg19Features

    state = {k: v for k, v in Vgg19Features().state_dict().items()}
    torch.save(state, tmp_path / "vgg19.pth")
    trainer = train.Trainer(train.TrainConfig(data_dir=str(data_dir), out_dir=str(tmp_path / "run"),
                                              vgg_path=str(tmp_path / "vgg19.pth"), **TINY, **QUIET))
    assert trainer.vgg is not None and "g_vgg" in trainer.loss_names
    assert trainer.summary_extras()["vgg_loss"] == "on"


def test_local_stage_starts_from_the_global_run(global_run, data_dir, tmp_path):
    run, _ = global_run
    local = tmp_path / "local"
    sizes = {**TINY, "ngf": 2}                               # the inner generator: 2 * 2 = the global's 4
    summary = train.train(data_dir, local, stage="local", load_pretrain=str(run), max_steps=3, lr=2e-3,
                          use_l1=True, holdout=one_pair(data_dir), num_d=3, **sizes, **QUIET)
    assert summary["step"] == 3
    config = train.read_config(local)
    assert config["generator_class"] == "local" and config["label_size"] == [512, 1024]
    report = config["pretrained"]
    assert report["generator"]["not_initialised"] == ["model1_1", "model1_2"]
    assert report["discriminator"]["not_initialised"] == [f"scale2_layer{j}" for j in range(4)]
    assert losses(local, "g_l1")[-1] < losses(local, "g_l1")[0]


def test_local_stage_refuses_a_generator_it_cannot_start_from(global_run, data_dir, tmp_path):
    run, _ = global_run
    with pytest.raises(InvalidInput, match="twice as wide"):
        train.train(data_dir, tmp_path / "local", stage="local", load_pretrain=str(run), max_steps=1,
                    **{**TINY, "ngf": 4}, **QUIET)


def test_local_stage_trains_the_enhancer_alone_first(global_run, data_dir, tmp_path):
    run, _ = global_run
    trainer = train.Trainer(train.TrainConfig(data_dir=str(data_dir), out_dir=str(tmp_path), stage="local",
                                              load_pretrain=str(run), niter_fix_global=1, max_steps=1,
                                              **{**TINY, "ngf": 2}, **QUIET))
    trainer.run()
    global_state = GlobalGenerator(**train.read_config(run)["generator"]).state_dict()
    from models.common.train import load_safetensors

    saved = GlobalGenerator(**train.read_config(run)["generator"])
    load_safetensors(saved, run / "generator.safetensors")
    inner = {k: v for k, v in trainer.generator.state_dict().items() if k.startswith("model.")}
    assert inner and all(torch.equal(v, saved.state_dict()[k]) for k, v in inner.items())
    assert set(inner) < set(global_state)


def test_face_stage_freezes_the_generator_and_trains_the_face(global_run, data_dir, tmp_path):
    run, _ = global_run
    face = tmp_path / "face"
    summary = train.train(data_dir, face, stage="face", load_pretrain=str(run), max_steps=4, lr=2e-3,
                          niter_fix_main=0, face_ngf=4, face_ndf=4, holdout=one_pair(data_dir), **TINY, **QUIET)
    assert summary["step"] == 4
    config = train.read_config(face)
    assert config["face_class"] == "face" and config["face"]["ngf"] == 4
    for name in ("g_gan_face", "d_real_face", "d_fake_face"):
        assert name in summary["losses"]
    for name in ("g_gan_face", "d_real_face"):
        assert losses(face, name)[-1] < losses(face, name)[0]
    before, after = GlobalGenerator(**config["generator"]), GlobalGenerator(**config["generator"])
    from models.common.train import load_safetensors

    load_safetensors(before, run / "generator.safetensors")
    load_safetensors(after, face / "generator.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))


def test_face_stage_trains_the_face_discriminator_alone_first(global_run, data_dir, tmp_path):
    run, _ = global_run
    trainer = train.Trainer(train.TrainConfig(data_dir=str(data_dir), out_dir=str(tmp_path), stage="face",
                                              load_pretrain=str(run), max_steps=1, face_ngf=4, face_ndf=4,
                                              **TINY, **QUIET))
    trainer.run()
    saved = MultiscaleDiscriminator(**train.read_config(run)["discriminator"])
    from models.common.train import load_safetensors

    load_safetensors(saved, run / "discriminator.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(),
                                                 trainer.discriminator.state_dict().values()))


def test_export_target_writes_what_the_pipeline_reads(global_run, data_dir, tmp_path):
    run, _ = global_run
    folder = train.export_target(run, tmp_path / "target", name="tiny")
    config = read_project(folder)
    assert config["model"] == "edn" and config["name"] == "tiny"
    assert config["generator_class"] == "global" and config["label_size"] == [256, 512]
    assert "face_class" not in config
    networks = load_project_networks(folder, {"generator": NETWORKS["global"]}, config)
    assert networks["generator"].config == train.read_config(run)["generator"]
    with np.load(folder / "target_poses.npz") as arrays:
        assert arrays["keypoints"].shape == (14, 18, 3) and arrays["keypoints"].dtype == np.float32
    half = train.export_target(run, tmp_path / "half", half=True)
    loaded = load_project_networks(half, {"generator": NETWORKS["global"]}, read_project(half))["generator"]
    for a, b in zip(loaded.parameters(), networks["generator"].parameters()):
        assert a.dtype == torch.float32 and torch.allclose(a, b, atol=1e-3, rtol=1e-3)


# ---------------------------------------------------------------------------------------
# A target from a video in one call


class Cancel(Exception):
    pass


def test_train_target_reports_progress_cancels_and_resumes(tmp_path):
    video = write_clip(tmp_path / "me.mp4", frames=50, size="half")
    calls = []

    def cancel_in_training(done, total):
        calls.append((done, total))
        if done > 100:                                   # the first report after a training step
            raise Cancel

    work, out = tmp_path / "work", tmp_path / "target"
    options = {"work_dir": work, "max_steps": 2, "face": True, "device": "cpu", **TINY, "face_ngf": 4,
               "face_ndf": 4}
    with pytest.raises(Cancel):
        train.train_target(video, out, progress=cancel_in_training, **options)
    assert calls[0][1] == 1000 and calls == sorted(calls)
    assert not out.exists()
    assert train.read_config(work / "global")["step"] == 1          # a checkpoint at the last finished step

    calls.clear()
    folder = train.train_target(video, out, progress=lambda d, t: calls.append((d, t)), **options)
    assert calls[-1] == (1000, 1000)
    assert train.read_config(work / "global")["step"] == 2 and train.read_config(work / "face")["step"] == 2
    config = read_project(folder)
    assert config["model"] == "edn" and config["generator_class"] == "global"
    assert config["face_class"] == "face" and config["label_size"] == [256, 512]
    networks = load_project_networks(folder, {"generator": NETWORKS["global"], "face": NETWORKS["face"]}, config)
    assert set(networks) == {"generator", "face"}
    with np.load(folder / "target_poses.npz") as arrays:
        assert arrays["keypoints"].shape == (50, 18, 3)


def test_train_target_removes_its_own_work_folder(tmp_path):
    video = write_clip(tmp_path / "me.mp4", frames=8, size="half")
    folder = train.train_target(video, tmp_path / "target", max_steps=1, device="cpu", **TINY)
    assert read_project(folder)["generator_class"] == "global" and "face_class" not in read_project(folder)
    assert not (tmp_path / "target.work").exists()
