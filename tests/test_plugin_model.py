"""A third model arrives as a plug-in: one pipeline class and one ``registry.register`` call.

A toy talking-face pipeline is registered at run time, with no change under ``service/``,
and is then served by every surface: ``talkingface generate`` (its option becomes a
flag), the REST form, the jobs API through a real worker, ``GET /v1/models`` and the
dashboard rendered in Chromium.
"""


import numpy as np
import pytest

from models import registry
from models.common.pipeline import Option, TalkingFacePipeline
from models.registry import ModelSpec
from service import media
from service.app import create_app
from service.cli import main
from service.jobs.worker import Worker
from tests.conftest import EXAMPLES
from tests.test_api import FACE, assert_error, make_settings, serving, upload, wait_for, wav_bytes
from tests.test_dashboard_static import chromium, dump_dom, serving_http  # noqa: F401  (chromium is a fixture)

SIDE = 32


class ToyPipeline(TalkingFacePipeline):
    """One grey frame per 1/25 s of audio: its level is the mean of the photo plus ``tint``."""

    name = "toy"
    options = (Option("tint", int, 0, "grey levels added to every frame", minimum=0, maximum=100),)

    def __init__(self, device="cpu"):
        self.info = {"model": "toy", "weights": "none", "device": "cpu"}

    @classmethod
    def from_pretrained(cls, directory, device="auto", **options):
        return cls(device)

    def prepare_reference(self, image, face_index=0):
        return type("Reference", (), {"n_faces": 1, "level": float(self.check_image(image).mean())})()

    def frame_chunks(self, inputs, paste_back=False, progress=None, reference=None, tint=0):
        audio = self.prepare_audio(inputs.audio, inputs.sample_rate)
        reference = reference or self.prepare_reference(inputs.image)
        total = len(audio) * 25 // self.sample_rate
        level = np.uint8(min(reference.level + tint, 255))
        for start in range(0, total, 10):
            count = min(10, total - start)
            yield np.full((count, SIDE, SIDE, 3), level, np.uint8)
            if progress is not None:
                progress(start + count, total)


@pytest.fixture(scope="module")
def toy():
    registry.register(ModelSpec(name="toy", task="talking-face", paper="Toy et al., a test, 2026",
                                pipeline=ToyPipeline))
    yield "toy"
    registry.unregister("toy")


@pytest.fixture(scope="module")
def served(toy, tmp_path_factory):
    """(client, settings) of the real app with one worker thread serving every model, the toy included."""
    settings = make_settings(tmp_path_factory.mktemp("plugin"), tmp_path_factory.mktemp("weights"))
    with serving(settings, Worker(settings, models=[toy])) as client:
        yield client, settings


def mean_level(path):
    frames = np.concatenate(list(media.read_video(path)))
    return len(frames), float(frames.mean())


def test_the_cli_generates_with_the_plugin_and_its_declared_option(toy, tmp_path, capsys):
    out = tmp_path / "toy.mp4"
    code = main(["generate", "--model", toy, "--image", str(EXAMPLES / "face.jpg"), "--audio",
                 str(EXAMPLES / "speech.wav"), "--tint", "40", "-o", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    plain = tmp_path / "plain.mp4"
    assert main(["generate", "--model", toy, "--image", str(EXAMPLES / "face.jpg"), "--audio",
                 str(EXAMPLES / "speech.wav"), "-o", str(plain), "-q"]) == 0
    (frames, tinted), (_, untinted) = mean_level(out), mean_level(plain)
    assert frames > 25 and 35 < tinted - untinted < 45
    capsys.readouterr()
    assert main(["generate", "--model", toy, "--image", str(EXAMPLES / "face.jpg"), "--audio",
                 str(EXAMPLES / "speech.wav"), "--tint", "101", "-o", str(tmp_path / "x.mp4"), "-q"]) == 2
    assert "tint must be a whole number from 0 to 100" in capsys.readouterr().err
    assert main(["generate", "--model", toy, "--image", str(EXAMPLES / "face.jpg"), "--audio",
                 str(EXAMPLES / "speech.wav"), "--finetune-steps", "1", "-o", str(tmp_path / "y.mp4"), "-q"]) == 2
    assert "--finetune-steps applies to davs, not toy" in capsys.readouterr().err


def test_the_rest_form_passes_the_plugins_option_and_checks_it(served, tmp_path):
    client, _ = served
    files = {"image": ("face.jpg", FACE), "audio": ("a.wav", wav_bytes(1.0))}
    r = client.post("/v1/talking-face", files=files, data={"model": "toy", "tint": "30", "wait": "60"})
    assert r.status_code == 200, r.text
    (tmp_path / "form.mp4").write_bytes(r.content)
    frames, level = mean_level(tmp_path / "form.mp4")
    assert frames == 25
    job = client.get(r.headers["location"]).json()
    assert job["model"] == "toy" and job["options"] == {"tint": 30}
    assert_error(client.post("/v1/talking-face", files=files, data={"model": "toy", "tint": "101"}),
                 422, "validation_error")
    assert_error(client.post("/v1/talking-face", files=files, data={"model": "toy", "finetune_steps": "1"}),
                 400, "invalid_input")


def test_the_jobs_api_runs_the_plugin_on_a_worker(served):
    client, _ = served
    image = upload(client, FACE, "f.jpg")["id"]
    voice = upload(client, wav_bytes(0.8), "a.wav")["id"]
    r = client.post("/v1/jobs", json={"model": "toy", "inputs": {"image": image, "audio": voice},
                                      "options": {"tint": 5, "seed": 3}})
    assert r.status_code == 202, r.text
    job = wait_for(client, r.json()["id"])
    assert job["status"] == "succeeded" and job["frames"] == 20 and job["info"]["weights"] == "none"
    assert_error(client.post("/v1/jobs", json={"model": "toy", "inputs": {"image": image, "audio": voice},
                                               "options": {"tint": "lots"}}), 422, "validation_error")


def test_models_lists_the_plugin_with_its_declaration(served):
    client, _ = served
    toy = {m["id"]: m for m in client.get("/v1/models").json()["data"]}["toy"]
    assert toy["task"] == "talking-face" and toy["accepts_video"] is False and toy["ready"] is True
    options = {o["name"]: o for o in toy["options"]}
    assert set(options) == {"paste_back", "face_index", "seed", "tint"}
    assert options["tint"] | {} == {"name": "tint", "type": "int", "default": 0, "minimum": 0, "maximum": 100,
                                     "help": "grey levels added to every frame", "choices": None}
    assert [w["id"] for w in toy["workers"]], "the worker serving the toy is listed"


def test_the_dashboard_shows_the_plugin(served, chromium, tmp_path):  # noqa: F811
    _, settings = served
    with serving_http(create_app(settings), lifespan="on") as url:
        dom = dump_dom(chromium, f"{url}/dashboard", tmp_path / "chromium")
    rows = dom.by_id("models").find_all("tr", data_model_id="toy")
    assert len(rows) == 1 and "tint=0" in rows[0].text() and "image + audio" in rows[0].text()
