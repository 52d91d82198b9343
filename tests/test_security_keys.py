"""API keys: tenants isolated on every route, scopes, keys kept hashed, `keys create`, the bind refusal.

Two keys A and B share one server with a real worker; everything A makes is, for B, as if
it did not exist (404, never 403; left out of lists), on every route. An ``admin`` key sees
and acts on everything; a ``metrics`` key reads ``/metrics``, which no other key may.
"""

import hashlib
import json
import time

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.app import create_app
from service.cli import main
from service.jobs.worker import Worker
from service.settings import Settings
from tests.test_api import FACE, assert_error, make_settings, serving, wav_bytes

KEY_A, KEY_B = "tfk_tenant-a", "tfk_tenant-b"
KEY_ADMIN, KEY_METRICS = "tfk_the-operator", "tfk_the-scraper"


def entry(key, *scopes):
    """The settings entry of ``key``, as `talkingface keys create` prints it."""
    return ":".join(["sha256", hashlib.sha256(key.encode()).hexdigest()] + (["+".join(scopes)] if scopes else []))


def auth(key):
    return {"Authorization": f"Bearer {key}"}


A, B, ADMIN, METRICS = auth(KEY_A), auth(KEY_B), auth(KEY_ADMIN), auth(KEY_METRICS)


@pytest.fixture(scope="module")
def tenants(tmp_path_factory, seeded_project_dir):
    """A client of an app with keys A (plain, as older settings give them), B, admin and metrics, and a worker."""
    settings = make_settings(tmp_path_factory.mktemp("tenants"), seeded_project_dir,
                             api_keys=f"{KEY_A},{entry(KEY_B)},{entry(KEY_ADMIN, 'admin')},"
                                      f"{entry(KEY_METRICS, 'metrics')}")
    with serving(settings, Worker(settings)) as client:
        yield client


