"""Streamed talking faces: ``FrameStream``, the fragmented-MP4 muxer, ``POST /v1/talking-face``
with ``stream=true`` over real HTTP (uvicorn in a thread, no worker: a stream runs in the
API process), back-pressure, disconnects, the face cache and ``generate --stream``.

The demo weights (``weights/demo/atvgnet``) and 2 s of the bundled example speech keep
each clip to a few seconds on a CPU. Where a test must see the stream before the model
has finished, the model is held at a chunk (``Gate``) instead of relying on timing.
"""

import asyncio
import io
import subprocess
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from models import TalkingFaceInput, registry
from service import media, render
from service import stream as stream_lib
from service.app import create_app
from service.settings import Settings
from tests.conftest import EXAMPLES, ROOT
from tests.test_dashboard_static import serving_http

DEMO = ROOT / "weights" / "demo" / "atvgnet"
FACE = (EXAMPLES / "face.jpg").read_bytes()
SECONDS = 2.0


def wav(audio, sample_rate=16000) -> bytes:
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def decode(data: bytes, tmp_path, name="clip.mp4") -> np.ndarray:
    """The video frames of MP4 bytes (possibly cut short: what is decodable), uint8 (n, H, W, 3)."""
    path = tmp_path / name
    path.write_bytes(data)
    done = subprocess.run(["ffmpeg", "-v", "quiet", "-i", str(path), "-map", "0:v", "-fps_mode", "passthrough",
                           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True)
    size = subprocess.run(["ffprobe", "-v", "quiet", "-select_streams", "v", "-show_entries",
                           "stream=width,height", "-of", "csv=p=0", str(path)], capture_output=True, text=True)
    if not size.stdout.strip():
        return np.zeros((0, 0, 0, 3), np.uint8)
    width, height = (int(v) for v in size.stdout.strip().split(",")[:2])
    raw = np.frombuffer(done.stdout, np.uint8)
    return raw[: len(raw) // (width * height * 3) * width * height * 3].reshape(-1, height, width, 3)


class Gate:
    """Wraps a pipeline's ``_generate``: counts the chunks it makes and holds the ``hold_at``-th
    (1-based) until ``release``."""

    def __init__(self, pipe, hold_at):
        self.pipe, self.hold_at = pipe, hold_at
        self.calls = 0
        self.released = threading.Event()
        self.waiting = threading.Event()
        self.inner = pipe._generate

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.hold_at:
            self.waiting.set()
            self.released.wait(60)
        return self.inner(*args, **kwargs)

    def __enter__(self):
        self.pipe._generate = self
        return self

    def __exit__(self, *exc):
        self.released.set()
        del self.pipe._generate


@pytest.fixture(scope="module")
def pipe():
    return registry.load("atvgnet", weights=DEMO, device="cpu")


@pytest.fixture(scope="module")
def photo():
    return media.read_image(EXAMPLES / "face.jpg")


@pytest.fixture(scope="module")
def speech():
    return media.read_audio(EXAMPLES / "speech.wav", sample_rate=16000)[: int(SECONDS * 16000)]


@pytest.fixture(scope="module")
def reference(pipe, photo):
    return pipe.prepare_reference(photo)


# -- FrameStream ---------------------------------------------------------------------------
def test_frame_stream_in_random_pieces_equals_frame_chunks(pipe, photo, speech, reference):
    speech = speech[:20000]                  # 1.25 s: 31 frames, 6 chunks of at most 6
    pipe.chunk_frames, saved = 6, pipe.chunk_frames
    try:
        whole = np.concatenate(list(pipe.frame_chunks(
            TalkingFaceInput(image=photo, audio=speech, sample_rate=16000), reference=reference)))
    finally:
        pipe.chunk_frames = saved
    rng = np.random.default_rng(7)
    stream = pipe.open_stream(reference, chunk_frames=6)
    assert stream.fps == 25 and stream.frames_out == 0
    made, begin = [], 0
    while begin < len(speech):
        size = int(rng.choice([1, 3, 17, 640, 1999, 4000]))
        frames = stream.push(speech[begin:begin + size])
        begin = min(begin + size, len(speech))
        assert frames.dtype == np.uint8 and frames.shape[1:] == (128, 128, 3)
        made.append(frames)
        assert stream.samples_in == begin and stream.frames_out == sum(len(f) for f in made)
    made.append(stream.close())
    streamed = np.concatenate(made)
    assert streamed.shape == whole.shape == (31, 128, 128, 3)
    assert np.array_equal(streamed, whole)
    # Frames come as their audio arrives, not at the end: all but the look-ahead's before close.
    assert len(made[-1]) < 12


def test_a_small_first_chunk_then_full_ones_whatever_the_cut(pipe, reference, speech):
    speech = speech[:20000]                  # 31 frames: chunks of 2, then 6
    rng = np.random.default_rng(3)

    def run(sizes):
        stream = pipe.open_stream(reference, chunk_frames=6, first_chunk_frames=2)
        chunks, begin = [], 0
        for size in sizes:
            chunks += list(stream.push_chunks(speech[begin:begin + size]))
            begin += size
        return chunks + list(stream.close_chunks())

    whole = run([len(speech)])
    cut = run(rng.choice([1, 17, 640, 1999], 60))
    assert [len(c) for c in whole] == [len(c) for c in cut] == [2, 6, 6, 6, 6, 5]
    assert np.array_equal(np.concatenate(whole), np.concatenate(cut))
    with pytest.raises(ValueError, match="first at most"):
        pipe.open_stream(reference, chunk_frames=2, first_chunk_frames=4)


def test_frame_stream_makes_a_frame_as_soon_as_its_audio_is_in(pipe, reference, speech):
    stream = pipe.open_stream(reference, chunk_frames=1)
    assert len(stream.push(speech[:2799])) == 0            # frame 0 reads samples up to 2800
    assert len(stream.push(speech[2799:2800])) == 1
    assert len(stream.push(speech[2800:2800 + 640])) == 1  # one frame per 640 samples from then on
    with pytest.raises(Exception, match="closed"):
        stream.close()
        stream.push(speech[:10])


def test_cached_reference_skips_prepare_reference(pipe, photo):
    calls = []
    original = pipe.prepare_reference

    def counted(image, face_index=0):
        calls.append(face_index)
        return original(image, face_index)

    pipe.prepare_reference = counted
    try:
        first = pipe.cached_reference("sha256:test-face", lambda: photo)
        second = pipe.cached_reference("sha256:test-face", lambda: pytest.fail("a cached face is not decoded"))
    finally:
        del pipe.prepare_reference
    assert calls == [0] and second is first


# -- the muxer -----------------------------------------------------------------------------
def test_fragmented_mp4_with_live_audio_is_playable_as_it_grows(tmp_path):
    rng = np.random.default_rng(0)
    pieces = []
    mp4 = stream_lib.FragmentedMp4(25, live_audio=True, on_data=pieces.append)
    tone = (0.2 * np.sin(np.arange(16000 * 2) / 8)).astype(np.float32)
    decodable_early = None
    for i in range(10):        # 2 s: 10 chunks of 5 frames and their voice
        mp4.write_audio(tone[i * 3200:(i + 1) * 3200])
        mp4.write(rng.integers(0, 255, (5, 64, 96, 3), dtype=np.uint8))
        if i == 6:
            time.sleep(0.5)    # the encoder's output of what it has
            decodable_early = len(decode(b"".join(pieces), tmp_path, "early.mp4"))
    mp4.close()
    assert decodable_early and decodable_early >= 12          # the first 0.48 s fragment, before the end
    frames = decode(b"".join(pieces), tmp_path)
    assert frames.shape == (50, 64, 96, 3)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
                            str(tmp_path / "clip.mp4")], capture_output=True, text=True).stdout.split()
    assert probe == ["h264", "aac"]


