"""The demo model's quality figures, measured with its classifier (`classifier.py`).

- prompt adherence: every material of the vocabulary painted on the whole canvas by the one-shot
  pipeline, classified as a whole: the share classified as asked;
- region adherence: random scenes of 2-4 painted layers over a background prompt, settled in the stream;
  every 8x8 cell at least 16 px inside a region (the region a layer shows: where it is the top-most painted
  layer; the background prompt's region is where no layer is painted) is classified by the 32x32 patch
  around it: the share classified as that region's prompt, per setting (bootstrapping on or off, discrete
  or continuous masks; and the attention region mode, `region_mode="attention"`, at the stream's defaults);
- stream against one-shot: the settled stream frame of a scene against the one-shot image of the same scene
  with the same settings (mean absolute difference in 0..255 levels, and the largest);
- the measure's own ceiling: region adherence of the world generator's pictures of the same scenes (each
  region drawn in its material, through the autoencoder).

`python -m semdraw_widget.engine.models.demo evaluate` prints them (`--scenes`, `--size`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .classifier import STRIDE, Classifier, class_indices
from .vocabulary import Material, all_materials, parse

NEUTRAL_PROMPT = "a house"  # a prompt with no word the model knows
BORDER = 16  # pixels of each region's edge left out of region adherence


def prompt_for(material: Material) -> str:
    return material.label if not material.is_neutral else NEUTRAL_PROMPT


@dataclass
class Scene:
    prompts: list[str]  # bottom to top
    masks: np.ndarray  # (P, H, W) bool
    background: str

    def regions(self) -> list[tuple[str, np.ndarray]]:
        """(prompt, bool mask) of what each layer shows, and of the uncovered background, as drawn."""
        top = np.full(self.masks.shape[1:], -1)
        for index, mask in enumerate(self.masks):
            top[mask] = index
        shown = [(prompt, top == index) for index, prompt in enumerate(self.prompts)]
        return shown + [(self.background, top == -1)]


def random_scene(rng: np.random.Generator, size: int) -> Scene:
    """2-4 layers of distinct materials in random rectangles and ellipses, over a background material."""
    from . import world

    count = int(rng.integers(2, 5))
    materials = all_materials()[1:]  # painted regions and the background always name something
    chosen = rng.choice(len(materials), count + 1, replace=False)
    prompts = [prompt_for(materials[i]) for i in chosen]
    masks = world.random_shapes(size, size, count, rng)
    # regions at least 48 px across, so that each has cells away from its border
    masks = np.stack([m if m.sum() > 48 * 48 else world.random_shapes(size, size, 1, rng)[0] | m for m in masks])
    return Scene(prompts[1:], masks, prompts[0])


def region_scenes(count: int, size: int, seed: int) -> list[Scene]:
    """The random scenes region adherence and its ceiling are measured on (the same ones for both)."""
    rng = np.random.default_rng(seed)
    return [random_scene(rng, size) for _ in range(count)]


def interior(mask: np.ndarray, border: int = BORDER) -> np.ndarray:
    """Pixels of `mask` whose (2 border + 1)-square neighbourhood lies entirely in it."""
    padded = np.pad(mask.astype(np.int32), border + 1)
    table = padded.cumsum(0).cumsum(1)
    k = 2 * border + 1
    window = table[k:, k:] - table[:-k, k:] - table[k:, :-k] + table[:-k, :-k]
    return window[: mask.shape[0], : mask.shape[1]] == k * k


def region_scores(classifier: Classifier, image: np.ndarray, scene: Scene) -> list[tuple[int, int, int]]:
    """(cells right, cells of the right colour, cells) for each region of `scene` with cells away from its border."""
    colour, texture = classifier.label_map(image)
    centre = STRIDE // 2
    scores = []
    for prompt, mask in scene.regions():
        inside = interior(mask)[centre::STRIDE, centre::STRIDE][: colour.shape[0], : colour.shape[1]]
        if not inside.any():
            continue
        want_colour, want_texture = class_indices(parse(prompt))
        colour_right = colour[inside] == want_colour
        right = colour_right & (texture[inside] == want_texture)
        scores.append((int(right.sum()), int(colour_right.sum()), int(inside.sum())))
    return scores


def ground_truth(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) in [0, 1]: the scene as the world generator draws it, each region in its prompt's material."""
    from . import world

    height, width = scene.masks.shape[1:]
    image = world.render(parse(scene.background), height, width, rng)
    for prompt, mask in zip(scene.prompts, scene.masks):
        image[mask] = world.render(parse(prompt), height, width, rng)[mask]
    return image


