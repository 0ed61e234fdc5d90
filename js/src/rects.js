// Integer rectangles {x, y, w, h} over a row-major byte mask of a given width.
// `null` stands for the empty rectangle everywhere, so unions can start from nothing.

export function union(a, b) {
  if (!a) return b ? { ...b } : null;
  if (!b) return { ...a };
  const x = Math.min(a.x, b.x);
  const y = Math.min(a.y, b.y);
  return {
    x,
    y,
    w: Math.max(a.x + a.w, b.x + b.w) - x,
    h: Math.max(a.y + a.h, b.y + b.h) - y,
  };
}

/** The overlap of two rects, or null. */
export function intersect(a, b) {
  if (!a || !b) return null;
  const x0 = Math.max(a.x, b.x);
  const y0 = Math.max(a.y, b.y);
  const x1 = Math.min(a.x + a.w, b.x + b.w);
  const y1 = Math.min(a.y + a.h, b.y + b.h);
  return x1 > x0 && y1 > y0 ? { x: x0, y: y0, w: x1 - x0, h: y1 - y0 } : null;
}

/** The part of `r` inside a width×height canvas, or null. */
export function clip(r, width, height) {
  return intersect(r, { x: 0, y: 0, w: width, h: height });
}

/** Copy of the rect's bytes, row-major, w*h long. */
export function extract(mask, width, r) {
  const out = new Uint8Array(r.w * r.h);
  for (let row = 0; row < r.h; row++) {
    const start = (r.y + row) * width + r.x;
    out.set(mask.subarray(start, start + r.w), row * r.w);
  }
  return out;
}

/** Writes w*h row-major bytes into the rect. */
export function put(mask, width, r, bytes) {
  for (let row = 0; row < r.h; row++) {
    mask.set(bytes.subarray(row * r.w, (row + 1) * r.w), (r.y + row) * width + r.x);
  }
}

/** Tight bounding rect of the non-zero bytes, or null for an empty mask. */
export function nonZeroBounds(mask, width, height) {
  let minX = width, minY = height, maxX = -1, maxY = -1;
  for (let y = 0; y < height; y++) {
    const row = y * width;
    let first = -1, last = -1;
    for (let x = 0; x < width; x++) {
      if (mask[row + x] !== 0) {
        if (first < 0) first = x;
        last = x;
      }
    }
    if (first < 0) continue;
    if (y < minY) minY = y;
    maxY = y;
    if (first < minX) minX = first;
    if (last > maxX) maxX = last;
  }
  return maxX < 0 ? null : { x: minX, y: minY, w: maxX - minX + 1, h: maxY - minY + 1 };
}

/** Splits a rect into horizontal bands of at most maxBytes bytes each (at least one row). */
export function bands(r, maxBytes) {
  const rows = Math.max(1, Math.floor(maxBytes / r.w));
  const out = [];
  for (let y = r.y; y < r.y + r.h; y += rows) {
    out.push({ x: r.x, y, w: r.w, h: Math.min(rows, r.y + r.h - y) });
  }
  return out;
}
