"""The API against its own OpenAPI schema, fuzzed by Schemathesis: no request gets a 5xx.

Every operation of ``/openapi.json`` is called with generated valid and invalid inputs
(bounded: a few dozen examples an operation, no shrinking of long searches), on an app
with a job store and no worker, so nothing is rendered and jobs only queue (a one-call
request waits at most a second for its result).
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from service.app import create_app
from tests.test_api import make_settings


@pytest.fixture(scope="module")
def app_schema(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("fuzz"), tmp_path_factory.mktemp("weights"),
                             default_wait_seconds=1.0, max_wait_seconds=1.0)
    app = create_app(settings)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("app_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=5, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case):
    response = case.call()
    if case.path == "/readyz" and response.status_code == 503:   # its answer while no worker is up
        assert response.json()["status"] == "not ready"
        return
    case.validate_response(response, checks=[not_a_server_error])
