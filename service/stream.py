"""Talking-face video sent while it is made: fragmented MP4 out of frames as they arrive.

``FragmentedMp4`` pipes frames (and the voice) into ffmpeg, which writes a fragmented
MP4 (``-movflags frag_keyframe+empty_moov+default_base_moof``): a header without
samples, then one fragment of H.264 + AAC for each keyframe, forced every
``fragment_seconds`` (0.5 s), the first ones shorter (``LEAD_KEYFRAMES``: keyframes at
0.04 and 0.16 s): ffmpeg writes a fragment out when the next keyframe arrives, so a
one-frame first fragment is what lets the first frame leave as soon as the model has made
two, and the next short one carries the video until the model runs ahead. A browser's Media
Source Extensions, ffplay and VLC play the bytes while they download. x264 runs with
``-tune zerolatency`` so that a frame leaves the encoder when it goes in, not after a
look-ahead of frames.

The voice is either the whole clip, known from the start (a file: written to a
temporary file that ffmpeg reads), or fed as it is made (``live_audio``, through a
second pipe with a thread of its own, so that ffmpeg waiting on one input never blocks
the writer of the other).

``stream_video`` runs a talking-face request for the service and the command line: the
model's frames, watermarked as ``service.render`` marks them, go through the muxer into
a ``sink`` (the HTTP response's bounded queue, stdout) and into the result file.

    with FragmentedMp4(fps=25, audio=voice, sample_rate=16000, on_data=send) as mp4:
        for frames in stream:        # uint8 (n, H, W, 3)
            mp4.write(frames)
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from typing import IO

import numpy as np

from models.perception.decode import ffmpeg_exe, stderr_tail

logger = logging.getLogger(__name__)

MEDIA_TYPE = "video/mp4"
FRAGMENT_SECONDS = 0.5        # a keyframe, and so a fragment, this often
LEAD_KEYFRAMES = (0.04, 0.16)     # but first at these times: one frame, then three, then 0.5 s each
READ_BYTES = 1 << 16          # ffmpeg's output is passed on in pieces of at most this
# Frames the model makes per step when streaming, by device: on a CPU 0.32 s of video a
# step (a step's time grows with its frames, so larger steps only delay the first frames);
# a GPU makes 16 frames in about the time of 8, and the rest of the step is latency it can
# afford. The first step is 2 frames whatever the device: the one-frame first fragment
# leaves with them.
STREAM_CHUNK_FRAMES = {"cpu": 8}
STREAM_CHUNK_FRAMES_ELSEWHERE = 16
FIRST_CHUNK_FRAMES = 2


class FragmentedMp4:
    """Frames in, fragmented MP4 bytes out, as they come.

    ffmpeg starts on the first ``write`` (its frames fix the size). Its output goes to
    ``on_data(bytes)`` from a reader thread as soon as ffmpeg writes it; ``on_data`` may
    block (a slow client): ffmpeg then stops reading frames and ``write`` blocks in turn,
    so nothing piles up in memory. Without ``on_data`` the bytes wait for ``read()``.

    Args:
        fps (`float`, defaults to 25): frame rate.
        audio (`np.ndarray`, *optional*): the whole voice, mono float32, known from the start.
        sample_rate (`int`, defaults to 16000): rate of the voice.
        live_audio (`bool`, defaults to False): the voice comes through ``write_audio``
            as it is made (instead of ``audio``).
        on_data (`Callable[[bytes], None]`, *optional*): receives the output in order.
        fragment_seconds (`float`, defaults to 0.5): time between keyframes (fragments).
        lead_keyframes (`tuple[float, ...]`, defaults to (0.04, 0.16)): the first keyframes
            after 0 s (increasing); ``fragment_seconds`` apart after the last of them.
        metadata (`dict`, *optional*): container tags, e.g. ``{"comment": ...}``.
        crf (`int`, defaults to 18): x264 quality, as ``Mp4Writer``'s.
        preset (`str`, defaults to "veryfast"): x264 speed.
        frame_size (`tuple[int, int]`, *optional*): (height, width) of the frames when known
            before the first of them: ffmpeg then starts on ``__enter__``, while the model
            makes them, instead of on the first ``write``.
    """

    def __init__(self, fps: float = 25, audio: np.ndarray | None = None, sample_rate: int = 16000,
                 live_audio: bool = False, on_data: Callable[[bytes], None] | None = None,
                 fragment_seconds: float = FRAGMENT_SECONDS, metadata: dict | None = None, crf: int = 18,
                 preset: str = "veryfast", lead_keyframes: tuple = LEAD_KEYFRAMES,
                 frame_size: tuple[int, int] | None = None):
        if audio is not None and live_audio:
            raise ValueError("give the whole audio or live_audio, not both")
        lead = tuple(float(t) for t in lead_keyframes)
        if any(t <= 0 for t in lead) or list(lead) != sorted(set(lead)):
            raise ValueError(f"lead_keyframes must be increasing times after 0, got {lead_keyframes}")
        for key in metadata or {}:
            if not key.replace("_", "").isalnum():
                raise ValueError(f"metadata key {key!r} must be letters, digits or '_'")
        self.fps = fps
        self.audio = None if audio is None else np.asarray(audio, dtype=np.float32).reshape(-1)
        self.sample_rate = int(sample_rate)
        self.live_audio = live_audio
        self.on_data = on_data
        self.fragment_seconds = float(fragment_seconds)
        self.lead_keyframes = lead
        self.expected_size = None if frame_size is None else (int(frame_size[0]), int(frame_size[1]))
        self.metadata = dict(metadata or {})
        self.crf, self.preset = crf, preset
        self.frame_size: tuple[int, int] | None = None
        self.frames_written = 0
        self.bytes_out = 0
        self._proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._stderr: IO[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._reader_error: BaseException | None = None
        self._pending: list[bytes] = []
        self._pending_lock = threading.Lock()
        self._audio_queue: queue.Queue | None = None
        self._audio_thread: threading.Thread | None = None
        self._audio_pipe: int | None = None
        self._early_audio: list[np.ndarray] = []

    def __enter__(self) -> "FragmentedMp4":
        if self.expected_size is not None:
            self.open()
        return self

    def open(self) -> None:
        """Start ffmpeg now, before the first frames (``frame_size`` must be given); ``with`` does it."""
        if self.expected_size is None:
            raise ValueError("open() needs the frame_size the stream was made with")
        if self._proc is None:
            self._start(*self.expected_size)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- input ----------------------------------------------------------------------------
    def write(self, frames: np.ndarray) -> None:
        """Append uint8 RGB frames (n, H, W, 3) (n may be 0). Blocks while the output is not taken."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 (n, H, W, 3), got {frames.dtype} {frames.shape}")
        if self._reader_error is not None:
            raise self._reader_error
        if len(frames) == 0:
            return
        if self._proc is None:
            self._start(frames.shape[1], frames.shape[2])
        elif frames.shape[1:3] != self.frame_size:
            raise ValueError(f"frame size {frames.shape[1:3]} differs from the first frames' {self.frame_size}")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frames).tobytes())
            self._proc.stdin.flush()
        except (OSError, ValueError):      # ffmpeg has exited, or we were aborted
            log = self.abort()
            if self._reader_error is not None:      # the consumer went away: ffmpeg was stopped for it
                raise self._reader_error from None
            raise RuntimeError(f"ffmpeg stopped while streaming: {log}") from None
        self.frames_written += len(frames)

    def write_audio(self, samples: np.ndarray) -> None:
        """Append mono float32 samples of the voice (``live_audio`` only); never blocks."""
        if not self.live_audio:
            raise ValueError("this stream's audio was given whole; write_audio needs live_audio=True")
        samples = np.asarray(samples, dtype="<f4").reshape(-1)
        if self._audio_queue is None:          # ffmpeg starts with the first frames
            self._early_audio.append(samples)
        else:
            self._audio_queue.put(samples.tobytes())

    # -- output ---------------------------------------------------------------------------
    def read(self) -> bytes:
        """The output written since the last ``read`` (without ``on_data``)."""
        with self._pending_lock:
            data, self._pending = b"".join(self._pending), []
        return data

    def close(self) -> bytes:
        """End the video: ffmpeg writes its last fragment. Returns what ``read`` would.

        Raises:
            ValueError: no frame was written.
            RuntimeError: ffmpeg failed (its stderr tail is in the message).
        """
        if self._proc is None:
            raise ValueError("no frames were written to the stream")
        self._end_audio()
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        code = self._proc.wait()
        self._reader.join()
        if self._audio_thread is not None:
            self._audio_thread.join()
        if self._reader_error is not None:
            self.abort()
            raise self._reader_error
        if code != 0:
            log = self.abort()
            raise RuntimeError(f"ffmpeg failed (exit {code}) streaming: {log}")
        self._cleanup()
        return self.read()

    def abort(self) -> str:
        """Stop ffmpeg and drop what it had not written. Returns its stderr tail."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._end_audio()
        log = self._cleanup()
        return log

    # -- internals ------------------------------------------------------------------------
    def command(self, height: int, width: int, audio_input: str | None) -> list[str]:
        """The ffmpeg command line for frames of ``height`` x ``width`` and the voice at ``audio_input``."""
        rate = Fraction(self.fps).limit_denominator(1001)
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(rate),
               "-i", "pipe:0"]
        if audio_input is not None:
            # Raw samples need no probing: without these ffmpeg would wait for seconds of a
            # live voice before it reads a frame.
            cmd += ["-probesize", "32", "-analyzeduration", "0",
                    "-f", "f32le", "-ar", str(self.sample_rate), "-ac", "1", "-i", audio_input]
        cmd += ["-map", "0:v"] + (["-map", "1:a"] if audio_input is not None else [])
        if width % 2 or height % 2:
            cmd += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"]
        # Keyframes at 0, the lead times, then every fragment_seconds after the last: forced,
        # and no others (x264's own interval is set past them, scene cuts off).
        keyframes = f"expr:gte(t,{self._keyframe_time_expr()})"
        longest = 2 * max(1, round(self.fragment_seconds * float(rate)))
        cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", self.preset, "-tune", "zerolatency",
                "-crf", str(self.crf), "-g", str(longest), "-sc_threshold", "0", "-force_key_frames", keyframes]
        if audio_input is not None:
            cmd += ["-c:a", "aac", "-b:a", "128k"]
        for i, (key, value) in enumerate(self.metadata.items()):
            cmd += [f"-metadata:g:{i}", f"{key}={value}"]
        cmd += ["-movflags", "frag_keyframe+empty_moov+default_base_moof", "-flush_packets", "1",
                "-f", "mp4", "pipe:1"]
        return cmd

    def _keyframe_time_expr(self) -> str:
        """ffmpeg's expression of the time of keyframe number ``n_forced`` (0, lead times, then regular)."""
        times = (0.0, *self.lead_keyframes)
        last, n = times[-1], len(times) - 1
        expr = f"{last}+(n_forced-{n})*{self.fragment_seconds}"
        for i in range(n - 1, -1, -1):
            expr = f"if(eq(n_forced,{i}),{times[i]},{expr})"
        return expr

    def _start(self, height: int, width: int) -> None:
        self.frame_size = (height, width)
        self._tmp = tempfile.TemporaryDirectory(prefix="fmp4-")
        # stderr goes to a file: a pipe nobody reads can fill up and stall ffmpeg.
        self._stderr = open(os.path.join(self._tmp.name, "stderr"), "w+b")
        audio_input, pass_fds, audio_write = None, (), None
        if self.audio is not None:
            path = os.path.join(self._tmp.name, "audio.f32")
            self.audio.astype("<f4").tofile(path)
            audio_input = "file:" + path
        elif self.live_audio:
            audio_read, audio_write = os.pipe()
            # The child keeps the read end under the same number: ffmpeg reads pipe:<fd>.
            pass_fds = (audio_read,)
            audio_input = f"pipe:{audio_read}"
        self._proc = subprocess.Popen(self.command(height, width, audio_input), stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr, pass_fds=pass_fds)
        if self.live_audio:
            os.close(pass_fds[0])
            self._audio_pipe = audio_write
            self._audio_queue = queue.Queue()
            for samples in self._early_audio:
                self._audio_queue.put(samples.tobytes())
            self._early_audio = []
            self._audio_thread = threading.Thread(target=self._feed_audio, name="fmp4-audio", daemon=True)
            self._audio_thread.start()
        self._reader = threading.Thread(target=self._read_output, name="fmp4-output", daemon=True)
        self._reader.start()

    def _read_output(self) -> None:
        stdout = self._proc.stdout
        try:
            while True:
                data = stdout.read1(READ_BYTES)
                if not data:
                    return
                self.bytes_out += len(data)
                if self.on_data is not None:
                    self.on_data(data)
                else:
                    with self._pending_lock:
                        self._pending.append(data)
        except BaseException as exc:     # noqa: BLE001 - handed to close(); the consumer went away
            self._reader_error = exc
            if self._proc.poll() is None:
                self._proc.kill()

    def _feed_audio(self) -> None:
        with os.fdopen(self._audio_pipe, "wb") as pipe:
            while True:
                data = self._audio_queue.get()
                if data is None:
                    return
                try:
                    pipe.write(data)
                    pipe.flush()
                except OSError:          # ffmpeg exited: its exit code says why
                    return

    def _end_audio(self) -> None:
        if self._audio_queue is not None:
            self._audio_queue.put(None)

    def _cleanup(self) -> str:
        log = ""
        if self._proc is not None:
            for pipe in (self._proc.stdin,):
                try:
                    pipe.close()
                except OSError:
                    pass
        if self._stderr is not None and not self._stderr.closed:
            log = stderr_tail(self._stderr)
            self._stderr.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return log


