"""A limit on request body size, answered 413 before the body is read or as soon as it passes the limit.

A declared Content-Length over the limit is refused without reading a byte; a chunked body
is counted as it arrives and refused when it passes the limit, so no client can make the
server hold more than the limit in memory. The limit is read per request, from the settings.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdstudio.server.errors import error_body


def too_large(limit: int) -> str:
    """The message of a 413."""
    return f"request body is over the limit of {limit / 1e6:g} MB (setting limit_request_body_mb)"


class BodySizeLimit:
    """ASGI middleware: bodies over `max_bytes()` (0 = no limit) are answered 413."""

    def __init__(self, app: ASGIApp, max_bytes: Callable[[], int]):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.max_bytes() if scope["type"] == "http" else 0
        if not limit:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            message = too_large(limit)
            response = JSONResponse(status_code=413, content=error_body("RequestTooLarge", message, message))
            await response(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI passes an HTTPException from reading the body on to the error handlers.
                    raise HTTPException(status_code=413, detail=too_large(limit))
            return message

        await self.app(scope, counted_receive, send)
