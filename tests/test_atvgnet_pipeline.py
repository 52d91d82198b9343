"""The ATVGnet pipeline against the authors' demo procedure, chunking, and memory."""

import json
import subprocess
import sys

import numpy as np
import pytest
import python_speech_features
import torch

from models import InvalidInput, TalkingFaceInput, WeightsMissing, registry
from models.atvgnet import features
from models.atvgnet.preprocess import norm_landmarks
from models.perception import face as face_lib
from service import media
from tests.conftest import EXAMPLES, PROJECT_ARRAYS, ROOT


@pytest.fixture(scope="module")
def pipe(seeded_project_dir):
    """The seeded networks with the project's arrays: for what does not depend on the authors' arrays."""
    return registry.load("atvgnet", weights=seeded_project_dir, device="cpu")


@pytest.fixture(scope="module")
def authors_pipe(seeded_weights_dir):
    """The seeded networks with the authors' arrays, loaded from the authors' layout."""
    return registry.load("atvgnet", weights=seeded_weights_dir, device="cpu")


@pytest.fixture(scope="module")
def photo():
    return media.read_image(EXAMPLES / "face.jpg")


@pytest.fixture(scope="module")
def speech():
    return media.read_audio(EXAMPLES / "speech.wav", sample_rate=16000)


def demo_frames(pipe, face128, audio, basics):
    """The authors' demo.py from the aligned crop on, written out step by step."""
    gray = face_lib.to_gray(face128)
    box = face_lib.detect_faces(gray)[0]                  # the demo detects again in the crop
    landmarks = face_lib.landmarks68(gray, box)
    example, _ = norm_landmarks(landmarks, basics["mean_shape_img"], basics["mean_shape_norm"], basics["S"])
    pca = torch.FloatTensor(basics["U_lrw1"][:, :6])
    mean = torch.FloatTensor(basics["mean_lrw1"])
    image = torch.FloatTensor(face128 / 255.0).permute(2, 0, 1)[None]
    image = (image - 0.5) / 0.5
    example = torch.FloatTensor(example.reshape(1, 136).astype(float)) * 5.0
    example = torch.mm(example - mean.expand_as(example), pca)

    speech = np.append(np.insert(audio, 0, np.zeros(1920)), np.zeros(1920))
    mfcc = python_speech_features.mfcc(speech, 16000, winstep=0.01)
    windows, ind = [], 3
    while ind <= int(mfcc.shape[0] / 4) - 4:
        windows.append(torch.FloatTensor(mfcc[(ind - 3) * 4: (ind + 4) * 4, 1:]))
        ind += 1
    with torch.no_grad():
        fake = pipe.atnet(example, torch.stack(windows)[None])
        fake = fake.view(-1, 6)
        example = torch.mm(example, pca.t()) + mean.expand_as(torch.mm(example, pca.t()))
        fake[:, 1:6] *= 2 * torch.FloatTensor(np.array([1.1, 1.2, 1.3, 1.4, 1.5]))
        fake = torch.mm(fake, pca.t()) + mean.expand_as(torch.mm(fake, pca.t()))
        frames = pipe.vgnet(image, fake[None], example)[0][0]
    return ((frames + 1) / 2 * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def test_frames_match_the_demo_procedure(authors_pipe, photo, speech, reference_dir):
    pipe = authors_pipe
    audio = speech[:int(1.5 * 16000)]
    video = pipe(TalkingFaceInput(image=photo, audio=audio, sample_rate=16000))
    assert video.frames.dtype == np.uint8
    assert video.frames.shape == (features.num_frames(len(audio)), 128, 128, 3)
    assert video.fps == 25 and video.sample_rate == 16000
    basics = {p.stem: np.load(p) for p in reference_dir.glob("*.npy")}
    face128 = pipe.prepare_reference(photo).face
    expected = demo_frames(pipe, face128, audio, basics)
    assert expected.shape == video.frames.shape
    assert np.abs(video.frames.astype(int) - expected).max() <= 1
    # The audio drives the face: frames are not all the same.
    assert np.abs(video.frames[0].astype(int) - video.frames[-1]).max() > 0


def test_chunk_size_does_not_change_the_video(pipe, photo, speech):
    audio = speech[:16000]
    inputs = TalkingFaceInput(image=photo, audio=audio, sample_rate=16000)
    whole = pipe(inputs).frames
    pipe.chunk_frames, saved = 7, pipe.chunk_frames
    try:
        pieces = list(pipe.frame_chunks(inputs))
    finally:
        pipe.chunk_frames = saved
    assert [len(p) for p in pieces[:-1]] == [7] * (len(pieces) - 1)
    assert np.abs(np.concatenate(pieces).astype(int) - whole).max() <= 1


def test_other_sample_rates_are_resampled(pipe, photo):
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(44100)).astype(np.float32)
    video = pipe(TalkingFaceInput(image=photo, audio=audio, sample_rate=44100))
    assert len(video.frames) == features.num_frames(16000)
    assert video.sample_rate == 44100 and len(video.audio) == 44100


