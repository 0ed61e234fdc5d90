// Every layer's mask as this view holds it, kept in step with the kernel's (the source of truth).
// Masks are Uint8Array(width*height) per layer id, painted here with no round trip. Local edits go to
// the kernel as mask messages; the kernel's masks apply here in arrival order (an "inbox" promise chain,
// since deflated ones decode asynchronously). What each kernel mask does depends on its origin:
//   python  a set_mask from Python: applied, and one undo step here (the bands of one large set_mask
//           share an `edit` number and merge into one step);
//   peer    another view's stroke, echoed by the kernel: applied; this view's own echo is skipped, since
//           it could land on top of newer paint;
//   sync    the snapshot a view asked for (on opening, after a resize): applied by the view that asked
//           only, keeping whatever it painted after the request (the kernel applies those edits on top
//           of the snapshot it sends, so they must stay on top here too).
// Until the sync's "synced" arrives (or SYNC_TIMEOUT_MS passes, for a busy kernel) the view should not
// paint: `syncing` says so. A sync whose masks arrived damaged keeps painting off (`syncProblem` says
// why): painting over masks this view does not have would overwrite the kernel's.

import { MaskSender, maskBytes } from "./protocol.js";
import { extract, intersect, put, union } from "./rects.js";

export const SYNC_TIMEOUT_MS = 3000;
/** Edits remembered one by one while a late sync is on its way; past this, one box per layer. */
export const MAX_WRITES_DURING_SYNC = 4096;

const randomViewId = () => Math.random().toString(36).slice(2, 10);

export class MaskSync {
  /**
   * send(content, buffers): a message to the kernel. history: where Python edits become undo steps.
   * onChange(rect): these pixels changed (redraw them). onHistoryChange(): the undo stack changed.
   * onError(text): a kernel mask could not be applied.
   */
  constructor({ send, history, onChange, onHistoryChange, onError, syncTimeoutMs = SYNC_TIMEOUT_MS }) {
    this.history = history;
    this.onChange = onChange;
    this.onHistoryChange = onHistoryChange;
    this.onError = onError;
    this.syncTimeoutMs = syncTimeoutMs;
    // Every view of a canvas hears the kernel's peer echoes and sync replies; this id tells its own apart.
    this.viewId = randomViewId();
    this.toKernel = send;
    this.sender = new MaskSender((content, buffers) => send({ ...content, view: this.viewId }, buffers));
    this.width = 0;
    this.height = 0;
    this.masks = new Map(); // layer id → Uint8Array(width*height)
    this.listed = new Set(); // ids in the layers trait; masks of other ids (arrived early) are kept as orphans
    this.syncing = false;
    this.syncProblem = null; // why painting stays off after a sync, when its masks arrived damaged
    this.syncDamaged = false; // a mask of the sync on its way could not be used
    this.syncTimer = 0;
    this.writtenDuringSync = null; // [{layer, rect}] written here while a sync's masks were on their way
    this.inbox = Promise.resolve();
    this.closed = false;
  }

  /** The layer's mask, or undefined. */
  get(id) {
    return this.masks.get(id);
  }

  /** The layer's mask, created (empty) if it has none yet. */
  mask(id) {
    let m = this.masks.get(id);
    if (!m) {
      m = new Uint8Array(this.width * this.height);
      this.masks.set(id, m);
    }
    return m;
  }

  /** True for a layer of the layers trait (one that can be painted). */
  isListed(id) {
    return this.masks.has(id) && this.listed.has(id);
  }

  get listedCount() {
    return this.listed.size;
  }

  /** Follows the layers trait: every listed layer gets a mask, unlisted ones lose theirs. Returns those ids. */
  follow(ids) {
    const gone = [...this.listed].filter((id) => !ids.has(id));
    for (const id of gone) this.masks.delete(id);
    this.listed = new Set(ids);
    for (const id of ids) this.mask(id);
    return gone;
  }

  /** A new canvas size: every mask is reallocated, empty (a sync refills them). */
  resize(width, height) {
    this.width = width;
    this.height = height;
    for (const id of this.masks.keys()) this.masks.set(id, new Uint8Array(width * height));
  }

  /**
   * Asks the kernel for every mask; the replies are addressed to this view only. Edits made after the
   * timeout are sent after the request, so the kernel applies them on top of the snapshot it replies
   * with: the reply leaves them in place here too (`writtenDuringSync`).
   */
  requestSync() {
    this.syncing = true;
    this.syncProblem = null;
    this.syncDamaged = false;
    this.writtenDuringSync = [];
    clearTimeout(this.syncTimer);
    this.syncTimer = setTimeout(() => { this.syncing = false; }, this.syncTimeoutMs);
    this.toKernel({ type: "sync", view: this.viewId });
  }

