// The toolbar (tools, brush size, clear / fill, undo / redo, overlay opacity, where the image shows,
// fast regions, seed, palette export / import, the shortcuts help) and the keyboard: the widget's shortcuts, and
// keeping JupyterLab's single-key commands away while someone paints. Clicks on its buttons reach the
// view through their data-action, changes of its fields through their data-setting.

import { actionButton, h, isTyping } from "./dom.js";
import { setField } from "./layers_panel.js";

export const MAX_BRUSH = 256;
export const clampBrush = (size) => Math.max(1, Math.min(MAX_BRUSH, size));

const SHORTCUTS = [
  ["B", "brush"], ["E", "eraser"], ["[ / ]", "brush size down / up"],
  ["Ctrl/⌘+Z", "undo"], ["Ctrl/⌘+Shift+Z, Ctrl+Y", "redo"], ["1–9", "select layer n (1 = bottom row)"],
  ["pen", "pressure scales the brush"],
];
export const VIEWS = ["side", "below", "overlay"];

// JupyterLab (Lumino) leaves keys alone inside an element with these, so B, E, Z or a notebook's
// single-key commands (A, D D, X, ...) never edit the notebook while someone paints.
const SUPPRESS_SHORTCUTS = ["data-lm-suppress-shortcuts", "data-p-suppress-shortcuts"];
// The JupyterLab keys people reach for while painting: run the cell, save, the command palette. Other
// combinations stay with the widget or its text fields (Ctrl+Z there is the field's undo, not the notebook's).
const forJupyter = (e) => {
  const accel = e.ctrlKey || e.metaKey;
  return (e.key === "Enter" && (accel || e.shiftKey || e.altKey)) ||
    (accel && !e.altKey && (e.key === "s" || e.key === "S")) ||
    (accel && e.shiftKey && (e.key === "c" || e.key === "C"));
};

export class Toolbar {
  /** maskCanvas: its opacity follows the opacity slider, live while the slider moves. */
  constructor({ d, maskCanvas }) {
    this.maskCanvas = maskCanvas;
    this.brushBtn = actionButton("tool-brush", "Brush", "Brush (B)");
    this.eraserBtn = actionButton("tool-eraser", "Eraser", "Eraser (E)");
    this.sizeInput = h("input", { type: "range", min: "1", max: String(MAX_BRUSH), step: "1", "data-setting": "brush_size", title: "Brush size in canvas pixels ([ / ])" });
    this.sizeLabel = h("span", { class: "sd-value" });
    this.undoBtn = actionButton("undo", "↶", "Undo (Ctrl/⌘+Z)", { "aria-label": "Undo" });
    this.redoBtn = actionButton("redo", "↷", "Redo (Ctrl/⌘+Shift+Z)", { "aria-label": "Redo" });
    this.opacityInput = h("input", { type: "range", min: "0", max: "1", step: "0.05", "data-setting": "overlay_opacity", title: "Mask overlay opacity" });
    this.viewSelect = h("select", { "data-setting": "view", title: "Where the generated image is shown" },
      h("option", { value: "side", text: "image beside" }),
      h("option", { value: "below", text: "image below" }),
      h("option", { value: "overlay", text: "image under masks" }));
    this.fastRegions = h("input", { type: "checkbox", "data-setting": "region_mode", "data-testid": "semdraw-fast-regions" });
    this.seedInput = h("input", { type: "number", step: "1", "data-setting": "seed", class: "sd-seed", title: "Seed" });
    this.paletteFile = h("input", { type: "file", accept: "application/json,.json", "data-role": "palette-file", hidden: true });
    const help = h("span", { class: "sd-help", tabindex: "0", "aria-label": "Keyboard shortcuts" }, "?",
      h("div", { class: "sd-help-pop", role: "tooltip" },
        h("strong", { text: "Shortcuts (click the widget first)" }),
        h("table", {}, SHORTCUTS.map(([k, what]) => h("tr", {}, h("td", { text: k }), h("td", { text: what }))))));
    this.el = h("div", { class: "sd-toolbar" },
      h("span", { class: "sd-group" }, this.brushBtn, this.eraserBtn),
      h("label", { class: "sd-group" }, "size", this.sizeInput, this.sizeLabel),
      h("span", { class: "sd-group" },
        actionButton("clear", "Clear", "Clear the active layer's mask"),
        actionButton("fill", "Fill", "Fill the active layer's mask"),
        this.undoBtn, this.redoBtn),
      h("label", { class: "sd-group" }, "opacity", this.opacityInput),
      h("label", { class: "sd-group sd-gen-only" }, this.viewSelect),
      h("label", {
        class: "sd-group sd-gen-only",
        title: "Fast regions: the model runs once for all layers, each prompt kept to its region inside attention, " +
          "so more layers cost no more (SD 1.5 / SDXL). Off: once per layer, blended (exact).",
      }, this.fastRegions, "fast regions"),
      h("label", { class: "sd-group" }, "seed", this.seedInput),
      h("span", { class: "sd-group" },
        actionButton("palette-export", "Export", "Download the prompts and settings (no masks) as JSON"),
        actionButton("palette-import", "Import", "Load prompts and settings from a palette JSON (masks stay)"),
        this.paletteFile),
      help);
    // Live previews while a slider moves; the trait is written on "change".
    d.listen(this.el, "input", (e) => {
      if (e.target === this.opacityInput) this.maskCanvas.style.opacity = e.target.value;
      if (e.target === this.sizeInput) this.sizeLabel.textContent = `${e.target.value}px`;
    });
  }

