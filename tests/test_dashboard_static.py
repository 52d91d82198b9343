"""The job dashboard: the page and its assets over HTTP, then the page rendered by
headless Chromium against a fake JSON API with fixed data.

The browser tests need Debian's ``chromium`` package; without it they are skipped with
that reason, and with ``TALKINGFACE_TEST_ALL=1`` (CI) they fail, since a dashboard nobody
has rendered is not tested.
"""

import contextlib
import re
import socket
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from urllib.parse import urljoin

import pytest
import uvicorn
from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from service.api import dashboard
from tests import components

API_KEY = "test-key"
RESULT_URL = "/v1/files/job_abc/video.mp4"
# A model name that is markup: the page must show it as text, never parse it.
HOSTILE_MODEL = '<img src="x" id="injected">'
PAGE_IDS = (
    "queued-count", "running-count", "worker-count", "running-jobs", "recent-jobs",
    "throughput-chart", "latency-chart", "workers", "models", "last-update", "error-banner",
)


# ---------------------------------------------------------------- the fake API


def _iso(moment: datetime) -> str:
    # Microseconds and an explicit offset, as datetime.isoformat() gives them.
    return moment.isoformat()


def _job(job_id: str, status: str, created: datetime, **fields) -> dict:
    job = {
        "id": job_id, "object": "job", "task": "talking-face", "model": "atvgnet",
        "status": status, "progress": 0.0, "attempts": 1, "max_attempts": 3,
        "created_at": _iso(created), "started_at": None, "finished_at": None,
        "error": None, "result_url": None, "batch_id": None, "frames": None, "worker_id": None,
    }
    job.update(fields)
    return job


def fake_data() -> dict:
    """One succeeded, one running (40 %), one failed job; one busy worker; an hour of stats."""
    now = datetime.now(timezone.utc)
    jobs = [
        _job("job_run", "running", now - timedelta(seconds=40), started_at=_iso(now - timedelta(seconds=30)),
             progress=0.4, worker_id="wrk_gpu0"),
        _job("job_abc", "succeeded", now - timedelta(minutes=5), started_at=_iso(now - timedelta(minutes=5)),
             finished_at=_iso(now - timedelta(minutes=4, seconds=48)), progress=1.0, frames=75,
             result_url=RESULT_URL),
        _job("job_bad", "failed", now - timedelta(minutes=9), model=HOSTILE_MODEL, attempts=3,
             started_at=_iso(now - timedelta(minutes=9)),
             finished_at=_iso(now - timedelta(minutes=8, seconds=57)),
             error={"code": "no_face", "message": "no face found in the image"}),
    ]
    workers = [{
        "id": "wrk_gpu0", "pid": 4242, "hostname": "gpu-node-1", "device": "cuda:0",
        "models": ["atvgnet", "davs"],
        "status": "busy", "current_job": "job_run", "started_at": _iso(now - timedelta(hours=2)),
        "heartbeat_at": _iso(now - timedelta(seconds=1)),
    }]
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=59)
    series = []
    for i in range(60):
        succeeded, failed = (i * 7) % 5, int(i % 13 == 0)
        p50 = 2.0 + (i % 10) * 0.3 if succeeded + failed else None
        series.append({
            "minute": _iso(start + timedelta(minutes=i)), "succeeded": succeeded, "failed": failed,
            "p50_seconds": p50, "p95_seconds": p50 * 1.8 if p50 else None,
        })
    stats = {"queued": 7, "running": 1, "workers": 1, "series": series}
    models = [
        {"id": "talker", "object": "model", "task": "talking-face", "paper": "A, B, 2019", "accepts_video": True,
         "options": [{"name": "paste_back", "type": "bool", "default": False, "help": "put the face back"},
                     {"name": "steps", "type": "int", "default": 5, "help": "tuning steps", "minimum": 0,
                      "maximum": 20}],
         "ready": True, "weights_in_use": {"kind": "project", "folder": "weights/demo/talker"},
         "workers": [{"id": "wrk_gpu0", "device": "cuda:0"}]},
        {"id": HOSTILE_MODEL, "object": "model", "task": "talking-face", "accepts_video": False,
         "options": [], "ready": False, "weights_in_use": {"kind": "authors", "folder": "weights"}, "workers": []},
    ]
    return {"jobs": jobs, "workers": workers, "stats": stats, "models": models}


