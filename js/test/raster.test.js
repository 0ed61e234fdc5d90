import { test } from "node:test";
import assert from "node:assert/strict";
import { Stroke, paintSegment } from "../src/raster.js";

const W = 64, H = 48;
const at = (mask, x, y) => mask[y * W + x];

function changedBounds(before, after) {
  let minX = W, minY = H, maxX = -1, maxY = -1;
  for (let i = 0; i < after.length; i++) {
    if (before[i] === after[i]) continue;
    const x = i % W, y = Math.floor(i / W);
    minX = Math.min(minX, x); maxX = Math.max(maxX, x);
    minY = Math.min(minY, y); maxY = Math.max(maxY, y);
  }
  return maxX < 0 ? null : { x: minX, y: minY, w: maxX - minX + 1, h: maxY - minY + 1 };
}

test("a line between two points covers the pixels along it and nothing far from it", () => {
  const mask = new Uint8Array(W * H);
  paintSegment(mask, W, H, 5, 20.5, 3, 50, 20.5, 3, "brush");
  for (let x = 5; x < 50; x++) {
    assert.equal(at(mask, x, 20), 255, `centre pixel ${x} is covered`);
    assert.equal(at(mask, x, 22), 255, `pixel ${x} two rows off-centre is covered`);
  }
  for (let x = 0; x < W; x++) {
    assert.equal(at(mask, x, 15), 0, "five rows away is untouched");
    assert.equal(at(mask, x, 26), 0);
  }
  assert.equal(at(mask, 60, 20), 0, "beyond the end cap is untouched");
});

test("the edge is antialiased over about one pixel", () => {
  const mask = new Uint8Array(W * H);
  paintSegment(mask, W, H, 10, 20, 5.25, 40, 20, 5.25, "brush");
  // pixel row 25 has its centre 5.5 from the line: coverage 5.25 + 0.5 - 5.5 = 0.25
  assert.equal(at(mask, 25, 25), Math.round(0.25 * 255));
  assert.equal(at(mask, 25, 24), 255);
  assert.equal(at(mask, 25, 26), 0);
});

test("a fast stroke with far-apart samples has no gaps", () => {
  const mask = new Uint8Array(W * H);
  const stroke = new Stroke(mask, W, H, "brush");
  stroke.add(2, 40, 1.5);
  stroke.add(60, 3, 1.5); // one jump across the canvas
  stroke.finish();
  for (let t = 0; t <= 1; t += 0.01) {
    const x = Math.floor(2 + t * 58), y = Math.floor(40 - t * 37);
    assert.ok(at(mask, x, y) > 0, `pixel ${x},${y} on the path is covered`);
  }
});

test("a smoothed multi-sample stroke stays connected from first to last sample", () => {
  const mask = new Uint8Array(W * H);
  const stroke = new Stroke(mask, W, H, "brush");
  const pts = [[5, 5], [30, 40], [55, 6], [60, 44]];
  for (const [x, y] of pts) stroke.add(x, y, 2);
  stroke.finish();
  for (const [x, y] of pts.slice(0, 1).concat(pts.slice(-1))) assert.equal(at(mask, x, y), 255);
  // flood fill from the first sample reaches the last one: no gaps anywhere
  const seen = new Uint8Array(W * H);
  const stack = [5 * W + 5];
  seen[stack[0]] = 1;
  while (stack.length) {
    const i = stack.pop();
    const x = i % W, y = (i - x) / W;
    for (const [dx, dy] of [[1, 0], [-1, 0], [0, 1], [0, -1]]) {
      const nx = x + dx, ny = y + dy;
      const j = ny * W + nx;
      if (nx >= 0 && ny >= 0 && nx < W && ny < H && !seen[j] && mask[j] > 0) { seen[j] = 1; stack.push(j); }
    }
  }
  assert.equal(seen[44 * W + 60], 1);
});

test("a single tap paints a dot", () => {
  const mask = new Uint8Array(W * H);
  const stroke = new Stroke(mask, W, H, "brush");
  stroke.add(20, 20, 4);
  stroke.finish();
  assert.equal(at(mask, 20, 20), 255);
  assert.equal(at(mask, 19, 19), 255);
  assert.equal(at(mask, 26, 20), 0);
  assert.deepEqual(stroke.rect, { x: 16, y: 16, w: 8, h: 8 }, "a size-8 brush covers 8 pixels");
});

test("the eraser lowers coverage and never raises it", () => {
  const mask = new Uint8Array(W * H).fill(200);
  mask[0] = 10;
  paintSegment(mask, W, H, 0, 0.5, 3, 30, 0.5, 3, "eraser");
  assert.equal(at(mask, 10, 0), 0);
  assert.equal(at(mask, 0, 0), 0);
  assert.equal(at(mask, 10, 10), 200, "outside the stroke untouched");
  const soft = new Uint8Array(W * H).fill(100);
  paintSegment(soft, W, H, 10, 20, 5.25, 40, 20, 5.25, "eraser");
  assert.equal(at(soft, 25, 25), 100, "an edge stamp of 64 keeps min(100, 191)");
  assert.equal(at(soft, 25, 24), 0);
});

test("brushing keeps the maximum and values stay within 0..255", () => {
  const mask = new Uint8Array(W * H).fill(250);
  paintSegment(mask, W, H, 10, 20, 5.25, 40, 20, 5.25, "brush");
  assert.equal(at(mask, 25, 25), 250, "a soft edge does not lower existing coverage");
  assert.equal(at(mask, 25, 20), 255);
  for (const v of mask) assert.ok(v >= 0 && v <= 255);
  const again = mask.slice();
  paintSegment(mask, W, H, 10, 20, 5.25, 40, 20, 5.25, "brush");
  assert.deepEqual(mask, again, "repainting the same segment changes nothing");
});

test("the dirty rect is tight around the changed pixels", () => {
  const mask = new Uint8Array(W * H);
  const before = mask.slice();
  const rect = paintSegment(mask, W, H, 12.3, 9.7, 4, 33.1, 30.2, 4, "brush");
  assert.deepEqual(rect, changedBounds(before, mask));
});

test("the dirty rect is clipped to the canvas, and null off-canvas", () => {
  const mask = new Uint8Array(W * H);
  const before = mask.slice();
  const rect = paintSegment(mask, W, H, -10, -10, 6, 3, 3, 6, "brush");
  assert.deepEqual(rect, changedBounds(before, mask));
  assert.equal(rect.x, 0);
  assert.equal(rect.y, 0);
  const edge = paintSegment(mask, W, H, W + 2, 10, 4, W + 2, 40, 4, "brush");
  assert.ok(edge.x + edge.w === W);
  assert.equal(paintSegment(mask, W, H, -50, -50, 3, -40, -40, 3, "brush"), null);
});

test("a stroke's accumulated rect covers every change it made", () => {
  const mask = new Uint8Array(W * H);
  const before = mask.slice();
  const stroke = new Stroke(mask, W, H, "brush");
  for (const [x, y] of [[3, 3], [20, 8], [25, 30], [50, 40], [62, 47]]) stroke.add(x, y, 3);
  stroke.finish();
  assert.deepEqual(stroke.rect, changedBounds(before, mask));
});

test("pen pressure changes the radius along a segment", () => {
  const mask = new Uint8Array(W * H);
  paintSegment(mask, W, H, 5, 24, 1, 55, 24, 8, "brush");
  assert.equal(at(mask, 6, 28), 0, "thin end");
  assert.equal(at(mask, 54, 28), 255, "thick end");
});
