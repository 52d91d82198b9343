"""PG2 inference end to end: the pipeline on small seeded generators, the CLI and the REST route.

The generators are narrow (``channels_base`` 8) at the Market-1501 size, written as a
project weights folder; nothing here needs the released weights.
"""

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from models import PoseTransferInput, registry
from models.common.pipeline import save_project
from models.errors import InvalidInput
from models.perception import pose as pose_lib
from models.pg2 import pipeline as pg2_pipeline
from models.pg2.networks import ImageRefinementGenerator, PoseIntegrationGenerator
from service.jobs.worker import Worker
from tests.conftest import EXAMPLES
from tests.test_api import make_settings, serving

SIZE = (128, 64)


def standing(height=256, width=128, arm=0.0):
    """COCO-18 keypoints (x, y, c) of an upright person in a (height, width) frame; ``arm`` raises the right arm."""
    w, h = width, height
    points = {0: (0.5, 0.12), 1: (0.5, 0.22), 2: (0.38, 0.22), 3: (0.34, 0.36 - arm), 4: (0.32, 0.48 - 2 * arm),
              5: (0.62, 0.22), 6: (0.66, 0.36), 7: (0.68, 0.48), 8: (0.43, 0.52), 9: (0.43, 0.72),
              10: (0.43, 0.92), 11: (0.57, 0.52), 12: (0.57, 0.72), 13: (0.57, 0.92), 14: (0.47, 0.10),
              15: (0.53, 0.10), 16: (0.44, 0.11), 17: (0.56, 0.11)}
    keypoints = np.zeros((18, 3))
    for k, (x, y) in points.items():
        keypoints[k] = (x * (w - 1), y * (h - 1), 0.9)
    return keypoints