# ---------------------------------------------------------------------------------------
# A talking face, streamed


class StreamCanceled(Exception):
    """The consumer of a stream went away (or asked it to stop)."""


def stream_video(pipe, inputs, sink: Callable[[bytes], None], options=None, reference=None, output=None,
                 progress=None, comment="", provenance=None, chunk_frames=None,
                 fragment_seconds: float = FRAGMENT_SECONDS):
    """Make the clip of ``inputs`` and pass it to ``sink`` as fragmented MP4 while it is made.

    The frames come from ``pipe.open_stream``, the voice pushed in one chunk's samples
    at a time; they are watermarked, and the MP4 carries the label, as ``service.render``
    writes them. With ``output`` the same bytes are kept as that file, which is signed
    (C2PA) once complete: a manifest covers a whole file, so the bytes sent while the clip
    is made carry none.

    Args:
        pipe: a loaded pipeline that can stream (``can_stream``).
        inputs: ``TalkingFaceInput`` (from ``service.render.read_inputs``).
        sink: receives the MP4's bytes in order; it may block (the consumer is slow) and
            raise (the consumer is gone), which stops the work.
        options: the request's options (checked here against the model's declaration).
        reference: ``pipe.cached_reference``'s result when the caller has it.
        output: where to keep the whole MP4 too (None: nowhere).
        progress: ``progress(done, total)`` after every chunk; raising stops the work.
        comment: added to the MP4's comment after the label.
        provenance: how the file is labelled (default ``Provenance.for_cli()``).
        chunk_frames: frames the model makes per step (default: ``stream_chunk_frames``);
            the first step makes ``FIRST_CHUNK_FRAMES``.
        fragment_seconds: time between keyframes, each starting a fragment.

    Returns:
        ``service.render.Rendered``.
    """
    import contextlib

    from service import render
    from service.provenance import Provenance

    options, label = render._prepare(pipe, options)
    if not pipe.streams(options):
        raise render.InvalidInput(f"model {pipe.name} cannot stream its video with these options")
    labels = provenance or Provenance.for_cli()
    audio = pipe.prepare_audio(inputs.audio, inputs.sample_rate)
    if reference is None:
        reference = pipe.prepare_reference(inputs.image, inputs.face_index)
    with contextlib.ExitStack() as stack:
        keep = None
        if output is not None:
            target = stack.enter_context(labels.signed(output, MEDIA_TYPE, label))
            keep = stack.enter_context(open(target, "wb"))

        def on_data(data):
            if keep is not None:
                keep.write(data)
            sink(data)

        chunk_frames = chunk_frames or stream_chunk_frames(pipe)
        stream = pipe.open_stream(reference, paste_back=bool(options.get("paste_back")), chunk_frames=chunk_frames,
                                  first_chunk_frames=min(FIRST_CHUNK_FRAMES, chunk_frames))
        # ffmpeg starts now, while the model makes the first frames.
        mp4 = stack.enter_context(FragmentedMp4(pipe.fps, audio=audio, sample_rate=pipe.sample_rate,
                                                on_data=on_data, fragment_seconds=fragment_seconds,
                                                metadata={"comment": label.text() + comment},
                                                frame_size=stream.frame_shape[:2]))
        step = stream_step(pipe, stream)
        total = max(1, round(len(audio) / pipe.sample_rate * pipe.fps))     # for progress: about the count

        for frames in stream.clip_chunks(audio, step):
            # Marked here, not a chunk ahead in a thread as ``render`` does: that would hold
            # every chunk back until the next one is made.
            mp4.write(labels.mark(np.ascontiguousarray(frames), label))
            if progress is not None:
                progress(mp4.frames_written, max(total, mp4.frames_written))
        generated_at = time.time()
    info = {**render._made_by(pipe, label), "driven_by": "audio", "streamed": True}
    return render.Rendered(frames=mp4.frames_written, seconds=mp4.frames_written / pipe.fps,
                           generated_at=generated_at, info=info)


