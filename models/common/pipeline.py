"""What every inference pipeline shares: declared options, the task bases, weight folders.

A system's pipeline subclasses the base of its task and supplies its constructors and
the task's method:

* ``TalkingFacePipeline`` (photo + voice or driving video -> MP4): ``frame_chunks``, the
  clip as a stream of uint8 frame chunks;
* ``PoseTransferPipeline`` (photo of a person + target pose -> image): ``transfer``;
* ``MotionTransferPipeline`` (a source dance video -> the target person dancing it):
  ``frame_chunks``, and ``train_target`` for a new target person;
* ``ImageGenerationPipeline`` (noise, and a condition where the model takes one -> images):
  ``generate``.

The class declares, once, what the model takes: its ``options`` with types, defaults and
limits (and ``accepts_video`` for a talking face, ``can_stream`` for one that makes its
frames as the voice arrives: ``open_stream`` then returns a ``FrameStream``). The CLI, the REST form, the job schema
and the dashboard read that declaration, so a new model needs no change in ``service/``.

The project's own weights live in one folder layout for every system (``save_project``
writes it, ``read_project`` + ``load_project_networks`` read it):

    config.json          {"model", "name", <network>: constructor arguments, ...extra}
    <network>.safetensors    one per network
    <stem>.npz           arrays inference needs besides the networks (a PCA, templates)
    SHA256SUMS           of exactly the files above
"""

from __future__ import annotations

import json
import numbers
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from models import weights as weights_lib
from models.errors import InvalidInput
from models.perception.audio import resample
from models.types import ImageCondition, Images, MotionTransferInput, PoseTransferInput, TalkingFaceInput, Video

PROJECT_CONFIG = "config.json"      # marks a folder of weights trained by this project
CHECKSUMS = "SHA256SUMS"


# ---------------------------------------------------------------------------------------
# Declared options


class InvalidOption(InvalidInput):
    """An option's value is outside what the model declares."""

    code = "validation_error"


@dataclass(frozen=True)
class Option:
    """One per-request option of a model, declared where the model is.

    Args:
        name: snake_case name (``--finetune-steps`` on the command line).
        type: ``bool``, ``int``, ``float`` or ``str``.
        default: the value when a request does not say; None for "the model decides".
        help: one line for ``--help``, the API docs and the dashboard.
        minimum, maximum: inclusive limits of a number.
        choices: the values a string may take.
    """

    name: str
    type: type
    default: object
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple | None = None

    def parse(self, value):
        """``value`` (typed, or a string from a form or the command line) checked and typed.

        None stands for "not given" and is returned as it is.
        """
        if value is None:
            return None
        if isinstance(value, str) and self.type is not str:
            value = self._from_text(value)
        if self.type is bool:
            if not isinstance(value, bool):
                raise InvalidOption(f"{self.name} must be true or false, got {value!r}")
            return value
        if self.type in (int, float):
            whole = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer()
                                                            and self.type is int)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or (self.type is int and not whole):
                raise InvalidOption(f"{self.name} must be {self._kind()}, got {value!r}")
            value = self.type(value)
            if (self.minimum is not None and value < self.minimum) or (
                    self.maximum is not None and value > self.maximum):
                raise InvalidOption(f"{self.name} must be {self._kind()}, got {value!r}")
            return value
        if not isinstance(value, str):
            raise InvalidOption(f"{self.name} must be a string, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise InvalidOption(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}")
        return value

    def _from_text(self, text):
        text = text.strip()
        if self.type is bool:
            lowered = text.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise InvalidOption(f"{self.name} must be true or false, got {text!r}")
        try:
            return int(text) if self.type is int else float(text)
        except ValueError:
            raise InvalidOption(f"{self.name} must be {self._kind()}, got {text!r}") from None

    def _kind(self):
        noun = "a whole number" if self.type is int else "a number"
        if self.minimum is not None and self.maximum is not None:
            return f"{noun} from {self.minimum:g} to {self.maximum:g}"
        if self.minimum is not None:
            return f"{noun} of at least {self.minimum:g}"
        if self.maximum is not None:
            return f"{noun} of at most {self.maximum:g}"
        return noun

    def describe(self) -> dict:
        """The declaration as JSON (``GET /v1/models``, the dashboard's form)."""
        return {"name": self.name, "type": self.type.__name__, "default": self.default, "help": self.help,
                "minimum": self.minimum, "maximum": self.maximum,
                "choices": list(self.choices) if self.choices else None}


