"""One error shape for every failure: ``{"error": {"code", "message"}}`` with a 4xx status.

Handlers cover the project's own errors, input problems from the models package,
FastAPI's validation errors, a full disk or database (507 ``insufficient_storage``), a
database out of reach and a decode budget spent (503), each with ``Retry-After``, and
anything unexpected (a 500 without a stack trace).
"""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import TalkingFaceError, WeightsMissing
from service.jobs.store import storage_failure
from service.media import DecodeBusy

log = logging.getLogger("talkingface.api")
RETRY_AFTER_SECONDS = 30           # how soon a client may try again after a 507 or a 503 of the store


class APIError(Exception):
    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status, code, message, headers=None):
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def storage_response(kind: str):
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if kind == "full":
        return error_response(507, "insufficient_storage", "the server's disk or database is full; nothing was "
                              "stored. Try again once space is freed (DELETE of results and files works)", headers)
    return error_response(503, "store_unavailable", "the job store cannot be reached or is busy; try again",
                          headers)


def install(app: FastAPI):
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(TalkingFaceError)
    async def _input_error(request: Request, exc: TalkingFaceError):
        status = 503 if isinstance(exc, WeightsMissing) else 400
        return error_response(status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
        return error_response(422, "validation_error", message)

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError):
        if storage_failure(exc):
            log.warning("%s %s: disk full: %s", request.method, request.url.path, exc)
            return storage_response("full")
        log.error("error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "the server failed on this request; it is logged")

    @app.exception_handler(OperationalError)
    async def _database_error(request: Request, exc: OperationalError):
        kind = storage_failure(exc)
        log.warning("%s %s: database %s: %s", request.method, request.url.path, kind, exc.orig)
        return storage_response(kind)

    @app.exception_handler(DecodeBusy)
    async def _decode_busy(request: Request, exc: DecodeBusy):
        return error_response(503, "busy", exc.message, {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.__cause__ is not None and storage_failure(exc.__cause__):
            # A multipart body spooled to a full disk: FastAPI says "error parsing the body".
            return storage_response(storage_failure(exc.__cause__))
        codes = {400: "invalid_input", 404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
                 413: "too_large"}
        return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "the server failed on this request; it is logged")
