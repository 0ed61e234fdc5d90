// One rendered view of a SemanticCanvas: drawing surface, layers palette, tools, frame panel.
// Masks live here as Uint8Array(width*height) per layer id and are painted locally with no
// kernel round trip; dirty rectangles go to the kernel (the source of truth) as binary mask
// messages, at most every SEND_INTERVAL_MS while drawing and always at stroke end.

import { Disposer, h, isTyping } from "./dom.js";
import { compositeRect, parseColor } from "./composite.js";
import { History } from "./history.js";
import { LayersPanel, setField } from "./layers_panel.js";
import { exportPalette, importPalette, newLayer, withDefaults } from "./palette.js";
import { IMAGE_MIME, MaskSender, maskBytes, parseKernelMessage } from "./protocol.js";
import { Stroke } from "./raster.js";
import { clip, extract, intersect, nonZeroBounds, put, union } from "./rects.js";

const SEND_INTERVAL_MS = 50; // ≤ 20 Hz while drawing
const SYNC_TIMEOUT_MS = 3000; // painting waits at most this long for the kernel's masks
const MAX_WRITES_DURING_SYNC = 4096; // edits remembered one by one while a late sync is on its way
const MAX_BACKGROUND_BYTES = 20 * 1024 * 1024;
const REENCODE_BACKGROUND_BYTES = 8 * 1024 * 1024; // the server's websocket cap is 10 MB
const MAX_BRUSH = 256;
const FILE_FORMATS = { "image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp" };
const SHORTCUTS = [
  ["B", "brush"], ["E", "eraser"], ["[ / ]", "brush size down / up"],
  ["Ctrl/⌘+Z", "undo"], ["Ctrl/⌘+Shift+Z, Ctrl+Y", "redo"], ["1–9", "select layer n (1 = bottom row)"],
  ["pen", "pressure scales the brush"],
];

const PEN_ERASER_BUTTON = 32; // PointerEvent.buttons bit of a pen's eraser end
// JupyterLab (Lumino) leaves keys alone inside an element with these, so B, E, Z or a notebook's
// single-key commands (A, D D, X, ...) never edit the notebook while someone paints.
const SUPPRESS_SHORTCUTS = ["data-lm-suppress-shortcuts", "data-p-suppress-shortcuts"];
// The JupyterLab keys people reach for while painting: run the cell, save, the command palette. Other
// combinations stay with the widget or its text fields (Ctrl+Z there is the field's undo, not the notebook's).
const forJupyter = (e) => {
  const accel = e.ctrlKey || e.metaKey;
  return (e.key === "Enter" && (accel || e.shiftKey || e.altKey)) ||
    (accel && !e.altKey && (e.key === "s" || e.key === "S")) ||
    (accel && e.shiftKey && (e.key === "c" || e.key === "C"));
};

const clampBrush = (size) => Math.max(1, Math.min(MAX_BRUSH, size));

export class SemdrawView {
  constructor(model, el) {
    this.model = model;
    this.host = el;
    this.d = new Disposer();
    this.masks = new Map(); // layer id → Uint8Array(width*height)
    this.knownLayers = new Set(); // ids seen in the layers trait (masks of others are kept as orphans)
    this.history = new History();
    this.deletedHere = new Set(); // layers this view deleted (undoably), until the layer list drops them
    // Every view of this canvas hears the kernel echo each stroke ("peer" masks); the id lets a view
    // skip the echo of its own strokes, which could otherwise land on top of newer paint.
    this.viewId = Math.random().toString(36).slice(2, 10);
    this.sender = new MaskSender((content, buffers) => model.send({ ...content, view: this.viewId }, undefined, buffers));
    this.width = 0;
    this.height = 0;
    this.stroke = null;
    this.dirty = null;
    this.rafId = 0;
    this.sendTimer = 0;
    this.lastSend = 0;
    this.layerLook = "";
    this.visibleLayers = [];
    this.localStatus = null;
    this.frameStats = null;
    this.frameToken = 0;
    this.frameUrl = null;
    this.background = null; // ImageBitmap drawn under the masks
    this.backgroundVersion = 0; // bumped by every background change, so a slow decode cannot undo a newer one
    this.writtenDuringSync = null; // [{layer, rect}] this view wrote while a sync's masks were on their way
    this.exportUrls = new Set();
    this.inbox = Promise.resolve(); // kernel mask messages, applied in arrival order
    this.timers = new Set();
    this.resizePending = false;
    this.destroyed = false;

    this.build();
    this.bind();
    this.applySize();
    this.onLayers();
    this.onTool();
    this.onSettings();
    this.onPipeline();
    this.onView();
    this.renderStatus();
    this.renderStats();
    this.renderNotice();
    this.requestSync();
  }

  /**
   * Asks the kernel for every mask; the reply is addressed to this view only. Until its "synced"
   * (or a timeout, for a busy kernel), painting waits. Edits made after the timeout are sent after
   * the request, so the kernel applies them on top of the snapshot it replies with: the reply
   * must leave them in place here too (`writtenDuringSync`).
   */
  requestSync() {
    this.syncing = true;
    this.writtenDuringSync = [];
    clearTimeout(this.syncTimer);
    this.syncTimer = setTimeout(() => { this.syncing = false; }, SYNC_TIMEOUT_MS);
    this.model.send({ type: "sync", view: this.viewId });
  }

