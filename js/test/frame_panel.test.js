import { test } from "node:test";
import assert from "node:assert/strict";
import { statsLine } from "../src/frame_panel.js";

test("the stats line shows a frame's fps, latency, frame time and its breakdown", () => {
  const stats = {
    fps: 11.234, frame_ms: 88.06, latency_ms: 120.6, frames: 40,
    breakdown: { sync: 0.42, generate: 80.1, encode: 7.55 },
  };
  assert.equal(statsLine(stats), "11.2 fps · latency 121 ms · frame 88.1 ms · (sync 0.4, generate 80.1, encode 7.5 ms)");
});

test("the stats line says how the frame's regions were made", () => {
  assert.equal(statsLine({ fps: 30, region_mode: "attention" }), "30.0 fps · fast regions");
  assert.equal(statsLine({ fps: 8, region_mode: "exact", frame_ms: 120 }), "8.0 fps · exact regions · frame 120.0 ms");
  assert.equal(statsLine({ fps: 8, region_mode: "toString" }), "8.0 fps");
});

test("figures a frame does not have (yet) are left out", () => {
  assert.equal(statsLine({ fps: 0, frame_ms: 12, latency_ms: null, breakdown: {} }), "0.0 fps · frame 12.0 ms");
  assert.equal(statsLine({ fps: NaN, breakdown: { encode: "fast" } }), "");
  assert.equal(statsLine(null), "");
});
