"""Everybody Dance Now's demo build (a rendered dancer) and its part of the command line."""

import argparse
import json

import numpy as np
import pytest

from models.common.pipeline import load_project_networks, read_project
from models.edn import commands, demo
from models.edn.networks import NETWORKS
from models.errors import TalkingFaceError

TINY = {"ngf": 4, "n_downsample_global": 2, "n_blocks_global": 1, "ndf": 4}


def test_build_demo_exports_a_scored_target(tmp_path):
    report = demo.build_demo(tmp_path / "target", work_dir=tmp_path / "work", train_seconds=0, seconds=1.0,
                             heldout_seconds=0.4, progress=False, **TINY)
    assert report["steps"] == 2 and report["vgg_loss"].startswith("off")
    assert report["frames"] == {"target": 25, "heldout": 10}
    assert report["heldout"]["frames"] == 10 and report["training_frames"]["frames"] == 10
    for scores in (report["heldout"], report["training_frames"], report["mean_frame_baseline"]):
        assert 0 < scores["psnr"] < 60 and -1 <= scores["ssim"] <= 1
    # MediaPipe finds the drawn joints within a few pixels of a 360x640 frame.
    assert report["keypoints"]["source"] == "mediapipe" and report["keypoints"]["median_error_px"] < 10
    folder = tmp_path / "target"
    assert json.loads((folder / "REPORT.json").read_text()) == report
    config = read_project(folder)
    assert config["generator_class"] == "global" and config["label_size"] == [256, 512]
    load_project_networks(folder, {"generator": NETWORKS["global"]}, config)
    from PIL import Image

    assert Image.open(folder / "sample.png").size == (3 * 512, 256)


def test_the_dance_video_holds_the_rendered_frames(tmp_path):
    from models.perception.video import read_video

    keypoints = demo.write_dance(tmp_path / "dance.mp4", 0.4, seed=1)
    frames = np.concatenate(list(read_video(tmp_path / "dance.mp4")))
    assert frames.shape == (10, *demo.FRAME_SIZE, 3) and keypoints.shape == (10, 18, 3)
    first = next(demo.render_dance(0.04, seed=1))[0]
    assert np.abs(frames[0].astype(int) - first).mean() < 3            # H.264 at crf 18


# ---------------------------------------------------------------------------------------
# Command line


def namespace(**values):
    return argparse.Namespace(**values)


def test_commands_declare_prepare_train_and_build_demo():
    assert {"prepare", "train", "build-demo"} <= set(commands.COMMANDS)
    flags = {arg.name for arg in commands.COMMANDS["train"].arguments}
    assert {"--stage", "--video", "--pretrain", "--export", "--ngf", "--num-d", "--vgg"} <= flags


def test_prepare_takes_one_video_and_refuses_a_folder_of_several(tmp_path):
    (tmp_path / "two").mkdir()
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / "two" / name).write_bytes(b"")
    with pytest.raises(TalkingFaceError, match="one video"):
        commands.prepare(namespace(videos=str(tmp_path / "two"), out=str(tmp_path / "data"), stages=["global"],
                                   max_frames=None, quiet=True))
    (tmp_path / "one").mkdir()
    demo.write_dance(tmp_path / "one" / "me.mp4", 0.2)
    manifest = commands.prepare(namespace(videos=str(tmp_path / "one"), out=str(tmp_path / "data"),
                                          stages=["global"], max_frames=3, quiet=True))
    assert manifest["usable"] == 3 and manifest["videos"]["me.mp4"]["status"] == "ok"


def test_train_command_prepares_the_video_trains_and_exports(tmp_path):
    demo.write_dance(tmp_path / "me.mp4", 0.2)
    args = namespace(stage="global", video=str(tmp_path / "me.mp4"), data=str(tmp_path / "data"),
                     out=str(tmp_path / "run"), pretrain=None, export=str(tmp_path / "target"), max_steps=1,
                     time_budget=None, batch_size=None, lr=None, vgg=None, use_l1=False, niter_fix_global=0,
                     niter_fix_main=None, face_type="face", device="cpu", restart=False, seed=0, quiet=True,
                     n_downsample_global=2, n_blocks_global=1, ngf=4, ndf=4, num_d=None)
    result = commands.train(args)
    assert result["step"] == 1 and result["stage"] == "global" and result["vgg_loss"].startswith("off")
    assert read_project(result["target"])["generator_class"] == "global"
    with pytest.raises(TalkingFaceError, match="--pretrain"):
        commands.train(namespace(**{**vars(args), "stage": "face"}))
