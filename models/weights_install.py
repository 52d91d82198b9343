"""Fetch or import the authors' weight files, verified, into a weights folder.

    report = download("atvgnet")                                 # from the sources the registry lists
    report = import_files("davs", ["~/Downloads/checkpoints.zip"])   # files a user already has
    print("\\n".join(report.lines()))

Every file a model lists (``ModelSpec.files``) goes the same way: its bytes are written
to ``<folder>/.partial/<name>``, checked by ``verify_file`` (the published sha256; else a
strict load of every network the checkpoint holds; else, for an ``.npy`` array, that it
reads), then moved to ``<folder>/<name>`` with its sha256 recorded beside it
(``<name>.sha256``, which ``talkingface models`` shows). A file that fails is deleted and
named in one line: nothing unverified ever sits under a file's own name. A transfer that
breaks off keeps its bytes in ``.partial``; the next attempt resumes them with an HTTP
``Range`` request.

Sources are ``WeightFile.urls``, tried in order: plain HTTP(S) addresses, Google Drive
file links and Google Drive folder links. Drive's own pages are read by the ``gdown``
library (``pip install 'talkingface[download]'``): its parser of the confirmation page
Drive shows before large files, and its folder listing. The bytes then travel over the
same resumable transfer as every other file.

Nothing here runs unless asked: the project never downloads at import time or while it
generates or serves.
"""

import contextlib
import os
import re
import stat
import tarfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np

from models import registry
from models import weights as weights_lib
from models.errors import TalkingFaceError
from models.weights import WeightFile, WeightsInvalid

DRIVE_URL = "https://drive.google.com"   # where Drive file downloads start
PARTIAL = ".partial"                     # unfinished and unverified files, inside the weights folder
MAX_FILE_BYTES = 4 << 30                 # far above any released checkpoint; caps downloads and archive members
MAX_ARCHIVE_MEMBERS = 100_000
CHUNK_BYTES = 1 << 20


class SourceUnavailable(TalkingFaceError):
    """A download source is gone, refuses, or the transfer broke off."""

    code = "source_unavailable"


class ArchiveRefused(TalkingFaceError):
    """An archive holds a member that could write outside its folder: a link, an absolute or ``..`` path."""

    code = "invalid_input"


# ---------------------------------------------------------------------------------------
# What a run leaves, and how it says so


@dataclass(frozen=True)
class Kept:
    """A file in the weights folder after a run, and how it was verified."""

    name: str
    sha256: str
    check: str          # "published sha256", "strict load: atnet", "reads as an array", "recorded sha256" ...
    new: bool           # installed by this run (False: it was there already)


@dataclass
class InstallReport:
    """What ``download`` or ``import_files`` did for one model: one entry a file.

    ``refused`` and ``missing`` hold one line each, starting with the file's name;
    ``missing`` says what to download by hand and where to put it.
    """

    model: str
    folder: Path
    kept: list[Kept] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    lacking: list[str] = field(default_factory=list)     # required files still absent

    @property
    def ready(self) -> bool:
        """Every required file is in the folder, verified."""
        return not self.lacking

    @property
    def complete(self) -> bool:
        """Ready, and nothing was refused or left missing."""
        return self.ready and not self.refused and not self.missing

    def lines(self) -> list[str]:
        """The summary a user reads: one line a file, then whether the model is ready."""
        out = [f"{'installed' if k.new else 'present':<10} {k.name:<28} sha256 {k.sha256}  ({k.check})"
               for k in self.kept]
        out += [f"{'refused':<10} {line}" for line in self.refused]
        out += [f"{'missing':<10} {line}" for line in self.missing]
        if self.ready:
            out.append(f"{self.model}: ready in {self.folder} ({len(self.kept)} files, each with its sha256 "
                       "recorded beside it as <name>.sha256)")
        else:
            out.append(f"{self.model}: NOT READY in {self.folder}: lacks {', '.join(self.lacking)}")
        return out

    def problem(self) -> str:
        """One line for the command's exit: what kept the run from completing."""
        counts = [f"{len(self.refused)} refused" if self.refused else "",
                  f"{len(self.missing)} missing" if self.missing else ""]
        state = "ready, but" if self.ready else "not ready:"
        return f"{self.model} is {state} {' and '.join(c for c in counts if c)} (see above)"


