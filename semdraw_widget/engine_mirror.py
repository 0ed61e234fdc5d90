"""Canvas state into the engine: before each frame, only what changed since the last one.

The engine holds its own copy of the scene (prompt embeddings, preprocessed masks), and rebuilding it
is the expensive part of an update. `EngineMirror` remembers what it put into the engine -- per engine
layer, the canvas layer's id and settings, with the mask's revision standing in for the mask -- and
sends only the differences: a changed prompt, a mask with a new revision, a layer hidden (it leaves
the engine), the background, the seed, the region mode.

A pipeline may be shared by several canvases. It then holds the layers of whichever canvas made the last
frame; a mirror that finds another one's layers there (`owns_engine` is false) clears the engine and sends
everything. Callers hold the pipeline's lock around `sync` (see streaming.py).

The mirror also keeps what a sync learns on the way: prompts longer than the text encoder reads, or with no
word a closed-vocabulary model (the demo model) knows (a warning
per layer, until that prompt changes), and the oldest stroke the next frame answers (for the latency
figure). See docs/architecture.md, "A stroke".
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from .canvas_state import Snapshot
    from .streaming import StreamingPipeline

# The mirror whose layers each pipeline holds now. A weak reference, not id(): a new mirror can reuse a
# closed one's id and would then wrongly trust the engine's leftover layers to be its own.
_owners: "weakref.WeakKeyDictionary[Any, weakref.ref[EngineMirror]]" = weakref.WeakKeyDictionary()


def _no_listener(new_warning: str | None) -> None:
    pass


class EngineMirror:
    """What one canvas has put into its pipeline's engine.

    `on_warnings(new_warning)` is called when the prompt warnings change: with the new warning's text when
    a layer's prompt is too long, with None when a warning went away."""

    def __init__(self, pipeline: StreamingPipeline, seed: int, region_mode: str | None = None,
                 on_warnings: Callable[[str | None], None] = _no_listener):
        self.pipeline = pipeline
        self._on_warnings = on_warnings
        self._layers: list[tuple[str, dict]] = []  # (layer id, settings) the engine holds, per engine layer index
        self._background_revision = -1
        self._seed = seed  # the canvas's seed, which the pipeline must use whenever this canvas drives it
        self._seed_request: int | None = seed
        # the canvas's region mode, which the pipeline must use whenever this canvas drives it (None: the pipeline's)
        self._region_mode = region_mode
        self._region_mode_request = region_mode
        # layer id -> warning about its prompt. Replaced, never changed in place: other threads read it.
        self._warnings: dict[str, str] = {}
        self._counted_arrivals: dict[str, float] = {}  # layer id -> the stroke time already counted
        self._pending_arrival: float | None = None
        self._strokes_since = 0.0

    # ---- what the engine holds ----------------------------------------------------------------------
    @property
    def owns_engine(self) -> bool:
        """Whether the pipeline holds this mirror's layers (no other canvas made a frame with it since)."""
        owner = _owners.get(self.pipeline)
        return owner is not None and owner() is self

    @property
    def seed_pending(self) -> bool:
        """A seed waits to reach the engine (the next sync sends it)."""
        return self._seed_request is not None

    def request_seed(self, seed: int) -> None:
        self._seed = self._seed_request = int(seed)

    @property
    def region_mode_pending(self) -> bool:
        """A region mode waits to reach the engine (the next sync sends it)."""
        return self._region_mode_request is not None

    def request_region_mode(self, mode: str) -> None:
        self._region_mode = self._region_mode_request = mode

    def engine_index(self) -> dict[str, int]:
        """Canvas layer id -> the engine's index of that layer (hidden layers are not in the engine)."""
        return {layer_id: index for index, (layer_id, _) in enumerate(self._layers)}

    @property
    def prompt_warnings(self) -> tuple[str, ...]:
        """What is wrong with the prompts the engine holds (too long, or no known word), one text per layer."""
        return tuple(self._warnings.values())

    # ---- strokes, for the latency figure ------------------------------------------------------------
    def count_strokes_from(self, started: float) -> None:
        """Strokes that arrived before `started` (`time.perf_counter`) are no stroke-to-frame delay anyone
        waited for: the stream started later, or the frame was asked for by hand."""
        self._strokes_since = started

    def take_stroke_arrival(self) -> float | None:
        """The oldest stroke whose mask went to the engine since the last call (None: none to time)."""
        arrival, self._pending_arrival = self._pending_arrival, None
        return arrival

    # ---- the sync -----------------------------------------------------------------------------------
    def sync(self, snapshot: Snapshot) -> None:
        """Bring the engine to `snapshot`: the seed, the region mode, the background, and the visible layers,
        bottom to top."""
        pipeline = self.pipeline
        if not self.owns_engine:  # another canvas used it last: push everything
            _owners[pipeline] = weakref.ref(self)
            self._layers = []
            self._background_revision = -1
            self._seed_request = self._seed
            self._region_mode_request = self._region_mode
            while pipeline.num_layers:
                pipeline.remove_layer(pipeline.num_layers - 1)
        if self._seed_request is not None:
            seed, self._seed_request = self._seed_request, None
            if pipeline.seed != seed:
                pipeline.reset_seed(seed=seed)
        if self._region_mode_request is not None:
            mode, self._region_mode_request = self._region_mode_request, None
            if pipeline.region_mode != mode:
                pipeline.region_mode = mode  # the layers and the frames in flight stay
        if snapshot.background_revision != self._background_revision:
            pipeline.update_background(
                image=False if snapshot.background_image is None else snapshot.background_image,
                prompt=snapshot.background.get("prompt", ""),
                negative_prompt=snapshot.background.get("negative_prompt", ""),
            )
            self._background_revision = snapshot.background_revision
        wanted = [layer for layer in snapshot.layers if layer["visible"]]
        for index, layer in enumerate(wanted):
            # What the engine holds for this layer; the mask stands in as its revision (cheap to compare).
            settings = {
                "prompt": layer["prompt"],
                "negative_prompt": layer["negative_prompt"],
                "mask": snapshot.mask_revisions[layer["id"]],
                "mask_strength": layer["mask_strength"],
                "mask_std": layer["mask_blur"],
                "prompt_strength": layer["prompt_strength"],
            }
            old_id, old_settings = self._layers[index] if index < len(self._layers) else (None, {})
            if old_id != layer["id"]:  # another layer (or none) sat at this index: send everything
                old_settings = {}
            changes = {name: value for name, value in settings.items() if old_settings.get(name) != value}
            if not changes:
                continue
            if "prompt" in changes:
                self._check_prompt(layer)
            if "mask" in changes:
                # as a fraction: painted coverage is no person's mistake to warn about (an eraser's edge leaves 1s)
                changes["mask"] = np.divide(snapshot.masks[layer["id"]], 255.0, dtype=np.float32)
                self._note_stroke(layer["id"], snapshot.mask_arrival.get(layer["id"]))
            pipeline.update_single_layer(idx=index, **changes)
            if index < len(self._layers):
                self._layers[index] = (layer["id"], settings)
            else:
                self._layers.append((layer["id"], settings))
        while len(self._layers) > len(wanted):
            pipeline.remove_layer(len(self._layers) - 1)
            self._layers.pop()
        shown = {layer["id"] for layer in wanted}
        if not shown.issuperset(self._warnings):  # a warned-about layer was removed or hidden
            self._warnings = {key: text for key, text in self._warnings.items() if key in shown}
            self._on_warnings(None)

    def _note_stroke(self, layer_id: str, arrival: float | None) -> None:
        """Keep the oldest stroke the next frame answers (counted from `count_strokes_from`). A stroke counts
        once: a mask sent again (a layer shown again, reordered) answers no new stroke."""
        if arrival is None or self._counted_arrivals.get(layer_id) == arrival:
            return
        self._counted_arrivals[layer_id] = arrival
        if arrival >= self._strokes_since and (self._pending_arrival is None or arrival < self._pending_arrival):
            self._pending_arrival = arrival

    def _check_prompt(self, layer: dict) -> None:
        """Warn when a prompt is longer than the text encoder reads (its end is dropped), or when the model knows
        only some words (the demo model) and the prompt has none of them; the warning holds until that prompt
        changes."""
        model = self.pipeline.model
        over = model.tokens_over_limit(layer["prompt"])
        vocabulary = model.vocabulary
        warnings = dict(self._warnings)
        name = layer["name"] or layer["prompt"][:30]
        if over:
            warnings[layer["id"]] = (
                f"The prompt of layer {name!r} is {over} token(s) longer than the text encoder reads: "
                "its end is ignored. Shorten it to keep every word."
            )
        elif vocabulary is not None and vocabulary.note(layer["prompt"]):
            warnings[layer["id"]] = f"Layer {name!r}: {vocabulary.note(layer['prompt'])}"
        elif warnings.pop(layer["id"], None) is None:
            return
        self._warnings = warnings
        self._on_warnings(warnings.get(layer["id"]))
