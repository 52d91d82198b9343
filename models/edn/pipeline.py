"""Everybody Dance Now inference: a source dance video -> the target person performing it.

    pipe = registry.load("edn")                                   # the demo target
    for chunk in pipe.frame_chunks(MotionTransferInput(video=frames, audio=None), target="runs/me"):
        ...

Chan, Ginosar, Zhou and Efros, ICCV 2019, Sec. 3-4. A *target* is one person's trained
generator (and, when trained, face generator), with the keypoints of the target's own
frames that the pose normalisation compares the source with. The steps:

1. Pose detection: the source dancer's COCO-18 keypoints in every frame (MediaPipe,
   ``models.perception.pose.body_keypoints``), moved onto EDN's 1080x1920 canvas. A frame
   where nobody is found keeps the last pose seen (the first pose seen, before any), so the
   result keeps the source's length and its sound stays in sync.
2. Global pose normalisation (Sec. 4, ``graph_posenorm.py``): the source's poses scaled
   and moved so that the dancer stands and moves where the target did, fitted from both
   videos' ankle positions; then EDN's median smoothing over 7 frames. When the videos do
   not allow the authors' fit (the ankles never move away from the camera, or are never
   seen) the poses are only scaled by the ratio of the median body heights and moved so
   that the median ankle rows match, and ``info["normalisation"]`` says so.
3. Labels: the stick figure on the canvas (``edn_stick_figure``), resized as the authors'
   data preparation does (1024x512, and 512x256 for a global-stage generator).
4. Synthesis (Sec. 3, temporal smoothing): each frame's generator input is its label and
   the previous generated frame (zeros for the first); with a face generator its residual
   is added on the 128x128 face box (Sec. 3, face GAN; 64x64 on a global-stage target's labels).

Memory is bounded: the video is read once, chunk by chunk, keeping only keypoints, and
frames are drawn and handed on ``chunk_frames`` at a time.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import weights as weights_lib
from models.common.device import pick_device
from models.common.pipeline import MotionTransferPipeline, Option, load_project_networks, read_project
from models.edn.dataset import scale_face_box
from models.edn.networks import NETWORKS, FaceBox, synthesize_frame
from models.errors import InvalidInput, WeightsMissing
from models.perception import pose as pose_lib
from models.types import MotionTransferInput

TARGET_OPTION = Option("target", str, None, "the target person: a target trained by POST /v1/motion-targets "
                                            "(its id) or talkingface train edn (its folder); the loaded one when "
                                            "not given")
NORMALISE_OPTION = Option("normalise", bool, True, "fit the source's poses to the target's position and size "
                                                   "(the paper's global pose normalisation)")
MINUTES_OPTION = Option("minutes", float, 10.0, "training a target: wall-clock minutes to train for",
                        minimum=0.05, maximum=24 * 60)
CACHED_TARGETS = 4


@dataclass
class Target:
    """One trained target person."""

    generator: torch.nn.Module
    face: torch.nn.Module | None
    label_size: tuple[int, int]     # (H, W) of the generator's labels
    poses: np.ndarray | None        # (N, 18, 3) canvas keypoints of the target's frames
    name: str


def generator_class_of(state_dict) -> str:
    """"local" for a pix2pixHD LocalEnhancer's state dict, "global" otherwise."""
    return "local" if any(k.split(".")[0].startswith("model1_") for k in state_dict) else "global"


def face_class_of(state_dict) -> str:
    """"face_unet" for the U-Net face generator (``--faceGtype unet``), "face" for the global one."""
    return "face_unet" if any(k.startswith("model.model.") for k in state_dict) else "face"


def stage_label_size(generator_class) -> tuple[int, int]:
    """(H, W) of a stage's labels: 512x1024 for the local stage, 256x512 for the global one (``--loadSize 512``)."""
    if generator_class == "local":
        return tuple(pose_lib.EDN_LABEL_SIZE)
    return pose_lib.EDN_LABEL_SIZE[0] // 2, pose_lib.EDN_LABEL_SIZE[1] // 2


def read_target(directory, verify=True) -> Target:
    """A target folder this project wrote (``models.edn.train.export_target``)."""
    directory = Path(directory)
    config = read_project(directory, verify)
    classes = {"generator": NETWORKS[config.get("generator_class", "global")]}
    if config.get("face_class"):
        classes["face"] = NETWORKS[config["face_class"]]
    networks = load_project_networks(directory, classes, config)
    poses = None
    if (directory / "target_poses.npz").is_file():
        with np.load(directory / "target_poses.npz") as arrays:
            poses = arrays["keypoints"].astype(np.float64)
    label_size = tuple(config.get("label_size") or stage_label_size(config.get("generator_class", "global")))
    return Target(generator=networks["generator"], face=networks.get("face"), label_size=label_size, poses=poses,
                  name=config.get("name", str(directory)))


