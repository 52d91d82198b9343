"""PG2 training data: a folder of person images -> a prepared dataset folder of pose pairs.

Ma, Jia, Sun, Schiele, Tuytelaars and Van Gool, "Pose Guided Person Image Generation",
NeurIPS 2017 (arXiv:1705.09368), Sec. 4: the network learns from pairs of images of one
person in two poses; the second image's pose is the input, the image itself the target.
The authors' ``datasets/convert_market.py`` built those pairs from Market-1501; the PyTorch
port (budui/Human-Pose-Transfer) reads them from the layout below, which this module
writes:

    images/<name>.png     the image at the variant's size (128x64 Market, 256x256 DeepFashion)
    annotations.csv       the port's keypoint file: ``name:keypoints_y:keypoints_x``, each a
                          JSON list of 18 integers in COCO-18 order, -1 for a missing joint
    pairs-train.csv       ``from,to``: condition image, target image (both of one person)
    pairs-test.csv
    manifest.json         what became of every source image, each person's split, the size

``prepare`` does, per image:

1. Keypoints from the OpenPose JSON beside the image (``<stem>_keypoints.json`` as
   OpenPose names it, or ``<stem>.json``) or, without one, MediaPipe
   (``models.perception.pose.body_keypoints``), on the image as found.
2. The image fitted into the variant's frame as the pipeline fits a photo
   (``models.pg2.pipeline.fit_image``: scaled to fit, centred, the rest in the border
   colour), so training sees what inference will. Market-1501 crops (128x64) and
   DeepFashion images (256x256) are already that size and pass unchanged. The keypoints
   move with it and become the authors' integer ``(row, col)`` (``keypoints_to_rc``).

The person is the file name up to its first underscore: ``0001`` for Market-1501's
``0001_c1s1_001051_00.jpg``. Market's ``-1`` (junk) and ``0000`` (distractor) images are
skipped. Persons, not images, are split into train and test (Market's test persons are
unseen in training too): a seeded hash order, ``models.common.dataset.assign_splits``.
The pairs are every ordered pair of two different images of one person, as the authors'
``same_diff_cam`` mode with switched pairs makes them.

``PG2Pairs`` reads a split for training: condition image, target image, the target's
pose map (``pg2_pose_map``, the authors' {-1, 1} encoding) and body mask
(``pg2_pose_mask``), with the authors' flip augmentation.

Example:

    >>> manifest = prepare("Market-1501/bounding_box_train", "data/market")
    >>> item = PG2Pairs("data/market", "train")[0]     # condition, target, target_pose, target_mask
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from models.common.dataset import assign_splits, atomic_write
from models.errors import InvalidInput
from models.perception.image import read_image
from models.perception.pose import (
    COCO18,
    body_keypoints,
    keypoints_to_rc,
    pg2_pose_map,
    pg2_pose_mask,
    read_openpose_json,
)
from models.pg2.pipeline import fit_image, fit_keypoints

__all__ = [
    "IMAGE_SIZES",
    "PG2Pairs",
    "load_manifest",
    "mirror_keypoints",
    "person_of",
    "prepare",
    "read_annotations",
    "read_pairs",
    "write_annotations",
]

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1
IMAGE_SIZES = {"market": (128, 64), "deepfashion": (256, 256)}  # (H, W) of the authors' two datasets
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SKIPPED_PERSONS = ("-1", "0000")  # Market-1501's junk and distractor labels
FLIP_RATE = 0.5  # the authors' training set holds every pair once as found and once mirrored
KEYPOINT_SOURCES = ("auto", "openpose", "mediapipe")
# Joints that trade places in a mirror image: the person's right becomes their left.
MIRRORED = [COCO18.index(name.replace("right", "left") if "right" in name else name.replace("left", "right"))
            for name in COCO18]


# ---------------------------------------------------------------------------------------
# Files


def load_manifest(data_dir) -> dict:
    """The ``manifest.json`` of a prepared PG2 dataset; `InvalidInput` when there is none."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise InvalidInput(f"{data_dir} is not a prepared PG2 dataset: manifest.json is missing "
                           "(run `talkingface data prepare --model pg2`)")
    manifest = json.loads(path.read_text())
    if manifest.get("model") != "pg2" or manifest.get("version") != MANIFEST_VERSION:
        raise InvalidInput(f"{path} is not a version-{MANIFEST_VERSION} PG2 dataset manifest")
    return manifest


def read_annotations(data_dir) -> dict[str, np.ndarray]:
    """{image name: int64 (18, 2) ``(row, col)``, -1 where missing} from ``annotations.csv``."""
    keypoints = {}
    with open(Path(data_dir) / "annotations.csv", newline="") as f:
        rows = csv.reader(f, delimiter=":")
        next(rows, None)
        for name, rows_y, cols_x in rows:
            keypoints[name] = np.stack([json.loads(rows_y), json.loads(cols_x)], axis=1).astype(np.int64)
    return keypoints


