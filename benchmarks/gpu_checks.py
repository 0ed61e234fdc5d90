"""Checks that need a CUDA device and so cannot run in CI: prints one JSON line per check.

    python -m benchmarks.gpu_checks              # on a CUDA machine
    python -m benchmarks.gpu_checks --device cpu # a dry run of the same code (no graphs on a CPU)

- capture_failure: a model call that cannot be captured in a CUDA graph (it reads a value on the host)
  makes `warm_up` give graphs up with `capture_error` set, and frames go on, equal to an eager stream's.
- inductor_graphs: `compile="inductor"` on the tiny model: a background compile, then CUDA graphs of the
  compiled model for two layer counts; frames stay finite and close to the eager ones.
- attention_graphs: `region_mode="attention"` with CUDA graphs (`compile=True`) on the tiny model: one graph
  serves every layer count (the call is one item per slot), frames are close to the eager attention mode's, and
  10 frames make no synchronising call.
"""

from __future__ import annotations

import json
import time
import traceback

import numpy as np


def _scene(stream, layers: int = 2):
    size = stream.height
    stream.update_background(prompt="a wooden table")
    for i in range(layers):
        mask = np.zeros((size, size), bool)
        mask[8 * i: size // 2 + 8 * i, 4: size // 2] = True
        stream.update_single_layer(i, prompt=f"object {i}", mask=mask)
    return stream


def capture_failure(device: str) -> dict:
    from semdraw_widget.engine import StreamMultiDiffusion, load_model

    model = load_model("tiny", device=device)
    graphed = _scene(StreamMultiDiffusion(device, model=model, height=64, width=64, compile=True))
    eager = _scene(StreamMultiDiffusion(device, model=model, height=64, width=64))
    original = model.predict

    def uncapturable(latents, timesteps, cond):
        if float(latents.float().abs().sum().item()) < 0:  # a host read: not allowed while capturing
            raise AssertionError
        return original(latents, timesteps, cond)

    graphed.predictor.family.predict = uncapturable
    graphed(output_type="latent"), eager(output_type="latent")
    graphed.warm_up()
    differences = [float((graphed(output_type="latent") - eager(output_type="latent")).abs().max()) for _ in range(3)]
    return {"capture_error": graphed.compile_error, "uses_graphs": graphed.predictor.uses_graphs,
            "max_abs_difference": max(differences)}


def inductor_graphs(device: str) -> dict:
    from semdraw_widget.engine import StreamMultiDiffusion, load_model

    model = load_model("tiny", device=device)
    compiled = _scene(StreamMultiDiffusion(device, model=model, height=64, width=64, compile="inductor"))
    eager = _scene(StreamMultiDiffusion(device, model=model, height=64, width=64))
    compiled(output_type="latent"), eager(output_type="latent")
    started = time.perf_counter()
    compiled.warm_up(block=False)
    during = 0
    while compiled.compiling:
        compiled(output_type="latent"), eager(output_type="latent")
        during += 1
    compile_s = time.perf_counter() - started
    captured = compiled.warm_up()
    differences = [float((compiled(output_type="latent") - eager(output_type="latent")).abs().max()) for _ in range(3)]
    for stream in (compiled, eager):
        _scene(stream, layers=3)
    compiled(output_type="latent"), eager(output_type="latent")
    captured += compiled.warm_up()
    differences += [float((compiled(output_type="latent") - eager(output_type="latent")).abs().max()) for _ in range(3)]
    return {"compile_s": compile_s, "frames_while_compiling": during, "graphs_captured": captured,
            "compile_error": compiled.compile_error, "calls": dict(compiled.predictor.calls),
            "max_abs_difference": max(differences)}


def attention_graphs(device: str) -> dict:
    from semdraw_widget.engine import StreamMultiDiffusion, load_model

    from .live import count_host_syncs

    model = load_model("tiny", device=device)
    graphed = _scene(StreamMultiDiffusion(device, model=model, height=64, width=64, compile=True, region_mode="attention"))
    eager = _scene(StreamMultiDiffusion(device, model=model, height=64, width=64, region_mode="attention"))
    graphed(output_type="latent"), eager(output_type="latent")
    captured = graphed.warm_up()
    differences = [float((graphed(output_type="latent") - eager(output_type="latent")).abs().max()) for _ in range(3)]
    for stream in (graphed, eager):
        _scene(stream, layers=3)
    graphed(output_type="latent"), eager(output_type="latent")
    captured += graphed.warm_up()
    differences += [float((graphed(output_type="latent") - eager(output_type="latent")).abs().max()) for _ in range(3)]
    return {"graphs_captured": captured, "capture_error": graphed.compile_error, "calls": dict(graphed.predictor.calls),
            "max_abs_difference": max(differences), "host_syncs_in_10_frames": count_host_syncs(graphed)}


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_checks")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    for check in (capture_failure, inductor_graphs, attention_graphs):
        try:
            result = {"check": check.__name__, "device": args.device, **check(args.device)}
        except Exception as exc:
            traceback.print_exc()
            result = {"check": check.__name__, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
