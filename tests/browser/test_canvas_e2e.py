"""Issue 2 end to end: paint in JupyterLab, read the masks in the kernel; set_mask from Python shows in
the browser; undo in the browser (Ctrl+Z) reaches the kernel, last edit first; deleting a layer is undoable."""

from __future__ import annotations

import pytest

from browser_helpers import canvas_box, canvas_pixel, drag, focus_widget, to_canvas, wait_until

pytestmark = pytest.mark.browser

SIZE = 256
CELLS = [
    "from semdraw_widget import SemanticCanvas\n"
    f"canvas = SemanticCanvas(width={SIZE}, height={SIZE})\n"
    'a = canvas.add_layer("apple")\n'
    'b = canvas.add_layer("sky")\n'
    "canvas.active_layer = a\n"
    "canvas",
]
STROKE_Y = 0.5
STROKE = ((0.2, STROKE_Y), (0.8, STROKE_Y))
# The square set from Python for layer b, well away from the stroke (rows 112..144).
SQUARE = (160, 16, 64)  # x, y, side
SQUARE_CENTRE = (SQUARE[0] + SQUARE[2] // 2, SQUARE[1] + SQUARE[2] // 2)
EMPTY_SPOT = (40, 220)  # neither the stroke nor the square


def _mask_values(kernel, layer: str, points) -> list[float]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return kernel.eval(f"[float(v) for v in canvas.get_mask({layer})[{ys}, {xs}]]")


def _mask_sum(kernel, layer: str) -> float:
    return kernel.eval(f"float(canvas.get_mask({layer}).sum())")


def _hex_rgb(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    return tuple(int(color[i : i + 2], 16) for i in (0, 2, 4))


def test_paint_set_mask_and_undo(open_notebook):
    nb = open_notebook(CELLS)
    page, kernel = nb.page, nb.kernel
    assert kernel.eval("canvas.active_layer == a") is True
    assert kernel.eval("canvas.masks.shape") == [2, SIZE, SIZE]

    # ---- paint a stroke into layer a with the mouse -------------------------------------------
    box = canvas_box(page)
    drag(page, box, *STROKE, steps=12)

    on_line = [to_canvas(box, fx, STROKE_Y, SIZE, SIZE) for fx in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)]
    wait_until(lambda: min(_mask_values(kernel, "a", on_line)) > 0.5, timeout=30,
               what="layer a's kernel mask to cover the whole stroke")
    values = _mask_values(kernel, "a", on_line)
    assert all(v > 0.99 for v in values[1:-1]), f"stroke interior not fully covered in the kernel: {values}"

    # The stroke went where the mouse went (scaling through the box is right): nothing far off it.
    off_line = [to_canvas(box, fx, fy, SIZE, SIZE) for fx, fy in ((0.5, 0.2), (0.5, 0.8), (0.03, 0.5), (0.97, 0.5))]
    assert _mask_values(kernel, "a", off_line) == [0.0] * 4, "coverage far from the stroke"
    assert _mask_sum(kernel, "b") == 0.0, "the inactive layer b got coverage from the stroke"
    assert kernel.eval("canvas.label_map()[%d, %d]" % (on_line[3][1], on_line[3][0])) == 0

    # ---- set_mask from Python shows in the browser ----------------------------------------------
    assert canvas_pixel(page, *SQUARE_CENTRE)[3] == 0, "square area painted before set_mask"
    x, y, side = SQUARE
    kernel.execute(
        "import numpy as np\n"
        f"_sq = np.zeros(({SIZE}, {SIZE}), bool); _sq[{y}:{y + side}, {x}:{x + side}] = True\n"
        "canvas.set_mask(b, _sq)"
    )
    assert _mask_sum(kernel, "b") == side * side
    pixel = wait_until(lambda: (p := canvas_pixel(page, *SQUARE_CENTRE))[3] > 0 and p,
                       timeout=20, what="the Python-set square to appear on the drawing surface")
    color_b = _hex_rgb(kernel.eval("canvas.layers[1]['color']"))
    assert all(abs(c - e) <= 2 for c, e in zip(pixel[:3], color_b)), f"square drawn as {pixel}, layer b is {color_b}"
    assert canvas_pixel(page, *EMPTY_SPOT)[3] == 0, "set_mask painted outside its square"
    stroke_px = canvas_pixel(page, *on_line[3])
    assert stroke_px[3] > 0, "the stroke is not drawn on the surface"

    # ---- undo: the last edit (the Python set_mask) first, then the stroke -----------------------
    focus_widget(page)
    page.keyboard.press("Control+z")
    wait_until(lambda: _mask_sum(kernel, "b") == 0.0, timeout=20,
               what="Ctrl+Z to undo set_mask in the kernel (layer b empty again)")
    wait_until(lambda: canvas_pixel(page, *SQUARE_CENTRE)[3] == 0, timeout=10,
               what="the undone square to disappear from the drawing surface")
    assert min(_mask_values(kernel, "a", on_line)) > 0.5, "the first undo also removed the stroke"

    page.keyboard.press("Control+z")
    wait_until(lambda: _mask_sum(kernel, "a") == 0.0, timeout=20,
               what="the second Ctrl+Z to undo the stroke in the kernel (layer a empty)")
    wait_until(lambda: canvas_pixel(page, *on_line[3])[3] == 0, timeout=10,
               what="the undone stroke to disappear from the drawing surface")
    assert _mask_sum(kernel, "b") == 0.0

    # ---- redo brings the stroke back (Ctrl+Shift+Z) ----------------------------------------------
    page.keyboard.press("Control+Shift+z")
    wait_until(lambda: min(_mask_values(kernel, "a", on_line)) > 0.5, timeout=20,
               what="Ctrl+Shift+Z to redo the stroke in the kernel")

    # ---- deleting a layer is undoable: it comes back in its place, with its mask -----------------
    layer_a = kernel.eval("a")
    layer_ids = lambda: kernel.eval("[layer['id'] for layer in canvas.layers]")
    page.locator(f'.sd-layer[data-layer="{layer_a}"] [data-action="layer-delete"]').click()
    wait_until(lambda: layer_a not in layer_ids(), timeout=20, what="the ✕ button to delete layer a in the kernel")
    wait_until(lambda: canvas_pixel(page, *on_line[3])[3] == 0, timeout=10,
               what="the deleted layer's paint to disappear from the drawing surface")
    focus_widget(page)
    page.keyboard.press("Control+z")
    wait_until(lambda: layer_ids() == [layer_a, kernel.eval("b")] and min(_mask_values(kernel, "a", on_line)) > 0.5,
               timeout=20, what="Ctrl+Z to bring layer a back first in the list, with its stroke, in the kernel")
    wait_until(lambda: canvas_pixel(page, *on_line[3])[3] > 0, timeout=10,
               what="the restored layer's paint to reappear on the drawing surface")
    # the view may send the active layer in a later update than the layers: wait for it, bounded
    wait_until(lambda: kernel.eval("canvas.active_layer == a"), timeout=10,
               what="the restored layer, active when it was deleted, to be active again in the kernel")
    page.keyboard.press("Control+Shift+z")
    wait_until(lambda: layer_a not in layer_ids(), timeout=20, what="Ctrl+Shift+Z to delete layer a again")

    # ---- a layer added in the widget can be painted at once ----------------------------------
    page.locator('[data-action="layer-add"]').first.click()
    box = canvas_box(page)  # the taller layer list may have moved the canvas
    drag(page, box, (0.1, 0.9), (0.4, 0.9), steps=6)  # straight away: the new layer is the active one
    wait_until(lambda: len(layer_ids()) == 2 and kernel.eval("canvas.active_layer") == layer_ids()[-1],
               timeout=20, what="the added layer to reach the kernel as the active layer")
    new_layer = layer_ids()[-1]
    wait_until(lambda: kernel.eval(f"float(canvas.get_mask({new_layer!r}).sum())") > 0, timeout=20,
               what="the stroke on the just-added layer to reach the kernel")

    status = kernel.eval("canvas.status")
    assert "ignored" not in status and "error" not in status.lower(), f"widget status reports a problem: {status!r}"
    nb.errors.check()


def test_a_second_view_follows_strokes_live(open_notebook):
    """The same canvas displayed twice: a stroke in one view reaches the kernel and appears in the other."""
    nb = open_notebook([CELLS[0], "canvas"])
    page, kernel = nb.page, nb.kernel
    surfaces = page.get_by_test_id("semdraw-canvas")
    wait_until(lambda: surfaces.count() == 2, timeout=30, what="two views of the canvas")
    first, second = surfaces.nth(0), surfaces.nth(1)
    first.scroll_into_view_if_needed()
    box = first.bounding_box()
    centre = to_canvas(box, 0.5, STROKE_Y, SIZE, SIZE)

    def pixel(surface, x, y):
        return surface.evaluate("(c, [x, y]) => Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data)", [x, y])

    assert pixel(second, *centre)[3] == 0
    drag(page, box, *STROKE, steps=12)
    wait_until(lambda: kernel.eval(f"float(canvas.get_mask(a)[{centre[1]}, {centre[0]}])") > 0.5, timeout=30,
               what="the stroke to reach the kernel")
    painted = wait_until(lambda: (p := pixel(second, *centre))[3] > 0 and p, timeout=20,
                         what="the other view to show the stroke")
    assert painted == pixel(first, *centre), "the two views draw the stroke differently"
    assert pixel(second, *EMPTY_SPOT)[3] == 0
    nb.errors.check()
