// Painting with a pointer: the mask canvas's pointer events become dabs of a Stroke (raster.js) on the
// active layer's mask, shown at once and sent to the kernel at most every SEND_INTERVAL_MS while the
// pointer moves and always when it lifts; a finished stroke is one undo step. Also the brush cursor.

import { Stroke } from "./raster.js";
import { extract, union } from "./rects.js";

const SEND_INTERVAL_MS = 50; // ≤ 20 Hz while drawing
const PEN_ERASER_BUTTON = 32; // PointerEvent.buttons bit of a pen's eraser end

export class StrokeInput {
  /**
   * canvas: the mask canvas (its pointer events, its box). cursor: the brush outline element. root: the
   * widget, focused when painting starts so its shortcuts work. masks: the MaskSync. brushSize(), tool():
   * the brush as the traits set it. activeLayer(): the id to paint on, or "". say(text): a status line.
   * record(entry): a finished stroke's undo entry. Listeners and the send timer go with `d`.
   */
  constructor({ d, canvas, cursor, root, masks, brushSize, tool, activeLayer, say, record }) {
    Object.assign(this, { canvas, cursor, root, masks, brushSize, tool, activeLayer, say, record });
    this.stroke = null;
    this.sendTimer = 0;
    this.lastSend = 0;
    d.listen(canvas, "pointerdown", (e) => this.onPointerDown(e));
    d.listen(canvas, "pointermove", (e) => this.onPointerMove(e));
    d.listen(canvas, "pointerup", (e) => this.onPointerUp(e));
    d.listen(canvas, "pointercancel", (e) => this.onPointerCancel(e));
    d.listen(canvas, "lostpointercapture", (e) => this.onPointerUp(e));
    d.listen(canvas, "pointerleave", () => { this.cursor.style.display = "none"; });
    d.listen(canvas, "contextmenu", (e) => e.preventDefault());
    d.add(() => clearTimeout(this.sendTimer));
  }

  /** True while a stroke is being drawn (edits that would race with it wait). */
  get active() {
    return this.stroke !== null;
  }

  /** The layer of the stroke being drawn, or null. */
  get layer() {
    return this.stroke?.layer ?? null;
  }

  toCanvas(e, box) {
    return {
      x: ((e.clientX - box.left) * this.masks.width) / box.width,
      y: ((e.clientY - box.top) * this.masks.height) / box.height,
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
      this.cancel();
    }
    const layer = this.activeLayer();
    this.root.focus({ preventScroll: true });
    if (this.masks.syncing) {
      this.say(this.masks.syncProblem ?? "Loading the masks from the kernel; paint again in a moment.");
      return;
    }
    if (!layer) {
      this.say(this.masks.listedCount ? "Select a layer to paint on (click its row)." : "Add a layer first (+ layer), then paint.");
      return;
    }
    e.preventDefault();
    try {
      this.canvas.setPointerCapture(e.pointerId);
    } catch {
      // A pointer that is already gone (or a synthetic event): the stroke works without capture.
    }
    const mask = this.masks.get(layer);
    const tool = e.pointerType === "pen" && e.buttons & PEN_ERASER_BUTTON ? "eraser" : this.tool();
    this.stroke = {
      layer,
      pointerId: e.pointerId,
      pointerType: e.pointerType,
      before: mask.slice(),
      path: new Stroke(mask, this.masks.width, this.masks.height, tool),
      pending: null,
      box: this.canvas.getBoundingClientRect(),
    };
    this.addPoint(e);
    this.flush();
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
      this.sendTimer = setTimeout(() => { this.sendTimer = 0; this.flush(); }, wait);
    }
  }

  onPointerUp(e) {
    if (this.stroke && e.pointerId === this.stroke.pointerId) this.finish();
  }

  onPointerCancel(e) {
    if (this.stroke && e.pointerId === this.stroke.pointerId) this.cancel();
  }

  addPoint(e) {
    const s = this.stroke;
    const p = this.toCanvas(e, s.box);
    this.painted(s.path.add(p.x, p.y, this.radius(e)));
  }

  painted(rect) {
    if (!rect) return;
    this.masks.painted(this.stroke.layer, rect);
    this.stroke.pending = union(this.stroke.pending, rect);
  }

  /** Sends what the stroke changed since the last send. */
  flush() {
    const s = this.stroke;
    if (!s?.pending) return;
    this.masks.sendRect(s.layer, s.pending);
    s.pending = null;
    this.lastSend = performance.now();
  }

  /** Ends the stroke in progress, if any: the rest goes to the kernel and the stroke becomes one undo step. */
  finish() {
    const s = this.stroke;
    if (!s) return;
    this.painted(s.path.finish());
    clearTimeout(this.sendTimer);
    this.sendTimer = 0;
    this.flush();
    this.stroke = null;
    const rect = s.path.rect;
    if (rect) {
      const width = this.masks.width;
      this.record({ layer: s.layer, rect, before: extract(s.before, width, rect), after: extract(s.path.mask, width, rect) });
    }
  }

  /**
   * Takes back a stroke the system cancelled (a palm the OS rejected, a touch that became a
   * gesture): its pixels return to what they were, here and in the kernel, with no undo entry.
   */
  cancel() {
    const s = this.stroke;
    this.abort();
    const rect = s.path.rect;
    if (rect) this.masks.write(s.layer, rect, extract(s.before, this.masks.width, rect));
  }

  /** Ends a stroke whose layer or canvas went away; nothing more is sent or recorded. */
  abort() {
    clearTimeout(this.sendTimer);
    this.sendTimer = 0;
    this.stroke = null;
  }

  moveCursor(e) {
    if (e.pointerType === "touch") return;
    const box = this.stroke?.box ?? this.canvas.getBoundingClientRect();
    const size = (this.brushSize() * box.width) / this.masks.width;
    const style = this.cursor.style;
    style.display = "block";
    style.width = style.height = `${size}px`;
    style.transform = `translate(${e.clientX - box.left - size / 2}px, ${e.clientY - box.top - size / 2}px)`;
  }
}