def test_fragmented_mp4_starts_before_the_frames_and_leads_with_short_fragments(tmp_path):
    from service.bench_stream import FragmentReader

    mp4 = stream_lib.FragmentedMp4(25, on_data=lambda data: None, frame_size=(64, 96))
    with mp4:
        assert mp4._proc is not None and mp4._proc.poll() is None      # ffmpeg runs before any frame
        with pytest.raises(ValueError, match="differs"):
            mp4.write(np.zeros((1, 32, 32, 3), np.uint8))
        mp4.write(np.zeros((1, 64, 96, 3), np.uint8))
    reader = FragmentReader()
    mp4 = stream_lib.FragmentedMp4(25, on_data=lambda data: reader.feed(data, 0.0), frame_size=(64, 96))
    with mp4:
        mp4.write(np.random.default_rng(0).integers(0, 255, (50, 64, 96, 3), dtype=np.uint8))
    # Fragments of 1 and 3 frames lead (keyframes at 0.04 and 0.16 s), then about 0.5 s each.
    sizes = [n for _, n in reader.fragments]
    assert sizes[:2] == [1, 3] and sum(sizes) == 50 and all(12 <= n <= 13 for n in sizes[2:-1])
    with pytest.raises(ValueError, match="increasing"):
        stream_lib.FragmentedMp4(25, lead_keyframes=(0.16, 0.04))


