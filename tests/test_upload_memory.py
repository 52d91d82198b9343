"""The API process's memory while it checks uploads: images are checked without holding their
pixels (PNG by its chunks, JPEG at 1/8 scale), whole decodes (WebP, BMP) and audio under a
decode budget, so that many large-canvas images at once leave the API's memory flat.

The bound is measured on a real ``talkingface serve`` process (its ``VmHWM``, the peak
resident memory, from ``/proc``) while 12 PNGs of 7000x7000 pixels (under the pixel cap,
about 160 KB each) are uploaded at once; decoded, each would take about 200 MB.
"""

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from models.errors import InvalidInput
from models.perception.image import ImageTooLarge, check_image
from service import media
from service.app import create_app
from tests.test_api import assert_error, make_settings
from tests.test_e2e import Server

CANVAS = 7000                       # 49 M pixels: under the default cap of 50 M
RSS_GROWTH_BOUND = 1536 << 20       # +1.5 GB; decoding them all at once took 8 GB


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


@pytest.fixture(scope="module")
def large_png():
    canvas = Image.new("RGB", (CANVAS, CANVAS), (40, 90, 160))
    canvas.paste((250, 250, 250), (1000, 1000, 3000, 3000))
    return encoded(canvas, "PNG", compress_level=9)


def memory_kib(pid, field):
    """``VmHWM`` (peak) or ``VmRSS`` (now) of a process, KiB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_twelve_large_canvas_pngs_at_once_leave_the_api_memory_flat(tmp_path, seeded_project_dir, large_png):
    assert len(large_png) < 400_000
    server = Server(tmp_path / "data", seeded_project_dir, workers=0)
    try:
        pid = server.process.pid
        small = encoded(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")
        assert server.client.post("/v1/files", files={"file": ("warm.png", small)}).status_code == 201
        before = memory_kib(pid, "VmRSS") << 10

        def send(i):
            with httpx.Client(base_url=server.url, timeout=120) as client:
                return client.post("/v1/files", files={"file": (f"big{i}.png", large_png)})

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(send, range(12)))
        growth = (memory_kib(pid, "VmHWM") << 10) - before
        assert [a.status_code for a in answers] == [201] * 12, [a.text for a in answers if a.status_code != 201]
        assert {a.json()["kind"] for a in answers} == {"image"}
        print(f"API peak RSS growth with 12 uploads of {CANVAS}x{CANVAS} PNGs at once: {growth / 2**20:.0f} MiB")
        assert growth < RSS_GROWTH_BOUND, f"the API's peak memory grew by {growth / 2**20:.0f} MiB"
        assert server.get("/livez").status_code == 200
    finally:
        server.stop()


@pytest.mark.parametrize("fmt,options", [("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True}),
                                         ("WEBP", {}), ("BMP", {})],
                         ids=["png", "jpeg", "progressive-jpeg", "webp", "bmp"])
def test_check_image_takes_whole_images_and_refuses_truncated_ones(fmt, options):
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    data = encoded(Image.fromarray(pixels), fmt, **options)
    admitted = []

    def admit(nbytes):
        admitted.append(nbytes)
        return media.DecodeBudget(1 << 30, 0).admit(nbytes)

    header = check_image(data, admit=admit)
    assert (header.format, header.width, header.height) == (fmt, 64, 48)
    # A PNG is checked by its chunks: nothing to admit. The others ask for what they decode.
    assert admitted == [] if fmt == "PNG" else admitted and admitted[0] > 0
    with pytest.raises(InvalidInput, match="not an image"):
        check_image(data[: len(data) // 2])
    with pytest.raises(ImageTooLarge, match="64x48 pixels"):
        check_image(data, max_pixels=64 * 47)


def test_a_progressive_jpeg_is_charged_for_its_coefficients():
    image = Image.new("RGB", (800, 600), (10, 20, 30))
    charged = {}
    for progressive in (False, True):
        seen = []
        check_image(encoded(image, "JPEG", progressive=progressive),
                    admit=lambda n, seen=seen: (seen.append(n), media.DecodeBudget(1 << 30, 0).admit(n))[1])
        charged[progressive] = seen[0]
    assert charged[False] == 800 * 600 // 64 * 4          # decoded at 1/8 scale
    assert charged[True] >= 800 * 600 * 2 * 3              # plus 2 bytes a pixel and band of coefficients


def test_decode_budget_admits_within_its_bytes_and_refuses_after_the_wait():
    budget = media.DecodeBudget(100, wait_seconds=0.2)
    with budget.admit(80):
        started = time.monotonic()
        with pytest.raises(media.DecodeBusy, match="decode budget"):
            with budget.admit(30):
                pass
        assert time.monotonic() - started >= 0.15
        with budget.admit(20):          # fits beside the 80
            assert budget.held == 100
    with budget.admit(10_000):          # larger than the whole budget: runs alone
        assert budget.held == 100
    assert budget.held == 0

    # A waiting check goes ahead as soon as the bytes are given back.
    budget = media.DecodeBudget(100, wait_seconds=30)
    order = []
    holder = budget.admit(100)
    holder.__enter__()

    def second():
        with budget.admit(50):
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.1)
    order.append("released")
    holder.__exit__(None, None, None)
    thread.join(10)
    assert order == ["released", "second"]


def test_an_upload_that_finds_the_budget_spent_answers_503_busy(tmp_path, seeded_project_dir):
    settings = make_settings(tmp_path, seeded_project_dir, decode_budget_bytes=1 << 20, decode_wait_seconds=0.2)
    webp = encoded(Image.new("RGB", (300, 200), (9, 9, 9)), "WEBP")
    with TestClient(create_app(settings)) as client:
        with media.decode_budget(settings).admit(1 << 20):      # another check holds the whole budget
            r = client.post("/v1/files", files={"file": ("a.webp", webp)})
        assert_error(r, 503, "busy")
        assert int(r.headers["retry-after"]) > 0
        assert not list(settings.files_dir.glob(".upload-*"))   # the refused upload is not kept
        # The budget given back, the same upload is taken.
        r = client.post("/v1/files", files={"file": ("a.webp", webp)})
        assert r.status_code == 201 and r.json()["kind"] == "image"
