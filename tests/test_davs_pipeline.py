"""The DAVS pipeline against the authors' test flow, in audio and video mode.

The authors' flow (Test_Gen_Models/Test_Audio_Model.py, Test_Video_Model.py, test_all.py)
is written out here step by step: fine-tuning with a new Adam for each of five samples,
then for every frame E_p(A), the word feature and the decoder at batch 1. Reduced-width
networks with seeded weights keep the file fast; the arithmetic is the same.
"""

import copy

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import InvalidInput, NoFaceFound, TalkingFaceInput, WeightsMissing, registry
from models.common.pipeline import save_project
from models.davs import audio as davs_audio
from models.davs import preprocess
from models.davs.networks import Decoder, IdentityEncoder, LipFeatureEncoder, MfccEncoder
from models.davs.pipeline import DAVSPipeline, FaceTracker
from models.perception import face as face_lib
from models.weights import WeightsInvalid
from service import media
from tests.conftest import EXAMPLES
from tests.seeded import seeded_state_dict

SMALL = {
    "id_encoder": (IdentityEncoder, {"base_channels": 4, "feature_length": 32}),
    "decoder": (Decoder, {"feature_length": 32, "base_channels": 8, "id_skip_channels": 20}),
    "mfcc_encoder": (MfccEncoder, {"base_channels": 8, "feature_length": 32}),
    "lip_feature_encoder": (LipFeatureEncoder, {"base_channels": 8, "feature_length": 32}),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two threads contend with the other processes of a shared 2-core machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def small_networks():
    networks = {}
    for name, (cls, config) in SMALL.items():
        net = cls(**config)
        net.load_state_dict(seeded_state_dict(net.state_dict()))
        networks[name] = net.eval()
    # Seeded weights let the person-ID half of the decoder's input drown the word half;
    # amplified, the word feature visibly moves the frames, so the tests below can tell.
    with torch.no_grad():
        networks["decoder"].deconv1_1_new.weight[32:] *= 20
    return networks


@pytest.fixture(scope="module")
def networks():
    return small_networks()


@pytest.fixture(scope="module")
def pipe(networks):
    # chunk_frames 4: clips of 8-10 frames cross chunk boundaries.
    return DAVSPipeline.with_networks(**networks, device="cpu", chunk_frames=4)


@pytest.fixture(scope="module")
def photo():
    return media.read_image(EXAMPLES / "face.jpg")


@pytest.fixture(scope="module")
def speech():
    # 11 frames: enough for the five whole MFCC blocks (frames 2-6) of the authors' fine-tuning.
    return media.read_audio(EXAMPLES / "speech.wav", sample_rate=16000)[:int(0.44 * 16000)]


def moving_photo(photo, frames=9):
    """The photo turning, zooming and drifting a little: frames and their (2, 3) warps."""
    video, warps = [], []
    for i in range(frames):
        matrix = cv2.getRotationMatrix2D((256, 300), 2.0 * np.sin(i), 1.0 + 0.02 * i)
        matrix[:, 2] += (4 * np.sin(i / 2), 3 * np.cos(i / 3))
        video.append(cv2.warpAffine(photo, matrix, photo.shape[1::-1], borderMode=cv2.BORDER_REFLECT))
        warps.append(matrix)
    return np.stack(video), warps


@pytest.fixture(scope="module")
def driving(photo):
    """A 9-frame driving video, so that alignment matters."""
    return moving_photo(photo)[0]


# --------------------------------------------------------------------------- the authors' flow

def authors_finetune(networks, image, words):
    """test_all.py: five samples, each with set_test_input (a new Adam) and test_train."""
    id_encoder, decoder = copy.deepcopy(networks["id_encoder"]), copy.deepcopy(networks["decoder"])
    mask = torch.ones(1, 3, 256, 256)
    mask[:, :, 170:234, 64:192] = 0.001
    for word in words:
        optimizer = torch.optim.Adam(list(id_encoder.parameters()) + list(decoder.parameters()),
                                     lr=0.0002, betas=(0.9, 0.999))
        fake = decoder(id_encoder(image), word[None])
        loss = F.l1_loss(fake * mask, image * mask) * 4
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return id_encoder.eval(), decoder.eval()


def authors_frames(id_encoder, decoder, encoder, image, inputs, scale):
    """Test_*_Model.test: per frame E_p(A), encoder(one sample) x scale, decoder; tensor2im."""
    frames = []
    with torch.no_grad():
        for sample in inputs:
            identity = id_encoder(image)                                # recomputed every frame
            word = encoder(sample[None, None])[:, 0] * scale            # (batch 1, sequence 1)
            frame = decoder(identity, word)[0].permute(1, 2, 0).numpy() * 255.0
            frames.append(frame.astype(np.uint8))
    return np.stack(frames)


def mfcc_blocks(audio):
    mfcc = davs_audio.syncnet_mfcc(audio, 16000)
    total = davs_audio.video_frame_count(len(audio))
    return mfcc, torch.from_numpy(davs_audio.frame_blocks(mfcc, 0, total, pad=True))


def assert_same_frames(ours, theirs):
    # Batched convolutions sum in another order; truncation to uint8 may then differ by one.
    assert ours.shape == theirs.shape
    difference = np.abs(ours.astype(int) - theirs)
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01


# --------------------------------------------------------------------------- audio mode

def test_audio_mode_equals_the_authors_frame_by_frame_flow(pipe, networks, photo, speech):
    video = pipe(TalkingFaceInput(image=photo, audio=speech, sample_rate=16000), finetune_steps=0)
    _, blocks = mfcc_blocks(speech)
    assert video.frames.shape == (11, 256, 256, 3) and video.frames.dtype == np.uint8
    assert video.fps == 25 and video.info["mode"] == "audio" and video.info["model"] == "davs"
    assert 0 < video.frames.mean() < 255 and video.frames.std() > 1
    assert np.abs(video.frames[0].astype(int) - video.frames[-1]).max() > 0        # the audio moves it
    image = pipe.prepare_reference(photo).image
    expected = authors_frames(networks["id_encoder"], networks["decoder"], networks["mfcc_encoder"], image,
                              blocks, 1.5)
    assert_same_frames(video.frames, expected)
    # The word feature is scaled by 1.5 as the authors do: unscaled frames differ.
    unscaled = authors_frames(networks["id_encoder"], networks["decoder"], networks["mfcc_encoder"], image,
                              blocks[:2], 1.0)
    assert np.abs(unscaled.astype(int) - video.frames[:2]).max() > 1


def test_finetuning_is_the_authors_test_train_on_copies(pipe, networks, photo, speech):
    before = {name: copy.deepcopy(net.state_dict()) for name, net in networks.items()}
    tuned = pipe(TalkingFaceInput(image=photo, audio=speech, sample_rate=16000))          # default: 5 steps
    plain = pipe(TalkingFaceInput(image=photo, audio=speech, sample_rate=16000), finetune_steps=0)
    assert np.abs(tuned.frames.astype(int) - plain.frames).max() > 1
    # The shared networks are untouched.
    for name, net in networks.items():
        for key, value in net.state_dict().items():
            assert torch.equal(value, before[name][key]), f"{name}.{key} changed"
    # The authors' five steps use samples 0-4, i.e. the MFCC blocks of frames 2-6, unscaled.
    mfcc, blocks = mfcc_blocks(speech)
    image = pipe.prepare_reference(photo).image
    with torch.no_grad():
        words = networks["mfcc_encoder"](torch.from_numpy(davs_audio.frame_blocks(mfcc, 2, 7)))[:, 0]
    id_encoder, decoder = authors_finetune(networks, image, words)
    expected = authors_frames(id_encoder, decoder, networks["mfcc_encoder"], image, blocks, 1.5)
    assert_same_frames(tuned.frames, expected)


def test_chunks_stream_in_order_with_progress(pipe, photo, speech):
    progress = []
    inputs = TalkingFaceInput(image=photo, audio=speech, sample_rate=16000)
    chunks = list(pipe.frame_chunks(inputs, finetune_steps=0, progress=lambda d, t: progress.append((d, t))))
    assert [len(c) for c in chunks] == [4, 4, 3]
    assert progress == [(0, 11), (4, 11), (8, 11), (11, 11)]


def test_long_inputs_are_generated_as_they_are_consumed(pipe, photo, speech, driving, monkeypatch):
    # Memory holds one chunk: nothing is generated, and no more video is read, ahead of need.
    decoded = []
    decode = pipe.decode
    monkeypatch.setattr(pipe, "decode", lambda identity, words: decoded.append(len(words)) or decode(identity, words))
    ten_minutes = np.resize(speech, 600 * 16000)
    chunks = pipe.frame_chunks(TalkingFaceInput(image=photo, audio=ten_minutes, sample_rate=16000), finetune_steps=0)
    assert next(chunks).shape == (4, 256, 256, 3) and decoded == [4]
    chunks.close()
    pulled = []

    def endless_video():
        while True:
            pulled.append(3)
            yield driving[:3]
    chunks = pipe.frame_chunks(TalkingFaceInput(image=photo, audio=None, sample_rate=16000, video=endless_video()),
                               finetune_steps=0)
    assert len(next(chunks)) == 4 and sum(pulled) == 6
    chunks.close()


def test_paste_back_returns_full_photo_frames(pipe, photo, speech):
    video = pipe(TalkingFaceInput(image=photo, audio=speech[:8000], sample_rate=16000), paste_back=True,
                 finetune_steps=0)
    assert video.frames.shape[1:] == photo.shape
    assert np.array_equal(video.frames[0, -10:], photo[-10:])        # far from the face: the photo


# --------------------------------------------------------------------------- video mode

def test_video_mode_equals_the_authors_flow_and_keeps_every_frame(pipe, networks, photo, driving):
    video = pipe(TalkingFaceInput(image=photo, audio=None, sample_rate=16000, video=driving), finetune_steps=0)
    assert video.frames.shape == (len(driving), 256, 256, 3)
    assert video.audio is None and video.info["mode"] == "video"
    # Every frame is drawn from a real driving frame: the last two are not the black ones
    # of the authors' loader, and look like the others.
    image = pipe.prepare_reference(photo).image
    black = authors_frames(networks["id_encoder"], networks["decoder"], networks["lip_feature_encoder"], image,
                           torch.zeros(1, 3, 256, 256), 0.8)
    for frame in video.frames[-2:]:
        assert np.abs(frame.astype(int) - black[0]).max() > 1
    faces = np.concatenate(list(pipe.aligned_video(driving)))
    expected = authors_frames(networks["id_encoder"], networks["decoder"], networks["lip_feature_encoder"], image,
                              preprocess.face_tensor(faces), 0.8)
    assert_same_frames(video.frames, expected)


def test_video_mode_finetunes_on_the_lips_of_the_photo(pipe, networks, photo, driving):
    video = pipe(TalkingFaceInput(image=photo, audio=None, sample_rate=16000, video=driving[:4]))
    image = pipe.prepare_reference(photo).image
    with torch.no_grad():
        lips = networks["lip_feature_encoder"](image)[:, 0]
    id_encoder, decoder = authors_finetune(networks, image, lips.expand(5, -1))
    faces = np.concatenate(list(pipe.aligned_video(driving[:4])))
    expected = authors_frames(id_encoder, decoder, networks["lip_feature_encoder"], image,
                              preprocess.face_tensor(faces), 0.8)
    assert_same_frames(video.frames, expected)


def test_the_tracked_face_follows_the_driving_video(photo):
    # Where the alignment's key points (eye centres, mouth centre) truly are: the photo's,
    # moved by each frame's warp. A per-frame dlib detection is off by 2-5 % of the eye
    # distance; searching near the last face must do as well.
    video, warps = moving_photo(photo)
    start = preprocess.key_points(face_lib.find_face(photo)[1])
    tracker, errors = FaceTracker(), []
    for frame, warp in zip(video, warps):
        truth = start @ warp[:, :2].T + warp[:, 2]
        errors.append(np.abs(preprocess.key_points(tracker(frame)) - truth).max() / np.linalg.norm(truth[1] - truth[0]))
    assert np.median(errors) < 0.05 and max(errors) < 0.1, np.round(errors, 3)


def test_streamed_video_chunks_give_the_same_frames(pipe, photo, driving):
    whole = pipe(TalkingFaceInput(image=photo, audio=None, sample_rate=16000, video=driving), finetune_steps=0)
    stream = (driving[i:i + 3] for i in range(0, len(driving), 3))
    streamed = pipe(TalkingFaceInput(image=photo, audio=None, sample_rate=16000, video=stream), finetune_steps=0)
    assert np.array_equal(whole.frames, streamed.frames)


def test_frames_before_the_first_face_take_its_alignment(pipe, photo, driving):
    grey = np.full_like(driving[:3], 127)
    video = np.concatenate([grey, driving[:3]])
    faces = np.concatenate(list(pipe.aligned_video(video)))
    assert len(faces) == 6
    first, _ = preprocess.align_face(grey[0], FaceTracker()(driving[0]))
    assert np.array_equal(faces[0], first)


def test_video_without_a_face_is_refused(pipe, photo):
    grey = np.full((5, 120, 160, 3), 127, np.uint8)
    with pytest.raises(NoFaceFound, match="no face"):
        pipe(TalkingFaceInput(image=photo, audio=None, sample_rate=16000, video=grey))


# --------------------------------------------------------------------------- inputs and weights

def test_bad_inputs(pipe, photo, speech):
    with pytest.raises(InvalidInput, match="at least 0.3 s"):
        pipe(TalkingFaceInput(image=photo, audio=speech[:3000], sample_rate=16000))
    with pytest.raises(InvalidInput, match="mono"):
        pipe(TalkingFaceInput(image=photo, audio=np.zeros((2, 16000), np.float32), sample_rate=16000))
    with pytest.raises(InvalidInput, match="finetune_steps"):
        pipe(TalkingFaceInput(image=photo, audio=speech, sample_rate=16000), finetune_steps=-1)
    with pytest.raises(InvalidInput, match="uint8 RGB"):
        pipe(TalkingFaceInput(image=photo, audio=None, sample_rate=16000, video=np.zeros((4, 64, 64), np.uint8)))
    with pytest.raises(InvalidInput, match="RGB uint8"):
        pipe(TalkingFaceInput(image=photo.astype(np.float32), audio=speech, sample_rate=16000))


def test_missing_weights_name_the_file_and_its_source(tmp_path, monkeypatch):
    with pytest.raises(WeightsMissing) as info:
        registry.load("davs", weights=tmp_path)
    assert "101_DAVS_checkpoint.pth.tar" in info.value.message
    assert "Talking-Face-Generation-DAVS" in info.value.message
    monkeypatch.setenv("TALKINGFACE_WEIGHTS_DIR", str(tmp_path))        # the default folder, no demo weights
    if not (registry.spec("davs").demo / "config.json").is_file():
        with pytest.raises(WeightsMissing, match="101_DAVS_checkpoint"):
            registry.load("davs")


def test_authors_checkpoint_loads_all_four_networks(tmp_path):
    # The released file: one dict, an entry a network, ``module.`` prefixes (full widths).
    torch.manual_seed(0)
    entries = {"ID_encoder": IdentityEncoder(), "Decoder": Decoder(), "mfcc_encoder": MfccEncoder(),
               "lip_feature_encoder": LipFeatureEncoder()}
    checkpoint = {"step": 1, "epoch": 101}
    checkpoint.update({key: {"module." + k: v for k, v in net.state_dict().items()} for key, net in entries.items()})
    torch.save(checkpoint, tmp_path / "101_DAVS_checkpoint.pth.tar", _use_new_zipfile_serialization=False)
    loaded = registry.load("davs", weights=tmp_path, device="cpu")
    assert isinstance(loaded, DAVSPipeline) and loaded.info["weights"] == "authors (LRW)"
    for attr, key in (("id_encoder", "ID_encoder"), ("decoder", "Decoder"), ("mfcc_encoder", "mfcc_encoder"),
                      ("lip_feature_encoder", "lip_feature_encoder")):
        ours, theirs = getattr(loaded, attr).state_dict(), entries[key].state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), attr


def test_project_weights_round_trip(networks, tmp_path, photo, speech):
    folder = save_project(tmp_path / "davs", "davs", networks, name="tiny")
    loaded = registry.load("davs", weights=folder, device="cpu", chunk_frames=4)
    assert loaded.info["weights"] == "tiny"
    inputs = TalkingFaceInput(image=photo, audio=speech[:8000], sample_rate=16000)
    original = DAVSPipeline.with_networks(**networks, device="cpu", chunk_frames=4)
    assert np.array_equal(loaded(inputs, finetune_steps=0).frames, original(inputs, finetune_steps=0).frames)
    (folder / "decoder.safetensors").write_bytes((folder / "decoder.safetensors").read_bytes()[:-4] + b"\0" * 4)
    with pytest.raises(WeightsInvalid, match="SHA256SUMS"):
        registry.load("davs", weights=folder, device="cpu")
