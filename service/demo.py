"""The demo weights: generated training data, and ``talkingface weights build-demo``.

    talkingface weights build-demo            # about 30 minutes on a 2-core CPU

1. ``make_demo_videos``: the two public-domain portraits shipped in scikit-image and
   matplotlib, animated to espeak-ng sentences (``models.atvgnet.demo_data``).
2. ``make_basics``: the crop template and the landmark normalisation arrays, made from
   those portraits -- the project cannot ship the authors' ``basics/`` files.
3. ``models.atvgnet.dataset.prepare`` on the clips, with those arrays.
4. AT-net and VG-net trained with reduced widths within a time budget each.
5. ``export_weights`` into ``weights/demo/atvgnet`` and a score on the bundled example
   (``examples/face.jpg`` and ``examples/speech.wav``, a sentence not used in training).

    talkingface weights build-demo --model davs --minutes 25

``build_davs_demo`` does the same for DAVS: the same clips, prepared by
``models.davs.dataset`` with each sentence as the word label (``demo_labels``), one
reduced-width DAVS trained within the time budget, exported into ``weights/demo/davs``
and scored on the same example.
"""

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy.spatial import procrustes
from tqdm.auto import tqdm

from models.atvgnet import demo_data
from models.perception.decode import read_audio
from models.perception.face import find_face
from service.media import Mp4Writer

def default_photos() -> dict[str, np.ndarray]:
    """The public-domain portraits shipped with scikit-image and matplotlib, RGB uint8."""
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    hopper = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with Image.open(hopper) as image:
        grace = np.asarray(image.convert("RGB"))
    return {"astronaut": skimage.data.astronaut(), "grace_hopper": grace}


def make_demo_videos(out_dir: str | os.PathLike, photos: Mapping[str, np.ndarray] | None = None,
                     sentences: Sequence[str] | None = None, per_photo: int | None = None,
                     seed: int = 0, progress: bool = True) -> list[Path]:
    """Write talking-face clips ``out_dir/<photo>_<k>.mp4`` of every photo.

    Clip ``k`` of a photo says sentence ``k`` (cycling), in one of ``VOICES`` with a
    speed and pitch drawn from ``seed``; the mouth follows ``mouth_trajectory`` of the
    speech and the clip gets a small random shift/scale/brightness change. Files that
    already exist are kept, so an interrupted run can be resumed.

    Args:
        out_dir: folder for the MP4s, created if needed.
        photos (optional): ``{name: uint8 RGB photo}``; defaults to ``default_photos()``.
        sentences (optional): what the clips say; defaults to ``SENTENCES``.
        per_photo (int, optional): clips per photo; defaults to ``len(sentences)``.
        seed (int, defaults to 0): seed of voices, speeds, pitches and augmentation.
        progress (bool, defaults to True): show a tqdm bar.

    Returns:
        The MP4 paths, in order.

    Raises:
        NoFaceFound: a photo has no face dlib can find.
        TalkingFaceError: espeak-ng is missing.
    """
    photos = default_photos() if photos is None else photos
    sentences = list(demo_data.SENTENCES if sentences is None else sentences)
    per_photo = len(sentences) if per_photo is None else int(per_photo)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    paths: list[Path] = []
    bar = tqdm(total=len(photos) * per_photo, desc="demo clips", unit="clip", disable=not progress)
    with tempfile.TemporaryDirectory(prefix="demo-speech-") as tmp:
        for p, (name, photo) in enumerate(photos.items()):
            photo = np.ascontiguousarray(photo, dtype=np.uint8)
            _, landmarks, _ = find_face(photo)
            for k in range(per_photo):
                # One generator per clip, so a clip does not depend on which others exist.
                rng = np.random.default_rng([seed, p, k])
                voice = demo_data.VOICES[(k + p) % len(demo_data.VOICES)]
                speed, pitch = int(rng.integers(130, 175)), int(rng.integers(35, 70))
                path = out_dir / f"{name}_{k:02d}.mp4"
                paths.append(path)
                if not path.exists():
                    wav = demo_data.speak(sentences[k % len(sentences)], Path(tmp) / "speech.wav",
                                voice=voice, speed=speed, pitch=pitch)
                    audio = read_audio(wav, sample_rate=demo_data.SAMPLE_RATE)
                    n_frames = max(1, round(len(audio) / demo_data.SAMPLE_RATE * demo_data.FPS))
                    openings = demo_data.mouth_trajectory(audio, demo_data.SAMPLE_RATE, n_frames, demo_data.FPS)
                    frames = demo_data.animate(photo, landmarks, openings, rng)
                    with Mp4Writer(path, fps=demo_data.FPS, audio=audio, sample_rate=demo_data.SAMPLE_RATE) as writer:
                        writer.write(frames)
                bar.update(1)
    bar.close()
    return paths


