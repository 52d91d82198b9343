"""ATVGnet's demo weights: ``talkingface weights build-demo --model atvgnet``.

    talkingface weights build-demo            # about 30 minutes on a 2-core CPU

1. The generated clips of ``models.common.demo``: the two public-domain portraits,
   animated to espeak-ng sentences.
2. ``make_basics``: the crop template and the landmark normalisation arrays, made from
   those portraits -- the project cannot ship the authors' ``basics/`` files.
3. ``models.atvgnet.dataset.prepare`` on the clips, with those arrays.
4. AT-net and VG-net trained with reduced widths (``DEMO_CONFIG``) within a time budget
   each, as ``DEMO_RECIPE`` says.
5. ``export_weights`` into ``weights/demo/atvgnet`` and ``score_example`` on the bundled
   example (a sentence not used in training).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.spatial import procrustes

from models.common import demo, demo_data
from models.perception.face import find_face

# ---------------------------------------------------------------------------------------
# The project's own crop template and landmark normalisation arrays


FACE_TOP, FACE_BOTTOM = 20.0, 129.0   # rows of the brows and the chin in the 163x163 warp


def make_basics(photos: Mapping[str, np.ndarray], seed=0):
    """``base_68``, ``mean_shape_img``, ``mean_shape_norm`` and ``S`` from the portraits.

    The crop template is the mean of the portraits' landmarks in the demo's 163x163
    crop. The shape basis ``S`` (100 x 136, orthonormal rows) is the principal directions
    of Procrustes-normalised shapes: the portraits with their mouths opened as the clips
    open them (``demo_data.opened_landmarks``), plus small jitter of every point, so every
    direction a face moves in is kept, the mouth's first.
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
                shape = demo_data.opened_landmarks(crop, opening) + rng.normal(0, 0.3, crop.shape)
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
    from models import metrics
    from models.common.evaluate import crop_landmarks

    reference, frames = demo.example_frames(pipe, image, audio, sample_rate)
    mouth = reference.landmarks[48:68]
    width = np.ptp(mouth[:, 0])
    (x0, y0), (x1, y1) = mouth.min(0) - width / 4, mouth.max(0) + [width / 4, width * demo_data.MAX_DROP + width / 4]
    box = (slice(max(0, int(y0)), int(np.ceil(y1)) + 1), slice(max(0, int(x0)), int(np.ceil(x1)) + 1))
    return {"lip_sync": metrics.lip_sync_proxy(frames, audio, sample_rate, detector=crop_landmarks),
            "ssim_outside_mouth": demo.ssim_outside(reference.face, frames, box),
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
    """Generate the data, train both networks, export them into ``out_dir``; returns the report.

    Args:
        out_dir: the weights folder to write (``weights/demo/atvgnet`` for the shipped one).
        work_dir (optional): folder for the clips, dataset and runs; an interrupted build
            resumes from it. Defaults to a new temporary folder.
        atnet_seconds, vgnet_seconds: the training budget of each stage (0: a single step,
            for tests).
        seed (int, defaults to 0): of the clips, the arrays and the training.
        per_photo, sentences: the clips (``models.common.demo.make_demo_videos``).
        workers (int, defaults to 2): parallel videos in dataset preparation.
        batch_sizes (defaults to (16, 2)): AT-net's and VG-net's.
        example (optional): ``(image path, audio path)`` to score on; the bundled example by default.
        progress (bool, defaults to True): progress bars.
        sizes: override ``DEMO_CONFIG`` (``width``, ``ngf``, ``n_blocks``).

    Returns:
        The report also written as ``REPORT.json``: the example's scores, the steps each
        stage ran, and the work folder.
    """
    from models.atvgnet import dataset, train
    from models.atvgnet.export import export_weights
    from models.atvgnet.pipeline import ATVGnetPipeline

    sizes = dict(DEMO_CONFIG, **sizes)
    work, photos = demo.generate_clips(work_dir, "build-demo-", sentences=sentences, per_photo=per_photo,
                                       seed=seed, progress=progress)
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
    image, audio = demo.read_example(example)
    report = {"example": score_example(ATVGnetPipeline.from_project(out_dir, device="auto"), image, audio),
              "steps": {s: r["step"] for s, r in runs.items()}, "work_dir": str(work)}
    return demo.write_report(out_dir, report)