# ---------------------------------------------------------------------------------------
# Verification and the one way a file enters the weights folder


def verify_file(model, weight_file: WeightFile, path) -> str:
    """Check that the file at ``path`` is ``weight_file`` of ``model``; says how, else WeightsInvalid.

    A published sha256 must match. Without one, a checkpoint must load strictly (every
    key and shape) into each network ``model`` builds from it, made with its published
    constructor arguments; an ``.npy`` file must read as an array (no pickles). Any other
    file is kept unchecked, its sha256 recorded.
    """
    path = Path(path)
    if weight_file.sha256:
        digest = weights_lib.sha256sum(path)
        if digest != weight_file.sha256:
            raise WeightsInvalid(f"{weight_file.name}: sha256 {digest} is not the published {weight_file.sha256}")
        return "published sha256"
    networks = [name for name, entry in registry.spec(model).networks.items() if entry.checkpoint == weight_file.name]
    if networks:
        try:
            checkpoint = weights_lib.read_state_dict(path)          # read once for every network in it
            for network in networks:
                registry.load_network(model, network, checkpoint)
        except WeightsInvalid as exc:
            raise WeightsInvalid(f"{weight_file.name}: {' '.join(exc.message.split())}") from exc
        except Exception as exc:  # a damaged file fails in many ways; each is a refusal
            raise WeightsInvalid(f"{weight_file.name}: does not load: {_first_line(exc)}") from exc
        return f"strict load: {', '.join(networks)}"
    if weight_file.name.endswith(".npy"):
        try:
            np.load(path, allow_pickle=False)
        except Exception as exc:
            raise WeightsInvalid(f"{weight_file.name}: not a NumPy array: {_first_line(exc)}") from exc
        return "reads as an array"
    return "not checked"


def keep(model, weight_file: WeightFile, part: Path, folder: Path) -> Kept:
    """Verify ``part``, then move it to ``folder/<name>`` and record its sha256; on failure delete it."""
    try:
        check = verify_file(model, weight_file, part)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    digest = weight_file.sha256 if check == "published sha256" else weights_lib.sha256sum(part)
    target = folder / weight_file.name
    os.replace(part, target)
    weights_lib.record_sha256(target, digest)
    return Kept(weight_file.name, digest, check, new=True)


def present(model, weight_file: WeightFile, folder: Path) -> Kept | None:
    """The file already in ``folder``, verified; None when absent, WeightsInvalid when it fails.

    A file whose recorded sha256 still matches is trusted without loading it again.
    """
    target = folder / weight_file.name
    if not target.is_file():
        return None
    digest = weights_lib.sha256sum(target)
    if weights_lib.recorded_sha256(target) == digest and weight_file.sha256 in (None, digest):
        return Kept(weight_file.name, digest, "recorded sha256", new=False)
    check = verify_file(model, weight_file, target)
    weights_lib.record_sha256(target, digest)
    return Kept(weight_file.name, digest, check, new=False)


def by_hand(model, weight_file: WeightFile, folder: Path) -> str:
    """What a user does when no source delivers the file."""
    where = f"{weight_file.source} ({weight_file.urls[0]})" if weight_file.urls else weight_file.source
    return (f"download it by hand from {where} and put it in {folder} as {weight_file.name}, "
            f"or run `talkingface weights import {model} PATH` with it")


# ---------------------------------------------------------------------------------------
# Sources: HTTP(S), Google Drive files and folders


def parse_source(url: str) -> tuple[str, str]:
    """``("http", url)``, ``("drive-file", id)`` or ``("drive-folder", id)``; ValueError for anything else."""
    parts = urlsplit(url)
    if parts.hostname in ("drive.google.com", "docs.google.com"):
        folder = re.match(r"/drive/(?:u/\d+/)?folders/([-\w]+)", parts.path)
        if folder:
            return "drive-folder", folder.group(1)
        file = re.match(r"/file/d/([-\w]+)", parts.path)
        ids = parse_qs(parts.query).get("id")
        if file or ids:
            return "drive-file", file.group(1) if file else ids[0]
        raise ValueError(f"not a Google Drive file or folder link: {url}")
    if parts.scheme in ("http", "https") and parts.hostname:
        return "http", url
    raise ValueError(f"not a download address: {url}")