def upload_as(client, headers, data, name):
    r = client.post("/v1/files", files={"file": (name, data)}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture(scope="module")
def a_made(tenants):
    """What A made: two files, a finished job with a result, a batch."""
    client = tenants
    image, audio = upload_as(client, A, FACE, "f.jpg"), upload_as(client, A, wav_bytes(0.5), "a.wav")
    r = client.post("/v1/jobs", json={"inputs": {"image": image, "audio": audio}}, headers=A)
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    deadline = time.monotonic() + 120
    while client.get(f"/v1/jobs/{job}", headers=A).json()["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, "A's job did not finish"
        time.sleep(0.05)
    assert client.get(f"/v1/jobs/{job}", headers=A).json()["status"] == "succeeded"
    batch = client.post("/v1/batches", json={"jobs": [{"inputs": {"image": image, "audio": audio}}]}, headers=A)
    assert batch.status_code == 202, batch.text
    return {"image": image, "audio": audio, "job": job, "batch": batch.json()["id"],
            "batch_job": client.get(f"/v1/jobs?batch_id={batch.json()['id']}", headers=A).json()["data"][0]["id"]}


def test_another_key_gets_404_for_every_route_of_a_job(tenants, a_made):
    client, job = tenants, a_made["job"]
    for method, path, kwargs in [
        ("GET", f"/v1/jobs/{job}", {}),
        ("GET", f"/v1/jobs/{job}/result", {}),
        ("GET", f"/v1/jobs/{job}/result", {"headers": {"Range": "bytes=0-99"}}),
        ("GET", f"/v1/jobs/{job}/events", {}),
        ("POST", f"/v1/jobs/{a_made['batch_job']}/cancel", {}),
        ("DELETE", f"/v1/jobs/{job}", {}),
        ("GET", f"/v1/batches/{a_made['batch']}", {}),
        ("GET", f"/v1/files/{a_made['image']}", {}),
        ("DELETE", f"/v1/files/{a_made['audio']}", {}),
    ]:
        headers = {**B, **kwargs.get("headers", {})}
        r = client.request(method, path, headers=headers)
        assert_error(r, 404, "not_found")
        # The same answer as for an id that does not exist: nothing tells B that A's exists.
        missing = client.request(method, path.replace(path.split("/")[3], "job_0000"), headers=headers)
        assert r.json()["error"]["message"].split()[:2] == missing.json()["error"]["message"].split()[:2]
    head = client.head(f"/v1/jobs/{job}/result", headers=B)
    assert head.status_code == 404 and not head.content
    # Nothing of A's was changed by B's attempts.
    assert client.get(f"/v1/jobs/{job}/result", headers=A).status_code == 200
    assert client.get(f"/v1/files/{a_made['audio']}", headers=A).status_code == 200
    assert client.get(f"/v1/jobs/{a_made['batch_job']}", headers=A).json()["cancel_requested"] is False


def test_another_keys_files_are_refused_as_inputs_like_missing_ones(tenants, a_made):
    client = tenants
    own_audio = upload_as(client, B, wav_bytes(0.5), "b.wav")
    r = client.post("/v1/jobs", json={"inputs": {"image": a_made["image"], "audio": own_audio}}, headers=B)
    assert_error(r, 404, "file_not_found")
    assert r.json()["error"]["message"] == f"inputs.image: no file {a_made['image']}"
    r = client.post("/v1/batches", json={"jobs": [{"inputs": {"image": a_made["image"], "audio": own_audio}}]},
                    headers=B)
    assert_error(r, 404, "file_not_found")
    assert client.get("/v1/jobs", headers=B).json()["data"] == []        # nothing was queued


def test_lists_and_cursors_keep_to_the_callers_jobs(tenants, a_made):
    client = tenants
    image, audio = upload_as(client, B, FACE, "f.jpg"), upload_as(client, B, wav_bytes(0.5), "b.wav")
    b_job = client.post("/v1/jobs", json={"inputs": {"image": image, "audio": audio}}, headers=B).json()["id"]
    b_ids = [j["id"] for j in client.get("/v1/jobs?limit=200", headers=B).json()["data"]]
    assert b_job in b_ids and not {a_made["job"], a_made["batch_job"]} & set(b_ids)
    assert client.get(f"/v1/jobs?batch_id={a_made['batch']}", headers=B).json()["data"] == []
    a_ids = [j["id"] for j in client.get("/v1/jobs?limit=200", headers=A).json()["data"]]
    assert a_made["job"] in a_ids and b_job not in a_ids
    # A cursor naming another key's job is refused as an unknown one is.
    unknown = client.get("/v1/jobs?after=job_0000", headers=B)
    assert_error(unknown, 400, "invalid_input")
    foreign = client.get(f"/v1/jobs?after={a_made['job']}", headers=B)
    assert_error(foreign, 400, "invalid_input")
    assert foreign.json()["error"]["message"].replace(a_made["job"], "job_0000") == unknown.json()["error"]["message"]
    # Stats count the caller's jobs only.
    stats_b = client.get("/v1/stats?minutes=10", headers=B).json()
    assert sum(m["succeeded"] for m in stats_b["series"]) == 0
    assert sum(m["succeeded"] for m in client.get("/v1/stats?minutes=10", headers=A).json()["series"]) >= 1
    wait_for_as(client, B, b_job)


def wait_for_as(client, headers, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while (job := client.get(f"/v1/jobs/{job_id}", headers=headers).json())["status"] not in (
            "succeeded", "failed", "canceled"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return job


def test_an_admin_key_sees_and_acts_on_every_keys_jobs(tenants, a_made):
    client = tenants
    ids = [j["id"] for j in client.get("/v1/jobs?limit=200", headers=ADMIN).json()["data"]]
    assert a_made["job"] in ids
    assert client.get(f"/v1/jobs/{a_made['job']}/result", headers=ADMIN).status_code == 200
    assert client.get(f"/v1/batches/{a_made['batch']}", headers=ADMIN).status_code == 200
    assert client.get(f"/v1/files/{a_made['image']}", headers=ADMIN).status_code == 200
    # A job the admin makes from A's files is the admin's: A does not see it.
    r = client.post("/v1/jobs", json={"inputs": {"image": a_made["image"], "audio": a_made["audio"]}},
                    headers=ADMIN)
    assert r.status_code == 202, r.text
    assert_error(client.get(f"/v1/jobs/{r.json()['id']}", headers=A), 404, "not_found")
    client.post(f"/v1/jobs/{r.json()['id']}/cancel", headers=ADMIN)


def test_events_stream_of_the_own_job(tenants, a_made):
    r = tenants.get(f"/v1/jobs/{a_made['job']}/events", headers=A)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert json.loads(r.text.split("data: ", 1)[1].split("\n")[0])["status"] == "succeeded"


def test_one_call_jobs_belong_to_their_key(tenants):
    client = tenants
    r = client.post("/v1/talking-face", files={"image": ("f.jpg", FACE), "audio": ("a.wav", wav_bytes(0.5))},
                    data={"wait": "0"}, headers=B)
    assert r.status_code in (200, 202), r.text
    job_id = r.headers["location"].rsplit("/", 1)[1]
    assert_error(client.get(f"/v1/jobs/{job_id}", headers=A), 404, "not_found")
    image_id = client.get(f"/v1/jobs/{job_id}", headers=B).json()["inputs"]["image"]
    assert_error(client.get(f"/v1/files/{image_id}", headers=A), 404, "not_found")
    wait_for_as(client, B, job_id)


def test_metrics_needs_the_metrics_or_admin_scope(tenants):
    client = tenants
    assert_error(client.get("/metrics"), 401, "unauthorized")
    assert_error(client.get("/metrics", headers=auth("tfk_wrong")), 401, "unauthorized")
    assert_error(client.get("/metrics", headers=A), 403, "forbidden")
    for headers in (METRICS, ADMIN):
        r = client.get("/metrics", headers=headers)
        assert r.status_code == 200 and "talkingface_jobs_submitted_total" in r.text


def test_docs_and_schema_need_a_key_probes_and_the_dashboard_page_do_not(tenants):
    client = tenants
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert_error(client.get(path), 401, "unauthorized")
        assert_error(client.get(f"{path}?key=tfk_wrong"), 401, "unauthorized")
        assert client.get(path, headers=A).status_code == 200
        assert client.get(f"{path}?key={KEY_A}").status_code == 200        # a browser opens the page so
    # The page hands its key on to the schema it loads.
    assert f"/openapi.json?key={KEY_A}" in client.get(f"/docs?key={KEY_A}").text
    assert "HTTPBearer" in client.get("/openapi.json", headers=A).json()["components"]["securitySchemes"]
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)
    assert client.get("/dashboard").status_code == 200
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200
    for path in ("/v1/jobs", "/v1/workers", "/v1/stats", "/v1/models"):
        assert_error(client.get(path), 401, "unauthorized")
        assert client.get(path, headers=A).status_code == 200


@pytest.mark.parametrize("authorization", [
    "Bearer ключ".encode(), b"Bearer \xff\xfe", b"Bearer", b"Bearer ", b"Basic dGZrOnRmaw==",
    f"Bearer {KEY_A} extra".encode(), f"bearer{KEY_A}".encode(), b"\xd0\xba\xd0\xbb",
])
def test_malformed_or_non_ascii_authorization_is_401(tenants, authorization):
    r = tenants.get("/v1/jobs", headers={"Authorization": authorization})
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"


def test_a_repeated_authorization_header_is_401(tenants):
    r = tenants.get("/v1/jobs", headers=[("Authorization", f"Bearer {KEY_A}"), ("Authorization", f"Bearer {KEY_B}")])
    assert_error(r, 401, "unauthorized")


def test_keys_are_kept_as_hashes_with_their_scopes(tmp_path):
    settings = Settings(data_dir=tmp_path, api_keys=f" {KEY_A} ,{entry(KEY_B, 'metrics', 'admin')}")
    assert settings.api_keys == [entry(KEY_A), entry(KEY_B, "admin", "metrics")]
    assert KEY_A not in settings.model_dump_json()
    # Workers get the settings as JSON: the entries read back unchanged.
    assert Settings.model_validate_json(settings.model_dump_json()).api_keys == settings.api_keys
    for bad, said in [("sha256:abc", "malformed"), (entry(KEY_A, "root"), "unknown API key scope 'root'"),
                      ("ключ", "printable ASCII")]:
        with pytest.raises(ValidationError, match=said):
            Settings(data_dir=tmp_path, api_keys=bad)


def test_a_bad_keys_setting_is_one_line_naming_the_setting_not_the_keys(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TALKINGFACE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TALKINGFACE_API_KEYS", "tfk_secret-one,sha256:nothex")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: TALKINGFACE_API_KEYS: ") and err.count("\n") == 1 and "tfk_secret-one" not in err


def test_keys_create_prints_a_new_key_once_and_the_entry_that_lets_it_in(tmp_path, capsys):
    assert main(["keys", "create", "--scope", "admin", "--scope", "metrics"]) == 0
    key, line = capsys.readouterr().out.splitlines()
    assert key.startswith("tfk_") and len(key) > 40 and line.startswith("settings entry: ")
    setting = line.removeprefix("settings entry: ")
    assert setting == entry(key, "admin", "metrics")
    assert main(["keys", "create"]) == 0
    other, other_line = capsys.readouterr().out.splitlines()
    assert other != key and other_line == f"settings entry: {entry(other)}"
    with TestClient(create_app(Settings(data_dir=tmp_path, api_keys=f"{setting},{entry(other)}"))) as client:
        assert client.get("/metrics", headers=auth(key)).status_code == 200
        assert client.get("/v1/jobs", headers=auth(other)).status_code == 200
        assert_error(client.get("/metrics", headers=auth(other)), 403, "forbidden")


@pytest.fixture
def serve_calls(monkeypatch, tmp_path):
    """Runs ``talkingface serve`` up to the point it would listen; returns the hosts it would have served."""
    from service import server

    calls = []
    monkeypatch.setattr(server, "run", lambda app, settings: calls.append(settings.host))
    monkeypatch.setenv("TALKINGFACE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("TALKINGFACE_API_KEYS", raising=False)
    monkeypatch.delenv("TALKINGFACE_INSECURE", raising=False)
    return calls


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "example.com"])
def test_serve_without_keys_refuses_addresses_beyond_loopback(serve_calls, host, capsys):
    assert main(["serve", "--host", host, "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: refusing to serve on {host} without API keys") and err.count("\n") == 1
    assert "--insecure" in err and serve_calls == []


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_serve_without_keys_binds_to_loopback(serve_calls, host):
    assert main(["serve", "--host", host, "--workers", "0"]) == 0
    assert serve_calls == [host]


def test_serve_beyond_loopback_with_keys_or_when_told_insecure(serve_calls, monkeypatch):
    assert main(["serve", "--host", "0.0.0.0", "--workers", "0", "--insecure"]) == 0
    monkeypatch.setenv("TALKINGFACE_INSECURE", "1")
    assert main(["serve", "--host", "0.0.0.0", "--workers", "0"]) == 0
    monkeypatch.delenv("TALKINGFACE_INSECURE")
    monkeypatch.setenv("TALKINGFACE_API_KEYS", entry(KEY_A))
    assert main(["serve", "--host", "0.0.0.0", "--workers", "0"]) == 0
    assert serve_calls == ["0.0.0.0"] * 3
