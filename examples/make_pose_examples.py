"""Make the pose examples the README uses: ``person.png``, ``pose.json`` and ``dance.mp4``.

    python examples/make_pose_examples.py

All three are drawn by the project's own renderers (no photo of anyone): a figure of the
kind PG2's demo weights were trained on, the OpenPose JSON of the same figure in another
pose (measured in the same 256x128 frame), and three seconds of a dancing figure of the
kind EDN's demo target was trained on (another dance than the demo's).
"""

from pathlib import Path

import numpy as np
from PIL import Image

from models.edn import demo as edn_demo
from models.perception.pose import to_openpose_json
from models.pg2 import demo as pg2_demo

HERE = Path(__file__).resolve().parent
SEED = 2026


def main():
    look = pg2_demo.random_look(np.random.default_rng([SEED, 1]))
    size = (256, 128)
    rng = np.random.default_rng([SEED, 1, 0])
    background = pg2_demo.random_background(rng, size)
    person, _ = pg2_demo.render_person(look, pg2_demo.random_pose(rng), background, size=size)
    Image.fromarray(person).save(HERE / "person.png")
    _, keypoints = pg2_demo.render_person(look, pg2_demo.random_pose(np.random.default_rng([SEED, 1, 1])), size=size)
    (HERE / "pose.json").write_text(to_openpose_json(keypoints) + "\n")
    edn_demo.write_dance(HERE / "dance.mp4", 3.0, seed=SEED)


if __name__ == "__main__":
    main()
