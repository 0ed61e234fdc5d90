// Files in and out of the widget: the palette (prompts and settings, no masks) as a JSON download or
// upload, and the background image upload, which goes to the kernel and is shown here at once.

import { h } from "./dom.js";
import { exportPalette, importPalette } from "./palette.js";
import { readTrait, writeTraits } from "./traits.js";

const MAX_BACKGROUND_BYTES = 20 * 1024 * 1024;
// The server's websocket cap is 10 MB, and base64 (where a front end drops buffers) adds a third.
const REENCODE_BACKGROUND_BYTES = 6 * 1024 * 1024;
const UPLOAD_FORMATS = { "image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp" };

export class ImportExport {
  /**
   * send(content, buffers): a message to the kernel. root: where the download link is clicked. layers: the LayerList. masks: the MaskSync (the canvas
   * size). background: the BackgroundImage. say(text, error): the status line.
   */
  constructor({ d, model, send, root, layers, masks, background, say }) {
    Object.assign(this, { d, model, send, root, layers, masks, background, say });
    this.exportUrls = new Set();
    d.add(() => { for (const url of this.exportUrls) URL.revokeObjectURL(url); });
  }

  /** A file input of the widget changed (data-role "palette-file" or "bg-file"): reads the file chosen. */
  take(input) {
    const file = input.files?.[0];
    input.value = "";
    if (!file) return;
    const use = input.dataset.role === "bg-file" ? this.loadBackground(file) : this.importPalette(file);
    use.catch((err) => this.say(String(err.message ?? err), true));
  }

  exportPalette() {
    const json = JSON.stringify(exportPalette(this.layers.all(), readTrait(this.model, "background", {})), null, 2);
    const url = URL.createObjectURL(new Blob([json], { type: "application/json" }));
    const a = h("a", { href: url, download: "semdraw-palette.json" });
    this.root.append(a);
    a.click();
    a.remove();
    this.exportUrls.add(url); // revoked when the download has had time to start, or with the view
    this.d.later(() => {
      URL.revokeObjectURL(url);
      this.exportUrls.delete(url);
    }, 1000);
  }

  async importPalette(file) {
    let parsed;
    try {
      parsed = JSON.parse(await file.text());
    } catch {
      throw new Error(`${file.name} is not valid JSON; export a palette from this widget to see the format`);
    }
    const { layers, background } = importPalette(parsed, this.layers.all(), readTrait(this.model, "background", {}));
    for (const l of layers) this.masks.mask(l.id);
    this.layers.set(layers);
    writeTraits(this.model, { background });
    if (!this.layers.activeId() && layers.length) writeTraits(this.model, { active_layer: layers[layers.length - 1].id });
    this.say(`Imported ${parsed.layers.length} layer settings from ${file.name}.`);
  }

  async loadBackground(file) {
    const mb = (n) => (n / 1024 / 1024).toFixed(1);
    let format = UPLOAD_FORMATS[file.type];
    if (!format) throw new Error(`${file.name}: background images must be PNG, JPEG or WebP (got ${file.type || "unknown type"})`);
    if (file.size > MAX_BACKGROUND_BYTES) {
      throw new Error(`${file.name} is ${mb(file.size)} MB; the limit is 20 MB. Downscale it to about ${this.masks.width}×${this.masks.height} first.`);
    }
    const bitmap = await createImageBitmap(file);
    let blob = file;
    if (file.size > REENCODE_BACKGROUND_BYTES) {
      // Too big for one websocket message: send it at canvas size, which is all the kernel uses.
      const { width, height } = this.masks;
      const c = h("canvas", { width, height });
      c.getContext("2d").drawImage(bitmap, 0, 0, width, height);
      blob = await new Promise((resolve) => c.toBlob(resolve, "image/jpeg", 0.92));
      format = "jpeg";
    }
    const bytes = await blob.arrayBuffer();
    if (this.d.disposed) return bitmap.close();
    this.send({ type: "background_image", format }, [bytes]);
    this.background.show(bitmap);
    this.say(`Background image ${file.name} loaded.`);
    return undefined;
  }

  clearBackground() {
    this.send({ type: "background_image", clear: true });
    this.background.show(null);
  }
}
