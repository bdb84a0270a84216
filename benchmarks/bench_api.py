"""API + job-queue overhead per image: HTTP /sdapi/v1/txt2img vs calling the engine directly.

Uses the bundled tiny model when present (else a tiny random checkpoint generated here),
runs the same requests both ways in one process, alternating rounds, and prints a table
with the ratio. Target: < 5% overhead per image.

    .venv/bin/python benchmarks/bench_api.py [--requests 20] [--steps 20] [--size 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path


def make_data_dir(root: Path) -> Path:
    from sdstudio.models.detect import bundled_tiny_model

    data = root / "data"
    if bundled_tiny_model() is None:
        import torch
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        from sdstudio.models.saver import ldm_yaml_for, save_checkpoint

        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=16,
            block_out_channels=(64, 128),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=128,
            attention_head_dim=2,
        )
        vae = AutoencoderKL(
            block_out_channels=(32, 64, 64),
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            layers_per_block=1,
            sample_size=64,
        )
        text = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408,
                hidden_size=128,
                intermediate_size=512,
                num_hidden_layers=2,
                num_attention_heads=2,
                max_position_embeddings=77,
            )
        )
        folder = data / "models" / "Stable-diffusion"
        folder.mkdir(parents=True)
        save_checkpoint(
            folder / "bench-random.safetensors",
            unet=unet,
            vae=vae,
            text_encoder=text,
            yaml_text=ldm_yaml_for(unet.config, vae.config, scale_factor=1.0),
        )
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    import httpx
    import uvicorn

    from sdstudio.app import open_app
    from sdstudio.engine.request import Txt2ImgRequest
    from sdstudio.server.app import ServerOptions, create_api
    from sdstudio.server.job_queue import JobQueue

    root = Path(tempfile.mkdtemp(prefix="bench-api-"))
    app = open_app(make_data_dir(root))
    queue = JobQueue()
    api = create_api(app, queue, ServerOptions())
    config = uvicorn.Config(api, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    queue.start()
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)

    body = {
        "prompt": "a red circle on a blue background",
        "negative_prompt": "",
        "seed": 1,
        "steps": args.steps,
        "sampler_name": "Euler a",
        "cfg_scale": 7,
        "width": args.size,
        "height": args.size,
    }

    from sdstudio.engine.service import GenerationControl

    def direct(seed: int) -> float:
        # Same engine work as the API path: live previews on, as the queue's progress sink asks for them.
        start = time.perf_counter()
        app.engine.txt2img(
            Txt2ImgRequest(**{**body, "seed": seed, "do_not_save_samples": True, "do_not_save_grid": True}),
            GenerationControl(on_progress=lambda event: None),
        )
        return time.perf_counter() - start

    def over_http(seed: int) -> float:
        start = time.perf_counter()
        answer = client.post("/sdapi/v1/txt2img", json={**body, "seed": seed})
        answer.raise_for_status()
        return time.perf_counter() - start

    direct(0), over_http(0)  # warm-up: model load, first-call costs
    times: dict[str, list[float]] = {"engine direct": [], "HTTP API + queue": []}
    for i in range(args.requests):
        times["engine direct"].append(direct(i + 1))
        times["HTTP API + queue"].append(over_http(i + 1))
    client.close()
    server.should_exit = True
    queue.stop()

    base = statistics.median(times["engine direct"])
    print(f"txt2img {args.size}x{args.size}, {args.steps} steps Euler a, {args.requests} requests each, alternating")
    print(f"{'path':<20} {'median s/image':>15} {'mean s/image':>13} {'images/s':>9} {'ratio':>7}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<20} {median:>15.4f} {statistics.mean(values):>13.4f} {1 / median:>9.2f} {median / base:>7.3f}")
    overhead = statistics.median(times["HTTP API + queue"]) - base
    print(f"overhead per image: {overhead * 1000:.1f} ms ({overhead / base:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
