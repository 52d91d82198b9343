"""Outputs labelled as synthetic: what made them, a signed C2PA manifest and an invisible watermark.

Every MP4 and PNG that ``service.render`` writes (the worker's and the CLI's alike) carries:

* **metadata** naming the model and the sha256 of its weights: the MP4 ``comment`` tag and
  the PNG ``Comment`` text chunk read ``talkingface <model>; weights: <name>; weights
  sha256: <hex>`` (``Label.text``). The sha256 is of the ``sha256sum`` listing of the weight
  files the model was loaded from: for the project's folders, exactly their ``SHA256SUMS``;
* a **C2PA manifest** (``manifest``), signed, whose ``c2pa.created`` action declares the IPTC
  digital source type ``trainedAlgorithmicMedia``;
* an **invisible watermark** in the pixels (``watermark``): 48 bits, the marker ``tf``, a
  24-bit tag of the model and weights (``Label.tag``) and a CRC-8; frames under about
  112 x 112 pixels carry none.

``TALKINGFACE_PROVENANCE=false`` turns the manifest and the watermark off (the metadata stays).
``talkingface verify FILE`` (``verify.verify``) reads all three back.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.provenance import manifest, watermark

log = logging.getLogger(__name__)

MARKER = b"tf"
LABEL_PATTERN = re.compile(r"talkingface (?P<model>\S+); weights: (?P<weights>.*?); "
                           r"weights sha256: (?P<weights_sha256>[0-9a-f]{64}|unknown)")


# ---------------------------------------------------------------------------------------
# What made a file


_digests: dict[tuple, str] = {}     # (path, size, mtime) -> sha256: each weight file is hashed once a process


def file_sha256(path: Path) -> str:
    """The sha256 of a file, computed once per process for each (path, size, modification time)."""
    from models.weights import sha256sum

    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        _digests[key] = sha256sum(path)
    return _digests[key]


def weight_digests(pipe) -> dict[str, str]:
    """{name: sha256} of the weight files ``pipe`` was loaded from ({} when it names no folder).

    A project folder's are its ``SHA256SUMS`` listing, which loading it checked the files
    against (a folder without one: its files, hashed); an authors' folder's are the
    registry's files of the model found there, hashed once a process.
    """
    from models.common.pipeline import PROJECT_CONFIG, project_checksums
    from models.weights import locate

    folder = pipe.info.get("weights_dir")
    if not folder or not Path(folder).is_dir():
        return {}
    folder = Path(folder)
    if (folder / PROJECT_CONFIG).is_file():
        listed = project_checksums(folder)
        if listed:
            return dict(sorted(listed.items()))
        names = sorted(p.name for p in folder.iterdir() if p.suffix in (".json", ".safetensors", ".npz"))
        return {name: file_sha256(folder / name) for name in names}
    try:
        files = type(pipe).weight_files()
    except Exception:  # noqa: BLE001 - a pipeline outside the registry (a plug-in, a test's): no files known
        return {}
    found = ((f.name, locate(f, folder)) for f in sorted(files, key=lambda f: f.name))
    return {name: file_sha256(path) for name, path in found if path is not None}


@dataclass(frozen=True)
class Label:
    """What made an output: the model, its weights' name and sha256, and each weight file's sha256."""

    model: str
    weights: str | None = None
    weights_sha256: str | None = None
    files: dict = field(default_factory=dict)

    @classmethod
    def of(cls, pipe) -> "Label":
        """The label of outputs of a loaded pipeline (its weight files hashed once a process)."""
        files = weight_digests(pipe)
        listing = "".join(f"{digest}  {name}\n" for name, digest in files.items())
        digest = hashlib.sha256(listing.encode()).hexdigest() if files else None
        return cls(pipe.name, pipe.info.get("weights"), digest, files)

    def text(self) -> str:
        """The metadata line: ``talkingface <model>; weights: <name>; weights sha256: <hex>``."""
        return f"talkingface {self.model}; weights: {self.weights}; weights sha256: {self.weights_sha256 or 'unknown'}"

    def tag(self) -> bytes:
        """3 bytes of the sha256 of the model's name and its weights' sha256: what the watermark carries."""
        return tag_of(self.model, self.weights_sha256)

    def payload(self) -> bytes:
        """The watermark's 6 bytes: ``tf``, the tag, a CRC-8 of those 5 bytes."""
        body = MARKER + self.tag()
        return body + bytes([crc8(body)])

    def generator(self) -> dict:
        """The project's assertion in the C2PA manifest."""
        return {"model": self.model, "weights": self.weights, "weights_sha256": self.weights_sha256,
                "weight_files": self.files, "watermark": {"method": "dwtDctSvd", "tag": self.tag().hex()}}


def tag_of(model: str, weights_sha256: str | None) -> bytes:
    """The watermark's tag of a model and its weights' sha256 (None: unknown weights)."""
    return hashlib.sha256(f"{model}\n{weights_sha256 or 'unknown'}".encode()).digest()[:3]


