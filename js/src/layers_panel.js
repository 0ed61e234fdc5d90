// The layers palette: a background row and one row per layer, listed bottom→top (row n is
// layer n, the number key that selects it). Rows are kept and updated in place, and a
// field that has focus is never overwritten, so a model echo does not disturb typing.
// Events are handled by the view through data-action / data-field attributes.

import { h, isTextEntry } from "./dom.js";
import { NUMBER_RANGES } from "./palette.js";

const NUMBER_FIELDS = {
  prompt_strength: { label: "prompt", title: "Prompt strength: how much of this layer's prompt (vs the background's) it uses", step: 0.05 },
  mask_strength: { label: "mask", title: "Mask strength: scales the mask's coverage", step: 0.05 },
  mask_blur: { label: "blur", title: "Mask blur in pixels: softens the region's edge", step: 1 },
};

/** Sets a field from the model, unless the person is typing in it. */
export function setField(input, value) {
  if (isTextEntry(input) && input.matches(":focus")) return;
  if (input.type === "checkbox") input.checked = Boolean(value);
  else if (input.value !== String(value ?? "")) input.value = String(value ?? "");
}

let panels = 0;

export class LayersPanel {
  constructor() {
    this.rows = new Map();
    // The words of a model that knows only some (the demo model), offered in every prompt field.
    this.words = h("datalist", { id: `sd-words-${++panels}-${Math.random().toString(36).slice(2, 8)}` });
    this.bgFields = {
      prompt: h("input", { class: "sd-prompt", type: "text", "data-bg": "prompt", placeholder: "background prompt", title: "Background prompt", "data-title": "Background prompt" }),
      negative_prompt: h("input", { class: "sd-neg", type: "text", "data-bg": "negative_prompt", placeholder: "background negative prompt", title: "Background negative prompt" }),
    };
    this.bgFile = h("input", { type: "file", accept: "image/png,image/jpeg,image/webp", "data-role": "bg-file", hidden: true });
    this.bgClear = h("button", { type: "button", "data-action": "bg-clear", title: "Remove the background image", "aria-label": "Remove the background image", text: "✕ image" });
    this.bgRow = h("div", { class: "sd-layer sd-bg-row" },
      h("div", { class: "sd-layer-main" },
        h("span", { class: "sd-index", text: "bg", title: "Background" }),
        this.bgFields.prompt,
        h("button", { type: "button", "data-action": "bg-load", title: "Load a background image (PNG, JPEG or WebP, ≤ 20 MB)", text: "image…" }),
        this.bgClear, this.bgFile),
      h("div", { class: "sd-layer-more" }, this.bgFields.negative_prompt));
    this.list = h("div", { class: "sd-layer-list" });
    this.el = h("div", { class: "sd-layers" },
      this.words,
      this.bgRow,
      this.list,
      h("button", { type: "button", class: "sd-add", "data-action": "layer-add", title: "Add a layer on top", text: "+ layer" }));
  }

  /** Suggest `words` (none: any words) in the prompt fields, and say so in their tooltip. */
  setVocabulary(words) {
    this.words.replaceChildren(...words.map((word) => h("option", { value: word })));
    this.vocabularyTitle = words.length ? `Prompt. This model knows only some words: ${words.join(", ")}` : "";
    for (const input of this.promptInputs()) this.offerWords(input);
  }

  offerWords(input) {
    if (this.words.children.length) input.setAttribute("list", this.words.id);
    else input.removeAttribute("list");
    input.title = this.vocabularyTitle || input.dataset.title;
  }

  promptInputs() {
    return [this.bgFields.prompt, ...[...this.rows.values()].map((row) => row.fields.prompt)];
  }

  update(layers, activeId, background, hasImage) {
    setField(this.bgFields.prompt, background?.prompt ?? "");
    setField(this.bgFields.negative_prompt, background?.negative_prompt ?? "");
    this.bgClear.disabled = !hasImage;

    const ids = new Set(layers.map((l) => l.id));
    for (const [id, row] of this.rows) {
      if (!ids.has(id)) {
        row.el.remove();
        this.rows.delete(id);
      }
    }
    layers.forEach((layer, i) => {
      let row = this.rows.get(layer.id);
      if (!row) {
        row = buildRow(layer.id);
        this.rows.set(layer.id, row);
        this.offerWords(row.fields.prompt);
      }
      if (this.list.children[i] !== row.el) this.list.insertBefore(row.el, this.list.children[i] ?? null);
      row.index.textContent = String(i + 1);
      row.el.classList.toggle("sd-active", layer.id === activeId);
      row.el.classList.toggle("sd-hidden-layer", !layer.visible);
      row.el.style.setProperty("--sd-layer-color", layer.color);
      for (const [key, input] of Object.entries(row.fields)) setField(input, layer[key]);
      row.up.disabled = i === 0;
      row.down.disabled = i === layers.length - 1;
      // The buttons show only a glyph; a screen reader says which layer they act on.
      const label = layer.name || layer.prompt || String(i + 1);
      row.up.setAttribute("aria-label", `Move layer ${label} up`);
      row.down.setAttribute("aria-label", `Move layer ${label} down`);
      row.remove.setAttribute("aria-label", `Delete layer ${label}`);
    });
  }
}

function buildRow(id) {
  const fields = {
    color: h("input", { type: "color", "data-field": "color", title: "Layer colour" }),
    name: h("input", { class: "sd-name", type: "text", "data-field": "name", placeholder: "name", title: "Layer name" }),
    prompt: h("input", { class: "sd-prompt", type: "text", "data-field": "prompt", placeholder: "prompt", title: "Prompt", "data-title": "Prompt" }),
    negative_prompt: h("input", { class: "sd-neg", type: "text", "data-field": "negative_prompt", placeholder: "negative prompt", title: "Negative prompt" }),
  };
  const numbers = Object.entries(NUMBER_FIELDS).map(([key, spec]) => {
    const [min, max] = NUMBER_RANGES[key];
    fields[key] = h("input", { type: "number", "data-field": key, min: String(min), max: String(max), step: String(spec.step), title: spec.title });
    return h("label", { class: "sd-num", title: spec.title }, spec.label, fields[key]);
  });
  const index = h("span", { class: "sd-index" });
  fields.visible = h("input", { type: "checkbox", "data-field": "visible" });
  const visible = h("label", { class: "sd-visible", title: "Show / hide this layer" }, fields.visible, "show");
  const up = h("button", { type: "button", "data-action": "layer-up", title: "Move up the list (one step lower in the stack)", text: "▲" });
  const down = h("button", { type: "button", "data-action": "layer-down", title: "Move down the list (one step higher in the stack)", text: "▼" });
  const remove = h("button", { type: "button", "data-action": "layer-delete", title: "Delete this layer and its mask", text: "✕" });
  const el = h("div", { class: "sd-layer", "data-layer": id },
    h("div", { class: "sd-layer-main" }, index, fields.color, fields.name, fields.prompt, visible, up, down, remove),
    h("div", { class: "sd-layer-more" }, fields.negative_prompt, ...numbers));
  return { el, index, fields, up, down, remove };
}
