"""``talkingface weights download`` and ``import``: the authors' files fetched or taken, verified.

A server on 127.0.0.1 stands in for every source: plain files (which it can break off
mid-transfer once, or serve without honouring ``Range``) and Google Drive (a file behind
Drive's virus-scan confirmation page, and a folder listed by a stand-in for gdown's
listing). A registered toy model lists four files, one of each kind of check: an array
with a published sha256, a checkpoint of one network, a checkpoint holding two networks'
state dicts in the authors' legacy format, and an optional array without a hash. No test
connects anywhere but the loopback address.
"""

import hashlib
import io
import re
import shutil
import socket
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import torch
from torch import nn

from models import registry, weights_install
from models.registry import ModelSpec, NetworkSpec
from models.weights import WeightFile, recorded_sha256, sha256sum
from models.weights_install import Downloader, download, import_files, parse_source
from service.cli import main
from tests.legacy_pickle import py2_pickle

MODEL = "toyweights"
TINY_ID, PAIR_ID, FOLDER_ID = "tinyNetFileId0123456789abcdef", "pairFileId0123456789abcdef", "folderId0123456789abcdef"


class TinyNet(nn.Module):
    """A network whose published constructor arguments are its defaults."""

    def __init__(self, width=4):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3)
        self.fc = nn.Linear(width, 2)


class TinyHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 3)


def state_bytes(state_dict, legacy=False):
    buffer = io.BytesIO()
    if legacy:
        torch.save(state_dict, buffer, pickle_module=py2_pickle, pickle_protocol=2,
                   _use_new_zipfile_serialization=False)
    else:
        torch.save(state_dict, buffer)
    return buffer.getvalue()


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def pair_bytes(**overrides):
    """The two-network file, as the authors keep theirs: one entry a network, ``module.`` prefixes."""
    entries = {"Body": {"module." + k: v for k, v in TinyNet().state_dict().items()},
               "Head": {"module." + k: v for k, v in TinyHead().state_dict().items()}, "epoch": 101}
    return state_bytes({**entries, **overrides}, legacy=True)


# The released files, as the sources serve them.
BASIS = npy_bytes(np.arange(20_000, dtype=np.float32))       # 80 kB: a transfer of several chunks
RELEASE = {
    "basis.npy": BASIS,
    "tiny_net.pth": state_bytes(TinyNet().state_dict()),
    "toy_pair.pth.tar": pair_bytes(),
    "extra.npy": npy_bytes(np.eye(3)),
}

CONFIRM_PAGE = (  # Drive's page before a file it cannot scan, its form on one line as Drive writes it
    '<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>\n'
    '<div class="uc-main"><p class="uc-warning-subcaption">Google Drive can\'t scan this file for viruses.</p>'
    '<form id="download-form" action="{action}" method="get"><input type="submit" id="uc-download-link" '
    'value="Download anyway"/><input type="hidden" name="id" value="{id}"><input type="hidden" name="export" '
    'value="download"><input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" '
    'value="0c0a2f6e-4d1b"></form></div>\n</body></html>\n')