# Every model takes a seed: it seeds torch before a job (for models that sample).
SEED_OPTION = Option("seed", int, None, "random seed, for models that sample")
# Options every talking-face model takes. ``paste_back`` and ``face_index`` go to the pipeline.
COMMON_OPTIONS = (
    Option("paste_back", bool, False, "put the face back into the full photo"),
    Option("face_index", int, 0, "which face to animate, 0 = the largest", minimum=0, maximum=64),
    SEED_OPTION,
)


def check_options(pipeline_class, options: dict) -> dict:
    """``options`` checked against what ``pipeline_class`` declares; values typed, None dropped.

    Raises InvalidInput for an option the model does not have, InvalidOption for a value
    outside its declaration.
    """
    declared = pipeline_class.declared_options()
    checked = {}
    for name, value in options.items():
        if value is None:
            continue
        if name not in declared:
            raise InvalidInput(f"model {pipeline_class.name} has no option {name}")
        checked[name] = declared[name].parse(value)
    return checked


# ---------------------------------------------------------------------------------------
# The pipeline base


class Pipeline:
    """What every pipeline declares: its registry ``name``, its ``task``, its options.

    ``common_options`` are the task's (every model of the task takes them); ``options``
    the model's own.
    """

    name: str = ""
    task: str = ""
    accepts_video = False             # True: a talking face whose lips can follow a driving video
    can_stream = False                # True: ``open_stream`` makes frames as the voice arrives
    stream_options: dict = {}         # options it streams with when its defaults do not (see ``stream_condition``)
    common_options: tuple[Option, ...] = (SEED_OPTION,)
    options: tuple[Option, ...] = ()  # per-call options beyond common_options
    info: dict

    @classmethod
    def declared_options(cls) -> dict[str, Option]:
        """Every option a request to this model may carry, by name."""
        return {option.name: option for option in tuple(cls.common_options) + tuple(cls.options)}

    @classmethod
    def streams(cls, options: dict) -> bool:
        """Whether a request with these (checked) ``options`` can be streamed (``can_stream``
        unless an option rules it out)."""
        return cls.can_stream

    @classmethod
    def stream_condition(cls) -> str:
        """``stream_options`` in words for a refusal ("with finetune_steps=0"), or "" when there are none."""
        if not cls.can_stream or not cls.stream_options:
            return ""
        return "with " + ", ".join(f"{name}={value}" for name, value in cls.stream_options.items())

    @classmethod
    def call_options(cls, options: dict) -> dict:
        """The model's own options among ``options`` (what ``frame_chunks`` takes as keywords)."""
        own = {option.name for option in cls.options}
        return {k: v for k, v in options.items() if k in own and v is not None}

    @classmethod
    def weight_files(cls):
        """The files the registry lists for this model (its authors' release)."""
        from models.registry import spec

        return spec(cls.name).files

    @staticmethod
    def check_image(image) -> np.ndarray:
        image = np.ascontiguousarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InvalidInput("the image must be RGB uint8 of shape (H, W, 3)")
        return image


