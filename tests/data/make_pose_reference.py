"""Make tests/data/pose_reference.npz by running the authors' pose encodings once.

Usage:  python tests/data/make_pose_reference.py PATH/TO/Pose-Guided-Person-Image-Generation PATH/TO/EverybodyDanceNow \
            [PATH/TO/Human-Pose-Transfer]

The paths are checkouts of charliememory/Pose-Guided-Person-Image-Generation (PG2),
carolineec/EverybodyDanceNow (EDN) and, optionally, budui/Human-Pose-Transfer (PG2's
PyTorch port); nothing of them is copied here. Without the port's checkout its entries
are carried over from the existing file, which must then hold the same PG2 keypoints.
On fixed keypoints
(made below: missing joints, joints at the image borders and beyond the canvas, low
confidences, frames the normalisation cannot use) the file stores what these produce:

* PG2, ``datasets/convert_market.py`` (the conversion that wrote PG2's training records):
  ``_getSparsePose`` + ``_sparse2dense`` (the pose map, before the trainer's ``* 2 - 1``)
  and ``_getPoseMask``, at the Market-1501 (128x64) and DeepFashion (256x256) sizes;
* the port, ``tool/generate_pose_map_add_mask.py`` (which wrote the pose maps and masks
  its released weights were trained on): ``key_point_to_map`` and ``key_point_to_mask``
  with ``compute_pose``'s defaults (sigma 6, radius 6), on the same keypoints as PG2;
* EDN, ``data_prep/renderopenpose.py``: ``renderposeCOCO`` on ``graph_train.py``'s white
  1080x1920 canvas (channels swapped as it saves the label), the label's LANCZOS resize,
  ``scale_resize`` + ``fix_scale_coords``; the face-box lines of ``graph_train.py``; the
  global stage's label transform of ``data/base_dataset.py`` (``--loadSize 512``);
* EDN, ``data_prep/graph_posenorm.py`` run as the script it is, on keypoint files written
  here: the fitted scales and translations, each frame's normalised keypoints, the
  median-smoothed ones it draws, its face boxes and two of its labels.

Shims, and why each reproduces what the authors ran:

* ``convert_market.py`` and its ``dataset_utils`` import TensorFlow for writing records;
  the encodings are NumPy and scikit-image, so an empty ``tensorflow`` module stands in.
  ``xrange`` (Python 2) is ``range``. The module divides with ``from __future__ import
  division``, as Python 3 does.
* PG2 reads OpenPose peaks, per joint ``[(x, y, score, id)]`` or ``[]`` when missing; they
  are built from the ``(row, col)`` keypoints, ``(-1, -1)`` meaning missing.
* The port draws its disks with ``skimage.draw.circle``, removed in scikit-image 0.19.
  The port's time (2019) had 0.14 to 0.16, whose ``circle(r, c, radius, shape)`` is
  ``ellipse(r, c, radius, radius, shape)``: the pixels of the circle's bounding box,
  clipped to ``shape``, with ``(dr / radius)^2 + (dc / radius)^2 < 1`` (strictly inside).
  ``old_circle`` is that code, unchanged but for the rotation, which ``circle`` leaves at
  0; ``check_old_circle`` compares it with today's ``skimage.draw.disk`` on random
  fractional centres (inside, at and beyond the borders) and radii before it is used.
  ``skimage.morphology.square`` (deprecated in 0.25) is ``np.ones((w, w), np.uint8)`` as
  before, stood in when gone. ``dilation`` and ``erosion`` still call
  ``ndi.grey_dilation`` / ``ndi.grey_erosion`` with their default ``reflect`` border, as
  0.16 did; the port's 9x9 square is odd and symmetric, so no shift or mirroring applies.
* The port reads its keypoints from annotation CSVs of integers: integral cases are
  passed to it as int64, the others as float64 (its arithmetic casts both to float64).
* The EDN scripts are Python 2: they are converted by lib2to3's ``print``, ``dict`` and
  ``filter`` fixers (``print x``, and dict views and ``filter`` made lists as Python 2
  returned them, so that ``keys().sort()`` works). Their arithmetic divides floats only.
* ``graph_*.py`` import ``scipy.misc.imresize`` / ``imsave`` (gone from SciPy) without
  using them in the code run here: stubs. Pillow 10 renamed ``Image.ANTIALIAS`` to
  ``Image.LANCZOS``; the old name is set.
* ``graph_posenorm.py`` reads BODY_23 keypoints (``poselen = 69``); the keypoints here are
  COCO-18 (54 numbers), which its ``get_pose_stats`` and ``renderpose`` support, so
  ``poselen`` is 54. Its ``get_min_point`` hard-codes BODY_23's ankles (10 and 15); it is
  called on a BODY_23 layout that holds the COCO-18 ankles (10 and 13) there.
* ``get_keypoints_stats`` draws frames with ``np.random.randint``; a counter (low, low + 1,
  ...) stands in, so each frame is used once (the fitted videos have only usable frames).
* The frame without fitting (``transform_interp`` on a video with unusable frames) is
  called as the script's last line calls it, with the parameters of the first fit: the
  script would read them back from ``norm_params.txt``, which it opens in binary mode,
  and Python 3 cannot split bytes by a str.
* ``base_dataset.py`` imports torchvision: a stub with ``Compose`` and ``Lambda``, whose
  ``ToTensor`` keeps the uint8 array (the real one only divides by 255).
* ``graph_train.py`` is a script without functions: its face-box lines (``ave =
  aveface(posepts)`` to ``makebox128``) are executed on their own.
"""

