"""SemanticCanvas: the anywidget that paints layers in the browser and keeps their masks in the kernel.

Developer notes. Small settings are synced traits (declared together below, each documented under its
definition). Masks, frames and background images travel as custom messages with binary buffers, or base64
where a front end drops buffers (docs/architecture.md, "The wire protocol"; codecs in `protocol.py`, the
choice per direction in `transport.py`). The kernel's `CanvasState` is the
source of truth; a new view asks for `sync` and gets every mask. Strokes go through a `StrokeInbox`
(stroke_inbox.py), sends from other threads through a `KernelThread` (kernel_thread.py). With a pipeline
attached, a `StreamRunner` (streaming.py) turns the state into frames.
"""

from __future__ import annotations

import itertools
import logging
import threading
from pathlib import Path
from typing import Any, Callable

import anywidget
import numpy as np
import traitlets as t

from . import protocol
from .canvas_state import CanvasState, check_canvas_size
from .coverage import image_from_array, warn_if_zero_one_uint8
from .kernel_thread import KernelThread
from .limits import check_max_in_flight, check_seed, check_text, quote, shorten
from .stroke_inbox import StrokeInbox
from .transport import Transport

log = logging.getLogger("semdraw_widget")

_STATIC = Path(__file__).parent / "static"
_ESM_PATH = _STATIC / "widget.js"
_CSS_PATH = _STATIC / "widget.css"


class FrontendNotBuiltError(RuntimeError):
    pass


def _frontend_files() -> dict[str, str]:
    if not _ESM_PATH.is_file() or not _CSS_PATH.is_file():
        raise FrontendNotBuiltError(
            f"The canvas front end is not built ({_ESM_PATH} is missing). From a source checkout run "
            "`pip install -e .` (it builds js/ with npm), or `cd js && npm ci && npm run build`."
        )
    return {"_esm": _ESM_PATH.read_text(encoding="utf-8"), "_css": _CSS_PATH.read_text(encoding="utf-8")}


