"""DAVS through the command line and the service: audio or a driving video in, MP4 out.

Reduced-width networks with seeded weights, saved in the project's weights format, stand
in for the authors' checkpoint; clips are half a second so that a job takes seconds.
"""


import numpy as np
import pytest
import torch

from models import InvalidInput
from models.common.pipeline import save_project
from models.davs.pipeline import DAVSPipeline
from service import media
from service.cli import main
from service.jobs.worker import Worker
from tests.conftest import EXAMPLES
from tests.test_api import FACE, assert_error, make_settings, serving, upload, wait_for
from tests.test_cli import write_wav
from tests.test_davs_pipeline import small_networks

FRAMES = 12                      # frames of the driving video (0.48 s)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    return save_project(tmp_path_factory.mktemp("davs") / "weights", "davs", small_networks(), name="tiny seeded")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A talking video of the example photo (with the example voice), the same without a
    sound track, one with no face, and a voice clip."""
    folder = tmp_path_factory.mktemp("clips")
    photo = media.read_image(EXAMPLES / "face.jpg")
    speech = media.read_audio(EXAMPLES / "speech.wav", sample_rate=16000)
    frames = np.repeat(photo[None], FRAMES, axis=0)
    media.write_mp4(folder / "face.mp4", frames, 25, speech[:FRAMES * 640], 16000)
    media.write_mp4(folder / "silent.mp4", frames, 25, None, 16000)
    media.write_mp4(folder / "grey.mp4", np.full((FRAMES, 120, 160, 3), 127, np.uint8), 25,
                    speech[:FRAMES * 640], 16000)
    return {"face": folder / "face.mp4", "silent": folder / "silent.mp4", "grey": folder / "grey.mp4",
            "voice": write_wav(folder / "voice.wav", speech[:int(0.6 * 16000)])}


def streams(path):
    info = media.probe(path)
    return {s["codec_type"]: s for s in info["streams"]}, info


def generate(capsys, *argv):
    code = main(["generate", *[str(a) for a in argv], "-q"])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- video input

def test_videos_are_read_at_25_fps_in_bounded_chunks(tmp_path, monkeypatch):
    # One second at 30 fps, each frame its own grey level: 25 frames come back, in order.
    levels = np.linspace(0, 240, 30).astype(np.uint8)
    media.write_mp4(tmp_path / "30fps.mp4", np.repeat(levels, 48 * 64 * 3).reshape(30, 48, 64, 3), 30, None, 16000)
    video = media.read_video(tmp_path / "30fps.mp4")
    assert video.expected_frames == 25
    frames = np.concatenate(list(video))
    assert frames.shape == (25, 48, 64, 3) and frames.dtype == np.uint8
    assert np.all(np.diff(frames.mean(axis=(1, 2, 3))) > 0)
    monkeypatch.setattr(media, "VIDEO_CHUNK_BYTES", 10 * 48 * 64 * 3)       # large frames: fewer a chunk
    assert [len(c) for c in media.read_video(tmp_path / "30fps.mp4")] == [10, 10, 5]
    with pytest.raises(InvalidInput, match="at most 1,000 pixels"):
        media.read_video(tmp_path / "30fps.mp4", max_pixels=1000)
    with pytest.raises(InvalidInput, match="longer than 0.5 s"):
        media.read_video(tmp_path / "30fps.mp4", max_seconds=0.5)
    with pytest.raises(InvalidInput, match="not a video"):
        media.read_video(EXAMPLES / "face.jpg")


# --------------------------------------------------------------------------- command line

def test_generate_davs_from_audio(tiny_weights, clips, tmp_path, capsys, ffprobe):
    out = tmp_path / "audio.mp4"
    code, stdout, err = generate(capsys, "--model", "davs", "--image", EXAMPLES / "face.jpg", "--audio",
                                 clips["voice"], "-o", out, "--weights", tiny_weights, "--device", "cpu",
                                 "--finetune-steps", "0")
    assert code == 0, err
    assert "weights: tiny seeded" in stdout and "15 frames" in stdout
    found, info = streams(out)
    assert (found["video"]["width"], found["video"]["height"]) == (256, 256)
    assert found["video"]["r_frame_rate"] == "25/1" and found["audio"]["codec_name"] == "aac"
    assert abs(float(found["video"]["duration"]) - 0.6) <= 1 / 25 + 1e-6


def test_generate_davs_from_a_video_keeps_every_frame_and_its_sound(tiny_weights, clips, tmp_path, capsys, ffprobe):
    out = tmp_path / "video.mp4"
    code, stdout, err = generate(capsys, "--model", "davs", "--image", EXAMPLES / "face.jpg", "--video",
                                 clips["face"], "-o", out, "--weights", tiny_weights, "--device", "cpu",
                                 "--finetune-steps", "1")
    assert code == 0, err
    found, _ = streams(out)
    assert int(found["video"]["nb_frames"]) == FRAMES
    assert found["audio"]["codec_name"] == "aac"            # the video's own sound
    code, _, err = generate(capsys, "--model", "davs", "--image", EXAMPLES / "face.jpg", "--video",
                            clips["silent"], "-o", tmp_path / "silent.mp4", "--weights", tiny_weights,
                            "--finetune-steps", "0", "--paste-back")
    assert code == 0, err
    found, _ = streams(tmp_path / "silent.mp4")
    assert set(found) == {"video"} and (found["video"]["width"], found["video"]["height"]) == (512, 600)


def test_generate_refuses_what_a_model_does_not_take(clips, tmp_path, capsys):
    code, _, err = generate(capsys, "--model", "atvgnet", "--image", EXAMPLES / "face.jpg", "--audio",
                            clips["voice"], "-o", tmp_path / "x.mp4", "--finetune-steps", "3")
    assert code == 2 and "--finetune-steps applies to davs" in err
    code, _, err = generate(capsys, "--model", "davs", "--image", EXAMPLES / "face.jpg", "--video",
                            clips["voice"], "-o", tmp_path / "x.mp4")
    assert code == 2 and "error:" in err and "no video stream" in err
    with pytest.raises(SystemExit):                           # --audio and --video exclude each other
        main(["generate", "--image", str(EXAMPLES / "face.jpg"), "--audio", "a", "--video", "v", "-o", "x"])


def test_atvgnet_takes_a_video_as_its_voice(seeded_project_dir, clips, tmp_path, capsys, ffprobe):
    out = tmp_path / "atvgnet.mp4"
    code, _, err = generate(capsys, "--model", "atvgnet", "--image", EXAMPLES / "face.jpg", "--video",
                            clips["face"], "-o", out, "--weights", seeded_project_dir)
    assert code == 0, err
    found, _ = streams(out)
    assert (found["video"]["width"], found["video"]["height"]) == (128, 128)
    assert abs(float(found["video"]["duration"]) - FRAMES / 25) <= 2 / 25


# --------------------------------------------------------------------------- service

@pytest.fixture(scope="module")
def served(tmp_path_factory, seeded_project_dir, tiny_weights):
    """(client, settings) of an app with one worker thread serving atvgnet and tiny davs."""
    settings = make_settings(tmp_path_factory.mktemp("api"), seeded_project_dir)
    worker = Worker(settings)
    worker.pipelines["davs"] = DAVSPipeline.from_project(tiny_weights, device="cpu", chunk_frames=4)
    with serving(settings, worker) as client:
        yield client, settings


def test_one_call_with_a_video_returns_an_mp4_made_in_video_mode(served, clips, tmp_path, ffprobe):
    client, _ = served
    face_video = ("v.mp4", clips["face"].read_bytes())
    r = client.post("/v1/talking-face", files={"image": ("face.jpg", FACE), "video": face_video},
                    data={"model": "davs", "finetune_steps": "0", "wait": "60"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4"
    (tmp_path / "out.mp4").write_bytes(r.content)
    found, _ = streams(tmp_path / "out.mp4")
    assert (found["video"]["width"], found["video"]["height"]) == (256, 256)
    assert int(found["video"]["nb_frames"]) == FRAMES and found["audio"]["codec_name"] == "aac"
    job = client.get(f"/v1/jobs/{r.headers['x-job-id']}").json()
    assert job["model"] == "davs" and "video" in job["inputs"] and "audio" not in job["inputs"]
    assert job["info"]["driven_by"] == "video" and job["options"]["finetune_steps"] == 0


def test_jobs_api_runs_davs_on_a_video_and_on_audio(served, clips):
    client, _ = served
    image = upload(client, FACE, "f.jpg")["id"]
    video = upload(client, clips["face"].read_bytes(), "v.mp4")
    voice = upload(client, clips["voice"].read_bytes(), "a.wav")["id"]
    assert video["kind"] == "video"
    by_video = client.post("/v1/jobs", json={"model": "davs", "inputs": {"image": image, "video": video["id"]},
                                             "options": {"finetune_steps": 1}})
    by_audio = client.post("/v1/jobs", json={"model": "davs", "inputs": {"image": image, "audio": voice},
                                             "options": {"finetune_steps": 0}})
    assert by_video.status_code == by_audio.status_code == 202, by_video.text + by_audio.text
    done = wait_for(client, by_video.json()["id"])
    assert done["status"] == "succeeded" and done["frames"] == FRAMES and done["info"]["driven_by"] == "video"
    done = wait_for(client, by_audio.json()["id"])
    assert done["status"] == "succeeded" and done["frames"] == 15 and done["info"]["driven_by"] == "audio"


def test_davs_bad_inputs_get_clear_client_errors(served, clips):
    client, settings = served
    grey = client.post("/v1/talking-face", files={"image": ("f.jpg", FACE),
                                                  "video": ("g.mp4", clips["grey"].read_bytes())},
                       data={"model": "davs", "finetune_steps": "0"})
    assert_error(grey, 422, "no_face")
    saved, settings.max_audio_seconds = settings.max_audio_seconds, 0.3
    try:
        long = client.post("/v1/talking-face", files={"image": ("f.jpg", FACE),
                                                      "video": ("s.mp4", clips["silent"].read_bytes())},
                           data={"model": "davs"})
        assert_error(long, 422, "invalid_input")
        assert "longer than 0.3 s" in long.json()["error"]["message"]
    finally:
        settings.max_audio_seconds = saved
    image = upload(client, FACE, "f.jpg")["id"]
    voice = upload(client, clips["voice"].read_bytes(), "a.wav")["id"]
    video = upload(client, clips["face"].read_bytes(), "v.mp4")["id"]
    assert_error(client.post("/v1/jobs", json={"model": "atvgnet", "inputs": {"image": image, "audio": voice},
                                               "options": {"finetune_steps": 2}}), 400, "invalid_input")
    assert_error(client.post("/v1/jobs", json={"model": "davs", "inputs": {"image": image, "audio": voice,
                                                                           "video": video}}), 400, "invalid_input")
    assert_error(client.post("/v1/jobs", json={"model": "davs", "inputs": {"image": image, "video": voice}}),
                 400, "invalid_input")
    assert_error(client.post("/v1/jobs", json={"model": "davs", "inputs": {"image": image, "audio": voice},
                                               "options": {"finetune_steps": 99}}), 422, "validation_error")


def test_atvgnet_one_call_with_a_video_uses_its_sound(served, clips, tmp_path, ffprobe):
    client, _ = served
    face_video = ("v.mp4", clips["face"].read_bytes())
    r = client.post("/v1/talking-face", files={"image": ("face.jpg", FACE), "video": face_video}, data={"wait": "60"})
    assert r.status_code == 200, r.text
    job = client.get(f"/v1/jobs/{r.headers['x-job-id']}").json()
    assert job["model"] == "atvgnet" and "audio" in job["inputs"] and job["info"]["driven_by"] == "audio"
    (tmp_path / "a.mp4").write_bytes(r.content)
    found, _ = streams(tmp_path / "a.mp4")
    assert (found["video"]["width"], found["video"]["height"]) == (128, 128)
