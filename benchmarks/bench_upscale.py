"""Tiled model upscaling: sdstudio's UpscalerRegistry vs calling spandrel directly on the same tiles.

Claim (issue 11): sdstudio's tiled upscale (feathered blending, strip-wise assembly) costs at
most 1.05x the time and memory of running the same spandrel model over the same tiles and
pasting the results, and a 2048x2048 input upscales 4x with a peak RSS under 4 GiB.

A random-weight ESRGAN of the published 4x size (23 RRDB blocks, 64 filters; RRDBNet_x4
layout) is written as safetensors into a temporary data dir. Each measurement runs in its
own subprocess so peak RSS (ru_maxrss) belongs to that run alone; the two are run in
alternation (--rounds) and the best time of each is kept, because a shared CPU makes single
timings noisy; timings exclude model loading and process start-up.

    .venv/bin/python benchmarks/bench_upscale.py                     # 1024x1024, ESRGAN 23x64 (slow on CPU)
    .venv/bin/python benchmarks/bench_upscale.py --size 256          # what fits a small CPU
    .venv/bin/python benchmarks/bench_upscale.py --big-size 2048 --big-blocks 23
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = r"""
import json, resource, sys, time
import numpy as np, torch
from PIL import Image
from pathlib import Path

mode, root = sys.argv[1], Path(sys.argv[2])
size, tile, overlap, repeats, threads = (int(arg) for arg in sys.argv[3:8])
if threads > 0:
    torch.set_num_threads(threads)
rng = np.random.default_rng(0)
image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")
model_file = root / "models" / "ESRGAN" / "4x-bench.safetensors"

if mode == "sdstudio":
    from sdstudio.config import DataPaths, Settings, SettingsStore
    from sdstudio.postprocess.upscalers import UpscalerRegistry
    paths = DataPaths(root)
    registry = UpscalerRegistry(paths, SettingsStore(paths, Settings(ESRGAN_tile=tile, ESRGAN_tile_overlap=overlap)))
    model = registry.load_model("4x-bench")
    def run():
        return registry.run_model(model, image)
else:
    # spandrel called directly: same file, same tile positions, outputs pasted (no blending).
    import spandrel
    from safetensors.torch import load_file
    from sdstudio.postprocess.upscalers import tile_starts
    descriptor = spandrel.ModelLoader().load_from_state_dict(load_file(str(model_file))).eval()
    scale = descriptor.scale
    def run():
        source = torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0)
        th, tw = min(tile, size), min(tile, size)
        out = np.empty((size * scale, size * scale, 3), np.uint8)
        for y in tile_starts(size, th, overlap):
            for x in tile_starts(size, tw, overlap):
                patch = source[..., y:y + th, x:x + tw]
                patch = patch.to(dtype=torch.float32, memory_format=torch.contiguous_format).div_(255.0)
                with torch.inference_mode():
                    result = descriptor(patch)
                    values = result[0].clamp(0, 1).permute(1, 2, 0).numpy()
                out[y * scale:(y + th) * scale, x * scale:(x + tw) * scale] = np.rint(values * 255.0).astype(np.uint8)
        return Image.fromarray(out, "RGB")

times = []
for _ in range(repeats):
    start = time.perf_counter()
    result = run()
    times.append(time.perf_counter() - start)