def _gdown():
    try:
        import gdown
    except ImportError:
        raise SourceUnavailable("Google Drive downloads need gdown: pip install 'talkingface[download]'") from None
    return gdown


def drive_folder_files(folder_id: str) -> list[tuple[str, str]]:
    """[(file id, path inside the folder)] of a shared Google Drive folder, listed by gdown."""
    gdown = _gdown()
    try:
        entries = gdown.download_folder(id=folder_id, skip_download=True, quiet=True)
    except Exception as exc:  # gdown raises its own and requests' errors
        if type(exc).__name__ in ("ConnectionError", "ConnectTimeout"):
            cause = re.search(r"\[Errno [^\]]*\][^'\")]*", str(exc))
            why = cause.group(0) if cause else "no connection"
            raise SourceUnavailable(f"cannot reach Google Drive: {why}") from exc
        raise SourceUnavailable(f"cannot list the Google Drive folder: {_first_line(exc)}") from exc
    if not entries:
        raise SourceUnavailable("the Google Drive folder is empty, gone or not shared")
    return [(entry.id, entry.path) for entry in entries]


def drive_confirmation_url(page: str) -> str:
    """The download address behind the page Drive shows instead of a large file (gdown reads it)."""
    _gdown()
    from gdown.download import get_url_from_gdrive_confirmation

    try:
        return get_url_from_gdrive_confirmation(page)
    except Exception as exc:
        raise SourceUnavailable(f"Google Drive does not hand out the file: {_first_line(exc)}") from exc


class Downloader:
    """Brings files from HTTP(S) and Google Drive, resuming what an earlier attempt left.

    Args:
        drive_url: where Drive file downloads start (default ``DRIVE_URL``).
        list_folder: Drive folder id -> [(file id, path)] (default ``drive_folder_files``).
        progress: show a progress bar a file (on stderr).
        retries: further attempts after a transfer breaks off, each resuming it.
        backoff: seconds before the first retry, doubled for each next one.
        timeout: seconds to connect, and to wait for data.
    """

    def __init__(self, drive_url: str | None = None, list_folder: Callable | None = None, progress: bool = True,
                 retries: int = 3, backoff: float = 2.0, timeout: float = 30.0):
        self.drive_url = (drive_url or DRIVE_URL).rstrip("/")
        self.list_folder = list_folder or drive_folder_files
        self.progress = progress
        self.retries = retries
        self.backoff = backoff
        # Identity encoding: a Range then counts the file's own bytes, not compressed ones.
        self.client = httpx.Client(follow_redirects=True, timeout=timeout,
                                   headers={"User-Agent": "talkingface-weights", "Accept-Encoding": "identity"})
        self._folders: dict[str, list[tuple[str, str]] | SourceUnavailable] = {}
        self._unreachable: dict[str, str] = {}      # host -> why, so that one offline host fails once

    def close(self):
        self.client.close()

    def fetch(self, url: str, weight_file: WeightFile, part: Path) -> None:
        """Bring ``weight_file`` from ``url`` into ``part``, resuming its bytes; SourceUnavailable when it cannot."""
        kind, value = parse_source(url)
        host = urlsplit(url if kind == "http" else self.drive_url).hostname
        if host in self._unreachable:
            raise SourceUnavailable(self._unreachable[host])
        if kind == "http":
            resolve = lambda: url
        elif kind == "drive-file":
            resolve = partial(self.drive_download_url, value)
        else:
            resolve = partial(self.drive_download_url, self.folder_file_id(value, weight_file))
        part.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(self.retries + 1):
            try:
                return self.transfer(resolve(), part)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                self._unreachable[host] = f"cannot reach {host}: {_first_line(exc)}"
                raise SourceUnavailable(self._unreachable[host]) from exc
            except (httpx.TransportError, _ServerError) as exc:
                if attempt == self.retries:
                    kept = part.stat().st_size if part.is_file() else 0
                    resume = f"; its {kept} bytes are kept and the next run resumes them" if kept else ""
                    raise SourceUnavailable(f"the transfer broke off ({_first_line(exc)}){resume}") from exc
                time.sleep(self.backoff * 2 ** attempt)

    def folder_file_id(self, folder_id: str, weight_file: WeightFile) -> str:
        """The Drive id of ``weight_file`` (by its name or an alias) in a Drive folder."""
        if folder_id not in self._folders:
            try:
                self._folders[folder_id] = self.list_folder(folder_id)
            except SourceUnavailable as exc:
                self._folders[folder_id] = exc      # listed once a run, even when it fails
        entries = self._folders[folder_id]
        if isinstance(entries, SourceUnavailable):
            raise entries
        ranked = sorted((rank, path.count("/"), file_id) for file_id, path in entries
                        if (rank := match_rank(weight_file, path)) is not None)
        if not ranked:
            names = ", ".join(path for _, path in entries[:8])
            raise SourceUnavailable(f"the Google Drive folder holds no {weight_file.name} (it holds {names})")
        return ranked[0][2]

    def drive_download_url(self, file_id: str) -> str:
        """The address that serves a Drive file's bytes, past the confirmation page of large files."""
        url = f"{self.drive_url}/uc?export=download&id={file_id}"
        for _ in range(3):
            with self.client.stream("GET", url) as response:
                _check_status(response)
                if not _is_page(response):
                    return str(response.url)
                response.read()
                page = response.text
            url = drive_confirmation_url(page)
        raise SourceUnavailable("Google Drive keeps answering with pages instead of the file")

    def transfer(self, url: str, part: Path) -> None:
        """Append the rest of the file at ``url`` to ``part`` (``Range``); start again when the server ignores it."""
        offset = part.stat().st_size if part.is_file() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with self.client.stream("GET", url, headers=headers) as response:
            if response.status_code == 416 and offset:
                return                      # nothing past what is kept: the file is whole
            _check_status(response)
            if _is_page(response):
                raise SourceUnavailable(f"{_host(response)} answers with a web page, not the file "
                                        "(a download quota, a sign-in, or a moved file)")
            if response.status_code != 206:
                offset = 0                  # the whole file comes: start again
            elif not response.headers.get("content-range", "").startswith(f"bytes {offset}-"):
                part.unlink()
                raise _ServerError(f"{_host(response)} sends other bytes than those asked for")
            length = int(response.headers.get("content-length") or 0)
            total = offset + length if length else None
            if total and total > MAX_FILE_BYTES:
                raise SourceUnavailable(f"{_host(response)} serves {total} bytes, more than any weights file")
            with open(part, "ab" if offset else "wb") as out, self._bar(part.name, total, offset) as bar:
                for chunk in response.iter_bytes():         # as they come: a break keeps all received
                    out.write(chunk)
                    bar.update(len(chunk))
                    if out.tell() > MAX_FILE_BYTES:
                        raise SourceUnavailable(f"{_host(response)} serves more bytes than any weights file")

    def _bar(self, name, total, initial):
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
                    disable=not self.progress)


