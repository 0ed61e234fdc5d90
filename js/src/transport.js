// How binary payloads travel between this view and the kernel, per direction. Binary buffers are the
// fast way, but some front ends drop them (Colab's widget manager has been reported to ignore
// `buffers`). So at render the view probes: it sends a known payload as a buffer, the kernel answers
// whether it arrived intact and sends the same payload back as a buffer, and each direction whose
// buffer did not survive falls back to base64 in the JSON content (`buffer_b64`). The view tells the
// kernel what it receives (a "transport" message), and holds every other message until then, so the
// kernel sees them in the encoding chosen. The protocol is the same either way: docs/architecture.md,
// "The wire protocol".

/** What the probe carries both ways: every byte value once, so a text re-encoding shows too. */
export const PROBE_BYTES = Uint8Array.from({ length: 256 }, (_, i) => i);
export const BINARY = "binary";
export const BASE64 = "base64";

const CHUNK = 0x8000; // bytes per String.fromCharCode call: well under any engine's argument limit

export function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += CHUNK) text += String.fromCharCode(...bytes.subarray(i, i + CHUNK));
  return btoa(text);
}

/** The bytes of a base64 string, or null when it is not valid base64. */
export function fromBase64(text) {
  let binary;
  try {
    binary = atob(text);
  } catch {
    return null;
  }
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** Uint8Array view of a received buffer (DataView, typed array or ArrayBuffer), or null. */
export function bytesOf(buffer) {
  if (buffer instanceof Uint8Array) return buffer;
  if (buffer instanceof ArrayBuffer) return new Uint8Array(buffer);
  if (buffer && ArrayBuffer.isView(buffer)) {
    return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  }
  return null;
}

/** An ArrayBuffer holding exactly these bytes (some transports ignore a view's offset). */
export function exactBuffer(bytes) {
  if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength) return bytes.buffer;
  return bytes.slice().buffer;
}

/**
 * The one binary payload of a kernel message: its buffer, or the base64 in `buffer_b64`.
 * {bytes} (null when the message carries none) or {error} when the base64 is not valid.
 */
export function payloadOf(content, buffers) {
  if (buffers && buffers.length) return { bytes: bytesOf(buffers[0]) };
  if (typeof content?.buffer_b64 !== "string") return { bytes: null };
  const bytes = fromBase64(content.buffer_b64);
  return bytes ? { bytes } : { error: "buffer_b64 is not valid base64" };
}

const sameBytes = (a, b) => a !== null && a.length === b.length && a.every((v, i) => v === b[i]);

export class Transport {
  /**
   * send(content, buffers): the widget's comm (model.send). viewId: this view's id (the kernel's
   * probe reply names it; other views of the canvas skip it). onChosen({toKernel, toBrowser}): the
   * transport is known, and messages flow.
   */
  constructor({ send, viewId, onChosen }) {
    this.rawSend = send;
    this.viewId = viewId;
    this.onChosen = onChosen;
    this.toKernel = null; // BINARY or BASE64 once the probe is answered
    this.toBrowser = null;
    this.held = []; // messages sent before that, in order
  }

  get chosen() {
    return this.toKernel !== null;
  }

  /** Sends the probe; call once, when the view is rendered. */
  probe() {
    this.rawSend({ type: "probe", view: this.viewId }, [exactBuffer(PROBE_BYTES)]);
  }

  /** The kernel's probe reply (a parsed message); replies to other views are skipped. */
  answered(msg) {
    if (this.chosen || msg.view !== this.viewId) return;
    this.toKernel = msg.toKernel;
    this.toBrowser = sameBytes(msg.data, PROBE_BYTES) ? BINARY : BASE64;
    this.rawSend({ type: "transport", view: this.viewId, to_browser: this.toBrowser }, []);
    const held = this.held;
    this.held = [];
    for (const [content, buffers] of held) this.send(content, buffers);
    this.onChosen({ toKernel: this.toKernel, toBrowser: this.toBrowser });
  }

  /** A message to the kernel with at most one binary payload, in the encoding chosen (held until then). */
  send(content, buffers = []) {
    if (!this.chosen) {
      this.held.push([content, buffers]);
    } else if (this.toKernel === BASE64 && buffers.length) {
      this.rawSend({ ...content, buffer_b64: toBase64(bytesOf(buffers[0])) }, []);
    } else {
      this.rawSend(content, buffers);
    }
  }
}
