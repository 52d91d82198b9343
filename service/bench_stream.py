"""``talkingface bench stream``: how soon a streamed talking face starts, whether it keeps up, live latency.

    talkingface bench stream --random-weights --weights DIR     # the default model at the published size
    talkingface bench stream --weights DIR                      # weights of the default model
    talkingface bench stream --model NAME --random-weights      # another model that streams
    talkingface bench stream --url http://host:8000 --key KEY   # a server that is already up

A ``talkingface serve --workers 0`` process is started on a data dir of its own (streamed
requests and live sessions run in the API process, not in workers), or ``--url`` is used.
A first streamed request and a first live session load the model; they are not counted.
Each measure is taken ``--repeats`` times; the medians are reported, with every run.

1. First frame: ``POST /v1/talking-face`` with ``stream=true``, timed from the request to the
   first decodable frame on the client: the end of the first media fragment (``moof`` +
   ``mdat`` with video samples) after the header (``ftyp`` + ``moov``). For a cached face
   (the same photo again) and a new photo (each request a photo the server has not seen).
2. Sustained: frames per second over the ``--seconds`` clip, counted in the fragments'
   ``trun`` boxes, from the request to the last fragment, against real time (25 fps); and
   the stall a player starting at the first frame would meet.
3. Live: a ``/v1/live`` session (JPEG frames), the voice sent at its real pace in 40-ms
   chunks; for each frame, the time from the audio chunk that completed it (its header
   says how many samples the server had) leaving the client to the frame arriving: p50,
   p99, max. A frame also waits for the voice past its own time that its features read
   (the pipeline's ``lookahead_seconds``), which comes on top.

A model that streams only with some options (its ``stream_options``) gets them in its
requests and sessions.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import httpx
import numpy as np

from models.common.bench import EXAMPLE_IMAGE, speech_like
from models.errors import TalkingFaceError

FPS = 25.0
RATE = 16000
LIVE_CHUNK = 640                  # samples a live message: 40 ms
HEADER = struct.Struct(">IIIHH")  # a live JPEG frame's header (service.api.live)
CONTAINERS = {b"moov", b"trak", b"mdia", b"moof", b"traf"}


# ---------------------------------------------------------------------------------------
# Reading fragmented MP4 as it arrives


class FragmentReader:
    """Top-level MP4 boxes out of bytes fed in pieces; notes when each media fragment is complete.

    ``fragments`` is ``[(arrival time, video frames in it)]``, a fragment counted when its
    ``mdat`` has fully arrived (then its frames can be decoded).
    """

    def __init__(self):
        self.buffer = bytearray()
        self.video_track = None
        self.pending_frames = None        # video samples of the last moof, until its mdat is in
        self.fragments = []
        self.header_at = None

    def feed(self, data: bytes, now: float):
        self.buffer += data
        while len(self.buffer) >= 8:
            size, kind = struct.unpack(">I4s", self.buffer[:8])
            header = 8
            if size == 1:
                if len(self.buffer) < 16:
                    return
                size, header = struct.unpack(">Q", self.buffer[8:16])[0], 16
            if size < header or len(self.buffer) < size:
                return
            payload = bytes(self.buffer[header:size])
            del self.buffer[:size]
            if kind == b"moov":
                self.video_track = _video_track(payload)
                self.header_at = now
            elif kind == b"moof":
                self.pending_frames = _video_samples(payload, self.video_track)
            elif kind == b"mdat" and self.pending_frames is not None:
                self.fragments.append((now, self.pending_frames))
                self.pending_frames = None

    @property
    def frames(self) -> int:
        return sum(n for _, n in self.fragments)


def _boxes(data: bytes):
    """(type, payload) of the boxes in ``data``, one level."""
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[offset + 8:offset + 16])[0], 16
        if size < header:
            return
        yield kind, data[offset + header:offset + size]
        offset += size


def _find(data: bytes, path):
    """Payloads of the boxes at ``path`` (a list of types) under ``data``."""
    if not path:
        yield data
        return
    for kind, payload in _boxes(data):
        if kind == path[0]:
            yield from _find(payload, path[1:])


def _video_track(moov: bytes):
    for trak in _find(moov, [b"trak"]):
        for hdlr in _find(trak, [b"mdia", b"hdlr"]):
            if hdlr[8:12] == b"vide":
                for tkhd in _find(trak, [b"tkhd"]):
                    offset = 20 if tkhd[0] == 1 else 12        # version 1: 64-bit times
                    return struct.unpack(">I", tkhd[offset:offset + 4])[0]
    return None


def _video_samples(moof: bytes, track) -> int:
    count = 0
    for traf in _find(moof, [b"traf"]):
        ids = [struct.unpack(">I", tfhd[4:8])[0] for tfhd in _find(traf, [b"tfhd"])]
        if track is None or track in ids:
            count += sum(struct.unpack(">I", trun[4:8])[0] for trun in _find(traf, [b"trun"]))
    return count


# ---------------------------------------------------------------------------------------
# The server


class Server:
    """``talkingface serve --workers 0`` on a data dir of its own."""

    def __init__(self, data_dir, weights, device, precision=None):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = dict(os.environ, TALKINGFACE_DATA_DIR=str(data_dir), TALKINGFACE_DEVICE=device)
        env.pop("TALKINGFACE_API_KEYS", None)
        if weights is not None:
            env["TALKINGFACE_WEIGHTS_DIR"] = str(weights)
        if precision is not None:
            env["TALKINGFACE_PRECISION"] = precision
        self.log = open(Path(data_dir).parent / "server.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port), "--workers", "0"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}; see {self.log.name}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/livez", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start within 120 s")
            time.sleep(0.2)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def streaming_models() -> list[str]:
    """The talking-face models that can stream (``can_stream``), in registry order."""
    from models import registry

    return [name for name, spec in registry.REGISTRY.items()
            if spec.task == "talking-face" and registry.pipeline_class(name).can_stream]


def model_fields(model: str) -> dict:
    """The request fields that make ``model`` stream: its name and its ``stream_options``."""
    from models import registry

    return {"model": model, **registry.pipeline_class(model).stream_options}


def _random_weights(arrays, folder: Path, model: str) -> Path:
    """A weights folder of ``model`` at the published size with random networks: its system's
    ``bench.random_weights_folder`` (``models/<system>/bench.py``), given ``arrays`` (``--weights``)."""
    import importlib

    from models import registry

    system = registry.pipeline_class(model).__module__.rpartition(".")[0]
    return importlib.import_module(f"{system}.bench").random_weights_folder(folder, arrays)


# ---------------------------------------------------------------------------------------
# The measures


def _wav(audio) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def _new_photo(seed: int) -> bytes:
    """The example photo with a little noise: a photo the server has never seen."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photo = np.asarray(Image.open(EXAMPLE_IMAGE).convert("RGB"), dtype=np.int16)
    photo = np.clip(photo + rng.integers(-2, 3, photo.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def streamed_request(client: httpx.Client, photo: bytes, voice: bytes, model: str) -> dict:
    """One ``stream=true`` request: time to the first decodable frame, frames and their pace."""
    reader = FragmentReader()
    start = time.perf_counter()
    files = {"image": ("face.jpg", photo, "image/jpeg"), "audio": ("voice.wav", voice, "audio/wav")}
    data = {"stream": "true", **{k: str(v) for k, v in model_fields(model).items()}}
    with client.stream("POST", "/v1/talking-face", files=files, data=data) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"POST /v1/talking-face stream=true: {response.status_code} {response.text[:300]}")
        for data in response.iter_raw():
            reader.feed(data, time.perf_counter())
    if not reader.fragments:
        raise RuntimeError("the streamed response held no video fragment")
    job = response.headers.get("x-job-id")
    first, last = reader.fragments[0][0], reader.fragments[-1][0]
    # A player starting at the first frame: how long it would wait for later fragments.
    stall, shown = 0.0, 0
    for arrived, frames in reader.fragments:
        stall = max(stall, arrived - (first + shown / FPS))
        shown += frames
    return {"first_frame_s": first - start, "frames": reader.frames, "seconds": last - start,
            "fps": reader.frames / (last - start), "stall_s": stall, "job": job}


def live_session(ws_url: str, headers: dict, file_id: str, audio: np.ndarray, model: str,
                 chunk_frames=None) -> dict:
    """One live session at real pace: latencies from an audio chunk sent to the frames it completed."""
    from websockets.sync.client import connect

    start = {"file_id": file_id, "output": "jpeg", "format": "f32le", "sample_rate": RATE, **model_fields(model)}
    if chunk_frames:
        start["chunk_frames"] = chunk_frames
    sent = {}                                   # samples sent in all -> when
    latencies, frames = [], 0
    opened = time.perf_counter()
    with connect(ws_url, additional_headers=headers, max_size=None, open_timeout=60) as ws:
        ws.send(json.dumps(start))
        ready = json.loads(ws.recv(timeout=120))
        if ready.get("type") != "ready":
            raise RuntimeError(f"the live session was refused: {ready}")
        ready_s = time.perf_counter() - opened
        first_sent = time.perf_counter()

        def send_voice():
            for k, begin in enumerate(range(0, len(audio), LIVE_CHUNK)):
                delay = first_sent + k * LIVE_CHUNK / RATE - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                piece = audio[begin:begin + LIVE_CHUNK]
                sent[begin + len(piece)] = time.perf_counter()
                ws.send(piece.astype("<f4").tobytes())
            ws.send(json.dumps({"end": True}))

        sender = threading.Thread(target=send_voice, daemon=True)
        sender.start()
        first_frame = None
        with contextlib.suppress(Exception):
            while True:
                message = ws.recv(timeout=120)
                if isinstance(message, str):
                    continue
                now = time.perf_counter()
                _, _, samples, _, _ = HEADER.unpack(message[:HEADER.size])
                first_frame = first_frame or now
                frames += 1
                if samples in sent:
                    latencies.append(now - sent[samples])
        sender.join()
    if not latencies:
        raise RuntimeError("the live session sent no frame")
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    return {"ready_s": ready_s, "first_frame_s": first_frame - first_sent, "frames": frames,
            "latency_p50_s": pick(0.5), "latency_p99_s": pick(0.99), "latency_max_s": latencies[-1]}


def _median(runs, key):
    return round(statistics.median(run[key] for run in runs), 3)


# ---------------------------------------------------------------------------------------
# The command


def run(args) -> dict | str:
    """The ``talkingface bench stream`` subcommand: a table, or with ``--json`` the numbers."""
    repeats = max(1, args.repeats)
    seconds = args.seconds or 10.0
    model = getattr(args, "stream_model", None) or default_model()
    if model not in streaming_models():
        raise TalkingFaceError(f"--model {model} does not stream; the models that do: {', '.join(streaming_models())}")
    with contextlib.ExitStack() as stack:
        server = None
        if args.url:
            url = args.url.rstrip("/")
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-stream-")))
            weights = args.weights
            if args.random_weights:
                (folder / "weights").mkdir()
                weights = _random_weights(args.weights, folder / "weights", model)
            server = Server(folder / "data", weights, args.device, getattr(args, "precision", None))
            stack.callback(server.stop)
            url = server.url
        headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
        client = stack.enter_context(httpx.Client(base_url=url, headers=headers, timeout=600))
        voice = speech_like(seconds)
        wav = _wav(voice)
        cached_photo = (Path(EXAMPLE_IMAGE)).read_bytes()

        # Warm-up: the model loads, the face of the example photo is cached.
        streamed_request(client, cached_photo, _wav(voice[:RATE]), model)
        cached = [streamed_request(client, cached_photo, wav, model) for _ in range(repeats)]
        new = [streamed_request(client, _new_photo(seed), wav, model) for seed in range(repeats)]

        file_id = client.post("/v1/files", files={"file": ("face.jpg", cached_photo)}).json()["id"]
        ws_url = url.replace("http", "ws", 1) + "/v1/live"
        live_session(ws_url, headers, file_id, voice[:RATE], model, args.chunk_frames)
        live = [live_session(ws_url, headers, file_id, voice, model, args.chunk_frames) for _ in range(repeats)]
        made_by = job_info(client, cached[0]["job"])

    result = {
        "model": model, "lookahead_s": lookahead_seconds(model),
        "server": args.url or "talkingface serve --workers 0 (started for this run)",
        "weights": "random (published size)" if args.random_weights else (args.weights or "the server's"),
        "made_by": made_by, "clip_seconds": seconds, "repeats": repeats,
        "stream_cached_face": {"first_frame_s": _median(cached, "first_frame_s"), "fps": _median(cached, "fps"),
                               "realtime_factor": round(_median(cached, "fps") / FPS, 3),
                               "stall_s": _median(cached, "stall_s"), "runs": _rounded(cached)},
        "stream_new_photo": {"first_frame_s": _median(new, "first_frame_s"), "fps": _median(new, "fps"),
                             "realtime_factor": round(_median(new, "fps") / FPS, 3),
                             "stall_s": _median(new, "stall_s"), "runs": _rounded(new)},
        "live": {"latency_p50_s": _median(live, "latency_p50_s"), "latency_p99_s": _median(live, "latency_p99_s"),
                 "latency_max_s": _median(live, "latency_max_s"), "first_frame_s": _median(live, "first_frame_s"),
                 "ready_s": _median(live, "ready_s"), "chunk_frames": args.chunk_frames or "server default",
                 "runs": _rounded(live)},
    }
    return result if args.json else table(result)


def default_model() -> str:
    """The talking-face model a request gets without naming one (the service's setting)."""
    from service.settings import Settings

    return Settings().default_model


def lookahead_seconds(model: str) -> float:
    """Voice past a frame's start that ``model``'s streamed frames wait for."""
    from models import registry

    return registry.pipeline_class(model).lookahead_seconds


def job_info(client, job_id) -> dict:
    """What made a streamed job's frames (weights, device, precision), as its record says."""
    if not job_id:
        return {}
    info = client.get(f"/v1/jobs/{job_id}").json().get("info") or {}
    return {k: info[k] for k in ("weights", "device", "precision") if k in info}


def _rounded(runs):
    return [{k: round(v, 3) if isinstance(v, float) else v for k, v in run.items() if k != "job"} for run in runs]


def table(result: dict) -> str:
    """The numbers as a table of medians."""
    rows = [("stream=true, cached face", result["stream_cached_face"]), ("stream=true, new photo",
                                                                        result["stream_new_photo"])]
    made_by = ", ".join(f"{k} {v}" for k, v in result["made_by"].items())
    lines = [f"{result['model']}, weights: {result['weights']} ({made_by}); {result['clip_seconds']:g}-s clip, "
             f"medians of {result['repeats']} runs", "",
             f"{'':28}{'first frame':>12}{'frames/s':>10}{'x real time':>12}{'stall':>8}"]
    for name, r in rows:
        lines.append(f"{name:28}{r['first_frame_s']:>11.3f}s{r['fps']:>10.1f}{r['realtime_factor']:>12.2f}"
                     f"{r['stall_s']:>7.2f}s")
    live = result["live"]
    lines += ["", f"{'':28}{'p50':>10}{'p99':>10}{'max':>10}{'first frame':>13}{'ready':>9}",
              f"{'live: chunk sent -> frames':28}{live['latency_p50_s']:>9.3f}s{live['latency_p99_s']:>9.3f}s"
              f"{live['latency_max_s']:>9.3f}s{live['first_frame_s']:>12.3f}s{live['ready_s']:>8.3f}s",
              "", f"live latency is beyond the model's look-ahead ({result['model']}: "
                  f"{result['lookahead_s']:.3f} s of voice past each frame's start)"]
    return "\n".join(lines)