import contextlib
import io
import os
import re
import sys
import tempfile
import textwrap
import types
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent

# A person standing at the canvas's centre, COCO-18 order, ankles on row 840.
TEMPLATE = np.array([[960, 300], [960, 360], [900, 365], [880, 460], [870, 550], [1020, 365], [1040, 460],
                     [1050, 550], [930, 560], [925, 700], [920, 840], [990, 560], [995, 700], [1000, 840],
                     [945, 290], [975, 290], [930, 300], [990, 300]], dtype=np.float64)


# ---------------------------------------------------------------------------------------
# Loading the authors' modules
# ---------------------------------------------------------------------------------------


def python2_to_3(source, name):
    from lib2to3.refactor import RefactoringTool
    fixers = [f"lib2to3.fixes.fix_{fixer}" for fixer in ("print", "dict", "filter")]
    return str(RefactoringTool(fixers).refactor_string(source.expandtabs(4) + "\n", name))


def module_from_source(name, source, path):
    module = types.ModuleType(name)
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)
    sys.modules[name] = module
    return module


def import_pg2(code_dir):
    import builtins
    builtins.xrange = range
    sys.modules["tensorflow"] = types.ModuleType("tensorflow")
    sys.path.insert(0, str(code_dir / "datasets"))
    import convert_market
    return convert_market


def old_ellipse_in_shape(shape, center, radii):
    """scikit-image 0.16's ``_ellipse_in_shape`` at rotation 0."""
    r_lim, c_lim = np.ogrid[0:float(shape[0]), 0:float(shape[1])]
    r_org, c_org = center
    r_rad, c_rad = radii
    rotation = 0.0
    sin_alpha, cos_alpha = np.sin(rotation), np.cos(rotation)
    r, c = (r_lim - r_org), (c_lim - c_org)
    distances = ((r * cos_alpha + c * sin_alpha) / r_rad) ** 2 \
        + ((r * sin_alpha - c * cos_alpha) / c_rad) ** 2
    return np.nonzero(distances < 1)


