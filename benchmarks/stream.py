"""The live stream's speed: frames/s delivered, per-frame split, stroke-to-frame latency, memory.

    python -m benchmarks.stream --arch sd15 --height 512 --width 512 --layers 4 --frames 200 --baseline --compile
    python -m benchmarks.stream --arch tiny --frames 20            # CPU, seconds (the CI smoke run)
    python -m benchmarks.stream --arch demo --height 256 --width 256 --frames 60   # the demo model on a CPU
    python -m benchmarks.stream --arch sd15 --sweep --frames 40 --compile
    python -m benchmarks.stream --arch sd15 --height 256 --layers 4 --region-mode exact,attention   # both modes
    python -m benchmarks.stream --arch sd15 --height 256 --layers 1-8 --region-mode exact,attention  # a layer sweep

Each path drives the real `StreamRunner` through a real `SemanticCanvas` while a painter thread sends
mask patches at ~20 Hz (see `live.py`). "Layers" counts the background prompt as one: `--layers 4` is
a background prompt + 3 painted layers (`--layers 1`: one painted layer alone). Paths, side by side
in one run on one model: `baseline` (with `--baseline`: the straightforward loop), `fast` (this
package's frame path, eager model) and `fast+cudagraph` / `fast+inductor` (with `--compile`), each in
the exact region mode; with `--region-mode exact,attention` each fast path runs in the attention mode too,
as its own path (`fast+attention`, `fast+inductor+attention`, ...), and the result gives the attention
mode's speed-up over the exact one (`attention_over_exact`: the ratio of frame times, per path).
Prints a table and the JSON summary (also written to `--json`).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import sys
import time
import traceback
from typing import Any

import torch

from .architectures import ARCHS, NotAvailable, build
from .live import STAGES, compare_paths, measure_path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=ARCHS, default="sd15")
    parser.add_argument("--height", type=int, default=None, help="pixels (default 512; 64 for tiny)")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--layers", type=layer_counts, default=[4],
                        help="prompts including the background prompt: a count, a list (1,2,4) or a range (1-8)")
    parser.add_argument("--region-mode", type=region_modes, default=["exact"],
                        help="exact, attention, or both (exact,attention): each as its own paths")
    parser.add_argument("--slots", type=int, default=None, help="stream slots (default: the engine's 5)")
    parser.add_argument("--mask-strength", type=float, default=1.0,
                        help="the painted layers' mask strength (< 1: no weight at the noisiest slots, which are skipped)")
    parser.add_argument("--frames", type=int, default=200, help="measured frames per path")
    parser.add_argument("--warmup-frames", type=int, default=10)
    parser.add_argument("--rate", type=float, default=20.0, help="mask patches per second")
    parser.add_argument("--baseline", action="store_true", help="also run the straightforward path")
    parser.add_argument("--compile", nargs="?", const="cudagraph", default=None,
                        help="also run compiled paths: cudagraph (default), inductor, or a comma list")
    parser.add_argument("--no-eager", action="store_true", help="skip the eager fast path when compiling")
    parser.add_argument("--no-compare", action="store_true", help="skip the same-frames check")
    parser.add_argument("--sweep", action="store_true", help="layers 1..8 x sizes 512, 768")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", default=None, help="write the summary here")
    parser.add_argument("--path-timeout", type=float, default=300.0, help="seconds per path before giving up")
    parser.add_argument("--settle-timeout", type=float, default=30.0, help="seconds to wait for the still image after a path")
    parser.add_argument("--bare-repeats", type=int, default=10, help="timed calls of the bare model batch per path")
    parser.add_argument("--keep-idle-workers", action="store_true",
                        help="do not free the starting thread's idle OpenMP workers (what the canvas did before; "
                             "see semdraw_widget/engine/cpu_threads.py)")
    return parser.parse_args(argv)


def layer_counts(text: str) -> list[int]:
    """"4" -> [4]; "1,2,4" -> [1, 2, 4]; "1-8" -> [1, ..., 8]."""
    counts = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        counts += list(range(int(low), int(high or low) + 1))
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"layer counts must be at least 1 (got {text!r})")
    return counts


def region_modes(text: str) -> list[str]:
    from semdraw_widget.engine.regional_attention import REGION_MODES

    modes = [mode for mode in text.split(",") if mode]
    if not modes or set(modes) - set(REGION_MODES):
        raise argparse.ArgumentTypeError(f"region modes are a comma list of {', '.join(REGION_MODES)} (got {text!r})")
    return modes


def environment(device: torch.device) -> dict:
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "python": platform.python_version(), "device": str(device),
            "command": "python -m benchmarks.stream " + " ".join(sys.argv[1:])}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def slot_indices(slots: int | None):
    if slots is None:
        return None
    return tuple(i * 50 // slots for i in range(slots))  # spread over the 50-step schedule, like LCM's


def run_config(model: Any, height: int, width: int, layers: int, args: argparse.Namespace, compare: bool) -> dict:
    from semdraw_widget.engine import StreamMultiDiffusion

    kinds = [] if not args.baseline else ["baseline"]
    compiled = [m for m in (args.compile or "").split(",") if m]
    if not (compiled and args.no_eager):
        kinds.append("fast")
    kinds += [f"fast+{m}" for m in compiled]
    # (path name, kind, region mode): the exact mode's paths keep their names; the baseline is the exact loop
    paths = [(kind if region_mode == "exact" else f"{kind}+attention", kind, region_mode)
             for region_mode in args.region_mode for kind in kinds if region_mode == "exact" or kind != "baseline"]
    extra = {} if args.slots is None else {"t_index_list": slot_indices(args.slots)}
    result: dict[str, Any] = {"height": height, "width": width, "layers": layers, "mask_strength": args.mask_strength, "paths": {}}
    for mode, kind, region_mode in paths:
        compile = kind.split("+", 1)[1] if "+" in kind else False
        started = time.perf_counter()
        try:
            pipeline = StreamMultiDiffusion(model.device, model=model, height=height, width=width, profile=True,
                                            compile=compile, region_mode=region_mode, **extra)
            result["slots"] = pipeline.num_slots
            path = measure_path(pipeline, layers, args.frames, args.warmup_frames, baseline=kind == "baseline",
                                rate_hz=args.rate, timeout_s=args.path_timeout, mask_strength=args.mask_strength,
                                settle_timeout_s=args.settle_timeout, bare_repeats=args.bare_repeats)
        except Exception as exc:
            traceback.print_exc()
            path = {"error": f"{type(exc).__name__}: {exc}"}
        path["wall_s"] = time.perf_counter() - started
        result["paths"][mode] = path
        pipeline = None
        gc.collect()
        if model.device.type == "cuda":
            torch.cuda.empty_cache()
        print(f"# {height}x{width} layers={layers} {mode}: " + json.dumps(path), flush=True)
    base = result["paths"].get("baseline", {}).get("fps")
    for mode, path in result["paths"].items():
        if base and mode != "baseline" and "fps" in path:
            path["speedup_vs_baseline"] = path["fps"] / base
    ratios = {}
    for mode, kind, region_mode in paths:
        exact = result["paths"].get(kind, {})
        path = result["paths"][mode]
        if region_mode == "attention" and "fps" in path and "fps" in exact:
            path["speedup_vs_exact"] = ratios[kind] = path["fps"] / exact["fps"]  # = exact frame time / attention's
    if ratios:
        result["attention_over_exact"] = ratios
    if compare:
        compile = compiled[-1] if compiled else False
        try:
            result["same_frames"] = compare_paths(model, height, width, layers, compile, mask_strength=args.mask_strength)
        except Exception as exc:
            traceback.print_exc()
            result["same_frames"] = {"error": f"{type(exc).__name__}: {exc}"}
    return result


def table(results: list[dict]) -> str:
    head = ["size", "layers", "path", "fps", "frame ms", "x base", "x exact", "batch", "frame/model", "model ms",
            "lat med", "lat p95", "peak GB", "ready s", *STAGES]
    rows = [head]
    fmt = lambda v, p=1: "-" if v is None else f"{v:.{p}f}"
    for result in results:
        for mode, path in result["paths"].items():
            size = f"{result['width']}x{result['height']}"
            if "error" in path:
                rows.append([size, str(result["layers"]), mode, path["error"][:60]])
                continue
            stages = path["stages_ms"]
            rows.append([
                size, str(result["layers"]), mode, fmt(path["fps"], 2), fmt(path["frame_ms"]),
                fmt(path.get("speedup_vs_baseline"), 2), fmt(path.get("speedup_vs_exact"), 2), str(path["model_batch"]),
                fmt(path["frame_over_bare_model"], 2), fmt(path["bare_model_ms"]),
                fmt(path["latency_ms"]["median"], 0), fmt(path["latency_ms"]["p95"], 0),
                fmt(path["peak_gpu_memory"].get("allocated_gb"), 2), fmt(path.get("ready_s")),
                *(fmt(stages.get(s), 2) for s in STAGES),
            ])
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(head))]
    return "\n".join("  ".join(cell.rjust(widths[i]) for i, cell in enumerate(row)) for row in rows)


def sweep_table(results: list[dict]) -> str:
    """Frame milliseconds per layer count (rows) and path (columns), per canvas size: how cost grows with layers."""
    names = list(dict.fromkeys(name for result in results for name in result["paths"]))
    rows = [["size", "layers", *(f"{name} ms" for name in names)]]
    for result in results:
        cells = [result["paths"].get(name, {}).get("frame_ms") for name in names]
        rows.append([f"{result['width']}x{result['height']}", str(result["layers"]),
                     *("-" if ms is None else f"{ms:.1f}" for ms in cells)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(widths[i]) for i, cell in enumerate(row)) for row in rows)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.keep_idle_workers:
        from semdraw_widget.engine import cpu_threads

        cpu_threads.release_idle_workers = lambda: False
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and args.arch not in ("tiny", "demo") else "cpu"))
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    default_size = 64 if args.arch == "tiny" else 512
    summary: dict[str, Any] = {"arch": args.arch, "environment": environment(device), "results": []}
    try:
        started = time.perf_counter()
        model = build(args.arch, device, dtype)
        summary["model_build_s"] = time.perf_counter() - started
    except NotAvailable as exc:
        summary["error"] = str(exc)
        print(json.dumps(summary, indent=2))
        return summary
    if args.sweep:
        configs = [(size, size, layers) for size in (512, 768) for layers in range(1, 9)]
    else:
        configs = [(args.height or default_size, args.width or args.height or default_size, layers) for layers in args.layers]
    for height, width, layers in configs:
        summary["results"].append(run_config(model, height, width, layers, args, compare=not (args.sweep or args.no_compare)))
        if args.json:  # keep what is done even if a later configuration fails
            with open(args.json, "w") as file:
                json.dump(summary, file, indent=2)
    print(table(summary["results"]))
    if len(summary["results"]) > 1:
        print(sweep_table(summary["results"]))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
