"""Headless canvas state: layers, their masks as numpy arrays, the background, revisions, save/load.

No ipywidgets here: the same state serves the widget, scripts and the streaming thread. Masks are
stored as uint8 coverage (0..255) at canvas resolution, the same bytes the browser paints, and handed
out as float32 in [0, 1]. Every change bumps a revision so the generation thread can tell what moved.
Where a stroke goes from here: docs/architecture.md, "A stroke".
"""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .coverage import to_coverage
from .limits import (
    LAYER_SETTING_LIMITS,
    MAX_JSON_DEPTH,
    MAX_SCENE_JSON_BYTES,
    MAX_SIDE,
    check_id,
    check_layer_count,
    check_number,
    check_text,
    describe_error,
    quote,
    scene_image_budget,
)

log = logging.getLogger("semdraw_widget")
SCENE_FORMAT = "semdraw-scene"
# Version 2 names each mask member by its layer's index (masks/0.png, bottom first); version 1 named it by
# the layer's id, which a careless extractor would take as a path. Both are read.
SCENE_VERSION = 2

LAYER_DEFAULTS: dict[str, Any] = {
    "name": "",
    "prompt": "",
    "negative_prompt": "",
    "color": "#e53935",
    "prompt_strength": 0.95,
    "mask_strength": 1.0,
    "mask_blur": 8.0,
    "visible": True,
}
# Distinct, colour-blind-friendly-ish colours handed to new layers in turn.
LAYER_COLORS = ("#e53935", "#1e88e5", "#43a047", "#fdd835", "#8e24aa", "#fb8c00", "#00acc1", "#6d4c41", "#d81b60")


def check_canvas_size(width: Any, height: Any) -> tuple[int, int]:
    """Validate a canvas size: positive integers, multiples of 8 (the latent is 1/8 of the canvas)."""
    checked = []
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer number of pixels (got {quote(value)})")
        value = int(value)
        if value < 8 or value > MAX_SIDE:
            raise ValueError(f"{name} must be between 8 and {MAX_SIDE} pixels (got {value})")
        if value % 8:
            low, high = value - value % 8, value - value % 8 + 8
            raise ValueError(f"{name} must be a multiple of 8 (got {value}); try {low} or {high}")
        checked.append(value)
    return checked[0], checked[1]


def new_layer_id() -> str:
    return "l" + secrets.token_hex(4)


def _check_color(value: Any) -> str:
    ok = isinstance(value, str) and len(value) == 7 and value[0] == "#"
    if ok:
        try:
            int(value[1:], 16)
        except ValueError:
            ok = False
    if not ok:
        raise ValueError(f"layer color must look like '#rrggbb' (got {quote(value)})")
    return value.lower()


def normalize_layer(spec: dict, index: int = 0) -> dict:
    """A complete, validated layer dict from a partial one (unknown keys are an error, not ignored)."""
    if not isinstance(spec, dict):
        raise ValueError(f"a layer must be a dict (got {type(spec).__name__})")
    unknown = set(spec) - set(LAYER_DEFAULTS) - {"id"}
    if unknown:
        raise ValueError(f"unknown layer field(s) {quote(sorted(map(str, unknown)))}; known: {['id', *LAYER_DEFAULTS]}")
    layer = {"id": spec.get("id") or new_layer_id(), **LAYER_DEFAULTS, "color": LAYER_COLORS[index % len(LAYER_COLORS)]}
    layer.update({k: v for k, v in spec.items() if k != "id"})
    check_id("layer id", layer["id"])
    for key in ("name", "prompt", "negative_prompt"):
        layer[key] = check_text(f"layer {key}", layer[key])
    layer["color"] = _check_color(layer["color"])
    for key in ("prompt_strength", "mask_strength", "mask_blur"):
        what = "a number of pixels" if key == "mask_blur" else "a number"
        layer[key] = check_number(f"layer {key}", layer[key], LAYER_SETTING_LIMITS[key], what)
    if not isinstance(layer["visible"], bool):
        raise ValueError(f"layer visible must be True or False (got {quote(layer['visible'])})")
    return layer


