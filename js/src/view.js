// One rendered view of a SemanticCanvas. It builds the pieces, wires them to the model and to each other,
// and keeps what joins them: the canvas size, the status line and notice, and the dispatch of clicks,
// field changes and kernel messages. The pieces: Transport (how payloads travel, probed at render),
// MaskSync (the masks and the kernel's copy of them), MaskOverlay (drawing them), StrokeInput
// (painting), Edits (clear, fill, undo / redo), LayerList (layer edits), Toolbar and KeyboardShortcuts,
// FramePanel (the generated image), LayersPanel, BackgroundImage and ImportExport (files).

import { BackgroundImage } from "./background_image.js";
import { Disposer, h } from "./dom.js";
import { Edits } from "./edits.js";
import { FramePanel } from "./frame_panel.js";
import { History } from "./history.js";
import { ImportExport } from "./import_export.js";
import { LayerList } from "./layer_list.js";
import { LayersPanel } from "./layers_panel.js";
import { MaskOverlay } from "./mask_overlay.js";
import { MaskSync } from "./mask_sync.js";
import { MAX_LAYERS } from "./palette.js";
import { parseKernelMessage } from "./protocol.js";
import { StrokeInput } from "./stroke_input.js";
import { KeyboardShortcuts, Toolbar, VIEWS, clampBrush } from "./toolbar.js";
import { readTrait, writeTraits } from "./traits.js";
import { BASE64, Transport } from "./transport.js";

/** What the status line adds while a direction falls back to base64, or "". */
export function transportNote({ toKernel, toBrowser }) {
  const down = toBrowser === BASE64, up = toKernel === BASE64;
  if (!down && !up) return "";
  const which = down && up ? "either way" : down ? "from the kernel" : "to the kernel";
  return `transport: base64 (this front end drops binary buffers ${which}; slower, but complete)`;
}

/** The status line's words for a kernel message that could not be used. */
export function damagedText(content, error) {
  const kind = typeof content?.type === "string" ? content.type : "a";
  const what = { frame: "A frame", mask: "A mask", background_image: "The background image" }[kind] ?? `A ${kind} message`;
  return `${what} from the kernel arrived damaged and was ignored (${error}).`;
}

export class SemdrawView {
  constructor(model, el) {
    this.model = model;
    this.d = new Disposer();
    this.history = new History();
    this.masks = new MaskSync({
      send: (content, buffers) => this.transport.send(content, buffers),
      history: this.history,
      onChange: (rect) => this.overlay.invalidate(rect),
      onHistoryChange: () => this.updateUndo(),
      onError: (text) => this.say(text, true),
    });
    // Every message to the kernel goes through it: held until the probe is answered, then encoded as chosen.
    this.transport = new Transport({
      send: (content, buffers) => model.send(content, undefined, buffers),
      viewId: this.masks.viewId,
      onChosen: () => this.renderStatus(),
    });
    this.layers = new LayerList({ model, masks: this.masks, history: this.history });
    this.localStatus = null; // a message of this view's, shown until the kernel's status changes
    this.resizePending = false;

    this.build(el);
    this.bind();
    this.applySize();
    this.onLayers();
    this.onTool();
    this.onSettings();
    this.onRegionMode();
    this.onPipeline();
    this.renderStatus();
    this.renderNotice();
    this.layersPanel.setVocabulary(this.get("vocabulary", []));
    this.transport.probe();
    this.masks.requestSync();
  }

  get(name, fallback) {
    return readTrait(this.model, name, fallback);
  }

  set(name, value) {
    writeTraits(this.model, { [name]: value });
  }

  build(host) {
    const { d, model, masks, layers } = this;
    this.root = h("div", { class: "semdraw", tabindex: "0" });
    host.append(this.root);
    d.add(() => this.root.remove());

    this.canvas = h("canvas", { class: "sd-masks", "data-testid": "semdraw-canvas" });
    this.overlay = new MaskOverlay({ d, canvas: this.canvas, masks });
    const bgCanvas = h("canvas", { class: "sd-bg" });
    const cursor = h("div", { class: "sd-cursor" });
    this.stage = h("div", { class: "sd-stage" }, bgCanvas, this.canvas, cursor);
    this.background = new BackgroundImage({
      d, canvas: bgCanvas, onChange: () => this.onLayers(), say: (text) => this.say(text, true),
    });
    this.strokes = new StrokeInput({
      d, canvas: this.canvas, cursor, root: this.root, masks,
      brushSize: () => this.brushSize(),
      tool: () => this.get("tool", "brush"),
      activeLayer: () => layers.activeId(),
      say: (text) => this.say(text),
      record: (entry) => this.edits.record(entry),
    });
    this.edits = new Edits({
      masks, layers, history: this.history, busy: () => this.strokes.active, onHistoryChange: () => this.updateUndo(),
    });
    this.files = new ImportExport({
      d, model, send: (content, buffers) => this.transport.send(content, buffers), root: this.root, layers, masks,
      background: this.background, say: (text, error) => this.say(text, error),
    });
    this.toolbar = new Toolbar({ d, maskCanvas: this.canvas });
    this.keys = new KeyboardShortcuts({
      d,
      root: this.root,
      commands: {
        undo: () => this.edits.undo(),
        redo: () => this.edits.redo(),
        setTool: (tool) => this.set("tool", tool),
        brushSize: () => this.brushSize(),
        setBrushSize: (size) => this.set("brush_size", size),
        selectLayer: (n) => layers.select(n),
      },
    });
    this.frames = new FramePanel({
      d, root: this.root, send: (content) => this.transport.send(content), say: (text) => this.say(text, true),
    });
    this.layersPanel = new LayersPanel();
    this.notice = h("div", { class: "sd-notice", role: "alert" });
    this.statusText = h("span", { class: "sd-status-text" });
    this.transportText = h("span", { class: "sd-transport", "data-testid": "semdraw-transport" });
    this.status = h("div", { class: "sd-status", role: "status", "aria-live": "polite" }, this.statusText, this.transportText);
    this.main = h("div", { class: "sd-main" }, h("div", { class: "sd-draw" }, this.stage), this.frames.el);
    this.root.append(this.notice, this.toolbar.el, this.main, this.layersPanel.el, this.status);
  }