def file_key(path) -> str:
    """The face cache's key of a photo file: the sha256 of its bytes."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def stream_to_file(pipe, inputs, output, options=None, progress=None, reference=None, provenance=None,
                   chunk_frames=None):
    """``stream_video`` into the file ``output`` as the frames are made, or stdout for "-".

    A file grows fragment by fragment (a player can follow it) and is signed (C2PA) once
    complete, unless ``provenance`` says off; stdout gets the bytes alone.
    """
    import sys
    from pathlib import Path

    from models.errors import TalkingFaceError
    from service.provenance import Label, Provenance

    labels = provenance or Provenance.for_cli()
    if output == "-":
        out = sys.stdout.buffer

        def sink(data):
            out.write(data)
            out.flush()

        try:
            return stream_video(pipe, inputs, sink, options=options, reference=reference, progress=progress,
                                provenance=labels, chunk_frames=chunk_frames)
        except BrokenPipeError:
            raise TalkingFaceError("the reader of the stream (stdout) went away") from None
    path = Path(output)
    try:
        with open(path, "wb") as f:
            def sink(data):
                f.write(data)
                f.flush()

            result = stream_video(pipe, inputs, sink, options=options, reference=reference, progress=progress,
                                  provenance=labels, chunk_frames=chunk_frames)
        with labels.signed(path, MEDIA_TYPE, Label.of(pipe)) as target:
            if Path(target) != path:
                os.replace(path, target)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return result


def stream_step(pipe, stream) -> int:
    """Samples pushed at a time: one chunk of frames' worth."""
    return max(1, round(stream.chunk_frames * pipe.sample_rate / pipe.fps))


