import { test } from "node:test";
import assert from "node:assert/strict";
import { LAYER_COLORS, MAX_LAYERS, exportPalette, importPalette, newLayer, newLayerId } from "../src/palette.js";

test("new layer ids look like l + 8 base36 characters and differ", () => {
  const ids = new Set(Array.from({ length: 200 }, newLayerId));
  assert.equal(ids.size, 200);
  for (const id of ids) assert.match(id, /^l[0-9a-z]{8}$/);
});

test("new layers get defaults and an unused colour", () => {
  const first = newLayer([]);
  assert.equal(first.color, LAYER_COLORS[0]);
  assert.equal(first.prompt_strength, 0.95);
  assert.equal(first.mask_strength, 1);
  assert.equal(first.mask_blur, 8);
  assert.equal(first.visible, true);
  assert.equal(newLayer([first]).color, LAYER_COLORS[1]);
});

test("export → import round trip keeps settings, keeps existing ids, adds new ones", () => {
  const a = newLayer([], { name: "sky", prompt: "blue sky", mask_blur: 3 });
  const b = newLayer([a], { name: "apple", prompt: "a red apple", prompt_strength: 0.5 });
  const palette = JSON.parse(JSON.stringify(exportPalette([a, b], { prompt: "a table", negative_prompt: "blurry", has_image: true })));
  assert.equal(palette.layers[0].id, undefined, "no ids in a palette");
  assert.deepEqual(palette.background, { prompt: "a table", negative_prompt: "blurry" });

  const existing = [newLayer([], { name: "x", prompt: "old" })];
  const out = importPalette(palette, existing, { prompt: "", has_image: false });
  assert.equal(out.layers.length, 2);
  assert.equal(out.layers[0].id, existing[0].id, "the first layer keeps its id (and so its mask)");
  assert.equal(out.layers[0].prompt, "blue sky");
  assert.equal(out.layers[0].mask_blur, 3);
  assert.notEqual(out.layers[1].id, b.id, "an added layer gets a new id");
  assert.equal(out.layers[1].prompt_strength, 0.5);
  assert.deepEqual(out.background, { prompt: "a table", negative_prompt: "blurry", has_image: false });
});

test("malformed palettes are refused with a readable message", () => {
  assert.throws(() => importPalette({}, [], {}), /"layers" list/);
  assert.throws(() => importPalette({ layers: [{ prompt_strength: 3 }] }, [], {}), /layer 1: invalid prompt_strength/);
  assert.throws(() => importPalette({ layers: [{ color: "red" }] }, [], {}), /invalid color/);
  assert.throws(() => importPalette({ layers: [7] }, [], {}), /not an object/);
});

test("a palette that would make more layers than a canvas holds is refused whole", () => {
  const existing = Array.from({ length: MAX_LAYERS - 1 }, () => newLayer([]));
  const two = { layers: [...existing.map(() => ({})), { prompt: "a" }, { prompt: "b" }] };
  assert.throws(() => importPalette(two, existing, {}), new RegExp(`would make ${MAX_LAYERS + 1} layers; a canvas holds at most ${MAX_LAYERS}`));
  const one = { layers: [...existing.map(() => ({})), { prompt: "a" }] };
  assert.equal(importPalette(one, existing, {}).layers.length, MAX_LAYERS);
});
