"""Error answers in A1111's shape: `{"error", "detail", "body", "errors"}`.

A1111 clients look at `detail` (and `errors` for a readable line). Bad input is a 4xx
that names the field; a 500 means a bug in sdstudio, never bad input. A 500 (or a 507 when
a job ran out of memory) says only that it happened and an error id; the exception and its
traceback go to the server log under the same id, never to the client.
"""

from __future__ import annotations

import logging
import math
import traceback
import uuid

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdstudio.engine.job_queue import ClientQueueFull, QueueFull
from sdstudio.errors import Conflict, InvalidRequest, NotFound, SdStudioError, Unavailable, UnsafeFileError

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
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, ClientQueueFull):
        return 429
    if isinstance(exc, (QueueFull, Unavailable)):
        return 503
    return 400


# What allocators say when memory runs out: torch's CPU allocator ("[enforce fail at alloc_cpu.cpp:...]
# DefaultCPUAllocator: not enough memory"), CUDA/MPS ("... out of memory ...").
_OUT_OF_MEMORY_MARKERS = ("out of memory", "alloc_cpu.cpp", "DefaultCPUAllocator", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` says memory ran out (MemoryError, torch's OutOfMemoryError or an allocator's RuntimeError)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch's, without importing torch
        return True
    return isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in _OUT_OF_MEMORY_MARKERS)


def server_error_response(request: Request, exc: Exception) -> JSONResponse:
    """Log `exc` with its traceback under a new error id; answer with the id and no exception text."""
    error_id = uuid.uuid4().hex[:12]
    out_of_memory = is_out_of_memory(exc)
    log.error(
        "error id %s: %s %s failed%s",
        error_id,
        request.method,
        request.url.path,
        " (out of memory)" if out_of_memory else "",
        exc_info=exc,
    )
    if out_of_memory:
        # The traceback's frames hold the job's tensors; let them go now that the log has it.
        traceback.clear_frames(exc.__traceback__)
        status, error = 507, "OutOfMemory"
        message = (
            f"the job was too large for the memory available (error id {error_id}); "
            "try a smaller width and height, batch size or hires scale"
        )
    else:
        status, error = 500, "InternalServerError"
        message = f"internal server error (error id {error_id}); the server log has the details"
    return JSONResponse(status_code=status, content={**error_body(error, message, message), "error_id": error_id})


class AnswerServerErrors:
    """ASGI middleware: an exception no handler took is answered by `server_error_response`.

    Starlette's own last-resort handler answers and then re-raises, which makes uvicorn log the
    error a second time (without the id) and drop the connection; this answers and ends there.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as exc:
            if started:  # too late for an error answer; the server's last resort closes the connection
                raise
            await server_error_response(Request(scope), exc)(scope, receive, send)


def install_error_handlers(api: FastAPI) -> None:
    """Answer validation, user and unexpected errors in A1111's shape."""
    api.add_middleware(AnswerServerErrors)

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
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, QueueFull) else None
        return JSONResponse(
            status_code=status_for(exc), content=error_body(type(exc).__name__, detail, detail), headers=headers
        )

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse(
            status_code=exc.status_code,
            content=error_body("HTTPException", exc.detail, str(exc.detail)),
            headers=getattr(exc, "headers", None),
        )

    @api.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception):
        return server_error_response(request, exc)
