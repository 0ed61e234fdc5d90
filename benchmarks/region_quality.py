"""Region adherence of both region modes on the same random scenes, by an overlap score that needs no trained
classifier (for models without one: random-weight architectures, the tiny miniature).

    python -m benchmarks.region_quality --arch sd15 --size 256 --scenes 3
    python -m benchmarks.region_quality --arch tiny --scenes 4          # seconds

A scene is a background prompt and three painted rectangles at random places with random prompts. For each
painted layer, the settled stream frame is made twice, the second time with only that layer's prompt changed;
the score is the share (in points, 0-100) of the change that falls where that layer shows (where it is the
top-most painted layer). The change is measured on the frame's latent (mean absolute difference over its
channels, the region's share of each latent pixel as its weight), not on decoded pixels: the random-weight
autoencoders of these models saturate most pixels, which would hide changes. 100: the prompt acts only in its
region; the share of the canvas the region covers is what a change spread evenly would score ("area" in the
output). The demo model's classifier-based evaluation (`python -m semdraw_widget.engine.models.demo evaluate`)
measures adherence in the sense of "shows what was asked"; this score measures only confinement.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from .architectures import ARCHS, build

WORDS = ("a red apple", "a blue whale", "a green pear", "a yellow taxi", "a black cat", "a white cloud", "a brick wall",
         "a purple flower", "an orange fish", "a silver car")
REGION_MODES = ("exact", "attention")


def random_scene(rng: np.random.Generator, size: int, layers: int = 3) -> dict:
    masks = []
    for _ in range(layers):
        h, w = rng.integers(size // 4, size // 2 + 1, size=2)
        top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        mask = np.zeros((size, size), dtype=bool)
        mask[top:top + h, left:left + w] = True
        masks.append(mask)
    prompts = [str(word) for word in rng.choice(WORDS, size=layers + 1, replace=False)]
    return {"background": "a wooden table", "prompts": prompts[:layers], "other": prompts[layers], "masks": masks}


def settled_latent(stream: Any, scene: dict, prompts: list[str]) -> torch.Tensor:
    stream.update_background(prompt=scene["background"])
    stream.update_layers(prompts, masks=scene["masks"])
    stream.flush()
    return stream(output_type="latent")[0].float()


def shown(masks: list[np.ndarray], index: int) -> np.ndarray:
    """Where layer `index` is the top-most painted layer."""
    above = np.zeros_like(masks[index])
    for mask in masks[index + 1:]:
        above |= mask
    return masks[index] & ~above


def score_scene(stream: Any, scene: dict) -> list[dict]:
    base = settled_latent(stream, scene, scene["prompts"])
    scale = stream.model.vae_scale
    rows = []
    for i in range(len(scene["prompts"])):
        prompts = list(scene["prompts"])
        prompts[i] = scene["other"]
        change = (settled_latent(stream, scene, prompts) - base).abs().mean(dim=0)
        region = torch.nn.functional.avg_pool2d(torch.from_numpy(shown(scene["masks"], i)).float()[None, None], scale)[0, 0]
        total = float(change.sum())
        rows.append({"layer": i, "score": 100.0 * float((change * region).sum()) / total if total else None,
                     "area": 100.0 * float(region.mean()), "mean_change": float(change.mean())})
    return rows


def main(argv=None) -> dict:
    from semdraw_widget.engine import StreamMultiDiffusion

    parser = argparse.ArgumentParser(prog="python -m benchmarks.region_quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=ARCHS, default="tiny")
    parser.add_argument("--size", type=int, default=None, help="canvas side in pixels (default 64 for tiny, else 256)")
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    size = args.size or (64 if args.arch == "tiny" else 256)
    model = build(args.arch, torch.device("cpu"), torch.float32)
    rng = np.random.default_rng(args.seed)
    scenes = [random_scene(rng, size) for _ in range(args.scenes)]
    summary: dict[str, Any] = {"arch": args.arch, "size": size, "scenes": args.scenes, "seed": args.seed, "modes": {}}
    for mode in REGION_MODES:
        started = time.perf_counter()
        stream = StreamMultiDiffusion("cpu", model=model, height=size, width=size, region_mode=mode)
        rows = [row for scene in scenes for row in score_scene(stream, scene)]
        scores = [row["score"] for row in rows if row["score"] is not None]
        summary["modes"][mode] = {"score": float(np.mean(scores)), "area": float(np.mean([row["area"] for row in rows])),
                                  "per_layer": rows, "seconds": time.perf_counter() - started}
        print(f"# {mode}: score {summary['modes'][mode]['score']:.1f} points "
              f"(area {summary['modes'][mode]['area']:.1f}), {summary['modes'][mode]['seconds']:.0f} s", flush=True)
    summary["attention_minus_exact"] = summary["modes"]["attention"]["score"] - summary["modes"]["exact"]["score"]
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(summary, file, indent=2)
    return summary


if __name__ == "__main__":
    main()
