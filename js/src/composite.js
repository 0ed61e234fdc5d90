// Composites the layers' coverage masks into one RGBA overlay (non-premultiplied, as
// ImageData holds it). Layers are blended bottom→top with alpha = coverage, so a fully
// covering upper layer hides the ones below, as it does in the generated image; the
// overall overlay opacity is applied by CSS on the canvas, so changing it costs nothing.

/** "#rrggbb" → [r, g, b]; anything else → grey. */
export function parseColor(color) {
  const m = /^#?([0-9a-f]{6})$/i.exec(String(color ?? "").trim());
  if (!m) return [128, 128, 128];
  const n = parseInt(m[1], 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

/**
 * Recomputes `rgba` (width*height*4) inside `rect` from `layers` (bottom→top), each
 * {mask: Uint8Array, rgb: [r, g, b]}; invisible layers are simply left out by the caller.
 */
export function compositeRect(rgba, width, rect, layers) {
  const { x, y, w, h } = rect;
  for (let row = y; row < y + h; row++) {
    rgba.fill(0, (row * width + x) * 4, (row * width + x + w) * 4);
  }
  for (const { mask, rgb } of layers) {
    const [r, g, b] = rgb;
    for (let row = y; row < y + h; row++) {
      const base = row * width;
      for (let i = base + x, end = base + x + w; i < end; i++) {
        const cov = mask[i];
        if (cov === 0) continue;
        const o = i * 4;
        if (cov === 255 || rgba[o + 3] === 0) {
          rgba[o] = r; rgba[o + 1] = g; rgba[o + 2] = b; rgba[o + 3] = cov;
          continue;
        }
        const a = cov / 255;
        const below = (rgba[o + 3] / 255) * (1 - a);
        const out = a + below;
        rgba[o] = (r * a + rgba[o] * below) / out;
        rgba[o + 1] = (g * a + rgba[o + 1] * below) / out;
        rgba[o + 2] = (b * a + rgba[o + 2] * below) / out;
        rgba[o + 3] = out * 255;
      }
    }
  }
}
