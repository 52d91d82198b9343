"""Dependencies the routers share: settings, the job store, API-key checking.

They are ``async`` because they never block: FastAPI would run plain functions in the
thread pool, one hop each per request.
"""

import hmac

from fastapi import Request

from service.api.errors import APIError


async def get_settings(request: Request):
    return request.app.state.settings


async def get_store(request: Request):
    return request.app.state.store


async def require_key(request: Request):
    """With TALKINGFACE_API_KEYS set, every /v1 call needs ``Authorization: Bearer <key>``."""
    keys = request.app.state.settings.api_keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not any(hmac.compare_digest(token, k) for k in keys):
        raise APIError(401, "unauthorized", "a valid API key is needed: Authorization: Bearer <key>",
                       headers={"WWW-Authenticate": "Bearer"})
