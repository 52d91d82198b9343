"""The live page in headless Chromium: a real ``talkingface serve``, a fake microphone playing
espeak-ng speech, and the face's mouth moving in the frames the page draws.

Chromium is driven over its DevTools protocol (a WebSocket): the page is opened, its
"Start from the microphone" button clicked, and the numbers it keeps in ``#live-stats``
read while the session runs.
"""

import contextlib
import json
import subprocess
import time

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import EXAMPLES, ROOT
from tests.test_dashboard_static import chromium  # noqa: F401  (a fixture)
from tests.test_e2e import Server

DEMO = ROOT / "weights" / "demo" / "atvgnet"
KEY = "page-test-key"
SPEECH = ("The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore. "
          "Peter Piper picked a peck of pickled peppers.")


class DevTools:
    """One page of a headless Chromium, driven over the DevTools protocol."""

    def __init__(self, executable, profile, *flags):
        self.process = subprocess.Popen(
            [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--remote-debugging-port=0", f"--user-data-dir={profile}", *flags,
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        port_file = profile / "DevToolsActivePort"
        while not port_file.is_file() or len(port_file.read_text().splitlines()) < 2:
            assert time.monotonic() < deadline and self.process.poll() is None, "chromium did not start"
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(p for p in pages if p["type"] == "page")
        self.exits = contextlib.ExitStack()
        self.socket = self.exits.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None))
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True,
                           userGesture=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def close(self):
        self.exits.close()
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def speech_wav(tmp_path, espeak_ng):
    path = tmp_path / "speech.wav"
    subprocess.run([espeak_ng, "-s", "150", "-w", str(path), SPEECH], check=True, capture_output=True)
    return path


def test_the_live_page_makes_a_face_speak_from_the_microphone(tmp_path, chromium, speech_wav):  # noqa: F811
    server = Server(tmp_path / "data", DEMO, workers=0, TALKINGFACE_API_KEYS=KEY, TALKINGFACE_DEVICE="cpu")
    browser = None
    try:
        face = server.client.post("/v1/files", files={"file": ("face.jpg", (EXAMPLES / "face.jpg").read_bytes())},
                                  headers={"Authorization": f"Bearer {KEY}"}).json()["id"]
        profile = tmp_path / "chromium"
        profile.mkdir()
        browser = DevTools(chromium, profile, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                           f"--use-file-for-fake-audio-capture={speech_wav}",
                           "--autoplay-policy=no-user-gesture-required")
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"{server.url}/live?key={KEY}")
        deadline = time.monotonic() + 30
        while browser.evaluate("document.readyState") != "complete" or not browser.evaluate(
                "!!document.getElementById('start-mic')"):
            assert time.monotonic() < deadline, "the page did not load"
            time.sleep(0.1)
        browser.evaluate(f"document.getElementById('face-id').value = {json.dumps(face)}; "
                         "document.getElementById('start-mic').click(); true")

        stats = "Object.assign({}, document.getElementById('live-stats').dataset, " \
                "{error: document.getElementById('error-banner').textContent})"
        deadline = time.monotonic() + 90
        while True:
            state = browser.evaluate(stats)
            assert not state["error"], state
            if int(state["frames"]) >= 75 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        print("live page:", state)
        # Three seconds of speech made frames whose mouth region changes from one to the next.
        assert state["state"] == "streaming" and int(state["frames"]) >= 75, state
        assert float(state["mouthSpread"]) > 0.3 and int(state["mouthDistinct"]) > 10, state
        assert float(state["latencyP50"]) > 0, state

        browser.evaluate("document.getElementById('stop').click(); true")
        deadline = time.monotonic() + 60
        while (state := browser.evaluate(stats))["state"] != "ended":
            assert time.monotonic() < deadline and state["state"] == "streaming", state
            time.sleep(0.2)
        assert not state["error"]
        jobs = server.client.get("/v1/jobs", headers={"Authorization": f"Bearer {KEY}"}).json()["data"]
        assert [(j["status"], j["inputs"]) for j in jobs] == [("succeeded", {"image": face})]
        assert jobs[0]["frames"] >= int(state["frames"])

        # Fragmented MP4 through Media Source Extensions: the <video> decodes and plays the frames.
        browser.evaluate("document.querySelector('input[value=fmp4]').checked = true; "
                         "document.getElementById('start-mic').click(); true")
        video = "document.getElementById('face-video')"
        deadline = time.monotonic() + 60
        while browser.evaluate(f"{video}.getVideoPlaybackQuality().totalVideoFrames") < 25:
            assert time.monotonic() < deadline and not browser.evaluate(stats)["error"], browser.evaluate(stats)
            time.sleep(0.2)
        assert browser.evaluate(f"{video}.currentTime") > 0.5
        browser.evaluate("document.getElementById('stop').click(); true")
        deadline = time.monotonic() + 60
        while browser.evaluate(stats)["state"] != "ended":
            assert time.monotonic() < deadline, browser.evaluate(stats)
            time.sleep(0.2)

        # The models that stream are offered, DAVS with the option it streams with; a DAVS session.
        options = browser.evaluate("[...document.getElementById('model').options].map(o => [o.value, o.text])")
        assert ["atvgnet", "atvgnet"] in options and ["davs", "davs (finetune_steps=0)"] in options, options
        browser.evaluate("document.querySelector('input[value=jpeg]').checked = true; "
                         "document.getElementById('model').value = 'davs'; "
                         "document.getElementById('start-mic').click(); true")
        deadline = time.monotonic() + 90
        while (browser.evaluate("window.liveSession ? window.liveSession.frames : 0") or 0) < 25:
            assert time.monotonic() < deadline and not (state := browser.evaluate(stats))["error"], state
            time.sleep(0.2)
        browser.evaluate("document.getElementById('stop').click(); true")
        deadline = time.monotonic() + 60
        while (job := server.client.get("/v1/jobs", headers={"Authorization": f"Bearer {KEY}"}).json()["data"][0])[
                "status"] == "running":
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job["model"] == "davs" and job["status"] == "succeeded" and job["frames"] >= 25, job
    finally:
        if browser is not None:
            browser.close()
        server.stop()


def test_the_live_page_and_its_assets_are_served_from_its_own_origin():
    import re

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from service.api import dashboard

    app = FastAPI()
    app.include_router(dashboard.router)
    with TestClient(app) as client:
        page = client.get("/live")
        assert page.status_code == 200 and "connect-src 'self'" in page.headers["content-security-policy"]
        assert "media-src 'self' blob:" in page.headers["content-security-policy"]
        for asset, kind in (("static/live.js", "text/javascript"), ("static/live-worklet.js", "text/javascript"),
                            ("static/live.css", "text/css"), ("static/dashboard.css", "text/css")):
            assert f'"{asset}"' in page.text or asset.endswith("worklet.js")
            response = client.get("/" + asset)
            assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        script = client.get("/static/live.js").text
        assert '"static/live-worklet.js"' in script and "innerHTML" not in script
        for text in (page.text, script):
            assert not re.search(r"(src|href)=\"(https?:)?//", text)
