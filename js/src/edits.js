// The edits made with buttons and keys (clear, fill, delete a layer) and undo / redo of every undo step:
// strokes, these edits, Python's set_mask, layer deletions. An undone or redone mask edit is a local
// write, so it reaches the kernel like a stroke does.

import { extract, nonZeroBounds } from "./rects.js";

export class Edits {
  /**
   * masks: the MaskSync. layers: the LayerList. history: the undo steps. busy(): true while a stroke is
   * drawn (nothing here runs then: it would race with the stroke). onHistoryChange(): undo / redo changed.
   */
  constructor({ masks, layers, history, busy, onHistoryChange }) {
    Object.assign(this, { masks, layers, history, busy, onHistoryChange });
  }

  /** Records a step that is already applied (a finished stroke). */
  record(entry) {
    this.history.push(entry);
    this.onHistoryChange();
  }

  /** Writes `after` into a rect of a layer, as one undo step. */
  edit(layer, rect, after) {
    const before = extract(this.masks.get(layer), this.masks.width, rect);
    this.history.push({ layer, rect, before, after });
    this.masks.write(layer, rect, after);
    this.onHistoryChange();
  }

  clearLayer() {
    const layer = this.layers.activeId();
    if (!layer || this.busy()) return;
    const rect = nonZeroBounds(this.masks.get(layer), this.masks.width, this.masks.height);
    if (rect) this.edit(layer, rect, new Uint8Array(rect.w * rect.h));
  }

  fillLayer() {
    const layer = this.layers.activeId();
    if (!layer || this.busy()) return;
    const mask = this.masks.get(layer);
    let full = true;
    for (let i = 0; i < mask.length && full; i++) full = mask[i] === 255;
    if (full) return;
    const { width, height } = this.masks;
    this.edit(layer, { x: 0, y: 0, w: width, h: height }, new Uint8Array(width * height).fill(255));
  }

  deleteLayer(id) {
    if (this.busy()) return;
    this.layers.delete(id);
    this.onHistoryChange();
  }

  undo() {
    if (this.busy()) return;
    let e = this.history.undo();
    while (e?.kind === "layer" && !this.layers.restore(e)) {
      this.history.discardUndone(); // that layer is back already: go on to the edit before
      e = this.history.undo();
    }
    if (e && e.kind !== "layer") this.masks.write(e.layer, e.rect, e.before);
    this.onHistoryChange();
  }

  redo() {
    if (this.busy()) return;
    const e = this.history.redo();
    if (e?.kind === "layer") this.layers.drop(e.layer);
    else if (e) this.masks.write(e.layer, e.rect, e.after);
    this.onHistoryChange();
  }
}
