import { test } from "node:test";
import assert from "node:assert/strict";
import { History } from "../src/history.js";
import { Stroke } from "../src/raster.js";
import { extract, put } from "../src/rects.js";

const W = 32, H = 32;

/** What the view does: snapshot, stroke, record the stroke's rect. */
function drawStroke(mask, history, layer, points, mode = "brush") {
  const before = mask.slice();
  const stroke = new Stroke(mask, W, H, mode);
  for (const [x, y] of points) stroke.add(x, y, 3);
  stroke.finish();
  history.push({ layer, rect: stroke.rect, before: extract(before, W, stroke.rect), after: extract(mask, W, stroke.rect) });
}

test("stroke → undo restores the bytes exactly → redo reapplies them", () => {
  const mask = new Uint8Array(W * H);
  mask.fill(77, 0, 100);
  const original = mask.slice();
  const history = new History();
  drawStroke(mask, history, "a", [[2, 2], [20, 25], [30, 5]]);
  const painted = mask.slice();
  assert.notDeepEqual(painted, original);

  const undo = history.undo();
  put(mask, W, undo.rect, undo.before);
  assert.deepEqual(mask, original);
  assert.ok(history.canRedo);

  const redo = history.redo();
  put(mask, W, redo.rect, redo.after);
  assert.deepEqual(mask, painted);
  assert.equal(history.redo(), null);
});

test("a new edit clears the redo stack", () => {
  const mask = new Uint8Array(W * H);
  const history = new History();
  drawStroke(mask, history, "a", [[2, 2], [10, 10]]);
  drawStroke(mask, history, "a", [[20, 2], [20, 20]]);
  const e = history.undo();
  put(mask, W, e.rect, e.before);
  assert.ok(history.canRedo);
  drawStroke(mask, history, "a", [[5, 25], [25, 25]], "eraser");
  assert.equal(history.canRedo, false);
  assert.equal(history.undoStack.length, 2);
});

test("undo and redo walk several edits in order", () => {
  const mask = new Uint8Array(W * H);
  const history = new History();
  const states = [mask.slice()];
  for (const pts of [[[2, 2], [9, 9]], [[12, 3], [30, 3]], [[4, 28], [28, 28]]]) {
    drawStroke(mask, history, "a", pts);
    states.push(mask.slice());
  }
  for (let i = 2; i >= 0; i--) {
    const e = history.undo();
    put(mask, W, e.rect, e.before);
    assert.deepEqual(mask, states[i]);
  }
  assert.equal(history.undo(), null);
  for (let i = 1; i <= 3; i++) {
    const e = history.redo();
    put(mask, W, e.rect, e.after);
    assert.deepEqual(mask, states[i]);
  }
});

test("a mask set from Python is an undoable edit like any other", () => {
  const mask = new Uint8Array(W * H);
  const history = new History();
  const rect = { x: 4, y: 4, w: 8, h: 8 };
  const incoming = new Uint8Array(64).fill(255);
  history.push({ layer: "p", rect, before: extract(mask, W, rect), after: incoming });
  put(mask, W, rect, incoming);
  const e = history.undo();
  assert.equal(e.layer, "p");
  put(mask, W, e.rect, e.before);
  assert.ok(mask.every((v) => v === 0));
});

test("memory is bounded: the oldest entries go first", () => {
  const history = new History(1000);
  const entry = (n) => ({ layer: "a", rect: { x: 0, y: 0, w: n, h: 1 }, before: new Uint8Array(100), after: new Uint8Array(100) });
  for (let i = 0; i < 10; i++) history.push(entry(i + 1));
  assert.equal(history.undoStack.length, 5);
  assert.equal(history.undoStack[0].rect.w, 6);
  assert.ok(history.bytes <= 1000);
  const huge = { layer: "a", rect: { x: 0, y: 0, w: 1, h: 1 }, before: new Uint8Array(2000), after: new Uint8Array(2000) };
  history.push(huge);
  assert.deepEqual(history.undoStack, [huge], "the newest edit is always kept");
});

test("entries of a deleted layer are forgotten", () => {
  const history = new History();
  const e = (layer) => ({ layer, rect: { x: 0, y: 0, w: 1, h: 1 }, before: new Uint8Array(1), after: new Uint8Array(1) });
  history.push(e("a"));
  history.push(e("b"));
  history.push(e("a"));
  history.undo();
  history.forgetLayer("a");
  assert.deepEqual(history.undoStack.map((x) => x.layer), ["b"]);
  assert.equal(history.canRedo, false);
  assert.equal(history.bytes, 2);
});

test("a layer deletion is one entry that counts its mask and is forgotten with the layer", () => {
  const history = new History(3 * W * H);
  const mask = new Uint8Array(W * H).fill(9);
  history.push({ kind: "layer", layer: "a", index: 0, settings: { id: "a" }, mask, active: true });
  assert.equal(history.bytes, W * H);
  const entry = history.undo();
  assert.equal(entry.kind, "layer");
  assert.equal(history.redo(), entry);
  history.push({ kind: "layer", layer: "b", index: 1, settings: { id: "b" }, mask: mask.slice(), active: false });
  history.push({ kind: "layer", layer: "c", index: 2, settings: { id: "c" }, mask: mask.slice(), active: false });
  history.push({ kind: "layer", layer: "d", index: 3, settings: { id: "d" }, mask: mask.slice(), active: false });
  assert.deepEqual(history.undoStack.map((e) => e.layer), ["b", "c", "d"]); // the oldest dropped past maxBytes
  history.forgetLayer("c");
  assert.deepEqual(history.undoStack.map((e) => e.layer), ["b", "d"]);
  assert.equal(history.bytes, 2 * W * H);
});

test("an undone entry that could not be applied is discarded, not redone later", () => {
  const history = new History();
  history.push({ kind: "layer", layer: "a", index: 0, settings: { id: "a" }, mask: new Uint8Array(4), active: false });
  history.undo();
  history.discardUndone();
  assert.equal(history.canRedo, false);
  assert.equal(history.bytes, 0);
});

test("an edit that arrives in parts replaces its entry: one undo step, bytes counted once", () => {
  const history = new History();
  const part = (n) => ({ layer: "a", rect: { x: 0, y: 0, w: n, h: 1 }, before: new Uint8Array(n), after: new Uint8Array(n), edit: 7 });
  history.push(part(4));
  history.replaceLast(part(10));
  assert.equal(history.last.rect.w, 10);
  assert.equal(history.bytes, 20);
  assert.equal(history.undo().rect.w, 10);
  assert.equal(history.canUndo, false);
});
