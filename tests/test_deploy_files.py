"""The container recipe: Dockerfile lint, the compose file against the Compose specification,
and the monitoring files against what the service really exports and reads.

Nothing here builds an image or starts a container: hadolint and Docker Compose's own
``config`` check the files offline.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from service.jobs.store import JobStore
from service.prometheus import build_registry
from service.settings import Settings
from tests.components import ROOT, require

DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "talkingface.json"
ALL_PROFILES = ("gpu", "cpu", "monitoring")

# Sample names of each metric type, from its family name (the text exposition format).
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created")}
PROMQL_NAME = re.compile(r"\btalkingface_[a-z0-9_]+")
SETTING_VARIABLE = re.compile(r"\bTALKINGFACE_[A-Z0-9_]+")


def compose(*args, compose_file=COMPOSE_FILE, env_file=ENV_EXAMPLE):
    """Docker Compose on ``compose_file`` with ``env_file`` as its ``.env``, nothing else of ours."""
    binary = require("compose")
    command = [str(binary), "--project-directory", str(ROOT), "--env-file", str(env_file), "-f", str(compose_file),
               *args]
    # A clean environment: only the env file may set the variables the compose file reads.
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


def resolved_config(profiles=ALL_PROFILES):
    """The compose model after interpolation and validation, as Docker Compose reads it."""
    args = [arg for p in profiles for arg in ("--profile", p)]
    done = compose(*args, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_dockerfile_is_hadolint_clean():
    hadolint = require("hadolint")
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_dockerfile_targets_and_rules():
    text = DOCKERFILE.read_text()
    stages = {name: base for base, name in re.findall(r"^FROM (\S+) AS (\S+)$", text, re.M)}
    assert {"builder", "api", "worker", "worker-cpu"} <= set(stages)
    assert "cuda" in re.search(r"^ARG CUDA_IMAGE=(\S+)", text, re.M).group(1)
    assert stages["worker"] == "${CUDA_IMAGE}"
    for image in re.findall(r"^ARG \w+_IMAGE=(\S+)", text, re.M):
        assert re.search(r":\d[\w.-]*$", image), f"{image} is not pinned by a version tag"
    assert "pip install -e" not in text and "--editable" not in text
    assert "--requirement /tmp/dist/requirements.txt" in text     # the project installed from its wheel
    assert re.search(r"^HEALTHCHECK .*\n.*/livez", text, re.M)
    assert re.findall(r"^USER (\S+)", text, re.M) and "USER root" not in text
    assert "weights/demo" in text and not re.search(r"^COPY weights(?!/demo)", text, re.M)


def test_demo_weights_sit_where_an_installed_package_looks():
    # The images copy weights/demo beside the installed packages; the registry must look there.
    from models import registry

    text = DOCKERFILE.read_text()
    assert registry.DEMO_WEIGHTS == Path(registry.__file__).resolve().parent.parent / "weights" / "demo"
    assert text.count("COPY weights/demo /opt/venv/lib/python3.11/site-packages/weights/demo") == 2


def test_dockerignore_keeps_only_what_images_need():
    lines = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!models/", "!service/", "!weights/demo/"} <= set(lines)


def test_compose_file_validates_against_the_compose_specification():
    done = compose("config", "--quiet")
    assert done.returncode == 0, done.stderr
    for profile in ALL_PROFILES:
        done = compose("--profile", profile, "config", "--quiet")
        assert done.returncode == 0, f"profile {profile}: {done.stderr}"


def test_the_validator_rejects_what_the_specification_does_not_allow(tmp_path):
    # The check above can fail: an unknown key in a service is refused.
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(COMPOSE_FILE.read_text().replace("    restart: unless-stopped\n", "    restart_policy: always\n", 1))
    done = compose("config", "--quiet", compose_file=bad)
    assert done.returncode != 0 and "restart_policy" in done.stderr


def test_compose_needs_its_secrets_from_the_env_file(tmp_path):
    # No password or key in the compose file: without an .env it refuses to start.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    done = compose("config", "--quiet", env_file=empty)
    # Compose names the first missing one it meets, in no fixed order.
    assert done.returncode != 0 and re.search(r"set (POSTGRES_PASSWORD|REDIS_PASSWORD|TALKINGFACE_API_KEYS|"
                                              r"GRAFANA_ADMIN_PASSWORD) in \.env", done.stderr), done.stderr


def test_compose_services_as_resolved():
    config = resolved_config()
    services = config["services"]
    assert {"postgres", "redis", "api", "worker", "worker-cpu", "prometheus", "grafana"} <= set(services)
    assert services["postgres"]["healthcheck"]["test"] and services["redis"]["healthcheck"]["test"]
    assert "--appendonly" in services["redis"]["command"]
    api = services["api"]
    assert api["command"] == ["serve", "--workers", "0"]
    assert api["build"]["target"] == "api"
    assert [p["target"] for p in api["ports"]] == [8000]
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    gpu = services["worker"]
    assert gpu["command"][:2] == ["worker", "--models"] and gpu["build"]["target"] == "worker"
    assert gpu["profiles"] == ["gpu"] and gpu["depends_on"]["redis"]["condition"] == "service_healthy"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    cpu = services["worker-cpu"]
    assert cpu["profiles"] == ["cpu"] and "devices" not in cpu.get("deploy", {}).get("resources", {}).get(
        "reservations", {})
    # One data volume, one database and one broker for the API and every worker.
    for name in ("api", "worker", "worker-cpu"):
        env = services[name]["environment"]
        assert env["TALKINGFACE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["TALKINGFACE_BROKER_URL"].startswith("redis://") and env["TALKINGFACE_BROKER_URL"].endswith(
            "@redis:6379/0")
        assert env["TALKINGFACE_DATA_DIR"] == "/data" and env["TALKINGFACE_WEIGHTS_DIR"] == "/weights"
        mounts = {v["target"]: v for v in services[name]["volumes"]}
        assert mounts["/data"]["type"] == "volume" and mounts["/data"]["source"] == "data"
        assert mounts["/weights"]["read_only"]
    assert {s for s in ("prometheus", "grafana") if services[s]["profiles"] == ["monitoring"]} == {"prometheus",
                                                                                                    "grafana"}


def test_no_secret_is_written_in_the_compose_file():
    text = COMPOSE_FILE.read_text()
    for name in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "TALKINGFACE_API_KEYS", "GF_SECURITY_ADMIN_PASSWORD"):
        values = re.findall(rf"{name}: (.*)", text)
        assert values and all(v.startswith("${") for v in values), name
    assert "sha256:" not in text and "tfk_" not in text


def test_every_talkingface_variable_is_a_setting():
    fields = {f"TALKINGFACE_{name.upper()}" for name in Settings.model_fields}
    for path in (COMPOSE_FILE, ENV_EXAMPLE, DOCKERFILE):
        used = set(SETTING_VARIABLE.findall(path.read_text()))
        assert used, path
        assert used <= fields, f"{path.name}: {sorted(used - fields)} are not settings"


def test_env_example_names_every_variable_the_compose_file_requires():
    text = COMPOSE_FILE.read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    given = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line
             and not line.startswith("#")}
    assert required and required <= given


def test_prometheus_scrapes_the_api_with_a_metrics_key():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    compose_file = yaml.safe_load(COMPOSE_FILE.read_text())
    api = compose_file["services"]["api"]
    assert targets == ["api:8000"] and "api" in compose_file["services"]
    assert api["environment"]["TALKINGFACE_PORT"] == 8000
    # The bearer token is the compose secret mounted into the Prometheus container.
    assert job["authorization"]["type"] == "Bearer"
    secret = job["authorization"]["credentials_file"]
    assert secret.startswith("/run/secrets/")
    mounted = [s["source"] if isinstance(s, dict) else s for s in compose_file["services"]["prometheus"]["secrets"]]
    assert Path(secret).name in mounted and Path(secret).name in compose_file["secrets"]


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard():
    sources = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "talkingface.yml").read_text())
    compose_file = yaml.safe_load(COMPOSE_FILE.read_text())
    mounts = dict(v.split(":")[:2] for v in compose_file["services"]["grafana"]["volumes"] if v.startswith("./"))
    assert mounts["./deploy/grafana/dashboards"] == providers["providers"][0]["options"]["path"]
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {source["uid"]}


@pytest.fixture
def exported_samples(tmp_path):
    """Every sample name the service's /metrics can carry, from the registry it serves."""
    settings = Settings(data_dir=tmp_path / "data")
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    registry, _, _ = build_registry(store, settings)
    return {family.name + suffix for family in registry.collect() for suffix in SUFFIXES[family.type]}


def test_dashboard_queries_only_exported_metrics(exported_samples):
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("queue", "latency", "throughput", "errors", "gpu memory"):
        assert topic in titles
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in PROMQL_NAME.findall(target["expr"])}
    assert "talkingface_jobs_queued" in used and "talkingface_gpu_memory_bytes" in used
    assert used <= exported_samples, f"not exported: {sorted(used - exported_samples)}"


def test_the_metric_check_can_fail(exported_samples):
    # The comparison above is against real names: a misspelt one is caught.
    assert "talkingface_jobs_queued" in exported_samples
    assert "talkingface_jobs_finished_total" in exported_samples
    assert "talkingface_job_duration_seconds_bucket" in exported_samples
    assert "talkingface_queue_depth" not in exported_samples
    assert "talkingface_jobs_queued_total" not in exported_samples
