"""DAVS evaluation: clips generated from their first frame and audio (or frames), scored
against the real 256 x 256 crops, and `talkingface eval --model davs`.

A tiny prepared dataset (the DAVS training tests' synthetic clips, one of them a real
aligned face so that dlib finds landmarks) and tiny seeded networks at 256 x 256.
"""

import json
import math

import numpy as np
import pytest
import torch

from models.common.pipeline import save_project
from models.davs import dataset, evaluate, preprocess
from models.davs.networks import Decoder, IdentityEncoder, LipFeatureEncoder, MfccEncoder
from models.davs.pipeline import DAVSPipeline
from models.errors import InvalidInput
from models.perception import face as face_lib
from service import cli
from service.media import read_image
from tests.conftest import EXAMPLES
from tests.test_davs_pipeline import small_networks
from tests.test_davs_train import make_dataset


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Two test clips ("face": the example photo aligned, its mouth moving; "plain": synthetic)."""
    root = make_dataset(tmp_path_factory.mktemp("davs_eval_data"), {
        "face": (7, "test", None), "plain": (5, "test", None), "other": (5, "train", None)})
    photo = read_image(EXAMPLES / "face.jpg")
    _, landmarks, _ = face_lib.find_face(photo)
    face, matrix = dataset.align_face260(photo, landmarks)
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    frames = np.repeat(face[None], 7, 0)
    rng = np.random.default_rng(1)
    frames = np.clip(frames + rng.normal(0, 2, frames.shape), 0, 255).astype(np.uint8)
    folder = root / "videos" / "face"
    np.save(folder / "frames.npy", frames)
    np.save(folder / "landmarks.npy", np.repeat(mapped[None], 7, 0).astype(np.float32))
    return root


@pytest.fixture(scope="module")
def networks():
    return small_networks()


@pytest.fixture(scope="module")
def weights_dir(networks, tmp_path_factory):
    return save_project(tmp_path_factory.mktemp("davs_eval_weights"), "davs", networks, name="tiny")


def test_real_frames_against_themselves_score_perfectly(data_dir):
    clip = dataset.load_clip(data_dir, "face")
    real = evaluate.real_faces(clip)
    assert real.shape == (7, 256, 256, 3)
    np.testing.assert_array_equal(real[3], clip["frames"][3, 2:258, 2:258])

    same = evaluate.score_frames(clip, real.copy())
    assert same["psnr"] == math.inf and same["ssim"] == pytest.approx(1.0)
    assert same["frames"] == 7 and 0.0 <= same["cpbd"] <= 1.0
    # dlib on the 256 crops finds the mouth where the stored landmarks put it (a few px
    # summed over 20 points: detection on the crop against detection on the photo).
    assert same["lmd"] < 40.0

    darker = evaluate.score_frames(clip, (real // 2).astype(np.uint8))
    assert darker["psnr"] < 20.0 and darker["ssim"] < same["ssim"]
    with pytest.raises(InvalidInput):
        evaluate.score_frames(clip, real[:-1])


def test_generated_frames_are_the_networks_on_the_first_frame_and_each_block(data_dir, networks):
    pipe = DAVSPipeline.with_networks(**networks, device="cpu", chunk_frames=4)
    clip = dataset.load_clip(data_dir, "face")
    audio_frames = evaluate.generate_clip(pipe, clip, mode="audio", finetune_steps=0)

    # By hand: A from the first 256 crop, E_p(A) for every frame, the MFCC block of each frame x 1.5.
    with torch.no_grad():
        image = preprocess.identity_tensor(clip["frames"][0, 2:258, 2:258])
        features = [f.expand(7, *f.shape[1:]) for f in networks["id_encoder"](image)]
        words = networks["mfcc_encoder"](torch.from_numpy(clip["mfcc"]))[:, 0] * 1.5
        expected = preprocess.tensor_to_images(networks["decoder"](features, words))
    assert audio_frames.shape == (7, 256, 256, 3) and audio_frames.dtype == np.uint8
    assert np.abs(audio_frames.astype(int) - expected).max() <= 1

    video_frames = evaluate.generate_clip(pipe, clip, mode="video", finetune_steps=0)
    assert video_frames.shape == audio_frames.shape and not np.array_equal(video_frames, audio_frames)

    before = {k: v.clone() for k, v in pipe.decoder.state_dict().items()}
    tuned = evaluate.generate_clip(pipe, clip, mode="audio", finetune_steps=1)
    assert not np.array_equal(tuned, audio_frames)
    for key, value in pipe.decoder.state_dict().items():
        torch.testing.assert_close(value, before[key])     # tuning worked on copies
    with pytest.raises(InvalidInput):
        evaluate.generate_clip(pipe, clip, mode="lips")


def test_eval_command_prints_the_table_and_writes_json(data_dir, weights_dir, tmp_path, capsys):
    out = tmp_path / "scores.json"
    code = cli.main(["eval", "--model", "davs", "--data", str(data_dir), "--weights", str(weights_dir),
                     "--finetune-steps", "1", "--json", str(out)])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["clip", "psnr", "ssim", "lmd", "cpbd", "lip_sync", "frames"]
    assert [line.split()[0] for line in lines[1:]] == ["face", "plain", "mean"]
    scores = json.loads(out.read_text())
    assert sorted(scores) == ["face", "plain"]
    assert scores["face"]["frames"] == 7 and scores["plain"]["frames"] == 5
    for row in scores.values():
        assert math.isfinite(row["psnr"]) and 0.0 < row["psnr"] < 60.0
        assert math.isfinite(row["ssim"]) and -1.0 <= row["ssim"] < 1.0


def test_eval_command_reads_a_training_run_in_video_mode(data_dir, networks, tmp_path, capsys):
    # The layout of a run folder: config.json with the networks' arguments and "train".
    run = save_project(tmp_path / "run", "davs", networks, name="run", extra={"train": {"image_size": 256}})
    code = cli.main(["eval", "--model", "davs", "--data", str(data_dir), "--run", str(run), "--mode", "video",
                     "--finetune-steps", "0", "--max-clips", "1"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["face", "mean"]
    assert math.isfinite(float(lines[1].split()[1]))


def test_eval_command_refuses_what_it_cannot_score(data_dir, weights_dir, tmp_path, capsys):
    small = {"id_encoder": IdentityEncoder(4, 16, image_size=128),
             "decoder": Decoder(16, 4, 20, image_size=128),
             "mfcc_encoder": MfccEncoder(4, 16),
             "lip_feature_encoder": LipFeatureEncoder(4, 16, image_size=128)}
    reduced = save_project(tmp_path / "small", "davs", small)
    cases = [
        (["--weights", str(reduced)], "128x128"),
        (["--weights", str(weights_dir), "--run", str(weights_dir)], "not both"),
        (["--weights", str(weights_dir), "--atnet", "x", "--vgnet", "y"], "apply to atvgnet"),
    ]
    for extra, message in cases:
        assert cli.main(["eval", "--model", "davs", "--data", str(data_dir), *extra]) == 2
        assert message in capsys.readouterr().err
    assert cli.main(["eval", "--model", "atvgnet", "--data", str(data_dir), "--mode", "video"]) == 2
    assert "apply to davs" in capsys.readouterr().err
    assert cli.main(["eval", "--model", "davs", "--data", str(tmp_path), "--weights", str(weights_dir)]) == 2
    assert "not a prepared dataset" in capsys.readouterr().err