  /** Pixels a stroke wrote straight into a mask: redrawn, and remembered while a sync is on its way. */
  painted(layer, rect) {
    this.noteWrite(layer, rect);
    this.onChange(rect);
  }

  /** Sends the rect's current bytes of a layer to the kernel. */
  sendRect(layer, rect) {
    this.sender.enqueue(layer, rect, extract(this.mask(layer), this.width, rect));
  }

  /** A local edit: writes bytes into a rect of a layer, redraws it and tells the kernel. */
  write(layer, rect, bytes) {
    put(this.mask(layer), this.width, rect, bytes);
    this.painted(layer, rect);
    this.sender.enqueue(layer, rect, bytes);
  }

  noteWrite(layer, rect) {
    const written = this.writtenDuringSync;
    if (!written) return;
    written.push({ layer, rect });
    if (written.length > MAX_WRITES_DURING_SYNC) {
      // A kernel this slow to answer: keep one box per layer (it may keep a little stale paint, never lose new)
      const boxes = new Map();
      for (const w of written) boxes.set(w.layer, union(boxes.get(w.layer), w.rect));
      this.writtenDuringSync = [...boxes].map(([id, box]) => ({ layer: id, rect: box }));
    }
  }

  /** A parsed kernel "mask" or "synced" message; applied after the ones before it. Returns the inbox. */
  receive(msg) {
    if (msg.type === "mask") {
      this.inbox = this.inbox.then(() => this.apply(msg)).catch((err) => {
        console.warn("semdraw: could not apply a mask from the kernel", err);
        this.damaged(msg);
        this.onError(`A mask from the kernel could not be applied: ${err.message}`);
      });
    } else if (msg.type === "synced" && (!msg.view || msg.view === this.viewId)) {
      // After the sync's masks, which are ahead of it in the inbox.
      this.inbox = this.inbox.then(() => {
        clearTimeout(this.syncTimer);
        this.writtenDuringSync = null;
        if (!this.syncDamaged) {
          this.syncing = false;
          return;
        }
        this.syncing = true; // also when the timeout had let painting start early
        this.syncProblem = "The kernel's masks arrived damaged, so painting stays off here rather than paint over " +
          "masks this view does not have: run the cell again (or reload the page) to load them.";
        this.onError(this.syncProblem);
      });
    }
    return this.inbox;
  }

  /** A kernel mask (its content, possibly unparsed) that could not be used: part of this view's sync, it
   * keeps painting off after the sync. */
  damaged(content) {
    const ours = content?.origin === "sync" && (typeof content.view !== "string" || content.view === this.viewId);
    if (ours && this.writtenDuringSync) this.syncDamaged = true; // a sync is on its way
  }

  async apply(msg) {
    if (msg.origin === "peer" && msg.view === this.viewId) return;
    if (msg.origin === "sync" && msg.view && msg.view !== this.viewId) return;
    const bytes = await maskBytes(msg);
    // The canvas may have shrunk since the message was checked against its size.
    if (this.closed || msg.x + msg.w > this.width || msg.y + msg.h > this.height) return;
    const rect = { x: msg.x, y: msg.y, w: msg.w, h: msg.h };
    const mask = this.mask(msg.layer);
    if (msg.origin === "python") this.recordPythonEdit(msg, rect, mask, bytes);
    const newer = msg.origin === "sync" && this.writtenDuringSync
      ? this.writtenDuringSync.filter((w) => w.layer === msg.layer).map((w) => intersect(w.rect, rect)).filter(Boolean)
      : [];
    const kept = newer.map((r) => [r, extract(mask, this.width, r)]);
    put(mask, this.width, rect, bytes);
    for (const [r, local] of kept) put(mask, this.width, r, local);
    this.onChange(rect);
  }

  /** One undo step per set_mask from Python, also when a large mask arrives in several bands. */
  recordPythonEdit(msg, rect, mask, bytes) {
    const last = this.history.last;
    if (msg.edit === null || last?.edit !== msg.edit || last.layer !== msg.layer) {
      this.history.push({ layer: msg.layer, rect, before: extract(mask, this.width, rect), after: bytes.slice(), edit: msg.edit });
    } else {
      const whole = union(last.rect, rect);
      const before = mask.slice();
      put(before, this.width, last.rect, last.before);
      const after = mask.slice();
      put(after, this.width, rect, bytes);
      this.history.replaceLast({
        layer: msg.layer, rect: whole, before: extract(before, this.width, whole), after: extract(after, this.width, whole), edit: msg.edit,
      });
    }
    this.onHistoryChange();
  }

  /** Nothing more is applied; the sync timer stops. */
  dispose() {
    this.closed = true;
    clearTimeout(this.syncTimer);
  }
}