class _ServerError(Exception):
    """A 5xx answer: worth another attempt."""


def _check_status(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    why = {404: "gone", 410: "gone", 401: "refused", 403: "refused", 429: "refused: too many downloads"}.get(status)
    message = f"{_host(response)} answers {status} {response.reason_phrase}" + (f" ({why})" if why else "")
    raise _ServerError(message) if status >= 500 else SourceUnavailable(message)


def _is_page(response: httpx.Response) -> bool:
    return (response.headers.get("content-type", "").startswith("text/html")
            and "content-disposition" not in response.headers)


def _host(response: httpx.Response) -> str:
    return response.url.host or str(response.url)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), text)
    return line if len(line) <= 300 else line[:297] + "..."


# ---------------------------------------------------------------------------------------
# Download


def download(model, directory=None, progress=True, downloader: Downloader | None = None) -> InstallReport:
    """Fetch every file ``model`` lists from its sources into ``directory``, verified.

    Files already there and verified stay. Each file's sources are tried in order; a
    source that is gone or refuses, or a file that fails verification, moves on to the
    next; when none delivers, the report says what to download by hand and where to put
    it. A source that hands out an archive (a zipped folder) gives the member of that name.

    Args:
        model: a registered model with files.
        directory: the weights folder (default ``$TALKINGFACE_WEIGHTS_DIR`` or ``./weights``).
        progress: a progress bar a file, when no ``downloader`` is given.
        downloader: how files are fetched (tests point one at a local server).
    """
    spec, folder = _model_and_folder(model, directory)
    own = downloader is None
    downloader = downloader or Downloader(progress=progress)
    report = InstallReport(spec.name, folder)
    try:
        for weight_file in spec.files:
            _download_one(spec.name, weight_file, folder, downloader, report)
    finally:
        if own:
            downloader.close()
    return _finish(spec, report)