  /** Notes a local edit while a sync is on its way (see requestSync). */
  noteWrite(layer, rect) {
    const written = this.writtenDuringSync;
    if (!written) return;
    written.push({ layer, rect });
    if (written.length > MAX_WRITES_DURING_SYNC) {
      // A kernel this slow to answer: keep one box per layer (it may keep a little stale paint, never lose new)
      const boxes = new Map();
      for (const w of written) boxes.set(w.layer, union(boxes.get(w.layer), w.rect));
      this.writtenDuringSync = [...boxes].map(([id, box]) => ({ layer: id, rect: box }));
    }
  }

  get(name, fallback) {
    const v = this.model.get(name);
    return v === undefined || v === null ? fallback : v;
  }

  set(name, value) {
    this.model.set(name, value);
    this.model.save_changes();
  }

  // ---------------------------------------------------------------- building

  build() {
    const btn = (action, text, title, extra = {}) => h("button", { type: "button", "data-action": action, title, text, ...extra });
    this.brushBtn = btn("tool-brush", "Brush", "Brush (B)");
    this.eraserBtn = btn("tool-eraser", "Eraser", "Eraser (E)");
    this.sizeInput = h("input", { type: "range", min: "1", max: String(MAX_BRUSH), step: "1", "data-setting": "brush_size", title: "Brush size in canvas pixels ([ / ])" });
    this.sizeLabel = h("span", { class: "sd-value" });
    this.undoBtn = btn("undo", "↶", "Undo (Ctrl/⌘+Z)", { "aria-label": "Undo" });
    this.redoBtn = btn("redo", "↷", "Redo (Ctrl/⌘+Shift+Z)", { "aria-label": "Redo" });
    this.opacityInput = h("input", { type: "range", min: "0", max: "1", step: "0.05", "data-setting": "overlay_opacity", title: "Mask overlay opacity" });
    this.viewSelect = h("select", { "data-setting": "view", title: "Where the generated image is shown" },
      h("option", { value: "side", text: "image beside" }),
      h("option", { value: "below", text: "image below" }),
      h("option", { value: "overlay", text: "image under masks" }));
    this.seedInput = h("input", { type: "number", step: "1", "data-setting": "seed", class: "sd-seed", title: "Seed" });
    this.paletteFile = h("input", { type: "file", accept: "application/json,.json", "data-role": "palette-file", hidden: true });
    this.help = h("span", { class: "sd-help", tabindex: "0", "aria-label": "Keyboard shortcuts" }, "?",
      h("div", { class: "sd-help-pop", role: "tooltip" },
        h("strong", { text: "Shortcuts (click the widget first)" }),
        h("table", {}, SHORTCUTS.map(([k, what]) => h("tr", {}, h("td", { text: k }), h("td", { text: what }))))));

    this.notice = h("div", { class: "sd-notice", role: "alert" });
    this.toolbar = h("div", { class: "sd-toolbar" },
      h("span", { class: "sd-group" }, this.brushBtn, this.eraserBtn),
      h("label", { class: "sd-group" }, "size", this.sizeInput, this.sizeLabel),
      h("span", { class: "sd-group" },
        btn("clear", "Clear", "Clear the active layer's mask"),
        btn("fill", "Fill", "Fill the active layer's mask"),
        this.undoBtn, this.redoBtn),
      h("label", { class: "sd-group" }, "opacity", this.opacityInput),
      h("label", { class: "sd-group sd-gen-only" }, this.viewSelect),
      h("label", { class: "sd-group" }, "seed", this.seedInput),
      h("span", { class: "sd-group" },
        btn("palette-export", "Export", "Download the prompts and settings (no masks) as JSON"),
        btn("palette-import", "Import", "Load prompts and settings from a palette JSON (masks stay)"),
        this.paletteFile),
      this.help);

    this.bgCanvas = h("canvas", { class: "sd-bg" });
    this.canvas = h("canvas", { class: "sd-masks", "data-testid": "semdraw-canvas" });
    this.ctx = this.canvas.getContext("2d");
    this.bgCtx = this.bgCanvas.getContext("2d");
    this.cursor = h("div", { class: "sd-cursor" });
    this.stage = h("div", { class: "sd-stage" }, this.bgCanvas, this.canvas, this.cursor);

    this.frame = h("img", { class: "sd-frame", "data-testid": "semdraw-frame", alt: "generated image" });
    this.frameBox = h("div", { class: "sd-frame-box" }, this.frame);
    this.playBtn = btn("play", "▶ Play", "Start / pause generation");
    this.stats = h("div", { class: "sd-stats" });
    this.gen = h("div", { class: "sd-gen" },
      h("div", { class: "sd-gen-controls" }, this.playBtn, btn("step", "Step", "Generate one frame"),
        btn("render", "Render", "Generate until the image settles, without streaming")),
      this.frameBox, this.stats);
    this.main = h("div", { class: "sd-main" }, h("div", { class: "sd-draw" }, this.stage), this.gen);

    this.layersPanel = new LayersPanel();
    this.status = h("div", { class: "sd-status", role: "status", "aria-live": "polite" });
    this.root = h("div", { class: "semdraw", tabindex: "0" }, this.notice, this.toolbar, this.main, this.layersPanel.el, this.status);
    this.suppressShortcuts(true);
    this.host.append(this.root);
    this.d.add(() => this.root.remove());
  }

