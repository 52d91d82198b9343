"""Live sessions: ``/v1/live``, a WebSocket that turns audio sent as it is spoken into a talking face.

The client opens ``ws://host/v1/live`` (the API key as ``Authorization: Bearer <key>``,
or ``?key=<key>`` from a browser, which cannot set the header) and talks in this order:

1. One text message, the start, as JSON::

       {"model": "<name>",             # optional: the default talking-face model
        "file_id": "file_...",         # a face uploaded before with POST /v1/files, or
        "image": "<base64 JPEG/PNG>",  # the photo itself (kept as a file; its id comes back)
        "output": "fmp4",              # "fmp4" (default), "jpeg" or "rgb"
        "sample_rate": 16000,          # of the audio sent: the model's rate (16000 for ATVGnet)
        "format": "f32le",             # "f32le" (float32 in [-1, 1]) or "s16le", mono, little-endian
        "chunk_frames": 4,             # optional: frames per network call (latency <-> throughput)
        "jpeg_quality": 85,            # optional, output "jpeg" only
        "paste_back": false, "face_index": 0}   # and any option the model declares

2. Binary messages of PCM audio, each any length up to ``live_max_message_bytes``, as
   the audio arrives (40-100 ms pieces from a microphone or a text-to-speech engine).
3. ``{"end": true}`` when the audio is over: the server makes the frames of the look-ahead
   it held back, sends them and closes with code 1000. Closing instead ends the session
   at once and stops the generation.

The server answers with text messages (JSON, each with a ``type``):

- ``{"type": "ready", "session": <job id>, "model", "fps", "sample_rate", "format",
  "output", "header_bytes", "max_seconds", "file_id"}`` once the face is found and the
  model loaded: start sending audio then;
- ``{"type": "end", "frames": n, "seconds": s}`` before the closing code 1000;
- ``{"type": "error", "error": {"code", "message"}}`` before a closing code other than 1000;

and binary messages of media:

- ``fmp4``: fragmented MP4 (H.264, and the audio sent as AAC) to append, in order, to a
  Media Source Extensions ``SourceBuffer`` or a file: the first message starts with the
  initialisation segment;
- ``jpeg`` and ``rgb``: one frame a message, a 16-byte header then the picture. The header
  is big-endian ``uint32 frame index, uint32 presentation time in ms (index / fps),
  uint32 audio samples received when the frame was made, uint16 width, uint16 height``;
  the picture is a JPEG, or ``height * width * 3`` bytes of RGB (a client that draws
  frames itself, with no decoding and no loss).

Closing codes: 1000 the session ended (``{"end": true}``, or its job was canceled);
1003 a message of the wrong kind; 1008 a request refused (a bad start message, an
unknown file, a model that cannot stream, too long a session, no message for
``body_timeout_seconds``); 1009 a message over the size limit; 1011 the server failed;
1013 too many live sessions at once (try again later); 4401 no valid API key (checked by
``RequestGuard`` before anything else). The reason says what happened.

Memory stays bounded: the model runs in a thread of the session's own and its frames go
out through a short queue (``OUTBOX``). A client that stops reading fills it and the
model waits; the audio it goes on sending is read until ``BACKLOG_SECONDS`` of it wait
for the model, then no more is read (its sending blocks). A model slower than the voice
falls behind the same way: the latency grows while the backlog does, and a session that
stays more than ``BACKLOG_SECONDS`` behind can be dropped by the server's WebSocket
keepalive (its pings go unanswered while no audio is read).

Each session is recorded as a job of task ``talking-face`` (inputs ``{"image": file id}``):
``running`` while it lasts, then ``succeeded`` after ``{"end": true}``, ``canceled`` when
the client went away or the job was canceled (``DELETE /v1/jobs/{id}`` ends the session),
``failed`` on an error. It has no result file: the frames went to the client.
"""

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import io
import json
import logging
import struct
import threading
import time

