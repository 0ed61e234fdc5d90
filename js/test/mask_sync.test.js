// The reconciliation between the masks painted here and the ones the kernel sends (mask_sync.js), with
// the pieces the view joins to it (LayerList, Edits, StrokeInput) over a fake model and a fake canvas.
import { test } from "node:test";
import assert from "node:assert/strict";
import { deflateSync } from "node:zlib";
import { Disposer } from "../src/dom.js";
import { Edits } from "../src/edits.js";
import { History } from "../src/history.js";
import { LayerList } from "../src/layer_list.js";
import { MAX_WRITES_DURING_SYNC, MaskSync } from "../src/mask_sync.js";
import { parseKernelMessage } from "../src/protocol.js";
import { extract, intersect } from "../src/rects.js";
import { StrokeInput } from "../src/stroke_input.js";

const W = 16, H = 16;
const ALL = { x: 0, y: 0, w: W, h: H };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const filled = (rect, value) => new Uint8Array(rect.w * rect.h).fill(value);

/** The anywidget model as the view uses it: traits (set fires change at once, as Backbone does) and send. */
function fakeModel(traits) {
  const listeners = new Map();
  const sent = [];
  return {
    sent,
    get: (name) => traits[name],
    set(name, value) {
      traits[name] = value;
      for (const fn of listeners.get(`change:${name}`) ?? []) fn();
    },
    save_changes() {},
    on: (name, fn) => listeners.set(name, [...(listeners.get(name) ?? []), fn]),
    off: (name, fn) => listeners.set(name, (listeners.get(name) ?? []).filter((f) => f !== fn)),
    send: (content, callbacks, buffers) => sent.push({ content, buffers }),
  };
}

/** A view's kernel-facing core, wired as view.js wires it: masks, layer list, edits (with undo). */
function viewCore({ layers = ["a", "b"], syncTimeoutMs } = {}) {
  const model = fakeModel({ layers: layers.map((id) => ({ id })), active_layer: layers[0] });
  const history = new History();
  const errors = [];
  const changed = [];
  const masks = new MaskSync({
    send: (content, buffers) => model.send(content, undefined, buffers),
    history,
    onChange: (rect) => changed.push(rect),
    onHistoryChange: () => {},
    onError: (text) => errors.push(text),
    syncTimeoutMs,
  });
  masks.resize(W, H);
  const list = new LayerList({ model, masks, history });
  model.on("change:layers", () => list.follow(list.all())); // what the view's onLayers does
  list.follow(list.all());
  const edits = new Edits({ masks, layers: list, history, busy: () => false, onHistoryChange: () => {} });
  return { model, history, masks, layers: list, edits, errors, changed };
}

/** Hands the view a kernel mask message (checked by the parser the view uses); resolves once applied. */
function fromKernel(masks, { bytes, ...fields }) {
  const content = { type: "mask", enc: "raw", ...fields };
  const { msg, error } = parseKernelMessage(content, [bytes], { width: masks.width, height: masks.height });
  assert.equal(error, undefined);
  return masks.receive(msg);
}

const synced = (masks, view) => masks.receive({ type: "synced", view });
const pixels = (masks, layer, rect) => [...extract(masks.get(layer), W, rect)];
const every = (masks, layer, rect, value) => pixels(masks, layer, rect).every((v) => v === value);

/** The mask messages this view sent, once the sender's queue has drained. */
async function maskMessagesSent(core) {
  await core.masks.sender.queue;
  return core.model.sent.filter((m) => m.content.type === "mask");
}

test("a new view asks for every mask, and paints only after the sync's masks are in", async () => {
  const { masks, model } = viewCore();
  masks.requestSync();
  assert.deepEqual(model.sent.map((m) => m.content), [{ type: "sync", view: masks.viewId }]);
  assert.equal(masks.syncing, true);
  // A deflated band (decoded asynchronously) and then "synced": the masks still come first.
  fromKernel(masks, { layer: "a", ...ALL, origin: "sync", view: masks.viewId, enc: "deflate", bytes: deflateSync(filled(ALL, 200)) });
  const done = synced(masks, masks.viewId);
  assert.equal(masks.syncing, true);
  await done;
  assert.equal(masks.syncing, false);
  assert.ok(every(masks, "a", ALL, 200));
});

test("the replies to another view's sync are not this view's: its paint stays, it keeps waiting", async () => {
  const { masks } = viewCore();
  masks.write("a", ALL, filled(ALL, 90));
  masks.requestSync();
  await fromKernel(masks, { layer: "a", ...ALL, origin: "sync", view: "someone-else", bytes: filled(ALL, 7) });
  await synced(masks, "someone-else");
  assert.ok(every(masks, "a", ALL, 90));
  assert.equal(masks.syncing, true);
});

