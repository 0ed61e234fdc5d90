// Layer records as the `layers` trait holds them, and palette export/import (JSON).
// A palette is the prompts and settings of a scene without its masks.

export const LAYER_DEFAULTS = {
  name: "",
  prompt: "",
  negative_prompt: "",
  color: "#e53935",
  prompt_strength: 0.95,
  mask_strength: 1,
  mask_blur: 8,
  visible: true,
};

/** Distinct colours handed to new layers in turn (skipping ones already in use). */
export const LAYER_COLORS = [
  "#e53935", "#1e88e5", "#43a047", "#fdd835", "#8e24aa", "#fb8c00",
  "#00acc1", "#d81b60", "#6d4c41", "#7cb342", "#3949ab", "#546e7a",
];

const SETTINGS = ["name", "prompt", "negative_prompt", "color", "prompt_strength", "mask_strength", "mask_blur"];

export function newLayerId() {
  let id = "l";
  for (let i = 0; i < 8; i++) id += Math.floor(Math.random() * 36).toString(36);
  return id;
}

export function nextColor(layers) {
  const used = new Set(layers.map((l) => String(l.color).toLowerCase()));
  return LAYER_COLORS.find((c) => !used.has(c)) ?? LAYER_COLORS[layers.length % LAYER_COLORS.length];
}

/** A layer record with every field present (the trait may omit defaults). */
export function withDefaults(layer) {
  return { ...LAYER_DEFAULTS, ...layer };
}

export function newLayer(layers, fields = {}) {
  return withDefaults({
    id: newLayerId(),
    name: `Layer ${layers.length + 1}`,
    color: nextColor(layers),
    ...fields,
  });
}

export function exportPalette(layers, background) {
  return {
    semdraw_palette: 1,
    background: {
      prompt: background?.prompt ?? "",
      negative_prompt: background?.negative_prompt ?? "",
    },
    layers: layers.map((l) => {
      const full = withDefaults(l);
      return Object.fromEntries(SETTINGS.map((k) => [k, full[k]]));
    }),
  };
}

/** Layers per canvas, as the kernel allows (semdraw_widget/limits.py MAX_LAYERS). */
export const MAX_LAYERS = 16;

/** [min, max] of the numeric settings, as the kernel checks them (canvas_state.normalize_layer). */
export const NUMBER_RANGES = {
  prompt_strength: [0, 1],
  mask_strength: [0, 1],
  mask_blur: [0, 256],
};

const inRange = (key) => (v) => typeof v === "number" && v >= NUMBER_RANGES[key][0] && v <= NUMBER_RANGES[key][1];

const CHECKS = {
  name: (v) => typeof v === "string",
  prompt: (v) => typeof v === "string",
  negative_prompt: (v) => typeof v === "string",
  color: (v) => typeof v === "string" && /^#[0-9a-f]{6}$/i.test(v),
  prompt_strength: inRange("prompt_strength"),
  mask_strength: inRange("mask_strength"),
  mask_blur: inRange("mask_blur"),
};

/**
 * Applies a palette (parsed JSON) to the current layers: the i-th palette entry replaces
 * the settings of the i-th layer (keeping its id, so its mask stays), extra entries become
 * new layers with new ids, layers beyond the palette are kept. Throws with a readable
 * message on a malformed palette. Returns {layers, background}.
 */
export function importPalette(palette, layers, background) {
  if (!palette || typeof palette !== "object" || !Array.isArray(palette.layers)) {
    throw new Error("not a semdraw palette: expected a JSON object with a \"layers\" list");
  }
  const settings = palette.layers.map((entry, i) => {
    if (!entry || typeof entry !== "object") throw new Error(`palette layer ${i + 1} is not an object`);
    const picked = {};
    for (const key of SETTINGS) {
      if (!(key in entry)) continue;
      if (!CHECKS[key](entry[key])) throw new Error(`palette layer ${i + 1}: invalid ${key} ${JSON.stringify(entry[key])}`);
      picked[key] = entry[key];
    }
    return picked;
  });
  const out = layers.map((l, i) => (i < settings.length ? withDefaults({ ...l, ...settings[i] }) : l));
  for (const s of settings.slice(layers.length)) out.push(newLayer(out, s));
  if (out.length > MAX_LAYERS) {
    throw new Error(`this palette would make ${out.length} layers; a canvas holds at most ${MAX_LAYERS}`);
  }
  const bg = palette.background && typeof palette.background === "object" ? palette.background : {};
  return {
    layers: out,
    background: {
      ...background,
      prompt: typeof bg.prompt === "string" ? bg.prompt : background?.prompt ?? "",
      negative_prompt: typeof bg.negative_prompt === "string" ? bg.negative_prompt : background?.negative_prompt ?? "",
    },
  };
}