assert result.size == (size * 4, size * 4), result.size
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": min(times), "peak_rss_mib": peak_kib / 1024}))
"""


def write_model(root: Path, blocks: int, filters: int) -> Path:
    """A random-weight 4x ESRGAN (old RRDBNet layout) in the data dir's models/ESRGAN."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    net = ESRGAN(num_filters=filters, num_blocks=blocks, scale=4)
    path = root / "models" / "ESRGAN" / "4x-bench.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def measure(mode: str, root: Path, size: int, tile: int, overlap: int, repeats: int, threads: int) -> dict:
    """Run one measurement in a fresh Python process; returns seconds and peak RSS."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    done = subprocess.run(
        [sys.executable, "-c", WORKER, mode, str(root), str(size), str(tile), str(overlap), str(repeats), str(threads)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="input side for the comparison (default 1024)")
    parser.add_argument("--blocks", type=int, default=23, help="RRDB blocks (default 23, the published ESRGAN size)")
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--tile", type=int, default=192, help="ESRGAN_tile (A1111 default 192)")
    parser.add_argument("--overlap", type=int, default=8, help="ESRGAN_tile_overlap (A1111 default 8)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs inside each process")
    parser.add_argument("--rounds", type=int, default=2, help="alternating spandrel/sdstudio process pairs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--big-size", type=int, default=2048, help="input side for the memory check (0 = skip)")
    parser.add_argument(
        "--big-blocks", type=int, default=None, help="RRDB blocks for the memory check (default: --blocks)"
    )
    parser.add_argument(
        "--big-filters", type=int, default=None, help="filters for the memory check (default: --filters)"
    )
    parser.add_argument("--big-tile", type=int, default=None, help="tile size for the memory check (default: --tile)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-upscale-") as tmp:
        root = Path(tmp)
        write_model(root, args.blocks, args.filters)
        print(
            f"ESRGAN 4x random weights, {args.blocks} blocks x {args.filters} filters; input {args.size}x{args.size}, "
            f"tile {args.tile}, overlap {args.overlap}, best of {args.repeats}; "
            f"torch threads {args.threads or 'default'}",
            flush=True,
        )
        started = time.perf_counter()
        runs: dict[str, list[dict]] = {"spandrel": [], "sdstudio": []}
        for _ in range(args.rounds):
            for mode in runs:
                runs[mode].append(measure(mode, root, args.size, args.tile, args.overlap, args.repeats, args.threads))
        direct = {
            "seconds": min(r["seconds"] for r in runs["spandrel"]),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs["spandrel"]),
        }
        ours = {
            "seconds": min(r["seconds"] for r in runs["sdstudio"]),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs["sdstudio"]),
        }
        print(
            "all times: "
            + "; ".join(f"{mode} " + ", ".join(f"{r['seconds']:.1f}" for r in rs) for mode, rs in runs.items())
        )
        print(f"\n| {'run':<28} | {'time s':>9} | {'peak RSS MiB':>12} |")
        print(f"|{'-' * 30}|{'-' * 11}|{'-' * 14}|")
        print(f"| {'spandrel, same tiles':<28} | {direct['seconds']:>9.2f} | {direct['peak_rss_mib']:>12.0f} |")
        print(f"| {'sdstudio UpscalerRegistry':<28} | {ours['seconds']:>9.2f} | {ours['peak_rss_mib']:>12.0f} |")
        print(
            f"| {'ratio sdstudio / spandrel':<28} | {ours['seconds'] / direct['seconds']:>8.3f}x | "
            f"{ours['peak_rss_mib'] / direct['peak_rss_mib']:>11.3f}x |"
        )

        if args.big_size:
            big_blocks = args.big_blocks or args.blocks
            big_filters = args.big_filters or args.filters
            if (big_blocks, big_filters) != (args.blocks, args.filters):
                write_model(root, big_blocks, big_filters)
            big_tile = args.big_tile or args.tile
            big = measure("sdstudio", root, args.big_size, big_tile, args.overlap, 1, args.threads)
            verdict = "OK" if big["peak_rss_mib"] < 4096 else "OVER"
            print(
                f"\n{args.big_size}x{args.big_size} -> {args.big_size * 4}x{args.big_size * 4} with sdstudio "
                f"({big_blocks} blocks x {big_filters} filters, tile {big_tile}): {big['seconds']:.1f} s, "
                f"peak RSS {big['peak_rss_mib']:.0f} MiB (limit 4096 MiB: {verdict})"
            )
        print(f"\ntotal wall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
