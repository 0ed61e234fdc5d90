import { test } from "node:test";
import assert from "node:assert/strict";
import { deflateSync, inflateSync } from "node:zlib";
import { MAX_BAND_BYTES, MaskSender, deflate, maskBytes, parseKernelMessage } from "../src/protocol.js";
import { bytesOf } from "../src/transport.js";

const SIZE = { width: 64, height: 32 };

function capture(options) {
  const sent = [];
  const sender = new MaskSender((content, buffers) => sent.push({ content, buffers }), options);
  return { sent, sender };
}

test("a mask message carries the rect, encoding, an increasing rev and exactly w*h bytes", async () => {
  const { sent, sender } = capture({ compress: null });
  const bytes = Uint8Array.from({ length: 12 }, (_, i) => i * 20);
  await sender.enqueue("l1", { x: 2, y: 3, w: 4, h: 3 }, bytes);
  await sender.enqueue("l1", { x: 0, y: 0, w: 1, h: 1 }, new Uint8Array([9]));
  assert.deepEqual(sent[0].content, { type: "mask", layer: "l1", x: 2, y: 3, w: 4, h: 3, enc: "raw", rev: 1 });
  assert.equal(sent[1].content.rev, 2);
  assert.equal(sent[0].buffers.length, 1);
  assert.ok(sent[0].buffers[0] instanceof ArrayBuffer);
  assert.deepEqual(new Uint8Array(sent[0].buffers[0]), bytes);
});

test("the bytes are copied at enqueue time, so later edits do not leak into a queued message", async () => {
  const { sent, sender } = capture({ compress: async (b) => b.subarray(0, 0) });
  const bytes = new Uint8Array(4).fill(1);
  const done = sender.enqueue("l1", { x: 0, y: 0, w: 2, h: 2 }, bytes);
  bytes.fill(2);
  await done;
  assert.deepEqual([...new Uint8Array(sent[0].buffers[0])], [1, 1, 1, 1]);
});

test("rects over the band limit are chunked into horizontal bands, in order", async () => {
  const { sent, sender } = capture({ compress: null, maxBandBytes: 100 });
  const rect = { x: 5, y: 2, w: 30, h: 7 };
  const bytes = Uint8Array.from({ length: 210 }, (_, i) => i);
  await sender.enqueue("l2", rect, bytes);
  assert.deepEqual(sent.map((m) => [m.content.y, m.content.h, m.content.rev]), [[2, 3, 1], [5, 3, 2], [8, 1, 3]]);
  const joined = new Uint8Array(sent.flatMap((m) => [...new Uint8Array(m.buffers[0])]));
  assert.deepEqual(joined, bytes);
  for (const m of sent) assert.equal(m.buffers[0].byteLength, m.content.w * m.content.h);
});

test("the default band limit keeps a 1024x2560 fill under 2 MB per message", async () => {
  const { sent, sender } = capture({ compress: null });
  await sender.enqueue("big", { x: 0, y: 0, w: 1024, h: 2560 }, new Uint8Array(1024 * 2560).fill(255));
  assert.equal(sent.length, 2);
  for (const m of sent) assert.ok(m.buffers[0].byteLength <= MAX_BAND_BYTES);
  assert.deepEqual(sent.map((m) => m.content.h), [2048, 512]);
});

test("large masks are deflated in zlib format (what Python's zlib.decompress reads)", async () => {
  const { sent, sender } = capture();
  const bytes = new Uint8Array(100 * 100);
  bytes.fill(255, 2000, 6000);
  await sender.enqueue("l3", { x: 0, y: 0, w: 100, h: 100 }, bytes);
  assert.equal(sent[0].content.enc, "deflate");
  assert.ok(sent[0].buffers[0].byteLength < 1000);
  assert.deepEqual(new Uint8Array(inflateSync(new Uint8Array(sent[0].buffers[0]))), bytes);
});

test("small masks go raw, and raw is the fallback when compression is unavailable", async () => {
  const { sent, sender } = capture({ compress: async () => null });
  await sender.enqueue("l", { x: 0, y: 0, w: 100, h: 100 }, new Uint8Array(10000));
  const small = capture();
  await small.sender.enqueue("l", { x: 0, y: 0, w: 10, h: 10 }, new Uint8Array(100));
  assert.equal(sent[0].content.enc, "raw");
  assert.equal(small.sent[0].content.enc, "raw");
  assert.ok((await deflate(new Uint8Array(10))) instanceof Uint8Array);
});

test("a kernel mask message parses to a normalised message with its bytes", () => {
  const data = new Uint8Array(6).fill(3);
  const { msg, error } = parseKernelMessage(
    { type: "mask", layer: "l1", x: 60, y: 29, w: 2, h: 3, enc: "raw", origin: "sync" },
    [new DataView(data.buffer)], SIZE);
  assert.equal(error, undefined);
  assert.equal(msg.origin, "sync");
  assert.deepEqual(msg.data, data);
  assert.equal(parseKernelMessage({ type: "mask", layer: "l", x: 0, y: 0, w: 1, h: 1 }, [new Uint8Array(1)], SIZE).msg.origin, "python");
});

test("deflated kernel masks are inflated and their size checked", async () => {
  const raw = new Uint8Array(64 * 2).fill(200);
  const packed = new Uint8Array(deflateSync(raw));
  const { msg } = parseKernelMessage({ type: "mask", layer: "l", x: 0, y: 0, w: 64, h: 2, enc: "deflate" }, [new DataView(packed.buffer)], SIZE);
  assert.deepEqual(await maskBytes(msg), raw);
  const wrong = parseKernelMessage({ type: "mask", layer: "l", x: 0, y: 0, w: 64, h: 3, enc: "deflate" }, [packed], SIZE).msg;
  await assert.rejects(maskBytes(wrong), /expected 192/);
});

