"""`--server`: send a generation command's jobs to a running `sdstudio serve` / `webui --api`.

The command line is read as for a local run and each job becomes the A1111 body of
`POST /sdapi/v1/txt2img` (or img2img, its files sent as base64 PNGs); the images that come
back are saved here as a local run saves them (file names, infotext in the PNG, `--outdir`,
`--skip-save`/`--skip-grid`), so a repeated call costs an HTTP request instead of a process
start and a model load. The server saves none (`save_images: false`). Progress comes from
A1111's `/internal/progress` for the job's own task id. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import threading
import uuid
from typing import Any

from sdstudio.cli.common import script_fields
from sdstudio.errors import InvalidRequest, SdStudioError

DEFAULT_SERVER = "http://127.0.0.1:7860"
"""Where `--server` with no URL looks: `sdstudio serve`'s and `webui --api`'s default address."""

LOCAL_ONLY_FIELDS = ("outpath_samples", "outpath_grids", "do_not_save_samples", "do_not_save_grid")
"""Request fields about saving: the images are saved here, so they stay out of the body."""

SAVING_SETTINGS = frozenset({"samples_format", "grid_format", "samples_filename_pattern", "save_to_dirs"})
"""Settings a job may override that decide how its files are saved, which happens here."""

PROGRESS_POLL_SECONDS = 0.25


class ServerUnreachable(SdStudioError):
    """No sdstudio/A1111 server answered at the --server address."""


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --server [URL] and --server-auth USER:PASS."""
    group = parser.add_argument_group("running server")
    group.add_argument(
        "--server",
        nargs="?",
        const=DEFAULT_SERVER,
        default=None,
        metavar="URL",
        help=f"send the job to a running `sdstudio serve` or `webui --api` (default address {DEFAULT_SERVER}); "
        "images are saved here as a local run saves them",
    )
    group.add_argument("--server-auth", metavar="USER:PASS", default=None, help="the server's --api-auth login")


def check_local_only_options(args: argparse.Namespace) -> None:
    """Refuse options that name local files the server cannot read."""
    if getattr(args, "ckpt", None):
        raise InvalidRequest("ckpt", "--ckpt names a file on this machine; with --server choose it with --model NAME")


def request_body(fields: dict[str, Any], args: argparse.Namespace, load_settings: dict[str, object]) -> dict[str, Any]:
    """The A1111 txt2img/img2img body for one job's request fields; the server answers with the images, saves none."""
    body = {name: value for name, value in fields.items() if name not in LOCAL_ONLY_FIELDS and value is not None}
    for name in ("init_images", "mask"):  # img2img: the decoded files travel as A1111's base64 PNGs
        if name in body:
            value = body[name]
            body[name] = [_png_base64(i) for i in value] if isinstance(value, list) else _png_base64(value)
    overrides = {**load_settings, **dict(body.get("override_settings") or {})}
    if getattr(args, "model", None):
        overrides["sd_model_checkpoint"] = args.model
    if overrides:
        body["override_settings"] = overrides
    script_name, script_args, alwayson = script_fields(args)  # checked by the server (422 naming the script)
    if script_name:
        body.update(script_name=script_name, script_args=script_args)
    if alwayson:
        body["alwayson_scripts"] = alwayson
    body.update(save_images=False, send_images=True, force_task_id=f"task(cli-{uuid.uuid4().hex[:16]})")
    return body


