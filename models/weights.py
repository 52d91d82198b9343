"""Find, verify and load checkpoint files. Nothing here downloads anything.

The authors' checkpoints are plain PyTorch files (often the legacy, pre-1.6 format,
sometimes pickled by Python 2) read with ``torch.load(weights_only=True)``: tensors and
containers only, never arbitrary objects. The project's own weights are safetensors.
Fetching or importing the authors' files, on request only, is ``models.weights_install``.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from models.errors import TalkingFaceError, WeightsMissing

SHA256_SUFFIX = ".sha256"       # the recorded checksum of an installed file, beside it


class WeightsInvalid(TalkingFaceError):
    """A checkpoint file exists but is not what the network expects."""

    code = "weights_invalid"


@dataclass(frozen=True)
class WeightFile:
    """One file a model needs, as listed in weights/README.md.

    ``source`` says in words where the file comes from (what a user downloads by hand);
    ``urls`` are where ``talkingface weights download`` fetches it, tried in order: a
    Google Drive folder or file link, or a plain HTTPS address (none: by hand only).
    ``aliases`` are other names or paths under which the authors keep the file
    (``checkpoints/101_DAVS_checkpoint.pth.tar``), matched by ``talkingface weights import``.
    """

    name: str
    role: str
    source: str
    sha256: str | None = None
    licence: str = ""
    optional: bool = False
    urls: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()


def weights_dir(directory=None) -> Path:
    """The weights folder: ``directory``, else ``$TALKINGFACE_WEIGHTS_DIR``, else ``./weights``."""
    if directory is not None:
        return Path(directory)
    return Path(os.environ.get("TALKINGFACE_WEIGHTS_DIR") or "weights")


def sha256sum(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_record(path) -> Path:
    """Where the sha256 of a kept weights file is recorded: ``<name>.sha256`` beside it."""
    path = Path(path)
    return path.with_name(path.name + SHA256_SUFFIX)


def record_sha256(path, digest: str) -> Path:
    """Write ``digest`` beside ``path`` in ``sha256sum`` format (``sha256sum -c`` checks it)."""
    record = sha256_record(path)
    record.write_text(f"{digest}  {Path(path).name}\n")
    return record


def recorded_sha256(path) -> str | None:
    """The sha256 recorded beside ``path`` when it was installed, or None."""
    record = sha256_record(path)
    if not record.is_file():
        return None
    digest = record.read_text().split(maxsplit=1)
    return digest[0] if digest and len(digest[0]) == 64 else None


def locate(file: WeightFile, directory) -> Path | None:
    """The path of ``file`` in ``directory``, or None when it is not there."""
    path = Path(directory) / file.name
    return path if path.is_file() else None


def require(file: WeightFile, directory, verify=True) -> Path:
    """The path of ``file``; WeightsMissing (saying where it comes from) when absent.

    With ``verify`` and a known checksum, a file whose sha256 differs is refused.
    """
    path = locate(file, directory)
    if path is None:
        raise WeightsMissing(
            f"missing weights file {file.name} ({file.role}) in {Path(directory).resolve()}: "
            f"get it from {file.source} (see weights/README.md)")
    if verify and file.sha256 and sha256sum(path) != file.sha256:
        raise WeightsInvalid(f"{path} does not have the published sha256 {file.sha256}; "
                             "the file is damaged or a different release")
    return path


def require_all(files, directory, verify=True) -> dict:
    """{name: path} for every file; one WeightsMissing naming all absent required files.

    Optional files that are absent map to None.
    """
    missing = [f for f in files if not f.optional and locate(f, directory) is None]
    if missing:
        lines = "; ".join(f"{f.name} ({f.role}) from {f.source}" for f in missing)
        raise WeightsMissing(f"missing weights in {Path(directory).resolve()}: {lines}. "
                             "Put the files there under these names (see weights/README.md), "
                             "or pass --weights DIR")
    return {f.name: (require(f, directory, verify) if locate(f, directory) else None) for f in files}


def strip_module_prefix(state_dict):
    """Remove the ``module.`` prefix ``nn.DataParallel`` puts on every key."""
    prefix = "module."
    if all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def read_state_dict(checkpoint, key=None):
    """A state dict from a path (.pth/.pt legacy or zip, .safetensors) or a dict, prefix removed.

    ``key`` names the entry holding the state dict in a checkpoint of several networks
    (DAVS's ``{"ID_encoder": ..., "Decoder": ...}``); a bare state dict of tensors is
    taken as it is.
    """
    if isinstance(checkpoint, dict):
        return strip_module_prefix(_entry(checkpoint, key, "checkpoint"))
    path = Path(checkpoint)
    if not path.is_file():
        raise WeightsMissing(f"checkpoint {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state_dict = load_file(str(path))
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable or unsafe file is the user's to fix
        raise WeightsInvalid(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(state_dict, dict):
        raise WeightsInvalid(f"{path} holds a {type(state_dict).__name__}, not a state dict")
    return strip_module_prefix(_entry(state_dict, key, str(path)))


def _entry(checkpoint, key, name):
    """The state dict stored under ``key``, or ``checkpoint`` itself when it is one."""
    if key is None:
        return checkpoint
    if isinstance(checkpoint.get(key), dict):
        return checkpoint[key]
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint
    entries = ", ".join(sorted(str(k) for k in checkpoint)) or "nothing"
    raise WeightsInvalid(f"{name} has no state dict under {key!r}; it holds {entries}")


def load_weights(network, checkpoint, name="checkpoint", key=None):
    """Load ``checkpoint`` into ``network`` strictly; clear error on any key or shape mismatch.

    ``key``: the entry of a multi-network checkpoint to load (see ``read_state_dict``).
    """
    state_dict = read_state_dict(checkpoint, key)
    try:
        network.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first_lines = "; ".join(str(exc).splitlines()[:3])
        raise WeightsInvalid(f"{name} does not fit {type(network).__name__}: {first_lines}") from exc
    return network
