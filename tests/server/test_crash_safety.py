"""Crash safety: every file sdstudio writes is whole after a kill -9, and leftovers are swept at start."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from sdstudio.app import open_app
from sdstudio.config import STALE_TEMP_AGE_S, atomic_path, atomic_write_bytes, remove_stale_temp_files

from .conftest import ServeProcess


def make_old(path: Path) -> None:
    past = time.time() - STALE_TEMP_AGE_S - 5
    os.utime(path, (past, past))


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "styles.csv"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_start_sweeps_temp_files_of_killed_writes_but_not_fresh_or_foreign_ones(tmp_path):
    paths = open_app(tmp_path / "data").paths
    killed = [
        paths.root / ".config.json.k2j3h4g5.tmp",
        paths.cache_dir / ".hashes.json.abcdefgh.tmp",
        paths.folder("lora") / ".mine.safetensors.zz11yy22.tmp",
    ]
    in_progress = paths.root / ".styles.csv.q1w2e3r4.tmp"  # another process is writing it right now
    foreign = [paths.root / "notes.tmp", paths.folder("lora") / "mine.safetensors"]
    for path in [*killed, in_progress, *foreign]:
        path.write_bytes(b"x" * 1024)
    for path in [*killed, *foreign]:
        make_old(path)
    open_app(paths.root)
    assert not any(path.exists() for path in killed)
    assert in_progress.exists() and all(path.exists() for path in foreign)
    day = paths.outputs / "txt2img-images" / "2026-12-03"
    day.mkdir(parents=True)
    cut_short = day / ".00007-1-a cat.png.abcd1234.tmp"
    cut_short.write_bytes(b"\x89PNG half")
    make_old(cut_short)
    assert remove_stale_temp_files([paths.outputs]) == [cut_short]  # what a server start sweeps


def whole_png(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except (OSError, SyntaxError):
        return False


@pytest.mark.slow
def test_kill_9_during_saves_never_leaves_a_truncated_file(data_dir, tmp_path):
    """20 times: images and grids being saved while /options rewrites config.json, then kill -9."""
    rng = random.Random(0)
    body = {
        "prompt": "a red circle",
        "steps": 1,
        "width": 64,
        "height": 64,
        "batch_size": 4,
        "n_iter": 25,
        "save_images": True,
        "sampler_name": "Euler",
    }
    for trial in range(20):
        server = ServeProcess(data_dir, tmp_path / f"serve-{trial}.log")
        try:
            server.wait_ready()
            stop = threading.Event()

            def rewrite_options(url=server.url, stop=stop):
                with httpx.Client(base_url=url, timeout=30) as client:
                    while not stop.is_set():
                        try:
                            client.post("/sdapi/v1/options", json={"jpeg_quality": rng.randint(50, 95)})
                        except httpx.HTTPError:
                            return

            def generate(url=server.url):
                try:
                    httpx.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=120)
                except httpx.HTTPError:
                    pass

            workers = [threading.Thread(target=rewrite_options), threading.Thread(target=generate)]
            for worker in workers:
                worker.start()
            # Once this trial's first image is on disk, images keep coming: kill at a random moment then.
            outputs = data_dir / "outputs"
            before = len(list(outputs.rglob("*.png"))) if outputs.exists() else 0
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and len(list(outputs.rglob("*.png"))) <= before:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 2.0))
            server.process.kill()
            server.process.wait(30)
            stop.set()
            for worker in workers:
                worker.join(60)
        finally:
            server.stop()
    pngs = [p for p in (data_dir / "outputs").rglob("*.png")]
    assert len(pngs) > 100, "the kills landed while images were being saved"
    truncated = [p for p in pngs if not whole_png(p)]
    assert truncated == []
    json.loads((data_dir / "config.json").read_text(encoding="utf-8"))