def _png_base64(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _auth(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep:
        raise InvalidRequest("server_auth", "expected USER:PASS")
    return user, password


def _refusal(answer: Any, url: str) -> SdStudioError:
    """The server's answer to a refused job as an error for people."""
    try:
        detail = answer.json().get("detail", answer.text)
    except ValueError:
        detail = answer.text
    if answer.status_code == 401:
        return InvalidRequest("server_auth", f"{url} needs a login: pass --server-auth USER:PASS")
    if not isinstance(detail, str):
        detail = json.dumps(detail)
    return SdStudioError(f"the server at {url} refused the job ({answer.status_code}): {detail}")


def post_with_progress(client: Any, kind: str, body: dict[str, Any], show_progress: bool) -> Any:
    """POST the job; while it runs, draw its progress from /internal/progress (its own task id)."""
    answer: list[Any] = []
    failure: list[BaseException] = []

    def send() -> None:
        try:
            answer.append(client.post(f"/sdapi/v1/{kind}", json=body))
        except BaseException as exc:  # the main thread reports it
            failure.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    bar = None
    try:
        while sender.is_alive():
            sender.join(PROGRESS_POLL_SECONDS)
            if not show_progress or not sender.is_alive():
                continue
            try:
                progress = client.get("/internal/progress", params={"id_task": body["force_task_id"]}, timeout=5)
                state = progress.json() if progress.is_success else {}
            except Exception:  # progress is a courtesy; the job's own answer decides
                continue
            if state.get("active"):
                if bar is None:
                    from tqdm import tqdm

                    bar = tqdm(total=100, unit="%", file=sys.stderr, dynamic_ncols=True, leave=False, desc=kind)
                bar.n = int(100 * float(state.get("progress") or 0))
                bar.refresh()
    except KeyboardInterrupt:
        client.post("/sdapi/v1/tasks/" + body["force_task_id"] + "/cancel", timeout=5)
        raise
    finally:
        if bar is not None:
            bar.close()
    if failure:
        raise failure[0]
    return answer[0]


def save_answer(answer: dict[str, Any], fields: dict[str, Any], kind: str, saver: Any) -> list[str]:
    """Save the answer's images as a local run would: each sample, then their grid; the paths.

    The server made no grid (it saved nothing), so the grid is drawn here from the samples,
    under this machine's grid settings and the job's `n_rows`, as processing draws it.
    """
    from PIL import Image

    from sdstudio.engine.saving import image_grid

    info = json.loads(answer.get("info") or "{}")
    first = int(info.get("index_of_first_image", 0))
    seeds, prompts, infotexts = info.get("all_seeds", []), info.get("all_prompts", []), info.get("infotexts", [])
    images = []
    for data in (answer.get("images") or [])[first:]:  # a grid the server returns first is drawn here instead
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
        images.append(image)
    settings = saver.settings
    saved = []
    if not fields.get("do_not_save_samples") and settings.samples_save:
        folder = saver.output_folder(kind, override=fields.get("outpath_samples"))
        for index, image in enumerate(images):
            seed = seeds[index] if index < len(seeds) else None
            prompt = prompts[index] if index < len(prompts) else fields.get("prompt", "")
            infotext = infotexts[index] if index < len(infotexts) else image.info.get("parameters")
            saved.append(saver.save_image(image, folder, seed, prompt, infotext))
    if len(images) > 1 and not fields.get("do_not_save_grid") and settings.grid_save:
        n_rows = (fields.get("override_settings") or {}).get("n_rows", getattr(settings, "n_rows", -1))
        grid = image_grid(images, n_rows=int(n_rows), batch_size=int(fields.get("batch_size", 1)))
        folder = saver.output_folder(kind, grid=True, override=fields.get("outpath_grids"))
        saved.append(saver.save_grid(grid, folder, infotexts[0] if infotexts else None))
    return [str(path) for path in saved]


def run_remote(args: argparse.Namespace, jobs: list[dict[str, Any]], kind: str) -> int:
    """Send each job to the server, save and print what comes back; the exit code as a local run's."""
    import httpx

    from sdstudio.cli.model_args import load_options
    from sdstudio.config import DataPaths, load_settings, resolve_data_dir
    from sdstudio.engine.saving import ImageSaver

    url = str(args.server).rstrip("/")
    check_local_only_options(args)
    bodies = [request_body(fields, args, load_options(args)) for fields in jobs]
    paths = DataPaths(resolve_data_dir(args.data_dir))
    settings = load_settings(paths.config_file).settings
    try:
        with httpx.Client(base_url=url, auth=_auth(args.server_auth), timeout=None) as client:
            for fields, body in zip(jobs, bodies):
                answer = post_with_progress(client, kind, body, not args.no_progress)
                if not answer.is_success:
                    raise _refusal(answer, url)
                result = answer.json()
                # the job's own settings that saving reads (--samples-format) over this machine's
                overrides = {k: v for k, v in (fields.get("override_settings") or {}).items() if k in SAVING_SETTINGS}
                saver = ImageSaver(paths, settings.model_copy(update=overrides))
                for path in save_answer(result, fields, kind, saver):
                    print(path)
                info = json.loads(result.get("info") or "{}")
                for warning in info.get("warnings") or ():
                    print(f"warning: {warning}", file=sys.stderr)
    except httpx.TransportError as exc:
        raise ServerUnreachable(
            f"no server answers at {url} ({exc.__class__.__name__}): start one with `sdstudio serve`, "
            "or drop --server to run here"
        ) from None
    return 0
