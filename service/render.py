"""One render path, for ``talkingface generate`` and the worker alike.

    inputs = read_inputs(pipe, image=path, audio=path, limits=Limits(...))
    result = render(pipe, inputs, "out.mp4", options={"paste_back": True}, progress=...)

Files are read and checked by content (``service.media``), the model's declared options
are checked (``models.common.pipeline.check_options``), frames stream chunk by chunk from
the pipeline into the MP4 writer, and ``progress(done, total)`` is called after every
chunk; raising from it (a cancel, a lost lease) stops the work at that chunk.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import TalkingFaceInput
from models.common.pipeline import check_options
from models.errors import InvalidInput
from service import media

SAMPLE_RATE = 16000      # what the voice is decoded to; pipelines resample from it


@dataclass(frozen=True)
class Limits:
    """What an input may be: the service's settings, or the command line's looser ones."""

    max_seconds: float = media.MAX_AUDIO_SECONDS
    max_pixels: int = media.MAX_IMAGE_PIXELS


@dataclass
class Rendered:
    """What ``render`` made: the frame count, when the last frame was drawn, and by what."""

    frames: int
    seconds: float
    generated_at: float
    info: dict


def check_output(path) -> Path:
    """``path`` as a file that can be written, checked before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise InvalidInput(f"cannot write {path}: it is a folder")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InvalidInput(f"cannot write {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InvalidInput(f"cannot write {path}: permission denied")
    return path


def read_inputs(pipe, image, audio=None, video=None, face_index=0, limits=Limits()) -> TalkingFaceInput:
    """Decode and check the files of one request for ``pipe`` (a pipeline, or its class: only
    its declared ``accepts_video`` is read, so the files can be checked before weights load).

    A ``video`` drives the lips of a model that declares ``accepts_video`` (its own sound
    goes into the result); for any other model it is only the source of the voice.
    """
    if (audio is None) == (video is None):
        raise InvalidInput("give a voice clip or a driving video (one of them)")
    photo = media.read_image(image, max_pixels=limits.max_pixels)
    frames = None
    if video is not None and pipe.accepts_video:
        frames = media.read_video(video, max_seconds=limits.max_seconds, max_pixels=limits.max_pixels)
        voice = media.read_video_audio(video, sample_rate=SAMPLE_RATE, max_seconds=limits.max_seconds)
    else:
        voice = media.read_audio(audio or video, sample_rate=SAMPLE_RATE, max_seconds=limits.max_seconds)
        media.check_speech(voice, SAMPLE_RATE)
    return TalkingFaceInput(image=photo, audio=voice, sample_rate=SAMPLE_RATE, face_index=face_index, video=frames)


def render(pipe, inputs: TalkingFaceInput, output, options=None, progress=None, reference=None,
           comment="") -> Rendered:
    """Write the clip ``pipe`` makes of ``inputs`` to the MP4 ``output``.

    Args:
        pipe: a loaded pipeline (``models.registry.load``).
        inputs: from ``read_inputs``.
        output: the MP4 path.
        options: the request's options, checked against the model's declaration:
            ``paste_back``, ``seed`` (seeds torch first) and the model's own.
        progress: ``progress(done, total)`` after every chunk.
        reference: ``pipe.prepare_reference``'s result when the caller already has it.
        comment: added to the MP4's comment after the model and weights.
    """
    options = check_options(type(pipe), dict(options or {}))
    if options.get("seed") is not None:
        # The talking-face models are deterministic; models that sample draw from this seed.
        torch.manual_seed(options["seed"])
    metadata = {"comment": f"talkingface {pipe.name}; weights: {pipe.info.get('weights')}{comment}"}
    with media.Mp4Writer(output, fps=pipe.fps, audio=inputs.audio, sample_rate=inputs.sample_rate,
                         metadata=metadata) as writer:
        for chunk in pipe.frame_chunks(inputs, paste_back=bool(options.get("paste_back")), progress=progress,
                                       reference=reference, **pipe.call_options(options)):
            writer.write(np.ascontiguousarray(chunk))
        generated_at = time.time()
    info = {"weights": pipe.info.get("weights"), "device": pipe.info.get("device"),
            "driven_by": "video" if inputs.video is not None else "audio"}
    return Rendered(frames=writer.frames_written, seconds=writer.frames_written / pipe.fps,
                    generated_at=generated_at, info=info)
