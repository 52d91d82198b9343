"""What every system's demo weights are built from: generated clips and the bundled example.

    talkingface weights build-demo --model MODEL      # models/<system>/demo.py: build_demo

A system's demo weights are trained on clips this project makes itself, so that the
README example runs on a fresh clone without the authors' checkpoints:

1. ``default_photos``: the two public-domain portraits shipped in scikit-image and
   matplotlib.
2. ``make_demo_videos``: each portrait animated to espeak-ng sentences
   (``models.common.demo_data``), written as ordinary MP4s that any system's dataset
   preparation reads.
3. The system prepares them, trains reduced networks within a time budget, exports
   them, and scores them on the bundled example (``read_example``: ``examples/face.jpg``
   and ``examples/speech.wav``, a sentence not used in training); ``write_report``
   leaves the score beside the weights.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from models.common import demo_data
from models.perception.decode import read_audio
from models.perception.face import find_face
from models.perception.image import read_image
from models.perception.mp4 import Mp4Writer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_IMAGE = EXAMPLES / "face.jpg"
EXAMPLE_AUDIO = EXAMPLES / "speech.wav"
REPORT = "REPORT.json"


# ---------------------------------------------------------------------------------------
# The example the demo weights are scored on


def read_example(example: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(photo, voice)`` to score demo weights on: ``example`` = (image path, audio path), or the bundled one.

    The voice is mono float32 at 16 kHz.
    """
    image, audio = example if example else (EXAMPLE_IMAGE, EXAMPLE_AUDIO)
    return read_image(image), read_audio(audio)


# ---------------------------------------------------------------------------------------
# The generated clips


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

    Clip ``k`` of a photo says sentence ``k`` (cycling), in one of ``demo_data.VOICES``
    with a speed and pitch drawn from ``seed``; the mouth follows
    ``demo_data.mouth_trajectory`` of the speech and the clip gets a small random
    shift/scale/brightness change. Files that already exist are kept, so an interrupted
    run can be resumed.

    Args:
        out_dir: folder for the MP4s, created if needed.
        photos (optional): ``{name: uint8 RGB photo}``; defaults to ``default_photos()``.
        sentences (optional): what the clips say; defaults to ``demo_data.SENTENCES``.
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
                    _write_clip(path, photo, landmarks, sentences[k % len(sentences)], Path(tmp) / "speech.wav",
                                voice, speed, pitch, rng)
                bar.update(1)
    bar.close()
    return paths


def _write_clip(path, photo, landmarks, sentence, wav, voice, speed, pitch, rng):
    """One clip: the sentence spoken into ``wav``, the photo's mouth following it, into ``path``."""
    rate, fps = demo_data.SAMPLE_RATE, demo_data.FPS
    demo_data.speak(sentence, wav, voice=voice, speed=speed, pitch=pitch)
    audio = read_audio(wav, sample_rate=rate)
    n_frames = max(1, round(len(audio) / rate * fps))
    openings = demo_data.mouth_trajectory(audio, rate, n_frames, fps)
    frames = demo_data.animate(photo, landmarks, openings, rng)
    with Mp4Writer(path, fps=fps, audio=audio, sample_rate=rate) as writer:
        writer.write(frames)


def generate_clips(work_dir, prefix: str, sentences=None, per_photo=None, seed=0,
                   progress=True) -> tuple[Path, dict[str, np.ndarray]]:
    """Step 1-2 of every demo build: the working folder and the clips in its ``videos/``.

    Args:
        work_dir: where the clips, the prepared data and the runs go; None for a new
            temporary folder named ``prefix...``. Reusing one resumes an interrupted build.
        prefix: the temporary folder's prefix.
        sentences, per_photo, seed, progress: as ``make_demo_videos`` takes them.

    Returns:
        ``(work folder, photos)``.
    """
    work = Path(work_dir or tempfile.mkdtemp(prefix=prefix))
    photos = default_photos()
    make_demo_videos(work / "videos", photos, sentences=sentences, per_photo=per_photo, seed=seed,
                     progress=progress)
    return work, photos


# ---------------------------------------------------------------------------------------
# Scoring on the bundled example


def example_frames(pipe, image, audio, sample_rate=16000):
    """``(reference, frames)``: the pipeline's prepared photo and the whole clip it draws."""
    from models import TalkingFaceInput

    reference = pipe.prepare_reference(image)
    frames = pipe(TalkingFaceInput(image=image, audio=audio, sample_rate=sample_rate)).frames
    return reference, frames


def ssim_outside(face: np.ndarray, frames: np.ndarray, changes: tuple[slice, slice]) -> float:
    """Mean SSIM of ``frames`` against ``face`` outside the box ``changes`` (rows, columns).

    The mouth box is where a talking face is expected to differ from its photo; outside
    it, the frames should keep the photo.
    """
    from models import metrics

    keep = np.ones(frames.shape[1:3], bool)
    keep[changes] = False
    return float(np.mean([metrics.ssim(face, f, mask=keep) for f in frames]))


def write_report(out_dir, report: dict) -> dict:
    """Leave ``report`` as ``REPORT.json`` beside the weights (outside their ``SHA256SUMS``); return it."""
    (Path(out_dir) / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return report