def _download_one(model, weight_file, folder, downloader, report):
    stale = ""
    try:
        kept = present(model, weight_file, folder)
    except WeightsInvalid as exc:
        kept, stale = None, f"the file there fails ({exc.message}); "
    if kept:
        report.kept.append(kept)
        return
    problems = []
    part = folder / PARTIAL / weight_file.name
    for url in weight_file.urls:
        try:
            downloader.fetch(url, weight_file, part)
            _unwrap_archive(weight_file, part)
            report.kept.append(keep(model, weight_file, part, folder))
            return
        except SourceUnavailable as exc:
            problems.append(f"{url}: {exc.message}")
        except WeightsInvalid as exc:
            report.refused.append(f"{exc.message} (from {url})")
    reasons = "; ".join(problems) or ("no source to download it from" if not weight_file.urls
                                      else "no source gave a file that verifies")
    report.missing.append(f"{weight_file.name}: {stale}{reasons}; {by_hand(model, weight_file, folder)}")


def _unwrap_archive(weight_file: WeightFile, part: Path) -> None:
    """When a source handed out a zip or tar holding the file, keep that member alone in ``part``."""
    with contextlib.ExitStack() as stack:
        try:
            members = _archive_members(part, str(part), stack)
        except ArchiveRefused:
            return                          # verification refuses it
        best = _best_match(weight_file, members or [])
        if best is None:
            return
        member = part.with_name(part.name + ".member")
        _copy(best, member)
    os.replace(member, part)


# ---------------------------------------------------------------------------------------
# Import


@dataclass(frozen=True)
class Candidate:
    """A file a user handed in: loose, in a folder, or an archive member."""

    where: str                       # how a message names it: a path, or "archive.zip:model/x.pth"
    relpath: str                     # posix path below what was given, matched against names and aliases
    open: Callable                   # () -> a binary stream of its bytes


