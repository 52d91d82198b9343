"""Everybody Dance Now inference end to end: a narrow seeded target, a source video of a
person (scikit-image's astronaut photo, held still), the pipeline, the CLI and the REST route."""

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from models import MotionTransferInput, registry
from models.common.pipeline import save_project
from models.edn import pipeline as edn_pipeline
from models.edn.networks import GlobalGenerator, synthesize_frame
from models.errors import InvalidInput
from models.perception import pose as pose_lib
from service import media
from service.jobs.worker import Worker
from tests.test_api import make_settings, serving

FRAMES = 6


def canvas_pose(x=960.0, y=540.0, height=700.0):
    """An upright COCO-18 pose on EDN's canvas, head at the top, ankles ``height`` below it."""
    keypoints = np.zeros((18, 3))
    rows = {0: 0.0, 1: 0.15, 2: 0.15, 5: 0.15, 3: 0.35, 6: 0.35, 4: 0.5, 7: 0.5, 8: 0.5, 11: 0.5,
            9: 0.75, 12: 0.75, 10: 1.0, 13: 1.0, 14: -0.02, 15: -0.02, 16: 0.0, 17: 0.0}
    cols = {0: 0, 1: 0, 2: -60, 5: 60, 3: -80, 6: 80, 4: -90, 7: 90, 8: -40, 11: 40, 9: -45, 12: 45,
            10: -50, 13: 50, 14: -15, 15: 15, 16: -30, 17: 30}
    for k in range(18):
        keypoints[k] = (x + cols[k] * height / 700.0, y - height / 2 + rows[k] * height, 0.9)
    return keypoints


@pytest.fixture(scope="module")
def target_dir(tmp_path_factory):
    torch.manual_seed(0)
    generator = GlobalGenerator(ngf=4, n_downsample_global=2, n_blocks_global=1)
    poses = np.stack([canvas_pose(x=900 + 10 * i, y=500 + 5 * i) for i in range(8)]).astype(np.float32)
    return save_project(tmp_path_factory.mktemp("edn"), "edn", {"generator": generator}, name="seeded target",
                        arrays={"target_poses": {"keypoints": poses}},
                        extra={"generator_class": "global", "label_size": [256, 512]})


@pytest.fixture(scope="module")
def source_video(tmp_path_factory):
    from skimage import data

    path = tmp_path_factory.mktemp("source") / "dance.mp4"
    frame = data.astronaut()
    t = np.arange(int(FRAMES / 25 * 16000)) / 16000
    media.write_mp4(path, np.stack([frame] * FRAMES), fps=25, audio=(0.2 * np.sin(2 * np.pi * 220 * t)).astype(
        np.float32), sample_rate=16000)
    return path


@pytest.fixture(scope="module")
def pipe(target_dir):
    return registry.load("edn", weights=target_dir, device="cpu")


def test_frames_follow_the_source_one_for_one(pipe, source_video):
    frames = media.read_video(source_video)
    calls = []
    chunks = list(pipe.frame_chunks(MotionTransferInput(video=frames, audio=None),
                                    progress=lambda done, total: calls.append((done, total))))
    out = np.concatenate(chunks)
    assert out.shape == (FRAMES, 256, 512, 3) and out.dtype == np.uint8
    assert calls[-1] == (2 * FRAMES, 2 * FRAMES)                 # detection, then drawing
    assert pipe.last_normalisation == "median height and ankle row"   # no ankles in the photo


def test_drawing_chains_each_frame_on_the_previous(pipe):
    """Step 4 as the authors' inference: zeros first, then each output feeds the next."""
    target = pipe.target()
    poses = np.stack([canvas_pose(x=900 + 40 * i) for i in range(3)])
    drawn = np.concatenate(list(pipe.draw(poses, target)))
    previous = None
    with torch.no_grad():
        for i, posepts in enumerate(poses):
            label = edn_pipeline.label_tensor(posepts, target.label_size)
            previous = torch.zeros(1, 3, *label.shape[2:]) if previous is None else previous
            previous = synthesize_frame(target.generator, label, previous)
            expected = previous[0].clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0).numpy()
            np.testing.assert_array_equal(drawn[i], expected)
    # Without the chaining the frames would differ: the previous frame matters.
    with torch.no_grad():
        label = edn_pipeline.label_tensor(poses[2], target.label_size)
        alone = synthesize_frame(target.generator, label, torch.zeros(1, 3, *label.shape[2:]))
    assert not torch.equal(alone, previous)


def test_labels_are_the_authors_stick_figures(pipe):
    posepts = canvas_pose()
    label = edn_pipeline.label_tensor(posepts, (256, 512))
    expected = pose_lib.edn_global_stage_label(pose_lib.edn_label(pose_lib.edn_stick_figure(posepts)))
    np.testing.assert_array_equal((label[0].permute(1, 2, 0) * 255).round().byte().numpy(), expected)


