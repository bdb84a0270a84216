"""The A1111-compatible REST API (`/sdapi/v1/*`) over sdstudio's services.

`create_api` builds a FastAPI app from the composition root's `App` and a `JobQueue`;
every endpoint that touches the device goes through the queue, so the API and the web
UI share one line of work. The endpoints live in `server.routes`, one router per
resource; they get the App, the queue and the ServerOptions from `server.deps`. Every route,
the docs and anything mounted later included, is behind `server.access`.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI

from sdstudio import __version__
from sdstudio.app import App
from sdstudio.engine.job_queue import JobQueue
from sdstudio.server.access import install_access_control
from sdstudio.server.auth import basic_auth_dependency, parse_credentials
from sdstudio.server.body_limit import BodySizeLimit
from sdstudio.server.deps import ServerOptions
from sdstudio.server.errors import install_error_handlers
from sdstudio.server.routes import (
    controlnet,
    generation,
    hypernetworks,
    interrogate,
    merger,
    models,
    postprocess,
    scripts,
    server_control,
    tasks,
    training,
)
from sdstudio.server.routes import options as options_routes
from sdstudio.server.tasks import TaskRunner

__all__ = ["ServerOptions", "create_api"]

A1111_PREFIX = "/sdapi/v1"
ROUTERS = (
    generation.router,
    models.router,
    postprocess.router,
    options_routes.router,
    scripts.router,
    interrogate.router,
    tasks.router,
    merger.router,
    hypernetworks.router,
    training.router,
)


def create_api(
    app: App, queue: JobQueue, options: ServerOptions | None = None, task_runner: TaskRunner | None = None
) -> FastAPI:
    """The FastAPI application serving /sdapi/v1 over `app`'s services.

    Its jobs are tasks in the data dir's task store (`task_runner`, opened there when not given);
    the caller runs `app.state.tasks.resume()` before the queue starts to take up what a previous
    process left.
    """
    options = options or ServerOptions()
    api = FastAPI(
        title="sdstudio", version=__version__, description="A1111-compatible Stable Diffusion API served by sdstudio"
    )
    install_error_handlers(api)
    api.add_middleware(BodySizeLimit, max_bytes=lambda: int(app.settings_store.current.limit_request_body_mb * 1e6))
    # Read by server.deps for every request; set once, before the first one.
    api.state.sdstudio = app
    api.state.queue = queue
    api.state.options = options
    api.state.tasks = task_runner or TaskRunner.open(app, queue, tasks.TASK_KINDS)
    api.state.server_exit = server_control.ServerExit()
    api.state.login_page = install_access_control(api, options)
    credentials = parse_credentials(options.api_auth)
    dependencies = [Depends(basic_auth_dependency(credentials))] if credentials else []
    for router in ROUTERS:
        api.include_router(router, prefix=A1111_PREFIX, dependencies=dependencies)
    api.include_router(tasks.internal_router, dependencies=dependencies)  # A1111's /internal/progress
    api.include_router(controlnet.router, dependencies=dependencies)  # sd-webui-controlnet's /controlnet/*
    if options.api_server_stop:  # A1111 serves these only with --api-server-stop (404 otherwise)
        api.include_router(server_control.router, prefix=A1111_PREFIX, dependencies=dependencies)
    return api
