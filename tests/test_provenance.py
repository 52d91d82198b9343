"""Outputs labelled as synthetic: metadata, a signed C2PA manifest, a watermark, `talkingface verify`.

The CLI's development key goes to a temporary ``XDG_DATA_HOME``; the service's to its data dir.
"""

import hashlib
import io
import json
import subprocess
import zipfile

import numpy as np
import pytest
from PIL import Image

from models.types import Images
from service import media, render
from service.cli import main
from service.jobs.worker import Worker
from service.provenance import Label, Provenance, manifest, parse_payload, tag_of, watermark
from service.provenance.verify import verify
from service.settings import get_settings
from tests.components import TEST_ALL
from tests.conftest import EXAMPLES
from tests.test_api import FACE, make_settings, serving, wav_bytes

IPTC_TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
PAYLOAD = Label("toy", "toy weights", "ab" * 32).payload()


def photo(side) -> np.ndarray:
    return np.asarray(Image.open(EXAMPLES / "face.jpg").convert("RGB").resize((side, side)))


def clip(side, n=25) -> np.ndarray:
    """A face moving a little from frame to frame."""
    return np.stack([np.roll(photo(side), int(3 * np.sin(t / 4)), axis=1) for t in range(n)])


def reencode(source, target, *args):
    """ffmpeg (imageio-ffmpeg's) re-encoding ``source``: H.264 at CRF 23, every tag dropped."""
    subprocess.run([media.ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(source), "-map_metadata", "-1",
                    "-c:v", "libx264", "-crf", "23", "-pix_fmt", "yuv420p", *args, str(target)], check=True)


def as_jpeg(png_bytes, quality=90) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(png_bytes)).convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def run(argv, capsys) -> tuple[int, str, str]:
    """``talkingface`` with ``argv``: (exit code, stdout, stderr); verify exits 1 through SystemExit."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    """The CLI's settings from a clean environment, its development key in a temporary folder."""
    folder = tmp_path_factory.mktemp("xdg")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_DATA_HOME", str(folder))
        for name in ("TALKINGFACE_DATA_DIR", "TALKINGFACE_PROVENANCE", "TALKINGFACE_SIGNING_KEY",
                     "TALKINGFACE_SIGNING_CERT"):
            env.delenv(name, raising=False)
        get_settings.cache_clear()
        yield folder / "talkingface" / "signing"
    get_settings.cache_clear()


# ---------------------------------------------------------------------------------------
# The watermark


def test_the_watermark_reads_back_and_is_faint():
    frames = clip(256, n=4)
    marked = watermark.embed(frames, PAYLOAD)
    assert marked.shape == frames.shape and marked.dtype == np.uint8 and not np.array_equal(marked, frames)
    error = marked.astype(float) - frames
    assert 10 * np.log10(255 ** 2 / np.mean(error ** 2)) > 38           # PSNR, dB
    assert np.array_equal(marked[..., 0], frames[..., 0])                 # red untouched: Y and V are kept
    reader = watermark.Reader()
    reader.add(marked)
    assert reader.payloads() == [PAYLOAD, PAYLOAD] and parse_payload(PAYLOAD) == Label("toy", None, "ab" * 32).tag()
    assert reader.clarity() > 0.9 and reader.frames == 4
    # One frame alone carries it too; the input is left as it was.
    single = watermark.embed(frames[0], PAYLOAD)
    assert single.shape == frames[0].shape and not np.array_equal(single, frames[0])


def test_small_frames_carry_none_and_unmarked_pictures_read_as_unmarked():
    small = photo(96)
    assert not watermark.fits(96, 96) and watermark.fits(112, 112)
    assert np.array_equal(watermark.embed(small, PAYLOAD), small)
    for picture in (photo(256), photo(512), clip(160, n=3), np.full((256, 256, 3), 128, np.uint8)):
        reader = watermark.Reader()
        reader.add(picture)
        assert [parse_payload(payload) for payload in reader.payloads()] == [None, None]
    reader = watermark.Reader()
    reader.add(small)
    assert reader.frames == 0 and reader.clarity() == 0.0


def test_it_is_invisible_watermarks_dwtDctSvd():
    """The package reads what ``embed`` writes, and ``Reader`` reads what the package writes."""
    try:
        import cv2
        from imwatermark import WatermarkDecoder, WatermarkEncoder
    except ImportError:
        message = ("invisible-watermark is not installed: pip install PyWavelets && "
                   "pip install --no-deps invisible-watermark==0.2.0")
        if TEST_ALL:
            pytest.fail(message)
        pytest.skip(message)
    image = photo(256)
    ours = watermark.embed(image, PAYLOAD)
    decoded = WatermarkDecoder("bytes", 48).decode(cv2.cvtColor(ours, cv2.COLOR_RGB2BGR), "dwtDctSvd")
    assert decoded == PAYLOAD
    encoder = WatermarkEncoder()
    encoder.set_watermark("bytes", PAYLOAD)
    theirs = cv2.cvtColor(encoder.encode(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), "dwtDctSvd"), cv2.COLOR_BGR2RGB)
    reader = watermark.Reader()
    reader.add(theirs)
    assert reader.payloads() == [PAYLOAD, PAYLOAD]


