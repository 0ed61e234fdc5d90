// The background image drawn under the masks: one the person loaded here, or the kernel's (a sync, a
// set_background_image from Python, another view's upload). The newest change wins, also over a slower
// decode of an older one.

import { IMAGE_MIME } from "./protocol.js";

export class BackgroundImage {
  /** canvas: the one it is drawn on (the canvas size). onChange(): it appeared or went away. say(text): a
   * problem, for the status line. */
  constructor({ d, canvas, onChange, say }) {
    this.d = d;
    this.say = say;
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.onChange = onChange;
    this.bitmap = null;
    this.version = 0; // bumped by every change, so a slow decode cannot undo a newer one
    d.add(() => this.bitmap?.close?.());
  }

  get shown() {
    return this.bitmap !== null;
  }

  /** Shows an ImageBitmap, or nothing (null). */
  show(bitmap) {
    this.version++;
    this.replace(bitmap);
  }

  /** Shows encoded image bytes from the kernel once they decode, unless something newer came first. */
  decode(bytes, format) {
    const version = ++this.version;
    createImageBitmap(new Blob([bytes], { type: IMAGE_MIME[format] }))
      .then((bitmap) => (this.d.disposed || version !== this.version ? bitmap.close() : this.replace(bitmap)))
      .catch((err) => {
        console.warn("semdraw: could not decode the background image", err);
        if (!this.d.disposed) this.say(`The background image from the kernel could not be shown (${err?.message ?? err}).`);
      });
  }

  replace(bitmap) {
    this.bitmap?.close?.();
    this.bitmap = bitmap;
    this.draw();
    this.onChange();
  }

  resize(width, height) {
    this.canvas.width = width;
    this.canvas.height = height;
    this.draw();
  }

  /** Draws it to fill the canvas. */
  draw() {
    const { width, height } = this.canvas;
    this.ctx.clearRect(0, 0, width, height);
    if (this.bitmap) this.ctx.drawImage(this.bitmap, 0, 0, width, height);
  }
}
