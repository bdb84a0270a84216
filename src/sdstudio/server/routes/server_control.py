"""Ending the server from the API: server-stop, server-restart, server-kill (A1111's --api-server-stop).

`create_api` includes this router only when the server was started with --api-server-stop, so
without it the routes answer 404 as A1111's do. Each route asks the running uvicorn server to
shut down the way Ctrl-C does (the listening socket closes, open requests are answered, the
job queue stops); `launch` attaches that server to the app's `ServerExit` and, after the shutdown,
returns exit code 0 or, for a restart, runs the same command line again in the same process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from sdstudio.server.deps import QueueDep

if TYPE_CHECKING:
    import uvicorn

router = APIRouter()


class ServerExit:
    """How these routes end the serving process: they ask the attached uvicorn server to shut down."""

    def __init__(self) -> None:
        self.restart = False
        """Set by server-restart: `launch` runs the process's command line again after the shutdown."""
        self._server: uvicorn.Server | None = None

    def attach(self, server: uvicorn.Server) -> None:
        """The server the routes stop (`launch` attaches the one it runs)."""
        self._server = server

    def request(self, restart: bool = False) -> None:
        """Begin a graceful shutdown: uvicorn stops accepting, answers what is open, then `run` returns."""
        if self._server is None:
            raise RuntimeError("no running server is attached to stop")
        self.restart = restart
        self._server.should_exit = True


def get_server_exit(request: Request) -> ServerExit:
    """The app's ServerExit (put on its state by `create_api`)."""
    return request.app.state.server_exit


ServerExitDep = Annotated[ServerExit, Depends(get_server_exit)]


@router.post(
    "/server-stop",
    response_class=Response,
    description="Stop the server as Ctrl-C does: the running and queued jobs finish and their requests are "
    "answered, then the process exits with code 0. Answers `Stopping.` (text), as A1111 does.",
)
async def server_stop(server_exit: ServerExitDep):
    server_exit.request()
    return Response("Stopping.", media_type="text/plain")


@router.post(
    "/server-kill",
    description="Stop the server at once: the running job is interrupted (its request gets what was made so "
    "far), queued jobs are cancelled, then the process exits with code 0. A1111 ends the process without an "
    "answer; sdstudio answers `null` when the answer gets out before the connection closes.",
)
async def server_kill(server_exit: ServerExitDep, queue: QueueDep):
    # Stopping the queue first lets uvicorn's shutdown finish now instead of after every queued job.
    await run_in_threadpool(queue.stop)
    server_exit.request()
    return None


@router.post(
    "/server-restart",
    response_class=Response,
    description="Restart the server: it stops as with server-stop (jobs finish), then the same process "
    "runs the command line that started it again (same process id, so `run.sh` and service managers see "
    "no exit), and the API answers again once it is ready. Answers `Restarting.` (text); A1111 restarts "
    "only under its launcher and otherwise answers 501, sdstudio can always restart.",
)
async def server_restart(server_exit: ServerExitDep):
    server_exit.request(restart=True)
    return Response("Restarting.", media_type="text/plain")
