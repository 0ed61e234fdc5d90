"""The paper's headline, reproduced: one region-based image by 50-step MultiDiffusion vs this stream.

    python -m benchmarks.paper --arch sd15 --height 512 --width 512 --layers 4 --compile

MultiDiffusion (the published baseline): DDIM (eta = 0) over the model's DDPM schedule, every layer
at every step, full classifier-free guidance (`--cfg 7.5`, so 2 x layers images per step), the
regions blended in x0 with the same region core (`blend.denoise`) as the stream. Since a DDIM step
is affine in x0 with one coefficient on x_t for all layers, blending the layers' x0 and then taking
the step equals MultiDiffusion's blend of the layers' steps. The stream: frames of the same scene,
and the time to a settled image (slots frames from a fresh start, then one decoded frame).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from semdraw_widget.engine.blend import Guidance, RegionScene, denoise, slot_noise
from semdraw_widget.engine.schedulers import SlotSteps, alphas_cumprod, ddpm_slot_steps

from .architectures import ARCHS, NotAvailable, build
from .live import PROMPTS, disc, layer_centres
from .stream import environment

DDIM_STEPS = 50


def ddim_steps(family: Any, num_steps: int, device: torch.device, dtype: torch.dtype) -> SlotSteps:
    """DDIM's `num_steps` timesteps ("leading" spacing, offset 1: 981, 961, ..., 1 for 50) as SlotSteps
    whose x0 is the plain eps -> x0 inversion (c_skip = 0, c_out = 1)."""
    abar = getattr(getattr(family, "schedule", None), "alphas_cumprod", None)
    if abar is None:
        from semdraw_widget.engine.loading import DEFAULT_SCHEDULER_CONFIG

        abar = alphas_cumprod(DEFAULT_SCHEDULER_CONFIG)
    stride = len(abar) // num_steps
    ts = [i * stride + 1 for i in range(num_steps)][::-1]
    zeros, ones = torch.zeros(num_steps, dtype=torch.float64), torch.ones(num_steps, dtype=torch.float64)
    return ddpm_slot_steps(abar, ts, zeros, ones, device, dtype)


def ddim_step(steps: SlotSteps, i: int, x_t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """x_{t_i} -> x_{t_{i+1}} (eta = 0) with the blended x0; the last step returns x0."""
    if i + 1 == len(steps):
        return x0
    eps = (x_t - steps.alpha[i] * x0) / steps.beta[i]
    return steps.alpha[i + 1] * x0 + steps.beta[i + 1] * eps


def multidiffusion(family: Any, height: int, width: int, layers: int, steps: int, cfg: float, seed: int = 0) -> torch.Tensor:
    """One region-based image (1, 3, H, W) by `steps`-step DDIM MultiDiffusion."""
    device, dtype = family.device, family.dtype
    ddim = ddim_steps(family, steps, device, dtype)
    guidance = Guidance("full", cfg) if cfg > 1 else Guidance("none")
    scene = RegionScene(family, ddim, height, width, guidance=guidance)
    scene.background_prompt = "a wooden table" if layers > 1 else ""
    scene.skip_empty_items = False  # MultiDiffusion as published: every layer at every step
    for i, (cx, cy) in enumerate(layer_centres(max(1, layers - 1), width, height)):
        layer = scene.new_layer(PROMPTS[i % len(PROMPTS)])
        scene.set_mask(layer, disc(width, height, cx, cy, int(min(width, height) * 0.2)))
        scene.layers.append(layer)
    batch = scene.batch()
    background = scene.background_latent
    noise = slot_noise(seed, (steps, family.latent_channels, *scene.latent_size), device, dtype)
    x = noise[:1]
    with torch.no_grad():
        for i in range(steps):
            x0 = denoise(family, ddim.select(slice(i, i + 1)), x, batch.select(i), background, guidance, noise[i:i + 1])
            x = ddim_step(ddim, i, x, x0)
        return family.decode(x)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paper", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=ARCHS, default="sd15")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--layers", type=int, default=4, help="prompts including the background prompt")
    parser.add_argument("--steps", type=int, default=DDIM_STEPS)
    parser.add_argument("--cfg", type=float, default=7.5, help="MultiDiffusion's guidance scale (1: none)")
    parser.add_argument("--compile", nargs="?", const="cudagraph", default=False, help="the stream's compile mode")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from semdraw_widget.engine import StreamMultiDiffusion

    device = torch.device("cuda" if torch.cuda.is_available() and args.arch != "tiny" else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    size = 64 if args.arch == "tiny" else 512
    height, width = args.height or size, args.width or args.height or size
    summary: dict[str, Any] = {"arch": args.arch, "height": height, "width": width, "layers": args.layers,
                               "environment": environment(device)}
    try:
        family = build(args.arch, device, dtype)
    except NotAvailable as exc:
        summary["error"] = str(exc)
        print(json.dumps(summary, indent=2))
        return summary
    multidiffusion(family, height, width, args.layers, 2, args.cfg)  # warm-up: kernels, embeddings
    sync(device)
    started = time.perf_counter()
    multidiffusion(family, height, width, args.layers, args.steps, args.cfg)
    sync(device)
    md_s = time.perf_counter() - started
    summary["multidiffusion"] = {"steps": args.steps, "cfg": args.cfg, "seconds_per_image": md_s,
                                 "model_images_per_step": max(1, args.layers) * (2 if args.cfg > 1 else 1)}

    stream = StreamMultiDiffusion(device, model=family, height=height, width=width, compile=args.compile)
    if args.layers > 1:
        stream.update_background(prompt="a wooden table")
    for i, (cx, cy) in enumerate(layer_centres(max(1, args.layers - 1), width, height)):
        stream.update_single_layer(i, prompt=PROMPTS[i % len(PROMPTS)], mask=disc(width, height, cx, cy, int(min(width, height) * 0.2)))
    stream.warm_up()
    for _ in range(3):
        stream(output_type="pt")
    sync(device)
    started = time.perf_counter()
    for _ in range(args.frames):
        stream(output_type="pt")
    sync(device)
    frame_s = (time.perf_counter() - started) / args.frames
    started = time.perf_counter()
    stream.flush()
    stream(output_type="pt")
    sync(device)
    settled_s = time.perf_counter() - started
    summary["stream"] = {"slots": stream.num_slots, "compile": args.compile, "seconds_per_frame": frame_s,
                         "frames_per_second": 1 / frame_s, "seconds_to_settled_image": settled_s}
    summary["speedup"] = {"per_frame": md_s / frame_s, "to_settled_image": md_s / settled_s}
    print(f"MultiDiffusion ({args.steps} DDIM steps, cfg {args.cfg}): {md_s:.2f} s/image | stream: "
          f"{frame_s * 1e3:.1f} ms/frame ({1 / frame_s:.1f} fps), settled image in {settled_s * 1e3:.0f} ms | "
          f"x{md_s / frame_s:.0f} per frame, x{md_s / settled_s:.0f} to a settled image")
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(summary, file, indent=2)
    return summary


if __name__ == "__main__":
    main()