# ---------------------------------------------------------------------------------------
# talkingface generate, then verify


@pytest.fixture(scope="module")
def generated(seeded_project_dir, cli_env, tmp_path_factory):
    """A 1 s clip from `talkingface generate` with the seeded project weights."""
    folder = tmp_path_factory.mktemp("generated")
    (folder / "a.wav").write_bytes(wav_bytes(1.0))
    out = folder / "out.mp4"
    assert main(["generate", "--model", "atvgnet", "--weights", str(seeded_project_dir), "--image",
                 str(EXAMPLES / "face.jpg"), "--audio", str(folder / "a.wav"), "-o", str(out), "-q"]) == 0
    return out


def test_verify_reports_the_model_the_manifest_and_the_watermark(generated, seeded_project_dir, cli_env, capsys):
    weights_sha256 = hashlib.sha256((seeded_project_dir / "SHA256SUMS").read_bytes()).hexdigest()
    code, out, _ = run(["verify", str(generated), "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["labelled"] and report["kind"] == "video"
    assert report["metadata"] == {"model": "atvgnet", "weights": "seeded stand-in", "weights_sha256": weights_sha256}
    signed = report["manifest"]
    assert signed["state"] == "valid" and signed["problems"] == []         # valid; the signer is on no trust list
    assert signed["development_key"] and signed["digital_source_type"] == IPTC_TRAINED
    assert signed["claim_generator"].startswith("talkingface/")
    assert signed["generator"]["model"] == "atvgnet" and signed["generator"]["weights_sha256"] == weights_sha256
    assert set(signed["generator"]["weight_files"]) == {"atnet.safetensors", "basics.npz", "config.json", "pca.npz",
                                                         "vgnet.safetensors"}
    assert "development key" in signed["generator"]["signing_note"]
    mark = report["watermark"]
    assert mark["found"] and mark["matches"] and mark["tag"] == tag_of("atvgnet", weights_sha256).hex()
    assert (cli_env / manifest.DEV_KEY).is_file() and (cli_env / manifest.DEV_CERT).is_file()

    code, out, _ = run(["verify", str(generated)], capsys)
    assert code == 0 and "model atvgnet" in out and "a development key" in out and "trainedAlgorithmicMedia" in out
    assert "watermark: found" in out and out.rstrip().endswith("labelled as synthetic: made by talkingface")
    assert media.probe(generated)["format"]["tags"]["comment"].startswith("talkingface atvgnet; weights: seeded")


def test_a_reencoded_copy_still_has_the_watermark(generated, seeded_project_dir, tmp_path, capsys):
    weights_sha256 = hashlib.sha256((seeded_project_dir / "SHA256SUMS").read_bytes()).hexdigest()
    copy = tmp_path / "copy.mp4"
    reencode(generated, copy, "-c:a", "aac")
    code, out, _ = run(["verify", str(copy), "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["labelled"]
    assert report["metadata"] is None and report["manifest"] is None
    assert report["watermark"]["found"] and report["watermark"]["tag"] == tag_of("atvgnet", weights_sha256).hex()


def test_a_changed_file_has_an_invalid_manifest(generated, tmp_path, capsys):
    data = bytearray(generated.read_bytes())
    data[-2000] ^= 0xFF                                                # in the media data, after the moov box
    changed = tmp_path / "changed.mp4"
    changed.write_bytes(bytes(data))
    report = verify(changed)
    assert report["manifest"]["state"] == "invalid" and report["manifest"]["problems"]
    code, out, _ = run(["verify", str(changed)], capsys)
    assert code == 0 and "INVALID" in out


def test_verify_exit_codes(cli_env, tmp_path, capsys):
    plain = tmp_path / "plain.png"
    Image.fromarray(photo(256)).save(plain)
    code, out, _ = run(["verify", str(plain)], capsys)
    assert code == 1 and out.rstrip().endswith("no sign of talkingface found")
    (tmp_path / "notes.txt").write_text("hello")
    for name in ("notes.txt", "missing.mp4"):
        code, out, err = run(["verify", str(tmp_path / name)], capsys)
        assert code == 2 and err.startswith("error: ") and "Traceback" not in err
        code, out, _ = run(["verify", str(tmp_path / name), "--json"], capsys)
        assert code == 2 and json.loads(out)["error"]["code"] == "invalid_input"


# ---------------------------------------------------------------------------------------
# Images


def test_pngs_and_zips_are_labelled_and_a_jpeg_copy_keeps_the_watermark(tmp_path):
    labels = Provenance(key_folder=tmp_path / "signing")
    label = Label("toy", "toy weights", "cd" * 32)
    images = Images(images=np.stack([photo(128), photo(128)[::-1]]))
    render.write_images(images, tmp_path / "grid.png", comment=label.text(), label=label, provenance=labels)
    report = verify(tmp_path / "grid.png")
    assert report["labelled"] and report["metadata"]["weights_sha256"] == "cd" * 32
    assert report["manifest"]["state"] == "valid" and report["manifest"]["generator"]["model"] == "toy"
    assert report["watermark"]["found"] and report["watermark"]["matches"]

    (tmp_path / "copy.jpg").write_bytes(as_jpeg((tmp_path / "grid.png").read_bytes(), quality=90))
    report = verify(tmp_path / "copy.jpg")
    assert report["metadata"] is None and report["manifest"] is None
    assert report["watermark"]["found"] and report["watermark"]["tag"] == label.tag().hex()

    render.write_images(images, tmp_path / "out.zip", comment=label.text(), label=label, provenance=labels)
    report = verify(tmp_path / "out.zip")
    assert report["kind"] == "zip" and [m["file"] for m in report["members"]] == ["images/0000.png", "images/0001.png"]
    assert all(m["labelled"] and m["manifest"]["state"] == "valid" and m["watermark"]["found"]
               for m in report["members"])
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        assert json.loads(archive.read("info.json")) == {}


def test_a_configured_key_signs_and_a_bad_one_says_why(tmp_path):
    key_pem, chain_pem = manifest.generate_key("Example Newsroom")
    (tmp_path / "key.pem").write_bytes(key_pem)
    (tmp_path / "chain.pem").write_bytes(chain_pem)
    labels = Provenance(key_path=tmp_path / "key.pem", cert_path=tmp_path / "chain.pem")
    signed = manifest.read(labels.png(photo(128), "x", Label("toy")), "image/png")
    assert signed["state"] == "valid" and signed["issuer"] == "Example Newsroom" and not signed["development_key"]
    assert signed["generator"]["signing_key"] == "configured" and "signing_note" not in signed["generator"]

    (tmp_path / "notakey.pem").write_text("not a key")
    cases = [(Provenance(key_path=tmp_path / "missing.pem", cert_path=tmp_path / "chain.pem"), "cannot read"),
             (Provenance(key_path=tmp_path / "key.pem"), "set both TALKINGFACE_SIGNING_KEY and"),
             (Provenance(key_path=tmp_path / "notakey.pem", cert_path=tmp_path / "chain.pem"),
              "not an unencrypted PEM")]
    for bad, message in cases:
        with pytest.raises(manifest.SigningError, match=message):
            bad.png(photo(128), "x", Label("toy"))
    # Off: no key is needed, and the PNG carries its comment only.
    plain = Provenance(enabled=False, key_path=tmp_path / "missing.pem").png(photo(128), "x", Label("toy"))
    assert manifest.read(plain, "image/png") is None and not verify_bytes(plain, tmp_path)["watermark"]["found"]


def verify_bytes(data, tmp_path):
    (tmp_path / "file.png").write_bytes(data)
    return verify(tmp_path / "file.png")


def test_the_development_key_is_made_once_even_when_asked_at_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        keys = list(pool.map(lambda _: manifest.development_key(tmp_path / "signing"), range(4)))
    assert len({key.key_pem for key in keys}) == 1 and keys[0].development and keys[0].algorithm == "es256"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signing"]


# ---------------------------------------------------------------------------------------
# The service


def test_the_worker_signs_with_the_data_dirs_key_and_the_setting_turns_labels_off(seeded_project_dir, tmp_path):
    for provenance in (True, False):
        settings = make_settings(tmp_path / str(provenance), seeded_project_dir, provenance=provenance)
        with serving(settings, Worker(settings)) as client:
            r = client.post("/v1/talking-face", files={"image": ("face.jpg", FACE), "audio": ("a.wav", wav_bytes(0.6))},
                            data={"wait": "60"})
            assert r.status_code == 200, r.text
            job = client.get(r.headers["location"]).json()
        (tmp_path / "result.mp4").write_bytes(r.content)
        report = verify(tmp_path / "result.mp4")
        assert report["metadata"]["model"] == "atvgnet" and report["labelled"]
        assert job["info"]["weights_sha256"] == report["metadata"]["weights_sha256"]
        key = settings.data_dir / "signing" / manifest.DEV_KEY
        if provenance:
            assert report["manifest"]["state"] == "valid" and report["manifest"]["development_key"]
            assert report["watermark"]["found"] and report["watermark"]["matches"] and key.is_file()
        else:
            assert report["manifest"] is None and not report["watermark"]["found"] and not key.exists()