def through_autoencoder(model: Any, image: np.ndarray) -> np.ndarray:
    """(H, W, 3) in [0, 1], encoded and decoded by the model's autoencoder, as a generated image is."""
    import torch

    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    return model.decode(model.encode(pixels))[0].permute(1, 2, 0).float().cpu().numpy()


def ground_truth_adherence(model: Any, classifier: Classifier, scenes: int = 200, size: int = 256, seed: int = 0,
                           log: Callable = print) -> dict:
    """Region adherence of the world's own pictures of `region_adherence`'s scenes, encoded and decoded by the
    model's autoencoder: the best a model can score."""
    draw = np.random.default_rng(seed + 2)
    right, colour_right, cells = 0, 0, 0
    for scene in region_scenes(scenes, size, seed):
        for r, c, n in region_scores(classifier, through_autoencoder(model, ground_truth(scene, draw)), scene):
            right, colour_right, cells = right + r, colour_right + c, cells + n
    log(f"the world's own pictures of the same scenes: {right / cells:.1%} of {cells} cells (colour alone: "
        f"{colour_right / cells:.1%})")
    return {"cells": cells, "share": right / cells, "colour_share": colour_right / cells}


def prompt_adherence(pipe: Any, classifier: Classifier, size: int = 256, seed: int = 0, log: Callable = print) -> dict:
    """One-shot full-canvas image of every material, classified whole."""
    right, colour_right, wrong = 0, 0, []
    for material in all_materials():
        prompt = prompt_for(material)
        image = np.asarray(pipe.sample(prompt, height=size, width=size, seed=seed))
        got = classifier.classify(image)
        colour_right += class_indices(got)[0] == class_indices(material)[0]
        if class_indices(got) == class_indices(material):
            right += 1
        else:
            wrong.append(f"{prompt} -> {got.label}")
    total = len(all_materials())
    log(f"prompt adherence: {right}/{total} = {right / total:.1%} (colour alone: {colour_right / total:.1%})"
        + (f"; wrong: {', '.join(wrong)}" if wrong else ""))
    return {"correct": right, "total": total, "share": right / total, "colour_share": colour_right / total, "wrong": wrong}


def settle(stream: Any, scene: Scene) -> np.ndarray:
    """The stream's settled frame of `scene` (a still scene settles after one frame per slot)."""
    stream.update_background(prompt=scene.background)
    stream.update_layers(scene.prompts, masks=list(scene.masks))
    frame = None
    for _ in range(stream.num_slots):
        frame = stream(output_type="np")
    return frame


