"""The job dashboard: one static HTML page and its script and stylesheet.

``GET /dashboard`` serves the page; the page reads the JSON API (``v1/jobs``,
``v1/workers``, ``v1/stats``) from the same origin every two seconds. Every path in the
page is relative, so the dashboard keeps working when the service is mounted behind a
path prefix. The page itself holds no data and needs no credentials; when the API wants
a key, open the page as ``/dashboard?key=<API key>`` and the script sends it as an
``Authorization: Bearer`` header.

``GET /live`` serves the live page (``live.html``, ``live.js``, ``live-worklet.js``): a face
uploaded or named by its file id speaks what the microphone hears, or an audio file,
through the ``/v1/live`` WebSocket; open it as ``/live?key=<API key>`` when the API wants one.

Include it with ``app.include_router(dashboard.router)`` at the application root.
"""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# The page loads nothing but its own script and stylesheet and talks only to its own
# origin; the policy makes the browser enforce that, so injected markup could not run.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

router = APIRouter(tags=["dashboard"])


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
def read_dashboard() -> HTMLResponse:
    """The dashboard page, never cached so a deploy shows up on the next reload."""
    html = (STATIC_DIR / "dashboard.html").read_text(encoding="utf-8")
    return HTMLResponse(
        html,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def _static(name: str, media_type: str) -> FileResponse:
    # "no-cache" still lets the browser keep the file, but it revalidates each load,
    # so the script never lags behind the page after an upgrade.
    return FileResponse(
        STATIC_DIR / name,
        media_type=media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


# The live page also plays fragmented MP4 from a blob: URL (Media Source Extensions) and talks
# to /v1/live over a WebSocket of its own origin ('self' covers ws: and wss: there).
LIVE_CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace("img-src 'self' data:;",
                                                               "img-src 'self' data: blob:; media-src 'self' blob:;")


@router.get("/live", response_class=HTMLResponse, include_in_schema=False)
def read_live_page() -> HTMLResponse:
    """The live page (``service.api.live``): a face speaking from the microphone or a file."""
    html = (STATIC_DIR / "live.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers={"Cache-Control": "no-store", "Content-Security-Policy":
                                       LIVE_CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
                                       "Referrer-Policy": "no-referrer"})


@router.get("/static/live.js", include_in_schema=False)
def read_live_script() -> FileResponse:
    return _static("live.js", "text/javascript; charset=utf-8")


@router.get("/static/live-worklet.js", include_in_schema=False)
def read_live_worklet() -> FileResponse:
    """The AudioWorklet processor that hands the microphone's samples to the live page."""
    return _static("live-worklet.js", "text/javascript; charset=utf-8")


@router.get("/static/live.css", include_in_schema=False)
def read_live_stylesheet() -> FileResponse:
    return _static("live.css", "text/css; charset=utf-8")


@router.get("/static/dashboard.js", include_in_schema=False)
def read_dashboard_script() -> FileResponse:
    """The dashboard's script."""
    return _static("dashboard.js", "text/javascript; charset=utf-8")


@router.get("/static/dashboard.css", include_in_schema=False)
def read_dashboard_stylesheet() -> FileResponse:
    """The dashboard's stylesheet."""
    return _static("dashboard.css", "text/css; charset=utf-8")