def label_tensor(posepts, label_size) -> torch.Tensor:
    """Step 3: the label (1, 3, H, W) in [0, 1] of canvas keypoints, at ``label_size``."""
    label = pose_lib.edn_label(pose_lib.edn_stick_figure(posepts))
    if tuple(label_size) != tuple(pose_lib.EDN_LABEL_SIZE):
        label = pose_lib.edn_global_stage_label(label)
    if label.shape[:2] != tuple(label_size):
        raise WeightsMissing(f"the target's generator draws {label_size[1]}x{label_size[0]} frames; EDN's labels are "
                             f"{pose_lib.EDN_LABEL_SIZE[1]}x{pose_lib.EDN_LABEL_SIZE[0]} or 512 wide")
    return torch.from_numpy(np.ascontiguousarray(label)).permute(2, 0, 1)[None].float().div(255.0)


def fill_missing(poses: list[np.ndarray | None]) -> np.ndarray:
    """Step 1's rule for frames without a person: the last pose seen, the first one before any."""
    seen = [p for p in poses if p is not None]
    if not seen:
        raise InvalidInput("no person was found in any frame of the source video")
    filled, last = [], seen[0]
    for p in poses:
        last = p if p is not None else last
        filled.append(last)
    return np.stack(filled)


def simple_normalisation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Step 2's fallback: scale by the median body heights, match the median ankle rows."""
    def stats(poses):
        heights, toes, centres = [], [], []
        for p in poses:
            present = p[:, 2] > 0
            if present.sum() < 2:
                continue
            ys = p[present, 1]
            heights.append(ys.max() - ys.min())
            toes.append(ys.max())
            centres.append(np.median(p[present, 0]))
        if not heights:
            return None
        return np.median(heights), np.median(toes), np.median(centres)

    ours, theirs = stats(source), stats(target)
    if ours is None or theirs is None or ours[0] <= 0:
        return source
    scale = theirs[0] / ours[0]
    out = source.copy()
    present = out[..., 2] > 0
    out[..., 0] = np.where(present, (out[..., 0] - ours[2]) * scale + theirs[2], out[..., 0])
    out[..., 1] = np.where(present, (out[..., 1] - ours[1]) * scale + theirs[1], out[..., 1])
    return out