def build_app() -> FastAPI:
    """The dashboard router beside fake handlers for the four endpoints it reads.

    The fake API wants ``Authorization: Bearer test-key``, so a page that loses the
    ``?key=`` on the way to its requests shows no data.
    """
    app = FastAPI()
    app.include_router(dashboard.router)
    data = fake_data()

    def refused(authorization: str | None) -> JSONResponse | None:
        if authorization == f"Bearer {API_KEY}":
            return None
        return JSONResponse({"error": {"code": "unauthorized", "message": "missing or wrong API key"}}, 401)

    @app.get("/v1/jobs")
    def list_jobs(status: str | None = None, limit: int = 20, authorization: str | None = Header(None)):
        if answer := refused(authorization):
            return answer
        jobs = sorted(data["jobs"], key=lambda job: job["created_at"], reverse=True)
        jobs = [job for job in jobs if status is None or job["status"] == status]
        return {"object": "list", "data": jobs[:limit], "has_more": len(jobs) > limit}

    @app.get("/v1/workers")
    def list_workers(authorization: str | None = Header(None)):
        return refused(authorization) or {"object": "list", "data": data["workers"]}

    @app.get("/v1/stats")
    def read_stats(minutes: int = 60, authorization: str | None = Header(None)):
        return refused(authorization) or data["stats"]

    @app.get("/v1/models")
    def list_models(authorization: str | None = Header(None)):
        return refused(authorization) or {"object": "list", "data": data["models"]}

    return app


@pytest.fixture(scope="module")
def client():
    with TestClient(build_app()) as test_client:
        yield test_client


# ---------------------------------------------------------------- over HTTP


def test_dashboard_page_has_every_section(client):
    response = client.get("/dashboard")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    for element_id in PAGE_IDS:
        assert f'id="{element_id}"' in response.text, element_id


def test_dashboard_loads_its_assets_from_relative_paths(client):
    page = client.get("/dashboard").text
    scripts = re.findall(r'<script[^>]*\ssrc="([^"]+)"', page)
    assert scripts == ["static/dashboard.js"]
    assert 'href="static/dashboard.css"' in page


def test_dashboard_assets_are_served_with_their_types(client):
    script = client.get("/static/dashboard.js")
    assert script.status_code == 200
    assert script.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
    assert "function poll" in script.text
    stylesheet = client.get("/static/dashboard.css")
    assert stylesheet.status_code == 200
    assert stylesheet.headers["content-type"].startswith("text/css")


def test_dashboard_refers_to_no_other_origin(client):
    svg_namespace = "http://www.w3.org/2000/svg"
    for path in ("/dashboard", "/static/dashboard.js", "/static/dashboard.css"):
        text = client.get(path).text.replace(svg_namespace, "")
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), path


def test_dashboard_script_never_parses_api_text_as_html(client):
    script = client.get("/static/dashboard.js").text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink


# ---------------------------------------------------------------- in a browser


class _Element:
    def __init__(self, tag: str, attrs: dict, parent: "_Element | None"):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list = []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self):
        yield self
        for child in self.children:
            if isinstance(child, _Element):
                yield from child.iter()

    def find_all(self, tag: str | None = None, **attrs: str) -> list["_Element"]:
        attrs = {name.rstrip("_").replace("_", "-"): value for name, value in attrs.items()}
        return [e for e in self.iter() if (tag is None or e.tag == tag)
                and all(e.attrs.get(name) == value for name, value in attrs.items())]

    def by_id(self, element_id: str) -> "_Element":
        found = self.find_all(id=element_id)
        assert len(found) == 1, f"#{element_id} appears {len(found)} times"
        return found[0]


class _TreeBuilder(HTMLParser):
    """Chromium's serialised DOM as a small element tree (the standard library has none)."""

    VOID = {
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr",
    }

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = _Element("#document", {}, None)

    def handle_starttag(self, tag, attrs):
        element = _Element(tag, {name: value or "" for name, value in attrs}, self.current)
        self.current.children.append(element)
        if tag not in self.VOID:
            self.current = element

    def handle_startendtag(self, tag, attrs):
        element = _Element(tag, {name: value or "" for name, value in attrs}, self.current)
        self.current.children.append(element)

    def handle_endtag(self, tag):
        node = self.current
        while node.parent is not None and node.tag != tag:
            node = node.parent
        if node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse_dom(html: str) -> _Element:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium executable on PATH (Debian package ``chromium``); see tests/components.py."""
    return components.require("chromium")


@contextlib.contextmanager
def serving_http(app, lifespan="off"):
    """``app`` under uvicorn in a background thread on a free port of 127.0.0.1; yields its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("the test server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def live_server():
    """The fake-API test app, served over HTTP."""
    with serving_http(build_app()) as url:
        yield url


def dump_dom(chromium: str, url: str, profile_dir) -> _Element:
    """Loads url in headless Chromium, lets 5 s of page time pass, and parses the DOM."""
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile_dir}",
        # Virtual time runs ahead while the page is idle and waits on network requests,
        # so two or three polls complete in well under 5 s of real time.
        "--virtual-time-budget=5000", "--dump-dom", url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, f"chromium exited with {done.returncode}: {done.stderr[-2000:]}"
    assert "<html" in done.stdout, f"chromium printed no DOM: {done.stderr[-2000:]}"
    return parse_dom(done.stdout)