def old_circle(r, c, radius, shape=None):
    """scikit-image 0.16's ``circle``: its ``ellipse(r, c, radius, radius, shape)`` at rotation 0."""
    r_radius = c_radius = radius
    rotation = 0.0
    center = np.array([r, c])
    radii = np.array([r_radius, c_radius])
    r_radius_rot = abs(r_radius * np.cos(rotation)) + c_radius * np.sin(rotation)
    c_radius_rot = r_radius * np.sin(rotation) + abs(c_radius * np.cos(rotation))
    radii_rot = np.array([r_radius_rot, c_radius_rot])
    upper_left = np.ceil(center - radii_rot).astype(int)
    lower_right = np.floor(center + radii_rot).astype(int)
    if shape is not None:
        upper_left = np.maximum(upper_left, np.array([0, 0]))
        lower_right = np.minimum(lower_right, np.array(shape[:2]) - 1)
    shifted_center = center - upper_left
    bounding_shape = lower_right - upper_left + 1
    rr, cc = old_ellipse_in_shape(bounding_shape, shifted_center, radii)
    rr.flags.writeable = True
    cc.flags.writeable = True
    rr += upper_left[0]
    cc += upper_left[1]
    return rr, cc


def check_old_circle(cases=20000):
    """``old_circle`` and today's ``skimage.draw.disk`` give the same pixels, in the same order."""
    from skimage.draw import disk
    rng = np.random.default_rng(1)
    for n in range(cases):
        shape = tuple(int(v) for v in rng.integers(2, 300, 2))
        centre = rng.uniform(-12, np.array(shape) + 12)
        if n % 3 == 0:
            centre = np.round(centre)                    # integer centres, as from the CSVs
        elif n % 3 == 1:
            centre = np.round(centre * 4) / 4            # on pixel halves and quarters
        radius = int(rng.integers(1, 12)) if n % 2 else float(rng.uniform(0.5, 12))
        old, new = old_circle(*centre, radius, shape), disk(tuple(centre), radius, shape=shape)
        assert all(np.array_equal(a, b) for a, b in zip(old, new)), (shape, centre, radius)


def import_port(code_dir):
    import skimage.draw
    import skimage.morphology
    check_old_circle()
    skimage.draw.circle = old_circle
    if not hasattr(skimage.morphology, "square"):
        skimage.morphology.square = lambda width: np.ones((width, width), np.uint8)
    sys.path.insert(0, str(code_dir / "tool"))
    import generate_pose_map_add_mask
    return generate_pose_map_add_mask


def import_edn(code_dir):
    import scipy.misc
    scipy.misc.imresize = scipy.misc.imsave = None
    Image.ANTIALIAS = Image.LANCZOS
    prep = code_dir / "data_prep"
    sys.path.insert(0, str(prep))
    render = module_from_source("renderopenpose",
                                python2_to_3((prep / "renderopenpose.py").read_text(), "renderopenpose"),
                                prep / "renderopenpose.py")

    torchvision = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    def compose(steps):
        def composed(img):
            for step in steps:
                img = step(img)
            return img
        return composed
    transforms.Compose = compose
    transforms.Lambda = lambda f: f
    transforms.ToTensor = lambda: np.asarray
    transforms.Normalize = None
    torchvision.transforms = transforms
    sys.modules.update({"torchvision": torchvision, "torchvision.transforms": transforms})
    sys.path.insert(0, str(code_dir))
    from data import base_dataset

    face_box_source = (prep / "graph_train.py").read_text()
    start = face_box_source.index("ave = aveface(posepts)")
    end = face_box_source.index("\n", face_box_source.index("makebox128(miny, maxy, minx, maxx)", start))
    line_start = face_box_source.rindex("\n", 0, start) + 1
    face_box_lines = textwrap.dedent(face_box_source[line_start:end].expandtabs(4))
    return types.SimpleNamespace(render=render, base_dataset=base_dataset, face_box_lines=face_box_lines,
                                 posenorm_source=python2_to_3((prep / "graph_posenorm.py").read_text(), "posenorm"),
                                 posenorm_path=prep / "graph_posenorm.py")


