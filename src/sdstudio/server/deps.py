"""What the route modules are given: the services `create_api` puts on the app's state.

Each `*Dep` is an annotated type a route declares as a parameter; FastAPI calls the
getter with the request, so routes are plain module-level functions, not closures.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from sdstudio.app import App
from sdstudio.engine.job_queue import Job, JobQueue


@dataclass
class ServerOptions:
    """How the server was started; reported by /sdapi/v1/cmd-flags."""

    listen: bool = False
    port: int = 7860
    api_auth: str | None = None
    ui_auth: str | None = None
    """The web UI's users (--auth); admitted on every route but the API's."""
    api: bool = True
    api_server_stop: bool = False
    """A1111's --api-server-stop: serve /server-stop, /server-restart and /server-kill."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names served besides localhost (--allowed-hosts); see server.access."""
    cors_allow_origins: tuple[str, ...] = ()
    cors_allow_origins_regex: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)


def get_app(request: Request) -> App:
    """The composition root's App the API serves."""
    return request.app.state.sdstudio


def get_queue(request: Request) -> JobQueue:
    """The job queue every device-touching endpoint goes through."""
    return request.app.state.queue


def get_options(request: Request) -> ServerOptions:
    """How the server was started."""
    return request.app.state.options


AppDep = Annotated[App, Depends(get_app)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
OptionsDep = Annotated[ServerOptions, Depends(get_options)]


async def wait_for(job: Job) -> Any:
    """Await a queued job's result without blocking the event loop."""
    return await asyncio.wrap_future(job.future)