import cv2
import numpy as np
from fastapi import APIRouter, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from starlette.websockets import WebSocketState

from models import registry
from models.errors import TalkingFaceError, WeightsMissing
from service import media
from service.api.deps import ANONYMOUS, PRINCIPAL_SCOPE_KEY
from service.api.errors import APIError
from service.api.files import get_file_or_404, remove_file, save_upload
from service.api.jobs import check_model
from service.jobs.store import JobStatus, LeaseLost
from service.prometheus import live_metrics
from service.provenance import Label, Provenance
from service.storage import StorageUnavailable, storage_for
from service.stream import FIRST_CHUNK_FRAMES, FragmentedMp4, service_pipeline, streamer_id

log = logging.getLogger("talkingface.live")
router = APIRouter(tags=["live"])

OUTPUTS = ("fmp4", "jpeg", "rgb")
FORMATS = {"f32le": np.dtype("<f4"), "s16le": np.dtype("<i2")}
# Fields of the start message that are the session's; any other is an option of the model.
START_FIELDS = ("model", "file_id", "image", "output", "sample_rate", "format", "chunk_frames", "jpeg_quality")
HEADER = struct.Struct(">IIIHH")    # frame index, time in ms, audio samples in, width, height
BACKLOG_SECONDS = 30.0     # audio received and not yet given to the model, at most (2 MB of float32 at 16 kHz)
OUTBOX = 25                # frames (fMP4 fragments) made and not yet sent
CHUNK_FRAMES = 4           # frames per network call unless the client says: 0.16 s of audio at 25 fps
MAX_CHUNK_FRAMES = 64

CLOSE_NORMAL, CLOSE_UNSUPPORTED, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_ERROR, CLOSE_TRY_LATER = (
    1000, 1003, 1008, 1009, 1011, 1013)
CLOSE_UNAUTHORIZED = 4401


class SessionEnd(Exception):
    """Ends a session: the error message sent, then the closing ``code`` with a reason."""

    def __init__(self, code: int, error: str, message: str):
        super().__init__(message)
        self.code, self.error, self.message = code, error, message


class LiveState:
    """What a process's live sessions share: how many are open, and those generating."""

    def __init__(self):
        self.active = 0             # sessions open, ready or not
        self.sessions = set()       # sessions generating

    @staticmethod
    def of(app) -> "LiveState":
        if not hasattr(app.state, "live"):
            app.state.live = LiveState()
        return app.state.live


# ---------------------------------------------------------------------------------------
# The start message


