// Stroke rasterisation into one layer's coverage mask (Uint8Array, width*height, 0..255).
//
// A stroke is a chain of segments; each segment is a "capsule" (a circle swept along it,
// radius linearly interpolated for pen pressure), so a fast stroke with far-apart pointer
// samples still has no gaps. Coverage falls off over ~1px at the edge (antialiasing).
// Brush: value = max(value, stamp). Eraser: value = min(value, 255 - stamp). Both are
// idempotent, so overlapping segments of the same stroke never accumulate.

import { union } from "./rects.js";

/**
 * Rasterise one segment. Coordinates are canvas pixels (pixel i spans [i, i+1)).
 * Returns the clipped rectangle of touched pixels, or null when nothing was touched.
 */
export function paintSegment(mask, width, height, x0, y0, r0, x1, y1, r1, mode) {
  const reach = Math.max(r0, r1) + 0.5;
  const left = Math.max(0, Math.floor(Math.min(x0, x1) - reach));
  const top = Math.max(0, Math.floor(Math.min(y0, y1) - reach));
  const right = Math.min(width, Math.ceil(Math.max(x0, x1) + reach));
  const bottom = Math.min(height, Math.ceil(Math.max(y0, y1) + reach));
  if (left >= right || top >= bottom) return null;

  const dx = x1 - x0;
  const dy = y1 - y0;
  const len2 = dx * dx + dy * dy;
  const erase = mode === "eraser";
  let minX = width, minY = height, maxX = -1, maxY = -1;

  for (let py = top; py < bottom; py++) {
    const cy = py + 0.5;
    const row = py * width;
    for (let px = left; px < right; px++) {
      const cx = px + 0.5;
      let t = len2 > 0 ? ((cx - x0) * dx + (cy - y0) * dy) / len2 : 0;
      t = t < 0 ? 0 : t > 1 ? 1 : t;
      const ex = x0 + t * dx - cx;
      const ey = y0 + t * dy - cy;
      const r = r0 + t * (r1 - r0);
      const cover = r + 0.5 - Math.sqrt(ex * ex + ey * ey);
      if (cover <= 0) continue;
      const stamp = cover >= 1 ? 255 : Math.round(cover * 255);
      if (stamp === 0) continue;
      const i = row + px;
      if (erase) {
        const v = 255 - stamp;
        if (mask[i] > v) mask[i] = v;
      } else if (mask[i] < stamp) {
        mask[i] = stamp;
      }
      if (px < minX) minX = px;
      if (px > maxX) maxX = px;
      if (py < minY) minY = py;
      if (py > maxY) maxY = py;
    }
  }
  if (maxX < 0) return null;
  return { x: minX, y: minY, w: maxX - minX + 1, h: maxY - minY + 1 };
}

/**
 * One pointer stroke. Raw pointer samples are smoothed with midpoint quadratic curves
 * (the curve passes through the midpoints between samples, controlled by the samples),
 * which removes the jitter of mouse/pen input without lagging more than half a sample.
 * Every method returns the rectangle it changed (or null); `rect` accumulates them.
 */
export class Stroke {
  constructor(mask, width, height, mode) {
    this.mask = mask;
    this.width = width;
    this.height = height;
    this.mode = mode === "eraser" ? "eraser" : "brush";
    this.points = [];
    this.tail = null; // where the drawn path currently ends: {x, y, r}
    this.rect = null;
  }

  add(x, y, r) {
    const p = { x, y, r: Math.max(0.5, r) };
    const pts = this.points;
    const last = pts[pts.length - 1];
    if (last && last.x === x && last.y === y && last.r === p.r) return null;
    pts.push(p);
    if (pts.length === 1) {
      this.tail = p;
      return this._segment(p, p);
    }
    const prev = pts[pts.length - 2];
    const mid = midpoint(prev, p);
    if (pts.length === 2) return this._lineTo(mid);
    if (pts.length > 3) pts.shift();
    return this._curveTo(prev, mid);
  }

  /** Draws the remaining half segment to the last sample. */
  finish() {
    const last = this.points[this.points.length - 1];
    if (!last || !this.tail) return null;
    const dirty = this._lineTo(last);
    this.points = [];
    return dirty;
  }

  _lineTo(p) {
    const dirty = this._segment(this.tail, p);
    this.tail = p;
    return dirty;
  }

  _curveTo(control, end) {
    const start = this.tail;
    const length = Math.hypot(control.x - start.x, control.y - start.y) +
      Math.hypot(end.x - control.x, end.y - control.y);
    const steps = Math.min(64, Math.max(1, Math.ceil(length / 4)));
    let dirty = null;
    let from = start;
    for (let i = 1; i <= steps; i++) {
      const t = i / steps;
      const a = (1 - t) * (1 - t), b = 2 * (1 - t) * t, c = t * t;
      const to = {
        x: a * start.x + b * control.x + c * end.x,
        y: a * start.y + b * control.y + c * end.y,
        r: a * start.r + b * control.r + c * end.r,
      };
      dirty = union(dirty, this._segment(from, to));
      from = to;
    }
    this.tail = end;
    return dirty;
  }

  _segment(a, b) {
    const dirty = paintSegment(this.mask, this.width, this.height, a.x, a.y, a.r, b.x, b.y, b.r, this.mode);
    this.rect = union(this.rect, dirty);
    return dirty;
  }
}

function midpoint(a, b) {
  return { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2, r: (a.r + b.r) / 2 };
}