def write_annotations(data_dir, keypoints: dict[str, np.ndarray]):
    """``annotations.csv`` in the port's layout (``name:keypoints_y:keypoints_x``), atomically."""
    with atomic_write(Path(data_dir) / "annotations.csv", "w") as f:
        f.write("name:keypoints_y:keypoints_x\n")
        for name in sorted(keypoints):
            rc = np.asarray(keypoints[name], np.int64)
            f.write(f"{name}:{json.dumps(rc[:, 0].tolist())}:{json.dumps(rc[:, 1].tolist())}\n")


def read_pairs(data_dir, split: str) -> list[tuple[str, str]]:
    """``(condition, target)`` image names of ``pairs-<split>.csv``."""
    path = Path(data_dir) / f"pairs-{split}.csv"
    if not path.is_file():
        raise InvalidInput(f"{data_dir} has no {path.name}")
    with open(path, newline="") as f:
        rows = csv.reader(f)
        next(rows, None)
        return [(a, b) for a, b in rows]


def _write_pairs(data_dir: Path, split: str, pairs: list[tuple[str, str]]):
    with atomic_write(data_dir / f"pairs-{split}.csv", "w") as f:
        f.write("from,to\n")
        f.writelines(f"{a},{b}\n" for a, b in pairs)


# ---------------------------------------------------------------------------------------
# One image


def person_of(path) -> str:
    """The person id of an image: its file name up to the first underscore (Market-1501's)."""
    return Path(path).stem.split("_", 1)[0]


def _keypoints_of(path: Path, image: np.ndarray, source: str) -> tuple[np.ndarray, str]:
    """(18, 3) keypoints of the image at ``path`` and where they came from."""
    if source != "mediapipe":
        for candidate in (path.with_name(f"{path.stem}_keypoints.json"), path.with_suffix(".json")):
            if candidate.is_file():
                return read_openpose_json(candidate.read_bytes(), image_size=image.shape[:2]), "openpose"
        if source == "openpose":
            raise InvalidInput(f"no OpenPose JSON beside {path.name} ({path.stem}_keypoints.json)")
    return body_keypoints(image), "mediapipe"


# ---------------------------------------------------------------------------------------
# The dataset folder


