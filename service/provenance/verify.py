"""``talkingface verify FILE``: what an MP4, image or zip of PNGs says about how it was made.

Three independent signs are read: the metadata line (``Label.text``), the C2PA manifest and
the watermark. The first two are lost in any re-encode; the watermark survives one (it is in
the pixels), so a copy that went through a video or photo app is still recognised by it.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import zipfile
from pathlib import Path

from models.errors import InvalidInput
from service.provenance import manifest, parse_label, parse_payload, tag_of, watermark

VIDEO_FRAMES = 100                  # frames of a video read for the watermark (4 s at 25 fps)
MAX_PIXELS = 100_000_000            # larger images or frames are refused before decoding
MAX_MEMBERS = 1000                  # PNGs of a zip read at most
MAX_MEMBER_BYTES = 256 * 1024 * 1024
PNG, JPEG = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"


def kind_of(head: bytes) -> str | None:
    """"image", "video" or "zip" from a file's first bytes; None when it is none of them."""
    from models.perception.decode import sniff_container

    if head.startswith((PNG, JPEG, b"BM")) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if sniff_container(head) in ("mov", "matroska", "avi", "mpegts"):
        return "video"
    return None


def media_type(head: bytes) -> str | None:
    """The MIME type C2PA reads a file as (None: a format it has no manifests for)."""
    if head.startswith(PNG):
        return "image/png"
    if head.startswith(JPEG):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    return None