test("a busy kernel: painting resumes after the timeout, and the late sync keeps what was painted since", async () => {
  const { masks } = viewCore({ syncTimeoutMs: 5 });
  masks.requestSync();
  await sleep(30);
  assert.equal(masks.syncing, false);
  const mine = { x: 2, y: 2, w: 4, h: 4 };
  const otherLayer = { x: 10, y: 10, w: 3, h: 3 };
  masks.write("a", mine, filled(mine, 255));
  masks.painted("b", otherLayer); // a stroke's pixels, written in place
  await fromKernel(masks, { layer: "a", ...ALL, origin: "sync", view: masks.viewId, bytes: filled(ALL, 50) });
  assert.ok(every(masks, "a", mine, 255), "the edit made after the request stays on top of the snapshot");
  assert.ok(every(masks, "a", otherLayer, 50), "an edit of another layer protects nothing on this one");
  assert.equal(pixels(masks, "a", { x: 0, y: 0, w: 1, h: 1 })[0], 50);
  await synced(masks, masks.viewId);
  assert.equal(masks.writtenDuringSync, null);
  // Once synced, the kernel's masks simply apply.
  await fromKernel(masks, { layer: "a", ...mine, origin: "peer", view: "v2", bytes: filled(mine, 1) });
  assert.ok(every(masks, "a", mine, 1));
});

test("past MAX_WRITES_DURING_SYNC edits, one box per layer still keeps them all", async () => {
  const { masks } = viewCore({ syncTimeoutMs: 1 });
  masks.requestSync();
  await sleep(20);
  const corner = { x: 0, y: 0, w: 1, h: 1 };
  const far = { x: 12, y: 13, w: 1, h: 1 };
  masks.write("a", corner, filled(corner, 255));
  for (let i = 0; i < MAX_WRITES_DURING_SYNC; i++) masks.painted("a", { x: 5, y: 5, w: 1, h: 1 });
  masks.write("a", far, filled(far, 254));
  assert.ok(masks.writtenDuringSync.length <= 2, `${masks.writtenDuringSync.length} rects remembered`);
  await fromKernel(masks, { layer: "a", ...ALL, origin: "sync", view: masks.viewId, bytes: filled(ALL, 3) });
  assert.equal(pixels(masks, "a", corner)[0], 255);
  assert.equal(pixels(masks, "a", far)[0], 254);
});

test("the kernel's echo of a stroke is skipped by the view that drew it and applied by the others", async () => {
  const { masks, history } = viewCore();
  const rect = { x: 4, y: 4, w: 4, h: 4 };
  masks.write("a", rect, filled(rect, 255));
  await fromKernel(masks, { layer: "a", ...rect, origin: "peer", view: masks.viewId, bytes: filled(rect, 128) });
  assert.ok(every(masks, "a", rect, 255), "its own echo could land on newer paint");
  await fromKernel(masks, { layer: "a", ...rect, origin: "peer", view: "v2", bytes: filled(rect, 128) });
  assert.ok(every(masks, "a", rect, 128));
  assert.equal(history.canUndo, false, "another view's stroke is not an undo step here");
});

test("a Python set_mask is one undo step; undo puts back the pixels it covered, here and in the kernel", async () => {
  const core = viewCore();
  const { masks, edits } = core;
  const painted = { x: 0, y: 0, w: 8, h: 8 };
  masks.write("a", painted, filled(painted, 100));
  const python = { x: 4, y: 4, w: 8, h: 8 };
  await fromKernel(masks, { layer: "a", ...python, origin: "python", edit: 1, bytes: filled(python, 200) });
  assert.ok(every(masks, "a", python, 200));
  assert.equal(core.history.undoStack.length, 1);

  edits.undo();
  assert.ok(every(masks, "a", { x: 4, y: 4, w: 4, h: 4 }, 100), "the painted part comes back");
  assert.ok(every(masks, "a", { x: 8, y: 8, w: 4, h: 4 }, 0));
  const last = (await maskMessagesSent(core)).at(-1);
  assert.deepEqual([last.content.layer, last.content.x, last.content.y, last.content.w, last.content.h], ["a", 4, 4, 8, 8]);
  assert.deepEqual(new Uint8Array(last.buffers[0]), extract(masks.get("a"), W, python), "the kernel gets the same bytes");

  edits.redo();
  assert.ok(every(masks, "a", python, 200));
});

