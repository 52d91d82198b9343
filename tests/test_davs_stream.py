"""DAVS without fine-tuning streams: ``MfccBlockStream``, ``DAVSStream``, and both streaming
routes of the service (``POST /v1/talking-face`` with ``stream=true``, the ``/v1/live``
WebSocket) over real HTTP.

Reduced-width networks with seeded weights (``tests.test_davs_pipeline``) keep each clip
to a second or two on a CPU. Every comparison is exact: a frame depends on its own MFCC
block only, and the blocks, the chunks and so the frames do not depend on how the voice
was cut.
"""

import json

import httpx
import numpy as np
import pytest
import torch

from models import TalkingFaceInput
from models.common.bench import speech_like
from models.common.pipeline import save_project
from models.davs import audio as davs_audio
from models.davs.pipeline import DAVSPipeline, DAVSStream
from service import media
from service import stream as stream_lib
from service.app import create_app
from service.provenance import Label, Provenance
from service.settings import Settings
from tests.conftest import EXAMPLES
from tests.test_dashboard_static import serving_http
from tests.test_davs_pipeline import small_networks
from tests.test_live import frames_of, open_session, read_until_closed, run_session, start_message
from tests.test_stream import decode, post_stream, wait_job, wav

FACE = (EXAMPLES / "face.jpg").read_bytes()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two threads contend with the other processes of a shared 2-core machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def pipe():
    # chunk_frames 4: a second of voice (25 frames) crosses six chunk boundaries.
    return DAVSPipeline.with_networks(**small_networks(), device="cpu", chunk_frames=4)


@pytest.fixture(scope="module")
def photo():
    return media.read_image(EXAMPLES / "face.jpg")


@pytest.fixture(scope="module")
def reference(pipe, photo):
    return pipe.prepare_reference(photo)


@pytest.fixture(scope="module")
def voice():
    """1.01 s of the example speech, in [-1, 1]: 25 frames, the last block reaching past the end."""
    speech = media.read_audio(EXAMPLES / "speech.wav", sample_rate=16000)[:16160]
    assert np.abs(speech).max() <= 1
    return speech


def random_pieces(samples, rng, largest=4000):
    """``samples`` cut into consecutive pieces of 1 to ``largest`` samples."""
    begin = 0
    while begin < len(samples):
        size = int(rng.integers(1, largest + 1))
        yield samples[begin:begin + size]
        begin += size


def whole_clip_blocks(samples):
    return davs_audio.frame_blocks(davs_audio.syncnet_mfcc(samples), 0, davs_audio.video_frame_count(len(samples)),
                                   pad=True)