# ---------------------------------------------------------------------------------------
# Keypoints
# ---------------------------------------------------------------------------------------


def walking(rng, frames, near, far, tall=1.0, swing=150.0, toe_rows=(600.0, 1000.0), cycles=1.5):
    """(frames, 18, 3) keypoints of someone walking to and from the camera."""
    poses = []
    for t in range(frames):
        depth = 0.5 + 0.5 * np.sin(2 * np.pi * cycles * t / frames)  # 0 far .. 1 near
        scale = tall * (far + (near - far) * depth)
        feet = toe_rows[0] + (toe_rows[1] - toe_rows[0]) * depth
        points = (TEMPLATE - [960, 840]) * scale + [960 + swing * np.sin(0.4 * t), feet]
        points += rng.normal(0, 2, points.shape)
        poses.append(np.column_stack([points, rng.uniform(0.3, 0.95, 18)]))
    return np.round(np.array(poses), 3)


def odd_poses(rng):
    """Poses of the rendering cases: partial, beyond the canvas, degenerate, empty."""
    base = np.column_stack([TEMPLATE, rng.uniform(0.2, 1.0, 18)])
    partial = base.copy()
    partial[[3, 7, 15], 2] = 0                       # an elbow, a wrist, an eye missing
    partial[[4, 16], 2] = 0.02                       # low confidences still count (> 0)
    partial[0, :2] = partial[1, :2]                  # a zero-length limb
    edges = base.copy()
    edges[:, 0] += 880                               # right half beyond column 1919
    edges[[0, 14, 15, 16, 17], 1] -= 305             # the head above row 0
    edges[10, :2] = (1919.9, 1079.9)
    left = base.copy()
    left[:, 0] -= 955
    left[13, :2] = (-30.5, 1100.25)
    empty = np.zeros((18, 3))
    return np.array([base, partial, edges, left, empty])


def face_box_poses(rng):
    """Poses for the face-box rule: nose, ears, one ear, none, and at the borders."""
    poses = []
    for nose, right_ear, left_ear, shift in [(1, 1, 1, (0, 0)), (0, 1, 1, (0, 0)), (0, 1, 0, (0, 0)),
                                             (0, 0, 1, (0, 0)), (0, 0, 0, (0, 0)), (1, 1, 1, (-925, -260)),
                                             (1, 1, 1, (930, 770)), (1, 1, 1, (-200, 720))]:
        pose = np.column_stack([TEMPLATE + shift + rng.normal(0, 3, (18, 2)), rng.uniform(0.2, 1, 18)])
        pose[[0, 16, 17], 2] *= (nose, right_ear, left_ear)
        poses.append(pose)
    return np.round(np.array(poses), 3)


def pg2_cases(rng):
    """(size, keypoints_rc) pairs: integer and fractional positions, borders, missing joints."""
    market = np.round((TEMPLATE[:, ::-1] - [250, 860]) * [0.19, 0.3])
    market[[4, 17]] = -1                             # a wrist and an ear missing
    market[13] = (127, 63)                           # the last pixel
    market[10] = (125, 0)                            # the left border
    fashion = (TEMPLATE[:, ::-1] - [240, 820]) * [0.4, 0.9] + rng.uniform(0, 1, (18, 2))
    fashion[[3, 6, 15]] = -1
    fashion[0] = (0.4, 127.8)                        # the top border
    fashion[7] = (255.99, 255.5)
    lonely = np.full((18, 2), -1.0)
    lonely[5] = (60, 30)
    return [((128, 64), market), ((256, 256), fashion), ((128, 64), np.full((18, 2), -1.0)), ((128, 64), lonely)]


