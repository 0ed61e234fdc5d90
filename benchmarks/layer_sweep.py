"""How a frame's cost grows with the number of layers, per region mode: the engine's frame alone (no canvas,
no JPEG), so that slow devices (a CPU) can sweep many layer counts in minutes.

    python -m benchmarks.layer_sweep --arch sd15 --size 256 --layers 1-8 --region-mode exact,attention

For each layer count (the background prompt counts as one, as in `benchmarks.stream`) and mode: the scene of
`benchmarks.stream` (a background prompt and discs), one frame to warm up, then the median of `--frames` timed
frames (`StreamMultiDiffusion.__call__` with `output_type="latent"`, waited for). `benchmarks.stream
--layers 1-8` measures the same through the live canvas (frames/s, latency), at several times the cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from .architectures import ARCHS, build
from .live import PROMPTS, disc, layer_centres
from .stream import layer_counts, region_modes


def scene(stream, layers: int):
    width, height = stream.width, stream.height
    if layers > 1:
        stream.update_background(prompt="a wooden table")
    for i, (cx, cy) in enumerate(layer_centres(max(1, layers - 1), width, height)):
        stream.update_single_layer(i, prompt=PROMPTS[i % len(PROMPTS)], mask=disc(width, height, cx, cy, int(min(width, height) * 0.2)))
    return stream


def frame_ms(stream, frames: int) -> float:
    def one() -> float:
        started = time.perf_counter()
        latent = stream(output_type="latent")
        if latent.device.type == "cuda":
            torch.cuda.synchronize(latent.device)
        return (time.perf_counter() - started) * 1e3

    stream.apply_updates()
    one()
    return statistics.median(one() for _ in range(frames))


def main(argv=None) -> dict:
    from semdraw_widget.engine import StreamMultiDiffusion

    parser = argparse.ArgumentParser(prog="python -m benchmarks.layer_sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=ARCHS, default="tiny")
    parser.add_argument("--size", type=int, default=None, help="canvas side in pixels (default 64 for tiny, else 256)")
    parser.add_argument("--layers", type=layer_counts, default=layer_counts("1-8"))
    parser.add_argument("--region-mode", type=region_modes, default=["exact", "attention"])
    parser.add_argument("--frames", type=int, default=2, help="timed frames per point (after one warm-up frame)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and args.arch not in ("tiny", "demo") else "cpu"))
    size = args.size or (64 if args.arch == "tiny" else 256)
    model = build(args.arch, device, torch.float16 if device.type == "cuda" else torch.float32)
    rows = []
    for layers in args.layers:
        row = {"layers": layers}
        for mode in args.region_mode:
            stream = scene(StreamMultiDiffusion(device, model=model, height=size, width=size, region_mode=mode), layers)
            row[f"{mode}_ms"] = frame_ms(stream, args.frames)
            row[f"{mode}_batch"] = stream.batch_inputs()[0].shape[0]
        if "exact_ms" in row and "attention_ms" in row:
            row["attention_over_exact"] = row["exact_ms"] / row["attention_ms"]
        rows.append(row)
        print("# " + json.dumps(row), flush=True)
    summary = {"arch": args.arch, "size": size, "device": str(device), "frames": args.frames, "rows": rows}
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(summary, file, indent=2)
    return summary


if __name__ == "__main__":
    main()