@pytest.fixture(scope="module")
def rendered(chromium, live_server, tmp_path_factory):
    return dump_dom(chromium, f"{live_server}/dashboard?key={API_KEY}", tmp_path_factory.mktemp("chromium"))


def test_dashboard_shows_totals(rendered):
    assert rendered.by_id("queued-count").text().strip() == "7"
    assert rendered.by_id("running-count").text().strip() == "1"
    assert rendered.by_id("worker-count").text().strip() == "1"


def test_dashboard_lists_recent_jobs_newest_first_with_result_links(rendered, live_server):
    rows = [row for row in rendered.by_id("recent-jobs").find_all("tr") if "data-job-id" in row.attrs]
    assert [(row.attrs["data-job-id"], row.attrs["data-status"]) for row in rows] == [
        ("job_run", "running"), ("job_abc", "succeeded"), ("job_bad", "failed"),
    ]
    links = [a.attrs.get("href") for a in rows[1].find_all("a")]
    assert links == [urljoin(live_server + "/dashboard", RESULT_URL)]
    assert rows[0].find_all("a") == [] and rows[2].find_all("a") == []
    assert "12 s" in rows[1].text()
    assert "no_face" in rows[2].text()


def test_dashboard_shows_api_text_as_text(rendered):
    failed_row = rendered.by_id("recent-jobs").find_all("tr", data_job_id="job_bad")[0]
    assert HOSTILE_MODEL in failed_row.text()
    assert rendered.find_all(id="injected") == []


def test_dashboard_shows_running_job_progress(rendered):
    running = rendered.by_id("running-jobs").find_all(data_job_id="job_run")
    assert len(running) == 1
    bars = running[0].find_all(role="progressbar")
    assert len(bars) == 1 and bars[0].attrs["aria-valuenow"] == "40"
    assert "width: 40%" in bars[0].find_all(class_="progress-fill")[0].attrs["style"]
    assert "40 %" in running[0].text()


def test_dashboard_lists_workers(rendered):
    rows = rendered.by_id("workers").find_all("tr", data_worker_id="wrk_gpu0")
    assert len(rows) == 1
    text = rows[0].text()
    for expected in ("4242", "gpu-node-1", "cuda:0", "atvgnet, davs", "busy", "job_run", "s ago"):
        assert expected in text, expected
    assert "stale" not in text


def test_dashboard_lists_models_with_their_declared_inputs_and_options(rendered):
    rows = [row for row in rendered.by_id("models").find_all("tr") if "data-model-id" in row.attrs]
    assert [row.attrs["data-model-id"] for row in rows] == ["talker", HOSTILE_MODEL]
    talker, hostile = rows[0].text(), rows[1].text()
    for expected in ("talking-face", "image + audio or driving video", "paste_back=false", "steps=5", "ready"):
        assert expected in talker, expected
    assert [code.attrs.get("title") for code in rows[0].find_all("code")][1:] == ["put the face back",
                                                                                  "tuning steps"]
    assert "image + audio" in hostile and "driving video" not in hostile and "missing" in hostile
    assert rendered.find_all(id="injected") == []


def test_dashboard_draws_both_charts_over_the_hour(rendered):
    throughput = rendered.by_id("throughput-chart")
    assert throughput.attrs["data-minutes"] == "60"
    assert len(throughput.find_all("g")) == 60
    assert throughput.find_all("rect", class_="bar-succeeded")
    assert throughput.find_all("rect", class_="bar-failed")
    latency = rendered.by_id("latency-chart")
    assert latency.attrs["data-minutes"] == "60"
    for line in ("line-p50", "line-p95"):
        paths = latency.find_all("path", class_=line)
        assert len(paths) == 1 and paths[0].attrs["d"].startswith("M "), line


def test_dashboard_reports_a_successful_update(rendered):
    assert rendered.by_id("last-update").text().startswith("Updated ")
    assert "hidden" in rendered.by_id("error-banner").attrs


def test_dashboard_shows_error_banner_when_the_api_refuses(chromium, live_server, tmp_path):
    page = dump_dom(chromium, f"{live_server}/dashboard?key=wrong", tmp_path)
    banner = page.by_id("error-banner")
    assert "hidden" not in banner.attrs
    assert "HTTP 401" in banner.text() and "missing or wrong API key" in banner.text()
    assert page.by_id("last-update").text() == "No data yet"
    assert page.by_id("queued-count").text().strip() == "–"