test("the bands of one large set_mask share an edit number and undo as one step", async () => {
  const { masks, edits, history } = viewCore();
  const before = { x: 0, y: 6, w: W, h: 4 };
  masks.write("a", before, filled(before, 30));
  const top = { x: 0, y: 0, w: W, h: 8 };
  const bottom = { x: 0, y: 8, w: W, h: 8 };
  fromKernel(masks, { layer: "a", ...top, origin: "python", edit: 4, bytes: filled(top, 255) });
  await fromKernel(masks, { layer: "a", ...bottom, origin: "python", edit: 4, bytes: filled(bottom, 255) });
  assert.equal(history.undoStack.length, 1);
  assert.deepEqual(history.last.rect, ALL);

  edits.undo();
  assert.ok(every(masks, "a", before, 30));
  assert.ok(every(masks, "a", { x: 0, y: 0, w: W, h: 6 }, 0));
  assert.ok(every(masks, "a", { x: 0, y: 10, w: W, h: 6 }, 0));
  assert.equal(history.canUndo, false);
  edits.redo();
  assert.ok(every(masks, "a", ALL, 255));
});

test("set_masks with other edit numbers, other layers or no number are steps of their own", async () => {
  const { masks, history } = viewCore();
  const r = { x: 0, y: 0, w: 2, h: 2 };
  const steps = [["a", 1], ["a", 2], ["b", 2], ["a", null], ["a", null]];
  for (const [layer, edit] of steps) {
    await fromKernel(masks, { layer, ...r, origin: "python", ...(edit === null ? {} : { edit }), bytes: filled(r, 9) });
  }
  assert.equal(history.undoStack.length, steps.length);
});

test("kernel masks apply in arrival order, also when an earlier one has to be inflated first", async () => {
  const { masks } = viewCore();
  const r = { x: 0, y: 0, w: W, h: H };
  await Promise.all([
    fromKernel(masks, { layer: "a", ...r, origin: "peer", view: "v2", enc: "deflate", bytes: deflateSync(filled(r, 200)) }),
    fromKernel(masks, { layer: "a", ...r, origin: "peer", view: "v2", bytes: filled(r, 50) }),
  ]);
  assert.ok(every(masks, "a", r, 50));
});

test("a mask for a layer the list does not name yet is kept, and follows the list from then on", async () => {
  const { masks, model } = viewCore({ layers: ["a"] });
  const r = { x: 1, y: 1, w: 2, h: 2 };
  await fromKernel(masks, { layer: "late", ...r, origin: "python", edit: 1, bytes: filled(r, 77) });
  assert.equal(masks.isListed("late"), false);
  model.set("layers", [{ id: "a", name: "renamed" }]); // a change that does not name it yet
  model.set("layers", [{ id: "a" }, { id: "late" }]);
  assert.equal(masks.isListed("late"), true);
  assert.ok(every(masks, "late", r, 77), "the layer arrives with the mask sent before it");
  model.set("layers", [{ id: "a" }]);
  assert.equal(masks.get("late"), undefined);
});

test("a mask checked against the old size is dropped once the canvas has shrunk", async () => {
  const { masks, errors } = viewCore();
  const r = { x: 8, y: 8, w: 8, h: 8 };
  const applied = fromKernel(masks, { layer: "a", ...r, origin: "python", edit: 1, bytes: filled(r, 255) });
  masks.resize(8, 8);
  await applied;
  assert.ok(masks.get("a").every((v) => v === 0));
  assert.deepEqual(errors, []);
});

test("a mask that cannot be decoded is reported, and the ones after it still apply", async () => {
  const { masks, errors } = viewCore();
  const r = { x: 0, y: 0, w: 4, h: 4 };
  fromKernel(masks, { layer: "a", ...r, origin: "python", enc: "deflate", bytes: new Uint8Array([1, 2, 3]) });
  await fromKernel(masks, { layer: "a", ...r, origin: "python", bytes: filled(r, 60) });
  assert.equal(errors.length, 1);
  assert.match(errors[0], /could not be applied/);
  assert.ok(every(masks, "a", r, 60));
});

test("nothing from the kernel applies once the view is gone", async () => {
  const { masks, changed } = viewCore();
  masks.dispose();
  const r = { x: 0, y: 0, w: 4, h: 4 };
  await fromKernel(masks, { layer: "a", ...r, origin: "python", bytes: filled(r, 60) });
  assert.ok(every(masks, "a", r, 0));
  assert.deepEqual(changed, []);
});