def verify(path) -> dict:
    """The report of one file: {"file", "kind", "metadata", "manifest", "watermark", "labelled"}
    ("members": the reports of a zip's PNGs).

    Raises:
        InvalidInput: the file cannot be read, or is not an image, a video or a zip.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    kind = kind_of(head)
    if kind == "zip":
        return _verify_zip(path)
    if kind == "image":
        return _verify_image(path.read_bytes(), str(path))
    if kind == "video":
        return _verify_video(path, head)
    raise InvalidInput(f"{path} is not an image (PNG, JPEG, WebP, BMP), a video (MP4, MOV, MKV, WebM, AVI) or a zip")


def _report(name, kind, metadata, signed, reader: watermark.Reader, **extra) -> dict:
    mark = _watermark(reader, metadata, signed)
    labelled = bool(metadata or (signed and signed.get("generator")) or mark["found"])
    return {"file": name, "kind": kind, "metadata": metadata, "manifest": signed, "watermark": mark,
            "labelled": labelled, **extra}


def _watermark(reader: watermark.Reader, metadata, signed) -> dict:
    """What the watermark votes say, and whether its tag is that of the model the file names."""
    tags = [parse_payload(payload) for payload in reader.payloads()] if reader.frames else []
    tag = next((t for t in tags if t is not None), None)
    named = metadata or ((signed or {}).get("generator") or None)
    expected = tag_of(named["model"], named.get("weights_sha256")) if named and named.get("model") else None
    return {"found": tag is not None, "tag": tag.hex() if tag else None,
            "matches": None if tag is None or expected is None else tag == expected,
            "clarity": round(reader.clarity(), 3), "frames": reader.frames,
            "too_small": reader.frames == 0}


def _manifest(data_or_path, head: bytes) -> dict | None:
    kind = media_type(head)
    if kind is None:
        return None
    if not manifest.available():
        return {"state": "unchecked", "problems": ["c2pa-python is not installed"]}
    return manifest.read(data_or_path, kind)


def _verify_image(data: bytes, name: str) -> dict:
    from PIL import Image

    from models.perception.image import read_image

    pixels = read_image(data, max_pixels=MAX_PIXELS)
    with Image.open(io.BytesIO(data)) as image:
        text = image.info.get("Comment") or image.info.get("comment")
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    reader = watermark.Reader()
    reader.add(pixels)
    return _report(name, "image", parse_label(text), _manifest(data, data[:16]), reader,
                   size=[int(pixels.shape[1]), int(pixels.shape[0])])


def _verify_zip(path: Path) -> dict:
    members = []
    try:
        with zipfile.ZipFile(path) as archive:
            names = [i for i in archive.infolist() if i.filename.lower().endswith(".png") and not i.is_dir()]
            for info in names[:MAX_MEMBERS]:
                if info.file_size > MAX_MEMBER_BYTES:
                    raise InvalidInput(f"{path}: {info.filename} is larger than {MAX_MEMBER_BYTES} bytes")
                report = _verify_image(archive.read(info), info.filename)
                members.append(report)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidInput(f"{path} is not a readable zip: {exc}") from None
    if not members:
        raise InvalidInput(f"{path} holds no PNG")
    labelled = [m for m in members if m["labelled"]]
    first = labelled[0] if labelled else members[0]
    return {"file": str(path), "kind": "zip", "metadata": first["metadata"], "manifest": first["manifest"],
            "watermark": first["watermark"], "labelled": bool(labelled), "members": members}


def _verify_video(path: Path, head: bytes) -> dict:
    from models.perception import video as video_lib

    frames = video_lib.read_video(path, max_seconds=24 * 3600.0, max_pixels=MAX_PIXELS)
    reader = watermark.Reader()
    with contextlib.closing(frames.chunks(limit=VIDEO_FRAMES)) as chunks:
        for chunk in chunks:
            reader.add(chunk)
    return _report(str(path), "video", parse_label(_video_comment(path, frames.demuxer)), _manifest(path, head),
                   reader, size=[frames.stream.width, frames.stream.height], seconds=frames.stream.seconds)


def _video_comment(path: Path, demuxer: str) -> str | None:
    """The container's ``comment`` tag (ffmpeg's ffmetadata dump: no ffprobe needed)."""
    from models.perception.decode import DECODE_TIMEOUT_S, ffmpeg_exe, ffmpeg_input

    cmd = (ffmpeg_input(path, demuxer).output("pipe:1", format="ffmetadata")
           .global_args("-hide_banner", "-nostdin", "-loglevel", "error").compile(cmd=ffmpeg_exe()))
    done = subprocess.run(cmd, capture_output=True, timeout=DECODE_TIMEOUT_S, check=False)
    for line in done.stdout.decode(errors="replace").splitlines():
        if line.startswith("comment="):
            # ffmetadata escapes '=', ';', '#', '\' and line ends with a backslash.
            value, out, escaped = line[len("comment="):], [], False
            for char in value:
                if escaped or char != "\\":
                    out.append(char)
                    escaped = False
                else:
                    escaped = True
            return "".join(out)
    return None


# ---------------------------------------------------------------------------------------
# Output


def describe(report: dict) -> str:
    """The report in a few lines of words."""
    lines = [f"{report['file']}: {report['kind']}"]
    meta = report["metadata"]
    if meta:
        digest = meta["weights_sha256"] or "unknown"
        lines.append(f"  metadata:  made by talkingface model {meta['model']}, weights {meta['weights']} "
                     f"(sha256 {digest})")
    else:
        lines.append("  metadata:  no talkingface label")
    lines.append("  manifest:  " + _describe_manifest(report["manifest"]))
    mark = report["watermark"]
    if mark["found"]:
        match = {True: ", the tag of the model named above", False: ", NOT the tag of the model named above",
                 None: ""}[mark["matches"]]
        lines.append(f"  watermark: found, tag {mark['tag']}{match} (clarity {mark['clarity']:.2f} over "
                     f"{mark['frames']} frame{'s' if mark['frames'] != 1 else ''})")
    elif mark["too_small"]:
        lines.append("  watermark: none (too small to carry one)")
    else:
        lines.append(f"  watermark: not found (clarity {mark['clarity']:.2f})")
    for member in report.get("members", [])[1:]:
        lines.append(f"  {member['file']}: " + ("labelled" if member["labelled"] else "no label"))
    lines.append("labelled as synthetic: made by talkingface" if report["labelled"]
                 else "no sign of talkingface found")
    return "\n".join(lines)


def _describe_manifest(signed: dict | None) -> str:
    if signed is None:
        return "none"
    if signed["state"] == "unchecked":
        return "cannot be checked: " + "; ".join(signed["problems"])
    state = {"trusted": "valid, signer trusted", "valid": "valid signature, signer on no trust list",
             "invalid": "INVALID (" + ", ".join(signed["problems"]) + ")"}.get(signed["state"], signed["state"])
    parts = [state]
    if signed.get("signer"):
        parts.append(f"signed by {signed['signer']!r} of {signed['issuer']!r}")
    if signed.get("development_key"):
        parts.append("a development key")
    if signed.get("claim_generator"):
        parts.append(f"claim generator {signed['claim_generator']}")
    if signed.get("digital_source_type"):
        parts.append("source " + signed["digital_source_type"].rsplit("/", 1)[-1])
    generator = signed.get("generator")
    if generator:
        parts.append(f"model {generator.get('model')}, weights sha256 {generator.get('weights_sha256') or 'unknown'}")
    return "; ".join(parts)