def _parse_start(text, settings):
    """The start message as ``(model, session fields, model options)``; SessionEnd when it is refused."""
    try:
        start = json.loads(text)
    except ValueError:
        raise SessionEnd(CLOSE_POLICY, "invalid_input", "the first message must be a JSON object") from None
    if not isinstance(start, dict):
        raise SessionEnd(CLOSE_POLICY, "invalid_input", "the first message must be a JSON object")
    fields = {k: start[k] for k in START_FIELDS if k in start}
    options = {k: v for k, v in start.items() if k not in START_FIELDS}
    try:
        model, options = check_model(fields.get("model"), "talking-face", options, settings)
    except APIError as exc:
        raise SessionEnd(CLOSE_POLICY, exc.code, exc.message) from None
    pipeline_class = registry.pipeline_class(model)
    streams = getattr(pipeline_class, "streams", None)
    if streams is None or not streams(options):
        condition = pipeline_class.stream_condition()     # the options it streams with
        streams_with = f"; it does {condition}" if condition else ""
        raise SessionEnd(CLOSE_POLICY, "cannot_stream", f"model {model} cannot make frames as audio arrives "
                         f"(with these options{streams_with}); use POST /v1/talking-face for a whole clip")
    if ("file_id" in fields) == ("image" in fields):
        raise SessionEnd(CLOSE_POLICY, "invalid_input", "give the face as 'file_id' (POST /v1/files) or "
                                                        "'image' (base64), one of them")
    for name in ("file_id", "image"):
        if name in fields and not (isinstance(fields[name], str) and fields[name]):
            raise SessionEnd(CLOSE_POLICY, "invalid_input", f"{name} must be a non-empty string")
    fields.setdefault("output", "fmp4")
    if fields["output"] not in OUTPUTS:
        raise SessionEnd(CLOSE_POLICY, "invalid_input", f"output must be one of {', '.join(OUTPUTS)}")
    fields.setdefault("format", "f32le")
    if fields["format"] not in FORMATS:
        raise SessionEnd(CLOSE_POLICY, "invalid_input", f"format must be one of {', '.join(FORMATS)}")
    rate = pipeline_class.sample_rate
    fields.setdefault("sample_rate", rate)
    if fields["sample_rate"] != rate or isinstance(fields["sample_rate"], bool):
        raise SessionEnd(CLOSE_POLICY, "invalid_input", f"model {model} takes audio at {rate} Hz: send it at that "
                         f"sample_rate (a browser: new AudioContext({{sampleRate: {rate}}}))")
    numbers = (("chunk_frames", 1, MAX_CHUNK_FRAMES, CHUNK_FRAMES), ("jpeg_quality", 10, 100, 85))
    for name, low, high, default in numbers:
        value = fields.setdefault(name, default)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high):
            raise SessionEnd(CLOSE_POLICY, "invalid_input", f"{name} must be a whole number from {low} to {high}")
    return model, fields, options


async def _face(fields, settings, store, principal):
    """``(file row, a function decoding the photo)``: the start message's face, checked and stored."""
    if "image" in fields:
        try:
            data = base64.b64decode(fields["image"], validate=True)
        except (binascii.Error, ValueError):
            raise SessionEnd(CLOSE_POLICY, "invalid_input", "image is not valid base64") from None
        upload = UploadFile(io.BytesIO(data), filename="live-face", size=len(data))
        try:
            row = await save_upload(upload, settings, store, "image", owner=principal.owner)
        except APIError as exc:
            raise SessionEnd(CLOSE_TRY_LATER if exc.status >= 500 else CLOSE_POLICY, exc.code, exc.message) from None
        if row["kind"] != "image":          # an upload of another kind: not kept
            with contextlib.suppress(APIError):     # a bucket out of reach: the sweep removes it later
                await run_in_threadpool(remove_file, row, settings, store)
    else:
        try:
            row = await run_in_threadpool(get_file_or_404, store, fields["file_id"], principal)
        except APIError:
            raise SessionEnd(CLOSE_POLICY, "file_not_found", f"no file {fields['file_id']}") from None
    if row["kind"] != "image":
        raise SessionEnd(CLOSE_POLICY, "invalid_input", f"file {row['id']} is {row['kind']}, not an image")
    key = row["path"]

    def read_photo():
        with storage_for(settings).open_local(key) as path:
            return media.read_image(str(path), settings.max_image_pixels)

    return row, read_photo


# ---------------------------------------------------------------------------------------
# The session's job row


class JobRecord:
    """The session as a job: running from the start under this process's name (as a streamed
    request's job, ``service.stream``: no worker claims it, and if the process dies its lease
    runs out and the store fails it), its lease renewed while the session lasts, then its
    final state."""

    def __init__(self, store, settings, owner, model, inputs, options):
        self.store, self.settings = store, settings
        self.worker = streamer_id(store)
        spec = {"task": "talking-face", "model": model, "inputs": inputs, "options": options}
        self.id = store.create_running_job(spec, owner, self.worker, settings.lease_seconds)["id"]
        self.held = True

    def heartbeat(self) -> bool:
        """Renew the lease; True when the job was canceled (the session must end)."""
        if not self.held:
            return False
        try:
            return self.store.heartbeat(self.id, self.worker, self.settings.lease_seconds)
        except LeaseLost:
            self.held = False
            return False

    def finish(self, status, frames, info, error=None):
        if self.held:
            code, message = error or (None, None)
            self.store.finish(self.id, self.worker, status, error_code=code, error_message=message,
                              frames=frames, generated_at=time.time(), info=info)
            self.held = False