def normalisation_videos(rng):
    """Target and source videos of the two fits and a source with unusable frames."""
    fit_a = (walking(rng, 40, near=1.0, far=0.6),
             walking(rng, 31, near=1.0, far=0.55, tall=1.25, toe_rows=(560.0, 1040.0)))
    fit_b = (walking(rng, 60, near=1.1, far=0.5, toe_rows=(500.0, 1050.0), cycles=1.0),
             walking(rng, 29, near=0.9, far=0.7, tall=0.9, toe_rows=(700.0, 950.0), swing=700.0))
    fit_b[0][5, :, :2] *= 1.3                        # one tall frame away from the nearest row
    unusable = walking(rng, 17, near=1.0, far=0.55, tall=1.2, swing=800.0)
    unusable[0, [0, 16, 17], 2] = 0                  # no head: dropped
    unusable[1, 17, 2] = 0                           # no left ear: dropped
    unusable[7, 10, 2] = 0                           # no right ankle: the previous scale
    unusable[9, 0, 2] = 0                            # no nose, both ears: the ears' midpoint
    unusable[3:6, 7, 2] = 0                          # a wrist missing for a while
    unusable[4, 6, 2] = 0
    unusable[[2, 5, 6, 10], 4, 2] = 0                # a wrist missing in most of a window
    return fit_a, fit_b, unusable


# ---------------------------------------------------------------------------------------
# Running the authors' code
# ---------------------------------------------------------------------------------------


def pg2_reference(pg2, size, rc):
    peaks = [[] if -1 in (r, c) else [(c, r, 1.0, k)] for k, (r, c) in enumerate(rc.tolist())]
    indices, values, shape = pg2._getSparsePose(peaks, size[0], size[1], 18, radius=4, mode="Solid")
    pose = pg2._sparse2dense(indices, values, shape)
    mask = pg2._getPoseMask(peaks, size[0], size[1], radius=4, mode="Solid")
    assert set(np.unique(pose)) <= {0, 1} and set(np.unique(mask)) <= {0, 1}
    return (pose * 2 - 1).astype(np.int8), mask.astype(np.uint8)


def port_reference(port, size, rc):
    keypoints = rc.astype(np.int64) if np.array_equal(rc, np.round(rc)) else rc
    pose_map = port.key_point_to_map(keypoints, tuple(size), sigma=6)
    mask = port.key_point_to_mask(keypoints, tuple(size), radius=6)
    assert pose_map.dtype == np.float32 and mask.dtype == bool
    return pose_map, mask


def carried_port_entries(data):
    """The port's entries of the existing file, for the same PG2 keypoints."""
    with np.load(HERE / "pose_reference.npz") as old:
        for key in [k for k in data if k.startswith("pg2.") and k.endswith((".size", ".rc"))]:
            if not np.array_equal(old[key], data[key]):
                sys.exit(f"{key} changed: give the Human-Pose-Transfer checkout to remake the port's entries")
        return {key: old[key] for key in old.files if key.startswith("port.")}


def edn_canvas(edn, posepts):
    canvas = edn.render.renderposeCOCO(list(posepts.ravel()), 255 * np.ones((1080, 1920, 3), dtype="uint8"))
    return canvas[:, :, [2, 1, 0]]


def edn_labels(edn, canvas_rgb):
    label = Image.fromarray(canvas_rgb).resize((2 * 512, 512), Image.ANTIALIAS)     # graph_train.py
    opt = types.SimpleNamespace(loadSize=512, fineSize=512, resize_or_crop="scale_width", isTrain=True,
                                no_flip=True, n_downsample_global=4, netG="global")
    params = edn.base_dataset.get_params(opt, label.size)
    transform = edn.base_dataset.get_transform(opt, params, method=Image.NEAREST, normalize=False)
    return np.asarray(label), np.asarray(transform(label))


def edn_face_box(edn, posepts):
    scope = dict(vars(edn.render), posepts=list(posepts.ravel()), boxbuffer=70, startx=0, endx=1920, starty=0,
                 endy=1080, scalex=1024 / 1920.0, scaley=512 / 1080.0)
    exec(edn.face_box_lines, scope)
    return [scope["miny"], scope["maxy"], scope["minx"], scope["maxx"]]