  bind() {
    const { d, model, root, canvas } = this;
    for (const name of ["layers", "active_layer", "background"]) d.onModel(model, `change:${name}`, () => this.onLayers());
    d.onModel(model, "change:width", () => this.scheduleResize());
    d.onModel(model, "change:height", () => this.scheduleResize());
    d.onModel(model, "change:tool", () => this.onTool());
    d.onModel(model, "change:brush_size", () => this.onTool());
    for (const name of ["overlay_opacity", "seed"]) d.onModel(model, `change:${name}`, () => this.onSettings());
    d.onModel(model, "change:view", () => this.onView());
    d.onModel(model, "change:has_pipeline", () => this.onPipeline());
    d.onModel(model, "change:running", () => this.onPipeline());
    d.onModel(model, "change:status", () => { this.localStatus = null; this.renderStatus(); });
    d.onModel(model, "change:stats", () => { this.frameStats = null; this.renderStats(); });
    d.onModel(model, "change:notice", () => this.renderNotice());
    d.onModel(model, "msg:custom", (content, buffers) => this.onMessage(content, buffers));

    d.listen(root, "click", (e) => this.onClick(e));
    d.listen(root, "change", (e) => this.onChange(e));
    d.listen(root, "input", (e) => this.onInput(e));
    // Every key starts suppressed for JupyterLab (on its way down); onKey may lift that on its way up.
    d.listen(root, "keydown", () => this.suppressShortcuts(true), { capture: true });
    d.listen(root, "keydown", (e) => this.onKey(e));
    d.listen(root, "pointerdown", (e) => this.onRowPointer(e));
    d.listen(canvas, "pointerdown", (e) => this.onPointerDown(e));
    d.listen(canvas, "pointermove", (e) => this.onPointerMove(e));
    d.listen(canvas, "pointerup", (e) => this.onPointerUp(e));
    d.listen(canvas, "pointercancel", (e) => this.onPointerCancel(e));
    d.listen(canvas, "lostpointercapture", (e) => this.onPointerUp(e));
    d.listen(canvas, "pointerleave", () => { this.cursor.style.display = "none"; });
    d.listen(canvas, "contextmenu", (e) => e.preventDefault());

    d.add(() => {
      this.destroyed = true;
      cancelAnimationFrame(this.rafId);
      clearTimeout(this.sendTimer);
      clearTimeout(this.syncTimer);
      for (const t of this.timers) clearTimeout(t);
      if (this.frameUrl) URL.revokeObjectURL(this.frameUrl);
      for (const url of this.exportUrls) URL.revokeObjectURL(url);
      this.background?.close?.();
    });
  }

  later(fn, ms) {
    const t = setTimeout(() => { this.timers.delete(t); fn(); }, ms);
    this.timers.add(t);
  }

  destroy() {
    if (this.stroke) this.finishStroke();
    this.d.dispose();
  }

  // ---------------------------------------------------------------- model → view

  scheduleResize() {
    if (this.resizePending) return;
    this.resizePending = true;
    queueMicrotask(() => {
      this.resizePending = false;
      if (!this.destroyed && this.applySize()) this.requestSync();
    });
  }

  /** Sizes the canvases to the traits; masks are reallocated (cleared). True if it changed. */
  applySize() {
    const width = this.get("width", 512);
    const height = this.get("height", 512);
    if (width === this.width && height === this.height) return false;
    this.abortStroke();
    this.width = width;
    this.height = height;
    for (const c of [this.canvas, this.bgCanvas]) {
      c.width = width;
      c.height = height;
    }
    this.stage.style.aspectRatio = `${width} / ${height}`;
    this.stage.style.width = `min(100%, calc(85vh * ${width / height}))`;
    this.overlay = this.ctx.createImageData(width, height);
    for (const id of this.masks.keys()) this.masks.set(id, new Uint8Array(width * height));
    this.history.clear();
    this.deletedHere.clear();
    this.layerLook = "";
    this.onLayers();
    this.drawBackground();
    this.updateUndo();
    return true;
  }

  layers() {
    const list = this.get("layers", []);
    return Array.isArray(list) ? list.filter((l) => l && typeof l.id === "string").map(withDefaults) : [];
  }

  activeId() {
    const id = this.get("active_layer", "");
    return this.masks.has(id) && this.knownLayers.has(id) ? id : "";
  }

  mask(id) {
    let m = this.masks.get(id);
    if (!m) {
      m = new Uint8Array(this.width * this.height);
      this.masks.set(id, m);
    }
    return m;
  }

