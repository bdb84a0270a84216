"""Error answers in A1111's shape: `{"error", "detail", "body", "errors"}`.

A1111 clients look at `detail` (and `errors` for a readable line). Bad input is a 4xx
that names the field; a 500 means a bug in sdstudio, never bad input.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse

from sdstudio.errors import InvalidRequest, NotFound, SdStudioError, UnsafeFileError

log = logging.getLogger("sdstudio.server")


def error_body(error: str, detail, errors: str, body="") -> dict:
    """The A1111 error object."""
    return {"error": error, "detail": detail, "body": body, "errors": errors}


def _field_path(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def status_for(exc: SdStudioError) -> int:
    """HTTP status of a user-facing error."""
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, (InvalidRequest, UnsafeFileError)):
        return 422
    return 400


def install_error_handlers(api: FastAPI) -> None:
    """Answer validation, user and unexpected errors in A1111's shape."""

    @api.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = exc.errors()
        readable = "; ".join(f"{_field_path(p.get('loc', ()))}: {p.get('msg', '')}" for p in problems)
        detail = jsonable_encoder(
            problems,
            # The refused input is echoed: a NaN or infinity must not make the answer itself unwritable JSON.
            custom_encoder={
                Exception: str,
                bytes: lambda b: b.decode(errors="replace"),
                float: lambda x: x if math.isfinite(x) else str(x),
            },
        )
        return JSONResponse(status_code=422, content=error_body("RequestValidationError", detail, readable))

    @api.exception_handler(SdStudioError)
    async def user_error(request: Request, exc: SdStudioError):
        detail = str(exc)
        return JSONResponse(status_code=status_for(exc), content=error_body(type(exc).__name__, detail, detail))

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse(
            status_code=exc.status_code,
            content=error_body("HTTPException", exc.detail, str(exc.detail)),
            headers=getattr(exc, "headers", None),
        )

    @api.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception):
        log.exception("API error: %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content=error_body(type(exc).__name__, "", str(exc)))