@dataclass(frozen=True)
class Snapshot:
    """A consistent, immutable view of the state, taken under the lock (for the generation thread)."""

    width: int
    height: int
    layers: tuple[dict, ...]
    masks: dict[str, np.ndarray]  # id -> uint8 (H, W), read-only arrays
    mask_revisions: dict[str, int]
    background: dict
    background_image: np.ndarray | None
    background_revision: int
    revision: int
    mask_arrival: dict[str, float] = field(default_factory=dict)  # id -> time of the newest mask input


class CanvasState:
    """Layers (bottom to top) with their masks, plus the background. Thread-safe."""

    def __init__(self, width: int = 512, height: int = 512):
        self.width, self.height = check_canvas_size(width, height)
        self._lock = threading.RLock()
        self._layers: list[dict] = []
        self._masks: dict[str, np.ndarray] = {}
        self._mask_revisions: dict[str, int] = {}
        self._mask_arrival: dict[str, float] = {}
        self._snapshot_cache: dict[str, tuple[int, np.ndarray]] = {}
        self.background: dict = {"prompt": "", "negative_prompt": ""}
        self.background_image: np.ndarray | None = None
        self._background_revision = 0
        self.revision = 0
        self._mask_observers: list[Callable[[str], None]] = []
        self._change_listeners: list[Callable[[], None]] = []

    # ---- layers -------------------------------------------------------------------------------
    @property
    def layers(self) -> list[dict]:
        with self._lock:
            return [dict(layer) for layer in self._layers]

    @property
    def layer_ids(self) -> list[str]:
        with self._lock:
            return [layer["id"] for layer in self._layers]

    def layer(self, layer_id: str) -> dict:
        with self._lock:
            return dict(self._layers[self._index(layer_id)])

    def _index(self, layer_id: str) -> int:
        for i, layer in enumerate(self._layers):
            if layer["id"] == layer_id:
                return i
        known = ", ".join(repr(layer["id"]) for layer in self._layers) or "none yet"
        raise KeyError(f"unknown layer {quote(layer_id)}; known layers: {known}")

    def add_layer(self, prompt: str = "", **fields) -> str:
        with self._lock:
            check_layer_count(len(self._layers) + 1)
            layer = normalize_layer({"prompt": prompt, **fields}, len(self._layers))
            if layer["id"] in self._masks:
                raise ValueError(f"a layer with id {layer['id']!r} already exists")
            self._layers.append(layer)
            self._add_mask(layer["id"])
            self._bump()
            return layer["id"]

    def update_layer(self, layer_id: str, **fields) -> dict:
        if "id" in fields and fields["id"] != layer_id:
            # The id keys the layer's mask and revisions (and the browser's copy): it names the layer for good.
            raise ValueError(
                f"a layer's id cannot change (asked to rename {quote(layer_id)} to {quote(fields['id'])}); change its "
                "name instead, or add a layer with add_layer(..., id=...) and copy the mask with "
                "set_mask(new_id, get_mask(old_id))"
            )
        with self._lock:
            i = self._index(layer_id)
            updated = normalize_layer({**self._layers[i], **fields}, i)
            self._layers[i] = updated
            self._bump()
            return dict(updated)

    def remove_layer(self, layer_id: str) -> None:
        with self._lock:
            del self._layers[self._index(layer_id)]
            self._drop_mask(layer_id)
            self._bump()

    def set_layers(self, specs: list[dict]) -> list[dict]:
        """Replace the layer list (order, settings, additions, removals) as the browser edits it.

        Masks of surviving ids are kept; new ids get empty masks. Validates everything before changing
        anything, so a bad list leaves the state as it was.
        """
        if not isinstance(specs, (list, tuple)):
            raise ValueError(f"layers must be a list of dicts (got {type(specs).__name__})")
        check_layer_count(len(specs))  # before a single layer is looked at
        layers = [normalize_layer(spec, i) for i, spec in enumerate(specs)]
        ids = [layer["id"] for layer in layers]
        if len(set(ids)) != len(ids):
            raise ValueError(f"layer ids must be unique (got {ids})")
        with self._lock:
            if layers == self._layers:
                return self.layers
            for layer_id in set(self._masks) - set(ids):
                self._drop_mask(layer_id)
            for layer_id in ids:
                if layer_id not in self._masks:
                    self._add_mask(layer_id)
            self._layers = layers
            self._bump()
            return self.layers

    # ---- masks --------------------------------------------------------------------------------
    def _add_mask(self, layer_id: str) -> None:
        self._masks[layer_id] = np.zeros((self.height, self.width), np.uint8)
        # Mask revisions come from the state's revision, so a layer that reuses a removed layer's id
        # never repeats that layer's mask revision (the generation loop sends a mask when it changes).
        self._mask_revisions[layer_id] = self.revision + 1

    def _drop_mask(self, layer_id: str) -> None:
        """Forget everything kept per layer id, so a later layer reusing the id starts clean."""
        for table in (self._masks, self._mask_revisions, self._mask_arrival, self._snapshot_cache):
            table.pop(layer_id, None)

    def coverage(self, layer_id: str) -> np.ndarray:
        """A copy of one layer's uint8 coverage (H, W)."""
        with self._lock:
            self._index(layer_id)
            return self._masks[layer_id].copy()

    def get_mask(self, layer_id: str) -> np.ndarray:
        with self._lock:
            self._index(layer_id)
            return self._masks[layer_id].astype(np.float32) / 255.0

    def _masks_in_order(self) -> list[np.ndarray]:
        with self._lock:
            return [self._masks[layer["id"]] for layer in self._layers]

    @property
    def masks(self) -> np.ndarray:
        stack = self._masks_in_order()
        if not stack:
            return np.zeros((0, self.height, self.width), np.float32)
        return np.stack(stack).astype(np.float32) / 255.0

    def set_mask(self, layer_id: str, mask: Any, arrival: float | None = None) -> np.ndarray:
        coverage = to_coverage(mask, self.height, self.width)
        with self._lock:
            self._index(layer_id)
            self._masks[layer_id] = coverage
            self._touch_mask(layer_id, arrival)
        self._notify(layer_id)
        return coverage

    def apply_patch(self, patch, arrival: float | None = None) -> None:
        """Write a MaskPatch (from the browser) into its layer; bounds were checked when it was decoded."""
        with self._lock:
            self._index(patch.layer)
            if patch.x + patch.w > self.width or patch.y + patch.h > self.height:
                raise ValueError(f"mask rectangle does not fit the {self.width}x{self.height} canvas")
            mask = self._masks[patch.layer]
            mask[patch.y : patch.y + patch.h, patch.x : patch.x + patch.w] = patch.data
            self._touch_mask(patch.layer, arrival)
        self._notify(patch.layer)

    def _touch_mask(self, layer_id: str, arrival: float | None) -> None:
        """A mask changed; `arrival` is when a stroke brought it (None: set from Python, no stroke to time)."""
        self._mask_revisions[layer_id] = self.revision + 1  # the revision _bump is about to give the state
        if arrival is None:
            self._mask_arrival.pop(layer_id, None)
        else:
            self._mask_arrival[layer_id] = arrival
        self._bump()

    def _bump(self) -> None:
        # Listeners must be quick and lock-free (e.g. Event.set): they run under the state lock.
        self.revision += 1
        for listener in list(self._change_listeners):
            listener()

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every change of anything (masks, layers, background)."""
        self._change_listeners.append(listener)

    def remove_change_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._change_listeners:
            self._change_listeners.remove(listener)

    def label_map(self) -> np.ndarray:
        """(H, W) int: index (in layer order) of the top-most layer covering each pixel, -1 where none."""
        stack = self._masks_in_order()
        labels = np.full((self.height, self.width), -1, np.int64)
        for index, coverage in enumerate(stack):
            labels[coverage > 0] = index
        return labels

    def observe_masks(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(layer_id)`` after every mask change (strokes, `set_mask`), outside the state's lock.
        A callback that raises is logged and the others still run: an observer must not break painting."""
        self._mask_observers.append(callback)

    def unobserve_masks(self, callback: Callable[[str], None]) -> None:
        """Stop calling ``callback``; one never added is no error."""
        if callback in self._mask_observers:
            self._mask_observers.remove(callback)

    def _notify(self, layer_id: str) -> None:
        for callback in list(self._mask_observers):
            try:
                callback(layer_id)
            except Exception:
                log.exception("observe_masks callback failed")

    # ---- background ---------------------------------------------------------------------------
    def set_background(self, prompt: str | None = None, negative_prompt: str | None = None) -> None:
        changes = {}  # checked before anything changes
        if prompt is not None:
            changes["prompt"] = check_text("background prompt", prompt)
        if negative_prompt is not None:
            changes["negative_prompt"] = check_text("background negative_prompt", negative_prompt)
        with self._lock:
            self.background.update(changes)
            self._background_revision += 1
            self._bump()

    def set_background_image(self, rgb: np.ndarray | None) -> None:
        if rgb is not None:
            rgb = np.asarray(rgb)
            if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
                raise ValueError(
                    f"background image must be uint8 RGB of shape ({self.height}, {self.width}, 3); "
                    f"got {rgb.dtype} {tuple(rgb.shape)}"
                )
        with self._lock:
            self.background_image = None if rgb is None else rgb.copy()
            self._background_revision += 1
            self._bump()

    # ---- snapshots ----------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Copy out everything under the lock; unchanged masks reuse the previous copy (no per-frame cost)."""
        with self._lock:
            masks = {}
            for layer in self._layers:
                layer_id = layer["id"]
                rev = self._mask_revisions[layer_id]
                cached = self._snapshot_cache.get(layer_id)
                if cached is None or cached[0] != rev:
                    copy = self._masks[layer_id].copy()
                    copy.setflags(write=False)
                    cached = (rev, copy)
                    self._snapshot_cache[layer_id] = cached
                masks[layer_id] = cached[1]
            return Snapshot(
                width=self.width,
                height=self.height,
                layers=tuple(dict(layer) for layer in self._layers),
                masks=masks,
                mask_revisions=dict(self._mask_revisions),
                background=dict(self.background),
                background_image=self.background_image,
                background_revision=self._background_revision,
                revision=self.revision,
                mask_arrival=dict(self._mask_arrival),
            )

    # ---- save / load (a zip of JSON + PNG; never pickle) ----------------------------------------
    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        from PIL import Image

        path = Path(path)
        with self._lock:
            scene = {
                "format": SCENE_FORMAT,
                "version": SCENE_VERSION,
                "width": self.width,
                "height": self.height,
                "layers": self.layers,
                "background": dict(self.background),
                "has_background_image": self.background_image is not None,
                **(extra or {}),
            }
            masks = {layer_id: mask.copy() for layer_id, mask in self._masks.items()}
            background_image = self.background_image
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("scene.json", json.dumps(scene, indent=2))
            for index, layer in enumerate(scene["layers"]):
                out = io.BytesIO()
                Image.fromarray(masks[layer["id"]], "L").save(out, format="PNG")
                archive.writestr(_mask_member(SCENE_VERSION, index, layer["id"]), out.getvalue())
            if background_image is not None:
                out = io.BytesIO()
                Image.fromarray(background_image, "RGB").save(out, format="PNG")
                archive.writestr("background.png", out.getvalue())
        return path

    @classmethod
    def read_scene(cls, path: str | Path) -> tuple["CanvasState", dict]:
        """Load a saved scene; returns the state and the scene's JSON (for settings beyond the state).

        A file that is not a scene, is damaged, or exceeds a scene's budgets (docs/reliability.md) is a
        ValueError naming the file and what is wrong; each budget is checked before its member is read."""
        path = Path(path)
        try:
            archive = zipfile.ZipFile(path)
        # a damaged directory fails in several ways (an unknown zip version is a NotImplementedError)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, ValueError) as exc:
            raise ValueError(f"{path} is not a saved semdraw scene ({describe_error(exc)})") from None
        with archive:
            try:
                data = _read_member(archive, "scene.json", MAX_SCENE_JSON_BYTES)
            except ValueError as exc:
                raise ValueError(f"{path} is not a saved semdraw scene ({exc})") from None
            try:
                scene = _parse_json(data)
            except ValueError as exc:
                raise ValueError(f"{path} is damaged: its scene.json {exc}") from None
            if not isinstance(scene, dict):
                raise ValueError(f"{path} is not a saved semdraw scene (its scene.json holds a {type(scene).__name__})")
            if scene.get("format") != SCENE_FORMAT:
                raise ValueError(
                    f"{path} is not a saved semdraw scene (its scene.json has format {quote(scene.get('format'))}, "
                    f"not {SCENE_FORMAT!r})"
                )
            version = scene.get("version")
            if isinstance(version, bool) or not isinstance(version, int):
                raise ValueError(f"{path} is damaged: its scene.json has no whole-number version (got {quote(version)})")
            if version > SCENE_VERSION:
                raise ValueError(
                    f"{path} was saved by a newer semdraw_widget (scene version {version}; this one reads up to "
                    f"{SCENE_VERSION}): upgrade semdraw_widget to open it"
                )
            try:
                state = cls._from_scene(scene, archive, version)
            except ValueError as exc:
                raise ValueError(f"{path} is damaged: {exc}") from None
        return state, scene

    @classmethod
    def _from_scene(cls, scene: dict, archive: zipfile.ZipFile, version: int) -> "CanvasState":
        missing = [key for key in ("width", "height", "layers") if key not in scene]
        if missing:
            raise ValueError(f"its scene.json lacks {', '.join(missing)}")
        background = scene.get("background", {})
        if not isinstance(background, dict):
            raise ValueError(f"its scene.json's background must be a dict of prompts (got {quote(background)})")
        has_image = scene.get("has_background_image", False)
        if not isinstance(has_image, bool):
            raise ValueError(f"its scene.json's has_background_image must be true or false (got {quote(has_image)})")
        state = cls(scene["width"], scene["height"])
        state.set_layers(scene["layers"])  # the layer count is checked before any mask exists
        state.set_background(background.get("prompt", ""), background.get("negative_prompt", ""))
        for index, layer_id in enumerate(state.layer_ids):
            name = _mask_member(version, index, layer_id)
            mask = _read_png(archive, name, "L", state.width, state.height)
            try:
                state.set_mask(layer_id, mask)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        if has_image:
            image = _read_png(archive, "background.png", "RGB", state.width, state.height)
            try:
                state.set_background_image(image)
            except ValueError as exc:
                raise ValueError(f"background.png: {exc}") from None
        return state


