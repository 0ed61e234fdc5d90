// The transport probe and the base64 fallback (transport.js), the messages that carry base64 payloads
// (protocol.js), what the status line says, and a sync whose masks arrive damaged (mask_sync.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { History } from "../src/history.js";
import { MaskSync } from "../src/mask_sync.js";
import { parseKernelMessage } from "../src/protocol.js";
import { BASE64, BINARY, PROBE_BYTES, Transport, fromBase64, toBase64 } from "../src/transport.js";
import { damagedText, transportNote } from "../src/view.js";

const SIZE = { width: 8, height: 4 };

function transport(viewId = "v1") {
  const sent = [];
  const chosen = [];
  const t = new Transport({ send: (content, buffers) => sent.push({ content, buffers }), viewId, onChosen: (c) => chosen.push(c) });
  return { t, sent, chosen };
}

/** The kernel's probe reply as the view parses it: `buffers` as they arrived (none when dropped). */
function reply(view, toKernel, buffers) {
  const { msg, error } = parseKernelMessage({ type: "probe_reply", view, to_kernel: toKernel }, buffers, SIZE);
  assert.equal(error, undefined);
  return msg;
}

test("the probe carries every byte value as a buffer; later messages wait until the kernel answers it", () => {
  const { t, sent, chosen } = transport();
  t.probe();
  t.send({ type: "sync", view: "v1" });
  t.send({ type: "mask", layer: "a" }, [new Uint8Array([1, 2, 3]).buffer]);
  assert.equal(sent.length, 1);
  assert.deepEqual(sent[0].content, { type: "probe", view: "v1" });
  assert.deepEqual([...new Uint8Array(sent[0].buffers[0])], [...PROBE_BYTES]);

  t.answered(reply("v1", BINARY, [PROBE_BYTES.slice().buffer]));
  assert.deepEqual(sent.slice(1).map((m) => m.content.type), ["transport", "sync", "mask"]);
  assert.deepEqual(sent[1].content, { type: "transport", view: "v1", to_browser: BINARY });
  assert.deepEqual([...new Uint8Array(sent[3].buffers[0])], [1, 2, 3], "binary both ways: buffers as they were");
  assert.deepEqual(chosen, [{ toKernel: BINARY, toBrowser: BINARY }]);
  assert.equal(transportNote(t), "");
});

test("buffers the kernel did not get go as base64 in the content; a reply without its buffer makes the kernel send base64", () => {
  const { t, sent } = transport();
  t.probe();
  t.answered(reply("v1", BASE64, [])); // the reply's buffer was dropped on the way here
  assert.deepEqual(sent[1].content, { type: "transport", view: "v1", to_browser: BASE64 });
  const bytes = Uint8Array.from({ length: 70000 }, (_, i) => (i * 7) % 256); // more than one btoa chunk
  t.send({ type: "mask", layer: "a", w: 1 }, [bytes.buffer]);
  t.send({ type: "ack", seq: 3 });
  const [mask, ack] = sent.slice(2);
  assert.deepEqual(mask.buffers, []);
  assert.deepEqual([...fromBase64(mask.content.buffer_b64)], [...bytes]);
  assert.equal(mask.content.layer, "a");
  assert.deepEqual(ack, { content: { type: "ack", seq: 3 }, buffers: [] });
  assert.match(transportNote(t), /^transport: base64 \(this front end drops binary buffers either way/);
});

test("a reply whose buffer arrived changed counts as dropped; replies to another view are not this view's", () => {
  const { t, sent, chosen } = transport("mine");
  t.probe();
  t.answered(reply("other", BINARY, []));
  assert.equal(t.chosen, false);
  const mangled = PROBE_BYTES.slice();
  mangled[200] = 0x3f; // what a text re-encoding does to bytes over 127
  t.answered(reply("mine", BINARY, [mangled.buffer]));
  assert.equal(t.toBrowser, BASE64);
  assert.equal(t.toKernel, BINARY);
  assert.equal(sent.length, 2);
  assert.equal(chosen.length, 1);
  assert.equal(transportNote(t), "transport: base64 (this front end drops binary buffers from the kernel; slower, but complete)");
});

test("kernel messages carry their payload as a buffer or as base64, and broken base64 is reported", () => {
  const bytes = Uint8Array.from({ length: 32 }, (_, i) => i);
  const content = { type: "mask", layer: "a", x: 0, y: 0, w: 8, h: 4, enc: "raw", origin: "python" };
  const viaBuffer = parseKernelMessage(content, [bytes], SIZE).msg;
  const viaBase64 = parseKernelMessage({ ...content, buffer_b64: toBase64(bytes) }, [], SIZE).msg;
  assert.deepEqual([...viaBase64.data], [...viaBuffer.data]);
  const frame = { type: "frame", seq: 4, format: "png", width: 8, height: 4, stats: {} };
  assert.deepEqual([...parseKernelMessage({ ...frame, buffer_b64: "AAEC" }, [], SIZE).msg.data], [0, 1, 2]);
  assert.deepEqual(parseKernelMessage({ ...frame, buffer_b64: "not base64!" }, [], SIZE), { error: "frame: buffer_b64 is not valid base64" });
  assert.deepEqual(parseKernelMessage(frame, [], SIZE), { error: "frame: missing image bytes" });
  assert.deepEqual(parseKernelMessage({ ...content }, undefined, SIZE), { error: "mask: missing buffer" });
  assert.equal(damagedText(frame, "frame: missing image bytes"),
    "A frame from the kernel arrived damaged and was ignored (frame: missing image bytes).");
});

function masksView() {
  const errors = [];
  const masks = new MaskSync({
    send: () => {}, history: new History(), onChange: () => {}, onHistoryChange: () => {}, onError: (text) => errors.push(text),
  });
  masks.resize(SIZE.width, SIZE.height);
  return { masks, errors };
}

test("a sync whose masks arrived damaged keeps painting off, and says why", async () => {
  const { masks, errors } = masksView();
  masks.requestSync();
  masks.damaged({ type: "mask", layer: "a", origin: "sync", view: "someone else" }); // another view's reply
  await masks.receive({ type: "synced", view: masks.viewId });
  assert.equal(masks.syncing, false, "damage in another view's sync is not this view's");

  masks.requestSync();
  masks.damaged({ type: "mask", layer: "a", origin: "sync", view: masks.viewId });
  await masks.receive({ type: "synced", view: masks.viewId });
  assert.equal(masks.syncing, true);
  assert.match(masks.syncProblem, /masks arrived damaged, so painting stays off/);
  assert.deepEqual(errors, [masks.syncProblem]);

  masks.requestSync(); // a new sync starts afresh
  await masks.receive({ type: "synced", view: masks.viewId });
  assert.equal(masks.syncing, false);
  assert.equal(masks.syncProblem, null);
  masks.dispose();
});
