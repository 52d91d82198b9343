"""Everybody Dance Now's training data: one target person's video -> frames, pose labels, keypoints.

Chan, Ginosar, Zhou and Efros, "Everybody Dance Now", ICCV 2019 (arXiv:1808.07371),
Sec. 3 and 5 ("we train a model for each target person"). The preparation follows the
authors' ``data_prep/graph_train.py`` (github.com/carolineec/EverybodyDanceNow) with
MediaPipe's keypoints in place of OpenPose's (``models.perception.pose``):

1. every frame of the 25-fps video (``models.perception.video``, the one reader) gets
   its COCO-18 body keypoints; a frame where nobody is found is skipped and recorded, as
   ``graph_train.py`` skips a keypoint file that is empty;
2. the frame is scaled to fit EDN's 1080x1920 canvas and centred (``scale_resize`` and
   ``fix_scale_image``: an affine warp, bilinear, black borders), its keypoints moved the
   same way (``edn_fit_to_canvas``);
3. the stick figure is drawn on the canvas and both are resized to 1024x512 with
   LANCZOS (``ANTIALIAS``): the full-size label and frame (``train_label``,
   ``train_img``), with the 128x128 face box of the frame (``train_facetexts128``);
4. for the global stage (``--loadSize 512``) pix2pixHD's loader scales them to 512 wide,
   the label NEAREST, the frame BICUBIC (``get_transform`` with ``scale_width``); they are
   stored at that size here so that training does not resize every step.

A prepared folder::

    manifest.json       the video, frames read, usable and skipped frames, the stored sizes
    keypoints.npy       float32 (N, 18, 3): canvas keypoints of the N usable frames
    frame_index.npy     int64 (N,): each usable frame's index in the 25-fps video
    face_boxes.npy      int32 (N, 4): the face box (min_row, max_row, min_col, max_col) in
                        the 512x1024 label
    global/label/000000.png, global/img/000000.png ...   256x512 (the global stage)
    local/label/000000.png, local/img/000000.png ...     512x1024 (the local and face stages)

Training reads consecutive frame pairs (``TargetPairs``): the generator draws frame t-1
from a blank previous frame and frame t from its own frame t-1, and the temporal
discriminator judges both (``train_fullts.py``, ``aligned_dataset.py``: item ``i`` is
frame ``i`` and frame ``i + 1``, the face box that of frame ``i``). Unlike the authors'
loader, which pairs neighbouring files whatever lies between them, a pair is only made of
frames that follow each other in the video: a skipped frame breaks the chain.

Example:

    >>> manifest = prepare_target("me_dancing.mp4", "data/me")
    >>> pairs = TargetPairs("data/me", "global")       # items: label, next_label, image, ...
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from models.errors import InvalidInput
from models.perception import pose as pose_lib
from models.perception.video import VIDEO_FPS, read_video

__all__ = [
    "STAGE_SIZES",
    "TargetPairs",
    "canvas_frame",
    "is_prepared",
    "prepare_target",
    "read_manifest",
    "scale_face_box",
    "stage_frame",
    "target_keypoints",
]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# (H, W) of the labels and frames each stage trains on: the global stage's --loadSize 512,
# the local and face stages' full 1024x512 (--resize_or_crop none).
STAGE_SIZES = {"global": (pose_lib.EDN_LABEL_SIZE[0] // 2, pose_lib.EDN_LABEL_SIZE[1] // 2),
               "local": tuple(pose_lib.EDN_LABEL_SIZE)}


# ---------------------------------------------------------------------------------------
# One frame


def canvas_frame(frame: np.ndarray) -> np.ndarray:
    """A frame scaled to fit EDN's 1080x1920 canvas and centred (``fix_scale_image``).

    The same scale and shift as ``edn_fit_to_canvas`` applies to the keypoints: an affine
    warp (bilinear), the uncovered border black.
    """
    height, width = frame.shape[:2]
    canvas_h, canvas_w = pose_lib.EDN_CANVAS
    if (height, width) == (canvas_h, canvas_w):
        return frame
    row_scale, col_scale = canvas_h / float(height), canvas_w / float(width)
    if row_scale == col_scale:
        scale, shift = row_scale, (0.0, 0.0)
    elif col_scale > row_scale:
        scale, shift = row_scale, ((canvas_w - row_scale * float(width)) / 2.0, 0.0)
    else:
        scale, shift = col_scale, (0.0, (canvas_h - col_scale * float(height)) / 2.0)
    matrix = np.float32([[scale, 0, shift[0]], [0, scale, shift[1]]])
    return cv2.warpAffine(np.ascontiguousarray(frame), matrix, (canvas_w, canvas_h))


def stage_frame(canvas: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The training frame of a canvas frame: 1024x512 LANCZOS, then 512 wide BICUBIC for the global stage."""
    image = Image.fromarray(canvas).resize(pose_lib.EDN_LABEL_SIZE[::-1], Image.LANCZOS)
    if tuple(size) != tuple(pose_lib.EDN_LABEL_SIZE):
        image = image.resize(tuple(size)[::-1], Image.BICUBIC)
    return np.asarray(image)