# -- MfccBlockStream -----------------------------------------------------------------------
@pytest.mark.parametrize("seed, seconds", [(0, 1.01), (1, 2.5), (2, 0.3)])
def test_block_stream_in_random_pieces_equals_the_whole_clip(seed, seconds):
    rng = np.random.default_rng(seed)
    samples = np.clip(speech_like(seconds, seed=seed), -1, 1)     # a voice within [-1, 1]
    samples[len(samples) // 2] = -1.0                   # the edge of the range, kept as it is
    blocks = davs_audio.MfccBlockStream()
    made, pushed = [], 0
    for piece in random_pieces(samples, rng):
        blocks.push(piece)
        pushed += len(piece)
        # Frame l's block is out as soon as samples up to 640 l + 2160 are in, not before.
        expected_ready = max(0, (pushed - davs_audio.LOOKAHEAD) // 640 + 1)
        assert blocks.ready() == expected_ready
        made.append(blocks.blocks(blocks.ready()))
        # Held: under one MFCC frame's samples, and the MFCC frames of the next blocks.
        assert blocks._emphasized.shape[0] < davs_audio.WINDOW_LENGTH
        assert blocks._columns.shape[1] <= davs_audio.BLOCK_FRAMES + davs_audio.MFCC_PER_VIDEO_FRAME
    blocks.end()
    assert blocks.ready() == davs_audio.video_frame_count(len(samples))
    made.append(blocks.blocks(blocks.ready()))
    made = np.concatenate(made)
    expected = whole_clip_blocks(samples)
    assert made.dtype == np.float32 and made.shape == expected.shape == (len(expected), 1, 20, 12)
    assert np.array_equal(made, expected)


def test_block_stream_scaling_is_fixed_at_the_start():
    samples = np.clip(speech_like(0.5, seed=4), -1, 1)
    loud = samples * 4                                  # beyond [-1, 1]: clipped to it
    blocks = davs_audio.MfccBlockStream()
    blocks.push(loud)
    blocks.end()
    assert np.array_equal(blocks.blocks(blocks.ready()), whole_clip_blocks(np.clip(loud, -1, 1)))
    # Without full_scale the samples are 16-bit values, as syncnet_mfcc takes a signal beyond [-1, 1].
    int16 = np.round(samples * 32767).astype(np.float32)
    blocks = davs_audio.MfccBlockStream(full_scale=False)
    blocks.push(int16[:3000])
    blocks.push(int16[3000:])
    blocks.end()
    assert np.array_equal(blocks.blocks(blocks.ready()), whole_clip_blocks(int16))


def test_block_stream_refuses_what_it_cannot_take():
    blocks = davs_audio.MfccBlockStream()
    blocks.push(np.zeros(3000, np.float32))
    assert blocks.ready() == 2
    with pytest.raises(ValueError, match="not ready"):
        blocks.blocks(3)
    blocks.end()
    with pytest.raises(ValueError, match="ended"):
        blocks.push(np.zeros(10))


# -- DAVSStream ----------------------------------------------------------------------------
def test_streams_only_without_finetuning():
    assert DAVSPipeline.can_stream
    assert not DAVSPipeline.streams({})                          # the default fine-tunes
    assert not DAVSPipeline.streams({"finetune_steps": 5})
    assert DAVSPipeline.streams({"finetune_steps": 0})
    assert DAVSPipeline.streams({"finetune_steps": "0", "paste_back": True})


@pytest.mark.parametrize("paste_back, chunk_frames, seed", [(False, 4, 0), (True, 3, 1)])
def test_stream_in_random_pieces_equals_frame_chunks(pipe, photo, reference, voice, paste_back, chunk_frames, seed):
    """Fed random pieces of the voice, the stream gives exactly ``frame_chunks``' frames (same chunk size)."""
    pipe.chunk_frames, saved = chunk_frames, pipe.chunk_frames
    try:
        whole = np.concatenate(list(pipe.frame_chunks(TalkingFaceInput(image=photo, audio=voice, sample_rate=16000),
                                                      reference=reference, paste_back=paste_back, finetune_steps=0)))
    finally:
        pipe.chunk_frames = saved
    assert len(whole) == 25
    stream = pipe.open_stream(reference, paste_back=paste_back, chunk_frames=chunk_frames)
    assert isinstance(stream, DAVSStream) and stream.fps == 25 and stream.frames_out == 0
    assert stream.frame_shape == whole.shape[1:]
    made = []
    for piece in random_pieces(voice, np.random.default_rng(seed)):
        frames = stream.push(piece)
        made.append(frames)
        # Whole chunks as soon as their blocks are ready.
        ready = max(0, (stream.samples_in - davs_audio.LOOKAHEAD) // 640 + 1)
        assert stream.frames_out == ready // chunk_frames * chunk_frames
    assert stream.samples_in == len(voice) and stream.frames_out < len(whole)
    made.append(stream.close())
    assert stream.closed and stream.frames_out == len(whole)
    assert np.array_equal(np.concatenate(made), whole)


def test_a_small_first_chunk_then_full_ones_whatever_the_cut(pipe, reference, voice):
    def run(sizes):
        stream = pipe.open_stream(reference, chunk_frames=6, first_chunk_frames=2)
        chunks, begin = [], 0
        for size in sizes:
            chunks += list(stream.push_chunks(voice[begin:begin + size]))
            begin += size
        return chunks + list(stream.close_chunks())

    whole = run([len(voice)])
    cut = run(np.random.default_rng(3).choice([1, 17, 640, 1999], 40))
    assert [len(c) for c in whole] == [len(c) for c in cut] == [2, 6, 6, 6, 5]
    assert np.array_equal(np.concatenate(whole), np.concatenate(cut))
    with pytest.raises(ValueError, match="first at most"):
        pipe.open_stream(reference, chunk_frames=2, first_chunk_frames=4)


def test_stream_is_not_finetuned_and_takes_a_photo(pipe, photo, reference, voice):
    tuned = np.concatenate(list(pipe.frame_chunks(TalkingFaceInput(image=photo, audio=voice, sample_rate=16000),
                                                  reference=reference, finetune_steps=1)))
    stream = pipe.open_stream(photo, chunk_frames=4)            # the face found in the photo
    frames = np.concatenate([stream.push(voice), stream.close()])
    assert frames.shape == tuned.shape and not np.array_equal(frames, tuned)
    with pytest.raises(Exception, match="closed"):
        stream.push(voice[:100])


# -- the service ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``(http URL, ws URL, pipeline)`` of the app with the seeded DAVS as its streaming DAVS, no API key."""
    weights = save_project(tmp_path_factory.mktemp("davs") / "weights", "davs", small_networks(), name="tiny seeded")
    served = DAVSPipeline.from_project(weights, device="cpu", chunk_frames=4)
    settings = Settings(data_dir=tmp_path_factory.mktemp("davs-stream") / "data", heartbeat_seconds=0.5,
                        lease_seconds=10, device="cpu")
    stream_lib._pipelines["davs"] = served               # what service_pipeline loads once
    try:
        with serving_http(create_app(settings), lifespan="on") as url:
            yield url, url.replace("http://", "ws://"), served
    finally:
        stream_lib._pipelines.pop("davs", None)


def test_streamed_request_without_finetuning_decodes_and_succeeds(server, voice, tmp_path):
    url, _, _ = server
    with post_stream(url, audio=wav(voice), model="davs", finetune_steps="0") as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "video/mp4"
        data = response.read()
    frames = decode(data, tmp_path)
    assert frames.shape == (25, 256, 256, 3) and frames.std() > 10
    job = wait_job(url, response.headers["x-job-id"])
    assert job["status"] == "succeeded" and job["model"] == "davs"


@pytest.mark.parametrize("options", [{}, {"finetune_steps": "3"}])
def test_streamed_request_with_finetuning_is_400_naming_finetune_steps_0(server, voice, options):
    with post_stream(server[0], audio=wav(voice), model="davs", **options) as response:
        assert response.status_code == 400
        error = json.loads(response.read())["error"]
    assert error["code"] == "stream_unsupported"
    assert "model davs cannot stream its video with these options" in error["message"]
    assert "finetune_steps=0" in error["message"]


def test_live_session_without_finetuning_gives_the_frames_of_the_whole_clip(server, photo, voice):
    url, ws_url, served = server
    face_id = httpx.post(f"{url}/v1/files", files={"file": ("face.jpg", FACE)}).json()["id"]
    whole = np.concatenate(list(served.frame_chunks(TalkingFaceInput(image=photo, audio=voice, sample_rate=16000),
                                                    finetune_steps=0)))
    # The session's chunks: a short first one (stream_lib.FIRST_CHUNK_FRAMES), then 4 a step.
    same_chunks = served.open_stream(photo, chunk_frames=4, first_chunk_frames=min(stream_lib.FIRST_CHUNK_FRAMES, 4))
    same_chunks = np.concatenate([same_chunks.push(voice), same_chunks.close()])
    label = Label.of(served)                                    # marked as every output of the service
    whole, same_chunks = Provenance().mark(whole, label), Provenance().mark(same_chunks, label)
    start = start_message(face_id, model="davs", finetune_steps=0, output="rgb", chunk_frames=4)
    ready, texts, blobs, closed = run_session((ws_url,), start, voice, [640, 1, 1999, 333])
    assert ready["model"] == "davs" and (ready["width"], ready["height"]) == (256, 256)
    frames, headers = frames_of(blobs, "rgb")
    assert np.array_equal(frames, same_chunks)
    # The networks' sums in other batch sizes round differently: a level at most, on few pixels.
    difference = np.abs(frames.astype(int) - whole.astype(int))
    assert frames.shape == whole.shape and difference.max() <= 2 and (difference > 0).mean() < 0.01
    assert [h[0] for h in headers] == list(range(25))
    assert texts[-1] == {"type": "end", "frames": 25, "seconds": 1.0} and closed == (1000, "the session ended")
    assert httpx.get(f"{url}/v1/jobs/{ready['session']}").json()["status"] == "succeeded"


def test_live_session_with_finetuning_is_refused(server):
    url, ws_url, _ = server
    face_id = httpx.post(f"{url}/v1/files", files={"file": ("face.jpg", FACE)}).json()["id"]
    for options in ({}, {"finetune_steps": 2}):
        with open_session((ws_url,), None) as ws:
            ws.send(start_message(face_id, model="davs", **options))
            texts, _, closed = read_until_closed(ws, timeout=30)
        assert texts[-1]["type"] == "error" and texts[-1]["error"]["code"] == "cannot_stream"
        assert "finetune_steps=0" in texts[-1]["error"]["message"]
        assert closed[0] == 1008 and "model davs cannot make frames as audio arrives" in closed[1]