def region_adherence(model: Any, classifier: Classifier, scenes: int = 200, size: int = 256, seed: int = 0,
                     log: Callable = print) -> dict:
    """Region adherence of the settled stream, per setting, on the same random scenes."""
    from ...stream import StreamMultiDiffusion

    drawn = region_scenes(scenes, size, seed)
    settings = [("exact", bootstrap, mask_type) for bootstrap in (1, 0) for mask_type in ("continuous", "discrete")]
    settings.append(("attention", 1, "continuous"))  # the fast mode at the stream's defaults, on the same scenes
    results = {}
    for region_mode, bootstrap, mask_type in settings:
        stream = StreamMultiDiffusion(model=model, height=size, width=size, bootstrap_steps=bootstrap, mask_type=mask_type,
                                      seed=seed, region_mode=region_mode)
        began, right, colour_right, cells, region_shares = time.perf_counter(), 0, 0, 0, []
        for scene in drawn:
            for r, c, n in region_scores(classifier, settle(stream, scene), scene):
                right, colour_right, cells = right + r, colour_right + c, cells + n
                region_shares.append(r / n)
        name = f"bootstrap_steps={bootstrap}, {mask_type} masks" + (", attention regions" if region_mode == "attention" else "")
        results[name] = {"cells": cells, "share": right / max(cells, 1), "colour_share": colour_right / max(cells, 1),
                         "regions": len(region_shares),
                         "mean_region_share": float(np.mean(region_shares)) if region_shares else 0.0}
        log(f"region adherence, {name}: {right / max(cells, 1):.1%} of {cells} cells (colour alone: "
            f"{colour_right / max(cells, 1):.1%}) "
            f"({len(region_shares)} regions; {time.perf_counter() - began:.0f} s)")
    return results


def stream_matches_oneshot(model: Any, scenes: int = 10, size: int = 256, seed: int = 0, log: Callable = print) -> dict:
    """Settled stream frames against one-shot images of the same scenes and settings."""
    from ...oneshot import StableMultiDiffusionPipeline
    from ...stream import StreamMultiDiffusion

    rng = np.random.default_rng(seed + 1)
    stream = StreamMultiDiffusion(model=model, height=size, width=size, seed=seed)
    oneshot = StableMultiDiffusionPipeline(model=model, default_mask_std=stream.default_mask_std,
                                           default_prompt_strength=stream.default_prompt_strength)
    means, peaks = [], []
    for _ in range(scenes):
        scene = random_scene(rng, size)
        frame = settle(stream, scene).astype(np.float32)
        # the stream's settings: its slots, continuous masks, no leak suppression
        image = np.asarray(oneshot(scene.prompts, masks=list(scene.masks), background_prompt=scene.background,
                                   height=size, width=size, seed=seed, t_index_list=model.default_t_index_list,
                                   mask_type="continuous", bootstrap_leak_sensitivity=None), np.float32)
        difference = np.abs(frame - image)
        means.append(float(difference.mean()))
        peaks.append(float(difference.max()))
    log(f"stream against one-shot ({scenes} scenes): mean |difference| {np.mean(means):.2f} levels of 255, largest {max(peaks):.0f}")
    return {"mean_abs_difference": float(np.mean(means)), "max_abs_difference": float(max(peaks)), "scenes": scenes}


def run_all(model: Any, folder: Any = None, scenes: int = 200, size: int = 256, seed: int = 0, log: Callable = print,
            classifier_file: Any = None) -> dict:
    """Every figure of the model card, printed as it comes, judged by the classifier trained with the model (in
    `folder`, the shipped model's by default) or by `classifier_file`. Each run's classifier is fitted through its
    own autoencoder and differs a little from another run's; runs judged by one classifier compare without that."""
    from pathlib import Path

    from ...oneshot import StableMultiDiffusionPipeline
    from . import WEIGHTS_DIR

    classifier_file = Path(classifier_file or Path(folder or WEIGHTS_DIR) / "classifier.safetensors")
    classifier = Classifier.load(classifier_file)
    began = time.perf_counter()
    figures = {
        "classifier": str(classifier_file),
        "prompt_adherence": prompt_adherence(StableMultiDiffusionPipeline(model=model), classifier, size, seed, log),
        "region_adherence": region_adherence(model, classifier, scenes, size, seed, log),
        "stream_vs_oneshot": stream_matches_oneshot(model, min(scenes, 20), size, seed, log),
        "ground_truth_region_adherence": ground_truth_adherence(model, classifier, scenes, size, seed, log),
        "size": size,
        "seconds": round(time.perf_counter() - began),
    }
    log(f"evaluated in {figures['seconds']} s")
    return figures