def _mask_member(version: int, index: int, layer_id: str) -> str:
    """The zip member holding a layer's mask: by the layer's index from scene version 2 on, so that no
    member name carries a layer id (which may hold "/" or ".."); by its id in version 1."""
    return f"masks/{index}.png" if version >= 2 else f"masks/{layer_id}.png"


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # a JSON string, escapes and all
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def _parse_json(data: bytes) -> Any:
    """scene.json's bytes as JSON, its nesting checked first: a deep one would exhaust the parser's recursion."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"is not UTF-8 text ({exc})") from None
    depth = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"nests deeper than {MAX_JSON_DEPTH} levels (a saved scene nests 3)")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"is not valid JSON ({exc})") from None


def _read_member(archive: zipfile.ZipFile, name: str, budget: int) -> bytes:
    """A member's bytes, refused from the archive's directory, before reading, when it holds more than `budget`.
    Both sizes are checked: zipfile stops inflating at the declared size (so a member cannot hold more than it
    says), but reads the compressed bytes in one piece, allocating whatever compressed size the directory claims."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ValueError(f"{name} is missing") from None
    if info.file_size > budget or info.compress_size > budget:
        raise ValueError(f"{name} inflates to {info.file_size} bytes ({info.compress_size} compressed), more than "
                         f"the {budget} a scene's {name} may hold")
    try:
        return archive.read(info)
    except MemoryError:  # not damage: a budget was missed
        raise
    except Exception as exc:  # a damaged archive fails in many ways (bad CRC, broken deflate stream, ...)
        raise ValueError(f"{name} cannot be read ({describe_error(exc)})") from None


def _read_png(archive: zipfile.ZipFile, name: str, mode: str, width: int, height: int) -> np.ndarray:
    """A PNG member of the canvas's size, as an array of `mode`; its size is checked before a pixel is decoded."""
    from PIL import Image

    data = _read_member(archive, name, scene_image_budget(width, height, len(mode)))
    try:
        image = Image.open(io.BytesIO(data), formats=["PNG"])
    except Exception as exc:  # PIL reports a broken image in many ways (OSError, SyntaxError, zlib.error, ...)
        raise ValueError(f"{name} is not a readable image ({describe_error(exc)})") from None
    with image:
        if image.size != (width, height):
            raise ValueError(f"{name} is {image.width}x{image.height} pixels; the canvas is {width}x{height}")
        try:
            return np.asarray(image.convert(mode))
        except MemoryError:
            raise
        except Exception as exc:
            raise ValueError(f"{name} is not a readable image ({describe_error(exc)})") from None