  onLayers() {
    const layers = this.layers();
    const ids = new Set(layers.map((l) => l.id));
    for (const id of this.knownLayers) {
      if (!ids.has(id)) {
        this.masks.delete(id);
        if (!this.deletedHere.delete(id)) this.history.forgetLayer(id);
        if (this.stroke?.layer === id) this.abortStroke();
      }
    }
    this.knownLayers = ids;
    for (const l of layers) this.mask(l.id);

    const look = JSON.stringify(layers.map((l) => [l.id, l.color, l.visible]));
    if (look !== this.layerLook) {
      this.layerLook = look;
      this.visibleLayers = layers.filter((l) => l.visible).map((l) => ({ mask: this.masks.get(l.id), rgb: parseColor(l.color) }));
      this.invalidate({ x: 0, y: 0, w: this.width, h: this.height });
    }
    const background = this.get("background", {});
    this.layersPanel.update(layers, this.get("active_layer", ""), background, Boolean(background.has_image || this.background));
    this.updateUndo();
  }

  onTool() {
    const tool = this.get("tool", "brush");
    this.brushBtn.setAttribute("aria-pressed", String(tool !== "eraser"));
    this.eraserBtn.setAttribute("aria-pressed", String(tool === "eraser"));
    const size = this.brushSize();
    setField(this.sizeInput, size);
    this.sizeLabel.textContent = `${size}px`;
  }

  brushSize() {
    return clampBrush(Math.round(Number(this.get("brush_size", 24)) || 24));
  }

  onSettings() {
    const opacity = Number(this.get("overlay_opacity", 0.5));
    setField(this.opacityInput, opacity);
    this.canvas.style.opacity = String(opacity);
    setField(this.seedInput, this.get("seed", 0));
  }

  onPipeline() {
    const has = Boolean(this.get("has_pipeline", false));
    this.root.classList.toggle("sd-has-pipeline", has);
    const running = Boolean(this.get("running", false));
    this.playBtn.textContent = running ? "❚❚ Pause" : "▶ Play";
    this.playBtn.setAttribute("aria-pressed", String(running));
    this.onView();
  }

  onView() {
    const view = ["side", "below", "overlay"].includes(this.get("view", "side")) ? this.get("view", "side") : "side";
    setField(this.viewSelect, view);
    this.main.dataset.view = view;
    const overlay = view === "overlay" && this.get("has_pipeline", false);
    if (overlay && this.frame.parentNode !== this.stage) this.stage.insertBefore(this.frame, this.canvas);
    if (!overlay && this.frame.parentNode !== this.frameBox) this.frameBox.append(this.frame);
  }

  renderNotice() {
    const text = String(this.get("notice", "") || "");
    this.notice.textContent = text;
    this.notice.hidden = !text;
  }

  renderStatus() {
    const text = this.localStatus?.text ?? String(this.get("status", "") || "");
    this.status.textContent = text || "\u00a0";
    this.status.classList.toggle("sd-error", Boolean(this.localStatus?.error));
  }

  say(text, error = false) {
    this.localStatus = { text, error };
    this.renderStatus();
  }

  renderStats() {
    const s = { ...this.get("stats", {}), ...(this.frameStats ?? {}) };
    const parts = [];
    const num = (v) => typeof v === "number" && Number.isFinite(v);
    if (num(s.fps)) parts.push(`${s.fps.toFixed(1)} fps`);
    if (num(s.latency_ms)) parts.push(`latency ${Math.round(s.latency_ms)} ms`);
    if (num(s.frame_ms)) parts.push(`frame ${s.frame_ms.toFixed(1)} ms`);
    if (s.breakdown && typeof s.breakdown === "object") {
      const items = Object.entries(s.breakdown).filter(([, v]) => num(v)).map(([k, v]) => `${k} ${v.toFixed(1)}`);
      if (items.length) parts.push(`(${items.join(", ")} ms)`);
    }
    this.stats.textContent = parts.join(" · ");
  }

  // ---------------------------------------------------------------- overlay drawing

  invalidate(rect) {
    const r = clip(rect, this.width, this.height);
    if (!r) return;
    this.dirty = union(this.dirty, r);
    if (!this.rafId) this.rafId = requestAnimationFrame(() => this.redraw());
  }

  redraw() {
    this.rafId = 0;
    const r = this.dirty;
    this.dirty = null;
    if (!r || this.destroyed) return;
    compositeRect(this.overlay.data, this.width, r, this.visibleLayers);
    this.ctx.putImageData(this.overlay, 0, 0, r.x, r.y, r.w, r.h);
  }

  drawBackground() {
    this.bgCtx.clearRect(0, 0, this.width, this.height);
    if (this.background) this.bgCtx.drawImage(this.background, 0, 0, this.width, this.height);
  }

  // ---------------------------------------------------------------- drawing

  toCanvas(e, box) {
    return {
      x: ((e.clientX - box.left) * this.width) / box.width,
      y: ((e.clientY - box.top) * this.height) / box.height,
    };
  }

  radius(e) {
    const r = this.brushSize() / 2;
    return e.pointerType === "pen" && e.pressure > 0 ? r * (0.2 + 0.8 * e.pressure) : r;
  }

