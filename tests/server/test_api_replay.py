"""Replay: one request per /sdapi/v1 route, with the body an A1111 client sends, over real HTTP.

Bodies follow A1111's own API tests (test/test_txt2img.py, test_img2img.py, test_extras.py)
and the `webuiapi` client's payloads; answers are checked for A1111's keys. A route added
to the server without a row here fails `test_every_route_has_a_replay`.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from PIL import Image
from tiny_models import write_tiny_blip, write_tiny_clip_model

from sdstudio.app import open_app
from sdstudio.engine.job_queue import JobQueue
from sdstudio.server.app import ServerOptions, create_api

from .conftest import start_server
from .test_api_extras import A1111_EXTRAS_OPTIONS, png_base64
from .test_api_training import A1111_TRAIN_BODY

Check = Callable[[Any], None]


def keys(*names: str) -> Check:
    """The answer is an object with at least these keys."""

    def check(answer: Any) -> None:
        assert isinstance(answer, dict), answer
        assert set(names) <= set(answer), sorted(set(names) - set(answer))

    return check


def items(*names: str, may_be_empty: bool = False) -> Check:
    """The answer is a list of objects, each with at least these keys."""

    def check(answer: Any) -> None:
        assert isinstance(answer, list), answer
        assert may_be_empty or answer, "expected a non-empty list"
        for item in answer:
            keys(*names)(item)

    return check


def exactly(expected: Any) -> Check:
    """The answer is this value (A1111's `{}` or `null` acknowledgements)."""

    def check(answer: Any) -> None:
        assert answer == expected

    return check


def images_of_size(field: str, size: tuple[int, int], count: int) -> Check:
    """`field` holds `count` base64 PNGs of `size` (a str field holds one)."""

    def check(answer: Any) -> None:
        encoded = answer[field] if isinstance(answer[field], list) else [answer[field]]
        assert len(encoded) == count
        for b64 in encoded:
            assert Image.open(io.BytesIO(base64.b64decode(b64))).size == size

    return check


def generation_info(**expected: Any) -> Check:
    """txt2img/img2img's `info` is JSON text holding these values."""

    def check(answer: Any) -> None:
        info = json.loads(answer["info"])
        assert {name: info[name] for name in expected} == expected

    return check


@dataclass(frozen=True)
class Replay:
    """One request as an A1111 client sends it and what its answer must hold."""

    method: str
    route: str  # under /sdapi/v1, or from the root when it starts with /
    body: dict[str, Any] | None = None
    checks: tuple[Check, ...] = ()
    label: str = ""
    served_as: str = ""  # the route's OpenAPI path when `route` fills in its parameters
    status: int = 200

    @property
    def path(self) -> str:
        return self.route if self.route.startswith("/") else f"/sdapi/v1/{self.route}"

    @property
    def template(self) -> str:
        return self.served_as or self.path.partition("?")[0]

    @property
    def id(self) -> str:
        return f"{self.method} {self.route}{' ' + self.label if self.label else ''}"


def _mask_base64() -> str:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


INIT_IMAGE = png_base64(64, 64, "green")

# webuiapi's txt2img payload (WebUIApi.txt2img), tiny sizes.
WEBUIAPI_TXT2IMG = {
    "enable_hr": False,
    "hr_scale": 2,
    "hr_upscaler": "Latent",
    "hr_second_pass_steps": 0,
    "hr_resize_x": 0,
    "hr_resize_y": 0,
    "denoising_strength": 0.7,
    "firstphase_width": 0,
    "firstphase_height": 0,
    "prompt": "a red circle",
    "styles": [],
    "seed": 11,
    "subseed": -1,
    "subseed_strength": 0.0,
    "seed_resize_from_h": 0,
    "seed_resize_from_w": 0,
    "sampler_name": "Euler a",
    "batch_size": 2,
    "n_iter": 1,
    "steps": 2,
    "cfg_scale": 7.0,
    "width": 64,
    "height": 64,
    "restore_faces": False,
    "tiling": False,
    "do_not_save_samples": False,
    "do_not_save_grid": False,
    "negative_prompt": "",
    "eta": 1.0,
    "s_churn": 0,
    "s_tmax": 0,
    "s_tmin": 0,
    "s_noise": 1,
    "override_settings": {},
    "override_settings_restore_afterwards": True,
    "script_args": [],
    "script_name": None,
    "send_images": True,
    "save_images": False,
    "alwayson_scripts": {},
    "sampler_index": "Euler a",
}

# A1111 test/test_img2img.py's body, tiny sizes.
A1111_IMG2IMG = {
    "batch_size": 1,
    "cfg_scale": 7,
    "denoising_strength": 0.75,
    "eta": 0,
    "height": 64,
    "include_init_images": False,
    "init_images": [INIT_IMAGE],
    "inpaint_full_res": False,
    "inpaint_full_res_padding": 0,
    "inpainting_fill": 0,
    "inpainting_mask_invert": False,
    "mask": None,
    "mask_blur": 4,
    "n_iter": 1,
    "negative_prompt": "",
    "override_settings": {},
    "prompt": "example prompt",
    "resize_mode": 0,
    "restore_faces": False,
    "s_churn": 0,
    "s_noise": 1,
    "s_tmax": 0,
    "s_tmin": 0,
    "sampler_index": "Euler a",
    "seed": 5,
    "seed_resize_from_h": -1,
    "seed_resize_from_w": -1,
    "steps": 2,
    "styles": [],
    "subseed": -1,
    "subseed_strength": 0,
    "tiling": False,
    "width": 64,
}

GENERATION_ANSWER = keys("images", "parameters", "info")

# A1111's Train tab body (train_embedding's parameters): one step on the bundled model's size.
A1111_TRAIN_EMBEDDING = {
    **A1111_TRAIN_BODY,
    "embedding_name": "replay-emb",
    "steps": 1,
    "create_image_every": 0,
    "save_embedding_every": 0,
    "template_filename": "style_filewords.txt",
}

REPLAYS = (
    Replay("get", "sd-models", checks=(items("title", "model_name", "hash", "sha256", "filename", "config"),)),
    Replay(
        "post", "options", {"sd_model_checkpoint": "sdstudio-tiny", "CLIP_stop_at_last_layers": 1}, (exactly(None),)
    ),
    Replay(
        "get", "options", checks=(keys("sd_model_checkpoint", "sd_vae", "samples_format", "CLIP_stop_at_last_layers"),)
    ),
    Replay(
        "post",
        "txt2img",
        WEBUIAPI_TXT2IMG,
        (GENERATION_ANSWER, images_of_size("images", (64, 64), 2), generation_info(seed=11, sampler_name="Euler a")),
    ),
    Replay(
        "post",
        "img2img",
        A1111_IMG2IMG,
        (GENERATION_ANSWER, images_of_size("images", (64, 64), 1), generation_info(seed=5, denoising_strength=0.75)),
    ),
    Replay(
        "post",
        "img2img",
        {**A1111_IMG2IMG, "mask": _mask_base64(), "inpainting_fill": 1, "inpaint_full_res": True, "mask_blur": 2},
        (GENERATION_ANSWER, images_of_size("images", (64, 64), 1)),
        label="inpaint",
    ),
    Replay(
        "post",
        "extra-single-image",
        {**A1111_EXTRAS_OPTIONS, "image": png_base64(32, 32)},
        (keys("html_info", "image"), images_of_size("image", (64, 64), 1)),
    ),
    Replay(
        "post",
        "extra-batch-images",
        {**A1111_EXTRAS_OPTIONS, "imageList": [{"data": png_base64(16, 16), "name": "a.png"}] * 2},
        (keys("html_info", "images"), images_of_size("images", (32, 32), 2)),
    ),
    Replay("post", "png-info", {"image": png_base64(8, 8)}, (keys("info", "items", "parameters"),)),
    Replay("post", "interrogate", {"image": png_base64(32, 32), "model": "clip"}, (keys("caption"),)),
    Replay(
        "post",
        "merge-checkpoints",
        {
            "primary_model_name": "sdstudio-tiny",
            "secondary_model_name": "sdstudio-tiny",
            "tertiary_model_name": "",
            "interp_method": "Weighted sum",
            "multiplier": 0.3,
            "save_as_half": False,
            "custom_name": "replay-merge",
            "checkpoint_format": "safetensors",
            "config_source": 0,
            "bake_in_vae": "None",
            "discard_weights": "",
            "save_metadata": True,
        },
        (keys("filename", "info"),),
    ),
    Replay(
        "post",
        "create/embedding",
        {"name": "replay-emb", "num_vectors_per_token": 1, "overwrite_old": False, "init_text": "*"},
        (keys("info"),),
    ),
    Replay("post", "train/embedding", A1111_TRAIN_EMBEDDING, (keys("info"),)),
    Replay("get", "progress", checks=(keys("progress", "eta_relative", "state", "current_image", "textinfo"),)),
    Replay("post", "interrupt", checks=(exactly({}),)),
    Replay("post", "skip", checks=(exactly(None),)),
    Replay("get", "samplers", checks=(items("name", "aliases", "options"),)),
    Replay("get", "schedulers", checks=(items("name", "label", "aliases", "default_rho", "need_inner_model"),)),
    Replay("get", "upscalers", checks=(items("name", "model_name", "model_path", "model_url", "scale"),)),
    Replay("get", "latent-upscale-modes", checks=(items("name"),)),
    Replay("get", "sd-vae", checks=(items("model_name", "filename", may_be_empty=True),)),
    Replay("get", "face-restorers", checks=(items("name", "cmd_dir"),)),
    Replay("get", "prompt-styles", checks=(items("name", "prompt", "negative_prompt", may_be_empty=True),)),
    Replay("get", "embeddings", checks=(keys("loaded", "skipped"),)),
    Replay("post", "refresh-embeddings", checks=(exactly(None),)),
    Replay("get", "realesrgan-models", checks=(items("name", "path", "scale", may_be_empty=True),)),
    Replay("get", "loras", checks=(items("name", "alias", "path", "metadata", may_be_empty=True),)),
    Replay("get", "hypernetworks", checks=(items("name", "path", may_be_empty=True),)),
    Replay(
        "post",
        "create/hypernetwork",
        {
            "name": "replay-hypernet",
            "enable_sizes": [768, 320, 640, 1280, 128, 64],  # A1111's, and the bundled model's widths
            "overwrite_old": True,
            "layer_structure": [1, 2, 1],
            "activation_func": "relu",
            "weight_init": "Normal",
        },
        (keys("info"),),
    ),
    Replay(
        "post",
        "train/hypernetwork",
        {
            "hypernetwork_name": "replay-hypernet",
            "learn_rate": "0.00001",
            "batch_size": 1,
            "gradient_step": 1,
            "data_root": "replay-train",
            "log_directory": "textual_inversion",
            "training_width": 64,
            "training_height": 64,
            "varsize": False,
            "steps": 1,
            "clip_grad_mode": "disabled",
            "clip_grad_value": "0.1",
            "shuffle_tags": False,
            "tag_drop_out": 0,
            "latent_sampling_method": "once",
            "use_weight": False,
            "create_image_every": 0,
            "save_hypernetwork_every": 0,
            "template_filename": "hypernetwork.txt",
            "preview_from_txt2img": False,
        },
        (keys("info"),),
    ),
    Replay("post", "refresh-checkpoints", checks=(exactly(None),)),
    Replay("post", "refresh-vae", checks=(exactly(None),)),
    Replay("post", "refresh-loras", checks=(exactly(None),)),
    Replay("get", "memory", checks=(keys("ram", "cuda"),)),
    Replay("get", "cmd-flags", checks=(keys("listen", "port", "api", "api_auth", "ckpt_dir", "lora_dir"),)),
    Replay("get", "scripts", checks=(keys("txt2img", "img2img"),)),
    Replay("get", "script-info", checks=(items("name", "is_alwayson", "is_img2img", "args", may_be_empty=True),)),
    Replay("get", "extensions", checks=(items("name", "remote", "branch", "enabled", may_be_empty=True),)),
    Replay("post", "unload-checkpoint", checks=(exactly({}),)),
    Replay("post", "reload-checkpoint", checks=(exactly({}),)),
    # Tasks: the queue is paused while tasks wait to be cancelled and requeued, so these rows come last.
    Replay(
        "post",
        "txt2img",
        {**WEBUIAPI_TXT2IMG, "force_task_id": "task(replay-done)"},
        (GENERATION_ANSWER,),
        label="force_task_id",
    ),
    Replay("get", "tasks?state=done", checks=(keys("paused", "tasks"),)),
    Replay(
        "get",
        "tasks/task(replay-done)",
        checks=(keys("id", "state", "request", "images", "info"),),
        served_as="/sdapi/v1/tasks/{task_id}",
    ),
    Replay("get", "tasks/task(replay-done)/images/0", served_as="/sdapi/v1/tasks/{task_id}/images/{index}"),
    Replay("post", "tasks/pause", checks=(exactly({"paused": True}),)),
    Replay(
        "post",
        "tasks/txt2img",
        {**WEBUIAPI_TXT2IMG, "force_task_id": "task(replay-1)"},
        (keys("id", "state", "position"),),
        status=202,
    ),
    Replay(
        "post",
        "tasks/img2img",
        {**A1111_IMG2IMG, "force_task_id": "task(replay-2)"},
        (keys("id", "state", "position"),),
        status=202,
    ),
    Replay(
        "post",
        "/internal/progress",
        {"id_task": "task(replay-1)", "id_live_preview": -1, "live_preview": True},
        (keys("active", "queued", "completed", "progress", "eta", "live_preview", "id_live_preview", "textinfo"),),
    ),
    Replay("get", "/internal/progress?id_task=task(replay-2)", checks=(keys("active", "queued", "completed"),)),
    Replay("post", "tasks/task(replay-2)/cancel", served_as="/sdapi/v1/tasks/{task_id}/cancel"),
    Replay("post", "tasks/task(replay-2)/requeue", served_as="/sdapi/v1/tasks/{task_id}/requeue"),
    Replay("post", "tasks/resume", checks=(exactly({"paused": False}),)),
    Replay("delete", "tasks", checks=(keys("removed"),)),
    # sd-webui-controlnet's API
    Replay("get", "/controlnet/version", checks=(exactly({"version": 2}),)),
    Replay("get", "/controlnet/model_list?update=true", checks=(keys("model_list"),)),
    Replay(
        "get",
        "/controlnet/module_list?alias_names=false",
        checks=(keys("module_list", "module_detail"),),
    ),
    Replay("get", "/controlnet/settings", checks=(keys("control_net_unit_count"),)),
    Replay("get", "/controlnet/control_types", checks=(keys("control_types"),)),
    Replay(
        "post",
        "/controlnet/detect",
        {
            "controlnet_module": "canny",
            "controlnet_input_images": [png_base64(32, 32)],
            "controlnet_processor_res": 64,
            "controlnet_threshold_a": 100,
            "controlnet_threshold_b": 200,
        },
        (keys("images", "info"),),
    ),
)

# Served only with --api-server-stop, and each ends its server: one server per row.
SERVER_CONTROL_REPLAYS = (
    Replay("post", "server-stop", checks=(exactly("Stopping."),)),
    Replay("post", "server-restart", checks=(exactly("Restarting."),)),
    Replay("post", "server-kill", checks=(exactly(None),)),
)


def decoded(answer) -> Any:
    """The answer's JSON, or its text when it is not JSON (A1111's `Stopping.`)."""
    return answer.json() if answer.headers.get("content-type", "").startswith("application/json") else answer.text


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the whole replay (the bundled tiny model is listed with no model files)."""
    root = tmp_path_factory.mktemp("replay") / "data"
    write_tiny_blip(root / "models" / "BLIP" / "blip-tiny")  # for interrogate
    write_tiny_clip_model(root / "models" / "CLIP" / "clip-tiny")
    (root / "replay-train").mkdir()
    Image.new("RGB", (64, 64), "purple").save(root / "replay-train" / "purple.png")  # for train/hypernetwork
    (root / "train-images").mkdir(parents=True)
    Image.new("RGB", (64, 64), (140, 40, 200)).save(root / "train-images" / "purple.png")  # for train/embedding
    running = start_server(open_app(root))
    yield running
    running.stop()


@pytest.mark.parametrize("replay", REPLAYS, ids=lambda replay: replay.id)
def test_replay(server, replay: Replay):
    with server.client() as client:
        answer = client.request(replay.method.upper(), replay.path, json=replay.body)
    assert answer.status_code == replay.status, answer.text
    for check in replay.checks:
        check(decoded(answer))


@pytest.mark.parametrize("replay", SERVER_CONTROL_REPLAYS, ids=lambda replay: replay.id)
def test_server_control_replay(tmp_path, replay: Replay):
    running = start_server(open_app(tmp_path / "data"), ServerOptions(api_server_stop=True))
    try:
        with running.client() as client:
            answer = client.request(replay.method.upper(), replay.path, json=replay.body)
        assert answer.status_code == 200, answer.text
        for check in replay.checks:
            check(decoded(answer))
        running.thread.join(30)
        assert not running.thread.is_alive(), "the server shut down"
    finally:
        running.stop()


def test_every_route_has_a_replay(tmp_path):
    """A route the API serves (per its OpenAPI schema) without a row in REPLAYS fails here."""
    options = ServerOptions(api_server_stop=True)
    paths = create_api(open_app(tmp_path / "data"), JobQueue(), options).openapi()["paths"]
    served = {(method, path) for path, operations in paths.items() for method in operations}
    replayed = {(replay.method, replay.template) for replay in REPLAYS + SERVER_CONTROL_REPLAYS}
    assert served - replayed == set(), "add a replay row for each new route"
    assert replayed - served == set(), "replay rows for routes the server does not serve"
