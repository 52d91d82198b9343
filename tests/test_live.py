"""Live sessions over WebSocket (``/v1/live``) against a real server (uvicorn, TCP), with the demo weights.

The frames of a session whose audio arrives in small pieces are compared with those of the
whole clip through the pipeline; the refusals are checked by their closing code and reason.
"""

import contextlib
import hashlib
import json
import socket
import struct
import subprocess
import threading
import time

import cv2
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from models import registry
from models.common.bench import speech_like
from models.perception.image import read_image
from models.types import TalkingFaceInput
from service.app import create_app
from service.provenance import Label, Provenance, watermark
from service.settings import Settings
from tests.conftest import EXAMPLES, ROOT
from tests.test_dashboard_static import serving_http

DEMO = ROOT / "weights" / "demo" / "atvgnet"
FACE = (EXAMPLES / "face.jpg").read_bytes()
KEY = "live-test-key"
METRICS_KEY = "live-metrics-key"
HEADER = struct.Struct(">IIIHH")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``(ws base URL, http client, settings, app)`` of a served app with an API key and the demo weights."""
    import httpx

    keys = [KEY, f"sha256:{hashlib.sha256(METRICS_KEY.encode()).hexdigest()}:metrics"]
    settings = Settings(data_dir=tmp_path_factory.mktemp("live") / "data", weights_dir=DEMO, api_keys=keys,
                        heartbeat_seconds=0.3, lease_seconds=10, device="cpu")
    app = create_app(settings)
    with serving_http(app, lifespan="on") as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
            yield url.replace("http://", "ws://"), http, settings, app


@pytest.fixture(scope="module")
def face_id(server):
    _, http, _, _ = server
    return http.post("/v1/files", files={"file": ("face.jpg", FACE)}).json()["id"]


@pytest.fixture(scope="module")
def clip():
    return speech_like(2.0, seed=3)


def open_session(server, start, key=KEY):
    url = server[0] + "/v1/live" + (f"?key={key}" if key else "")
    return connect(url, max_size=None, open_timeout=30, close_timeout=10)


def start_message(face_id, **fields):
    return json.dumps({"file_id": face_id, **fields})


def read_until_closed(ws, timeout=60):
    """(text messages as dicts, binary messages, (close code, reason))."""
    texts, blobs = [], []
    deadline = time.monotonic() + timeout
    try:
        while True:
            message = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            (blobs if isinstance(message, bytes) else texts).append(
                message if isinstance(message, bytes) else json.loads(message))
    except ConnectionClosed:
        pass
    return texts, blobs, (ws.close_code, ws.close_reason)


def run_session(server, start, audio, piece_sizes, fmt="f32le"):
    """Send ``audio`` in pieces of the sizes ``piece_sizes`` cycles through, then end; everything received."""
    with open_session(server, start) as ws:
        ws.send(start)
        ready = json.loads(ws.recv(timeout=60))
        assert ready["type"] == "ready", ready
        samples = (audio * 32767).astype("<i2") if fmt == "s16le" else audio.astype("<f4")
        begin, i = 0, 0
        while begin < len(samples):
            size = piece_sizes[i % len(piece_sizes)]
            ws.send(samples[begin:begin + size].tobytes())
            begin, i = begin + size, i + 1
        ws.send(json.dumps({"end": True}))
        texts, blobs, closed = read_until_closed(ws)
    return ready, texts, blobs, closed


def frames_of(blobs, output):
    """The frames of ``jpeg``/``rgb`` messages as uint8 RGB, and their headers."""
    frames, headers = [], []
    for blob in blobs:
        index, ms, samples, width, height = HEADER.unpack(blob[:HEADER.size])
        body = blob[HEADER.size:]
        if output == "rgb":
            frame = np.frombuffer(body, np.uint8).reshape(height, width, 3)
        else:
            frame = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        frames.append(frame)
        headers.append((index, ms, samples, width, height))
    return np.stack(frames), headers


@pytest.fixture(scope="module")
def whole_clip(clip):
    """The frames of the whole clip through the pipeline's ordinary (non-live) path, watermarked as every
    output of the service is."""
    pipe = registry.load("atvgnet", weights=DEMO, device="cpu")
    frames = pipe(TalkingFaceInput(image=read_image(FACE), audio=clip, sample_rate=16000)).frames
    return Provenance().mark(frames, Label.of(pipe))


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def test_audio_in_small_pieces_gives_the_frames_of_the_whole_clip(server, face_id, clip, whole_clip):
    # Pieces of 40 ms, odd sizes and one sample: how the audio is cut does not change the frames.
    ready, texts, blobs, closed = run_session(server, start_message(face_id, output="rgb"), clip, [640, 1, 1999, 333])
    assert ready["fps"] == 25 and ready["sample_rate"] == 16000 and ready["header_bytes"] == HEADER.size
    assert (ready["width"], ready["height"]) == whole_clip.shape[2:0:-1]
    frames, headers = frames_of(blobs, "rgb")
    assert frames.shape == whole_clip.shape
    # The networks' sums in other batch sizes round differently: a level at most, on few pixels.
    difference = np.abs(frames.astype(int) - whole_clip.astype(int))
    assert difference.max() <= 2 and (difference > 0).mean() < 0.01
    assert [h[0] for h in headers] == list(range(len(frames)))
    assert [h[1] for h in headers] == [round(i * 40) for i in range(len(frames))]
    received = [h[2] for h in headers]
    assert received == sorted(received) and received[-1] == len(clip)
    assert texts[-1] == {"type": "end", "frames": len(frames), "seconds": len(frames) / 25}
    assert watermark.fits(*frames.shape[1:3])       # the frames are large enough to carry the mark
    assert closed == (1000, "the session ended")
    # The session was recorded as a job.
    job = server[1].get(f"/v1/jobs/{ready['session']}").json()
    assert job["status"] == "succeeded" and job["frames"] == len(frames) and job["inputs"] == {"image": face_id}


def test_jpeg_frames_with_s16le_audio_match_the_whole_clip(server, face_id, clip, whole_clip):
    ready, texts, blobs, closed = run_session(server, start_message(face_id, output="jpeg", format="s16le",
                                                                    jpeg_quality=95, chunk_frames=8), clip, [1600],
                                              fmt="s16le")
    frames, _ = frames_of(blobs, "jpeg")
    assert frames.shape == whole_clip.shape and closed[0] == 1000
    assert min(psnr(a, b) for a, b in zip(frames, whole_clip)) > 30


def test_a_face_sent_in_the_start_message_is_kept_as_a_file(server, clip):
    import base64

    start = json.dumps({"image": base64.b64encode(FACE).decode(), "output": "jpeg"})
    ready, _, blobs, closed = run_session(server, start, clip[:8000], [800])
    assert closed[0] == 1000 and len(blobs) == 12
    assert server[1].get(f"/v1/files/{ready['file_id']}").json()["kind"] == "image"


def test_a_start_image_that_is_not_a_photo_is_refused_and_not_kept(server):
    import base64

    from tests.test_api import wav_bytes

    kept = lambda: sorted(p.name for p in server[2].data_dir.rglob("file_*"))  # noqa: E731
    before = kept()
    with open_session(server, None) as ws:
        ws.send(json.dumps({"image": base64.b64encode(wav_bytes(0.5)).decode()}))
        texts, _, closed = read_until_closed(ws, timeout=30)
    assert closed[0] == 1008 and "is audio, not an image" in closed[1]
    assert kept() == before


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_a_session_without_a_valid_key_is_closed_before_any_work(server, key):
    with open_session(server, None, key=key) as ws:
        _, _, closed = read_until_closed(ws, timeout=10)
    assert closed == (4401, "a valid API key is needed: Authorization: Bearer <key>")


@pytest.mark.parametrize("start, code, error", [
    ("not json", 1008, "invalid_input"),
    (json.dumps({"output": "jpeg"}), 1008, "invalid_input"),
    (json.dumps({"file_id": "file_nope"}), 1008, "file_not_found"),
    (json.dumps({"file_id": "{face}", "sample_rate": 44100}), 1008, "invalid_input"),
    (json.dumps({"file_id": "{face}", "output": "gif"}), 1008, "invalid_input"),
    (json.dumps({"file_id": "{face}", "model": "nope"}), 1008, "unknown_model"),
    (json.dumps({"file_id": "{face}", "model": "davs"}), 1008, "cannot_stream"),
    (json.dumps({"file_id": "{face}", "model": "pg2"}), 1008, "invalid_input"),
    (json.dumps({"file_id": "{face}", "face_index": -1}), 1008, "validation_error"),
])
def test_bad_start_messages_are_refused_with_a_reason(server, face_id, start, code, error):
    with open_session(server, None) as ws:
        ws.send(start.replace("{face}", face_id))
        texts, _, closed = read_until_closed(ws, timeout=30)
    assert texts[-1]["type"] == "error" and texts[-1]["error"]["code"] == error, texts
    assert closed[0] == code and closed[1] and closed[1] in texts[-1]["error"]["message"]


def test_a_model_that_cannot_stream_says_so(server, face_id):
    with open_session(server, None) as ws:
        ws.send(start_message(face_id, model="davs"))
        texts, _, closed = read_until_closed(ws, timeout=30)
    assert closed[0] == 1008 and "model davs cannot make frames as audio arrives" in closed[1]


def test_oversized_and_malformed_audio_messages_close_the_session(server, face_id):
    settings = server[2]
    limit = settings.live_max_message_bytes
    for message, code, error in ((b"\0" * (limit + 4), 1009, "too_large"), (b"\0" * 7, 1003, "invalid_input"),
                                 ('{"volume": 3}', 1003, "invalid_input")):
        with open_session(server, None) as ws:
            ws.send(start_message(face_id, output="jpeg"))
            assert json.loads(ws.recv(timeout=60))["type"] == "ready"
            ws.send(message)
            texts, _, closed = read_until_closed(ws)
        assert closed[0] == code and texts[-1]["error"]["code"] == error, (texts, closed)


def test_a_session_over_the_audio_limit_is_ended(server, face_id, monkeypatch):
    monkeypatch.setattr(server[2], "max_audio_seconds", 1.0)
    with open_session(server, None) as ws:
        ws.send(start_message(face_id, output="jpeg"))
        assert json.loads(ws.recv(timeout=60))["max_seconds"] == 1.0
        for _ in range(15):                 # 1.5 s
            ws.send(np.zeros(1600, "<f4").tobytes())
        texts, _, closed = read_until_closed(ws)
    assert closed == (1008, "the session is over the limit of 1 s of audio")
    assert texts[-1]["error"]["code"] == "too_long"


def test_sessions_beyond_the_limit_are_told_to_try_later(server, face_id, monkeypatch):
    monkeypatch.setattr(server[2], "max_live_sessions", 1)
    with open_session(server, None) as first:
        first.send(start_message(face_id, output="jpeg"))
        assert json.loads(first.recv(timeout=60))["type"] == "ready"
        with open_session(server, None) as second:
            texts, _, closed = read_until_closed(second, timeout=10)
        assert closed[0] == 1013 and "1 live sessions are running" in closed[1]
        assert texts[-1]["error"]["code"] == "too_many_sessions"
        first.send(json.dumps({"end": True}))
        assert read_until_closed(first)[2][0] == 1000


def session_job(server, job_id, statuses=("succeeded", "failed", "canceled"), timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = server[1].get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} is still {job['status']}")


def test_a_client_closing_mid_session_ends_it(server, face_id):
    with open_session(server, None) as ws:
        ws.send(start_message(face_id, output="jpeg"))
        ready = json.loads(ws.recv(timeout=60))
        ws.send(speech_like(1.0).astype("<f4").tobytes())
        assert isinstance(ws.recv(timeout=30), bytes)
    assert session_job(server, ready["session"])["status"] == "canceled"


def test_a_client_gone_mid_session_stops_the_generation(server, face_id):
    ws = contextlib.ExitStack().enter_context(connect(f"{server[0]}/v1/live?key={KEY}", max_size=None))
    ws.send(start_message(face_id, output="rgb", chunk_frames=1))
    ready = json.loads(ws.recv(timeout=60))
    audio = speech_like(30.0).astype("<f4")

    def send_all():
        with contextlib.suppress(Exception):
            for begin in range(0, len(audio), 640):     # 30 s of audio, faster than it is spoken
                ws.send(audio[begin:begin + 640].tobytes())

    threading.Thread(target=send_all, daemon=True).start()
    assert isinstance(ws.recv(timeout=30), bytes)       # frames are coming
    ws.socket.shutdown(socket.SHUT_RDWR)                # the client vanishes: no closing handshake
    ws.socket.close()
    job = session_job(server, ready["session"])
    assert job["status"] == "canceled"
    # The model stopped within a chunk or two, far from the clip's 749 frames.
    assert job["info"]["frames_made"] < 300, job["info"]
    assert server[3].state.live.active == 0 and not server[3].state.live.sessions


def test_a_client_that_does_not_read_stops_the_server_reading_its_audio(server, face_id, monkeypatch):
    from service.api import live

    monkeypatch.setattr(live, "BACKLOG_SECONDS", 0.5)
    app = server[3]
    # A client with a small receive buffer and queue, and frames of the whole photo (900 KB each,
    # RGB): the sockets hold few of them.
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    client.connect(("127.0.0.1", int(server[0].rsplit(":", 1)[1])))
    with connect(f"{server[0]}/v1/live?key={KEY}", sock=client, max_size=None, max_queue=4, open_timeout=30) as ws:
        ws.send(start_message(face_id, output="rgb", paste_back=True))
        ready = json.loads(ws.recv(timeout=60))
        audio = speech_like(3.0).astype("<f4")
        for begin in range(0, len(audio), 640):
            ws.send(audio[begin:begin + 640].tobytes())
        (session,) = app.state.live.sessions
        deadline = time.monotonic() + 60
        while not session.outbox.full() and session.samples < len(audio) and time.monotonic() < deadline:
            time.sleep(0.1)
        received = session.samples
        time.sleep(1.0)
        # The unread frames wait in a short queue: the model waits for room; the audio waits for the model
        # up to the backlog's limit, the rest unread.
        assert session.outbox.full() and session.backlog >= 8000 and session.samples == received < len(audio)
        assert session.stream.frames_out - session.sent < 60
        ws.send(json.dumps({"end": True}))
        _, blobs, closed = read_until_closed(ws, timeout=120)       # reading again lets the audio in
    assert closed[0] == 1000 and len(blobs) == 74
    assert session_job(server, ready["session"])["status"] == "succeeded"


def test_canceling_the_job_ends_the_session(server, face_id):
    with open_session(server, None) as ws:
        ws.send(start_message(face_id, output="jpeg"))
        ready = json.loads(ws.recv(timeout=60))
        assert server[1].post(f"/v1/jobs/{ready['session']}/cancel").status_code == 200
        texts, _, closed = read_until_closed(ws, timeout=30)
    assert closed == (1000, "the session's job was canceled")
    assert session_job(server, ready["session"])["status"] == "canceled"


def test_live_metrics_count_sessions_and_frames(server, face_id, clip):
    def sent():
        text = server[1].get("/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"}).text
        return text, float(next(line.split()[1] for line in text.splitlines()
                                if line.startswith("talkingface_live_frames_sent_total")))

    _, before = sent()
    _, _, blobs, _ = run_session(server, start_message(face_id, output="jpeg"), clip, [1600])
    text, after = sent()
    assert after - before == len(blobs) == 49
    assert "talkingface_live_sessions 0.0" in text
    count = next(line for line in text.splitlines() if line.startswith("talkingface_live_frame_latency_seconds_count"))
    assert float(count.split()[1]) >= 49


def test_fmp4_output_is_a_playable_mp4_of_the_same_frames_and_the_voice(server, face_id, clip, whole_clip, tmp_path,
                                                                       ffprobe):
    from models.perception.decode import ffmpeg_exe

    ready, texts, blobs, closed = run_session(server, start_message(face_id), clip, [640])
    assert ready["output"] == "fmp4" and ready["header_bytes"] == 0 and closed[0] == 1000
    assert blobs[0][4:8] == b"ftyp" and texts[-1]["frames"] == len(whole_clip)
    path = tmp_path / "live.mp4"
    path.write_bytes(b"".join(blobs))
    probe = json.loads(subprocess.run([ffprobe, "-v", "error", "-count_frames", "-show_streams", "-of", "json",
                                       str(path)], capture_output=True, check=True).stdout)
    kinds = {stream["codec_type"]: stream for stream in probe["streams"]}
    assert kinds["video"]["codec_name"] == "h264" and kinds["audio"]["codec_name"] == "aac"
    assert int(kinds["video"]["nb_read_frames"]) == len(whole_clip)
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-fps_mode", "passthrough", "-f", "rawvideo",
                          "-pix_fmt", "rgb24",
                          "pipe:1"], capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(whole_clip.shape)
    assert min(psnr(a, b) for a, b in zip(frames, whole_clip)) > 30


def test_bench_stream_counts_the_frames_of_fragments_as_they_arrive():
    from service.bench_stream import FragmentReader
    from service.stream import FragmentedMp4

    mp4 = FragmentedMp4(fps=25, audio=speech_like(1.2), sample_rate=16000)
    mp4.write(np.random.default_rng(0).integers(0, 255, (30, 64, 64, 3), dtype=np.uint8))
    data = mp4.close()
    reader = FragmentReader()
    for begin in range(0, len(data), 1000):
        reader.feed(data[begin:begin + 1000], float(begin))
    assert reader.video_track is not None and reader.header_at < reader.fragments[0][0]
    assert reader.frames == 30 and len(reader.fragments) >= 2 and reader.fragments[0][1] <= 13