  onPointerDown(e) {
    if (e.pointerType === "mouse" && e.button !== 0) return;
    if (this.stroke) {
      // A pen that comes down during a touch stroke means the touch was a resting palm.
      if (e.pointerType !== "pen" || this.stroke.pointerType !== "touch") return;
      this.cancelStroke();
    }
    const layer = this.activeId();
    this.root.focus({ preventScroll: true });
    if (this.syncing) {
      this.say("Loading the masks from the kernel; paint again in a moment.");
      return;
    }
    if (!layer) {
      this.say(this.knownLayers.size ? "Select a layer to paint on (click its row)." : "Add a layer first (+ layer), then paint.");
      return;
    }
    e.preventDefault();
    try {
      this.canvas.setPointerCapture(e.pointerId);
    } catch {
      // A pointer that is already gone (or a synthetic event): the stroke works without capture.
    }
    const mask = this.masks.get(layer);
    const tool = e.pointerType === "pen" && e.buttons & PEN_ERASER_BUTTON ? "eraser" : this.get("tool", "brush");
    this.stroke = {
      layer,
      pointerId: e.pointerId,
      pointerType: e.pointerType,
      before: mask.slice(),
      path: new Stroke(mask, this.width, this.height, tool),
      pending: null,
      box: this.canvas.getBoundingClientRect(),
    };
    this.addPoint(e);
    this.flushStroke();
  }

  onPointerMove(e) {
    const s = this.stroke?.pointerId === e.pointerId ? this.stroke : null;
    if (s) s.box = this.canvas.getBoundingClientRect(); // the page may have scrolled since the last move
    this.moveCursor(e);
    if (!s) return;
    const events = e.getCoalescedEvents?.() ?? [];
    for (const ev of events.length ? events : [e]) this.addPoint(ev);
    if (!this.sendTimer) {
      const wait = Math.max(0, SEND_INTERVAL_MS - (performance.now() - this.lastSend));
      this.sendTimer = setTimeout(() => { this.sendTimer = 0; this.flushStroke(); }, wait);
    }
  }

  onPointerUp(e) {
    if (this.stroke && e.pointerId === this.stroke.pointerId) this.finishStroke();
  }

  onPointerCancel(e) {
    if (this.stroke && e.pointerId === this.stroke.pointerId) this.cancelStroke();
  }

  addPoint(e) {
    const s = this.stroke;
    const p = this.toCanvas(e, s.box);
    this.strokeDirty(s.path.add(p.x, p.y, this.radius(e)));
  }

  strokeDirty(rect) {
    if (!rect) return;
    this.noteWrite(this.stroke.layer, rect);
    this.invalidate(rect);
    this.stroke.pending = union(this.stroke.pending, rect);
  }

  /** Sends what the stroke changed since the last send. */
  flushStroke() {
    const s = this.stroke;
    if (!s?.pending) return;
    this.sender.enqueue(s.layer, s.pending, extract(s.path.mask, this.width, s.pending));
    s.pending = null;
    this.lastSend = performance.now();
  }

  finishStroke() {
    const s = this.stroke;
    this.strokeDirty(s.path.finish());
    clearTimeout(this.sendTimer);
    this.sendTimer = 0;
    this.flushStroke();
    this.stroke = null;
    const rect = s.path.rect;
    if (rect) {
      this.history.push({ layer: s.layer, rect, before: extract(s.before, this.width, rect), after: extract(s.path.mask, this.width, rect) });
    }
    this.updateUndo();
  }

  /**
   * Takes back a stroke the system cancelled (a palm the OS rejected, a touch that became a
   * gesture): its pixels return to what they were, here and in the kernel, with no undo entry.
   */
  cancelStroke() {
    const s = this.stroke;
    this.abortStroke();
    const rect = s.path.rect;
    if (rect) this.writeMask(s.layer, rect, extract(s.before, this.width, rect));
  }

  /** Ends a stroke whose layer or canvas went away; nothing more is sent or recorded. */
  abortStroke() {
    clearTimeout(this.sendTimer);
    this.sendTimer = 0;
    this.stroke = null;
  }

  moveCursor(e) {
    if (e.pointerType === "touch") return;
    const box = this.stroke?.box ?? this.canvas.getBoundingClientRect();
    const size = (this.brushSize() * box.width) / this.width;
    const style = this.cursor.style;
    style.display = "block";
    style.width = style.height = `${size}px`;
    style.transform = `translate(${e.clientX - box.left - size / 2}px, ${e.clientY - box.top - size / 2}px)`;
  }

  // ---------------------------------------------------------------- edits, undo

  /** Writes bytes into a rect of a layer, redraws it and tells the kernel. */
  writeMask(layer, rect, bytes) {
    this.noteWrite(layer, rect);
    put(this.masks.get(layer), this.width, rect, bytes);
    this.invalidate(rect);
    this.sender.enqueue(layer, rect, bytes);
  }

  edit(layer, rect, after) {
    const before = extract(this.masks.get(layer), this.width, rect);
    this.history.push({ layer, rect, before, after });
    this.writeMask(layer, rect, after);
    this.updateUndo();
  }