def stream_chunk_frames(pipe) -> int:
    """Frames ``pipe`` makes per step when streaming, on its device (``STREAM_CHUNK_FRAMES``)."""
    device = getattr(pipe, "device", "cpu")
    return STREAM_CHUNK_FRAMES.get(getattr(device, "type", str(device)), STREAM_CHUNK_FRAMES_ELSEWHERE)


# ---------------------------------------------------------------------------------------
# The service: a streamed request runs in the API process, recorded as a job


QUEUE_ITEMS = 8               # pieces of output (each at most READ_BYTES) waiting for a slow client
_pipelines: dict = {}
_pipelines_lock = threading.Lock()
_streamers: dict = {}
running: dict = {}            # job id -> StreamedJob, while its thread runs
_slots = {"pending": 0}          # streams admitted and not yet started (``take_slot``)
_slots_lock = threading.Lock()


def take_slot(limit: int) -> bool:
    """Admit one more stream to this process unless ``limit`` are running or being prepared."""
    with _slots_lock:
        if len(running) + _slots["pending"] >= limit:
            return False
        _slots["pending"] += 1
        return True


def release_slot():
    """The admitted stream started (it is in ``running`` now) or never will."""
    with _slots_lock:
        _slots["pending"] -= 1


def service_pipeline(model: str, settings):
    """The API process's pipeline of ``model``, loaded on its first stream and kept."""
    from models import registry
    from models.common.device import pick_device

    with _pipelines_lock:
        if model not in _pipelines:
            logger.info("loading %s for streamed requests", model)
            _pipelines[model] = registry.load(model, weights_root=settings.weights_dir,
                                              device=str(pick_device(settings.device)),
                                              precision=settings.precision)
        return _pipelines[model]


