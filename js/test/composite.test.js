import { test } from "node:test";
import assert from "node:assert/strict";
import { compositeRect, parseColor } from "../src/composite.js";

test("colours parse, with grey for anything invalid", () => {
  assert.deepEqual(parseColor("#e53935"), [0xe5, 0x39, 0x35]);
  assert.deepEqual(parseColor("red"), [128, 128, 128]);
  assert.deepEqual(parseColor(undefined), [128, 128, 128]);
});

test("layers blend bottom→top with alpha = coverage, only inside the rect", () => {
  const W = 4, H = 1;
  const rgba = new Uint8ClampedArray(W * H * 4).fill(9);
  const bottom = { mask: Uint8Array.from([255, 255, 0, 255]), rgb: [255, 0, 0] };
  const top = { mask: Uint8Array.from([255, 128, 128, 0]), rgb: [0, 0, 255] };
  compositeRect(rgba, W, { x: 0, y: 0, w: 3, h: 1 }, [bottom, top]);
  assert.deepEqual([...rgba.subarray(0, 4)], [0, 0, 255, 255], "a fully covering top layer hides the one below");
  const [r, g, b, a] = rgba.subarray(4, 8);
  assert.equal(a, 255);
  assert.ok(Math.abs(r - 127) <= 1 && g === 0 && Math.abs(b - 128) <= 1, `half-and-half blend, got ${[r, g, b]}`);
  assert.deepEqual([...rgba.subarray(8, 12)], [0, 0, 255, 128], "a lone soft layer keeps its colour with partial alpha");
  assert.deepEqual([...rgba.subarray(12, 16)], [9, 9, 9, 9], "outside the rect untouched");
  compositeRect(rgba, W, { x: 0, y: 0, w: 4, h: 1 }, []);
  assert.ok(rgba.every((v) => v === 0), "no visible layers: transparent");
});