  clearLayer() {
    const layer = this.activeId();
    if (!layer || this.stroke) return;
    const rect = nonZeroBounds(this.masks.get(layer), this.width, this.height);
    if (rect) this.edit(layer, rect, new Uint8Array(rect.w * rect.h));
  }

  fillLayer() {
    const layer = this.activeId();
    if (!layer || this.stroke) return;
    const mask = this.masks.get(layer);
    let full = true;
    for (let i = 0; i < mask.length && full; i++) full = mask[i] === 255;
    if (full) return;
    this.edit(layer, { x: 0, y: 0, w: this.width, h: this.height }, new Uint8Array(this.width * this.height).fill(255));
  }

  undo() {
    if (this.stroke) return;
    let e = this.history.undo();
    while (e?.kind === "layer" && !this.restoreLayer(e)) {
      this.history.discardUndone(); // that layer is back already: go on to the edit before
      e = this.history.undo();
    }
    if (e && e.kind !== "layer") this.writeMask(e.layer, e.rect, e.before);
    this.updateUndo();
  }

  redo() {
    if (this.stroke) return;
    const e = this.history.redo();
    if (e?.kind === "layer") this.dropLayer(e.layer);
    else if (e) this.writeMask(e.layer, e.rect, e.after);
    this.updateUndo();
  }

  updateUndo() {
    this.undoBtn.disabled = !this.history.canUndo;
    this.redoBtn.disabled = !this.history.canRedo;
  }

  // ---------------------------------------------------------------- layers

  /** The layers, and with them (one update, so the kernel never sees one without the other) the active layer. */
  setLayers(layers, active) {
    this.model.set("layers", layers);
    if (active !== undefined) this.model.set("active_layer", active);
    this.model.save_changes();
  }

  updateLayer(id, patch) {
    this.setLayers(this.layers().map((l) => (l.id === id ? { ...l, ...patch } : l)));
  }

  addLayer() {
    const layers = this.layers();
    const layer = newLayer(layers);
    this.mask(layer.id);
    this.setLayers([...layers, layer], layer.id);
  }

  /** Deletes a layer and its mask, as one undoable edit. */
  deleteLayer(id) {
    const layers = this.layers();
    const index = layers.findIndex((l) => l.id === id);
    if (index < 0 || this.stroke) return;
    const active = this.get("active_layer", "") === id;
    this.history.push({ kind: "layer", layer: id, index, settings: layers[index], mask: this.mask(id).slice(), active });
    this.dropLayer(id);
    this.updateUndo();
  }

  dropLayer(id) {
    const layers = this.layers();
    const i = layers.findIndex((l) => l.id === id);
    if (i < 0) return;
    const rest = layers.filter((l) => l.id !== id);
    this.deletedHere.add(id); // keeps its undo history: undoing the deletion brings the layer back
    const wasActive = this.get("active_layer", "") === id;
    this.setLayers(rest, wasActive ? rest[Math.min(i, rest.length - 1)]?.id ?? "" : undefined);
  }

  /** Undoes a deletion: the layer goes back to its place with its settings, then its mask to the kernel. */
  restoreLayer(entry) {
    const layers = this.layers();
    if (layers.some((l) => l.id === entry.layer)) return false; // back already (from Python or another view)
    layers.splice(Math.min(entry.index, layers.length), 0, entry.settings);
    this.setLayers(layers, entry.active ? entry.layer : undefined);
    const rect = nonZeroBounds(entry.mask, this.width, this.height);
    if (rect) this.writeMask(entry.layer, rect, extract(entry.mask, this.width, rect));
    return true;
  }

  moveLayer(id, step) {
    const layers = this.layers();
    const i = layers.findIndex((l) => l.id === id);
    const j = i + step;
    if (i < 0 || j < 0 || j >= layers.length) return;
    [layers[i], layers[j]] = [layers[j], layers[i]];
    this.setLayers(layers);
  }