# ---------------------------------------------------------------------------------------
# The session


class _Stopped(Exception):
    pass


_END = object()      # in the inbox: the client said the audio is over
_DONE = object()     # in the outbox: every frame is out


class Session:
    """One live session: a receiving task, a sending task and the generation thread between them."""

    def __init__(self, websocket: WebSocket, stream, fields, settings, metrics, label):
        self.websocket, self.stream, self.settings, self.metrics = websocket, stream, settings, metrics
        # Frames carry the invisible watermark, and the fMP4 the label, as every output does.
        self.labels, self.label = Provenance.from_settings(settings), label
        self.output, self.fps = fields["output"], float(stream.fps)
        self.dtype = FORMATS[fields["format"]]
        self.jpeg_quality = fields["jpeg_quality"]
        self.loop = asyncio.get_running_loop()
        # Audio waits here for the model: read at once (so the connection's pings are answered and a
        # voice sent faster than it is spoken is taken), up to BACKLOG_SECONDS of it.
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.backlog = 0            # samples in the inbox
        self.room = asyncio.Condition()
        self.outbox: asyncio.Queue = asyncio.Queue(OUTBOX)
        self.stop = threading.Event()
        self.samples = 0            # audio samples received
        self.frames = 0             # frames (or fMP4 fragments' frames) made
        self.sent = 0               # frames sent
        self.rate = int(fields["sample_rate"])
        self.max_samples = int(settings.max_audio_seconds * self.rate)
        self.muxer = self._muxer() if self.output == "fmp4" else None
        self.thread = threading.Thread(target=self._generate, name="live-session", daemon=True)

    # -- the generation thread ------------------------------------------------------------
    def _wait(self, coroutine):
        """Run ``coroutine`` on the event loop and wait for it, giving up when the session stops."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        while True:
            try:
                return future.result(timeout=0.2)
            except concurrent.futures.TimeoutError:
                if self.stop.is_set():
                    future.cancel()
                    raise _Stopped() from None

    def _generate(self):
        try:
            if self.muxer is not None:
                self.muxer.open()           # ffmpeg starts while the first audio comes
            while not self.stop.is_set():
                item = self._wait(self._take())
                if item is _END:
                    for frames in self.stream.close_chunks():
                        self._emit(frames, time.monotonic())
                    if self.muxer is not None and self.muxer.frames_written:
                        self.muxer.close()          # the last fragment goes out through _fragment
                    self._wait(self.outbox.put((_DONE, None, 0)))
                    return
                samples, arrived = item
                if self.muxer is not None:
                    self.muxer.write_audio(samples)
                # Chunk by chunk: the first frames go out while the model makes the next.
                for frames in self.stream.push_chunks(samples):
                    self._emit(frames, arrived)
        except _Stopped:
            pass
        except Exception as exc:  # the client is told; the traceback stays in the log
            if self.stop.is_set():
                return                              # the session ended under it (the muxer is stopped)
            if not isinstance(exc, TalkingFaceError):
                log.exception("live session failed")
            with contextlib.suppress(_Stopped):
                self._wait(self.outbox.put((exc, None, 0)))
        finally:
            if self.muxer is not None:
                self.muxer.abort()                  # nothing left when it was closed

    async def _take(self):
        """The next item of the inbox, its room given back to the receiver."""
        item = await self.inbox.get()
        if item is not _END:
            self.backlog -= len(item[0])
            async with self.room:
                self.room.notify_all()
        return item

    def _emit(self, frames, arrived):
        """Mark and encode ``frames`` and queue them (waiting while the client does not read)."""
        frames = self.labels.mark(np.ascontiguousarray(frames), self.label)
        if self.muxer is not None:
            self.muxer.write(frames)                # waits while the fragments are not sent
            self.frames += len(frames)
            self.sent += len(frames)
            self.metrics.frames.inc(len(frames))
            return
        for frame in frames:
            height, width = frame.shape[:2]
            head = HEADER.pack(self.frames, round(self.frames * 1000 / self.fps), self.stream.samples_in,
                               width, height)
            if self.output == "jpeg":
                _, data = cv2.imencode(".jpg", np.ascontiguousarray(frame[:, :, ::-1]),
                                       [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                body = data.tobytes()
            else:
                body = np.ascontiguousarray(frame).tobytes()
            self.frames += 1
            self._wait(self.outbox.put((head + body, arrived, 1)))

    def _muxer(self):
        return FragmentedMp4(fps=self.fps, sample_rate=self.rate, live_audio=True, on_data=self._fragment,
                             metadata={"comment": self.label.text() + "; live"},
                             frame_size=self.stream.frame_shape[:2])

    def _fragment(self, data):
        """fMP4 bytes from the muxer's reader thread into the outbox (waiting while the client does not read)."""
        self._wait(self.outbox.put((data, None, 0)))

    # -- the event loop's side ----------------------------------------------------------
    async def receive(self):
        """Audio into the inbox until ``{"end": true}``; then wait for the client to leave.

        Returns "disconnected" when the client went away (the session is over).
        """
        ended = False
        limit = self.settings.live_max_message_bytes
        while True:
            try:
                async with asyncio.timeout(None if ended else self.settings.body_timeout_seconds):
                    message = await self.websocket.receive()
            except TimeoutError:
                raise SessionEnd(CLOSE_POLICY, "timeout", f"no audio for {self.settings.body_timeout_seconds:g} s; "
                                 "send silence to keep a session open") from None
            if message["type"] == "websocket.disconnect":
                return "disconnected"
            if ended:
                continue            # the flush is under way; nothing more is read
            data, text = message.get("bytes"), message.get("text")
            if data is not None:
                if len(data) > limit:
                    raise SessionEnd(CLOSE_TOO_BIG, "too_large", f"an audio message is {len(data)} bytes; "
                                     f"the limit is {limit}")
                if len(data) % self.dtype.itemsize:
                    raise SessionEnd(CLOSE_UNSUPPORTED, "invalid_input", "an audio message is not a whole number "
                                     "of samples")
                samples = np.frombuffer(data, self.dtype)
                samples = (samples / 32768.0 if self.dtype.kind == "i" else samples).astype(np.float32)
                if not np.isfinite(samples).all():
                    raise SessionEnd(CLOSE_UNSUPPORTED, "invalid_input", "the audio holds NaN or infinity")
                self.samples += len(samples)
                if self.samples > self.max_samples:
                    raise SessionEnd(CLOSE_POLICY, "too_long", "the session is over the limit of "
                                     f"{self.settings.max_audio_seconds:g} s of audio")
                # While BACKLOG_SECONDS of audio wait for the model, no more is read: what the client
                # sends then waits in the socket, and its sending blocks.
                async with self.room:
                    await self.room.wait_for(lambda: self.backlog < BACKLOG_SECONDS * self.rate)
                self.backlog += len(samples)
                self.inbox.put_nowait((samples, time.monotonic()))
            elif text is not None:
                if len(text) > limit:
                    raise SessionEnd(CLOSE_TOO_BIG, "too_large", f"a message is {len(text)} bytes; "
                                     f"the limit is {limit}")
                try:
                    end = json.loads(text) == {"end": True}
                except ValueError:
                    end = False
                if not end:
                    raise SessionEnd(CLOSE_UNSUPPORTED, "invalid_input", 'after the start, text messages are '
                                     '{"end": true} only; audio goes as binary messages')
                ended = True
                self.inbox.put_nowait(_END)

    async def send(self):
        """The outbox to the client until every frame is out."""
        while True:
            data, arrived, frames = await self.outbox.get()
            if data is _DONE:
                return
            if isinstance(data, Exception):
                message = data.message if isinstance(data, TalkingFaceError) else "the model failed on this session"
                raise SessionEnd(CLOSE_ERROR, getattr(data, "code", "internal_error"), message)
            await self.websocket.send_bytes(data)
            if frames:
                self.sent += frames
                self.metrics.frames.inc(frames)
                self.metrics.latency.observe(time.monotonic() - arrived)


