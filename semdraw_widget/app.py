"""semdraw-app: the canvas as a standalone web page, the seed project's demo apps as one command.

    semdraw-app [--model KEY] [--height 512] [--width 512] [--bootstrap_steps 1] [--bootstrap_mix_steps 1]
                [--guidance_scale 1] [--seed -1] [--device 0|cpu] [--port 8000] [--family 1.5|xl|3]

(also `python -m semdraw_widget.app`). The page is a one-cell notebook served by Voilà, Jupyter's app server
(`pip install semdraw_widget[app]`): each visitor gets a kernel that loads the model as a notebook would
(`load_pipeline`, with its banner when it falls back to the demo model) and shows the canvas. The command prints
the page's address and runs until Ctrl+C, which stops the server and its kernels.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Sequence

FAMILIES = ("1.5", "xl", "3")
ADDRESS = re.compile(r"https?://\S+")
STOP_GRACE_S = 10.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="semdraw-app",
        description="Serve the SemanticDraw canvas as a web page (through Voilà) and print its address.",
    )
    parser.add_argument("--model", default=None, help="a hub id, a local diffusers folder, a .safetensors file, or a "
                        "built-in key (tiny, demo); default: SEMDRAW_MODEL, else SD 1.5 on a GPU and the tiny model elsewhere")
    parser.add_argument("-H", "--height", type=int, default=512, help="canvas height in pixels (a multiple of 8)")
    parser.add_argument("-W", "--width", type=int, default=512, help="canvas width in pixels (a multiple of 8)")
    parser.add_argument("--bootstrap_steps", type=int, default=1, help="slots at which each region starts out alone")
    parser.add_argument("--bootstrap_mix_steps", type=float, default=1.0,
                        help="slots whose bootstrapping background is white rather than the background image")
    parser.add_argument("--guidance_scale", type=float, default=1.0,
                        help="classifier-free guidance with the negative prompts above 1 (a second model pass)")
    parser.add_argument("--seed", type=int, default=-1, help="the noise seed; -1 picks one at random")
    parser.add_argument("--device", default=None, help="a GPU number (0, 1, ...) or cpu; default: the first GPU, else cpu")
    parser.add_argument("--port", type=int, default=8000, help="the page's port (the next free one if it is taken)")
    parser.add_argument("--family", choices=FAMILIES, default=None,
                        help="the model family when it cannot be detected from --model: 1.5, xl or 3")
    args = parser.parse_args(argv)
    if args.family is not None and args.model is None:
        parser.error("--family says which family --model is: give --model too")
    if args.device is not None and args.device != "cpu" and not args.device.isdigit():
        parser.error(f"--device must be a GPU number or cpu (got {args.device!r})")
    if args.seed < -1:
        parser.error(f"--seed must be a seed >= 0, or -1 for a random one (got {args.seed})")
    return args


def page_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What the page's kernel builds the canvas from (`build_canvas`): the options, the device and seed resolved."""
    device = None if args.device is None else "cpu" if args.device == "cpu" else f"cuda:{args.device}"
    seed = random.randrange(2**31) if args.seed == -1 else args.seed
    return {
        "model": args.model, "device": device, "width": args.width, "height": args.height, "seed": seed,
        "family": args.family, "bootstrap_steps": args.bootstrap_steps, "bootstrap_mix_steps": args.bootstrap_mix_steps,
        "guidance_scale": args.guidance_scale,
    }


def build_canvas(settings: dict[str, Any]):
    """The app's canvas: the pipeline `load_pipeline` chooses for `settings` (as a notebook gets it, banner and all),
    guided with the negative prompts when guidance_scale > 1, and a first layer to paint on (type its prompt)."""
    from .engine.models.choice import load_pipeline
    from .widget import SemanticCanvas

    options = {"sd_version": settings["family"]} if settings["family"] else {}
    pipeline = load_pipeline(
        settings["model"], device=settings["device"], width=settings["width"], height=settings["height"],
        seed=settings["seed"], bootstrap_steps=settings["bootstrap_steps"], bootstrap_mix_steps=settings["bootstrap_mix_steps"],
        cfg_type="full", guidance_scale=settings["guidance_scale"], **options,
    )
    canvas = SemanticCanvas(pipeline=pipeline, width=settings["width"], height=settings["height"])
    canvas.add_layer("", name="Layer 1")
    return canvas


def write_page(folder: Path, settings: dict[str, Any]) -> Path:
    """The page: a notebook of one cell that builds and shows the canvas."""
    import nbformat

    code = f"from semdraw_widget.app import build_canvas\n\ncanvas = build_canvas({settings!r})\ncanvas"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "SemanticDraw.ipynb"
    nbformat.write(notebook, path)
    return path


def voila_command(page: Path, port: int) -> list[str]:
    return [
        sys.executable, "-m", "voila", str(page), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
        # a model may take minutes to download and load the first time
        "--VoilaExecutor.timeout=1800", "--VoilaExecutor.startup_timeout=120",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import voila  # noqa: F401  (only checked: the server runs in its own process)
    except ImportError:
        print("semdraw-app serves the page with Voilà, which is not installed: pip install 'semdraw_widget[app]' "
              "(or pip install voila)", file=sys.stderr)
        return 2
    settings = page_settings(args)
    with tempfile.TemporaryDirectory(prefix="semdraw-app-") as folder:
        page = write_page(Path(folder), settings)
        # Its own session: Ctrl+C reaches this process only, which then stops the server (a Jupyter server that
        # gets the SIGINT itself asks on the terminal whether to shut down).
        server = subprocess.Popen(voila_command(page, args.port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, bufsize=1, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        relay = threading.Thread(target=_relay, args=(server, settings), name="semdraw-app-log", daemon=True)
        relay.start()
        try:
            return server.wait()
        except KeyboardInterrupt:
            print("\nsemdraw-app: stopping the server and its kernels...", flush=True)
            _stop(server)
            print("semdraw-app: stopped", flush=True)
            return 0


def _relay(server: subprocess.Popen, settings: dict[str, Any]) -> None:
    """Pass the server's output on, and say where the page is once the server says it is up."""
    announced = False
    for line in server.stdout:
        sys.stderr.write(line)
        if not announced and (address := ADDRESS.search(line)) and "running at" not in line:
            announced = True
            model = settings["model"] or os.environ.get("SEMDRAW_MODEL") or "the default model"
            print(f"semdraw-app: open {address.group(0)} in a browser (model: {model}, seed: {settings['seed']}); "
                  "Ctrl+C stops it", flush=True)


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM (Voilà shuts its kernels down), then SIGKILL if it has not stopped in time."""
    if server.poll() is not None:
        return
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
