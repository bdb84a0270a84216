"""Serve `sdstudio webui` over a tiny random model: the browser tests' server while no
checkpoint file can be loaded (no bundled model, no model loader yet).

Usage: python tests/ui/serve_tiny_webui.py --data-dir DIR --port PORT
Everything but the model source is the real thing: open_app, the job queue, the API,
the UI, uvicorn (sdstudio.launch.launch).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> int:
    started = time.perf_counter()
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/, for the shared tiny_models module
    from tiny_models import tiny_generation_model

    from sdstudio.app import open_app
    from sdstudio.launch import LaunchOptions, launch
    from sdstudio.engine.service import GenerationService

    app = open_app(args.data_dir)
    model = tiny_generation_model(name="tiny-random", short_hash="0123456789")
    app.engine = GenerationService(app.settings_store, app.paths, lambda name, settings: model,
                                   apply_styles=getattr(app.engine, "apply_styles", None), version="sdstudio test")
    return launch(app, LaunchOptions(port=args.port, api=True, ui=True), started=started)


if __name__ == "__main__":
    sys.exit(main())