def import_files(model, paths, directory=None) -> InstallReport:
    """Install ``model``'s files from what a user already has, verified, into ``directory``.

    ``paths``: folders (searched to any depth), zip or tar archives (``.tar``, ``.tar.gz``
    ...; read member by member, never extracted; one holding a link or a path outside
    itself is refused whole) and loose files. A file is taken under its own name or any
    of the authors' names for it (``WeightFile.aliases``); where several match, the one
    found under one of the authors' paths, then the shallowest, is tried first.
    """
    spec, folder = _model_and_folder(model, directory)
    paths = [Path(p).expanduser() for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    for path in paths:
        if not path.exists():
            raise TalkingFaceError(f"cannot read {path}: no such file or folder")
    report = InstallReport(spec.name, folder)
    with contextlib.ExitStack() as stack:
        candidates = []
        for path in paths:
            try:
                candidates += _candidates(spec, path, stack, report)
            except ArchiveRefused as exc:
                report.refused.append(exc.message)
        for weight_file in spec.files:
            _import_one(spec.name, weight_file, folder, candidates, report)
    return _finish(spec, report)


def _import_one(model, weight_file, folder, candidates, report):
    part = folder / PARTIAL / weight_file.name
    matches = _ranked(weight_file, candidates)
    for candidate in matches:
        try:
            _copy(candidate, part)
            report.kept.append(keep(model, weight_file, part, folder))
            return
        except WeightsInvalid as exc:
            report.refused.append(f"{exc.message} (from {candidate.where})")
    try:
        kept = present(model, weight_file, folder)
    except WeightsInvalid as exc:
        report.refused.append(f"{exc.message} (the file already in {folder})")
        return
    if kept:
        report.kept.append(kept)
    else:
        given = "none of the files given verifies" if matches else "not among the files given"
        report.missing.append(f"{weight_file.name}: {given}; {by_hand(model, weight_file, folder)}")


def _candidates(spec, path: Path, stack, report) -> list[Candidate]:
    if path.is_dir():
        return [Candidate(str(p), p.relative_to(path).as_posix(), partial(open, p, "rb"))
                for p in sorted(path.rglob("*")) if p.is_file() and PARTIAL not in p.relative_to(path).parts]
    loose = Candidate(str(path), path.name, partial(open, path, "rb"))
    if any(match_rank(f, path.name) is not None for f in spec.files):
        return [loose]                      # a checkpoint may itself be a zip: its name decides
    members = _archive_members(path, str(path), stack)
    if members is None:
        names = ", ".join(f.name for f in spec.files)
        report.refused.append(f"{path}: neither an archive nor a file of {spec.name} ({names})")
        return []
    return members


def _archive_members(path: Path, label: str, stack) -> list[Candidate] | None:
    """The regular files of a tar or zip archive; None when ``path`` is neither; ArchiveRefused when unsafe."""
    try:
        archive = stack.enter_context(tarfile.open(path))
    except (tarfile.TarError, OSError):
        pass
    else:
        members = [m for m in archive.getmembers() if not m.isdir()]
        _check_members(label, [(m.name, not m.isfile()) for m in members])
        return [Candidate(f"{label}:{m.name}", m.name, partial(archive.extractfile, m)) for m in members]
    with open(path, "rb") as f:
        starts_as_zip = f.read(4) in (b"PK\x03\x04", b"PK\x05\x06")   # not a zip found inside another file
    if not (starts_as_zip and zipfile.is_zipfile(path)):
        return None
    archive = stack.enter_context(zipfile.ZipFile(path))
    infos = [i for i in archive.infolist() if not i.is_dir()]
    _check_members(label, [(i.filename, stat.S_ISLNK(i.external_attr >> 16)) for i in infos])
    return [Candidate(f"{label}:{i.filename}", i.filename, partial(archive.open, i)) for i in infos]


def _check_members(label: str, members: list[tuple[str, bool]]) -> None:
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise ArchiveRefused(f"{label}: more than {MAX_ARCHIVE_MEMBERS} members; nothing taken from it")
    for name, is_link in members:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if is_link or name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
            what = "a link or special file" if is_link else "a path outside the archive"
            raise ArchiveRefused(f"{label}: member {name!r} is {what}; nothing taken from it")


def match_rank(weight_file: WeightFile, relpath: str) -> int | None:
    """How well a path names ``weight_file``: 0 one of the authors' paths, 1 its name, 2 an alias's name."""
    relpath = relpath.replace("\\", "/")
    if any(relpath == a or relpath.endswith("/" + a) for a in weight_file.aliases if "/" in a):
        return 0
    base = PurePosixPath(relpath).name
    if base == weight_file.name:
        return 1
    if base in {PurePosixPath(a).name for a in weight_file.aliases}:
        return 2
    return None


def _ranked(weight_file, candidates) -> list[Candidate]:
    scored = [(rank, c.relpath.count("/"), i) for i, c in enumerate(candidates)
              if (rank := match_rank(weight_file, c.relpath)) is not None]
    return [candidates[i] for _, _, i in sorted(scored)]


def _best_match(weight_file, candidates) -> Candidate | None:
    ranked = _ranked(weight_file, candidates)
    return ranked[0] if ranked else None


def _copy(candidate: Candidate, part: Path) -> None:
    """Copy a candidate's bytes to ``part``, refusing more than ``MAX_FILE_BYTES``."""
    part.parent.mkdir(parents=True, exist_ok=True)
    try:
        with candidate.open() as source, open(part, "wb") as out:
            for block in iter(lambda: source.read(CHUNK_BYTES), b""):
                out.write(block)
                if out.tell() > MAX_FILE_BYTES:
                    raise WeightsInvalid(f"{candidate.where}: larger than any weights file ({MAX_FILE_BYTES} bytes)")
    except BaseException:
        part.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------
# Both


def _model_and_folder(model, directory):
    spec = registry.spec(model)
    if not spec.files:
        raise TalkingFaceError(f"{spec.name} lists no weight files to fetch")
    folder = weights_lib.weights_dir(directory).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return spec, folder


def _finish(spec, report: InstallReport) -> InstallReport:
    """Which required files the folder still lacks, and no empty ``.partial`` folder left behind."""
    kept = {k.name for k in report.kept}
    report.lacking = [f.name for f in spec.files if not f.optional and f.name not in kept]
    with contextlib.suppress(OSError):
        (report.folder / PARTIAL).rmdir()        # only when empty: a broken transfer's bytes stay to resume
    return report
