"""Dependencies the routers share: settings, the job store, API keys and who is calling.

They are ``async`` because they never block: FastAPI would run plain functions in the
thread pool, one hop each per request.

A caller is a ``Principal``: the SHA-256 of their API key (the ``owner`` of what they
make) and its scopes. Another key's jobs, files and batches answer 404, as if they did
not exist; a key with the ``admin`` scope sees everything, and so does everyone when the
service has no keys (owner "").
"""

import hashlib
from dataclasses import dataclass

from fastapi import Request, Security
from fastapi.security import HTTPBearer

from service.api.errors import APIError

# Where ``service.api.guard.RequestGuard`` leaves the caller it authenticated.
PRINCIPAL_SCOPE_KEY = "talkingface.principal"


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``owner`` is their key's SHA-256 (hex), "" when the service has no keys."""

    owner: str
    scopes: frozenset = frozenset()

    @property
    def sees_all(self) -> bool:
        return not self.owner or "admin" in self.scopes

    @property
    def owner_filter(self) -> str | None:
        """The owner to keep lists to, None for all."""
        return None if self.sees_all else self.owner

    def can_see(self, row) -> bool:
        """Whether a job, file or batch row is this caller's (or they see everything)."""
        return row is not None and (self.sees_all or row["owner"] == self.owner)


ANONYMOUS = Principal("")


def bearer_token(authorization: bytes | None) -> bytes | None:
    """The token of ``Bearer <token>``, or None for anything else (non-ASCII, spaces, other schemes)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip(b" \t").partition(b" ")
    token = token.strip(b" \t")
    if scheme.lower() != b"bearer" or not token or not all(33 <= c <= 126 for c in token):
        return None
    return token


class KeyRing:
    """The service's API keys as ``{sha256 hex: scopes}``, read from the ``api_keys`` setting's entries."""

    def __init__(self, entries):
        self.keys = {}
        for entry in entries:
            _, digest, *scopes = entry.split(":")
            self.keys[digest] = frozenset(scopes[0].split("+")) if scopes else frozenset()

    def __bool__(self):
        return bool(self.keys)

    def authenticate(self, authorization: bytes | None) -> Principal | None:
        """The caller of an ``Authorization`` header's raw value; None when it is not a valid key."""
        if not self.keys:
            return ANONYMOUS
        token = bearer_token(authorization)
        if token is None:
            return None
        digest = hashlib.sha256(token).hexdigest()
        scopes = self.keys.get(digest)
        return None if scopes is None else Principal(digest, scopes)


def unauthorized() -> APIError:
    return APIError(401, "unauthorized", "a valid API key is needed: Authorization: Bearer <key>",
                    headers={"WWW-Authenticate": "Bearer"})


async def get_settings(request: Request):
    return request.app.state.settings


async def get_store(request: Request):
    return request.app.state.store


# Declares the scheme in the OpenAPI schema (the "Authorize" button of /docs); the check is ours.
_bearer = HTTPBearer(auto_error=False, description="an API key (`talkingface keys create`)")


async def require_key(request: Request, _credentials=Security(_bearer)) -> Principal:
    """The caller. With TALKINGFACE_API_KEYS set, every /v1 call needs ``Authorization: Bearer <key>``.

    ``RequestGuard`` has checked the key before the body was read; this answers for an app
    mounted without it.
    """
    principal = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if principal is None:
        header = request.headers.get("authorization")
        principal = request.app.state.keys.authenticate(header.encode("latin-1") if header else None)
        if principal is None:
            raise unauthorized()
    return principal
