"""What the route modules are given: the services `create_api` puts on the app's state.

Each `*Dep` is an annotated type a route declares as a parameter; FastAPI calls the
getter with the request, so routes are plain module-level functions, not closures.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPBasic

from sdstudio.app import App
from sdstudio.engine.job_queue import ClientQueue, Job, JobQueue, QueueLimits
from sdstudio.server.tasks import TaskRunner


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


def get_tasks(request: Request) -> TaskRunner:
    """The task runner: API jobs stored before they are queued, and the task API's answers."""
    return request.app.state.tasks


def get_options(request: Request) -> ServerOptions:
    """How the server was started."""
    return request.app.state.options


_basic_credentials = HTTPBasic(auto_error=False)


async def get_client_queue(request: Request) -> ClientQueue:
    """The queue for this request's client: the API user under --api-auth, else the client's address."""
    settings = get_app(request).settings_store.current
    limits = QueueLimits.from_settings(settings)
    credentials = await _basic_credentials(request) if get_options(request).api_auth else None
    if credentials is not None:
        client = f"user {credentials.username}"
    else:
        client = f"address {request.client.host if request.client else 'unknown'}"
    return ClientQueue(get_queue(request), client, limits)


AppDep = Annotated[App, Depends(get_app)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
ClientQueueDep = Annotated[ClientQueue, Depends(get_client_queue)]
"""The queue for routes that submit a client's work (generation, extras, interrogate, model loads)."""
OptionsDep = Annotated[ServerOptions, Depends(get_options)]
TasksDep = Annotated[TaskRunner, Depends(get_tasks)]


async def wait_for(job: Job) -> Any:
    """Await a queued job's result without blocking the event loop."""
    return await asyncio.wrap_future(job.future)