def parse_label(text: str | None) -> dict | None:
    """{"model", "weights", "weights_sha256"} of a metadata line that ``Label.text`` wrote, else None."""
    found = LABEL_PATTERN.search(text or "")
    if not found:
        return None
    return {k: (None if v == "unknown" else v) for k, v in found.groupdict().items()}


def crc8(data: bytes) -> int:
    """CRC-8 (polynomial 0x07), the watermark's check byte."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def parse_payload(payload: bytes) -> bytes | None:
    """The tag of a watermark payload that is ours (marker and CRC right), else None."""
    if len(payload) == 6 and payload[:2] == MARKER and crc8(payload[:5]) == payload[5]:
        return payload[2:5]
    return None


# ---------------------------------------------------------------------------------------
# Labelling outputs


def user_key_folder() -> Path:
    """Where the command line keeps its development key: ``$XDG_DATA_HOME/talkingface/signing``."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "talkingface" / "signing"


@dataclass(frozen=True)
class Provenance:
    """How outputs are labelled: on or off, and the signing key (a development key in ``key_folder``
    when ``key_path`` and ``cert_path`` are not given)."""

    enabled: bool = True
    key_path: Path | None = None
    cert_path: Path | None = None
    key_folder: Path | None = None

    @classmethod
    def from_settings(cls, settings, key_folder=None) -> "Provenance":
        """The service's: ``TALKINGFACE_PROVENANCE``, ``_SIGNING_KEY``, ``_SIGNING_CERT``; the
        development key under ``<data dir>/signing`` unless ``key_folder`` says otherwise."""
        return cls(settings.provenance, settings.signing_key, settings.signing_cert,
                   Path(key_folder or settings.data_dir / "signing"))

    @classmethod
    def for_cli(cls) -> "Provenance":
        """The command line's: the environment's settings; the development key under the data dir
        when ``TALKINGFACE_DATA_DIR`` is set, else in the user's folder (``user_key_folder``)."""
        from service.settings import get_settings

        settings = get_settings()
        folder = None if "data_dir" in settings.model_fields_set else user_key_folder()
        return cls.from_settings(settings, key_folder=folder)

    def signing_key(self) -> manifest.SigningKey | None:
        """The key manifests are signed with; None when off or without ``c2pa-python``."""
        if not self.enabled or not manifest.available():
            if self.enabled:
                _warn_once("c2pa-python is not installed: outputs get no C2PA manifest")
            return None
        return _signing_key(self.key_path, self.cert_path, self.key_folder)

    def mark(self, frames: np.ndarray, label: Label) -> np.ndarray:
        """``frames`` with the watermark of ``label`` (unchanged when off or too small)."""
        return watermark.embed(frames, label.payload()) if self.enabled else frames

    def marked(self, chunks, label: Label):
        """The chunks of frames of ``chunks`` with the watermark of ``label``, in order.

        Each chunk is marked in a thread while the model makes the next (NumPy lets go of
        the GIL), so a model on a GPU does not wait for the watermark.
        """
        if not self.enabled:
            yield from chunks
            return
        payload = label.payload()
        with ThreadPoolExecutor(1, thread_name_prefix="watermark") as pool:
            pending = None
            for chunk in chunks:
                marking = pool.submit(watermark.embed, np.ascontiguousarray(chunk), payload)
                if pending is not None:
                    yield pending.result()
                pending = marking
            if pending is not None:
                yield pending.result()

    def png(self, image: np.ndarray, text: str, label: Label | None, title: str = "image.png") -> bytes:
        """A PNG of ``image`` with its ``Comment`` ``text``, and, for a ``label``, the watermark and manifest."""
        from PIL import Image, PngImagePlugin

        if label is not None:
            image = self.mark(image, label)
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", text)
        info.add_text("Software", "talkingface")
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", pnginfo=info)
        data = buffer.getvalue()
        key = self.signing_key() if label is not None else None
        return manifest.sign_bytes(data, "image/png", title, label.generator(), key) if key else data

    @contextlib.contextmanager
    def signed(self, output, media_type: str, label: Label):
        """Yields the path to write ``output`` to; on leaving, the file is signed into ``output``.

        Off (or without ``c2pa-python``), the path is ``output`` itself. Otherwise the file is
        written beside it and ``output`` appears only once signed.
        """
        output = Path(output)
        key = self.signing_key()
        if key is None:
            yield output
            return
        unsigned = output.with_name(f".{output.name}.unsigned{output.suffix}")
        signing = output.with_name(f".{output.name}.signing{output.suffix}")
        try:
            yield unsigned
            manifest.sign(unsigned, signing, media_type, output.name, label.generator(), key)
            os.replace(signing, output)
        finally:
            unsigned.unlink(missing_ok=True)
            signing.unlink(missing_ok=True)


@functools.lru_cache(maxsize=8)
def _signing_key(key_path, cert_path, key_folder) -> manifest.SigningKey:
    if key_path or cert_path:
        if not (key_path and cert_path):
            raise manifest.SigningError("set both TALKINGFACE_SIGNING_KEY and TALKINGFACE_SIGNING_CERT, or neither "
                                        "(a development key is then generated)")
        return manifest.SigningKey.from_files(key_path, cert_path)
    return manifest.development_key(key_folder)


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    log.warning(message)
