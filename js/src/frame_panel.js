// The generated image: play / step / render buttons, the frame (shown once decoded, then acknowledged,
// since the ack is what frees the kernel's in-flight window) and the stats line. The stats come with
// each frame message (its `stats` field), the only channel they travel on.

import { actionButton, h } from "./dom.js";
import { IMAGE_MIME } from "./protocol.js";

const REGION_MODES = { exact: "exact regions", attention: "fast regions" };

/** The stats line of a frame's stats: fps, how its regions were made, stroke-to-frame latency, frame time
 * and its breakdown. */
export function statsLine(stats) {
  const s = stats ?? {};
  const parts = [];
  const num = (v) => typeof v === "number" && Number.isFinite(v);
  if (num(s.fps)) parts.push(`${s.fps.toFixed(1)} fps`);
  if (Object.hasOwn(REGION_MODES, s.region_mode)) parts.push(REGION_MODES[s.region_mode]);
  if (num(s.latency_ms)) parts.push(`latency ${Math.round(s.latency_ms)} ms`);
  if (num(s.frame_ms)) parts.push(`frame ${s.frame_ms.toFixed(1)} ms`);
  if (s.breakdown && typeof s.breakdown === "object") {
    const items = Object.entries(s.breakdown).filter(([, v]) => num(v)).map(([k, v]) => `${k} ${v.toFixed(1)}`);
    if (items.length) parts.push(`(${items.join(", ")} ms)`);
  }
  return parts.join(" · ");
}

export class FramePanel {
  /** root: the widget (marked once a frame shows). send(content): a message to the kernel. say(text): a
   * problem, for the status line. */
  constructor({ d, root, send, say }) {
    this.d = d;
    this.root = root;
    this.send = send;
    this.say = say;
    this.token = 0; // the newest frame's; an older one still decoding is stale
    this.url = null; // the object URL of the frame on show
    this.frame = h("img", { class: "sd-frame", "data-testid": "semdraw-frame", alt: "generated image" });
    this.box = h("div", { class: "sd-frame-box" }, this.frame);
    this.playBtn = actionButton("play", "▶ Play", "Start / pause generation");
    this.stats = h("div", { class: "sd-stats", "data-testid": "semdraw-stats" });
    this.el = h("div", { class: "sd-gen" },
      h("div", { class: "sd-gen-controls" }, this.playBtn, actionButton("step", "Step", "Generate one frame"),
        actionButton("render", "Render", "Generate until the image settles, without streaming")),
      this.box, this.stats);
    d.add(() => { if (this.url) URL.revokeObjectURL(this.url); });
  }

  showRunning(running) {
    this.playBtn.textContent = running ? "❚❚ Pause" : "▶ Play";
    this.playBtn.setAttribute("aria-pressed", String(running));
  }

  /** The frame goes under the masks (into `stage`, before `canvas`), or back into its own box. */
  place(overlay, stage, canvas) {
    if (overlay && this.frame.parentNode !== stage) stage.insertBefore(this.frame, canvas);
    if (!overlay && this.frame.parentNode !== this.box) this.box.append(this.frame);
  }

  /**
   * Shows a frame once it has decoded, then acknowledges it. Frames arrive in order, so a
   * frame is stale only when a newer one arrives while it is still decoding: it is dropped,
   * but still acknowledged, since the ack is what frees the kernel's in-flight window.
   * (Arrival order, not `seq`, decides, so a kernel that restarts its numbering still works.)
   */
  async show(msg) {
    const ack = () => this.acknowledge(msg.seq);
    const token = ++this.token;
    const url = URL.createObjectURL(new Blob([msg.data], { type: IMAGE_MIME[msg.format] }));
    try {
      const probe = new Image();
      probe.src = url;
      await probe.decode();
      if (this.d.disposed || token !== this.token) throw new Error("superseded");
      this.frame.src = url;
      await this.frame.decode();
      if (this.frame.src !== url) throw new Error("superseded");
    } catch (err) {
      URL.revokeObjectURL(url);
      if (this.frame.src === url) {
        if (this.url) this.frame.src = this.url;
        else this.frame.removeAttribute("src");
      }
      if (!this.d.disposed && token === this.token) {
        console.warn(`semdraw: frame ${msg.seq} could not be shown`, err);
        this.say(`Frame ${msg.seq} from the kernel could not be shown (${err?.message ?? err}).`);
      }
      return ack();
    }
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = url;
    this.frame.dataset.seq = String(msg.seq);
    this.root.classList.add("sd-has-frame");
    if (msg.stats) {
      this.stats.textContent = statsLine(msg.stats);
      this.stats.title = this.stats.textContent; // the whole line, where a narrow cell cuts it short
    }
    return ack();
  }

  /** Tells the kernel frame `seq` was dealt with (shown, superseded or damaged): it frees the window. */
  acknowledge(seq) {
    if (!this.d.disposed) this.send({ type: "ack", seq });
  }
}