  showTool(tool, size) {
    this.brushBtn.setAttribute("aria-pressed", String(tool !== "eraser"));
    this.eraserBtn.setAttribute("aria-pressed", String(tool === "eraser"));
    setField(this.sizeInput, size);
    this.sizeLabel.textContent = `${size}px`;
  }

  showSettings(opacity, seed) {
    setField(this.opacityInput, opacity);
    this.maskCanvas.style.opacity = String(opacity);
    setField(this.seedInput, seed);
  }

  showView(view) {
    setField(this.viewSelect, view);
  }

  showRegionMode(mode) {
    setField(this.fastRegions, mode === "attention");
  }

  showUndo(canUndo, canRedo) {
    this.undoBtn.disabled = !canUndo;
    this.redoBtn.disabled = !canRedo;
  }
}

export class KeyboardShortcuts {
  /**
   * root: the widget, whose keys these are. commands: undo(), redo(), setTool(name), brushSize(),
   * setBrushSize(px), selectLayer(index).
   */
  constructor({ d, root, commands }) {
    this.d = d;
    this.root = root;
    this.commands = commands;
    this.suppressJupyter(true);
    // Every key starts suppressed for JupyterLab (on its way down); onKey may lift that on its way up.
    d.listen(root, "keydown", () => this.suppressJupyter(true), { capture: true });
    d.listen(root, "keydown", (e) => this.onKey(e));
  }

  onKey(e) {
    if (forJupyter(e)) {
      // JupyterLab 4 reads the attributes when the key reaches the document, after this handler. The next
      // key that comes here suppresses them again before anything reads them; the timer covers the time between.
      this.suppressJupyter(false);
      this.d.later(() => this.suppressJupyter(true), 0);
    } else if (!isTyping(e.target) && this.run(e)) {
      // text fields keep their own keys (typing, their own undo)
      e.preventDefault();
      e.stopPropagation();
    }
  }

  /** The widget's own shortcuts; true when the key was one. */
  run(e) {
    const { commands } = this;
    const key = e.key;
    const mod = e.ctrlKey || e.metaKey;
    if (mod && !e.altKey && (key === "z" || key === "Z")) {
      if (e.shiftKey) commands.redo();
      else commands.undo();
    } else if (mod && !e.altKey && (key === "y" || key === "Y")) commands.redo();
    else if (mod || e.altKey) return false;
    else if (key === "b" || key === "B") commands.setTool("brush");
    else if (key === "e" || key === "E") commands.setTool("eraser");
    else if (key === "[" || key === "]") {
      const size = commands.brushSize();
      const step = Math.max(1, Math.round(size * 0.15));
      commands.setBrushSize(clampBrush(size + (key === "]" ? step : -step)));
    } else if (/^[1-9]$/.test(key)) commands.selectLayer(Number(key) - 1);
    else return false;
    return true;
  }

  suppressJupyter(on) {
    for (const name of SUPPRESS_SHORTCUTS) {
      if (on) this.root.setAttribute(name, "true");
      else this.root.removeAttribute(name);
    }
  }
}
