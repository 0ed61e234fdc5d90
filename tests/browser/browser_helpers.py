"""Helpers for the browser end-to-end tests: bounded waiting and reading/driving the widget in a page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import waiting


# ---------------------------------------------------------------------------------------------
# waiting
# ---------------------------------------------------------------------------------------------
def wait_until(probe: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """`waiting.wait_until` for probes that race the page or kernel: their errors mean "not yet"."""
    return waiting.wait_until(probe, timeout, interval, what, retry_errors=True)


# ---------------------------------------------------------------------------------------------
# page helpers for the widget
# ---------------------------------------------------------------------------------------------
def canvas_box(page) -> dict:
    """The drawing surface's on-screen box, scrolled into view and steady (the same over two animation
    frames), so a drag lands where the test thinks it does."""
    surface = page.get_by_test_id("semdraw-canvas")
    surface.scroll_into_view_if_needed()

    def steady():
        first = surface.bounding_box()
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        second = surface.bounding_box()
        return second if first == second and second and second["width"] > 0 and second["height"] > 0 else None

    return wait_until(steady, timeout=15, what="the drawing surface to have a steady, non-empty box")


def drag(page, box: dict, start: tuple[float, float], end: tuple[float, float], steps: int = 12) -> None:
    """Press, move in `steps` intermediate moves, and release; points are fractions of the box."""
    x0, y0 = box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"]
    x1, y1 = box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=steps)
    page.mouse.up()


def to_canvas(box: dict, fx: float, fy: float, width: int, height: int) -> tuple[int, int]:
    """A point given as fractions of the on-screen box -> canvas pixel (col, row)."""
    px, py = box["x"] + fx * box["width"], box["y"] + fy * box["height"]
    return int((px - box["x"]) * width / box["width"]), int((py - box["y"]) * height / box["height"])


def canvas_pixel(page, x: int, y: int) -> list[int]:
    """RGBA of the drawing surface's own bitmap at canvas pixel (x, y)."""
    return page.get_by_test_id("semdraw-canvas").evaluate(
        "(c, [x, y]) => Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data)", [x, y]
    )


def focus_widget(page) -> None:
    """Give the widget keyboard focus without painting: focus its focusable root element."""
    focused = page.get_by_test_id("semdraw-canvas").evaluate(
        """c => { const root = c.closest('[tabindex]'); if (!root) return false;
                  root.focus(); return document.activeElement === root; }"""
    )
    assert focused, "could not focus the widget's root (no focusable ancestor of the drawing surface)"


def frame_state(page) -> dict:
    """data-seq and src of the displayed frame (seq -1 before the first frame)."""
    return page.get_by_test_id("semdraw-frame").evaluate(
        "img => ({seq: img.dataset.seq === undefined ? -1 : Number(img.dataset.seq), src: img.getAttribute('src') || ''})"
    )


def frame_pixels(page) -> dict:
    """The displayed frame's RGBA pixels (decoded at natural size) plus its seq and src."""
    return page.get_by_test_id("semdraw-frame").evaluate(
        """async img => {
             await img.decode();
             const c = document.createElement('canvas');
             c.width = img.naturalWidth; c.height = img.naturalHeight;
             const ctx = c.getContext('2d');
             ctx.drawImage(img, 0, 0);
             return {seq: Number(img.dataset.seq ?? -1), src: img.getAttribute('src') || '',
                     width: c.width, height: c.height,
                     data: Array.from(ctx.getImageData(0, 0, c.width, c.height).data)};
           }"""
    )


@dataclass
class CellError(AssertionError):
    ename: str
    evalue: str
    traceback: str

    def __str__(self) -> str:
        return f"a notebook cell raised {self.ename}: {self.evalue}\n{self.traceback}"