def write_keypoint_files(folder, poses):
    """OpenPose's YAML files (``--write_keypoint``), the format ``get_keypoints_stats`` reads."""
    folder.mkdir(parents=True)
    for n, pose in enumerate(poses):
        parts = {"pose": pose.ravel(), "face": np.zeros(210), "hand_left": np.zeros(63), "hand_right": np.zeros(63)}
        for part, values in parts.items():
            numbers = [repr(float(v)) for v in values]
            lines = [", ".join(numbers[i:i + 6]) for i in range(0, len(numbers), 6)]
            text = (f"%YAML:1.0\n{part}_0: !!opencv-nd-matrix\n   sizes: [ 1, {len(values) // 3}, 3 ]\n   dt: f\n"
                    "   data: [ " + ",\n       ".join(lines) + " ]\n")
            (folder / f"frame{n:06d}_{part}.yml").write_text(text)


class Counter:
    """``np.random.randint`` replaced: low, low + 1, ... ."""

    def __init__(self):
        self.n = 0

    def __call__(self, low, high=None, size=None):
        value = low + self.n % (high - low)
        self.n += 1
        return value


def run_posenorm(edn, work, target, source, params=None):
    """graph_posenorm.py on two keypoint folders; returns what it fitted, computed and wrote."""
    target_dir, source_dir, results = work / "target", work / "source", work / "results"
    write_keypoint_files(target_dir, target)
    write_keypoint_files(source_dir, source)
    head, tail = re.split(r"^opt = parser\.parse_args\(\)$", edn.posenorm_source, flags=re.M)
    scope = {"__name__": "graph_posenorm"}
    exec(compile(head, str(edn.posenorm_path), "exec"), scope)

    scope["poselen"] = 54
    min_point = scope["get_min_point"]

    def coco_min_point(posepts):
        body23 = np.zeros(69)
        body23[30:33], body23[45:48] = posepts[30:33], posepts[39:42]
        return min_point(list(body23))
    scope["get_min_point"] = coco_min_point

    counter = Counter()
    stats = scope["get_keypoints_stats"]

    def counted_stats(*args, **kwargs):
        counter.n = 0
        return stats(*args, **kwargs)
    scope["get_keypoints_stats"] = counted_stats

    normalised, smoothed = [], []
    transform, render = scope["apply_transformation"], scope["renderpose"]

    def recording_transform(keypoints, translation, scale):
        out = transform(keypoints, translation, scale)
        if len(out) == 54:
            normalised.append(np.array(out, dtype=np.float64))
        return out

    def recording_render(posepts, canvas):
        smoothed.append(np.array(posepts, dtype=np.float64))
        return render(posepts, canvas)
    scope["apply_transformation"], scope["renderpose"] = recording_transform, recording_render

    randint = np.random.randint
    np.random.randint = counter
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            if params is None:
                sys.argv = ["graph_posenorm.py", "--target_keypoints", str(target_dir), "--source_keypoints",
                            str(source_dir), "--target_spread", "0", str(len(target)), "--source_spread", "0",
                            str(len(source) - 1), "--results", str(results), "--source_frames", "",
                            "--calculate_scale_translation"]
                exec(compile("opt = parser.parse_args()" + tail, str(edn.posenorm_path), "exec"), scope)
                params = scope["scale"], scope["translation"]
            else:
                for sub in ("test_label", "test_img", "test_facetexts128"):
                    (results / sub).mkdir(parents=True)
                scope["SIZE"] = 512
                scope["transform_interp"](str(source_dir), params[0], params[1], (1080, 1920, 3), str(results),
                                          (0, len(target)), (0, len(source) - 1), "", "", 8, "frame")
    finally:
        np.random.randint = randint
    boxes = [[int(v) for v in (results / "test_facetexts128" / f"frame{i:06d}.txt").read_text().split()]
             for i in range(len(smoothed))]
    labels = [np.asarray(Image.open(results / "test_label" / f"frame{i:06d}.png").convert("RGB"))
              for i in range(len(smoothed))]
    (scale_close, scale_far), ((target_toe, target_horizon), (source_toe, source_horizon)) = params
    fitted = np.array([scale_close, scale_far, target_toe, target_horizon, source_toe, source_horizon], np.float64)
    return fitted, params, np.array(normalised), np.array(smoothed), np.array(boxes), labels