def _refusal(code, error, message):
    """The closing of a session that ends on an error: ``(code, error message, reason)``."""
    return code, {"type": "error", "error": {"code": error, "message": message}}, message


async def _close(websocket, code, last_message, reason):
    """``last_message``, then the closing code and its reason; nothing when the client has gone."""
    if websocket.application_state == WebSocketState.CONNECTED and websocket.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await websocket.send_text(json.dumps(last_message))
            # A closing reason is at most 123 bytes.
            await websocket.close(code, reason.encode()[:123].decode(errors="ignore"))


@router.websocket("/v1/live")
async def live(websocket: WebSocket):
    """A live session: see the module's docstring for the protocol."""
    app = websocket.app
    settings, store = app.state.settings, app.state.store
    principal = websocket.scope.get(PRINCIPAL_SCOPE_KEY)
    if principal is None:       # an app mounted without RequestGuard
        header = websocket.headers.get("authorization")
        key = websocket.query_params.get("key")
        principal = app.state.keys.authenticate(header.encode("latin-1") if header else
                                                f"Bearer {key}".encode() if key else None)
        if principal is None:
            await websocket.close(CLOSE_UNAUTHORIZED, "a valid API key is needed")
            return
    principal = principal or ANONYMOUS
    await websocket.accept()
    live_state, metrics = LiveState.of(app), live_metrics(app.state.metrics_registry)
    if live_state.active >= settings.max_live_sessions:
        await _close(websocket, *_refusal(
            CLOSE_TRY_LATER, "too_many_sessions", f"{live_state.active} live sessions are running, the most this "
            "server takes at once (TALKINGFACE_MAX_LIVE_SESSIONS); try again later"))
        return
    live_state.active += 1
    metrics.active.inc()
    try:
        closing = await _run(websocket, settings, store, principal, live_state, metrics)
    finally:
        # The place is free before the client hears the session is over: it may start the next at once.
        live_state.active -= 1
        metrics.active.dec()
    if closing:
        await _close(websocket, *closing)