class SemanticCanvas(anywidget.AnyWidget):
    """A canvas of semantic layers: paint regions in the browser, read their masks as numpy arrays.

    Its settings are the traits below, synced with every view of the canvas and documented under their
    definitions. The kernel owns `running`, `has_pipeline`, `status`, `notice` and `vocabulary`: it sets them, and a view
    only shows them. The latest frame's figures (frames/s, latency, ...) are `stats`, a read-only property.

    Example:
        >>> canvas = SemanticCanvas(width=512, height=512)
        >>> apple = canvas.add_layer("a red apple", color="#e53935")
        >>> canvas.masks.shape            # (n_layers, H, W), float32 in [0, 1]
        (1, 512, 512)
    """

    # Traits filled from the bundle at construction (see _frontend_files), not paths given to anywidget:
    # anywidget reads a path when the class is defined, so a missing build would break the import itself.
    _esm = t.Unicode().tag(sync=True)
    _css = t.Unicode().tag(sync=True)

    width = t.Int(512).tag(sync=True)
    """Canvas width in pixels (int, default 512): a multiple of 8 from 8 to 4096, fixed once the canvas exists."""
    height = t.Int(512).tag(sync=True)
    """Canvas height in pixels (int, default 512), like `width`."""
    layers = t.List(t.Dict()).tag(sync=True)
    """The layers, bottom to top (list of dicts, default []): id, name, prompt, negative_prompt, color
    ("#rrggbb"), prompt_strength, mask_strength, mask_blur (pixels) and visible. A view's edits are checked
    (a bad list is refused whole); the masks are not here (see `masks`)."""
    active_layer = t.Unicode("").tag(sync=True)
    """Id of the layer the brush paints into (str, default "": none; the first layer added becomes it)."""
    background = t.Dict({"prompt": "", "negative_prompt": "", "has_image": False}).tag(sync=True)
    """The background (dict): "prompt" and "negative_prompt" (str, default ""), and "has_image" (bool,
    default False), which reports `set_background_image` and is not set here."""
    tool = t.Enum(("brush", "eraser"), default_value="brush").tag(sync=True)
    """What a view's pointer paints with ("brush" or "eraser", default "brush")."""
    brush_size = t.Int(32).tag(sync=True)
    """The brush's diameter in canvas pixels (int, default 32; the views use 1 to 256)."""
    overlay_opacity = t.Float(0.5).tag(sync=True)
    """How opaque the views draw the painted masks (float from 0 to 1, default 0.5)."""
    view = t.Enum(("side", "below", "overlay"), default_value="side").tag(sync=True)
    """Where the views show the generated image: "side" (beside the canvas, the default), "below", or
    "overlay" (under the masks)."""
    running = t.Bool(False).tag(sync=True)
    """Kernel-owned: whether frames are streaming (bool, default False). `start()` and `stop()` change it;
    a view's ▶ / ❚❚ asks the kernel to."""
    has_pipeline = t.Bool(False).tag(sync=True)
    """Kernel-owned: whether a pipeline is attached (bool, default False); the views show the generation
    controls only then."""
    seed = t.Int(2024).tag(sync=True)
    """The seed of the generation's fixed noise (int from 0 to 2**63 - 1, default 2024); a new one restarts
    the image."""
    status = t.Unicode("").tag(sync=True)
    """Kernel-owned: the status line (str, default ""): what the stream is doing, or the last problem."""
    notice = t.Unicode("").tag(sync=True)
    """Kernel-owned: a banner about the model (str, default ""), e.g. that the tiny model's images are noise."""
    region_mode = t.Enum(("exact", "attention"), default_value="exact").tag(sync=True)
    """How the pipeline makes the regions ("exact" or "attention"; the views' "fast regions" toggle): "exact"
    runs the model once per layer and blends, "attention" runs it once for all layers, each prompt confined to
    its region inside cross-attention (SD 1.5 and SDXL models), so frames cost the same whatever the number
    of layers. Attaching a pipeline sets it to the pipeline's mode unless it was given to the constructor;
    changing it while streaming keeps the image going."""
    vocabulary = t.List(t.Unicode()).tag(sync=True)
    """Kernel-owned: the words the pipeline's model knows, when it knows only some (the demo model), which the
    views suggest in the prompt fields (list of str, default []: any words)."""

    def __init__(
        self,
        width: int = 512,
        height: int = 512,
        *,
        pipeline: Any = None,
        model: str | None = None,
        hf_key: str | None = None,
        device: Any = None,
        background_prompt: str = "",
        state: CanvasState | None = None,
        max_in_flight: int = 2,
        region_mode: str | None = None,
        **kwargs: Any,
    ):
        # Everything is checked (and the model loaded) before the widget exists: no half-made canvas.
        width, height = check_canvas_size(width, height)
        max_in_flight = check_max_in_flight(max_in_flight)
        files = _frontend_files()
        check_text("background prompt", background_prompt)
        if state is not None:
            width, height = state.width, state.height  # a given state's size wins
        if pipeline is None and (model is not None or hf_key is not None):
            from .model_loading import load_pipeline_quietly

            pipeline = load_pipeline_quietly(model or hf_key, device=device, width=width, height=height)
        if pipeline is not None:
            from .streaming import check_pipeline

            check_pipeline(pipeline, width, height)
        self._state = state or CanvasState(width, height)
        self._python_edits = itertools.count(1)
        self._runner = None
        self._max_in_flight = max_in_flight
        self._kernel = KernelThread()  # sends and trait writes from other threads go through it
        self._transport = Transport()  # buffers or base64, per direction, as the views' probes found
        # Outside a kernel (a script, a benchmark) the stream's threads set traits directly, and ipywidgets'
        # hold_sync is not thread-safe; it also makes a `when` check and its write one step, so a status
        # queued by the stream cannot land after a pause.
        self._traits_lock = threading.RLock()
        self._inbox = StrokeInbox(lambda: self._state.layer_ids, self._apply_stroke, self._report, self._kernel.call_later)
        super().__init__(width=width, height=height, layers=self._state.layers, **files, **kwargs)
        self._sync_background_trait()
        if background_prompt:
            self.background = {**self.background, "prompt": background_prompt}
        self.on_msg(self._on_msg)
        if pipeline is not None:
            self.attach_pipeline(pipeline)
        if region_mode is not None:  # given: it wins over the pipeline's
            self.region_mode = region_mode

    # ---- traits from the browser --------------------------------------------------------------
    @t.validate("width", "height")
    def _check_size(self, proposal):
        name = proposal["trait"].name
        value = proposal["value"]
        state = getattr(self, "_state", None)
        if state is not None and self.trait_has_value(name) and value != getattr(state, name):
            raise t.TraitError(f"{name} is fixed once the canvas exists; create a new SemanticCanvas to resize")
        check_canvas_size(value, 8) if name == "width" else check_canvas_size(8, value)
        return value

    @t.observe("layers")
    def _on_layers(self, change):
        try:
            normalized = self._state.set_layers(change["new"])
        except (ValueError, TypeError) as exc:
            self._report(f"layer change rejected: {exc}")
            normalized = self._state.layers
        if normalized != change["new"]:
            self.layers = normalized
        ids = self._state.layer_ids
        if self.active_layer and self.active_layer not in ids:
            self.active_layer = ids[-1] if ids else ""
        self._inbox.release()  # strokes that waited for a layer of this list

    @t.validate("active_layer")
    def _check_active(self, proposal):
        value = proposal["value"]
        # Checked against the `layers` trait, not the state: a view's update may carry a new layer and
        # make it active in one message, and the state hears of the new layer only after this check.
        known = [layer.get("id") for layer in self.layers if isinstance(layer, dict)]
        if value and value not in known:
            raise t.TraitError(f"unknown layer {quote(value)}; known layers: {known}")
        return value

    @t.validate("background")
    def _check_background(self, proposal):
        value = proposal["value"]
        try:
            for key in ("prompt", "negative_prompt"):
                check_text(f"background {key}", value.get(key, ""))
        except ValueError as exc:
            raise t.TraitError(str(exc)) from None
        # Always the full dict: a key left out means empty text, and has_image reports the state (it is not set here).
        return {"prompt": value.get("prompt", ""), "negative_prompt": value.get("negative_prompt", ""),
                "has_image": self._state.background_image is not None}

    @t.observe("background")
    def _on_background(self, change):
        new = change["new"]
        self._state.set_background(new.get("prompt", ""), new.get("negative_prompt", ""))

    @t.validate("region_mode")
    def _check_region_mode(self, proposal):
        mode = proposal["value"]
        if mode != "exact" and self._runner is not None:
            from .engine.regional_attention import check_region_mode

            try:
                check_region_mode(mode, self._runner.pipeline.model)
            except ValueError as exc:
                raise t.TraitError(str(exc)) from None
        return mode

    @t.observe("region_mode")
    def _on_region_mode(self, change):
        if self._runner is not None:
            self._runner.request_region_mode(change["new"])

    @t.validate("seed")
    def _check_seed(self, proposal):
        try:
            return check_seed(proposal["value"])
        except ValueError as exc:
            raise t.TraitError(str(exc)) from None

    def _sync_background_trait(self):
        self.background = {**self._state.background, "has_image": self._state.background_image is not None}

    # ---- messages from the browser ------------------------------------------------------------
    def set_state(self, sync_data: dict) -> None:
        """A view's state update, one trait at a time, `layers` first.

        ipywidgets applies an update as a whole, and a bad value rolls the whole update back, silently
        for the view. A view merges its held-back updates into one, so that would take good changes down
        with a bad one. Here a bad value is reported and the view gets the kernel's value back."""
        for name in sorted(sync_data, key=lambda name: name != "layers"):
            try:
                super().set_state({name: sync_data[name]})
            except Exception as exc:  # the kernel and the view must survive anything a view sends
                if not isinstance(exc, (t.TraitError, ValueError, TypeError)):
                    log.exception("error while applying a change from the browser")
                self._report(f"ignored a change of {quote(name)} from the browser: {exc}")
                if name in self.keys:
                    self.send_state(name)

    def _on_msg(self, _widget, content: Any, buffers: list) -> None:
        try:
            if not isinstance(content, dict):
                raise protocol.ProtocolError(f"a message must be a JSON object (got {type(content).__name__})")
            buffers = self._transport.unpack(content, buffers)
            kind = content.get("type")
            if kind == "probe":
                self.send(*self._transport.answer_probe(content, buffers))  # as a buffer always: it tests them
            elif kind == "transport":
                self._transport.choose(content)
            elif kind == "mask":
                self._inbox.receive(protocol.decode_mask_message(content, buffers, self.width, self.height))
            elif kind == "ack":
                seq = protocol.decode_ack(content)
                if self._runner is not None:
                    self._runner.acknowledge(seq)
            elif kind == "sync":
                self._send_everything(protocol.decode_sync(content))
            elif kind == "action":
                self._run_action(protocol.decode_action(content))
            elif kind == "background_image":
                rgb = protocol.decode_background_image(content, buffers, self.width, self.height)
                self.set_background_image(rgb)
            else:
                raise protocol.ProtocolError(f"unknown message type {quote(kind)}")
        except (protocol.ProtocolError, KeyError, ValueError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            self._report(f"ignored a message from the browser: {message}")
        except Exception as exc:  # the kernel and the canvas must survive anything a view sends
            log.exception("error while handling a browser message")
            self._report(f"error while handling a browser message: {type(exc).__name__}: {exc}")

    def _apply_stroke(self, patch: Any, arrival: float) -> None:
        self._state.apply_patch(patch, arrival=arrival)
        # Other views of this canvas (displayed twice, another tab) follow the stroke live.
        self.send_threadsafe(*protocol.encode_mask_message(patch.layer, patch.x, patch.y, patch.data, "peer", patch.view))

    def _run_action(self, name: str) -> None:
        if self._runner is None:
            raise protocol.ProtocolError(f"'{name}' needs a pipeline: create the canvas with pipeline= or model=")
        try:
            getattr(self, name)()
        except Exception as exc:  # the model failed (e.g. out of memory): say what to do, as the stream does
            from .streaming import failure_hint

            log.exception("the %r button failed", name)
            self._report(f"{name} failed: {type(exc).__name__}: {exc}. {failure_hint(exc)}")

    def _send_everything(self, view: str | None) -> None:
        """Every mask and the background image, for the view that asked (the others skip them)."""
        snapshot = self._state.snapshot()
        for layer in snapshot.layers:
            for content, buffers in protocol.mask_messages(layer["id"], snapshot.masks[layer["id"]], "sync", view):
                self._send_to_views(content, buffers)
        if snapshot.background_image is not None:
            self._send_to_views(*protocol.background_message(snapshot.background_image, view))
        self._send_to_views({"type": "synced", "view": view} if view is not None else {"type": "synced"})
        if self._runner is not None:
            self._runner.resend_latest()

    def _report(self, message: str) -> None:
        """Show a problem to the person (status line + error message) and log it. Cut short when long: a
        message may quote what a view sent (traitlets' errors quote a bad value whole)."""
        message = shorten(message)
        log.warning(message)
        self.send_threadsafe(*protocol.error_message(message))
        self.set_traits_threadsafe(status=message)

    # ---- sending from any thread (frames come from the encoder thread) ------------------------
    def send_threadsafe(self, content: dict, buffers: list | None = None) -> None:
        """Send a message to the views, from any thread: it leaves from the kernel's thread (`KernelThread`)."""
        self._kernel.call(self._send_if_open, content, buffers)

    def _send_if_open(self, content: dict, buffers: list | None) -> None:
        if self.comm is not None:
            self._send_to_views(content, buffers)

    def _send_to_views(self, content: dict, buffers: list | None = None) -> None:
        """Send on the kernel's thread, in the transport the views' probes chose."""
        self.send(*self._transport.pack(content, buffers))

    @property
    def transport(self) -> dict:
        """How binary payloads travel, per direction: {"to_kernel": ..., "to_browser": ...}, each "binary"
        (buffers), "base64" (in the JSON content, where a view's front end drops buffers) or "unknown" (no view
        has rendered yet). A view shows the fallback in its status line."""
        return self._transport.state

    def set_traits_threadsafe(self, when: Callable[[], bool] | None = None, **values: Any) -> None:
        """Set traits from any thread, on the kernel's thread; `when` (checked there, at that moment) may call it off."""
        self._kernel.call(self._set_traits, when, values)

    def _set_traits(self, when: Callable[[], bool] | None, values: dict) -> None:
        with self._traits_lock:
            if (when is None or when()) and (self.comm is not None or self._kernel.loop is None):
                with self.hold_sync():
                    for name, value in values.items():
                        setattr(self, name, value)

    # ---- public API: layers and masks ---------------------------------------------------------
    @property
    def state(self) -> CanvasState:
        """The headless state behind this canvas (layers, masks, background)."""
        return self._state

    def add_layer(self, prompt: str = "", **fields: Any) -> str:
        """Add a layer on top and return its id. Fields: name, negative_prompt, color ("#rrggbb"),
        prompt_strength, mask_strength, mask_blur (pixels), visible."""
        layer_id = self._state.add_layer(prompt, **fields)
        self.layers = self._state.layers
        if not self.active_layer:
            self.active_layer = layer_id
        return layer_id

    def update_layer(self, layer_id: str, **fields: Any) -> dict:
        """Change a layer's settings (prompt, color, strengths, blur, visibility, ...)."""
        updated = self._state.update_layer(layer_id, **fields)
        self.layers = self._state.layers
        return updated

    def remove_layer(self, layer_id: str) -> None:
        self._state.remove_layer(layer_id)
        self.layers = self._state.layers

    @property
    def masks(self) -> np.ndarray:
        """float32 (n_layers, H, W) in [0, 1], in `layers` order (bottom to top)."""
        return self._state.masks

    def get_mask(self, layer_id: str) -> np.ndarray:
        """float32 (H, W) in [0, 1]."""
        return self._state.get_mask(layer_id)

    def set_mask(self, layer_id: str, mask: Any) -> None:
        """Replace a layer's mask (bool / uint8 / float array, torch tensor or PIL image of the canvas size).

        It shows in the browser at once and can be undone there."""
        warn_if_zero_one_uint8(mask)
        coverage = self._state.set_mask(layer_id, mask)
        edit = next(self._python_edits)  # a large mask goes in several bands: the view undoes them as one
        for content, buffers in protocol.mask_messages(layer_id, coverage, "python"):
            self.send_threadsafe({**content, "edit": edit}, buffers)

    def label_map(self) -> np.ndarray:
        """int64 (H, W): index of the top-most covering layer, -1 where none."""
        return self._state.label_map()

    def observe_masks(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(layer_id)`` after every mask update (browser strokes and set_mask). The callbacks
        belong to the canvas's `state` (see `CanvasState.observe_masks`)."""
        self._state.observe_masks(callback)

    def unobserve_masks(self, callback: Callable[[str], None]) -> None:
        """Stop calling ``callback``; like traitlets' ``unobserve``, one never added is no error."""
        self._state.unobserve_masks(callback)

    # ---- background ---------------------------------------------------------------------------
    @property
    def background_image(self):
        """The background image as a PIL image of the canvas size, or None."""
        from PIL import Image

        rgb = self._state.background_image
        return None if rgb is None else Image.fromarray(rgb, "RGB")

    def set_background_image(self, image: Any) -> None:
        """Set or clear (None) the background image; it is scaled and centre-cropped to cover the canvas.

        A PIL image, a path, or an array shaped (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) grey, holding
        uint8 0..255 or floats in [0, 1]. At most 64 megapixels (docs/reliability.md); a file's size is
        checked before it is decoded."""
        rgb = None
        if isinstance(image, (str, Path)):
            from PIL import Image

            with Image.open(image) as opened:
                rgb = protocol.fit_image(opened, self.width, self.height)
        elif image is not None:
            rgb = protocol.fit_image(image_from_array(image) if isinstance(image, np.ndarray) else image, self.width, self.height)
        self._state.set_background_image(rgb)
        self.send_threadsafe(*protocol.background_message(self._state.background_image))
        self.set_traits_threadsafe(background={**self.background, "has_image": rgb is not None})

    # ---- save / load --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Save prompts, settings, masks and the background image (a zip of JSON + PNG; no pickle)."""
        return self._state.save(path, extra={"active_layer": self.active_layer, "seed": self.seed})

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> "SemanticCanvas":
        """Open a scene saved with `save`; keyword arguments go to the constructor (e.g. pipeline=) and
        win over the scene's settings (e.g. seed=)."""
        state, scene = CanvasState.read_scene(path)
        if "seed" not in kwargs:
            try:
                kwargs["seed"] = check_seed(scene.get("seed", 2024))
            except ValueError as exc:
                raise ValueError(f"{path} is damaged: its {exc}") from None
        canvas = cls(state.width, state.height, state=state, **kwargs)
        if "active_layer" not in kwargs and scene.get("active_layer") in state.layer_ids:
            canvas.active_layer = scene["active_layer"]
        return canvas

    # ---- live generation ----------------------------------------------------------------------
    def attach_pipeline(self, pipeline: Any = None, *, model: str | None = None, device: Any = None) -> None:
        """Connect a StreamMultiDiffusion (or build one from ``model``) to this canvas."""
        from .engine.models.choice import pipeline_notice
        from .model_loading import load_pipeline_quietly
        from .streaming import StreamRunner, check_pipeline

        if pipeline is None:  # the model loads with a line in this canvas's status saying so
            pipeline = load_pipeline_quietly(model, device=device, width=self.width, height=self.height,
                                             say=lambda text: self.set_traits_threadsafe(status=text))
        check_pipeline(pipeline, self.width, self.height)  # a wrong one leaves the current pipeline working
        was_running = self._runner is not None and self._runner.running
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        self.region_mode = pipeline.region_mode  # the canvas follows the pipeline it is given
        self.notice = pipeline_notice(pipeline)
        closed = pipeline.model.vocabulary
        self.vocabulary = list(closed.suggestions) if closed is not None else []
        self._runner = StreamRunner(pipeline, self, max_in_flight=self._max_in_flight)
        self.has_pipeline = True
        if was_running:  # the stream goes on, on the new pipeline
            self._runner.start()

    @property
    def pipeline(self):
        return None if self._runner is None else self._runner.pipeline

    def _require_runner(self):
        if self._runner is None:
            raise RuntimeError("this canvas has no pipeline: create it with SemanticCanvas(pipeline=...) or model=...")
        return self._runner

    def start(self) -> None:
        """Start streaming frames (they follow every stroke until `stop()`)."""
        self._require_runner().start()

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.stop()

    def step(self):
        """Generate one frame now (in the calling thread) and return it as a PIL image."""
        return self._require_runner().step()

    def render(self):
        """Generate until the image settles (in the calling thread, without streaming) and return it.

        The settled image is what the stream converges to for this scene (the one-shot image); it is
        also sent to the views losslessly. If the scene keeps changing meanwhile, the latest frame is
        returned after at most 2 x slots + 1 frames."""
        return self._require_runner().render()

    def inspect_slots(self):
        """What the last frame did at each denoising slot, noisiest first: each slot's noisy input and clean
        estimate, and the weight each layer had there (`.weights(layer_id)`; `.contact_sheet()` draws it all).
        For learning how region-based streaming works: pause (or Step) first."""
        return self._require_runner().inspect_slots()

    @property
    def frame(self):
        """The latest generated frame as a PIL image (None before the first)."""
        return None if self._runner is None else self._runner.latest_image()

    @property
    def stats(self) -> dict:
        """The latest frame's figures, as its frame message brought them to the views ({} before the first
        frame): fps (frames/s over the last 2 s), frame_ms (from the start of its work to its send),
        breakdown (milliseconds per stage), frames (how many were made), latency_ms (from a stroke to the
        first frame that shows it; None until a stroke made while streaming was shown)."""
        return {} if self._runner is None else self._runner.sender.stats

    @t.observe("seed")
    def _on_seed(self, change):
        if self._runner is not None:
            self._runner.request_seed(change["new"])

    def close(self) -> None:
        # Also runs from __del__, possibly on a half-built instance, and may run twice.
        runner, self._runner = getattr(self, "_runner", None), None
        if runner is not None:
            runner.close()
        super().close()

    def __repr__(self) -> str:
        names = ", ".join(repr(layer["prompt"] or layer["name"] or layer["id"]) for layer in self._state.layers)
        return f"SemanticCanvas({self.width}x{self.height}, layers=[{names}])"


__all__ = ["SemanticCanvas", "FrontendNotBuiltError"]