# ---------------------------------------------------------------------------------------


def main(pg2_dir, edn_dir, port_dir=None):
    pg2 = import_pg2(pg2_dir)
    edn = import_edn(edn_dir)
    port = import_port(port_dir) if port_dir else None
    rng = np.random.default_rng(0)
    data = {}

    for i, (size, rc) in enumerate(pg2_cases(rng)):
        data[f"pg2.{i}.size"], data[f"pg2.{i}.rc"] = np.array(size), rc
        data[f"pg2.{i}.map"], data[f"pg2.{i}.mask"] = pg2_reference(pg2, size, rc)
        if port:
            data[f"port.{i}.map"], data[f"port.{i}.mask"] = port_reference(port, size, rc)
    if not port:
        data.update(carried_port_entries(data))

    poses = odd_poses(rng)
    data["edn.figure.posepts"] = poses
    for i, posepts in enumerate(poses):
        canvas = edn_canvas(edn, posepts)
        data[f"edn.figure.{i}.canvas"] = canvas
        if i < 3:
            data[f"edn.figure.{i}.label"], data[f"edn.figure.{i}.global_label"] = edn_labels(edn, canvas)

    faces = face_box_poses(rng)
    data["edn.face.posepts"] = faces
    data["edn.face.boxes"] = np.array([edn_face_box(edn, p) for p in faces])

    frame_sizes = [(720, 1280), (480, 640), (1920, 1080), (1080, 2560), (1080, 1920)]
    data["edn.fit.sizes"] = np.array(frame_sizes)
    data["edn.fit.posepts"] = poses[1]
    fitted = []
    for size in frame_sizes:
        transform = edn.render.scale_resize((*size, 3), myshape=(1080, 1920, 3))
        points = list(poses[1].ravel()) if transform is None else edn.render.fix_scale_coords(
            list(poses[1].ravel()), *transform)
        fitted.append(np.array(points, dtype=np.float64).reshape(18, 3))
    data["edn.fit.fitted"] = np.array(fitted)

    fit_a, fit_b, unusable = normalisation_videos(rng)
    with tempfile.TemporaryDirectory() as work:
        params_a = None
        for name, (target, source) in [("a", fit_a), ("b", fit_b), ("c", (fit_a[0], unusable))]:
            fitted, params, normalised, smoothed, boxes, labels = run_posenorm(
                edn, Path(work) / name, target, source, params_a if name == "c" else None)
            params_a = params_a or params
            data[f"edn.norm.{name}.target"], data[f"edn.norm.{name}.source"] = target, source
            data[f"edn.norm.{name}.fitted"] = fitted
            data[f"edn.norm.{name}.normalised"] = normalised.reshape(-1, 18, 3)
            data[f"edn.norm.{name}.smoothed"] = smoothed.reshape(-1, 18, 3)
            data[f"edn.norm.{name}.boxes"] = boxes
            if name == "c":
                data["edn.norm.c.labels"] = np.array([labels[0], labels[5]])

    np.savez_compressed(HERE / "pose_reference.npz", **data)
    for key, value in data.items():
        print(f"{key:32s} {str(value.shape):22s} {value.dtype}")
    print(f"{(HERE / 'pose_reference.npz').stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__.split("\n\n")[1])
    main(*(Path(arg).resolve() for arg in sys.argv[1:]))
