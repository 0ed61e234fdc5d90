"""Colab-proof transport, end to end: a front end that drops binary buffers both ways (as Colab's widget
manager has been reported to) still paints, sends masks to the kernel and shows live frames, over base64.

Colab cannot run here. Its widget manager is simulated in JupyterLab by patching the page's kernel connection
so that every comm message loses its buffers, out and in. The kernel's comm is patched to record, for each
message it sends, which thread sent it: Colab does not render messages sent from other threads, so every
frame must leave from the kernel's own thread."""

from __future__ import annotations

import re

import pytest

from browser_helpers import canvas_box, drag, frame_state, wait_until

pytestmark = pytest.mark.browser

SIZE = 128
FRAME_TIMEOUT = 90

# Every comm message loses its buffers in both directions, and the page counts what it dropped.
DROP_BUFFERS_JS = """() => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const dropped = window.__semdrawDropped = {toKernel: 0, toBrowser: 0};
  const send = kernel.sendShellMessage.bind(kernel);
  kernel.sendShellMessage = (msg, ...rest) => {
    if (msg.header.msg_type === 'comm_msg' && msg.buffers && msg.buffers.length) {
      dropped.toKernel += msg.buffers.length;
      msg.buffers = [];
    }
    return send(msg, ...rest);
  };
  const receive = kernel._handleCommMsg.bind(kernel);
  kernel._handleCommMsg = (msg) => {
    if (msg.buffers && msg.buffers.length) {
      dropped.toBrowser += msg.buffers.length;
      msg.buffers = [];
    }
    return receive(msg);
  };
}"""

CELLS = [
    "import threading\n"
    "from semdraw_widget import SemanticCanvas\n"
    f'canvas = SemanticCanvas(width={SIZE}, height={SIZE}, model="tiny")\n'
    'a = canvas.add_layer("a red apple")\n'
    "kernel_thread = threading.get_ident()\n"
    "sent = []  # (message type, sent from the kernel's thread, buffers) for each message the canvas sends\n"
    "_send = canvas.comm.send\n"
    "def _recording_send(data=None, metadata=None, buffers=None):\n"
    "    content = (data or {}).get('content') or {}\n"
    "    sent.append((content.get('type'), threading.get_ident() == kernel_thread, len(buffers or [])))\n"
    "    return _send(data=data, metadata=metadata, buffers=buffers)\n"
    "canvas.comm.send = _recording_send\n"
    "canvas",
]


def _status(page) -> str:
    return page.locator(".sd-status").inner_text()


def test_painting_and_live_frames_over_base64_when_the_front_end_drops_buffers(open_notebook):
    nb = open_notebook(CELLS, before_run=DROP_BUFFERS_JS)
    page, kernel = nb.page, nb.kernel

    # ---- the probe found both directions broken, and the view says so ---------------------------
    wait_until(lambda: kernel.eval("canvas.transport") == {"to_kernel": "base64", "to_browser": "base64"}, timeout=30,
               what="the probe to choose base64 both ways")
    note = page.get_by_test_id("semdraw-transport")
    wait_until(lambda: note.is_visible() and "base64" in note.inner_text(), timeout=10,
               what="the status line to show the base64 transport")
    dropped = page.evaluate("() => window.__semdrawDropped")
    assert dropped["toKernel"] >= 1 and dropped["toBrowser"] >= 1, f"the page's patch dropped nothing: {dropped}"

    # ---- play, paint: masks reach the kernel, frames advance -------------------------------------
    page.get_by_role("button", name=re.compile(r"\bPlay\b")).click()
    wait_until(lambda: frame_state(page)["seq"] >= 1, timeout=FRAME_TIMEOUT, what="the first frame over base64")
    box = canvas_box(page)
    drag(page, box, (0.2, 0.5), (0.8, 0.5), steps=10)
    wait_until(lambda: kernel.eval("float(canvas.get_mask(a)[64, 20:108].min())") > 0.5, timeout=30,
               what="the stroke to reach the kernel over base64")
    seq = frame_state(page)["seq"]
    wait_until(lambda: frame_state(page)["seq"] >= seq + 2, timeout=FRAME_TIMEOUT, what="frames to advance after the stroke")
    assert "damaged" not in _status(page)

    # ---- every frame left from the kernel's thread, as base64 in its content ---------------------
    frames = kernel.eval("[(ok, n) for kind, ok, n in sent if kind == 'frame']")
    assert len(frames) >= 3
    assert all(on_kernel_thread for on_kernel_thread, _ in frames), f"frames sent from another thread: {frames}"
    assert all(buffers == 0 for _, buffers in frames), "frames still carried buffers after the fallback"

    # ---- a front end that starts dropping buffers after the probe: said, and the stream goes on ---
    kernel.execute("canvas._transport._base64_to_browser = False")  # the kernel believes buffers work again
    acked = kernel.eval("canvas._runner.sender._acked")
    drag(page, box, (0.5, 0.2), (0.5, 0.8), steps=8)
    wait_until(lambda: "A frame from the kernel arrived damaged" in _status(page), timeout=FRAME_TIMEOUT,
               what="the status line to say a frame arrived damaged")
    # the view acknowledges damaged frames too, so the kernel's window keeps moving (no 10 s stalls)
    wait_until(lambda: kernel.eval("canvas._runner.sender._acked") >= acked + 4, timeout=FRAME_TIMEOUT,
               what="damaged frames to be acknowledged")
    kernel.execute("canvas._transport._base64_to_browser = True")  # frames from now on (the settled PNG too) arrive whole
    page.get_by_role("button", name=re.compile(r"\bPause\b")).click()
    wait_until(lambda: kernel.eval("canvas.running") is False, timeout=30, what="pause")
    # frames sent damaged before that may still be on their way: wait until the view has seen them all
    wait_until(lambda: kernel.eval("canvas._runner.sender._acked == canvas._runner.sender._seq"), timeout=30,
               what="every frame in flight to be acknowledged")
    # the view warned in the console too; those warnings were expected here. The view warns before it acknowledges,
    # but Playwright hands console events over only while it talks to the page: one round trip delivers them all.
    page.evaluate("() => true")
    nb.errors.fatal[:] = [e for e in nb.errors.fatal if "ignored a kernel message" not in e]
    nb.errors.check()