# ---------------------------------------------------------------------------------------
# The project's own crop template and landmark normalisation arrays


FACE_TOP, FACE_BOTTOM = 20.0, 129.0   # rows of the brows and the chin in the 163x163 warp


def _opened(landmarks, opening):
    """Landmarks with the lower lip and jaw dropped as ``demo_data.animate`` drops them."""
    out = landmarks.astype(np.float64).copy()
    width = np.linalg.norm(out[54] - out[48])
    out[demo_data.JAW_POINTS, 1] += opening * demo_data.MAX_DROP * width
    return out


def make_basics(photos: Mapping[str, np.ndarray], seed=0):
    """``base_68``, ``mean_shape_img``, ``mean_shape_norm`` and ``S`` from the portraits.

    The crop template is the mean of the portraits' landmarks in the demo's 163x163
    crop. The shape basis ``S`` (100 x 136, orthonormal rows) is the principal directions
    of Procrustes-normalised shapes: the portraits with their mouths opened as the clips
    open them, plus small jitter of every point, so every direction a face moves in is
    kept, the mouth's first.
    """
    from models.atvgnet.preprocess import crop_face

    crops = []
    for photo in photos.values():
        box, landmarks, _ = find_face(np.ascontiguousarray(photo))
        crops.append(crop_face(np.ascontiguousarray(photo), box, landmarks)[1])
    template = np.mean(crops, axis=0)
    # Place the face as VG-net's 128x128 crop (the warp's [1:129] corner) needs it: the
    # 68 points span rows 20-129 (brows to chin) and are centred across the crop.
    top, bottom = template[:, 1].min(), template[:, 1].max()
    scale = (FACE_BOTTOM - FACE_TOP) / (bottom - top)
    template = (template - [template[:, 0].mean(), top]) * scale + [64.0, FACE_TOP]
    rng = np.random.default_rng(seed)
    shapes = []
    for crop in crops:
        for opening in np.linspace(0, 1, 21):
            for _ in range(10):
                shape = _opened(crop, opening) + rng.normal(0, 0.3, crop.shape)
                shapes.append(procrustes(template, shape)[1].reshape(136))
    shapes = np.asarray(shapes)
    mean = shapes.mean(0, keepdims=True)
    _, _, directions = np.linalg.svd(shapes - mean, full_matrices=True)
    return {"base_68": template.astype(np.float32), "mean_shape_img": template.astype(np.float32),
            "mean_shape_norm": mean.astype(np.float32), "S": directions[:100].astype(np.float32)}


# ---------------------------------------------------------------------------------------
# Scoring on the bundled example


def score_example(pipe, image, audio, sample_rate=16000):
    """Lip-sync proxy, and SSIM against the reference face outside the mouth box.

    The mouth box is the box of landmarks 48-67 in the aligned crop, widened by a
    quarter of the mouth width and lowered by the largest jaw drop of the clips.
    """
    from models import TalkingFaceInput, metrics
    from models.atvgnet.evaluate import crop_landmarks

    reference = pipe.prepare_reference(image)
    frames = pipe(TalkingFaceInput(image=image, audio=audio, sample_rate=sample_rate)).frames
    mouth = reference.landmarks[48:68]
    width = np.ptp(mouth[:, 0])
    (x0, y0), (x1, y1) = mouth.min(0) - width / 4, mouth.max(0) + [width / 4, width * demo_data.MAX_DROP + width / 4]
    keep = np.ones(frames.shape[1:3], bool)
    keep[max(0, int(y0)):int(np.ceil(y1)) + 1, max(0, int(x0)):int(np.ceil(x1)) + 1] = False
    ssim = float(np.mean([metrics.ssim(reference.face, f, mask=keep) for f in frames]))
    return {"lip_sync": metrics.lip_sync_proxy(frames, audio, sample_rate, detector=crop_landmarks),
            "ssim_outside_mouth": ssim,
            "frames": len(frames)}