# -- the service ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(url, settings, pipeline) of the app over HTTP, with no worker: streams run in the API process."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("stream") / "data", weights_dir=ROOT / "weights",
                        heartbeat_seconds=0.5, lease_seconds=10)
    stream_lib._pipelines.pop("atvgnet", None)
    with serving_http(create_app(settings), lifespan="on") as url:
        yield url, settings, stream_lib.service_pipeline("atvgnet", settings)
    stream_lib._pipelines.pop("atvgnet", None)


def post_stream(url, image=FACE, audio=None, **fields):
    data = {"stream": "true", **fields}
    files = {"image": ("face.jpg", image), "audio": ("voice.wav", audio)}
    return httpx.stream("POST", f"{url}/v1/talking-face", files=files, data=data, timeout=120)


def wait_job(url, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        job = httpx.get(f"{url}/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "canceled") or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def test_streamed_response_decodes_while_it_is_made(server, speech, tmp_path):
    url, settings, pipe = server
    received = b""
    with Gate(pipe, hold_at=5) as gate:       # 49 frames in chunks of 2, then 8: 7 chunks; the 5th waits
        with post_stream(url, audio=wav(speech)) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"] == "video/mp4"
            job_id = response.headers["x-job-id"]
            pieces = response.iter_raw()
            decoded = 0
            while decoded == 0:
                received += next(pieces)
                decoded = len(decode(received, tmp_path, "partial.mp4"))
            # Frames are decodable while the model is still held before its 5th chunk.
            assert gate.calls <= gate.hold_at and not gate.released.is_set()
            assert httpx.get(f"{url}/v1/jobs/{job_id}").json()["status"] == "running"
            assert 1 <= decoded < 49            # at least the first fragment (one frame)
            gate.released.set()
            for piece in pieces:
                received += piece
    frames = decode(received, tmp_path)
    assert frames.shape == (49, 128, 128, 3)
    job = wait_job(url, job_id)
    assert job["status"] == "succeeded", job
    assert job["info"]["precision"] == "fp32" and job["info"]["streamed"] is True   # what made the frames
    # The stored result is the whole MP4, the same frames, labelled.
    stored = httpx.get(f"{url}/v1/jobs/{job_id}/result")
    assert stored.status_code == 200 and stored.headers["content-type"] == "video/mp4"
    assert np.array_equal(decode(stored.content, tmp_path, "stored.mp4"), frames)
    assert b"talkingface atvgnet" in stored.content


def test_streamed_and_rendered_videos_hold_the_same_frames(server, speech, tmp_path, monkeypatch):
    """The encoders get the same frames (at the same chunk size, exactly), and each video
    decodes to them within H.264's loss."""
    url, settings, pipe = server
    from models.perception.mp4 import Mp4Writer

    fed = {"streamed": [], "rendered": []}

    def recording(kind, write):
        def wrapper(self, frames):
            fed[kind].append(np.array(frames))
            return write(self, frames)
        return wrapper

    monkeypatch.setattr(stream_lib, "stream_chunk_frames", lambda pipe: pipe.chunk_frames)
    monkeypatch.setattr(stream_lib, "FIRST_CHUNK_FRAMES", pipe.chunk_frames)
    monkeypatch.setattr(stream_lib.FragmentedMp4, "write", recording("streamed", stream_lib.FragmentedMp4.write))
    monkeypatch.setattr(Mp4Writer, "write", recording("rendered", Mp4Writer.write))
    with post_stream(url, audio=wav(speech)) as response:
        assert response.status_code == 200
        streamed = decode(response.read(), tmp_path, "streamed.mp4")
    # What a worker writes for the same request: service.render, the same provenance.
    (tmp_path / "voice.wav").write_bytes(wav(speech))
    inputs = render.read_inputs(pipe, image=EXAMPLES / "face.jpg", audio=tmp_path / "voice.wav")
    render.render(pipe, inputs, tmp_path / "rendered.mp4", provenance=render.Provenance.from_settings(settings))
    rendered = decode((tmp_path / "rendered.mp4").read_bytes(), tmp_path, "rendered-copy.mp4")

    streamed_in, rendered_in = (np.concatenate(fed[kind]) for kind in ("streamed", "rendered"))
    assert streamed_in.shape == rendered_in.shape == streamed.shape == rendered.shape == (49, 128, 128, 3)
    assert np.array_equal(streamed_in, rendered_in)

    def psnr(a, b):
        error = ((a.astype(np.float64) - b) ** 2).reshape(len(a), -1).mean(1)
        return 10 * np.log10(255 ** 2 / np.maximum(error, 1e-12))

    # Each decodes to those frames within H.264's loss at crf 18 (the streamed encode is
    # x264's zero-latency tuning, the rendered one its default: not bit-identical).
    for decoded in (streamed, rendered):
        assert psnr(decoded, streamed_in).min() > 30
    assert psnr(streamed, rendered).mean() > 33


def test_disconnect_cancels_the_job(server, speech):
    url, settings, pipe = server
    with Gate(pipe, hold_at=3) as gate:
        with post_stream(url, audio=wav(speech)) as response:
            assert response.status_code == 200
            job_id = response.headers["x-job-id"]
            assert gate.waiting.wait(30)
            next(response.iter_raw())
        # The client is gone; the model is let go at its 3rd chunk and stops there.
        deadline = time.monotonic() + 10
        while job_id in stream_lib.running and not stream_lib.running[job_id].stopped.is_set():
            assert time.monotonic() < deadline, "the server did not notice the disconnect"
            time.sleep(0.05)
        gate.released.set()
        job = wait_job(url, job_id)
    assert job["status"] == "canceled", job
    assert job["error"]["code"] == "canceled"
    assert gate.calls == 3           # nothing made after the chunk that was under way


def test_cancel_through_the_jobs_api_stops_the_stream(server, speech):
    url, settings, pipe = server
    with Gate(pipe, hold_at=2) as gate:
        with post_stream(url, audio=wav(speech)) as response:
            assert response.status_code == 200
            job_id = response.headers["x-job-id"]
            assert gate.waiting.wait(30)
            assert httpx.post(f"{url}/v1/jobs/{job_id}/cancel").status_code in (200, 202)
            # The stream's lease keep-alive (every 0.5 s here) hears of it while the model is held.
            deadline = time.monotonic() + 20
            while not stream_lib.running[job_id].stopped.is_set():
                assert time.monotonic() < deadline, "the cancel did not reach the stream"
                time.sleep(0.05)
            gate.released.set()
            response.read()            # the video ends where the model stopped
        job = wait_job(url, job_id)
    assert job["status"] == "canceled", job
    assert gate.calls == 2


def test_slow_reader_holds_the_model_back(server, speech, tmp_path, monkeypatch):
    """Nothing reads the response for a while: the queue fills, the muxer and the model wait;
    the memory held is the bounded queue, not the video. (The queue is made small here so
    that a few seconds of 128x128 video overflow it and ffmpeg's pipes.)"""
    url, settings, pipe = server
    monkeypatch.setattr(stream_lib, "QUEUE_ITEMS", 2)
    monkeypatch.setattr(stream_lib, "READ_BYTES", 4096)
    from service.jobs.store import JobStore

    store = JobStore(settings.db_url)
    audio_path = tmp_path / "long.wav"
    audio_path.write_bytes(wav(np.tile(speech, 3)))        # 6 s: 149 frames, 19 chunks of 8
    spec = {"task": "talking-face", "model": "atvgnet", "options": {},
            "inputs": {"image": _stored(settings, store, "image", FACE, "face.jpg"),
                       "audio": _stored(settings, store, "audio", audio_path.read_bytes(), "long.wav")}}
    row = store.create_running_job(spec, "", stream_lib.streamer_id(store), settings.lease_seconds)
    job = stream_lib.StreamedJob(settings, store, row, pipe)
    job.prepare()
    job.start()
    # Wait until the model stops making chunks: it is waiting for the reader.
    last, still_since = -1, time.monotonic()
    while time.monotonic() - still_since < 1.5:
        if job.chunks_made != last:
            last, still_since = job.chunks_made, time.monotonic()
        time.sleep(0.1)
        assert not job.done.is_set(), "the whole video was made with nobody reading it"
    held = job.chunks_made
    assert held < 19
    assert job.queue.full()
    # The queue's pieces and the one being offered to it: at most 12 KiB here.
    assert job.peak_queued_bytes <= (stream_lib.QUEUE_ITEMS + 1) * stream_lib.READ_BYTES

    async def read_all():
        return b"".join([piece async for piece in job.body()])

    data = asyncio.run(read_all())
    assert job.done.wait(30)
    assert len(decode(data, tmp_path)) == 149
    assert store.get_job(row["id"])["status"] == "succeeded"


def _stored(settings, store, kind, data, name):
    """A file row of ``data`` as an upload would store it; its id."""
    import hashlib

    relative = f"uploads/{hashlib.sha256(data).hexdigest()[:16]}-{name}"
    path = settings.data_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return store.add_file(kind, len(data), hashlib.sha256(data).hexdigest(), name, "", relative)["id"]


def test_second_stream_of_a_face_skips_its_preparation(server, speech):
    url, settings, pipe = server
    flipped = io.BytesIO()
    Image.open(io.BytesIO(FACE)).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped, "JPEG")
    calls = []
    original = pipe.prepare_reference

    def counted(image, face_index=0):
        calls.append(face_index)
        return original(image, face_index)

    pipe.prepare_reference = counted
    try:
        for _ in range(2):
            with post_stream(url, image=flipped.getvalue(), audio=wav(speech[:8000])) as response:
                assert response.status_code == 200
                response.read()
    finally:
        del pipe.prepare_reference
    assert calls == [0]


def test_stream_on_a_model_that_cannot_is_400(server, speech):
    url, settings, _ = server
    models = {m["id"]: m for m in httpx.get(f"{url}/v1/models").json()["data"]}
    assert models["atvgnet"]["stream"] is True
    assert models["davs"]["stream"] is False and models["davs"]["stream_options"] == {"finetune_steps": 0}
    assert "stream_options" not in models["atvgnet"]
    assert all(m["stream"] is False for m in models.values() if m["task"] != "talking-face")
    # DAVS streams only without its test-time fine-tuning (finetune_steps=0).
    with post_stream(url, audio=wav(speech[:8000]), model="davs", finetune_steps="5") as response:
        assert response.status_code == 400
        assert response.read() and response.json()["error"]["code"] == "stream_unsupported"
        assert "finetune_steps=0" in response.json()["error"]["message"]


def test_streams_beyond_the_limit_are_503_and_record_no_job(server, speech, monkeypatch):
    url, settings, pipe = server
    monkeypatch.setattr(settings, "max_streams", 1)
    jobs_before = len(httpx.get(f"{url}/v1/jobs", params={"limit": 200}).json()["data"])
    with Gate(pipe, hold_at=1) as gate:        # the first stream's model is held: it is running
        with post_stream(url, audio=wav(speech)) as first:
            assert first.status_code == 200
            assert gate.waiting.wait(60)
            with post_stream(url, audio=wav(speech)) as second:
                assert second.status_code == 503 and second.headers["Retry-After"] == "5"
                assert second.read() and second.json()["error"]["code"] == "busy"
            gate.released.set()
            first.read()
        job = wait_job(url, first.headers["X-Job-Id"])
    assert job["status"] == "succeeded"
    assert len(httpx.get(f"{url}/v1/jobs", params={"limit": 200}).json()["data"]) == jobs_before + 1
    with post_stream(url, audio=wav(speech[:16000])) as again:    # the slot is free once it ended
        assert again.status_code == 200
        again.read()


# -- the command line ------------------------------------------------------------------------
def test_generate_stream_to_stdout_plays_in_ffmpeg(tmp_path, speech):
    (tmp_path / "voice.wav").write_bytes(wav(speech[:16000]))
    command = ["talkingface", "generate", "--weights", str(DEMO), "--image", str(EXAMPLES / "face.jpg"),
               "--audio", str(tmp_path / "voice.wav"), "--stream", "-o", "-", "-q"]
    done = subprocess.run(command, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert len(decode(done.stdout, tmp_path)) == 24
    assert b"streamed to stdout (24 frames" in done.stderr


@pytest.mark.parametrize("model", ["atvgnet", "davs"])
def test_bench_stream_measures_a_running_server(server, model):
    import argparse

    from models.errors import TalkingFaceError
    from service import bench_stream

    url, _, _ = server
    args = argparse.Namespace(url=url, key=None, repeats=1, seconds=1.0, stream_model=model, chunk_frames=None,
                              json=True, random_weights=False, weights=None, device="cpu", precision=None)
    result = bench_stream.run(args)
    assert result["model"] == model and result["made_by"]["precision"] == "fp32"
    frames = {"atvgnet": 24, "davs": 25}[model]       # the models' frame counts of a 1-s clip
    for measure in ("stream_cached_face", "stream_new_photo"):
        run = result[measure]["runs"][0]
        assert run["frames"] == frames and 0 < run["first_frame_s"] <= run["seconds"], run
    live = result["live"]
    assert live["runs"][0]["frames"] == frames and 0 < live["latency_p50_s"] <= live["latency_max_s"]
    assert model in bench_stream.table(result)
    assert result["lookahead_s"] == {"atvgnet": 0.175, "davs": 0.135}[model]     # voice a frame waits for
    with pytest.raises(TalkingFaceError, match="does not stream; the models that do: atvgnet, davs"):
        bench_stream.run(argparse.Namespace(**{**vars(args), "stream_model": "pg2"}))

