"""DAVS's demo weights: ``talkingface weights build-demo --model davs``.

    talkingface weights build-demo --model davs --minutes 25

The generated clips of ``models.common.demo`` (the same ones ATVGnet's demo trains on),
prepared by ``models.davs.dataset`` with each sentence as the word label
(``demo_labels``), one reduced-width DAVS (``DEMO_CONFIG``) trained within the time
budget as ``DEMO_RECIPE`` says, exported into ``weights/demo/davs`` and scored on the
bundled example (``score_example``) with and without the test-time fine-tuning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from models.common import demo, demo_data

# Reduced DAVS for a 2-core CPU: the published 256 x 256 faces (what the pipeline feeds),
# narrow networks (published widths 32 / 64 / 64 / 64 / 64, features 256).
DEMO_CONFIG = {"image_size": 256, "feature_length": 64, "id_channels": 16, "lip_channels": 8,
               "mfcc_channels": 16, "decoder_channels": 16, "disc_channels": 16}
# How the demo trains, where it departs from the authors' training (``models.davs.train``):
# - ``objectives="audio_reconstruction"``: the encoders and the decoder learn on the L1 and
#   temporal terms of the audio-driven frames alone, without the sequence discriminator, the
#   domain adversary, the word classifiers and the lip-driven frames. A step costs a fifth of
#   the authors' (about 1 s against 5 s on 2 idle cores); with the authors' objectives 346 steps
#   (27 minutes) drew no face dlib could find. The lip encoder is not trained: video mode
#   of these weights shows nothing meaningful.
# - Adam at 1e-3 (the authors' 2e-4 drew only a mauve blur in the first 70 steps), constant for
#   30 epochs of the 22 training clips, then falling linearly (to 0 after 100 more).
DEMO_RECIPE = {"objectives": "audio_reconstruction", "lr": 1e-3, "niter": 30, "niter_decay": 100}


def demo_labels(photos: Mapping[str, np.ndarray] | None = None, sentences: Sequence[str] | None = None,
                per_photo: int | None = None) -> dict[str, str]:
    """Word labels of ``make_demo_videos``'s clips: clip ``<photo>_<k>`` is labelled with its sentence.

    A sentence plays the part of an LRW word: the clips of both portraits saying it share
    the label, so the word classifiers learn what was said, not who said it.
    """
    photos = demo.default_photos() if photos is None else photos
    sentences = list(demo_data.SENTENCES if sentences is None else sentences)
    per_photo = len(sentences) if per_photo is None else int(per_photo)
    return {f"{name}_{k:02d}": sentences[k % len(sentences)] for name in photos for k in range(per_photo)}


def score_example(pipe, image, audio, sample_rate=16000):
    """Lip-sync proxy, and SSIM against the aligned reference face outside the mouth box.

    The mouth box is the one the DAVS losses weight (rows 170-233, columns 64-191 of the
    256 x 256 aligned face), where the face is expected to change. The lip-sync proxy
    needs dlib to find the face in the generated frames; ``frames_with_face`` says in how
    many it did (none: the proxy is undefined and reads 0).
    """
    from models import metrics
    from models.davs.pipeline import MOUTH_COLS, MOUTH_ROWS
    from models.perception import face as face_lib

    reference, frames = demo.example_frames(pipe, image, audio, sample_rate)
    ssim = demo.ssim_outside(reference.face, frames, (MOUTH_ROWS, MOUTH_COLS))
    found = []

    def landmarks(frame):
        boxes = face_lib.detect_faces(frame)
        found.append(bool(boxes))
        return face_lib.landmarks68(frame, boxes[0]) if boxes else None

    return {"lip_sync": metrics.lip_sync_proxy(frames, audio, sample_rate, detector=landmarks),
            "ssim_outside_mouth": ssim,
            "frames": len(frames),
            "frames_with_face": int(sum(found))}


def build_demo(out_dir, work_dir=None, train_seconds=25 * 60, seed=0, per_photo=None, sentences=None,
               workers=2, batch_size=2, example=None, progress=True, recipe=None, **sizes):
    """Generate the clips, prepare them with word labels, train a reduced DAVS, export it
    into ``out_dir`` and score it on the bundled example; returns the report.

    Args:
        out_dir: the weights folder to write (``weights/demo/davs`` for the shipped one).
        work_dir (optional): folder for the clips, dataset and run; an interrupted build
            resumes from it. Defaults to a new temporary folder.
        train_seconds: the training budget (0: a single step, for tests).
        seed (int, defaults to 0): of the clips and the training.
        per_photo, sentences: the clips (``models.common.demo.make_demo_videos``).
        workers (int, defaults to 2): parallel videos in dataset preparation.
        batch_size (int, defaults to 2): clips a training step.
        example (optional): ``(image path, audio path)`` to score on; the bundled example by default.
        progress (bool, defaults to True): progress bars.
        recipe (dict, optional): training options in place of ``DEMO_RECIPE``.
        sizes: override ``DEMO_CONFIG``.

    Returns:
        The report also written as ``REPORT.json``: the example's scores (``example``
        with the pipeline's default 5 fine-tuning steps, ``example_finetune_0`` with none), the training's
        steps, time, losses and stop reason, the clips used, the sizes and the work folder.
    """
    from models.davs import dataset, train
    from models.davs.export import export_weights
    from models.davs.pipeline import FINETUNE_STEPS, DAVSPipeline

    sizes = dict(DEMO_CONFIG, **sizes)
    work, photos = demo.generate_clips(work_dir, "build-davs-demo-", sentences=sentences, per_photo=per_photo,
                                       seed=seed, progress=progress)
    labels = demo_labels(photos, sentences, per_photo)
    manifest = dataset.prepare(work / "videos", work / "data", split=0.9, labels=labels, workers=workers,
                               seed=seed, progress=progress)
    recipe = dict(DEMO_RECIPE if recipe is None else recipe)
    run = train.train(work / "data", work / "run", time_budget=train_seconds or None,
                      # The budget ends the run; without one, a single step (tests).
                      max_steps=None if train_seconds else 1, batch_size=batch_size, seed=seed,
                      device="auto", progress=progress, sample_every=50, **recipe, **sizes)
    out_dir = export_weights(work / "run", out_dir, name="demo (project-trained on generated clips)")
    image, audio = demo.read_example(example)
    # The pipeline's default (the authors' 5 fine-tuning steps on the photo), and none.
    scores = {steps: score_example(DAVSPipeline.from_project(out_dir, device="auto", finetune_steps=steps),
                                   image, audio) for steps in (FINETUNE_STEPS, 0)}
    report = {"example": scores[FINETUNE_STEPS], "example_finetune_0": scores[0], "steps": run["step"],
              "trained_seconds": round(run["elapsed"], 1), "stopped": run["stopped"],
              "word_terms": run["word_terms"], "losses": run["losses"],
              "clips": {"train": len(dataset.list_clips(work / "data", "train")),
                        "test": len(dataset.list_clips(work / "data", "test")),
                        "skipped": sorted(k for k, v in manifest["videos"].items() if v["status"] != "ok")},
              "config": sizes, "recipe": recipe, "batch_size": batch_size, "work_dir": str(work)}
    return demo.write_report(out_dir, report)