# ---------------------------------------------------------------------------------------
# The whole build


DEMO_CONFIG = {"width": 16, "ngf": 16, "n_blocks": 3}
# How the demo trains each stage, where it departs from the authors' defaults:
# - AT-net draws its example frame from the whole clip (``whole_video``): with two
#   identities, examples from the first frames only made it learn the clips' openings
#   by heart (lip-sync of its landmarks on the held-out sentence 0.51, against 0.95).
# - VG-net trains on the dynamic pixel-wise loss alone (``pixel_warmup`` longer than
#   the run): the discriminator's passes cost two-thirds of a step, and with them a
#   CPU budget of minutes ends before the generator draws any mouth motion.
DEMO_RECIPE = {"atnet": {"whole_video": True}, "vgnet": {"pixel_warmup": 10**9}}


def build_demo(out_dir, work_dir=None, atnet_seconds=4 * 60, vgnet_seconds=26 * 60, seed=0, per_photo=None,
               sentences=None, workers=2, batch_sizes=(16, 2), example=None, progress=True, **sizes):
    """Generate the data, train both networks, export them into ``out_dir``; returns the report."""
    from models.atvgnet import dataset, train
    from models.atvgnet.export import export_weights
    from models.atvgnet.pipeline import ATVGnetPipeline
    from service import media

    sizes = dict(DEMO_CONFIG, **sizes)
    work = Path(work_dir or tempfile.mkdtemp(prefix="build-demo-"))
    photos = default_photos()
    make_demo_videos(work / "videos", photos, sentences=sentences, per_photo=per_photo, seed=seed,
                     progress=progress)
    basics = make_basics(photos, seed=seed)
    dataset.prepare(work / "videos", work / "data", split=0.9, basics=basics, workers=workers, seed=seed,
                    progress=progress)
    runs = {}
    for stage, seconds, batch in (("atnet", atnet_seconds, batch_sizes[0]), ("vgnet", vgnet_seconds, batch_sizes[1])):
        runs[stage] = train.train(work / "data", stage, work / "runs" / stage, time_budget=seconds or None,
                                  # The budget ends the run; without one, a single step (tests).
                                  max_steps=10**9 if seconds else 1, batch_size=batch, width=sizes["width"],
                                  ngf=sizes["ngf"], n_blocks=sizes["n_blocks"], seed=seed, device="auto",
                                  progress=progress, **DEMO_RECIPE[stage])
    out_dir = export_weights(work / "runs" / "atnet", work / "runs" / "vgnet", work / "data", basics, out_dir,
                             name="demo (project-trained on generated clips)",
                             extra={"trained_seconds": {s: round(r.get("elapsed", 0.0), 1) for s, r in runs.items()}})
    root = Path(__file__).resolve().parent.parent / "examples"
    image = media.read_image(example[0] if example else root / "face.jpg")
    audio = read_audio(example[1] if example else root / "speech.wav")
    report = {"example": score_example(ATVGnetPipeline.from_project(out_dir, device="auto"), image, audio),
              "steps": {s: r["step"] for s, r in runs.items()}, "work_dir": str(work)}
    (Path(out_dir) / "REPORT.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


# ---------------------------------------------------------------------------------------
# DAVS demo weights: the same generated clips, word labels from their sentences


# Reduced DAVS for a 2-core CPU: the published 256 x 256 faces (what the pipeline feeds),
# narrow networks (published widths 32 / 64 / 64 / 64 / 64, features 256).
DAVS_DEMO_CONFIG = {"image_size": 256, "feature_length": 64, "id_channels": 8, "lip_channels": 8,
                    "mfcc_channels": 16, "decoder_channels": 8, "disc_channels": 16}


def demo_labels(photos: Mapping[str, np.ndarray] | None = None, sentences: Sequence[str] | None = None,
                per_photo: int | None = None) -> dict[str, str]:
    """Word labels of ``make_demo_videos``'s clips: clip ``<photo>_<k>`` is labelled with its sentence.

    A sentence plays the part of an LRW word: the clips of both portraits saying it share
    the label, so the word classifiers learn what was said, not who said it.
    """
    photos = default_photos() if photos is None else photos
    sentences = list(demo_data.SENTENCES if sentences is None else sentences)
    per_photo = len(sentences) if per_photo is None else int(per_photo)
    return {f"{name}_{k:02d}": sentences[k % len(sentences)] for name in photos for k in range(per_photo)}


def score_davs_example(pipe, image, audio, sample_rate=16000):
    """Lip-sync proxy, and SSIM against the aligned reference face outside the mouth box.

    The mouth box is the one the DAVS losses weight (rows 170-233, columns 64-191 of the
    256 x 256 aligned face), where the face is expected to change. The lip-sync proxy
    needs dlib to find the face in the generated frames; ``frames_with_face`` says in how
    many it did (none: the proxy is undefined and reads 0).
    """
    from models import TalkingFaceInput, metrics
    from models.davs.pipeline import MOUTH_COLS, MOUTH_ROWS
    from models.perception import face as face_lib

    reference = pipe.prepare_reference(image)
    frames = pipe(TalkingFaceInput(image=image, audio=audio, sample_rate=sample_rate)).frames
    keep = np.ones(frames.shape[1:3], bool)
    keep[MOUTH_ROWS, MOUTH_COLS] = False
    ssim = float(np.mean([metrics.ssim(reference.face, f, mask=keep) for f in frames]))
    found = []

    def landmarks(frame):
        boxes = face_lib.detect_faces(frame)
        found.append(bool(boxes))
        return face_lib.landmarks68(frame, boxes[0]) if boxes else None

    return {"lip_sync": metrics.lip_sync_proxy(frames, audio, sample_rate, detector=landmarks),
            "ssim_outside_mouth": ssim,
            "frames": len(frames),
            "frames_with_face": int(sum(found))}


def build_davs_demo(out_dir, work_dir=None, train_seconds=25 * 60, seed=0, per_photo=None, sentences=None,
                    workers=2, batch_size=2, example=None, progress=True, **sizes):
    """Generate the clips, prepare them with word labels, train a reduced DAVS, export it
    into ``out_dir`` and score it on the bundled example; returns the report.

    ``train_seconds`` bounds the training (0: a single step, for tests); ``sizes``
    override ``DAVS_DEMO_CONFIG``. An interrupted build resumes from ``work_dir``.
    """
    from models.davs import dataset, train
    from models.davs.export import export_weights
    from models.davs.pipeline import DAVSPipeline
    from service import media

    sizes = dict(DAVS_DEMO_CONFIG, **sizes)
    work = Path(work_dir or tempfile.mkdtemp(prefix="build-davs-demo-"))
    photos = default_photos()
    make_demo_videos(work / "videos", photos, sentences=sentences, per_photo=per_photo, seed=seed,
                     progress=progress)
    labels = demo_labels(photos, sentences, per_photo)
    manifest = dataset.prepare(work / "videos", work / "data", split=0.9, labels=labels, workers=workers,
                               seed=seed, progress=progress)
    run = train.train(work / "data", work / "run", time_budget=train_seconds or None,
                      # The budget ends the run; without one, a single step (tests).
                      max_steps=None if train_seconds else 1, batch_size=batch_size, seed=seed,
                      device="auto", progress=progress, sample_every=50, **sizes)
    out_dir = export_weights(work / "run", out_dir, name="demo (project-trained on generated clips)")
    root = Path(__file__).resolve().parent.parent / "examples"
    image = media.read_image(example[0] if example else root / "face.jpg")
    audio = read_audio(example[1] if example else root / "speech.wav")
    score = score_davs_example(DAVSPipeline.from_project(out_dir, device="auto"), image, audio)
    report = {"example": score, "steps": run["step"], "trained_seconds": round(run["elapsed"], 1),
              "stopped": run["stopped"], "word_terms": run["word_terms"], "losses": run["losses"],
              "clips": {"train": len(dataset.list_clips(work / "data", "train")),
                        "test": len(dataset.list_clips(work / "data", "test")),
                        "skipped": sorted(k for k, v in manifest["videos"].items() if v["status"] != "ok")},
              "config": sizes, "batch_size": batch_size, "work_dir": str(work)}
    (Path(out_dir) / "REPORT.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