test("undoing a deletion brings the layer back with its mask; one Python brought back already is skipped", async () => {
  const core = viewCore();
  const { masks, edits, model, layers } = core;
  const r = { x: 2, y: 2, w: 3, h: 3 };
  masks.write("b", r, filled(r, 180));
  const kept = { x: 0, y: 0, w: 1, h: 1 };
  edits.edit("a", kept, filled(kept, 1));
  edits.deleteLayer("b");
  assert.deepEqual(layers.all().map((l) => l.id), ["a"]);

  edits.undo();
  assert.deepEqual(layers.all().map((l) => l.id), ["a", "b"]);
  assert.ok(every(masks, "b", r, 180));
  const last = (await maskMessagesSent(core)).at(-1);
  assert.deepEqual([last.content.layer, last.content.w, last.content.h], ["b", 3, 3], "its mask goes to the kernel again");

  edits.redo();
  assert.deepEqual(layers.all().map((l) => l.id), ["a"]);
  model.set("layers", [{ id: "a" }, { id: "b" }]); // Python puts it back itself
  edits.undo(); // the deletion cannot be undone any more: the edit before it is undone instead
  assert.equal(pixels(masks, "a", kept)[0], 0);
  assert.equal(core.history.canUndo, false);
});

// ---------------------------------------------------------------- with a stroke in progress

function fakeCanvas() {
  const listeners = new Map();
  return {
    addEventListener: (type, fn) => listeners.set(type, fn),
    removeEventListener: (type) => listeners.delete(type),
    getBoundingClientRect: () => ({ left: 0, top: 0, width: W, height: H }),
    setPointerCapture() {},
    pointer(type, x, y) {
      listeners.get(type)?.({ pointerId: 1, pointerType: "mouse", button: 0, buttons: 1, clientX: x, clientY: y, preventDefault() {} });
    },
  };
}

function withStrokes(core) {
  const d = new Disposer();
  const canvas = fakeCanvas();
  const said = [];
  const strokes = new StrokeInput({
    d, canvas, cursor: { style: {} }, root: { focus() {} }, masks: core.masks,
    brushSize: () => 2, tool: () => "brush", activeLayer: () => core.layers.activeId(),
    say: (text) => said.push(text), record: (entry) => core.edits.record(entry),
  });
  return { d, canvas, strokes, said };
}

test("a Python mask that arrives mid-stroke shows at once; the stroke goes on, and each undoes on its own", async () => {
  const core = viewCore();
  const { masks, edits } = core;
  const { d, canvas, strokes } = withStrokes(core);
  canvas.pointer("pointerdown", 2.5, 2.5);
  canvas.pointer("pointermove", 8.5, 2.5);
  const python = { x: 10, y: 10, w: 6, h: 6 };
  await fromKernel(masks, { layer: "a", ...python, origin: "python", edit: 3, bytes: filled(python, 200) });
  assert.ok(strokes.active);
  assert.ok(every(masks, "a", python, 200));
  canvas.pointer("pointermove", 12.5, 2.5);
  canvas.pointer("pointerup", 12.5, 2.5);
  assert.equal(strokes.active, false);
  for (const [x, y] of [[2, 2], [7, 2], [12, 2]]) assert.equal(pixels(masks, "a", { x, y, w: 1, h: 1 })[0], 255, `painted at ${x},${y}`);
  assert.ok(every(masks, "a", python, 200), "the stroke did not paint over the kernel's mask");
  for (const m of await maskMessagesSent(core)) {
    assert.equal(intersect(m.content, python), null, "the kernel's own mask is not sent back to it");
  }

  assert.equal(core.history.undoStack.length, 2);
  edits.undo(); // the stroke
  assert.equal(pixels(masks, "a", { x: 2, y: 2, w: 1, h: 1 })[0], 0);
  assert.ok(every(masks, "a", python, 200));
  edits.undo(); // the set_mask
  assert.ok(every(masks, "a", python, 0));
  d.dispose();
});

test("painting waits for the sync: a stroke started before the kernel's masks are in does not begin", async () => {
  const core = viewCore();
  const { canvas, strokes, said, d } = withStrokes(core);
  core.masks.requestSync();
  canvas.pointer("pointerdown", 4, 4);
  assert.equal(strokes.active, false);
  assert.match(said.at(-1), /Loading the masks/);
  await synced(core.masks, core.masks.viewId);
  canvas.pointer("pointerdown", 4, 4);
  assert.equal(strokes.active, true);
  d.dispose();
});
