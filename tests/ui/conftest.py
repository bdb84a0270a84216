"""Fixtures for the web UI tests: a running `sdstudio webui` and a headless Chromium.

The server is the real `sdstudio webui --api` as a subprocess on a free port over a
temporary data dir, with the bundled tiny model (the registry always lists it). The browser
is Debian's Chromium (scripts/install_browser.sh) driven by Playwright; Playwright's own
browser download is never used. Screenshots go to artifacts/ui/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "ui"
CHROMIUM = os.environ.get("SDSTUDIO_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps trying to reach Google's
# services, and on a machine without network those connections fail noisily.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_TIMEOUT = 180  # seconds; generous because the CPU is shared with other work


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebUiServer:
    """A `sdstudio webui` subprocess; `url`, `data_dir`, `log()` and `stop()`."""

    def __init__(self, data_dir: Path, port: int, log_path: Path, flags: tuple[str, ...] = ()):
        self.data_dir, self.port, self.log_path = data_dir, port, log_path
        self.url = f"http://127.0.0.1:{port}/"
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "SDSTUDIO_DATA_DIR": str(data_dir),
            "PYTHONUNBUFFERED": "1",
        }
        command = [
            sys.executable,
            "-m",
            "sdstudio.cli.main",
            "--data-dir",
            str(data_dir),
            "webui",
            "--api",
            "--port",
            str(port),
            *flags,
        ]
        self._log = open(log_path, "wb")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def wait_ready(self) -> float:
        """Poll the page until it answers; returns seconds from spawn to the first good answer."""
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sdstudio webui exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - self.started
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"sdstudio webui did not answer within {SERVER_START_TIMEOUT} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


def running_webui(tmp_path_factory, *flags: str, prepare=None):
    """Start `sdstudio webui --api [flags]` over a fresh data dir, yield it once it answers, then stop it.

    `prepare(data_dir)` adds files to the data dir before the server starts (extensions...).
    """
    data_dir = tmp_path_factory.mktemp("webui") / "data"
    data_dir.mkdir()
    _add_extra_network_files(data_dir)
    if prepare is not None:
        prepare(data_dir)
    server = WebUiServer(data_dir, free_port(), data_dir.parent / "webui.log", flags)
    try:
        server.ready_seconds = server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def webui_server(tmp_path_factory):
    """A running web UI over a fresh data dir (module-scoped: starting it costs seconds)."""
    yield from running_webui(tmp_path_factory)


@pytest.fixture(scope="module")
def scripts_webui_server(tmp_path_factory):
    """A running web UI whose data dir has the sample extension "twice" (a selectable script) installed."""
    samples = Path(__file__).resolve().parents[1] / "extensions" / "sample_extensions"

    def add_twice(data_dir: Path) -> None:
        shutil.copytree(samples / "twice", data_dir / "extensions" / "twice")

    yield from running_webui(tmp_path_factory, prepare=add_twice)


def add_localized_page(data_dir: Path) -> None:
    """The zh_CN localization chosen, and an extension with a script and a style sheet for the page."""
    (data_dir / "config.json").write_text(json.dumps({"localization": "zh_CN"}), encoding="utf-8")
    folder = data_dir / "extensions" / "page_files"
    (folder / "javascript").mkdir(parents=True)
    (folder / "javascript" / "mark.js").write_text(
        "onUiLoaded(() => { document.body.dataset.pageFiles = 'loaded'; });\n", encoding="utf-8"
    )
    (folder / "style.css").write_text("#txt2img_generate { letter-spacing: 3px; }\n", encoding="utf-8")


@pytest.fixture(scope="module")
def localized_webui_server(tmp_path_factory):
    """A running web UI in zh_CN whose data dir has an extension with javascript/ and style.css."""
    yield from running_webui(tmp_path_factory, prepare=add_localized_page)


@pytest.fixture(scope="module")
def guarded_webui_server(tmp_path_factory):
    """A running web UI with `--auth ann:secret`: Gradio's login form in front of the UI, the API behind basic auth."""
    yield from running_webui(tmp_path_factory, "--auth", "ann:secret")


@pytest.fixture
def own_guarded_webui_server(tmp_path_factory):
    """Like guarded_webui_server, for one test that ends the process."""
    yield from running_webui(tmp_path_factory, "--auth", "ann:secret")


def _add_extra_network_files(data_dir: Path) -> None:
    """A LoRA with a preview image and an embedding without one, for the Extra Networks cards.

    They are only listed and inserted into prompts, never loaded, so their bytes do not matter.
    """
    from PIL import Image

    lora_dir = data_dir / "models" / "Lora"
    lora_dir.mkdir(parents=True, exist_ok=True)
    (lora_dir / "inkwash.safetensors").write_bytes(b"not loaded by these tests")
    Image.new("RGB", (64, 64), (30, 30, 90)).save(lora_dir / "inkwash.preview.png")
    embeddings = data_dir / "embeddings"
    embeddings.mkdir(parents=True, exist_ok=True)
    (embeddings / "sharp-lines.pt").write_bytes(b"not loaded by these tests")


@pytest.fixture
def running_queue():
    """A started job queue, stopped after the test."""
    from sdstudio.engine.job_queue import JobQueue

    queue = JobQueue()
    queue.start()
    yield queue
    queue.stop()


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium under Playwright; skipped when either is missing."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: run scripts/install_browser.sh (as root) or set SDSTUDIO_CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def write_wide_checkpoint():
    """Writes a second checkpoint with another native size: the bundled tiny model's weights, 128x128 in its yaml.

    The UNet is convolutional, so the same weights draw at any size; the yaml's latent image_size
    (32 instead of 16) is what says the model's native size.
    """
    from sdstudio.models.detect import bundled_tiny_model

    tiny = bundled_tiny_model()
    if tiny is None:
        pytest.skip("bundled tiny model not present")

    def write(folder: Path, name: str = "wide-tiny") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{name}.safetensors"
        target.write_bytes(tiny.read_bytes())
        yaml_text = tiny.with_suffix(".yaml").read_text(encoding="utf-8")
        target.with_suffix(".yaml").write_text(yaml_text.replace("    image_size: 16\n", "    image_size: 32\n", 1))
        return target

    return write
