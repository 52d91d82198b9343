"""``/docs`` and ``/redoc`` work without internet: their scripts come from the app itself.

The browser test renders ``/docs`` in headless Chromium on a machine whose network
reaches nothing but loopback: Swagger UI shows the API's operations only if every file
it needs came from the service.
"""

import re

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.test_api import make_settings
from tests.test_dashboard_static import chromium, dump_dom, serving_http  # noqa: F401  (chromium is a fixture)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(make_settings(tmp_path_factory.mktemp("docs"), tmp_path_factory.mktemp("weights")))


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_doc_pages_load_only_files_the_app_serves(app, page):
    with TestClient(app) as client:
        html = client.get(page)
        assert html.status_code == 200 and "text/html" in html.headers["content-type"]
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", html.text)
        urls = [u for pair in urls for u in pair if u]
        assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
        for url in urls:
            served = client.get(url)
            assert served.status_code == 200, url
        assert "fonts.googleapis" not in html.text and "cdn" not in html.text.lower()


def test_swagger_ui_renders_the_operations_in_a_browser_offline(app, chromium, tmp_path):  # noqa: F811
    with serving_http(app, lifespan="on") as url:
        dom = dump_dom(chromium, f"{url}/docs", tmp_path / "chromium")
    text = dom.text()
    assert "/v1/talking-face" in text and "/v1/jobs" in text