  bind() {
    const { d, model, root } = this;
    for (const name of ["layers", "active_layer", "background"]) d.onModel(model, `change:${name}`, () => this.onLayers());
    d.onModel(model, "change:width", () => this.scheduleResize());
    d.onModel(model, "change:height", () => this.scheduleResize());
    d.onModel(model, "change:tool", () => this.onTool());
    d.onModel(model, "change:brush_size", () => this.onTool());
    for (const name of ["overlay_opacity", "seed"]) d.onModel(model, `change:${name}`, () => this.onSettings());
    d.onModel(model, "change:view", () => this.onView());
    d.onModel(model, "change:region_mode", () => this.onRegionMode());
    d.onModel(model, "change:has_pipeline", () => this.onPipeline());
    d.onModel(model, "change:running", () => this.onPipeline());
    d.onModel(model, "change:status", () => { this.localStatus = null; this.renderStatus(); });
    d.onModel(model, "change:notice", () => this.renderNotice());
    d.onModel(model, "change:vocabulary", () => this.layersPanel.setVocabulary(this.get("vocabulary", [])));
    d.onModel(model, "msg:custom", (content, buffers) => this.onMessage(content, buffers));
    d.listen(root, "click", (e) => this.onClick(e));
    d.listen(root, "change", (e) => this.onChange(e));
    d.listen(root, "pointerdown", (e) => this.onRowPointer(e));
    d.add(() => this.masks.dispose());
  }

  destroy() {
    this.strokes.finish();
    this.d.dispose();
  }

  // ---------------------------------------------------------------- model → view

  scheduleResize() {
    if (this.resizePending) return;
    this.resizePending = true;
    queueMicrotask(() => {
      this.resizePending = false;
      if (!this.d.disposed && this.applySize()) this.masks.requestSync();
    });
  }

  /** Sizes the canvases to the traits; masks are reallocated (cleared). True if it changed. */
  applySize() {
    const width = this.get("width", 512);
    const height = this.get("height", 512);
    if (width === this.masks.width && height === this.masks.height) return false;
    this.strokes.abort();
    this.masks.resize(width, height);
    this.overlay.resize();
    this.stage.style.aspectRatio = `${width} / ${height}`;
    this.stage.style.width = `min(100%, calc(85vh * ${width / height}))`;
    this.history.clear();
    this.layers.forgetDeletions();
    this.onLayers();
    this.background.resize(width, height);
    this.updateUndo();
    return true;
  }

  onLayers() {
    const layers = this.layers.all();
    for (const id of this.layers.follow(layers)) {
      if (this.strokes.layer === id) this.strokes.abort();
    }
    this.overlay.showLayers(layers);
    const background = this.get("background", {});
    this.layersPanel.update(layers, this.get("active_layer", ""), background, Boolean(background.has_image || this.background.shown));
    this.updateUndo();
  }

  brushSize() {
    return clampBrush(Math.round(Number(this.get("brush_size", 24)) || 24));
  }

  onTool() {
    this.toolbar.showTool(this.get("tool", "brush"), this.brushSize());
  }

  onSettings() {
    this.toolbar.showSettings(Number(this.get("overlay_opacity", 0.5)), this.get("seed", 0));
  }

  onRegionMode() {
    this.toolbar.showRegionMode(this.get("region_mode", "exact"));
  }

  onPipeline() {
    this.root.classList.toggle("sd-has-pipeline", Boolean(this.get("has_pipeline", false)));
    this.frames.showRunning(Boolean(this.get("running", false)));
    this.onView();
  }

