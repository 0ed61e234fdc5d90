"""Issue 4 end to end: the tiny model streams frames into the cell. Press play, paint, see `data-seq`
advance and the displayed image change; the fast-regions toggle switches the kernel's region mode while frames
go on; pause stops the frames and the kernel's `running`."""

from __future__ import annotations

import base64
import re
import time

import numpy as np
import pytest

from browser_helpers import CellError, canvas_box, drag, frame_pixels, frame_state, wait_until

pytestmark = pytest.mark.browser

SIZE = 128
CELLS = [
    "from semdraw_widget import SemanticCanvas\n"
    f'canvas = SemanticCanvas(width={SIZE}, height={SIZE}, model="tiny")\n'
    'a = canvas.add_layer("a red apple")\n'
    "canvas",
]
# A frame on CPU takes ~0.5 s (more while the browser competes for the 2 cores); convergence takes a few.
FRAME_TIMEOUT = 90


def _not_available(exc: CellError) -> bool:
    """The live-generation stack is not in this checkout yet (engine / streaming modules missing)."""
    return exc.ename in ("ImportError", "ModuleNotFoundError") and any(
        name in exc.evalue for name in ("semdraw_widget.engine", "semdraw_widget.streaming", "StreamMultiDiffusion", "load_pipeline")
    )


def _kernel_frame(kernel) -> np.ndarray | None:
    data = kernel.eval(
        "None if canvas.frame is None else __import__('base64').b64encode("
        "__import__('numpy').asarray(canvas.frame.convert('RGB'), dtype='uint8').tobytes()).decode()"
    )
    return None if data is None else np.frombuffer(base64.b64decode(data), np.uint8).reshape(SIZE, SIZE, 3)


def _shown(page) -> tuple[int, np.ndarray]:
    f = frame_pixels(page)
    assert (f["width"], f["height"]) == (SIZE, SIZE), f"frame shown at {f['width']}x{f['height']}"
    return f["seq"], np.array(f["data"], np.uint8).reshape(SIZE, SIZE, 4)[..., :3]


def _wait_still(page, kernel, what: str, not_equal_to: np.ndarray | None = None):
    """Wait until the stream has settled: the browser shows, losslessly, exactly the kernel's latest
    frame (JPEG frames never match exactly; the still frame is a PNG). Returns (seq, pixels, kernel frame)."""

    def settled():
        seq, shown = _shown(page)
        kernel_frame = _kernel_frame(kernel)
        if kernel_frame is None or np.abs(shown.astype(int) - kernel_frame).max() > 1:
            return None
        if not_equal_to is not None and np.array_equal(kernel_frame, not_equal_to):
            return None
        return seq, shown, kernel_frame

    return wait_until(settled, timeout=FRAME_TIMEOUT, interval=0.3, what=what)


def _max_seq_during(page, seconds: float) -> list[int]:
    """data-seq sampled over an observation window (the thing under test is 'nothing more arrives')."""
    seen, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        seen.append(frame_state(page)["seq"])
        time.sleep(0.1)
    return seen


def _mask_sum(kernel) -> float:
    return kernel.eval("float(canvas.get_mask(a).sum())")