async def _run(websocket, settings, store, principal, live_state, metrics):
    """The session until it ends; returns how to close it (``_close``'s arguments), None when the client left."""
    record = session = closing = None
    status, error = JobStatus.canceled, None
    try:
        # 1. The start message: the face, the model, the formats.
        try:
            async with asyncio.timeout(settings.body_timeout_seconds):
                message = await websocket.receive()
        except TimeoutError:
            raise SessionEnd(CLOSE_POLICY, "timeout",
                             f"no start message in {settings.body_timeout_seconds:g} s") from None
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            raise SessionEnd(CLOSE_UNSUPPORTED, "invalid_input", "the first message must be the JSON start message")
        if len(text) > settings.max_json_bytes:
            raise SessionEnd(CLOSE_TOO_BIG, "too_large", f"the start message is {len(text)} bytes; the limit is "
                             f"{settings.max_json_bytes}")
        model, fields, options = await run_in_threadpool(_parse_start, text, settings)
        face_row, read_photo = await _face(fields, settings, store, principal)
        file_id = face_row["id"]

        # 2. The model, the face's prepared work (kept for the next session or streamed request of the
        #    same photo: by its sha256, what its file id stands for), the stream.
        try:
            # One copy of the model in the API process, shared with streamed requests.
            pipe = await run_in_threadpool(service_pipeline, model, settings)
        except WeightsMissing as exc:
            raise SessionEnd(CLOSE_TRY_LATER, exc.code, exc.message) from None
        face_index = int(options.get("face_index", 0))
        try:
            reference = await run_in_threadpool(pipe.cached_reference, f"sha256:{face_row['sha256']}", read_photo,
                                                face_index)
            stream = pipe.open_stream(reference, face_index=face_index, paste_back=bool(options.get("paste_back")),
                                      chunk_frames=fields["chunk_frames"],
                                      first_chunk_frames=min(FIRST_CHUNK_FRAMES, fields["chunk_frames"]))
        except TalkingFaceError as exc:
            raise SessionEnd(CLOSE_POLICY, exc.code, exc.message) from None
        except FileNotFoundError:
            raise SessionEnd(CLOSE_POLICY, "file_not_found", f"file {file_id} is no longer kept") from None
        except StorageUnavailable as exc:
            raise SessionEnd(CLOSE_TRY_LATER, "storage_unavailable", exc.message) from None
        label = await run_in_threadpool(Label.of, pipe)
        session = Session(websocket, stream, fields, settings, metrics, label)
        record = await run_in_threadpool(JobRecord, store, settings, principal.owner, model, {"image": file_id},
                                         options)
        await websocket.send_text(json.dumps({
            "type": "ready", "session": record.id, "model": model, "fps": session.fps,
            "sample_rate": fields["sample_rate"], "format": fields["format"], "output": fields["output"],
            "width": int(stream.frame_shape[1]), "height": int(stream.frame_shape[0]),
            "chunk_frames": fields["chunk_frames"], "header_bytes": 0 if fields["output"] == "fmp4" else HEADER.size,
            "max_seconds": settings.max_audio_seconds, "file_id": file_id}))

        # 3. Audio in, frames out, until the client ends or leaves.
        live_state.sessions.add(session)
        session.thread.start()
        receiving = asyncio.create_task(session.receive())
        sending = asyncio.create_task(session.send())
        watching = asyncio.create_task(_watch(record, settings))
        try:
            done, _ = await asyncio.wait((receiving, sending, watching), return_when=asyncio.FIRST_COMPLETED)
            if sending in done:
                sending.result()                    # a model error raises here
                status = JobStatus.succeeded
                closing = (CLOSE_NORMAL, {"type": "end", "frames": session.sent,
                                          "seconds": round(session.sent / session.fps, 3)}, "the session ended")
            elif watching in done:
                closing = _refusal(CLOSE_NORMAL, "canceled", "the session's job was canceled")
            else:
                receiving.result()                  # a refused message raises here; else the client left
        finally:
            session.stop.set()
            for task in (receiving, sending, watching):
                task.cancel()
            await asyncio.gather(receiving, sending, watching, return_exceptions=True)
    except SessionEnd as exc:
        status, error = JobStatus.failed, (exc.error, exc.message)
        closing = _refusal(exc.code, exc.error, exc.message)
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("live session failed")
        status, error = JobStatus.failed, ("internal_error", "the server failed on this session; it is logged")
        closing = _refusal(CLOSE_ERROR, *error)
    finally:
        if session is not None:
            session.stop.set()
            if session.thread.is_alive():
                await run_in_threadpool(session.thread.join, 10)
            live_state.sessions.discard(session)
        if record is not None:
            info = {"live": True, "output": session.output, "audio_seconds": round(session.samples / session.rate, 3),
                    "frames_made": session.stream.frames_out,
                    **{k: pipe.info.get(k) for k in ("weights", "device")}}
            await run_in_threadpool(record.finish, status, session.sent, info, error)
    return closing


async def _watch(record, settings):
    """Renew the session's lease; returns when its job is canceled."""
    while True:
        await asyncio.sleep(settings.heartbeat_seconds)
        if await run_in_threadpool(record.heartbeat):
            return
