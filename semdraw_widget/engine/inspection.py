"""What the stream did at each slot of its last frame: for learning (and teaching) how it works.

One frame denoises T latents at once, from the noisiest slot (0) to the quietest (T-1); slot T-1's
clean estimate is the frame. `StreamMultiDiffusion.inspect_slots()` returns, per slot: its timestep,
the noise level its masks were quantised against, its noisy input and its blended clean estimate
(decoded), and the weight each layer had there (the M of docs/architecture.md's "The algorithm": cover decay, blur, strength and
quantisation applied, before the blend divides by their sum). Blurred edges show the algorithm's
point: a soft edge weighs in only at the quieter slots. Nothing here runs during streaming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class SlotInspection:
    timesteps: list[float]  # each slot's model timestep, noisiest first
    noise_levels: list[float]  # what each slot's masks were quantised against
    inputs: list  # PIL images: each slot's noisy latent, decoded
    estimates: list  # PIL images: each slot's blended clean estimate, decoded; the last one is the frame
    # (T, L, H, W) float32: from a pipeline, its layers in engine order (update_single_layer's idx); from a
    # canvas, every canvas layer in canvas order, hidden ones with no weight
    layer_weights: np.ndarray
    layer_prompts: list[str]
    background_weights: np.ndarray | None  # (T, H, W): the background prompt's full-canvas layer, if there is one
    # (T, H, W): where the layers' total weight falls short of 1, the blend takes this share from the white
    # latent (or the background image's): 1 - min(total weight, 1)
    fill_weights: np.ndarray
    layer_ids: list[str] | None = None  # the canvas's layer ids, in the same order (from SemanticCanvas.inspect_slots)

    def weights(self, layer: int | str) -> np.ndarray:
        """(T, H, W) weights of one layer: its index in `layer_weights` (engine order from a pipeline, canvas
        order from a canvas), its canvas id, its prompt, or "background" (the background prompt's layer)."""
        ids = self.layer_ids or []
        if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
            if not -len(self.layer_prompts) <= layer < len(self.layer_prompts):
                raise KeyError(f"no layer {layer}: there are {len(self.layer_prompts)}")
            return self.layer_weights[:, int(layer)]
        if layer in ids:
            return self.layer_weights[:, ids.index(layer)]
        if layer in self.layer_prompts:
            return self.layer_weights[:, self.layer_prompts.index(layer)]
        if layer == "background":
            if self.background_weights is None:
                raise KeyError("no background layer: there is one only with a background prompt and no background image")
            return self.background_weights
        raise KeyError(f"no layer {layer!r}; the layers are {ids or self.layer_prompts} (and 'background')")

    def contact_sheet(self, cell: int = 128) -> Any:
        """One PIL image: a column per slot (noisiest left); rows: the noisy inputs, the clean estimates,
        then each layer's weights (white = full weight), the background layer's when there is one, and the
        share filled from the white (or background image) latent. Cells keep the canvas's aspect ratio."""
        from PIL import Image, ImageDraw, ImageFont

        unicode_font = isinstance(ImageFont.load_default(), ImageFont.FreeTypeFont)  # Pillow < 10.1: latin-1 only

        def label(i, prompt):
            text = f"{i}: {prompt}"
            text = text if len(text) <= 22 else text[:20] + "..."
            return text if unicode_font else text.encode("latin-1", "replace").decode("latin-1")

        weight_rows = [(label(i, prompt), self.layer_weights[:, i]) for i, prompt in enumerate(self.layer_prompts)]
        if self.background_weights is not None:
            weight_rows.append(("background prompt", self.background_weights))
        weight_rows.append(("filled (no layer)", self.fill_weights))
        rows = [("noisy input", self.inputs), ("clean estimate", self.estimates)]
        rows += [(label, [Image.fromarray((w * 255).round().astype(np.uint8)) for w in weights])
                 for label, weights in weight_rows]
        height, width = self.fill_weights.shape[1:]
        cell_w, cell_h = cell, max(1, round(cell * height / width))
        label_width, header, gap = 150, 20, 2  # a grey frame: full weight (white) must not melt into the page
        stride_w, stride_h = cell_w + gap, cell_h + gap
        sheet = Image.new("RGB", (label_width + stride_w * len(self.timesteps), header + stride_h * len(rows)), "white")
        draw = ImageDraw.Draw(sheet)
        for column, (t, level) in enumerate(zip(self.timesteps, self.noise_levels)):
            draw.text((label_width + column * stride_w + 4, 4), f"t={t:.0f} noise={level:.3f}", fill="black")
        for row, (text, images) in enumerate(rows):
            top = header + row * stride_h
            draw.text((4, top + cell_h // 2 - 6), text, fill="black")
            for column, image in enumerate(images):
                left = label_width + column * stride_w
                draw.rectangle((left - 1, top - 1, left + cell_w, top + cell_h), outline="grey")
                sheet.paste(image.convert("RGB").resize((cell_w, cell_h)), (left, top))
        return sheet


def inspect_slots(pipeline: Any, x_t, x0, batch) -> SlotInspection:
    """The inspection of a StreamMultiDiffusion's last frame, whose slot inputs were `x_t`, blended clean
    estimates `x0` (T, C, h, w) and batch `batch` (None: no layer had weight). The scene's layers must be
    the ones that frame had (no change since)."""
    import torch

    from .stream import to_output

    scene = pipeline._scene
    rows = {} if batch is None else {id(layer): row for row, layer in enumerate(batch.layers)}
    scale = pipeline.model.vae_scale
    t = len(pipeline.steps)

    def upsample(weights):  # (T, 1, h, w) latent-sized -> (T, H, W) canvas-sized, each weight over its 8x8 pixels
        if weights is None:
            return np.zeros((t, pipeline.height, pipeline.width), np.float32)
        full = weights[:, 0].float().repeat_interleave(scale, -2).repeat_interleave(scale, -1)
        return full.cpu().numpy()

    def active_weights(layer):  # the weights the frame blended with (a layer without any was left out)
        row = rows.get(id(layer))
        return None if row is None else batch.layer_weights[:, row]

    background = scene._background_layer if scene.has_background_layer else None
    layer_weights = (np.stack([upsample(active_weights(layer)) for layer in scene.layers], axis=1) if scene.layers
                     else np.zeros((t, 0, pipeline.height, pipeline.width), np.float32))
    background_weights = None if background is None else upsample(active_weights(background))
    total = layer_weights.sum(axis=1) + (0 if background_weights is None else background_weights)
    with torch.no_grad():
        return SlotInspection(
            timesteps=[float(v) for v in pipeline.steps.timesteps.tolist()],
            noise_levels=[float(v) for v in pipeline.steps.noise_levels],
            inputs=[to_output(pipeline.model.decode(x_t[i:i + 1]), "pil") for i in range(t)],
            estimates=[to_output(pipeline.model.decode(x0[i:i + 1]), "pil") for i in range(t)],
            layer_weights=layer_weights,
            layer_prompts=[layer.prompt for layer in scene.layers],
            background_weights=background_weights,
            fill_weights=1.0 - np.minimum(total, 1.0),
        )
