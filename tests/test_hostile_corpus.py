"""A corpus of hostile requests, each with the status and error code it must get.

One server with two tenants' keys and a worker; tenant A has a finished job, files and a
batch. Every case below is made here (nothing is downloaded) and sent by tenant B or by
nobody; each must answer its 4xx with the JSON error shape and no stack trace, and after the
whole corpus the server is healthy and A's things are intact. The deeper tests of each
point live beside it: keys (test_security_keys.py), requests on the wire
(test_security_requests.py), webhooks (test_webhook_ssrf.py), uploads' memory
(test_upload_memory.py), full disks (test_storage_faults.py), the schema fuzz
(test_schema_fuzz.py).
"""

import json
import struct
import zlib

import pytest

from tests.test_api import FACE, assert_error, make_settings, serving, wav_bytes
from tests.test_security_keys import KEY_A, KEY_B, A, B, a_made, entry, upload_as  # noqa: F401 (a fixture)

IMAGES = {"task": "image-generation", "model": "dcgan"}     # a job that needs no upload
NON_ASCII_BEARER = {"Authorization": "Bearer clé-ünïcode".encode()}


def png_header(width, height):
    """A PNG whose header claims width x height and whose data is a few bytes (a pixel bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def tenants(tmp_path_factory, seeded_project_dir):
    from service.jobs.worker import Worker
    settings = make_settings(tmp_path_factory.mktemp("corpus"), seeded_project_dir,
                             api_keys=f"{entry(KEY_A)},{entry(KEY_B)}", max_upload_bytes=2_000_000,
                             max_image_pixels=4_000_000, max_audio_seconds=30.0)
    with serving(settings, Worker(settings)) as client:
        yield client


def corpus(made):
    """(name, method, path, request keywords, status, error code[, words of the message]); B or nobody sends each."""
    job, image, audio, batch = made["job"], made["image"], made["audio"], made["batch"]
    no_key, wrong_key = {"Authorization": None}, {"Authorization": "Bearer tfk_guessed"}
    return [
        # 1. tenants
        ("no key", "GET", "/v1/jobs", {"headers": no_key}, 401, "unauthorized"),
        ("wrong key", "GET", "/v1/jobs", {"headers": wrong_key}, 401, "unauthorized"),
        ("basic auth instead of a key", "GET", "/v1/jobs", {"headers": {"Authorization": "Basic dTpw"}},
         401, "unauthorized"),
        ("non-ASCII bearer", "GET", "/v1/jobs", {"headers": NON_ASCII_BEARER}, 401, "unauthorized"),
        ("another key's job", "GET", f"/v1/jobs/{job}", {}, 404, "not_found"),
        ("another key's result", "GET", f"/v1/jobs/{job}/result", {}, 404, "not_found"),
        ("another key's result, ranged", "GET", f"/v1/jobs/{job}/result", {"headers": {"Range": "bytes=0-9"}},
         404, "not_found"),
        ("another key's events", "GET", f"/v1/jobs/{job}/events", {}, 404, "not_found"),
        ("cancel another key's job", "POST", f"/v1/jobs/{job}/cancel", {}, 404, "not_found"),
        ("delete another key's job", "DELETE", f"/v1/jobs/{job}", {}, 404, "not_found"),
        ("another key's batch", "GET", f"/v1/batches/{batch}", {}, 404, "not_found"),
        ("another key's file", "GET", f"/v1/files/{image}", {}, 404, "not_found"),
        ("delete another key's file", "DELETE", f"/v1/files/{audio}", {}, 404, "not_found"),
        ("another key's files as inputs", "POST", "/v1/jobs", {"json": {"inputs": {"image": image, "audio": audio}}},
         404, "file_not_found"),
        ("another key's job as a cursor", "GET", f"/v1/jobs?after={job}", {}, 400, "invalid_input"),
        ("metrics without the scope", "GET", "/metrics", {}, 403, "forbidden"),
        ("schema without a key", "GET", "/openapi.json", {"headers": no_key}, 401, "unauthorized"),
        # ids and paths
        ("path traversal id", "GET", "/v1/jobs/..%2F..%2Fetc%2Fpasswd", {}, 404, "not_found"),
        ("file id with a NUL", "GET", "/v1/files/file_%00", {}, 404, "not_found"),
        # 2. bodies and sizes
        ("declared body over the limit", "POST", "/v1/files",
         {"content": b"x" * 16, "headers": {"Content-Type": "multipart/form-data; boundary=x",
                                            "Content-Length": str(10**10)}}, 413, "payload_too_large"),
        ("JSON that is not JSON", "POST", "/v1/jobs",
         {"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 422, "validation_error"),
        ("JSON nested 10,000 deep", "POST", "/v1/jobs",
         {"content": b"[" * 10000 + b"]" * 10000, "headers": {"Content-Type": "application/json"}},
         400, "invalid_input"),
        ("upload without a file field", "POST", "/v1/files", {"files": {"other": ("a.txt", b"x")}},
         422, "validation_error"),
        ("empty upload", "POST", "/v1/files", {"files": {"file": ("a.png", b"")}}, 400, "invalid_input"),
        ("upload over max_upload_bytes", "POST", "/v1/files", {"files": {"file": ("a.wav", b"\0" * 2_100_000)}},
         413, "too_large"),
        ("text named .png", "POST", "/v1/files", {"files": {"file": ("a.png", b"hello, I am text")}},
         415, "unsupported_media"),
        # 3. memory: headers that claim more than the data holds
        ("PNG claiming 100000x100000", "POST", "/v1/files", {"files": {"file": ("bomb.png", png_header(10**5, 10**5))}},
         413, "too_large"),
        ("PNG over the pixel cap", "POST", "/v1/files", {"files": {"file": ("big.png", png_header(3000, 3000))}},
         413, "too_large"),
        ("truncated PNG", "POST", "/v1/files", {"files": {"file": ("cut.png", png_header(64, 64)[:40])}},
         415, "unsupported_media"),
        ("audio over max_audio_seconds", "POST", "/v1/files", {"files": {"file": ("long.wav", wav_bytes(31, 8000))}},
         422, "invalid_input", "'long.wav' is longer than 30 s"),
        # 4. webhooks
        ("webhook to loopback", "POST", "/v1/jobs", {"json": {**IMAGES, "webhook": {"url": "http://127.0.0.1/x"}}},
         422, "validation_error"),
        ("webhook to cloud metadata", "POST", "/v1/jobs",
         {"json": {**IMAGES, "webhook": {"url": "http://169.254.169.254/latest/meta-data/"}}},
         422, "validation_error"),
        ("webhook with credentials", "POST", "/v1/jobs",
         {"json": {**IMAGES, "webhook": {"url": "https://user:secret@example.com/x"}}}, 422, "validation_error"),
        ("webhook with CRLF", "POST", "/v1/jobs",
         {"json": {**IMAGES, "webhook": {"url": "https://example.com/x\r\nX-Evil: 1"}}}, 422, "validation_error"),
        ("webhook as a decimal IP", "POST", "/v1/jobs", {"json": {**IMAGES, "webhook": {"url": "http://2130706433/"}}},
         422, "validation_error"),
        ("webhook of another scheme", "POST", "/v1/jobs", {"json": {**IMAGES, "webhook": {"url": "file:///etc/passwd"}}},
         422, "validation_error"),
        # requests that make no sense
        ("unknown task", "POST", "/v1/jobs", {"json": {"task": "mine-bitcoin", "inputs": {}}}, 422, "validation_error"),
        ("unknown model", "POST", "/v1/jobs", {"json": {"model": "nope", "inputs": {}}}, 400, "unknown_model"),
        ("too many images", "POST", "/v1/images", {"json": {"model": "dcgan", "n": 10_000}}, 422, "validation_error"),
        ("batch over the cap", "POST", "/v1/batches", {"json": {"jobs": [{"inputs": {}}] * 100_000}},
         400, "too_many_jobs"),
        ("unknown status filter", "GET", "/v1/jobs?status=exploded", {}, 422, "validation_error"),
        ("negative limit", "GET", "/v1/jobs?limit=-1", {}, 422, "validation_error"),
    ]


def test_every_hostile_request_gets_its_4xx_and_the_server_stays_healthy(tenants, a_made):  # noqa: F811
    client = tenants
    failures = []
    for name, method, path, kwargs, status, code, *said in corpus(a_made):
        headers = {k: v for k, v in {**B, **kwargs.pop("headers", {})}.items() if v is not None}
        r = client.request(method, path, headers=headers, **kwargs)
        try:
            assert_error(r, status, code)
            assert all(text in r.json()["error"]["message"] for text in said)
        except (AssertionError, ValueError, KeyError):
            failures.append(f"{name}: {r.status_code} {r.text[:200]}")
    assert not failures, "\n".join(failures)
    # Healthy afterwards, and A's things untouched.
    assert client.get("/livez").status_code == 200 and client.get("/readyz").status_code == 200
    assert client.get(f"/v1/jobs/{a_made['job']}", headers=A).json()["status"] == "succeeded"
    assert client.get(f"/v1/jobs/{a_made['job']}/result", headers=A).status_code == 200
    assert client.get(f"/v1/files/{a_made['audio']}", headers=A).status_code == 200
    assert upload_as(client, B, FACE, "face.jpg").startswith("file_")
    assert json.loads(client.get("/v1/jobs", headers=B).text)["data"] == []
