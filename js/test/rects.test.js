import { test } from "node:test";
import assert from "node:assert/strict";
import { bands, clip, extract, intersect, nonZeroBounds, put, union } from "../src/rects.js";

test("union of rects, with null as the empty rect", () => {
  assert.equal(union(null, null), null);
  assert.deepEqual(union(null, { x: 1, y: 2, w: 3, h: 4 }), { x: 1, y: 2, w: 3, h: 4 });
  assert.deepEqual(union({ x: 0, y: 0, w: 2, h: 2 }, { x: 5, y: 1, w: 1, h: 4 }), { x: 0, y: 0, w: 6, h: 5 });
  const a = { x: 1, y: 1, w: 1, h: 1 };
  assert.notEqual(union(a, null), a, "returns a copy, never the argument");
});

test("intersection of rects, null when they only touch or one is empty", () => {
  assert.deepEqual(intersect({ x: 0, y: 0, w: 10, h: 10 }, { x: 5, y: -2, w: 10, h: 4 }), { x: 5, y: 0, w: 5, h: 2 });
  assert.equal(intersect({ x: 0, y: 0, w: 5, h: 5 }, { x: 5, y: 0, w: 5, h: 5 }), null);
  assert.equal(intersect(null, { x: 0, y: 0, w: 1, h: 1 }), null);
});

test("clip to the canvas", () => {
  assert.deepEqual(clip({ x: -3, y: 5, w: 10, h: 100 }, 20, 30), { x: 0, y: 5, w: 7, h: 25 });
  assert.equal(clip({ x: 20, y: 0, w: 5, h: 5 }, 20, 30), null);
  assert.equal(clip(null, 20, 30), null);
});

test("extract and put round-trip a rect's bytes, row-major", () => {
  const W = 5, H = 4;
  const mask = Uint8Array.from({ length: W * H }, (_, i) => i);
  const r = { x: 1, y: 1, w: 3, h: 2 };
  assert.deepEqual([...extract(mask, W, r)], [6, 7, 8, 11, 12, 13]);
  const other = new Uint8Array(W * H);
  put(other, W, r, extract(mask, W, r));
  assert.deepEqual([...other], [0, 0, 0, 0, 0, 0, 6, 7, 8, 0, 0, 11, 12, 13, 0, 0, 0, 0, 0, 0]);
});

test("non-zero bounds", () => {
  const W = 6, H = 5;
  const mask = new Uint8Array(W * H);
  assert.equal(nonZeroBounds(mask, W, H), null);
  mask[1 * W + 4] = 1;
  mask[3 * W + 2] = 9;
  assert.deepEqual(nonZeroBounds(mask, W, H), { x: 2, y: 1, w: 3, h: 3 });
});

test("bands split a rect into horizontal strips under the byte limit", () => {
  const r = { x: 3, y: 10, w: 100, h: 25 };
  const out = bands(r, 1000);
  assert.deepEqual(out.map((b) => [b.y, b.h]), [[10, 10], [20, 10], [30, 5]]);
  for (const b of out) {
    assert.equal(b.x, 3);
    assert.equal(b.w, 100);
    assert.ok(b.w * b.h <= 1000);
  }
  assert.deepEqual(bands(r, 10), Array.from({ length: 25 }, (_, i) => ({ x: 3, y: 10 + i, w: 100, h: 1 })), "at least one row per band");
  assert.deepEqual(bands(r, 1e9), [r]);
});