def streamer_id(store) -> str:
    """This process's name as the runner of its streamed jobs.

    It is registered like a worker (host and pid, so that another process starting on this
    host leaves its jobs alone while it lives) but as stopped, so it is listed nowhere as
    a worker that takes jobs.
    """
    from service.jobs.store import new_id

    with _pipelines_lock:
        key = (id(store), os.getpid())
        if key not in _streamers:
            _streamers[key] = new_id("stream")
            store.register_worker(_streamers[key], "api", [])
            store.worker_heartbeat(_streamers[key], "stopped")
        return _streamers[key]


class StreamedJob:
    """One streamed talking-face job: a thread makes the video, the response sends it.

    Between them sits a queue of at most ``QUEUE_ITEMS`` pieces: when the client reads
    slowly the queue fills, the muxer's output waits, ffmpeg stops taking frames and the
    model waits in turn, so the server holds no more than the queue, ffmpeg's buffers and
    one chunk of frames. When the client goes away (``stop``), the thread stops within
    one chunk and the job ends ``canceled``; a cancel through the jobs API does the same, and
    so does a client that reads nothing for ``TALKINGFACE_BODY_TIMEOUT_SECONDS`` (at least 10 s).

    ``prepare`` (inputs read, the face found or taken from the cache) runs before the
    response starts, so that its errors are answered as JSON.
    """

    def __init__(self, settings, store, job: dict, pipe):
        self.settings, self.store, self.job, self.pipe = settings, store, job, pipe
        self.runner = job["worker_id"]
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_ITEMS)
        self.stopped = threading.Event()
        self.done = threading.Event()
        self.queued_bytes = 0          # output waiting in the queue now, or being offered to it
        self.peak_queued_bytes = 0     # and at most
        self.chunks_made = 0
        self.inputs = self.reference = None
        self._bytes_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"stream-{job['id']}", daemon=True)

    # -- before the response --------------------------------------------------------------
    def prepare(self):
        """Read the inputs and find the face. TalkingFaceError on bad input.

        The face is cached by the photo's sha256 (what its file id stands for), so the next
        clip of the same photo skips detection, landmarks and the identity tensors.
        """
        import contextlib

        from models.errors import TalkingFaceError
        from service import render
        from service.storage import storage_for

        options = self.job["options"] or {}
        limits = render.Limits(self.settings.max_audio_seconds, self.settings.max_image_pixels)
        rows = self.store.get_files(list(self.job["inputs"].values()))
        storage = storage_for(self.settings)
        with contextlib.ExitStack() as local:
            files = {}
            for role, file_id in self.job["inputs"].items():
                row = rows.get(file_id)
                if row is None or not row["path"]:
                    raise TalkingFaceError(f"the {role} file {file_id} no longer exists")
                files[role] = local.enter_context(storage.open_local(row["path"]))
            self.inputs = render.read_talking_face_files(self.pipe, files, options, limits)
        image_key = f"sha256:{rows[self.job['inputs']['image']]['sha256']}"
        self.reference = self.pipe.cached_reference(image_key, self.inputs.image, int(options.get("face_index") or 0))

    def fail(self, code: str, message: str):
        """End the job ``failed`` (before streaming started)."""
        from service.jobs.store import JobStatus

        self.store.finish(self.job["id"], self.runner, JobStatus.failed, code, message)

    def start(self):
        running[self.job["id"]] = self
        self._thread.start()

    def stop(self):
        """The client is gone: stop making the video."""
        self.stopped.set()

    # -- the response ---------------------------------------------------------------------
    async def body(self):
        """The MP4's bytes for ``StreamingResponse``; leaving early (a disconnect) stops the job."""
        import anyio

        try:
            while True:
                item = await anyio.to_thread.run_sync(self._take, abandon_on_cancel=True)
                if item is None:
                    if self.done.is_set() and self.queue.empty():
                        return          # the job failed: the video ends where it stopped
                    continue
                if item is _END:
                    return
                with self._bytes_lock:
                    self.queued_bytes -= len(item)
                yield item
        finally:
            self.stop()

    def _take(self):
        try:
            return self.queue.get(timeout=0.5)
        except queue.Empty:
            return None

    def _sink(self, data: bytes):
        # A client that takes nothing for this long is gone (or never started reading: a
        # response whose body was never iterated says nothing when it is dropped).
        stalled_at = time.monotonic() + max(self.settings.body_timeout_seconds, 10.0)
        while True:
            if self.stopped.is_set() or time.monotonic() > stalled_at:
                self.stopped.set()
                raise StreamCanceled(self.job["id"])
            try:
                with self._bytes_lock:
                    self.queued_bytes += len(data)
                    self.peak_queued_bytes = max(self.peak_queued_bytes, self.queued_bytes)
                self.queue.put(data, timeout=0.2)
                return
            except queue.Full:
                with self._bytes_lock:
                    self.queued_bytes -= len(data)

    def _end(self):
        while not self.stopped.is_set():
            try:
                self.queue.put(_END, timeout=0.2)
                return
            except queue.Full:
                continue

    # -- the thread -----------------------------------------------------------------------
    def _run(self):
        from models.errors import TalkingFaceError
        from service import render
        from service.jobs.store import JobStatus, LeaseLost, storage_failure
        from service.jobs.worker import JobTimedOut
        from service.storage import storage_for

        settings, store, job_id = self.settings, self.store, self.job["id"]
        state = {"cancel": False, "lost": False, "progress": 0.0}
        deadline = time.monotonic() + settings.job_timeout_seconds
        keepalive_stop = threading.Event()

        def beat():
            try:
                state["cancel"] |= store.heartbeat(job_id, self.runner, settings.lease_seconds, state["progress"])
            except LeaseLost:
                state["lost"] = True
            except Exception as exc:  # noqa: BLE001 - a full or unreachable database: the stream goes on
                if storage_failure(exc) is None:
                    raise

        def keepalive():
            # Also while the model waits for a slow client: the lease must not run out then.
            while not keepalive_stop.wait(min(settings.heartbeat_seconds, 1.0)):
                beat()
                if state["cancel"]:
                    self.stop()

        def progress(done, total):
            self.chunks_made += 1
            state["progress"] = min(done / max(total, 1), 0.99)
            if self.stopped.is_set() or state["cancel"]:
                raise StreamCanceled(job_id)
            if state["lost"]:
                raise LeaseLost(job_id)
            if time.monotonic() > deadline:
                raise JobTimedOut(f"the stream ran longer than TALKINGFACE_JOB_TIMEOUT_SECONDS="
                                  f"{settings.job_timeout_seconds:g} s")

        watcher = threading.Thread(target=keepalive, daemon=True, name=f"lease-{job_id}")
        watcher.start()
        storage = storage_for(settings)
        relative = f"results/{job_id}.mp4"
        try:
            with storage.writing(relative) as path:
                done = stream_video(self.pipe, self.inputs, self._sink, options=self.job["options"],
                                    reference=self.reference, output=path, progress=progress,
                                    comment=f"; job {job_id}", provenance=render.Provenance.from_settings(settings))
                size = path.stat().st_size
                storage.save(path, relative)
            store.finish(job_id, self.runner, JobStatus.succeeded, result_path=relative, result_bytes=size,
                         frames=done.frames, generated_at=done.generated_at, info=done.info)
            self._end()           # after the job's record: a client that saw the end finds it succeeded
        except StreamCanceled:
            how = "the client disconnected" if self.stopped.is_set() and not state["cancel"] else "canceled"
            store.finish(job_id, self.runner, JobStatus.canceled, "canceled", f"canceled while streaming: {how}")
        except LeaseLost:
            logger.warning("stream %s: lease lost", job_id)
        except TalkingFaceError as exc:
            store.finish(job_id, self.runner, JobStatus.failed, exc.code, exc.message)
        except Exception:
            logger.exception("stream %s failed", job_id)
            store.finish(job_id, self.runner, JobStatus.failed, "internal_error",
                         "the stream failed; the server log has the details")
        finally:
            keepalive_stop.set()
            watcher.join()
            self.stop()
            self.done.set()
            running.pop(job_id, None)


_END = object()   # the queue's last item