def stage_label(posepts: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The pose label of canvas keypoints: the 1024x512 stick figure, NEAREST to 512 wide for the global stage."""
    label = pose_lib.edn_label(pose_lib.edn_stick_figure(posepts))
    if tuple(size) != tuple(pose_lib.EDN_LABEL_SIZE):
        label = pose_lib.edn_global_stage_label(label)
    return label


def scale_face_box(box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A face box of the 512x1024 label moved to labels of ``size`` (64x64 in the global stage's)."""
    factor = size[0] / pose_lib.EDN_LABEL_SIZE[0]
    return tuple(int(v * factor) for v in box)


def _stage_names(stages) -> tuple[str, ...]:
    stages = (stages,) if isinstance(stages, str) else tuple(stages)
    unknown = [s for s in stages if s not in STAGE_SIZES]
    if unknown or not stages:
        raise InvalidInput(f"sizes must name stages among {', '.join(STAGE_SIZES)}, got {stages!r}")
    return stages


# ---------------------------------------------------------------------------------------
# Preparing a video


def prepare_target(video_path, out_dir, progress: Callable[[int, int], None] | None = None,
                   max_frames: int | None = None, sizes=("global",)) -> dict:
    """Prepare the target person's video for training (``graph_train.py``'s steps, see the module).

    Frames, labels and keypoints are written frame by frame as the video is decoded, so
    memory does not grow with its length. Whatever ``out_dir`` held is replaced.

    Args:
        video_path: the target's video (any container the shared reader takes); read at 25 fps.
        out_dir: the dataset folder to write.
        progress (optional): ``progress(done, total)`` after every frame (frames read, frames
            expected); may raise to stop, which leaves an incomplete folder to prepare again.
        max_frames (optional): read no more than this many frames.
        sizes: the stages to store labels and frames for: ``"global"`` (256x512) and/or
            ``"local"`` (512x1024, also the face stage's).

    Returns:
        The manifest (``manifest.json``).

    Raises:
        InvalidInput: not a readable video, or no frame shows a person.
    """
    stages = _stage_names(sizes)
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    for stage in stages:
        for kind in ("label", "img"):
            (out_dir / stage / kind).mkdir(parents=True, exist_ok=True)
    video = read_video(video_path)
    total = video.expected_frames if max_frames is None else min(video.expected_frames, int(max_frames))
    keypoints, indices, boxes, skipped = [], [], [], []
    source_size = None
    for index, frame in enumerate(video.frames(limit=max_frames)):
        source_size = frame.shape[:2]
        try:
            found = pose_lib.body_keypoints(frame)
        except InvalidInput:
            found = None
        if found is None or not (found[:, 2] > 0).any():
            skipped.append(index)
        else:
            posepts = pose_lib.edn_fit_to_canvas(found, frame.shape[:2])
            name = f"{len(indices):06d}.png"
            canvas = canvas_frame(frame)
            for stage in stages:
                size = STAGE_SIZES[stage]
                Image.fromarray(stage_label(posepts, size)).save(out_dir / stage / "label" / name)
                Image.fromarray(stage_frame(canvas, size)).save(out_dir / stage / "img" / name)
            keypoints.append(posepts.astype(np.float32))
            indices.append(index)
            boxes.append(pose_lib.edn_face_box(posepts))
        if progress is not None:
            progress(index + 1, max(total, index + 1))
    if not indices:
        raise InvalidInput(f"no person was found in any frame of {Path(video_path).name}")
    np.save(out_dir / "keypoints.npy", np.stack(keypoints))
    np.save(out_dir / "frame_index.npy", np.asarray(indices, np.int64))
    np.save(out_dir / "face_boxes.npy", np.asarray(boxes, np.int32))
    manifest = {
        "model": "edn",
        "video": str(Path(video_path).resolve()),
        "fps": VIDEO_FPS,
        "source_size": list(source_size),
        "frames": len(indices) + len(skipped),
        "usable": len(indices),
        "skipped": skipped,  # frame indices where nobody was found
        "sizes": {stage: list(STAGE_SIZES[stage]) for stage in stages},
        "max_frames": max_frames,
        "complete": True,
    }
    if skipped:
        logger.info("%s: no person in %d of %d frames; they are skipped", Path(video_path).name, len(skipped),
                    manifest["frames"])
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(data_dir) -> dict:
    """The manifest of a prepared folder; InvalidInput when it is missing or incomplete."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise InvalidInput(f"{data_dir} is not a prepared EDN target: {MANIFEST} is missing "
                           "(run `talkingface data prepare --model edn`)")
    manifest = json.loads(path.read_text())
    if manifest.get("model") != "edn" or not manifest.get("complete"):
        raise InvalidInput(f"{data_dir} holds no complete EDN target data; prepare it again")
    return manifest


def is_prepared(data_dir, video_path=None, sizes=("global",), max_frames=None) -> bool:
    """Whether ``data_dir`` holds ``video_path`` (when given) prepared for ``sizes`` (and ``max_frames``)."""
    try:
        manifest = read_manifest(data_dir)
    except InvalidInput:
        return False
    same_video = video_path is None or (manifest["video"] == str(Path(video_path).resolve())
                                        and manifest.get("max_frames") == max_frames)
    stages = (sizes,) if isinstance(sizes, str) else tuple(sizes)
    return same_video and all(stage in manifest["sizes"] for stage in stages)


def target_keypoints(data_dir) -> np.ndarray:
    """float32 (N, 18, 3): the canvas keypoints of the usable frames (what the pose normalisation reads)."""
    read_manifest(data_dir)
    return np.load(Path(data_dir) / "keypoints.npy").astype(np.float32)


# ---------------------------------------------------------------------------------------
# Training pairs


class TargetPairs(Dataset):
    """Consecutive frame pairs (t-1, t) of a prepared target, as ``train_fullts.py`` feeds them.

    Args:
        data_dir: the prepared folder.
        stage (`str`, defaults to ``"global"``): which stored size to read: ``"global"``
            (256x512) or ``"local"`` (512x1024, the local and face stages).
        frames (`slice`, optional): the usable frames to draw pairs from (e.g. all but the
            last ones, held out); all by default.

    Items are dicts: ``label`` and ``next_label`` float32 (3, H, W) in [0, 1] (``ToTensor``,
    no normalisation), ``image`` and ``next_image`` float32 (3, H, W) in [-1, 1], ``face_box``
    int64 (4,) the face box of frame t-1 at this size, ``index`` the usable frame t-1.
    """

    def __init__(self, data_dir, stage="global", frames: slice | None = None):
        self.data_dir = Path(data_dir)
        manifest = read_manifest(self.data_dir)
        if stage not in manifest["sizes"]:
            raise InvalidInput(f"{self.data_dir} holds no {stage}-stage labels (it has "
                               f"{', '.join(manifest['sizes'])}); prepare it with sizes including {stage!r}")
        self.stage, self.size = stage, tuple(manifest["sizes"][stage])
        usable = np.arange(manifest["usable"])[frames if frames is not None else slice(None)]
        index = np.load(self.data_dir / "frame_index.npy")
        self.boxes = np.load(self.data_dir / "face_boxes.npy")
        # A pair is two usable frames that follow each other in the video.
        self.pairs = [int(i) for i in usable[:-1] if index[i + 1] == index[i] + 1]
        self.epoch = 0

    def set_epoch(self, epoch: int):
        """No random draws (the authors train with ``--no_flip``); kept for the training loop."""
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.pairs)

    def _read(self, kind: str, i: int) -> torch.Tensor:
        image = np.array(Image.open(self.data_dir / self.stage / kind / f"{i:06d}.png").convert("RGB"))
        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
        return tensor if kind == "label" else tensor.mul_(2.0).sub_(1.0)

    def __getitem__(self, item):
        i = self.pairs[item]
        return {"label": self._read("label", i), "next_label": self._read("label", i + 1),
                "image": self._read("img", i), "next_image": self._read("img", i + 1),
                "face_box": torch.tensor(scale_face_box(self.boxes[i], self.size), dtype=torch.int64),
                "index": i}