def test_missing_people_and_normalisation():
    a, b = canvas_pose(x=800), canvas_pose(x=1000)
    filled = edn_pipeline.fill_missing([None, a, None, b, None])
    np.testing.assert_array_equal(filled, np.stack([a, a, a, b, b]))
    with pytest.raises(InvalidInput, match="no person"):
        edn_pipeline.fill_missing([None, None])
    # The fallback puts the source's median ankle row and body height on the target's.
    source = np.stack([canvas_pose(x=500, y=400, height=300)] * 4)
    target = np.stack([canvas_pose(x=1200, y=600, height=600)] * 4)
    moved = edn_pipeline.simple_normalisation(source, target)
    np.testing.assert_allclose(moved[0, :, :2], target[0, :, :2], atol=1e-6)


def test_cli_and_route(pipe, target_dir, source_video, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "out.mp4"
    run = subprocess.run([sys.executable, "-m", "service.cli", "generate", "--model", "edn", "--video",
                          str(source_video), "--weights", str(target_dir), "-o", str(out), "--device", "cpu", "-q"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert sum(len(c) for c in media.read_video(out)) == FRAMES
    assert media.read_video_audio(out) is not None

    settings = make_settings(tmp_path_factory.mktemp("motion-api"), target_dir)
    with serving(settings, Worker(settings, models=["edn"])) as client:
        r = client.post("/v1/motion-transfer", files={"video": ("dance.mp4", source_video.read_bytes())},
                        data={"wait": "120"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "video/mp4"
        result = tmp_path_factory.mktemp("result") / "r.mp4"
        result.write_bytes(r.content)
        assert sum(len(c) for c in media.read_video(result)) == FRAMES
        # A target that is no trained target, and a photo as the source video: 4xx, nothing queued.
        r = client.post("/v1/motion-transfer", files={"video": ("dance.mp4", source_video.read_bytes())},
                        data={"target": "../../etc"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
        from tests.test_api import FACE
        r = client.post("/v1/motion-transfer", files={"video": ("face.jpg", FACE)})
        assert r.status_code == 400, r.text


def test_a_target_trained_through_the_api_then_used(target_dir, source_video, tmp_path_factory):
    """POST /v1/motion-targets trains a target from a video (a few seconds' budget); its job id
    then names it in POST /v1/motion-transfer; DELETE removes it."""
    settings = make_settings(tmp_path_factory.mktemp("targets-api"), target_dir)
    with serving(settings, Worker(settings, models=["edn"])) as client:
        r = client.post("/v1/motion-targets", files={"video": ("me.mp4", source_video.read_bytes())},
                        data={"minutes": "0.05"})
        assert r.status_code == 202, r.text
        job = r.json()
        for _ in range(600):
            job = client.get(f"/v1/jobs/{job['id']}").json()
            if job["status"] in ("succeeded", "failed", "canceled"):
                break
            time.sleep(0.2)
        assert job["status"] == "succeeded", job
        summary = client.get(f"/v1/jobs/{job['id']}/result")
        assert summary.headers["content-type"] == "application/json"
        assert summary.json()["object"] == "motion_target"
        folder = settings.data_dir / "results" / f"{job['id']}.target"
        assert (folder / "config.json").is_file()

        r = client.post("/v1/motion-transfer", files={"video": ("dance.mp4", source_video.read_bytes())},
                        data={"target": job["id"], "wait": "120"})
        assert r.status_code == 200, r.text
        moved = client.get(r.headers["Location"]).json()
        assert moved["options"]["target"] == job["id"]

        # A target is a finished motion-target job: another job's id is not one.
        r = client.post("/v1/motion-transfer", files={"video": ("dance.mp4", source_video.read_bytes())},
                        data={"target": moved["id"]})
        assert r.status_code == 404, r.text
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 200
        assert not folder.exists()
        r = client.post("/v1/motion-transfer", files={"video": ("dance.mp4", source_video.read_bytes())},
                        data={"target": job["id"]})
        assert r.status_code == 410 and r.json()["error"]["code"] == "gone", r.text


def test_the_demo_target_answers_out_of_the_box(tmp_path, monkeypatch):
    """With no target of the user's, POST /v1/motion-transfer answers with the shipped demo target:
    one frame a source frame, at the demo generator's size."""
    from tests.conftest import EXAMPLES

    dance = EXAMPLES / "dance.mp4"
    monkeypatch.setenv("TALKINGFACE_WEIGHTS_DIR", str(tmp_path / "no-weights"))    # none of the authors'
    settings = make_settings(tmp_path, None)
    with serving(settings, Worker(settings, models=["edn"])) as client:
        r = client.post("/v1/motion-transfer", files={"video": ("dance.mp4", dance.read_bytes())},
                        data={"wait": "300"})
        assert r.status_code == 200, r.text
        result = tmp_path / "out.mp4"
        result.write_bytes(r.content)
        chunks = list(media.read_video(result))
        assert sum(len(c) for c in chunks) == sum(len(c) for c in media.read_video(dance))
        assert chunks[0].shape[1:3] == (256, 512)