def test_play_paint_pause(open_notebook):
    try:
        nb = open_notebook(CELLS)
    except CellError as exc:
        if _not_available(exc):
            pytest.skip(f"live generation is not in this checkout yet: SemanticCanvas(model='tiny') raised {exc.ename}: {exc.evalue}")
        raise
    page, kernel = nb.page, nb.kernel
    info = kernel.eval("dict(has_pipeline=canvas.has_pipeline, status=canvas.status, notice=canvas.notice, "
                       "module=__import__('semdraw_widget').__file__, runner=repr(canvas._runner))")
    assert info["has_pipeline"] is True, f"the canvas has no pipeline: {info}"
    # JupyterLab carries binary buffers both ways: the probe keeps them, and the status line shows no note
    wait_until(lambda: kernel.eval("canvas.transport") == {"to_kernel": "binary", "to_browser": "binary"}, timeout=30,
               what="the transport probe to keep binary buffers")
    assert not page.get_by_test_id("semdraw-transport").is_visible()
    assert kernel.eval("canvas.running") is False
    assert frame_state(page)["seq"] == -1, "a frame was shown before play was pressed"

    # ---- play: frames arrive and the stream settles on a still (lossless) frame ------------------
    page.get_by_role("button", name=re.compile(r"\bPlay\b")).click()
    wait_until(lambda: kernel.eval("canvas.running"), timeout=30, what="play to set canvas.running")
    wait_until(lambda: frame_state(page)["seq"] >= 1, timeout=FRAME_TIMEOUT, what="the first frame (data-seq >= 1)")
    frame = page.get_by_test_id("semdraw-frame")
    assert frame.is_visible(), "the frame element is not visible"
    seq0, shown0, kernel0 = _wait_still(page, kernel, "the stream to settle before painting")
    src0 = frame_state(page)["src"]
    assert src0, "the frame has no src"

    # ---- paint: new frames arrive, and the settled image is a different one ---------------------
    box = canvas_box(page)
    drag(page, box, (0.2, 0.5), (0.8, 0.5), steps=10)
    wait_until(lambda: _mask_sum(kernel) > 0, timeout=30, what="the stroke to reach the kernel")
    wait_until(lambda: frame_state(page)["seq"] >= seq0 + 2, timeout=FRAME_TIMEOUT,
               what=f"data-seq to advance past {seq0 + 1} after the stroke")
    seq1, shown1, kernel1 = _wait_still(page, kernel, "the stream to settle after the stroke", not_equal_to=kernel0)
    assert seq1 >= seq0 + 2
    assert frame_state(page)["src"] != src0, "data-seq advanced but the img src did not change"
    assert not np.array_equal(kernel1, kernel0), "the kernel's frame did not change after the stroke"
    changed = int((np.abs(shown1.astype(int) - shown0).max(axis=2) > 0).sum())
    assert changed > 0, "the displayed image is identical before and after the stroke"
    stats = kernel.eval("canvas.stats")
    assert isinstance(stats.get("latency_ms"), (int, float)) and stats["latency_ms"] > 0, f"no stroke latency in stats: {stats}"

    # ---- fast regions: the toggle reaches the kernel, frames go on in the attention mode -------------
    assert kernel.eval("canvas.region_mode") == "exact"
    page.get_by_test_id("semdraw-fast-regions").check()
    wait_until(lambda: kernel.eval("canvas.region_mode") == "attention", timeout=30, what="the toggle to set region_mode")
    wait_until(lambda: frame_state(page)["seq"] > seq1, timeout=FRAME_TIMEOUT, what="frames after switching to fast regions")
    wait_until(lambda: "fast regions" in page.get_by_test_id("semdraw-stats").text_content(), timeout=FRAME_TIMEOUT,
               what="the stats line to say fast regions")
    seq1 = _wait_still(page, kernel, "the stream to settle in the attention mode")[0]

    # ---- pause while frames are being made: data-seq stops (<= 2 in flight), running is False ---
    drag(page, box, (0.5, 0.2), (0.5, 0.8), steps=10)
    wait_until(lambda: frame_state(page)["seq"] > seq1, timeout=FRAME_TIMEOUT, what="frames after the second stroke")
    page.get_by_role("button", name=re.compile(r"\bPause\b")).click()
    seq_pause = frame_state(page)["seq"]
    wait_until(lambda: kernel.eval("canvas.running") is False, timeout=30, what="pause to clear canvas.running")
    wait_until(lambda: page.get_by_role("button", name=re.compile(r"\bPlay\b")).is_visible(), timeout=10,
               what="the button to read Play again")
    seen = _max_seq_during(page, 3.0)
    assert max(seen) <= seq_pause + 2, f"frames kept coming after pause at seq {seq_pause}: {seen}"

    # A stroke while paused reaches the kernel but makes no frames. First every frame made before the pause
    # must have been shown (a slow page may still be decoding the last one), so none counts as "after".
    queued = kernel.eval("canvas._runner.sender._seq")
    wait_until(lambda: frame_state(page)["seq"] == queued, timeout=30, what=f"the last frame before the pause ({queued})")
    settled = frame_state(page)["seq"]
    before = _mask_sum(kernel)
    drag(page, box, (0.1, 0.1), (0.3, 0.3), steps=6)
    wait_until(lambda: _mask_sum(kernel) > before, timeout=30, what="the paused stroke to reach the kernel")
    seen = _max_seq_during(page, 2.0)
    assert max(seen) == settled, f"a stroke while paused produced frames: {settled} -> {seen}"
    assert kernel.eval("canvas.running") is False

    # ---- Render: the paused stroke is generated until the image settles, without streaming ------
    page.get_by_role("button", name="Render", exact=True).click()
    wait_until(lambda: kernel.eval("canvas.status").startswith("rendered: the image has settled"), timeout=FRAME_TIMEOUT,
               what="Render to settle the image")
    wait_until(lambda: frame_state(page)["seq"] > settled, timeout=FRAME_TIMEOUT, what="the rendered frames to be shown")
    assert kernel.eval("canvas.running") is False

    status = kernel.eval("canvas.status")
    assert "error" not in status.lower() and "stopped" not in status.lower(), f"status reports a problem: {status!r}"

    # ---- the stats line stays one line of fixed height, also in a narrow cell ----------------------
    page.set_viewport_size({"width": 520, "height": 900})
    stats = page.get_by_test_id("semdraw-stats")
    assert "latency" in stats.get_attribute("title"), "the whole stats line is not in its title"
    lines = stats.evaluate("el => el.getBoundingClientRect().height / parseFloat(getComputedStyle(el).fontSize)")
    assert lines < 1.6, f"the stats line wraps ({lines:.1f} font sizes high)"
    nb.errors.check()