  onView() {
    const view = VIEWS.includes(this.get("view", "side")) ? this.get("view", "side") : "side";
    this.toolbar.showView(view);
    this.main.dataset.view = view;
    this.frames.place(view === "overlay" && this.get("has_pipeline", false), this.stage, this.canvas);
  }

  updateUndo() {
    this.toolbar.showUndo(this.history.canUndo, this.history.canRedo);
  }

  renderNotice() {
    const text = String(this.get("notice", "") || "");
    this.notice.textContent = text;
    this.notice.hidden = !text;
  }

  renderStatus() {
    const text = this.localStatus?.text ?? String(this.get("status", "") || "");
    this.statusText.textContent = text || "\u00a0";
    this.status.classList.toggle("sd-error", Boolean(this.localStatus?.error));
    const note = transportNote(this.transport);
    this.transportText.textContent = note;
    this.transportText.hidden = !note;
  }

  say(text, error = false) {
    this.localStatus = { text, error };
    this.renderStatus();
  }

  // ---------------------------------------------------------------- UI events

  onRowPointer(e) {
    const row = e.target.closest?.(".sd-layer[data-layer]");
    if (row && row.dataset.layer !== this.get("active_layer", "")) this.set("active_layer", row.dataset.layer);
  }

  onClick(e) {
    const target = e.target.closest?.("[data-action]");
    if (!target || target.disabled) return;
    const layer = target.closest(".sd-layer[data-layer]")?.dataset.layer;
    switch (target.dataset.action) {
      case "tool-brush": return this.set("tool", "brush");
      case "tool-eraser": return this.set("tool", "eraser");
      case "clear": return this.edits.clearLayer();
      case "fill": return this.edits.fillLayer();
      case "undo": return this.edits.undo();
      case "redo": return this.edits.redo();
      case "play": return this.transport.send({ type: "action", name: this.get("running", false) ? "stop" : "start" });
      case "step":
      case "render": return this.transport.send({ type: "action", name: target.dataset.action });
      case "palette-export": return this.files.exportPalette();
      case "palette-import": return this.toolbar.paletteFile.click();
      case "bg-load": return this.layersPanel.bgFile.click();
      case "bg-clear": return this.files.clearBackground();
      case "layer-add":
        return this.layers.add() || this.say(`A canvas holds at most ${MAX_LAYERS} layers: delete one to add another.`, true);
      case "layer-delete": return this.edits.deleteLayer(layer);
      case "layer-up": return this.layers.move(layer, -1);
      case "layer-down": return this.layers.move(layer, 1);
      default: return undefined;
    }
  }

  onChange(e) {
    const t = e.target;
    const { setting, field, bg, role } = t.dataset;
    if (role === "bg-file" || role === "palette-file") return this.files.take(t);
    if (setting === "region_mode") return this.set(setting, t.checked ? "attention" : "exact");
    if (setting) {
      const value = setting === "view" ? t.value : Number(t.value);
      if (setting !== "view" && !Number.isFinite(value)) return this.onSettings();
      return this.set(setting, setting === "seed" || setting === "brush_size" ? Math.round(value) : value);
    }
    if (bg) return this.set("background", { ...this.get("background", {}), [bg]: t.value });
    if (field) {
      const layer = t.closest(".sd-layer[data-layer]")?.dataset.layer;
      let value = t.type === "checkbox" ? t.checked : t.value;
      if (t.type === "number") {
        value = Number(value);
        const min = Number(t.min), max = Number(t.max);
        if (!Number.isFinite(value)) return this.onLayers();
        value = Math.min(max, Math.max(min, value));
      }
      if (layer) this.layers.update(layer, { [field]: value });
    }
    return undefined;
  }

  // ---------------------------------------------------------------- kernel messages

  onMessage(content, buffers) {
    const { msg, error } = parseKernelMessage(content, buffers, { width: this.masks.width, height: this.masks.height });
    if (error) return this.onDamaged(content, error);
    switch (msg.type) {
      case "probe_reply":
        this.transport.answered(msg);
        break;
      case "mask":
      case "synced":
        this.masks.receive(msg);
        break;
      case "frame":
        this.frames.show(msg);
        break;
      case "background_image":
        if (msg.view && msg.view !== this.masks.viewId) break; // part of another view's sync
        if (msg.clear) this.background.show(null);
        else this.background.decode(msg.data, msg.format);
        break;
      case "error":
        this.say(msg.message, true);
        break;
      default:
        break;
    }
    return undefined;
  }

  /** A kernel message that could not be used: said in the status line; a frame is still acknowledged
   * (the ack frees the kernel's window) and a sync's damaged mask keeps painting off. */
  onDamaged(content, error) {
    console.warn(`semdraw: ignored a kernel message: ${error}`, content);
    if (content?.type === "frame" && Number.isInteger(content.seq)) this.frames.acknowledge(content.seq);
    if (content?.type === "mask") this.masks.damaged(content);
    this.say(damagedText(content, error), true);
  }
}
