"""One render path per task, for ``talkingface generate`` and the worker alike.

    task = TASKS[pipe.task]
    inputs = task.read(pipe, {"image": path, "audio": path}, limits=Limits(...))
    result = task.render(pipe, inputs, "out.mp4", options={"paste_back": True}, progress=...)

Files are read and checked by content (``service.media``), the model's declared options
are checked (``models.common.pipeline.check_options``), and the result is written:

* talking-face (``read_inputs``, ``render``): frames stream chunk by chunk from the
  pipeline into the MP4 writer, and ``progress(done, total)`` is called after every chunk;
  raising from it (a cancel, a lost lease) stops the work at that chunk.
* pose-transfer (``read_pose_inputs``, ``render_pose``): one PNG.
* motion-transfer (``read_motion_inputs``, ``render_motion``): the source video's frames
  stream through the pipeline into the MP4 writer, with the source's sound.
* motion-target (``read_target_video``, ``train_target``): a target person trained from a
  video into a folder beside the result, which is a JSON summary naming it.
* image-generation (``read_image_condition``, ``render_images``): ``n`` images from a seed
  (and a condition), as one PNG (a grid when several) or a zip of PNGs with each level's.

``TASKS`` says, per task, which input files a job takes, which kinds of upload each
accepts, and what the result is; the job API, the worker and the CLI read it.

Every MP4 and PNG is labelled as made by a model (``service.provenance``): its metadata
names the model and its weights' sha256, and unless ``provenance`` (the worker's settings;
the environment's for the CLI) says off, the frames carry an invisible watermark and the
file a signed C2PA manifest.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import ImageCondition, MotionTransferInput, PoseTransferInput, TalkingFaceInput
from models.common.pipeline import check_options
from models.errors import InvalidInput
from service import media
from service.provenance import Label, Provenance

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


def read_talking_face_files(pipe, files: dict, options: dict, limits=Limits()) -> TalkingFaceInput:
    """``read_inputs`` for the files of a job: {"image", "audio" | "video"} paths."""
    return read_inputs(pipe, image=files["image"], audio=files.get("audio"), video=files.get("video"),
                       face_index=int(options.get("face_index", 0)), limits=limits)


def _prepare(pipe, options):
    """The request's options checked, torch seeded when asked, and the label of what made the file."""
    options = check_options(type(pipe) if not isinstance(pipe, type) else pipe, dict(options or {}))
    if options.get("seed") is not None:
        # The talking-face models are deterministic; models that sample draw from this seed.
        torch.manual_seed(options["seed"])
    return options, Label.of(pipe)


def _made_by(pipe, label: Label) -> dict:
    """The ``info`` every result has: the weights, their sha256 and the device."""
    made_by = {"weights": pipe.info.get("weights"), "weights_sha256": label.weights_sha256,
               "device": pipe.info.get("device")}
    if "precision" in pipe.info:        # the models with an int8 path say which ran
        made_by["precision"] = pipe.info["precision"]
    return made_by