  selectLayer(n) {
    const layer = this.layers()[n];
    if (layer) this.set("active_layer", layer.id);
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
      case "clear": return this.clearLayer();
      case "fill": return this.fillLayer();
      case "undo": return this.undo();
      case "redo": return this.redo();
      case "play": return this.model.send({ type: "action", name: this.get("running", false) ? "stop" : "start" });
      case "step":
      case "render": return this.model.send({ type: "action", name: target.dataset.action });
      case "palette-export": return this.exportPalette();
      case "palette-import": return this.paletteFile.click();
      case "bg-load": return this.layersPanel.bgFile.click();
      case "bg-clear": return this.clearBackground();
      case "layer-add": return this.addLayer();
      case "layer-delete": return this.deleteLayer(layer);
      case "layer-up": return this.moveLayer(layer, -1);
      case "layer-down": return this.moveLayer(layer, 1);
      default: return undefined;
    }
  }

  onInput(e) {
    // Live previews while a slider moves; the trait is written on "change".
    const t = e.target;
    if (t === this.opacityInput) this.canvas.style.opacity = t.value;
    if (t === this.sizeInput) this.sizeLabel.textContent = `${t.value}px`;
  }

  onChange(e) {
    const t = e.target;
    const { setting, field, bg, role } = t.dataset;
    if (role === "bg-file") return this.takeFile(t, (f) => this.loadBackground(f));
    if (role === "palette-file") return this.takeFile(t, (f) => this.importPalette(f));
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
      if (layer) this.updateLayer(layer, { [field]: value });
    }
    return undefined;
  }

  takeFile(input, use) {
    const file = input.files?.[0];
    input.value = "";
    if (file) use(file).catch((err) => this.say(String(err.message ?? err), true));
  }

  onKey(e) {
    if (forJupyter(e)) {
      // JupyterLab 4 reads the attributes when the key reaches the document, after this handler. The next
      // key that comes here suppresses them again before anything reads them; the timer covers the time between.
      this.suppressShortcuts(false);
      this.later(() => this.suppressShortcuts(true), 0);
    } else if (!isTyping(e.target) && this.runShortcut(e)) {
      // text fields keep their own keys (typing, their own undo)
      e.preventDefault();
      e.stopPropagation();
    }
  }

  /** The widget's own shortcuts; true when the key was one. */
  runShortcut(e) {
    const key = e.key;
    const mod = e.ctrlKey || e.metaKey;
    if (mod && !e.altKey && (key === "z" || key === "Z")) {
      if (e.shiftKey) this.redo();
      else this.undo();
    } else if (mod && !e.altKey && (key === "y" || key === "Y")) this.redo();
    else if (mod || e.altKey) return false;
    else if (key === "b" || key === "B") this.set("tool", "brush");
    else if (key === "e" || key === "E") this.set("tool", "eraser");
    else if (key === "[" || key === "]") {
      const size = this.brushSize();
      const step = Math.max(1, Math.round(size * 0.15));
      this.set("brush_size", clampBrush(size + (key === "]" ? step : -step)));
    } else if (/^[1-9]$/.test(key)) this.selectLayer(Number(key) - 1);
    else return false;
    return true;
  }

  suppressShortcuts(on) {
    for (const name of SUPPRESS_SHORTCUTS) {
      if (on) this.root.setAttribute(name, "true");
      else this.root.removeAttribute(name);
    }
  }

  // ---------------------------------------------------------------- files

  exportPalette() {
    const json = JSON.stringify(exportPalette(this.layers(), this.get("background", {})), null, 2);
    const url = URL.createObjectURL(new Blob([json], { type: "application/json" }));
    const a = h("a", { href: url, download: "semdraw-palette.json" });
    this.root.append(a);
    a.click();
    a.remove();
    this.exportUrls.add(url); // revoked when the download has had time to start, or with the view
    this.later(() => {
      URL.revokeObjectURL(url);
      this.exportUrls.delete(url);
    }, 1000);
  }

  async importPalette(file) {
    let parsed;
    try {
      parsed = JSON.parse(await file.text());
    } catch {
      throw new Error(`${file.name} is not valid JSON; export a palette from this widget to see the format`);
    }
    const { layers, background } = importPalette(parsed, this.layers(), this.get("background", {}));
    for (const l of layers) this.mask(l.id);
    this.setLayers(layers);
    this.set("background", background);
    if (!this.activeId() && layers.length) this.set("active_layer", layers[layers.length - 1].id);
    this.say(`Imported ${parsed.layers.length} layer settings from ${file.name}.`);
  }

  async loadBackground(file) {
    const mb = (n) => (n / 1024 / 1024).toFixed(1);
    let format = FILE_FORMATS[file.type];
    if (!format) throw new Error(`${file.name}: background images must be PNG, JPEG or WebP (got ${file.type || "unknown type"})`);
    if (file.size > MAX_BACKGROUND_BYTES) {
      throw new Error(`${file.name} is ${mb(file.size)} MB; the limit is 20 MB. Downscale it to about ${this.width}×${this.height} first.`);
    }
    const bitmap = await createImageBitmap(file);
    let blob = file;
    if (file.size > REENCODE_BACKGROUND_BYTES) {
      // Too big for one websocket message: send it at canvas size, which is all the kernel uses.
      const c = h("canvas", { width: this.width, height: this.height });
      c.getContext("2d").drawImage(bitmap, 0, 0, this.width, this.height);
      blob = await new Promise((resolve) => c.toBlob(resolve, "image/jpeg", 0.92));
      format = "jpeg";
    }
    const bytes = await blob.arrayBuffer();
    if (this.destroyed) return bitmap.close();
    this.model.send({ type: "background_image", format }, undefined, [bytes]);
    this.backgroundVersion++;
    this.setBackground(bitmap);
    this.say(`Background image ${file.name} loaded.`);
    return undefined;
  }

  clearBackground() {
    this.model.send({ type: "background_image", clear: true });
    this.backgroundVersion++;
    this.setBackground(null);
  }

  setBackground(bitmap) {
    this.background?.close?.();
    this.background = bitmap;
    this.drawBackground();
    this.onLayers();
  }

  // ---------------------------------------------------------------- kernel messages

  onMessage(content, buffers) {
    const { msg, error } = parseKernelMessage(content, buffers, { width: this.width, height: this.height });
    if (error) {
      console.warn(`semdraw: ignored a kernel message: ${error}`, content);
      return;
    }
    switch (msg.type) {
      case "mask":
        this.inbox = this.inbox.then(() => this.applyKernelMask(msg)).catch((err) => {
          console.warn("semdraw: could not apply a mask from the kernel", err);
          this.say(`A mask from the kernel could not be applied: ${err.message}`, true);
        });
        break;
      case "synced":
        if (msg.view && msg.view !== this.viewId) break; // another view's sync
        // After the sync's masks, which apply in order through the inbox.
        this.inbox = this.inbox.then(() => {
          clearTimeout(this.syncTimer);
          this.syncing = false;
          this.writtenDuringSync = null;
        });
        break;
      case "frame":
        this.showFrame(msg);
        break;
      case "background_image": {
        if (msg.view && msg.view !== this.viewId) break; // part of another view's sync
        const version = ++this.backgroundVersion;
        if (msg.clear) this.setBackground(null);
        else {
          createImageBitmap(new Blob([msg.data], { type: IMAGE_MIME[msg.format] }))
            .then((bitmap) => (this.destroyed || version !== this.backgroundVersion ? bitmap.close() : this.setBackground(bitmap)))
            .catch((err) => console.warn("semdraw: could not decode the background image", err));
        }
        break;
      }
      case "error":
        this.say(msg.message, true);
        break;
      default:
        break;
    }
  }

  async applyKernelMask(msg) {
    if (msg.origin === "peer" && msg.view === this.viewId) return;
    if (msg.origin === "sync" && msg.view && msg.view !== this.viewId) return;
    const bytes = await maskBytes(msg);
    if (this.destroyed || msg.x + msg.w > this.width || msg.y + msg.h > this.height) return;
    const rect = { x: msg.x, y: msg.y, w: msg.w, h: msg.h };
    const mask = this.mask(msg.layer);
    if (msg.origin === "python") this.recordPythonEdit(msg, rect, mask, bytes);
    // The kernel applies this view's newer edits after the snapshot a sync sends: keep them.
    const newer = msg.origin === "sync" && this.writtenDuringSync
      ? this.writtenDuringSync.filter((w) => w.layer === msg.layer).map((w) => intersect(w.rect, rect)).filter(Boolean)
      : [];
    const kept = newer.map((r) => [r, extract(mask, this.width, r)]);
    put(mask, this.width, rect, bytes);
    for (const [r, local] of kept) put(mask, this.width, r, local);
    this.invalidate(rect);
  }

  /** One undo step per set_mask from Python, also when a large mask arrives in several bands. */
  recordPythonEdit(msg, rect, mask, bytes) {
    const last = this.history.last;
    if (msg.edit === null || last?.edit !== msg.edit || last.layer !== msg.layer) {
      this.history.push({ layer: msg.layer, rect, before: extract(mask, this.width, rect), after: bytes.slice(), edit: msg.edit });
    } else {
      const whole = union(last.rect, rect);
      const before = mask.slice();
      put(before, this.width, last.rect, last.before);
      const after = mask.slice();
      put(after, this.width, rect, bytes);
      this.history.replaceLast({
        layer: msg.layer, rect: whole, before: extract(before, this.width, whole), after: extract(after, this.width, whole), edit: msg.edit,
      });
    }
    this.updateUndo();
  }

  /**
   * Shows a frame once it has decoded, then acknowledges it. Frames arrive in order, so a
   * frame is stale only when a newer one arrives while it is still decoding: it is dropped,
   * but still acknowledged, since the ack is what frees the kernel's in-flight window.
   * (Arrival order, not `seq`, decides, so a kernel that restarts its numbering still works.)
   */
  async showFrame(msg) {
    const ack = () => { if (!this.destroyed) this.model.send({ type: "ack", seq: msg.seq }); };
    const token = ++this.frameToken;
    const url = URL.createObjectURL(new Blob([msg.data], { type: IMAGE_MIME[msg.format] }));
    try {
      const probe = new Image();
      probe.src = url;
      await probe.decode();
      if (this.destroyed || token !== this.frameToken) throw new Error("superseded");
      this.frame.src = url;
      await this.frame.decode();
      if (this.frame.src !== url) throw new Error("superseded");
    } catch (err) {
      URL.revokeObjectURL(url);
      if (this.frame.src === url) {
        if (this.frameUrl) this.frame.src = this.frameUrl;
        else this.frame.removeAttribute("src");
      }
      if (!this.destroyed && token === this.frameToken) console.warn(`semdraw: frame ${msg.seq} could not be shown`, err);
      return ack();
    }
    if (this.frameUrl) URL.revokeObjectURL(this.frameUrl);
    this.frameUrl = url;
    this.frame.dataset.seq = String(msg.seq);
    this.root.classList.add("sd-has-frame");
    if (msg.stats) {
      this.frameStats = msg.stats;
      this.renderStats();
    }
    return ack();
  }
}
