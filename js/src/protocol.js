// The custom messages between this view and the kernel: checking what arrives, and sending masks.
// The protocol itself (every message, its fields, who sends it) is written once, in
// docs/architecture.md, section "The wire protocol"; semdraw_widget/protocol.py is the kernel's side of
// it, and transport.js how payloads travel (buffers, or base64 where a front end drops buffers).
// parseKernelMessage validates everything that arrives; anything malformed is reported as
// {error} and never throws, so one bad message cannot break the view.

import { bands } from "./rects.js";
import { BASE64, BINARY, exactBuffer, payloadOf } from "./transport.js";

/** Bands larger than this are split: the server's websocket cap is 10 MB. */
export const MAX_BAND_BYTES = 2 * 1024 * 1024;
/** Below this, deflate costs more than it saves. */
export const MIN_DEFLATE_BYTES = 4096;
/** What the kernel encodes frames as: JPEG while the scene changes, PNG once it settles. */
export const FRAME_FORMATS = ["jpeg", "png"];
/** What the kernel sends the background image as (whatever format it was uploaded in). */
export const BACKGROUND_FORMATS = ["png"];
export const IMAGE_MIME = { jpeg: "image/jpeg", png: "image/png" };

async function pipeThrough(bytes, stream) {
  const response = new Response(new Blob([bytes]).stream().pipeThrough(stream));
  return new Uint8Array(await response.arrayBuffer());
}

/** zlib-format deflate (Python: zlib.decompress), or null where CompressionStream is missing. */
export async function deflate(bytes) {
  if (typeof CompressionStream === "undefined") return null;
  try {
    return await pipeThrough(bytes, new CompressionStream("deflate"));
  } catch {
    return null;
  }
}

export async function inflate(bytes) {
  if (typeof DecompressionStream === "undefined") {
    throw new Error("this browser cannot inflate deflate-encoded masks");
  }
  return pipeThrough(bytes, new DecompressionStream("deflate"));
}

/**
 * Sends mask rectangles in order. Each band of at most maxBandBytes raw bytes becomes one
 * message with its own increasing `rev`; compression is asynchronous, so sends go through
 * a promise chain to keep the kernel seeing revisions in order.
 */
export class MaskSender {
  constructor(send, { maxBandBytes = MAX_BAND_BYTES, compress = deflate } = {}) {
    this.send = send;
    this.maxBandBytes = maxBandBytes;
    this.compress = compress;
    this.rev = 0;
    this.queue = Promise.resolve();
  }

  /** `bytes` holds rect.w*rect.h bytes; they are copied now, so the caller may keep editing. */
  enqueue(layer, rect, bytes) {
    for (const band of bands(rect, this.maxBandBytes)) {
      const start = (band.y - rect.y) * rect.w;
      const raw = bytes.slice(start, start + band.w * band.h);
      const rev = ++this.rev;
      this.queue = this.queue.then(async () => {
        let enc = "raw";
        let payload = raw;
        if (this.compress && raw.length >= MIN_DEFLATE_BYTES) {
          const packed = await this.compress(raw);
          if (packed && packed.length < raw.length) {
            enc = "deflate";
            payload = packed;
          }
        }
        this.send({ type: "mask", layer, ...band, enc, rev }, [exactBuffer(payload)]);
      }).catch((err) => console.warn("semdraw: sending a mask failed", err));
    }
    return this.queue;
  }
}

const isInt = (v) => Number.isInteger(v);

/**
 * Validates a kernel message. Returns {msg} (normalised, with `data` as a Uint8Array when
 * the message carries bytes) or {error: "why"}. `size` = {width, height} of the canvas.
 */
export function parseKernelMessage(content, buffers, size) {
  if (!content || typeof content !== "object") return { error: "message is not an object" };
  const { bytes: data, error: payloadError } = payloadOf(content, buffers);
  if (payloadError) return { error: `${content.type}: ${payloadError}` };
  switch (content.type) {
    case "mask": {
      const { layer, x, y, w, h } = content;
      const enc = content.enc ?? "raw";
      const origin = content.origin ?? "python";
      if (typeof layer !== "string" || !layer) return { error: "mask: missing layer id" };
      if (![x, y, w, h].every(isInt) || x < 0 || y < 0 || w <= 0 || h <= 0) {
        return { error: "mask: x, y, w, h must be integers with w, h > 0" };
      }
      if (x + w > size.width || y + h > size.height) {
        return { error: `mask: rect ${w}x${h}+${x}+${y} lies outside the ${size.width}x${size.height} canvas` };
      }
      if (enc !== "raw" && enc !== "deflate") return { error: `mask: unknown enc ${enc}` };
      if (!["python", "sync", "peer"].includes(origin)) return { error: `mask: unknown origin ${origin}` };
      if (!data) return { error: "mask: missing buffer" };
      if (enc === "raw" && data.length !== w * h) {
        return { error: `mask: buffer has ${data.length} bytes, expected ${w * h}` };
      }
      const view = typeof content.view === "string" ? content.view : null;
      const edit = isInt(content.edit) ? content.edit : null; // ties the bands of one set_mask from Python
      return { msg: { type: "mask", layer, x, y, w, h, enc, origin, view, edit, data } };
    }
    case "frame": {
      const { seq, format } = content;
      if (!isInt(seq)) return { error: "frame: seq must be an integer" };
      if (!FRAME_FORMATS.includes(format)) return { error: `frame: unknown format ${format}` };
      if (!data || !data.length) return { error: "frame: missing image bytes" };
      const stats = content.stats && typeof content.stats === "object" ? content.stats : null;
      return { msg: { type: "frame", seq, format, width: content.width, height: content.height, stats, data } };
    }
    case "background_image": {
      const view = typeof content.view === "string" ? content.view : null; // set when part of one view's sync
      if (content.clear === true) return { msg: { type: "background_image", clear: true, view } };
      if (!BACKGROUND_FORMATS.includes(content.format)) {
        return { error: `background_image: unknown format ${content.format}` };
      }
      if (!data || !data.length) return { error: "background_image: missing image bytes" };
      return { msg: { type: "background_image", clear: false, format: content.format, view, data } };
    }
    case "probe_reply": {
      if (typeof content.view !== "string") return { error: "probe_reply: view must be a string" };
      if (![BINARY, BASE64].includes(content.to_kernel)) return { error: `probe_reply: unknown to_kernel ${content.to_kernel}` };
      return { msg: { type: "probe_reply", view: content.view, toKernel: content.to_kernel, data } };
    }
    case "synced":
      return { msg: { type: "synced", view: typeof content.view === "string" ? content.view : null } };
    case "error": {
      if (typeof content.message !== "string") return { error: "error: message must be a string" };
      return { msg: { type: "error", message: content.message } };
    }
    default:
      return { error: `unknown message type ${JSON.stringify(content.type)}` };
  }
}

/** The w*h coverage bytes of a parsed mask message; rejects when they do not fit the rect. */
export async function maskBytes(msg) {
  const bytes = msg.enc === "deflate" ? await inflate(msg.data) : msg.data;
  if (bytes.length !== msg.w * msg.h) {
    throw new Error(`mask: decoded ${bytes.length} bytes, expected ${msg.w * msg.h}`);
  }
  return bytes;
}
