// The mask canvas's picture: every visible layer's mask in its colour (composite.js), redrawn only where
// something changed, at most once per animation frame.

import { compositeRect, parseColor } from "./composite.js";
import { clip, union } from "./rects.js";

export class MaskOverlay {
  /** canvas: the mask canvas. masks: the MaskSync (the masks and the canvas size). */
  constructor({ d, canvas, masks }) {
    this.d = d;
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.masks = masks;
    this.image = null;
    this.dirty = null; // the rect waiting to be redrawn
    this.rafId = 0;
    this.look = ""; // ids, colours and visibility the layers were last composited with
    this.visible = [];
    d.add(() => cancelAnimationFrame(this.rafId));
  }

  /** The canvas takes the masks' size; everything is composited again at the next showLayers. */
  resize() {
    const { width, height } = this.masks;
    this.canvas.width = width;
    this.canvas.height = height;
    this.image = this.ctx.createImageData(width, height);
    this.look = "";
  }

  /** The layers as the trait lists them, bottom first; redraws all when their ids, colours or visibility changed. */
  showLayers(layers) {
    const look = JSON.stringify(layers.map((l) => [l.id, l.color, l.visible]));
    if (look === this.look) return;
    this.look = look;
    this.visible = layers.filter((l) => l.visible).map((l) => ({ mask: this.masks.get(l.id), rgb: parseColor(l.color) }));
    this.invalidate({ x: 0, y: 0, w: this.masks.width, h: this.masks.height });
  }

  /** These pixels changed: redraw them with the next animation frame. */
  invalidate(rect) {
    const r = clip(rect, this.masks.width, this.masks.height);
    if (!r) return;
    this.dirty = union(this.dirty, r);
    if (!this.rafId) this.rafId = requestAnimationFrame(() => this.redraw());
  }

  redraw() {
    this.rafId = 0;
    const r = this.dirty;
    this.dirty = null;
    if (!r || this.d.disposed) return;
    compositeRect(this.image.data, this.masks.width, r, this.visible);
    this.ctx.putImageData(this.image, 0, 0, r.x, r.y, r.w, r.h);
  }
}
