"""Turn two training runs into a weights folder the pipeline loads (``from_project``).

    export_weights("runs/atnet", "runs/vgnet", "data/mine", basics, "weights/mine", name="mine")

The folder carries everything inference needs besides the networks: the dataset's PCA
and the normalisation and crop arrays the data was prepared with, so it works without
the authors' files. ``SHA256SUMS`` lists every file it writes.
"""

import json
import shutil
from pathlib import Path

import numpy as np

from models.atvgnet import train
from models.atvgnet.pipeline import PROJECT_CONFIG
from models.weights import sha256sum

BASICS = ("mean_shape_img", "mean_shape_norm", "S", "base_68")


def export_weights(atnet_run, vgnet_run, data_dir, basics, out_dir, name="project", ema=False, extra=None):
    """Write ``out_dir`` from the runs; ``basics`` maps the four array names to arrays."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {"model": "atvgnet", "name": name, "scale_components": False}
    for stage, run in (("atnet", atnet_run), ("vgnet", vgnet_run)):
        run_config = train.read_config(run)
        if run_config.get("stage") != stage:
            raise ValueError(f"{run} holds a {run_config.get('stage')} run, not {stage}")
        source = run_config["files"]["ema" if ema else "generator"]
        shutil.copyfile(Path(run) / source, out_dir / f"{stage}.safetensors")
        config[stage] = run_config["network"]
        config[f"{stage}_steps"] = run_config.get("step")
    shutil.copyfile(Path(data_dir) / "pca.npz", out_dir / "pca.npz")
    np.savez(out_dir / "basics.npz", **{k: np.asarray(basics[k], np.float32) for k in BASICS})
    config.update(extra or {})
    (out_dir / PROJECT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    # Only the files written here: a folder exported into again may hold others (a report).
    files = sorted(["atnet.safetensors", "vgnet.safetensors", "pca.npz", "basics.npz", PROJECT_CONFIG])
    (out_dir / "SHA256SUMS").write_text("".join(f"{sha256sum(out_dir / f)}  {f}\n" for f in files))
    return out_dir