class FrameStream:
    """Frames made while the voice arrives: ``TalkingFacePipeline.open_stream``'s result.

    ``push`` mono float32 samples at the pipeline's ``sample_rate``, in pieces of any
    length; each call returns the frames those samples complete, uint8 (n, H, W, 3) with n
    possibly 0. ``close`` ends the voice and returns the frames still owed (those that
    read past the last sample). The frames of all the calls together are those of
    ``frame_chunks`` over the whole clip, however the voice was cut.

    ``push_chunks`` and ``close_chunks`` return the same frames as an iterator of the
    chunks the model makes them in, for callers that hand frames on chunk by chunk.

    The chunks are fixed by frame numbers, not by how the voice arrives: the first holds
    ``first_chunk_frames`` frames (fewer than ``chunk_frames`` to show the first frames
    sooner), every later one ``chunk_frames`` (``chunk_end``), the last what is left.

    Attributes:
        fps: frames per second.
        frames_out: frames returned so far.
        samples_in: samples pushed so far.
        frame_shape: (H, W, 3) of every frame.

    Example:
        ```py
        stream = pipe.open_stream(photo, chunk_frames=4)
        for piece in voice_pieces:            # float32 at pipe.sample_rate
            show(stream.push(piece))
        show(stream.close())
        ```
    """

    fps: float = 25.0
    frames_out: int = 0
    samples_in: int = 0
    frame_shape: tuple = (0, 0, 3)
    closed: bool = False
    chunk_frames: int = 1
    first_chunk_frames: int = 1

    def chunk_end(self, start: int) -> int:
        """One past the last frame of the chunk that begins at frame ``start`` (a chunk boundary)."""
        return self.first_chunk_frames if start < self.first_chunk_frames else start + self.chunk_frames

    def set_chunks(self, chunk_frames: int, first_chunk_frames: int | None = None) -> None:
        """Check and keep the chunk sizes (``first_chunk_frames`` None: the same as the others)."""
        chunk_frames = int(chunk_frames)
        first = chunk_frames if first_chunk_frames is None else int(first_chunk_frames)
        if chunk_frames < 1 or not 1 <= first <= chunk_frames:
            raise ValueError(f"chunk sizes must be >= 1 and the first at most the others, got "
                             f"chunk_frames={chunk_frames}, first_chunk_frames={first_chunk_frames}")
        self.chunk_frames, self.first_chunk_frames = chunk_frames, first

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append ``samples``; the frames that can be made now, uint8 (n, H, W, 3)."""
        return self._joined(self.push_chunks(samples))

    def close(self) -> np.ndarray:
        """End the voice; the remaining frames, uint8 (n, H, W, 3)."""
        return self._joined(self.close_chunks())

    def push_chunks(self, samples: np.ndarray) -> Iterator[np.ndarray]:
        """``push``, its frames as an iterator of chunks (the samples are taken at once)."""
        raise NotImplementedError

    def close_chunks(self) -> Iterator[np.ndarray]:
        """``close``, its frames as an iterator of chunks (the voice ends at once)."""
        raise NotImplementedError

    def clip_chunks(self, audio: np.ndarray, step: int) -> Iterator[np.ndarray]:
        """The frames of a whole clip, chunk by chunk: ``audio`` pushed ``step`` samples at a
        time, then the stream closed (the last frames read past the clip's end)."""
        for begin in range(0, len(audio), step):
            yield from self.push_chunks(audio[begin:begin + step])
        yield from self.close_chunks()

    def _joined(self, chunks) -> np.ndarray:
        chunks = list(chunks)
        if not chunks:
            return np.zeros((0, *self.frame_shape), dtype=np.uint8)
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    @staticmethod
    def check_samples(samples) -> np.ndarray:
        """``samples`` as 1-D float32, or InvalidInput."""
        samples = np.asarray(samples)
        if samples.ndim != 1 or samples.dtype.kind not in "fiu":
            raise InvalidInput("audio samples must be a 1-D array of numbers (mono)")
        samples = samples.astype(np.float32, copy=False)
        if not np.isfinite(samples).all():
            raise InvalidInput("audio samples hold NaN or infinity")
        return samples


class FeatureFrameStream(FrameStream):
    """A ``FrameStream`` driven by per-frame audio features computed as the samples arrive.

    ``features`` computes, exactly as over the whole clip, the model's input of each frame
    (``push(samples)``, ``end()``, ``ready()``: frames whose input is complete,
    ``frames_taken``, ``ended``, ``samples_in``); the subclass's ``_make(stop)`` turns the
    inputs of frames ``frames_taken .. stop - 1`` into uint8 frames (taking them). Whole
    chunks (``chunk_end``) are made as soon as their inputs are in, the last one at close.
    """

    def __init__(self, features, reference, paste_back, fps, chunk_frames, first_chunk_frames=None):
        self.set_chunks(chunk_frames, first_chunk_frames)
        self.features = features
        self.reference = reference
        self.paste_back = bool(paste_back)
        self.fps = fps
        self.frames_out = 0
        self.closed = False
        self.frame_shape = (*(reference.photo.shape[:2] if self.paste_back else reference.face.shape[:2]), 3)

    @property
    def samples_in(self) -> int:
        return self.features.samples_in

    def push_chunks(self, samples):
        if self.closed:
            raise InvalidInput("the stream is closed: no more audio can be pushed")
        self.features.push(self.check_samples(samples))
        return self._made()

    def close_chunks(self):
        if not self.closed:
            self.closed = True
            self.features.end()
        return self._made()

    def _made(self):
        features = self.features
        while True:
            taken = features.frames_taken
            end = self.chunk_end(taken)
            stop = min(end, features.ready())
            if stop == taken or (stop < end and not features.ended):
                return
            frames = self._make(stop)
            if self.paste_back:
                frames = self.reference.paste_back(frames)
            self.frames_out += len(frames)
            yield frames

    def _make(self, stop: int) -> np.ndarray:
        """uint8 frames (n, H, W, 3) of frames ``features.frames_taken .. stop - 1``."""
        raise NotImplementedError


_CACHE_LOCK = threading.Lock()


class TalkingFacePipeline(Pipeline):
    """Base of the talking-face pipelines: one photo + a voice clip (or a driving video) -> frames.

    Subclasses set ``name``, ``fps``, ``sample_rate``, ``min_audio_seconds``, what they take
    (``accepts_video``, ``options``) and implement ``prepare_reference`` and ``frame_chunks``;
    those that set ``can_stream`` implement ``open_stream`` too.

    The per-face work (``prepare_reference``: detection, crop, landmarks, the identity
    tensors) can be kept for the next clip of the same face: ``cached_reference`` holds the
    last ``reference_cache_size`` faces by a key the caller chooses (a stored file's id,
    the sha256 of the photo's bytes).
    """

    task = "talking-face"
    common_options = COMMON_OPTIONS
    fps: float = 25.0
    sample_rate: int = 16000
    min_audio_seconds = 0.3
    reference_cache_size = 4
    lookahead_seconds = 0.0           # streaming: voice past a frame's start that the frame waits for

    # -- the face -------------------------------------------------------------------------
    def prepare_reference(self, image, face_index=0):
        """Everything the model derives from the photo, once per clip."""
        raise NotImplementedError

    def cached_reference(self, key, image, face_index=0):
        """``prepare_reference(image, face_index)``, kept by ``(key, face_index)`` for the next call.

        Args:
            key: names the photo (a file id, a sha256); None: not cached.
            image: the photo, RGB uint8 (H, W, 3), or a function returning it (called only
                when the face is not cached, so a cached face needs no decoding).
            face_index: which face of the photo.

        Returns:
            The reference, shared between callers: treat it as read-only.
        """
        if key is None:
            return self.prepare_reference(image() if callable(image) else image, face_index)
        with _CACHE_LOCK:
            cache = self.__dict__.setdefault("_reference_cache", OrderedDict())
            reference = cache.get((key, face_index))
            if reference is not None:
                cache.move_to_end((key, face_index))
                return reference
        reference = self.prepare_reference(image() if callable(image) else image, face_index)
        with _CACHE_LOCK:
            cache[(key, face_index)] = reference
            while len(cache) > max(0, self.reference_cache_size):
                cache.popitem(last=False)
        return reference

    # -- streaming ------------------------------------------------------------------------
    def open_stream(self, image_or_reference, *, face_index=0, paste_back=False, chunk_frames=None,
                    first_chunk_frames=None) -> FrameStream:
        """A ``FrameStream`` that makes this face speak the samples pushed into it.

        Args:
            image_or_reference: the photo, RGB uint8 (H, W, 3), or ``prepare_reference``'s
                (or ``cached_reference``'s) result.
            face_index: which face of the photo (unused with a reference).
            paste_back: frames of the whole photo with the face put back.
            chunk_frames: frames the model makes per step (default: the pipeline's):
                fewer give the first frames sooner, more use the device better.
            first_chunk_frames: frames of the first step (default: ``chunk_frames``); a
                small first step shows the first frames sooner without slowing the rest.
        """
        raise InvalidInput(f"model {self.name} cannot stream its frames")

    def prepare_audio(self, audio, sample_rate):
        """Mono float32 at the model's sample rate, checked for length."""
        if audio is None:
            raise InvalidInput("audio is needed (or a driving video)")
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise InvalidInput("the audio must be mono (one channel)")
        if sample_rate <= 0:
            raise InvalidInput("the sample rate must be positive")
        audio = resample(audio, sample_rate, self.sample_rate)
        if len(audio) < self.min_audio_seconds * self.sample_rate or self.too_short(audio):
            raise InvalidInput(f"audio is {len(audio) / self.sample_rate:.2f} s long; "
                               f"at least {self.min_audio_seconds} s is needed")
        return audio

    def too_short(self, audio) -> bool:
        """Whether resampled ``audio`` gives the model no frame at all (beyond the length check)."""
        return False

    # -- the clip -------------------------------------------------------------------------
    def frame_chunks(self, inputs: TalkingFaceInput, paste_back=False, progress=None, reference=None, **options):
        """Yield uint8 RGB frame chunks (n, H, W, 3) in order; memory bounded per chunk.

        ``progress(done, total)`` is called as frames are made; raising from it (to
        cancel a job) stops the generation there. ``reference`` is ``prepare_reference``'s
        result when the caller has it. ``options`` are the model's declared ``options``.
        """
        raise NotImplementedError

    def video_info(self, inputs: TalkingFaceInput) -> dict:
        """What to report with a whole clip (the weights, the device, ...)."""
        return dict(self.info)

    def __call__(self, inputs: TalkingFaceInput, paste_back=False, progress=None, show_progress=False,
                 **options) -> Video:
        """Generate the whole clip in memory. For long clips prefer ``frame_chunks``."""
        bar = None
        if show_progress:
            bar = tqdm(unit="frame", desc=self.name)

            def progress(done, total, user=progress):
                bar.total = total
                bar.update(done - bar.n)
                if user is not None:
                    user(done, total)
        try:
            chunks = list(self.frame_chunks(inputs, paste_back=paste_back, progress=progress, **options))
        finally:
            if bar is not None:
                bar.close()
        audio = None if inputs.audio is None else np.asarray(inputs.audio, np.float32)
        return Video(frames=np.concatenate(chunks), fps=self.fps, audio=audio, sample_rate=inputs.sample_rate,
                     info=self.video_info(inputs))


class PoseTransferPipeline(Pipeline):
    """Base of the pose-transfer pipelines: a photo of a person + a target pose -> an image.

    Subclasses set ``name`` and ``options`` and implement ``transfer``.
    """

    task = "pose-transfer"

    def transfer(self, inputs: PoseTransferInput, **options) -> np.ndarray:
        """The person of ``inputs.image`` in ``inputs.pose``: uint8 RGB (H, W, 3).

        ``options`` are the model's declared ``options``.
        """
        raise NotImplementedError

    def __call__(self, inputs: PoseTransferInput, **options) -> np.ndarray:
        return self.transfer(inputs, **options)


class MotionTransferPipeline(Pipeline):
    """Base of the motion-transfer pipelines: a source video -> a target person doing its motion.

    Subclasses set ``name`` and ``options`` and implement ``frame_chunks`` and ``train_target``.
    """

    task = "motion-transfer"
    fps: float = 25.0

    def frame_chunks(self, inputs: MotionTransferInput, progress=None, **options):
        """Yield uint8 RGB frame chunks (n, H, W, 3) in order, one frame a source frame.

        ``progress(done, total)`` as in ``TalkingFacePipeline.frame_chunks``; ``options``
        are the model's declared ``options``.
        """
        raise NotImplementedError

    def train_target(self, video, out_dir, progress=None, **options) -> dict:
        """Learn a new target person from ``video`` (a path) into the folder ``out_dir``; a summary."""
        raise NotImplementedError


# Options every image generator takes (``n`` is capped lower by the service's settings).
IMAGE_OPTIONS = (
    SEED_OPTION,
    Option("n", int, 1, "how many images", minimum=1, maximum=64),
    Option("levels", bool, False, "also the coarse-to-fine steps of a pyramid or stacked model"),
    Option("format", str, "grid", "several images as one PNG grid, or a zip of PNGs", choices=("grid", "zip")),
)
# The text and label conditions are options of the models that take them.
TEXT_OPTION = Option("text", str, None, "a caption of the image to draw")


def label_option(classes: int, what="class") -> Option:
    """The ``label`` option of a model conditioned on one of ``classes`` classes."""
    return Option("label", int, None, f"{what} to draw, 0 to {classes - 1}", minimum=0, maximum=classes - 1)


class ImageGenerationPipeline(Pipeline):
    """Base of the image generators: noise (and a condition, where the model takes one) -> images.

    Subclasses set ``name`` and ``options`` and implement ``generate``. A model that takes
    a caption declares ``TEXT_OPTION``, one that takes a class ``label_option(k)``, in its
    ``options``; one that takes a vector (a text embedding, InfoGAN's codes) sets
    ``vector_size`` (or ``vector_size = 0`` when its weights decide the length, checked
    when it draws). ``levels`` says whether it has coarse-to-fine steps to show.

    Sampling draws from torch's global generator, which the service seeds from ``seed``:
    the same seed gives the same images.
    """

    task = "image-generation"
    common_options = IMAGE_OPTIONS
    vector_size: int | None = None    # None: takes no vector; 0: a length its weights decide
    condition_required = False        # True: a request must carry a condition
    levels = False                    # True: ``generate(levels=True)`` returns the coarse-to-fine steps

    @classmethod
    def conditions(cls) -> tuple[str, ...]:
        """The kinds of condition the model takes: "text", "label", "vector"."""
        options = cls.declared_options()
        return tuple(kind for kind, taken in (("text", "text" in options), ("label", "label" in options),
                                              ("vector", cls.vector_size is not None)) if taken)

    @classmethod
    def requires_condition(cls, options: dict) -> bool:
        """Whether a request with these ``options`` must carry a condition (checked before it is queued)."""
        return cls.condition_required

    @classmethod
    def check_condition_kinds(cls, given, options: dict) -> None:
        """InvalidInput unless the kinds of condition ``given`` ("text", "label", "vector") are ones
        the model takes, and one is given where a request with ``options`` needs one."""
        taken = cls.conditions()
        for kind in given:
            if kind not in taken:
                what = ", ".join(taken) if taken else "none: it is unconditional"
                raise InvalidInput(f"model {cls.name} takes no {kind} condition (it takes {what})")
        if cls.requires_condition(options) and not given:
            raise InvalidInput(f"model {cls.name} needs a condition: {' or '.join(taken)}")

    @classmethod
    def check_condition(cls, condition: ImageCondition | None, n: int, vector_size=None) -> ImageCondition:
        """``condition`` checked against the declaration; a vector becomes float32 (n, d).

        ``vector_size`` is the length the loaded weights need, when the class leaves it open.
        """
        condition = condition or ImageCondition()
        cls.check_condition_kinds(condition.given(), {})
        if condition.vector is None:
            return condition
        vector = np.asarray(condition.vector)
        if vector.dtype.kind not in "iuf" or vector.ndim not in (1, 2) or vector.size == 0:
            raise InvalidInput("the condition vector must be numbers, shaped (d,) or (n, d)")
        vector = vector.astype(np.float32)
        if not np.isfinite(vector).all():
            raise InvalidInput("the condition vector holds NaN or infinity")
        if vector.ndim == 1:
            vector = np.broadcast_to(vector, (n, vector.shape[0]))
        if vector.shape[0] != n:
            raise InvalidInput(f"the condition holds {vector.shape[0]} vectors for {n} images")
        size = vector_size or cls.vector_size
        if size and vector.shape[1] != size:
            raise InvalidInput(f"model {cls.name} takes a condition vector of {size} numbers, "
                               f"got {vector.shape[1]}")
        return ImageCondition(text=condition.text, label=condition.label, vector=np.ascontiguousarray(vector))

    def generate(self, n: int, condition: ImageCondition, levels=False, progress=None, **options) -> Images:
        """``n`` images for ``condition`` (checked by ``check_condition``).

        ``levels``: also the coarse-to-fine steps (``Images.levels``), where the model has
        them. ``progress(done, total)`` as the images are made. ``options`` are the
        model's declared ``options`` (``text`` and ``label`` arrive in ``condition``).
        """
        raise NotImplementedError

    def __call__(self, n=1, condition: ImageCondition | None = None, levels=False, progress=None,
                 **options) -> Images:
        condition = self.check_condition(condition, n)
        return self.generate(n, condition, levels=levels and self.levels, progress=progress, **options)

    @classmethod
    def call_options(cls, options: dict) -> dict:
        """The model's own options, less the condition's (``text``, ``label``), which ``generate``
        gets in its ``ImageCondition``."""
        return {k: v for k, v in super().call_options(options).items() if k not in ("text", "label")}


# ---------------------------------------------------------------------------------------
# The project's own weight folders


def save_project(directory, model, networks, *, name="project", arrays=None, extra=None) -> Path:
    """Write a weights folder that ``read_project`` / ``load_project_networks`` read back.

    Args:
        directory: the folder (created when missing). Files it holds already that are not
            written here (a report) are left alone and stay out of ``SHA256SUMS``.
        model: the registry name, recorded as ``config["model"]``.
        networks: {name: network}; each is saved as ``<name>.safetensors`` and its
            ``config`` (constructor arguments) as ``config[name]``.
        name: what the weights are called in reports (``config["name"]``).
        arrays: {stem: {key: array}}, each saved as ``<stem>.npz``.
        extra: more entries for ``config.json``.

    Returns:
        The folder.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"model": model, "name": name}
    written = [PROJECT_CONFIG]
    for key, network in networks.items():
        config[key] = dict(network.config)
        state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        save_file(state, str(directory / f"{key}.safetensors"))
        written.append(f"{key}.safetensors")
    for stem, entries in (arrays or {}).items():
        np.savez(directory / f"{stem}.npz", **entries)
        written.append(f"{stem}.npz")
    config.update(extra or {})
    (directory / PROJECT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    (directory / CHECKSUMS).write_text("".join(f"{weights_lib.sha256sum(directory / f)}  {f}\n"
                                               for f in sorted(written)))
    return directory


def project_checksums(directory) -> dict[str, str]:
    """{file name: sha256} as a project weights folder's ``SHA256SUMS`` lists them ({} without one)."""
    listing = Path(directory) / CHECKSUMS
    if not listing.is_file():
        return {}
    entries = (line.split(maxsplit=1) for line in listing.read_text().splitlines() if line.strip())
    return {name: digest for digest, name in entries}


def read_project(directory, verify=True) -> dict:
    """The ``config.json`` of a project weights folder, after checking ``SHA256SUMS`` when ``verify``."""
    directory = Path(directory)
    if not (directory / PROJECT_CONFIG).is_file():
        raise weights_lib.WeightsMissing(f"{directory} holds no {PROJECT_CONFIG}: not a project weights folder")
    config = json.loads((directory / PROJECT_CONFIG).read_text())
    if verify:
        for name, digest in project_checksums(directory).items():
            if not (directory / name).is_file() or weights_lib.sha256sum(directory / name) != digest:
                raise weights_lib.WeightsInvalid(f"{directory / name} does not match {CHECKSUMS}")
    return config


def load_project_networks(directory, classes, config) -> dict:
    """{name: network} built from ``config[name]`` and loaded strictly from ``<name>.safetensors``."""
    directory = Path(directory)
    networks = {}
    for key, network_class in classes.items():
        file = directory / f"{key}.safetensors"
        if not file.is_file():
            raise weights_lib.WeightsMissing(f"missing {file.name} in the project weights folder {directory}")
        networks[key] = weights_lib.load_weights(network_class(**config.get(key, {})), file, file.name)
    return networks