def render(pipe, inputs: TalkingFaceInput, output, options=None, progress=None, reference=None,
           comment="", provenance: Provenance | None = None) -> Rendered:
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
        provenance: how the file is labelled (default: ``Provenance.for_cli()``).
    """
    options, label = _prepare(pipe, options)
    labels = provenance or Provenance.for_cli()
    with labels.signed(output, "video/mp4", label) as target, \
            media.Mp4Writer(target, fps=pipe.fps, audio=inputs.audio, sample_rate=inputs.sample_rate,
                            metadata={"comment": label.text() + comment}) as writer:
        chunks = pipe.frame_chunks(inputs, paste_back=bool(options.get("paste_back")), progress=progress,
                                   reference=reference, **pipe.call_options(options))
        for chunk in labels.marked(chunks, label):
            writer.write(np.ascontiguousarray(chunk))
        generated_at = time.time()
    info = {**_made_by(pipe, label), "driven_by": "video" if inputs.video is not None else "audio"}
    return Rendered(frames=writer.frames_written, seconds=writer.frames_written / pipe.fps,
                    generated_at=generated_at, info=info)


# ---------------------------------------------------------------------------------------
# Pose transfer


def read_pose(path, limits=Limits(), image_size=None):
    """``(keypoints (18, 3), (height, width))`` of a pose file: OpenPose JSON or a photo.

    A photo's pose is found by ``models.perception.pose.body_keypoints`` and measured in
    that photo; an OpenPose file's keypoints are taken to be measured in ``image_size``
    (the person's photo), as when OpenPose ran on a frame of that size.
    """
    from models.perception import pose as pose_lib

    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    if head[:1] in (b"{", b"["):
        if os.path.getsize(path) > pose_lib.MAX_JSON_BYTES:
            raise InvalidInput(f"the pose file is larger than {pose_lib.MAX_JSON_BYTES} bytes")
        with open(path, "rb") as f:
            keypoints = pose_lib.read_openpose_json(f.read(), image_size=image_size)
        return keypoints, tuple(image_size) if image_size is not None else None
    photo = media.read_image(path, max_pixels=limits.max_pixels)
    keypoints = pose_lib.body_keypoints(photo)
    if not (keypoints[:, 2] > 0).any():
        raise InvalidInput("no person's pose was found in the pose photo")
    return keypoints, photo.shape[:2]


def read_pose_inputs(pipe, files: dict, options: dict | None = None, limits=Limits()) -> PoseTransferInput:
    """The person's photo and the target pose of a pose-transfer request, checked."""
    photo = media.read_image(files["image"], max_pixels=limits.max_pixels)
    keypoints, size = read_pose(files["pose"], limits, image_size=photo.shape[:2])
    return PoseTransferInput(image=photo, pose=keypoints, pose_size=size)


def render_pose(pipe, inputs: PoseTransferInput, output, options=None, progress=None, comment="",
                provenance: Provenance | None = None, **_) -> Rendered:
    """Write the image ``pipe`` makes of ``inputs`` to the PNG ``output``."""
    options, label = _prepare(pipe, options)
    if progress is not None:
        progress(0, 1)
    image = pipe(inputs, **pipe.call_options(options))
    labels = provenance or Provenance.for_cli()
    Path(output).write_bytes(labels.png(image, label.text() + comment, label, title=Path(output).name))
    generated_at = time.time()
    if progress is not None:
        progress(1, 1)
    info = {**_made_by(pipe, label), "size": [int(image.shape[0]), int(image.shape[1])]}
    return Rendered(frames=1, seconds=0.0, generated_at=generated_at, info=info)


# ---------------------------------------------------------------------------------------
# Motion transfer


def read_motion_inputs(pipe, files: dict, options: dict | None = None, limits=Limits()) -> MotionTransferInput:
    """The source video (frames streamed in chunks) and its sound, checked."""
    frames = media.read_video(files["video"], max_seconds=limits.max_seconds, max_pixels=limits.max_pixels)
    sound = media.read_video_audio(files["video"], sample_rate=SAMPLE_RATE, max_seconds=limits.max_seconds)
    return MotionTransferInput(video=frames, audio=sound, sample_rate=SAMPLE_RATE)


def render_motion(pipe, inputs: MotionTransferInput, output, options=None, progress=None, comment="",
                  provenance: Provenance | None = None, **_) -> Rendered:
    """Write the clip of the target person doing the source's motion to the MP4 ``output``."""
    options, label = _prepare(pipe, options)
    labels = provenance or Provenance.for_cli()
    with labels.signed(output, "video/mp4", label) as target, \
            media.Mp4Writer(target, fps=pipe.fps, audio=inputs.audio, sample_rate=inputs.sample_rate,
                            metadata={"comment": label.text() + comment}) as writer:
        for chunk in labels.marked(pipe.frame_chunks(inputs, progress=progress, **pipe.call_options(options)), label):
            writer.write(np.ascontiguousarray(chunk))
        generated_at = time.time()
    info = {**_made_by(pipe, label), "target": options.get("target"),
            "normalisation": getattr(pipe, "last_normalisation", None)}
    return Rendered(frames=writer.frames_written, seconds=writer.frames_written / pipe.fps,
                    generated_at=generated_at, info=info)


def target_folder(result_path) -> Path:
    """Where a motion-target job's trained target lives: beside its JSON result."""
    return Path(result_path).with_suffix(".target")


def read_target_video(pipe, files: dict, options: dict | None = None, limits=Limits()) -> Path:
    """The target person's video, checked (its header, caps and a person in it are the training's to check)."""
    media.read_video(files["video"], max_seconds=limits.max_seconds, max_pixels=limits.max_pixels)
    return Path(files["video"])


def train_target(pipe, video: Path, output, options=None, progress=None, comment="", **_) -> Rendered:
    """Train a target person from ``video``; the folder is ``target_folder(output)``, the result a summary."""
    options, label = _prepare(pipe, options)
    summary = pipe.train_target(video, target_folder(output), progress=progress, **pipe.call_options(options))
    summary = {"object": "motion_target", "model": pipe.name, "made_by": label.text() + comment,
               **{k: v for k, v in summary.items() if k != "target"}}
    Path(output).write_text(json.dumps(summary, indent=2) + "\n")
    info = _made_by(pipe, label)
    return Rendered(frames=0, seconds=0.0, generated_at=time.time(), info=info)


# ---------------------------------------------------------------------------------------
# Image generation


def read_image_condition(pipe, files: dict, options: dict | None = None, limits=Limits()) -> ImageCondition:
    """The condition of an image-generation request, checked against what the model takes.

    ``text`` and ``label`` are options; a vector is an uploaded ``.npy`` file (role ``condition``).
    """
    options = options or {}
    vector = media.read_array(files["condition"]) if files.get("condition") else None
    condition = ImageCondition(text=options.get("text"), label=options.get("label"), vector=vector)
    pipeline = pipe if isinstance(pipe, type) else type(pipe)
    return pipeline.check_condition(condition, int(options.get("n") or 1))


def image_result(options) -> tuple[str, str]:
    """(suffix, media type) of an image-generation result: a zip when asked, else a PNG."""
    return (".zip", "application/zip") if (options or {}).get("format") == "zip" else (".png", "image/png")


def write_images(result, output, comment="", layout=None, label: Label | None = None,
                 provenance: Provenance | None = None) -> Path:
    """Write ``result`` (``models.Images``) as ``layout``: "png" (the image, or a grid of several;
    with levels, one row per image: its levels then itself), "zip" (``images/0000.png``,
    ``levels/<name>/0000.png``, ``info.json``) or "folder" (the zip's files in the folder
    ``output``). ``layout`` defaults to what ``output``'s suffix says.

    With a ``label`` (what made the images) each PNG is labelled as ``provenance`` says
    (default ``Provenance.for_cli()``); without one, the PNGs carry ``comment`` alone.
    """
    from models.common.images import image_grid, level_grid

    labels = provenance or (Provenance.for_cli() if label is not None else Provenance(enabled=False))

    def png(image, name):
        return labels.png(image, comment, label, title=name)

    output = Path(output)
    layout = layout or {".zip": "zip", ".png": "png"}.get(output.suffix.lower(), "folder")
    if layout == "png":
        images = result.images
        picture = (level_grid(result.levels, images) if result.levels
                   else images[0] if len(images) == 1 else image_grid(images))
        output.write_bytes(png(picture, output.name))
        return output
    files = {f"images/{i:04d}.png": png(image, f"{i:04d}.png") for i, image in enumerate(result.images)}
    for name, level in result.levels:
        files.update({f"levels/{name}/{i:04d}.png": png(image, f"{i:04d}.png") for i, image in enumerate(level)})
    files["info.json"] = (json.dumps(result.info, indent=2, default=str) + "\n").encode()
    if layout == "zip":
        with zipfile.ZipFile(output, "w", zipfile.ZIP_STORED) as archive:     # PNGs are compressed already
            for name, data in files.items():
                archive.writestr(name, data)
        return output
    for name, data in files.items():
        (output / name).parent.mkdir(parents=True, exist_ok=True)
        (output / name).write_bytes(data)
    return output


def render_images(pipe, condition: ImageCondition, output, options=None, progress=None, comment="", layout=None,
                  provenance: Provenance | None = None, **_) -> Rendered:
    """Draw ``options["n"]`` images and write them (``write_images``) to ``output``.

    Without a ``seed`` one is drawn and reported, so that any result can be made again.
    The files name the model, weights and seed but not ``comment`` (a job's id): the same
    request gives the same pixels and metadata (a C2PA manifest's salts and signature differ
    from one signing to the next, so signed files are not byte-identical).
    """
    options = dict(options or {})
    if options.get("seed") is None:
        options["seed"] = int(np.random.SeedSequence().entropy % (2 ** 31))
    options, label = _prepare(pipe, options)
    n = int(options.get("n") or 1)
    if progress is not None:
        progress(0, n)
    result = pipe(n=n, condition=condition, levels=bool(options.get("levels")), progress=progress,
                  **pipe.call_options(options))
    result.info = {**result.info, "seed": options["seed"], "n": n}
    layout = layout or ("zip" if options.get("format") == "zip" else "png")
    write_images(result, output, comment=f"{label.text()}; seed {options['seed']}", layout=layout, label=label,
                 provenance=provenance or Provenance.for_cli())
    generated_at = time.time()
    if progress is not None:
        progress(n, n)
    info = {**_made_by(pipe, label), "seed": options["seed"],
            "size": [int(result.images.shape[1]), int(result.images.shape[2])],
            "levels": [name for name, _ in result.levels],
            **{k: v for k, v in result.info.items() if k not in ("weights", "device", "seed", "n")}}
    return Rendered(frames=n, seconds=0.0, generated_at=generated_at, info=info)


# ---------------------------------------------------------------------------------------
# The tasks


@dataclass(frozen=True)
class Task:
    """What a job of one task takes and makes.

    Attributes:
        name: the registry's ``task`` of the models that do it.
        inputs: {role: kinds of upload it accepts} (``service.api.files.classify``'s kinds).
        required: groups of roles; a job gives exactly one role of each group.
        suffix, media_type: of the result file.
        read: ``read(pipe or its class, {role: path}, options, limits)`` -> the model's input.
        render: ``render(pipe, inputs, output, options=, progress=, comment=, provenance=)`` -> ``Rendered``.
        model_task: the registry ``task`` of the models that run it (``name`` unless said).
        result_type: ``result_type(options)`` -> (suffix, media type) when the options decide
            them (``suffix`` and ``media_type`` otherwise).
    """

    name: str
    inputs: dict
    required: tuple
    suffix: str
    media_type: str
    read: Callable
    render: Callable
    model_task: str | None = None
    result_type: Callable | None = None

    @property
    def models_task(self) -> str:
        return self.model_task or self.name

    def result_file(self, options) -> tuple[str, str]:
        """(suffix, media type) of the result of a job with ``options``."""
        return self.result_type(options) if self.result_type else (self.suffix, self.media_type)

    def check_roles(self, given, model, prefix="inputs."):
        """InvalidInput unless ``given`` (role names) are this task's and name one role of each group."""
        for role in given:
            if role not in self.inputs:
                raise InvalidInput(f"{prefix}{role} is not an input of {self.name}; "
                                   f"it takes {', '.join(prefix + r for r in self.inputs)}")
        for first, *others in self.required:
            named = [role for role in (first, *others) if role in given]
            if not named:
                raise InvalidInput(f"{model} needs {prefix}{first}" + "".join(f" (or {prefix}{r})" for r in others))
            if len(named) > 1:
                raise InvalidInput(f"give {' or '.join(prefix + r for r in named)}, not both")


TASKS = {
    "talking-face": Task("talking-face", {"image": ("image",), "audio": ("audio", "video"), "video": ("video",)},
                         (("image",), ("audio", "video")), ".mp4", "video/mp4", read_talking_face_files, render),
    "pose-transfer": Task("pose-transfer", {"image": ("image",), "pose": ("pose", "image")},
                          (("image",), ("pose",)), ".png", "image/png", read_pose_inputs, render_pose),
    "motion-transfer": Task("motion-transfer", {"video": ("video",)}, (("video",),), ".mp4", "video/mp4",
                            read_motion_inputs, render_motion),
    # Training a motion-transfer model's target person is a job of its own.
    "motion-target": Task("motion-target", {"video": ("video",)}, (("video",),), ".json", "application/json",
                          read_target_video, train_target, model_task="motion-transfer"),
    # No file is needed: a seed, and a condition (a caption, a class, or a vector's .npy upload).
    "image-generation": Task("image-generation", {"condition": ("array",)}, (), ".png", "image/png",
                             read_image_condition, render_images, result_type=image_result),
}