def person(height=256, width=128, seed=0):
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 200, np.uint8)
    image[height // 5: height - 10, width // 4: 3 * width // 4] = rng.integers(0, 255, 3)
    return image


@pytest.fixture(scope="module")
def pg2_dir(tmp_path_factory):
    torch.manual_seed(0)
    g1 = PoseIntegrationGenerator(channels_base=8, image_size=SIZE)
    g2 = ImageRefinementGenerator(channels_base=8)
    folder = tmp_path_factory.mktemp("pg2")
    return save_project(folder, "pg2", {"g1": g1, "g2": g2}, name="seeded test weights",
                        extra={"pose_encoding": "authors", "image_size": list(SIZE)})


@pytest.fixture(scope="module")
def pipe(pg2_dir):
    return registry.load("pg2", weights=pg2_dir, device="cpu")


def test_transfer_draws_the_networks_output(pipe):
    inputs = PoseTransferInput(image=person(), pose=standing(), pose_size=(256, 128))
    image = pipe(inputs)
    assert image.shape == (*SIZE, 3) and image.dtype == np.uint8
    # The same sum G2(x, G1(x, P)) + G1(x, P), computed here from the same networks.
    variant = pipe.pick()
    x, pose = pipe.prepare(inputs, variant)
    with torch.no_grad():
        coarse = variant.g1(x, pose)
        expected = (variant.g2(x, coarse) + coarse)[0].clamp(-1, 1).add(1).mul(127.5).round().byte()
    np.testing.assert_array_equal(image, expected.permute(1, 2, 0).numpy())
    assert pipe.info["weights"] == "seeded test weights"


def test_pose_decides_the_output(pipe):
    a = pipe(PoseTransferInput(image=person(), pose=standing(), pose_size=(256, 128)))
    b = pipe(PoseTransferInput(image=person(), pose=standing(arm=0.15), pose_size=(256, 128)))
    again = pipe(PoseTransferInput(image=person(), pose=standing(), pose_size=(256, 128)))
    np.testing.assert_array_equal(a, again)
    assert np.abs(a.astype(int) - b.astype(int)).max() > 0


def test_pose_channels_are_the_authors_encoding_of_the_fitted_keypoints(pipe):
    keypoints = standing()
    _, pose = pipe.prepare(PoseTransferInput(image=person(), pose=keypoints, pose_size=(256, 128)), pipe.pick())
    fitted = pg2_pipeline.fit_keypoints(keypoints, (256, 128), SIZE)
    expected = pose_lib.pg2_pose_map(pose_lib.keypoints_to_rc(fitted), SIZE).transpose(2, 0, 1)
    np.testing.assert_array_equal(pose[0].numpy(), expected.astype(np.float32))


def test_fit_moves_keypoints_with_the_pixels():
    image = np.zeros((300, 100, 3), np.uint8)
    image[150:160, 40:50] = 255                              # a white square centred at (44.5, 154.5)
    fitted = pg2_pipeline.fit_image(image, SIZE)
    [[x, y, _]] = pg2_pipeline.fit_keypoints(np.array([[44.5, 154.5, 1.0]]), (300, 100), SIZE)
    assert fitted[int(round(y)), int(round(x))].min() > 200
    assert fitted.shape == (*SIZE, 3)
    # Centred: a frame twice as wide as tall fills the width, padded above and below.
    scale, dx, dy = pg2_pipeline.fit_transform((50, 100), SIZE)
    assert (scale, dx, dy) == (0.64, 0.0, 48.0)


def test_bad_requests(pipe):
    with pytest.raises(InvalidInput, match="no keypoint"):
        pipe(PoseTransferInput(image=person(), pose=np.zeros((18, 3)), pose_size=(256, 128)))
    with pytest.raises(InvalidInput, match="variant"):
        pipe(PoseTransferInput(image=person(), pose=standing(), pose_size=(256, 128)), variant="deepfashion")
    with pytest.raises(InvalidInput):
        pipe(PoseTransferInput(image=person(), pose=np.zeros((17, 3)), pose_size=(256, 128)))


def png_bytes(image):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_cli_generates_a_png(pg2_dir, tmp_path):
    (tmp_path / "person.png").write_bytes(png_bytes(person()))
    (tmp_path / "pose.json").write_text(pose_lib.to_openpose_json(standing()))
    out = tmp_path / "out.png"
    run = subprocess.run([sys.executable, "-m", "service.cli", "generate", "--model", "pg2", "--image",
                          str(tmp_path / "person.png"), "--pose", str(tmp_path / "pose.json"), "-o", str(out),
                          "--weights", str(pg2_dir), "--device", "cpu"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    image = Image.open(out)
    assert image.size == (64, 128) and "talkingface pg2" in image.info["Comment"]
    # A talking-face input for a pose model, and a pose model without its pose: one error line each.
    for extra, message in ((["--audio", str(tmp_path / "pose.json")], "--audio is not an input of pose-transfer"),
                           ([], "pg2 needs --pose")):
        args = ["generate", "--model", "pg2", "--image", str(tmp_path / "person.png"), "-o", str(out), *extra]
        run = subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True)
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr, run.stderr


@pytest.fixture(scope="module")
def served(tmp_path_factory, pg2_dir):
    settings = make_settings(tmp_path_factory.mktemp("pose-api"), pg2_dir)
    with serving(settings, Worker(settings, models=["pg2"])) as client:
        yield client, settings


def test_pose_transfer_route(served):
    client, _ = served
    files = {"image": ("person.png", png_bytes(person())),
             "pose": ("pose.json", pose_lib.to_openpose_json(standing()).encode())}
    r = client.post("/v1/pose-transfer", files=files, data={"wait": "60"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (64, 128)
    job = client.get(r.headers["Location"]).json()
    assert job["status"] == "succeeded" and job["model"] == "pg2"
    again = client.get(f"/v1/jobs/{job['id']}/result")
    assert again.status_code == 200 and again.headers["content-type"] == "image/png"
    assert again.content == r.content


def test_pose_transfer_route_refuses_bad_input(served):
    client, _ = served
    image = ("person.png", png_bytes(person()))
    cases = [
        ({"image": image, "pose": ("pose.json", b'{"people": [{"pose_keypoints_2d": [1, 2]}]}')}, {}, 415),
        ({"image": image, "pose": ("pose.json", b'{"people": ')}, {}, 415),
        ({"image": image}, {}, 422),
        ({"image": image, "pose": ("pose.json", pose_lib.to_openpose_json(standing()).encode())},
         {"variant": "tiny"}, 422),
        ({"image": image, "pose": ("pose.json", pose_lib.to_openpose_json(standing()).encode())},
         {"model": "atvgnet"}, 400),
    ]
    for files, data, status in cases:
        r = client.post("/v1/pose-transfer", files=files, data=data)
        assert r.status_code == status, (data, r.text)
        assert "error" in r.json()


def test_pose_jobs_through_the_jobs_api(served):
    client, _ = served
    person_id = client.post("/v1/files", files={"file": ("p.png", png_bytes(person()))}).json()["id"]
    pose = client.post("/v1/files", files={"file": ("pose.json", pose_lib.to_openpose_json(standing()).encode())})
    assert pose.status_code == 201 and pose.json()["kind"] == "pose"
    r = client.post("/v1/jobs", json={"task": "pose-transfer", "model": "pg2",
                                      "inputs": {"image": person_id, "pose": pose.json()["id"]}})
    assert r.status_code == 202, r.text
    # Inputs of another task, a pose given as audio, or no pose: 400 before anything is queued.
    for inputs in ({"image": person_id, "audio": person_id}, {"image": person_id}):
        r = client.post("/v1/jobs", json={"task": "pose-transfer", "model": "pg2", "inputs": inputs})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_input", r.text
    r = client.post("/v1/jobs", json={"task": "talking-face", "model": "pg2",
                                      "inputs": {"image": person_id, "audio": person_id}})
    assert r.status_code == 400 and "does not do talking-face" in r.json()["error"]["message"]
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert models["pg2"]["task"] == "pose-transfer" and models["pg2"]["result"] == "image/png"
    assert models["pg2"]["inputs"] == {"image": ["image"], "pose": ["pose", "image"]}
    assert [o["name"] for o in models["pg2"]["options"]] == ["seed", "variant"]
    assert json.loads(json.dumps(models["pg2"]))     # serialisable as it is


def test_pose_taken_from_a_photo(served):
    """A photo as the pose: MediaPipe's keypoints of the astronaut photo (shipped with scikit-image)."""
    from skimage import data

    client, _ = served
    files = {"image": ("person.png", png_bytes(person())), "pose": ("astronaut.png", png_bytes(data.astronaut()))}
    r = client.post("/v1/pose-transfer", files=files, data={"wait": "60"})
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == (64, 128)
    # A photo with nobody in it: the job fails with a clear error, not a 500.
    blank = np.full((256, 128, 3), 127, np.uint8)
    r = client.post("/v1/pose-transfer", files={"image": ("person.png", png_bytes(person())),
                                                "pose": ("blank.png", png_bytes(blank))}, data={"wait": "60"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input", r.text


def test_the_ports_release_loads_with_its_own_pose_encoding(tmp_path, monkeypatch):
    """``G1.pth`` / ``G2.pth`` as the port saves them (plain state dicts) load as the market
    variant and read ``port_pose_map``'s heat maps; a converted ``deepfashion/`` folder beside
    them is a second variant. Narrow networks stand in for the published widths."""
    import functools

    small_g1 = functools.partial(PoseIntegrationGenerator, channels_base=8)
    small_g2 = functools.partial(ImageRefinementGenerator, channels_base=8)
    monkeypatch.setattr(pg2_pipeline, "PoseIntegrationGenerator", small_g1)
    monkeypatch.setattr(pg2_pipeline, "ImageRefinementGenerator", small_g2)
    torch.manual_seed(1)
    torch.save(small_g1().state_dict(), tmp_path / "G1.pth")
    torch.save({f"module.{k}": v for k, v in small_g2().state_dict().items()}, tmp_path / "G2.pth")
    square = {"g1": PoseIntegrationGenerator(channels_base=8, num_repeat=6, image_size=(256, 256)),
              "g2": ImageRefinementGenerator(channels_base=8, num_repeat=4, num_skip_out_connect=0)}
    save_project(tmp_path / "deepfashion", "pg2", square, name="converted", extra={"pose_encoding": "authors"})

    pipe = pg2_pipeline.PG2Pipeline.from_pretrained(tmp_path, device="cpu")
    assert list(pipe.variants) == ["market", "deepfashion"]
    market = pipe.pick()
    assert market.pose_encoding == "port" and market.size == SIZE
    inputs = PoseTransferInput(image=person(), pose=standing(), pose_size=(256, 128))
    _, pose = pipe.prepare(inputs, market)
    fitted = pg2_pipeline.fit_keypoints(standing(), (256, 128), SIZE)
    expected = pose_lib.port_pose_map(pose_lib.keypoints_to_rc(fitted), SIZE).transpose(2, 0, 1)
    np.testing.assert_array_equal(pose[0].numpy(), expected)
    assert pipe(inputs).shape == (*SIZE, 3)
    assert pipe(inputs, variant="deepfashion").shape == (256, 256, 3)
    # Without the files, the error names them.
    with pytest.raises(Exception, match="G1.pth"):
        pg2_pipeline.PG2Pipeline.from_pretrained(tmp_path / "deepfashion" / "nothing", device="cpu")


def test_the_demo_weights_answer_out_of_the_box(tmp_path, monkeypatch):
    """With no weights of the user's, POST /v1/pose-transfer answers with the shipped demo weights."""
    monkeypatch.setenv("TALKINGFACE_WEIGHTS_DIR", str(tmp_path / "no-weights"))    # none of the authors'
    settings = make_settings(tmp_path, None)
    with serving(settings, Worker(settings, models=["pg2"])) as client:
        files = {"image": ("person.png", (EXAMPLES / "person.png").read_bytes()),
                 "pose": ("pose.json", (EXAMPLES / "pose.json").read_bytes())}
        r = client.post("/v1/pose-transfer", files=files, data={"wait": "120"})
        assert r.status_code == 200, r.text
        image = Image.open(io.BytesIO(r.content))
        assert image.size == (64, 128) and "demo" in image.info["Comment"]
