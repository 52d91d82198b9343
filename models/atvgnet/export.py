"""Turn two training runs into a weights folder the pipeline loads (``from_project``).

    export_weights("runs/atnet", "runs/vgnet", "data/mine", basics, "weights/mine", name="mine")

The folder carries everything inference needs besides the networks: the dataset's PCA
and the normalisation and crop arrays the data was prepared with, so it works without
the authors' files. It is written by ``models.common.pipeline.save_project``, the one
writer of project weight folders: ``config.json``, ``atnet.safetensors``,
``vgnet.safetensors``, ``pca.npz``, ``basics.npz`` and ``SHA256SUMS`` of exactly those.
"""

from pathlib import Path

import numpy as np

from models.atvgnet import train
from models.common.pipeline import save_project

BASICS = ("mean_shape_img", "mean_shape_norm", "S", "base_68")


def export_weights(atnet_run, vgnet_run, data_dir, basics, out_dir, name="project", ema=False, extra=None):
    """Write ``out_dir`` from the runs; ``basics`` maps the four array names to arrays.

    Args:
        atnet_run, vgnet_run (`str` or `Path`): the AT-net and VG-net training folders.
        data_dir (`str` or `Path`): the prepared dataset; its ``pca.npz`` goes with the weights.
        basics (`dict`): ``mean_shape_img``, ``mean_shape_norm``, ``S`` and ``base_68``.
        out_dir (`str` or `Path`): the weights folder (created when missing).
        name (`str`, defaults to ``"project"``): what the weights are called in reports.
        ema (`bool`, defaults to False): export the runs' moving-average weights.
        extra (`dict`, *optional*): more entries for ``config.json``.

    Returns:
        `Path`: the folder written.
    """
    networks, info = {}, {"scale_components": False}
    for stage, run in (("atnet", atnet_run), ("vgnet", vgnet_run)):
        run_config = train.read_config(run)
        if run_config.get("stage") != stage:
            raise ValueError(f"{run} holds a {run_config.get('stage')} run, not {stage}")
        # Loaded strictly: a damaged or mismatched run fails here, not at inference.
        networks[stage] = train.load_trained(run, stage, device="cpu", ema=ema)
        info[f"{stage}_steps"] = run_config.get("step")
    with np.load(Path(data_dir) / "pca.npz", allow_pickle=False) as pca:
        arrays = {"pca": {"mean": pca["mean"], "basis": pca["basis"]},
                  "basics": {k: np.asarray(basics[k], np.float32) for k in BASICS}}
    info.update(extra or {})
    return save_project(out_dir, "atvgnet", networks, name=name, arrays=arrays, extra=info)