def test_paste_back_returns_full_photo_frames(pipe, photo, speech):
    progress = []
    video = pipe(TalkingFaceInput(image=photo, audio=speech[:8000], sample_rate=16000), paste_back=True,
                 progress=lambda done, total: progress.append((done, total)))
    assert video.frames.shape[1:] == photo.shape
    assert progress[-1][0] == progress[-1][1] == len(video.frames)
    # Far from the face the photo is untouched.
    assert np.array_equal(video.frames[0, -20:], photo[-20:])


def test_bad_inputs(pipe, photo):
    with pytest.raises(InvalidInput, match="at least 0.3 s"):
        pipe(TalkingFaceInput(image=photo, audio=np.zeros(3000, np.float32) + 0.1, sample_rate=16000))
    with pytest.raises(InvalidInput, match="mono"):
        pipe(TalkingFaceInput(image=photo, audio=np.zeros((2, 16000), np.float32), sample_rate=16000))
    with pytest.raises(InvalidInput, match="RGB uint8"):
        pipe(TalkingFaceInput(image=photo.astype(np.float32), audio=np.ones(16000, np.float32),
                              sample_rate=16000))


def test_missing_weights_name_every_file_and_its_source(tmp_path):
    with pytest.raises(WeightsMissing) as info:
        registry.load("atvgnet", weights=tmp_path)
    for name in ("atnet_lstm_18.pth", "generator_23.pth", "U_lrw1.npy", "base_68.npy"):
        assert name in info.value.message
    assert "lelechen63/ATVGnet" in info.value.message
    assert "base_68_close.npy" not in info.value.message   # optional


def test_damaged_array_is_refused(seeded_weights_dir, tmp_path):
    import shutil

    from models.weights import WeightsInvalid
    for f in seeded_weights_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    np.save(tmp_path / "mean_lrw1.npy", np.zeros(136))
    with pytest.raises(WeightsInvalid, match="sha256"):
        registry.load("atvgnet", weights=tmp_path)


MEMORY_SCRIPT = """
import json, resource, sys
import numpy as np, torch
from models.atvgnet.networks import ATNet, VGNet
from models.atvgnet import bench
from models.atvgnet.pipeline import ATVGnetPipeline
from service import media
torch.set_num_threads(1)
with np.load(sys.argv[2] + "/basics.npz") as basics, np.load(sys.argv[2] + "/pca.npz") as pca:
    shape_arrays = {k: basics[k] for k in ("mean_shape_img", "mean_shape_norm", "S", "base_68")}
    mean, basis = pca["mean"], pca["basis"][:, :6]
pipe = ATVGnetPipeline(ATNet(width=4), VGNet(ngf=8, n_blocks=1), basis, mean, shape_arrays, device="cpu")
image = media.read_image(sys.argv[3])
wall, frames = bench.end_to_end(pipe, image, float(sys.argv[1]), sys.argv[4])
print(json.dumps({"frames": frames, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


@pytest.mark.slow
def test_memory_does_not_grow_with_clip_length(tmp_path):
    # Reduced-width networks keep this quick; the full networks are measured by
    # `talkingface bench atvgnet --memory 10 600`. A pipeline that kept every frame
    # would hold 60 s x 25 x 128 x 128 x 3 bytes = 74 MB more for the long clip.
    peaks = {}
    for seconds in (10, 60):
        out = subprocess.run(
            [sys.executable, "-c", MEMORY_SCRIPT, str(seconds), str(PROJECT_ARRAYS),
             str(EXAMPLES / "face.jpg"), str(tmp_path / f"{seconds}.mp4")],
            cwd=ROOT, check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        assert result["frames"] == features.num_frames(seconds * 16000)
        peaks[seconds] = result["peak"]
    assert peaks[60] <= 1.5 * peaks[10], peaks
    assert peaks[60] - peaks[10] < 30 * 1024, peaks     # KiB: well under the 74 MB of frames
