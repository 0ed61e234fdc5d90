// The layers trait as this view edits it: add, delete (one undoable step, with the layer's mask), move,
// select, change a setting. A change of the list and the active layer it implies go to the kernel in one
// update, so the kernel never sees one without the other.

import { MAX_LAYERS, newLayer, withDefaults } from "./palette.js";
import { extract, nonZeroBounds } from "./rects.js";
import { readTrait, writeTraits } from "./traits.js";

export class LayerList {
  /** masks: the MaskSync. history: where a deletion becomes an undo step. */
  constructor({ model, masks, history }) {
    this.model = model;
    this.masks = masks;
    this.history = history;
    this.deletedHere = new Set(); // layers this view deleted (undoably), until the layer list drops them
  }

  /** The layers, bottom first, every field present. */
  all() {
    const list = readTrait(this.model, "layers", []);
    return Array.isArray(list) ? list.filter((l) => l && typeof l.id === "string").map(withDefaults) : [];
  }

  /** The active layer's id, or "" when it names no layer of the list. */
  activeId() {
    const id = readTrait(this.model, "active_layer", "");
    return this.masks.isListed(id) ? id : "";
  }

  /** After the layers trait changed: masks follow it. Returns the ids that left the list. */
  follow(layers) {
    const gone = this.masks.follow(new Set(layers.map((l) => l.id)));
    for (const id of gone) {
      // One deleted here keeps its undo history: undoing the deletion brings it back.
      if (!this.deletedHere.delete(id)) this.history.forgetLayer(id);
    }
    return gone;
  }

  /** The undo history was cleared: no deletion made here can be undone any more. */
  forgetDeletions() {
    this.deletedHere.clear();
  }

  /** The layers, and with them (one update) the active layer. */
  set(layers, active) {
    writeTraits(this.model, active === undefined ? { layers } : { layers, active_layer: active });
  }

  update(id, patch) {
    this.set(this.all().map((l) => (l.id === id ? { ...l, ...patch } : l)));
  }

  /** Adds a layer on top and makes it active; false (nothing added) when the canvas holds MAX_LAYERS. */
  add() {
    const layers = this.all();
    if (layers.length >= MAX_LAYERS) return false;
    const layer = newLayer(layers);
    this.masks.mask(layer.id);
    this.set([...layers, layer], layer.id);
    return true;
  }

  /** Deletes a layer and its mask, as one undoable edit. */
  delete(id) {
    const layers = this.all();
    const index = layers.findIndex((l) => l.id === id);
    if (index < 0) return;
    const active = readTrait(this.model, "active_layer", "") === id;
    this.history.push({ kind: "layer", layer: id, index, settings: layers[index], mask: this.masks.mask(id).slice(), active });
    this.drop(id);
  }

  /** Takes a layer out of the list (a deletion, or the redo of one). */
  drop(id) {
    const layers = this.all();
    const i = layers.findIndex((l) => l.id === id);
    if (i < 0) return;
    const rest = layers.filter((l) => l.id !== id);
    this.deletedHere.add(id);
    const wasActive = readTrait(this.model, "active_layer", "") === id;
    this.set(rest, wasActive ? rest[Math.min(i, rest.length - 1)]?.id ?? "" : undefined);
  }

  /**
   * Undoes a deletion: the layer goes back to its place with its settings, then its mask to the kernel.
   * False when the layer is back already (from Python or another view).
   */
  restore(entry) {
    const layers = this.all();
    if (layers.some((l) => l.id === entry.layer)) return false;
    layers.splice(Math.min(entry.index, layers.length), 0, entry.settings);
    this.set(layers, entry.active ? entry.layer : undefined);
    const { width, height } = this.masks;
    const rect = nonZeroBounds(entry.mask, width, height);
    if (rect) this.masks.write(entry.layer, rect, extract(entry.mask, width, rect));
    return true;
  }

  move(id, step) {
    const layers = this.all();
    const i = layers.findIndex((l) => l.id === id);
    const j = i + step;
    if (i < 0 || j < 0 || j >= layers.length) return;
    [layers[i], layers[j]] = [layers[j], layers[i]];
    this.set(layers);
  }

  /** Makes the n-th layer (0 = bottom row) the active one. */
  select(n) {
    const layer = this.all()[n];
    if (layer) writeTraits(this.model, { active_layer: layer.id });
  }
}