def prepare(images_dir, out_dir, variant: str = "market", keypoints: str = "auto", split: float = 0.9,
            seed: int = 0, progress: bool = True) -> dict:
    """Turn a folder of person images into a PG2 dataset folder (see the module docstring).

    Args:
        images_dir (`str` or `Path`): person images (JPEG, PNG, BMP, WebP), searched
            recursively; file names start with the person id and an underscore.
        out_dir (`str` or `Path`): the dataset folder; rewritten as a whole.
        variant (`str`, defaults to ``"market"``): ``"market"`` (128x64) or
            ``"deepfashion"`` (256x256).
        keypoints (`str`, defaults to ``"auto"``): ``"openpose"`` (the JSON beside each
            image, required), ``"mediapipe"`` or ``"auto"`` (the JSON when present).
        split (`float`, defaults to 0.9): fraction of the persons that train.
        seed (`int`, defaults to 0): of the person split.
        progress (`bool`, defaults to True): a progress bar.

    Returns:
        `dict`: the manifest: ``images`` ({name: status, message, person, source,
        keypoints}), ``persons`` ({id: split}), ``pairs`` ({split: count}), ``image_size``.
    """
    if variant not in IMAGE_SIZES:
        raise InvalidInput(f"variant must be one of {', '.join(IMAGE_SIZES)}, got {variant!r}")
    if keypoints not in KEYPOINT_SOURCES:
        raise InvalidInput(f"keypoints must be one of {', '.join(KEYPOINT_SOURCES)}, got {keypoints!r}")
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise InvalidInput(f"{images_dir} is not a folder")
    size = IMAGE_SIZES[variant]
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    sources = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                     and not p.name.startswith("."))
    images, annotations = {}, {}
    for path in tqdm(sources, desc="pg2 images", unit="image", disable=not progress):
        name = f"{path.stem}.png"
        entry = {"source": str(path.relative_to(images_dir)), "person": person_of(path), "status": "ok",
                 "message": None, "keypoints": None}
        if name in images:
            entry.update(status="error", message=f"another image is also named {path.stem}")
        elif "," in name or ":" in name:  # the separators of the CSV files
            entry.update(status="error", message="a name with ',' or ':' cannot be listed in the CSV files")
        elif entry["person"] in SKIPPED_PERSONS:
            entry.update(status="skipped", message="Market-1501's junk or distractor label")
        else:
            try:
                image = read_image(path)
                found, entry["keypoints"] = _keypoints_of(path, image, keypoints)
                Image.fromarray(fit_image(image, size)).save(out_dir / "images" / name)
                annotations[name] = keypoints_to_rc(fit_keypoints(found, image.shape[:2], size))
            except InvalidInput as error:
                entry.update(status="error", message=str(error))
        images.setdefault(name, entry)

    persons = {entry["person"]: {"status": "ok"} for entry in images.values() if entry["status"] == "ok"}
    assign_splits(persons, split, seed)
    by_person: dict[str, list[str]] = {}
    for name, entry in images.items():
        if entry["status"] == "ok":
            by_person.setdefault(entry["person"], []).append(name)
    pairs = {"train": [], "test": []}
    for person, names in sorted(by_person.items()):
        pairs[persons[person]["split"]] += [(a, b) for a in names for b in names if a != b]
    write_annotations(out_dir, annotations)
    for name, rows in pairs.items():
        _write_pairs(out_dir, name, rows)
    manifest = {"version": MANIFEST_VERSION, "model": "pg2", "variant": variant, "image_size": list(size),
                "pose_encoding": "authors", "images": images,
                "persons": {p: v["split"] for p, v in sorted(persons.items())},
                "pairs": {name: len(rows) for name, rows in pairs.items()}}
    with atomic_write(out_dir / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    failed = sum(entry["status"] == "error" for entry in images.values())
    if failed:
        logger.warning("%d of %d images failed (see manifest.json)", failed, len(images))
    return manifest


# ---------------------------------------------------------------------------------------
# Training pairs


def mirror_keypoints(keypoints_rc: np.ndarray, width: int) -> np.ndarray:
    """``(row, col)`` keypoints of the mirrored image: columns reflected, left and right swapped.

    The authors ran OpenPose again on their mirrored images, which names each joint by the
    mirrored body: the right wrist of the mirror image is the left wrist of the original.
    """
    rc = np.array(keypoints_rc, np.int64)
    present = (rc[:, 0] != -1) & (rc[:, 1] != -1)
    rc[present, 1] = width - 1 - rc[present, 1]
    return rc[MIRRORED]


class PG2Pairs(Dataset):
    """The pairs of one split of a prepared dataset, as the authors' trainer reads them.

    ``trainer.py`` (``_load_batch_pair_pose``): images ``x / 127.5 - 1``, the target's pose
    map ``* 2 - 1`` and its body mask in {0, 1}. The authors' training set holds every
    pair twice, as found and with both images mirrored (``bounding_box_train_flip``, pose
    estimated again on the mirrored images); here a pair is mirrored with probability
    ``FLIP_RATE``, the keypoints by ``mirror_keypoints``.

    Args:
        data_dir (`str` or `Path`): the prepared dataset.
        split (`str`, defaults to ``"train"``): ``"train"`` or ``"test"``.
        seed (`int`, defaults to 0): item ``i`` of epoch ``e`` is a function of (seed, e, i).
        flip (`bool`, defaults to True): the mirror augmentation (off for scoring).

    Items are dicts: ``condition`` and ``target`` float32 (3, H, W) in [-1, 1],
    ``target_pose`` float32 (18, H, W) in {-1, 1}, ``target_mask`` float32 (1, H, W) in
    {0, 1}, ``condition_name`` and ``target_name``.
    """

    def __init__(self, data_dir, split: str = "train", *, seed: int = 0, flip: bool = True):
        self.data_dir = Path(data_dir)
        manifest = load_manifest(self.data_dir)
        self.image_size = tuple(manifest["image_size"])
        self.variant = manifest["variant"]
        self.keypoints = read_annotations(self.data_dir)
        self.pairs = read_pairs(self.data_dir, split)
        self.seed, self.epoch, self.flip = int(seed), 0, bool(flip)

    def set_epoch(self, epoch: int):
        """Draw the mirrors of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.pairs)

    def load(self, name: str, mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (H, W, 3) image and int64 (18, 2) keypoints of ``name``, mirrored when asked."""
        image = np.array(Image.open(self.data_dir / "images" / name).convert("RGB"))
        keypoints = self.keypoints[name]
        if mirror:
            image, keypoints = image[:, ::-1], mirror_keypoints(keypoints, image.shape[1])
        return np.ascontiguousarray(image), keypoints

    def __getitem__(self, index):
        condition_name, target_name = self.pairs[index]
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        mirror = self.flip and rng.random() < FLIP_RATE
        condition, _ = self.load(condition_name, mirror)
        target, keypoints = self.load(target_name, mirror)
        pose = pg2_pose_map(keypoints, self.image_size)
        mask = pg2_pose_mask(keypoints, self.image_size)
        return {"condition": _image_tensor(condition), "target": _image_tensor(target),
                "target_pose": torch.from_numpy(pose).permute(2, 0, 1).float(),
                "target_mask": torch.from_numpy(mask)[None].float(),
                "condition_name": condition_name, "target_name": target_name}


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [-1, 1], as ``x / 127.5 - 1``."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div_(127.5).sub_(1.0)

