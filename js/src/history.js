// Undo/redo of edits. A mask edit is {layer, rect, before, after}: the bytes of one rectangle of one
// layer's mask before and after the edit. Applying `before` undoes it, applying `after` redoes it; the
// caller writes the bytes and tells the kernel. A layer deletion is {kind: "layer", layer, index,
// settings, mask, active}: undoing it puts the layer back where it was, with its mask.
// Memory is bounded: past `maxBytes` the oldest undo entries are dropped.

export const DEFAULT_HISTORY_BYTES = 64 * 1024 * 1024;

export class History {
  constructor(maxBytes = DEFAULT_HISTORY_BYTES) {
    this.maxBytes = maxBytes;
    this.undoStack = [];
    this.redoStack = [];
    this.bytes = 0;
  }

  get canUndo() {
    return this.undoStack.length > 0;
  }

  get canRedo() {
    return this.redoStack.length > 0;
  }

  /** Records a new edit; it invalidates everything that could have been redone. */
  push(entry) {
    for (const e of this.redoStack) this.bytes -= size(e);
    this.redoStack = [];
    this.undoStack.push(entry);
    this.bytes += size(entry);
    while (this.bytes > this.maxBytes && this.undoStack.length > 1) {
      this.bytes -= size(this.undoStack.shift());
    }
  }

  /** The newest undo entry, or null. */
  get last() {
    return this.undoStack[this.undoStack.length - 1] ?? null;
  }

  /** Replaces the newest undo entry: one edit that arrived in parts, grown by another part. */
  replaceLast(entry) {
    const old = this.undoStack.pop();
    if (old) this.bytes -= size(old);
    this.push(entry);
  }

  /** The entry to undo (apply its `before`), or null. */
  undo() {
    const entry = this.undoStack.pop();
    if (!entry) return null;
    this.redoStack.push(entry);
    return entry;
  }

  /** The entry to redo (apply its `after`), or null. */
  redo() {
    const entry = this.redoStack.pop();
    if (!entry) return null;
    this.undoStack.push(entry);
    return entry;
  }

  /** Drops the entry just undone, which could not be applied (redoing it would do something else). */
  discardUndone() {
    const entry = this.redoStack.pop();
    if (entry) this.bytes -= size(entry);
  }

  /** Drops every entry of a layer deleted elsewhere (by Python or another view). */
  forgetLayer(layer) {
    const keep = (e) => {
      if (e.layer !== layer) return true;
      this.bytes -= size(e);
      return false;
    };
    this.undoStack = this.undoStack.filter(keep);
    this.redoStack = this.redoStack.filter(keep);
  }

  clear() {
    this.undoStack = [];
    this.redoStack = [];
    this.bytes = 0;
  }
}

function size(entry) {
  return entry.kind === "layer" ? entry.mask.byteLength : entry.before.byteLength + entry.after.byteLength;
}
