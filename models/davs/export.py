"""Turn a DAVS training run into a weights folder the pipeline loads (``from_project``).

    export_weights("runs/davs", "weights/mine", name="mine")

The folder holds the four networks inference uses (``id_encoder``, ``decoder``,
``mfcc_encoder``, ``lip_feature_encoder``) as safetensors, ``config.json`` (each network's
constructor arguments, the training step, the word labels) and ``SHA256SUMS`` of the files
written, all by ``models.common.pipeline.save_project``. The training-only networks
(discriminators, word classifiers) and the optimiser state stay in the run folder.
"""

from pathlib import Path

from models.common.pipeline import save_project
from models.davs import train


def export_weights(run_dir, out_dir, name="project", extra=None) -> Path:
    """Write ``out_dir`` from the run in ``run_dir``; ``extra`` adds entries to ``config.json``.

    The networks are loaded strictly from the run (a damaged or mismatched run fails here,
    not at inference) and written by ``models.common.pipeline.save_project``.

    Returns:
        The folder written.
    """
    run_config = train.read_config(run_dir)
    networks = train.load_trained(run_dir, device="cpu")
    info = {
        "step": run_config.get("step"),
        "trained_seconds": run_config.get("elapsed_seconds"),
        "image_size": run_config["train"]["image_size"],
        "labels": run_config.get("labels", []),
        "word_terms": run_config.get("word_terms", False),
    }
    info.update(extra or {})
    return save_project(out_dir, "davs", networks, name=name, extra=info)