test("malformed kernel messages are rejected with a reason, never thrown", () => {
  const bad = [
    [null, []],
    ["mask", []],
    [42, null],
    [[], []],
    [{}, []],
    [{ type: "nope" }, []],
    [{ type: "mask", layer: "l", x: 0, y: 0, w: 2, h: 2 }, []],
    [{ type: "mask", layer: "l", x: 0, y: 0, w: 2, h: 2 }, [new Uint8Array(3)]],
    [{ type: "mask", layer: "l", x: 63, y: 0, w: 2, h: 1 }, [new Uint8Array(2)]],
    [{ type: "mask", layer: "l", x: -1, y: 0, w: 1, h: 1 }, [new Uint8Array(1)]],
    [{ type: "mask", layer: "l", x: 0.5, y: 0, w: 1, h: 1 }, [new Uint8Array(1)]],
    [{ type: "mask", layer: "l", x: 0, y: 0, w: 0, h: 1 }, [new Uint8Array(0)]],
    [{ type: "mask", layer: "", x: 0, y: 0, w: 1, h: 1 }, [new Uint8Array(1)]],
    [{ type: "mask", layer: "l", x: 0, y: 0, w: 1, h: 1, enc: "gzip" }, [new Uint8Array(1)]],
    [{ type: "mask", layer: "l", x: 0, y: 0, w: 1, h: 1, origin: "mars" }, [new Uint8Array(1)]],
    [{ type: "mask", layer: "l", x: "0", y: 0, w: 1, h: 1 }, [new Uint8Array(1)]],
    [{ type: "mask", layer: "l", x: 0, y: 0, w: 1, h: 1 }, ["not a buffer"]],
    [{ type: "frame", seq: 1, format: "jpeg" }, []],
    [{ type: "frame", seq: "1", format: "jpeg" }, [new Uint8Array(5)]],
    [{ type: "frame", seq: 1, format: "bmp" }, [new Uint8Array(5)]],
    [{ type: "background_image", format: "tiff" }, [new Uint8Array(5)]],
    [{ type: "background_image", format: "png" }, []],
    [{ type: "error" }, []],
  ];
  for (const [content, buffers] of bad) {
    const out = parseKernelMessage(content, buffers, SIZE);
    assert.equal(typeof out.error, "string", `rejects ${JSON.stringify(content)}`);
    assert.equal(out.msg, undefined);
  }
});

test("frames, background images and errors parse", () => {
  const img = new Uint8Array([1, 2, 3]);
  const frame = parseKernelMessage({ type: "frame", seq: 7, format: "png", width: 64, height: 32, stats: { fps: 3 } }, [new DataView(img.buffer)], SIZE).msg;
  assert.equal(frame.seq, 7);
  assert.deepEqual(frame.stats, { fps: 3 });
  assert.deepEqual(frame.data, img);
  assert.deepEqual(parseKernelMessage({ type: "background_image", clear: true }, [], SIZE).msg, { type: "background_image", clear: true, view: null });
  assert.equal(parseKernelMessage({ type: "background_image", format: "png", view: "v2" }, [img], SIZE).msg.view, "v2");
  assert.equal(parseKernelMessage({ type: "error", message: "CUDA out of memory" }, [], SIZE).msg.message, "CUDA out of memory");
});

test("image formats are exactly the protocol's: frames JPEG or PNG, the kernel's background image PNG", () => {
  const img = new Uint8Array([1, 2, 3]);
  const frame = (format) => parseKernelMessage({ type: "frame", seq: 1, format }, [img], SIZE);
  const background = (format) => parseKernelMessage({ type: "background_image", format }, [img], SIZE);
  assert.equal(frame("jpeg").msg.format, "jpeg");
  assert.equal(frame("png").msg.format, "png");
  assert.equal(background("png").msg.format, "png");
  // The kernel never sends these (a WebP upload reaches the view as the kernel's PNG).
  for (const format of ["webp", "gif"]) assert.match(frame(format).error, /unknown format/);
  for (const format of ["webp", "jpeg"]) assert.match(background(format).error, /unknown format/);
});

test("bytesOf views any buffer type without copying", () => {
  const base = new Uint8Array([0, 1, 2, 3, 4]);
  const view = new DataView(base.buffer, 1, 3);
  assert.deepEqual([...bytesOf(view)], [1, 2, 3]);
  assert.deepEqual([...bytesOf(base.buffer)], [0, 1, 2, 3, 4]);
  assert.equal(bytesOf("x"), null);
});

test("the end of a sync is a message of its own, addressed to the view that asked", () => {
  assert.deepEqual(parseKernelMessage({ type: "synced" }, [], SIZE), { msg: { type: "synced", view: null } });
  assert.deepEqual(parseKernelMessage({ type: "synced", view: "v2" }, [], SIZE), { msg: { type: "synced", view: "v2" } });
});

test("peer masks (strokes from another view) carry the painting view's id", () => {
  const content = { type: "mask", layer: "l", x: 0, y: 0, w: 1, h: 1, origin: "peer", view: "v1" };
  const { msg } = parseKernelMessage(content, [new Uint8Array([7])], SIZE);
  assert.equal(msg.origin, "peer");
  assert.equal(msg.view, "v1");
  assert.equal(msg.edit, null);
  assert.equal(parseKernelMessage({ ...content, origin: "python", edit: 4 }, [new Uint8Array([7])], SIZE).msg.edit, 4);
  assert.match(parseKernelMessage({ ...content, origin: "alien" }, [new Uint8Array(1)], SIZE).error, /unknown origin/);
});