class EDNPipeline(MotionTransferPipeline):
    """Everybody Dance Now (Chan et al., ICCV 2019): pose detection, normalisation, pix2pixHD with a face GAN."""

    name = "edn"
    options = (TARGET_OPTION, NORMALISE_OPTION, MINUTES_OPTION)

    def __init__(self, target: Target, device="auto", chunk_frames=8, info=None):
        self.device = pick_device(device)
        self.chunk_frames = int(chunk_frames)
        self.default = self._ready(target)
        self.targets: OrderedDict[str, Target] = OrderedDict()
        self.info = dict(info or {}, model="edn", device=str(self.device), weights=target.name)

    def _ready(self, target: Target) -> Target:
        target.generator = target.generator.to(self.device).eval().requires_grad_(False)
        if target.face is not None:
            target.face = target.face.to(self.device).eval().requires_grad_(False)
        return target

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory, device="auto", verify=True, **options):
        """A target trained with the authors' code: ``latest_net_G.pth`` (global or local stage, the
        published sizes), optionally ``latest_net_Gface.pth`` and ``target_keypoints.npy``."""
        directory = Path(directory)
        paths = weights_lib.require_all(cls.weight_files(), directory, verify)
        state = weights_lib.read_state_dict(paths["latest_net_G.pth"])
        kind = generator_class_of(state)
        generator = weights_lib.load_weights(NETWORKS[kind](), state, "latest_net_G.pth")
        face = None
        if paths.get("latest_net_Gface.pth"):
            face_state = weights_lib.read_state_dict(paths["latest_net_Gface.pth"])
            face = weights_lib.load_weights(NETWORKS[face_class_of(face_state)](), face_state, "latest_net_Gface.pth")
        poses = np.load(paths["target_keypoints.npy"]) if paths.get("target_keypoints.npy") else None
        target = Target(generator, face, stage_label_size(kind), poses,
                        f"a target trained with the authors' code ({kind} stage)")
        return cls(target, device=device, info={"weights_dir": str(directory)}, **options)

    @classmethod
    def from_project(cls, directory, device="auto", verify=True, **options):
        """A target folder this project trained."""
        return cls(read_target(directory, verify), device=device, info={"weights_dir": str(directory)}, **options)

    def target(self, folder=None) -> Target:
        """The target of a request: the loaded one, or the folder ``folder`` (a few are kept loaded)."""
        if folder is None:
            return self.default
        key = str(Path(folder).resolve())
        if key not in self.targets:
            if not (Path(folder) / "config.json").is_file():
                raise InvalidInput(f"no trained target at {folder}")
            self.targets[key] = self._ready(read_target(folder))
            while len(self.targets) > CACHED_TARGETS:
                self.targets.popitem(last=False)
        self.targets.move_to_end(key)
        return self.targets[key]

    # -- steps ------------------------------------------------------------------------
    def source_poses(self, video, progress=None, total=None) -> np.ndarray:
        """Step 1: canvas keypoints (T, 18, 3) of every frame of ``video`` (array or chunks)."""
        chunks = [video] if isinstance(video, np.ndarray) else video
        poses, done = [], 0
        for chunk in chunks:
            chunk = np.asarray(chunk)
            for frame in chunk:
                try:
                    keypoints = pose_lib.body_keypoints(frame)
                except InvalidInput:
                    keypoints = None                    # nobody in this frame
                poses.append(None if keypoints is None or not (keypoints[:, 2] > 0).any()
                             else pose_lib.edn_fit_to_canvas(keypoints, frame.shape[:2]))
            done += len(chunk)
            if progress is not None:
                progress(done, max(total or 0, done))
        return fill_missing(poses)

    def normalised(self, poses: np.ndarray, target: Target, normalise=True) -> tuple[np.ndarray, str]:
        """Step 2: the poses the target performs (as many as ``poses``), and which normalisation was used.

        The authors' normalisation drops the frames before the first one it can use, and
        their smoothing's window runs ahead of each frame, so it ends ``window - 1`` frames
        early; to keep one frame a source frame, the first normalised pose is repeated at
        the start and the last one at the end.
        """
        how, count = "none", len(poses)
        if normalise and target.poses is not None and len(target.poses):
            try:
                fit = pose_lib.fit_edn_normalisation(target.poses, poses)
                poses, how = pose_lib.edn_normalise(poses, fit), "authors"
                poses = np.concatenate([np.repeat(poses[:1], count - len(poses), 0), poses])
            except InvalidInput:
                poses, how = simple_normalisation(poses, target.poses), "median height and ankle row"
        window = pose_lib.EDN_SMOOTHING_WINDOW
        padded = np.concatenate([poses, np.repeat(poses[-1:], window - 1, 0)])
        return pose_lib.edn_median_smooth(padded, window), how

    @torch.no_grad()
    def draw(self, poses: np.ndarray, target: Target, progress=None, done=0, total=None):
        """Steps 3-4: yield uint8 frame chunks of ``poses`` drawn by ``target``."""
        previous = None
        chunk = []
        for i, posepts in enumerate(poses):
            label = label_tensor(posepts, target.label_size).to(self.device)
            if previous is None:
                previous = label.new_zeros(1, 3, *label.shape[2:])
            # The face box of the full-size label, scaled as training scaled it for a global-stage target.
            box = FaceBox(*scale_face_box(pose_lib.edn_face_box(posepts), target.label_size)) if target.face else None
            previous = synthesize_frame(target.generator, label, previous, target.face, box)
            chunk.append(previous[0].clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0).cpu().numpy())
            if len(chunk) == self.chunk_frames or i == len(poses) - 1:
                if progress is not None:
                    progress(done + i + 1, total or done + len(poses))
                yield np.stack(chunk)
                chunk = []

    def frame_chunks(self, inputs: MotionTransferInput, progress=None, target=None, normalise=True, **_):
        """Steps 1-4; uint8 RGB chunks at the target's label size, one frame a source frame."""
        chosen = self.target(TARGET_OPTION.parse(target))
        expected = getattr(inputs.video, "expected_frames", None) or (
            len(inputs.video) if isinstance(inputs.video, np.ndarray) else None)
        total = 2 * expected if expected else None
        poses = self.source_poses(inputs.video, progress, total)
        poses, self.last_normalisation = self.normalised(poses, chosen, NORMALISE_OPTION.parse(normalise))
        yield from self.draw(poses, chosen, progress, done=len(poses), total=2 * len(poses))

    def video_info(self, inputs) -> dict:
        return dict(self.info, normalisation=getattr(self, "last_normalisation", None))

    def train_target(self, video, out_dir, progress=None, minutes=MINUTES_OPTION.default, **_) -> dict:
        """Train a new target person from ``video`` into ``out_dir`` (``models.edn.train.train_target``)."""
        from models.edn import train

        folder = train.train_target(video, out_dir, time_budget=float(minutes) * 60.0, progress=progress,
                                    device=str(self.device))
        return {"target": str(folder), "name": read_project(folder).get("name")}