@dataclass
class Sources:
    """What the stand-in server serves, and what it was asked."""

    url: str = ""
    files: dict = field(default_factory=dict)          # /files/<name>
    drive: dict = field(default_factory=dict)          # Drive file id -> bytes
    break_once: set = field(default_factory=set)       # names whose next transfer stops half-way
    honour_range: bool = True
    requests: list = field(default_factory=list)       # (path, query, Range header)

    def ranges(self, path):
        return [rng for p, _, rng in self.requests if p == path]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        sources: Sources = self.server.sources
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        sources.requests.append((url.path, query, self.headers.get("Range")))
        if url.path.startswith("/files/"):
            name = url.path.removeprefix("/files/")
            return self.send_file(name, sources.files.get(name))
        if url.path == "/uc" and query.get("id", [""])[0] in sources.drive:
            page = CONFIRM_PAGE.format(action=f"{sources.url}/download", id=query["id"][0]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            return self.wfile.write(page)
        if url.path == "/download" and query.get("confirm") == ["t"]:
            file_id = query.get("id", [""])[0]
            return self.send_file(file_id, sources.drive.get(file_id), attachment=True)
        self.send_error(404)

    def send_file(self, name, data, attachment=False):
        sources: Sources = self.server.sources
        if data is None:
            return self.send_error(404)
        asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(asked.group(1)) if asked and sources.honour_range else 0
        if start >= len(data) > 0:
            return self.send_error(416)
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Type", "application/octet-stream")
        if attachment:
            self.send_header("Content-Disposition", f'attachment; filename="{name}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in sources.break_once:
            sources.break_once.discard(name)
            body = body[:len(body) // 2]             # then the connection closes: the client sees it short
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Any connection to an address other than 127.0.0.1 fails the test."""
    connect = socket.socket.connect

    def guarded(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            assert address[0] in ("127.0.0.1", "::1", "localhost"), f"a test reached beyond loopback: {address}"
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass                    # a client that hangs up early (it has seen the headers it wanted) is no error


@pytest.fixture(scope="module")
def server():
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    httpd.sources = Sources(url=f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def sources(server):
    """The server's sources, reset to the release for each test."""
    fresh = Sources(url=server.sources.url, files={"basis.npy": BASIS, "extra.npy": RELEASE["extra.npy"]},
                    drive={TINY_ID: RELEASE["tiny_net.pth"], PAIR_ID: RELEASE["toy_pair.pth.tar"]})
    server.sources = fresh
    return fresh


def list_folder(folder_id):
    """Stands in for gdown's listing of the authors' Drive folder."""
    assert folder_id == FOLDER_ID
    return [("readmeId", "toy release/README.txt"), (PAIR_ID, "toy release/checkpoints/toy_pair.pth.tar")]


@pytest.fixture(scope="module")
def toy(server):
    """The toy model, its sources on the local server; Drive addresses as the authors publish them."""
    base = server.sources.url
    registry.register(ModelSpec(
        name=MODEL, task="talking-face", paper="Toy et al., a test, 2026", pipeline=object,
        networks={"net": NetworkSpec(TinyNet, "tiny_net.pth"),
                  "body": NetworkSpec(TinyNet, "toy_pair.pth.tar", "Body"),
                  "head": NetworkSpec(TinyHead, "toy_pair.pth.tar", "Head")},
        files=(
            WeightFile("basis.npy", "an array", "the toy repository's basics/ folder",
                       hashlib.sha256(BASIS).hexdigest(), urls=(f"{base}/files/basis.npy",),
                       aliases=("basics/basis.npy",)),
            WeightFile("tiny_net.pth", "one network", "the toy Drive link",
                       urls=(f"https://drive.google.com/open?id={TINY_ID}",), aliases=("tiny_final.pth",)),
            WeightFile("toy_pair.pth.tar", "two networks", "the toy Drive folder",
                       urls=(f"https://drive.google.com/drive/folders/{FOLDER_ID}?usp=sharing",),
                       aliases=("checkpoints/toy_pair.pth.tar",)),
            WeightFile("extra.npy", "an optional array", "the toy repository", optional=True,
                       urls=(f"{base}/files/extra.npy",)),
        )))
    yield MODEL
    registry.unregister(MODEL)


def downloader(sources, **keywords):
    return Downloader(drive_url=sources.url, list_folder=list_folder, progress=False, backoff=0, **keywords)


def assert_installed(folder, names=tuple(RELEASE)):
    for name in names:
        assert (folder / name).read_bytes() == RELEASE[name], name
        assert recorded_sha256(folder / name) == sha256sum(folder / name)
    assert not (folder / weights_install.PARTIAL).exists()


def assert_nothing_of(folder, name):
    assert not (folder / name).exists() and not (folder / f"{name}.sha256").exists()
    assert not (folder / weights_install.PARTIAL / name).exists()


# ---------------------------------------------------------------------------------- download


def test_download_fetches_verifies_and_records_every_file(toy, sources, tmp_path):
    report = download(toy, tmp_path, downloader=downloader(sources))
    assert report.complete and report.ready and not report.refused and not report.missing
    assert_installed(tmp_path)
    checks = {kept.name: kept.check for kept in report.kept}
    assert checks == {"basis.npy": "published sha256", "tiny_net.pth": "strict load: net",
                      "toy_pair.pth.tar": "strict load: body, head", "extra.npy": "reads as an array"}
    assert report.lines()[-1].startswith(f"{toy}: ready in {tmp_path}")

    # A second run finds everything in place and fetches nothing.
    asked = len(sources.requests)
    again = download(toy, tmp_path, downloader=downloader(sources))
    assert again.complete and not any(kept.new for kept in again.kept) and len(sources.requests) == asked


def test_a_drive_file_is_fetched_past_its_confirmation_page(toy, sources, tmp_path):
    download(toy, tmp_path, downloader=downloader(sources))
    drive = [(path, query) for path, query, _ in sources.requests if path in ("/uc", "/download")
             and query["id"] == [TINY_ID]]
    assert [path for path, _ in drive] == ["/uc", "/download", "/download"]   # page, then resolve, then bytes
    assert drive[-1][1]["confirm"] == ["t"] and drive[-1][1]["uuid"] == ["0c0a2f6e-4d1b"]
    # The folder's file was found by its name among the folder's files.
    assert any(query["id"] == [PAIR_ID] for path, query, _ in sources.requests if path == "/download")


def test_an_interrupted_download_resumes_in_the_next_run(toy, sources, tmp_path):
    sources.break_once.add("basis.npy")
    first = download(toy, tmp_path, downloader=downloader(sources, retries=0))
    assert not first.ready and first.lacking == ["basis.npy"]
    assert len(first.missing) == 1 and first.missing[0].startswith("basis.npy: ")
    assert "broke off" in first.missing[0] and "next run resumes" in first.missing[0]
    kept = (tmp_path / weights_install.PARTIAL / "basis.npy").stat().st_size
    assert 0 < kept < len(BASIS) and not (tmp_path / "basis.npy").exists()

    second = download(toy, tmp_path, downloader=downloader(sources, retries=0))
    assert second.complete
    assert sources.ranges("/files/basis.npy") == [None, f"bytes={kept}-"]
    assert_installed(tmp_path)


def test_a_broken_transfer_is_resumed_within_the_run(toy, sources, tmp_path):
    sources.break_once.add("basis.npy")
    assert download(toy, tmp_path, downloader=downloader(sources, retries=2)).complete
    first, second = sources.ranges("/files/basis.npy")
    assert first is None and re.fullmatch(r"bytes=\d+-", second)
    assert_installed(tmp_path)


def test_a_server_that_ignores_range_sends_the_whole_file_again(toy, sources, tmp_path):
    (tmp_path / weights_install.PARTIAL).mkdir()
    (tmp_path / weights_install.PARTIAL / "basis.npy").write_bytes(b"left from an older release")
    sources.honour_range = False
    assert download(toy, tmp_path, downloader=downloader(sources)).complete
    assert sources.ranges("/files/basis.npy") == ["bytes=26-"]
    assert_installed(tmp_path)


def test_a_wrong_hash_is_refused_and_leaves_nothing_behind(toy, sources, tmp_path):
    sources.files["basis.npy"] = npy_bytes(np.zeros(20_000, dtype=np.float32))
    report = download(toy, tmp_path, downloader=downloader(sources))
    assert len(report.refused) == 1 and report.refused[0].startswith("basis.npy: sha256 ")
    assert "is not the published" in report.refused[0]
    assert not report.ready and report.lacking == ["basis.npy"]
    assert_nothing_of(tmp_path, "basis.npy")
    assert_installed(tmp_path, ["tiny_net.pth", "toy_pair.pth.tar", "extra.npy"])


@pytest.mark.parametrize("served, why", [
    (state_bytes({k: v for k, v in TinyNet().state_dict().items() if k != "fc.bias"}), 'Missing key.*"fc.bias"'),
    (state_bytes(TinyNet(width=8).state_dict()), "size mismatch for conv.weight"),
    (state_bytes({**TinyNet().state_dict(), "extra.weight": torch.zeros(1)}), 'Unexpected key.*"extra.weight"'),
    (b"<html>not a checkpoint</html>", "cannot read checkpoint"),
], ids=["missing key", "wrong shape", "unexpected key", "not a checkpoint"])
def test_a_checkpoint_with_wrong_keys_is_refused_and_leaves_nothing_behind(toy, sources, tmp_path, served, why):
    sources.drive[TINY_ID] = served
    report = download(toy, tmp_path, downloader=downloader(sources))
    assert len(report.refused) == 1 and report.refused[0].startswith("tiny_net.pth: ")
    assert re.search(why, report.refused[0]) and "\n" not in report.refused[0]
    assert_nothing_of(tmp_path, "tiny_net.pth")
    assert report.lacking == ["tiny_net.pth"] and "download it by hand from the toy Drive link" in report.missing[0]


def test_one_bad_entry_of_a_two_network_checkpoint_refuses_the_file(toy, sources, tmp_path):
    sources.drive[PAIR_ID] = pair_bytes(Head=TinyNet().state_dict())
    report = download(toy, tmp_path, downloader=downloader(sources))
    assert len(report.refused) == 1 and report.refused[0].startswith("toy_pair.pth.tar: head state dict does not fit")
    assert_nothing_of(tmp_path, "toy_pair.pth.tar")


def test_a_source_that_is_gone_says_what_to_download_by_hand_and_where(toy, sources, tmp_path):
    del sources.files["basis.npy"]
    del sources.drive[TINY_ID]
    report = download(toy, tmp_path, downloader=downloader(sources))
    basis, tiny = report.missing
    assert basis.startswith("basis.npy: ") and "answers 404 Not Found (gone)" in basis
    assert tiny.startswith("tiny_net.pth: ") and "answers 404" in tiny
    for line in (basis, tiny):
        assert f"put it in {tmp_path} as " in line and f"talkingface weights import {toy} PATH" in line
    assert "the toy repository's basics/ folder" in basis and "the toy Drive link" in tiny
    assert sorted(report.lacking) == ["basis.npy", "tiny_net.pth"]


def test_an_unreachable_host_fails_at_once_and_once(toy, tmp_path):
    with socket.socket() as sock:          # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    fetcher = Downloader(progress=False, retries=3, backoff=30)        # a retry would take 30 s
    tried, transfer = [], fetcher.transfer
    fetcher.transfer = lambda url, part: tried.append(url) or transfer(url, part)
    start = time.monotonic()
    for weight_file in registry.spec(toy).files[:2]:
        with pytest.raises(weights_install.SourceUnavailable, match=r"^cannot reach 127\.0\.0\.1: "):
            fetcher.fetch(f"{dead}/files/{weight_file.name}", weight_file, tmp_path / "part")
    assert time.monotonic() - start < 10 and tried == [f"{dead}/files/basis.npy"]   # the second never connects
    assert not (tmp_path / "part").exists()


def test_a_file_no_longer_in_the_drive_folder_is_named(toy, sources, tmp_path):
    d = Downloader(drive_url=sources.url, list_folder=lambda _: [("x", "toy release/README.txt")], progress=False)
    report = download(toy, tmp_path, downloader=d)
    assert report.lacking == ["toy_pair.pth.tar"]
    assert "the Google Drive folder holds no toy_pair.pth.tar (it holds toy release/README.txt)" in report.missing[0]


def test_a_damaged_file_in_the_folder_is_replaced_by_a_verified_download(toy, sources, tmp_path):
    (tmp_path / "tiny_net.pth").write_bytes(b"damaged")
    report = download(toy, tmp_path, downloader=downloader(sources))
    assert report.complete and {k.name for k in report.kept if k.new} >= {"tiny_net.pth"}
    assert_installed(tmp_path)


# ---------------------------------------------------------------------------------- import


def release_folder(root, names=None):
    """The files as a user has them: the authors' paths and names, inside a top folder."""
    top = root / "toy-release"
    paths = {"basis.npy": "basics/basis.npy", "tiny_net.pth": "tiny_final.pth",
             "toy_pair.pth.tar": "checkpoints/toy_pair.pth.tar", "extra.npy": "extra.npy"}
    for name, relpath in paths.items():
        (top / relpath).parent.mkdir(parents=True, exist_ok=True)
        (top / relpath).write_bytes((names or RELEASE)[name])
    (top / "README.txt").write_text("not a weights file")
    return top


def pack(top, kind):
    if kind == "folder":
        return top
    if kind == "zip":
        archive = top.with_suffix(".zip")
        shutil.make_archive(str(top), "zip", top.parent, top.name)
        return archive
    archive = top.parent / f"toy-release.{kind}"
    with tarfile.open(archive, "w:gz" if kind == "tar.gz" else "w") as tar:
        tar.add(top, arcname=top.name)
    return archive


@pytest.mark.parametrize("kind", ["folder", "zip", "tar", "tar.gz"])
def test_import_installs_from_a_folder_or_an_archive(toy, tmp_path, kind):
    given = pack(release_folder(tmp_path / "have"), kind)
    folder = tmp_path / "weights"
    report = import_files(toy, given, folder)
    assert report.complete, report.lines()
    assert_installed(folder)                  # the alias tiny_final.pth is installed as tiny_net.pth
    assert sorted(p.name for p in folder.iterdir()) == sorted([*RELEASE, *(f"{n}.sha256" for n in RELEASE)])


def test_import_takes_loose_files_and_prefers_the_authors_path(toy, tmp_path):
    top = release_folder(tmp_path / "have")
    (top / "old").mkdir()
    (top / "old" / "basis.npy").write_bytes(b"another basis.npy, not the authors' basics/ one")
    folder = tmp_path / "weights"
    report = import_files(toy, [top / "basics" / "basis.npy", top / "tiny_final.pth"], folder)
    assert [k.name for k in report.kept] == ["basis.npy", "tiny_net.pth"] and not report.ready
    report = import_files(toy, [top], folder)
    assert report.complete and not report.refused     # basics/basis.npy was tried first
    assert_installed(folder)


def test_import_refuses_a_file_that_fails_and_leaves_nothing_behind(toy, tmp_path):
    files = dict(RELEASE, **{"tiny_net.pth": state_bytes(TinyNet(width=8).state_dict()),
                             "basis.npy": npy_bytes(np.ones(3))})
    folder = tmp_path / "weights"
    report = import_files(toy, pack(release_folder(tmp_path / "have", files), "zip"), folder)
    refused = sorted(report.refused)
    assert len(refused) == 2
    assert refused[0].startswith("basis.npy: sha256 ") and "toy-release.zip:toy-release/basics/basis.npy" in refused[0]
    assert refused[1].startswith("tiny_net.pth: net state dict does not fit TinyNet")
    for name in ("basis.npy", "tiny_net.pth"):
        assert_nothing_of(folder, name)
    assert_installed(folder, ["toy_pair.pth.tar", "extra.npy"])
    assert sorted(report.lacking) == ["basis.npy", "tiny_net.pth"]
    assert any(line.startswith("basis.npy: none of the files given verifies") for line in report.missing)


def tar_with(path, members):
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def tar_member(name, data=b"", **attributes):
    info = tarfile.TarInfo(name)
    info.size = len(data) if attributes.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else 0
    for key, value in attributes.items():
        setattr(info, key, value)
    return info, data if info.size else None


def zip_with(path, names):
    with zipfile.ZipFile(path, "w") as archive:
        for name in names:
            archive.writestr(name, BASIS)
    return path


@pytest.mark.parametrize("make, why", [
    (lambda d: zip_with(d / "a.zip", ["basics/ok.txt", "../basis.npy"]), "a path outside the archive"),
    (lambda d: zip_with(d / "a.zip", ["/tmp/basis.npy"]), "a path outside the archive"),
    (lambda d: tar_with(d / "a.tar", [tar_member("release/../../basis.npy", BASIS)]), "a path outside the archive"),
    (lambda d: tar_with(d / "a.tar", [tar_member("basis.npy", type=tarfile.SYMTYPE, linkname="/etc/passwd")]),
     "a link or special file"),
    (lambda d: tar_with(d / "a.tar", [tar_member("basis.npy", type=tarfile.LNKTYPE, linkname="x")]),
     "a link or special file"),
], ids=["zip dot-dot", "zip absolute", "tar dot-dot", "tar symlink", "tar hard link"])
def test_an_archive_reaching_outside_itself_is_refused_whole(toy, tmp_path, make, why):
    (tmp_path / "have").mkdir()
    archive = make(tmp_path / "have")
    folder = tmp_path / "deep" / "weights"
    report = import_files(toy, archive, folder)
    assert len(report.refused) == 1 and report.refused[0].startswith(f"{archive}: member ")
    assert why in report.refused[0] and "nothing taken from it" in report.refused[0]
    assert not report.kept and sorted(p.name for p in folder.iterdir()) == []
    assert not (tmp_path / "deep" / "basis.npy").exists() and not (tmp_path / "basis.npy").exists()


def test_a_loose_file_of_no_known_name_is_named(toy, tmp_path):
    stray = tmp_path / "notes.txt"
    stray.write_text("hello")
    report = import_files(toy, stray, tmp_path / "weights")
    assert report.refused == [f"{stray}: neither an archive nor a file of {toy} "
                              "(basis.npy, tiny_net.pth, toy_pair.pth.tar, extra.npy)"]


# ---------------------------------------------------------------------------------- command line


def test_the_command_downloads_then_models_shows_the_recorded_sha256(toy, sources, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(weights_install, "DRIVE_URL", sources.url)
    monkeypatch.setattr(weights_install, "drive_folder_files", list_folder)
    assert main(["weights", "download", toy, "--weights", str(tmp_path), "-q"]) == 0
    out = capsys.readouterr().out
    assert sum(line.startswith("installed ") for line in out.splitlines()) == 4
    assert f"{toy}: ready in {tmp_path}" in out
    assert_installed(tmp_path)

    assert main(["models", "--weights", str(tmp_path)]) == 0
    listing = capsys.readouterr().out.split(f"\n{toy}  ")[1]
    for name in RELEASE:
        assert f"sha256 {sha256sum(tmp_path / name)} (recorded when installed)" in listing


def test_the_command_imports_and_says_in_one_error_line_what_failed(toy, tmp_path, capsys):
    files = dict(RELEASE, **{"tiny_net.pth": b"not a checkpoint"})
    archive = pack(release_folder(tmp_path / "have", files), "tar.gz")
    code = main(["weights", "import", toy, str(archive), "--weights", str(tmp_path / "weights")])
    out, err = capsys.readouterr()
    assert code == 2 and err == f"error: {toy} is not ready: 1 refused and 1 missing (see above)\n"
    assert "\nrefused    tiny_net.pth: " in out and "\ninstalled  toy_pair.pth.tar " in out

    assert main(["weights", "import", toy, str(tmp_path / "nowhere.zip")]) == 2
    assert capsys.readouterr().err == f"error: cannot read {tmp_path / 'nowhere.zip'}: no such file or folder\n"


# ---------------------------------------------------------------------------------- the registry


@pytest.mark.parametrize("model", ["atvgnet", "davs"])
def test_every_released_file_has_a_source_or_an_instruction(model, tmp_path):
    for weight_file in registry.spec(model).files:
        assert weight_file.urls, f"{weight_file.name} has no download source"
        kinds = [parse_source(url)[0] for url in weight_file.urls]
        if weight_file.name.endswith(".npy"):
            assert kinds == ["http"] and weight_file.urls[0].endswith(f"/basics/{weight_file.name}")
        else:
            assert set(kinds) <= {"drive-file", "drive-folder"}
        line = weights_install.by_hand(model, weight_file, tmp_path)
        assert weight_file.source in line and f"in {tmp_path} as {weight_file.name}" in line
    names = {n.checkpoint for n in registry.spec(model).networks.values() if n.checkpoint}
    assert names <= {f.name for f in registry.spec(model).files}     # every checkpoint is verified by loading


def test_drive_links_are_read_as_the_authors_write_them():
    assert parse_source("https://drive.google.com/open?id=1UW22xm4r9AewNoySyPd2fyUab0nqymBR") == \
        ("drive-file", "1UW22xm4r9AewNoySyPd2fyUab0nqymBR")
    assert parse_source("https://drive.google.com/file/d/abc_1-x/view?usp=sharing") == ("drive-file", "abc_1-x")
    assert parse_source("https://drive.google.com/drive/folders/1McjJsKS_yrgEZeB1fb-Og-N2gf2PQMF6?usp=sharing") == \
        ("drive-folder", "1McjJsKS_yrgEZeB1fb-Og-N2gf2PQMF6")
    with pytest.raises(ValueError):
        parse_source("ftp://example.org/x.pth")
