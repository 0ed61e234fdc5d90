"""Painting as it happens on real devices and in a real notebook: touch and pen (palm rejection; the pen's
eraser end cannot be sent through CDP), JupyterLab's own shortcuts while the widget has focus, the canvas
moving in the middle of a stroke, a background image set and cleared at once, and a sync that arrives after
a stroke, in either view of a canvas shown twice."""

from __future__ import annotations

import threading

import pytest

from browser_helpers import canvas_box, canvas_pixel, drag, to_canvas, wait_until

pytestmark = pytest.mark.browser

SIZE = 256
CELL = (
    "from semdraw_widget import SemanticCanvas\n"
    f"canvas = SemanticCanvas(width={SIZE}, height={SIZE})\n"
    'a = canvas.add_layer("apple")\n'
    "canvas.active_layer = a\n"
    "canvas"
)


def _value(kernel, point) -> float:
    x, y = point
    return kernel.eval(f"float(canvas.get_mask(a)[{y}, {x}])")


def _screen(box, fx, fy) -> tuple[float, float]:
    return box["x"] + fx * box["width"], box["y"] + fy * box["height"]


def _touch(cdp, kind, *points):
    cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [
        {"x": x, "y": y, "id": touch_id, "radiusX": 10, "radiusY": 10} for touch_id, (x, y) in points]})


def _pen(cdp, kind, x, y, buttons=1):
    cdp.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "buttons": buttons,
                                          "clickCount": 1, "pointerType": "pen", "force": 0.8})


def test_touch_paints_and_a_resting_palm_neither_paints_nor_blocks_the_pen(open_notebook):
    nb = open_notebook([CELL])
    page, kernel = nb.page, nb.kernel
    box = canvas_box(page)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})

    # a finger stroke paints
    _touch(cdp, "touchStart", (1, _screen(box, 0.2, 0.2)))
    for i in range(1, 13):
        _touch(cdp, "touchMove", (1, _screen(box, 0.2 + 0.6 * i / 12, 0.2)))
    _touch(cdp, "touchEnd")
    finger = to_canvas(box, 0.5, 0.2, SIZE, SIZE)
    wait_until(lambda: _value(kernel, finger) > 0.5, timeout=20, what="the finger stroke in the kernel")

    # a touch the system cancels (a gesture, a rejected palm) is taken back, here and in the kernel
    _touch(cdp, "touchStart", (2, _screen(box, 0.2, 0.35)))
    for i in range(1, 7):
        _touch(cdp, "touchMove", (2, _screen(box, 0.2 + 0.6 * i / 6, 0.35)))
    cancelled = to_canvas(box, 0.5, 0.35, SIZE, SIZE)
    wait_until(lambda: canvas_pixel(page, *cancelled)[3] > 0, timeout=10, what="the touch to paint locally")
    _touch(cdp, "touchCancel")

    # a palm rests on the screen, then the pen draws: the pen wins and the palm's dab goes away
    _touch(cdp, "touchStart", (7, _screen(box, 0.85, 0.85)))
    _touch(cdp, "touchMove", (7, _screen(box, 0.86, 0.86)))
    palm = to_canvas(box, 0.85, 0.85, SIZE, SIZE)
    wait_until(lambda: canvas_pixel(page, *palm)[3] > 0, timeout=10, what="the palm to paint locally at first")
    _pen(cdp, "mousePressed", *_screen(box, 0.2, 0.5))
    for i in range(1, 13):
        _pen(cdp, "mouseMoved", *_screen(box, 0.2 + 0.6 * i / 12, 0.5))
    _pen(cdp, "mouseReleased", *_screen(box, 0.8, 0.5), buttons=0)
    _touch(cdp, "touchCancel")

    pen = to_canvas(box, 0.5, 0.5, SIZE, SIZE)
    wait_until(lambda: _value(kernel, pen) > 0.5, timeout=20, what="the pen stroke in the kernel")
    wait_until(lambda: _value(kernel, palm) == 0 and _value(kernel, cancelled) == 0, timeout=20,
               what="the palm and the cancelled touch to be taken back in the kernel")
    assert canvas_pixel(page, *palm)[3] == 0 and canvas_pixel(page, *cancelled)[3] == 0
    assert _value(kernel, finger) > 0.5
    # neither the palm nor the cancelled touch left an undo step: one undo removes the pen stroke
    page.get_by_role("button", name="Undo", exact=True).click()
    wait_until(lambda: _value(kernel, pen) == 0, timeout=20, what="undo to take the pen stroke back")
    assert _value(kernel, finger) > 0.5


def test_jupyterlab_keys_still_work_while_plain_keys_stay_with_the_canvas(open_notebook):
    nb = open_notebook([CELL, "x = 1"])
    page = nb.page
    page.evaluate("() => { window.__commands = []; "
                  "window.jupyterapp.commands.commandExecuted.connect((_, args) => window.__commands.push(args.id)); }")
    box = canvas_box(page)
    page.mouse.click(*_screen(box, 0.05, 0.05))  # a dot; the widget now has focus
    page.keyboard.press("Control+s")
    wait_until(lambda: "docmanager:save" in page.evaluate("window.__commands"), timeout=10,
               what="Ctrl+S to save the notebook while the widget has focus")
    cells = page.evaluate("() => window.jupyterapp.shell.currentWidget.content.widgets.length")
    for key in ("a", "x", "d", "d"):  # notebook command-mode keys: insert above, cut, delete
        page.keyboard.press(key)
    page.keyboard.press("e")  # the widget's own: eraser
    wait_until(lambda: nb.kernel.eval("canvas.tool") == "eraser", timeout=10, what="E to pick the eraser")
    assert page.evaluate("() => window.jupyterapp.shell.currentWidget.content.widgets.length") == cells
    assert not [c for c in page.evaluate("window.__commands") if c.startswith("notebook:")]
    # in a text field of the widget too
    page.locator(".sd-bg-row .sd-prompt").click()
    page.evaluate("window.__commands.length = 0")
    page.keyboard.press("Control+s")
    wait_until(lambda: "docmanager:save" in page.evaluate("window.__commands"), timeout=10,
               what="Ctrl+S to save the notebook while a prompt field has focus")
    for key in ("a", "d", "d", "Control+a", "Control+z", "Control+x"):  # typing and editing stay in the field
        page.keyboard.press(key)
    page.wait_for_timeout(300)
    assert not [c for c in page.evaluate("window.__commands") if c.startswith("notebook:")]
    assert page.evaluate("() => window.jupyterapp.shell.currentWidget.content.widgets.length") == cells
    # icon buttons have names a screen reader can say
    for name in ("Undo", "Redo", "Delete layer apple", "Move layer apple up"):
        assert page.get_by_role("button", name=name, exact=True).count() == 1, name
    # Shift+Enter runs the cell, from the widget as from anywhere in it
    page.mouse.click(*_screen(canvas_box(page), 0.05, 0.05))
    page.keyboard.press("Shift+Enter")
    wait_until(lambda: "notebook:run-cell-and-select-next" in page.evaluate("window.__commands"), timeout=10,
               what="Shift+Enter to run the cell while the widget has focus")


def test_a_stroke_follows_the_pointer_when_the_canvas_moves_under_it(open_notebook):
    # The page scrolls, or something above the canvas appears (a notice): the stroke must go on under
    # the pointer, not where the canvas was when the stroke began.
    nb = open_notebook([CELL])
    page, kernel = nb.page, nb.kernel
    box = canvas_box(page)
    x, y = _screen(box, 0.3, 0.3)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 20, y, steps=3)
    page.get_by_test_id("semdraw-canvas").evaluate(
        "c => { const spacer = document.createElement('div'); spacer.style.height = '100px'; "
        "c.closest('.semdraw').prepend(spacer); }")
    surface = page.get_by_test_id("semdraw-canvas")  # its box as it is, not scrolled into view
    moved = wait_until(lambda: (b := surface.bounding_box())["y"] > box["y"] + 50 and b, timeout=10,
                       what="the canvas to move down")
    page.mouse.move(x + 120, y, steps=6)  # the same screen row, now a higher canvas row
    page.mouse.up()
    col = int((x + 100 - moved["x"]) * SIZE / moved["width"])
    row = int((y - moved["y"]) * SIZE / moved["height"])
    wait_until(lambda: _value(kernel, (col, row)) > 0.5, timeout=20,
               what=f"paint under the pointer at canvas ({col}, {row}) after the canvas moved")


def test_a_background_image_set_and_cleared_at_once_stays_cleared(open_notebook):
    nb = open_notebook([CELL])
    page, kernel = nb.page, nb.kernel
    kernel.execute("import numpy as np\n"
                   f"canvas.set_background_image(np.full(({SIZE}, {SIZE}, 3), (0, 200, 0), np.uint8))\n"
                   "canvas.set_background_image(None)")
    clear_button = page.locator('[data-action="bg-clear"]')
    wait_until(clear_button.is_disabled, timeout=10, what="the clear-image button to be disabled")
    page.wait_for_timeout(1500)  # long enough for a decode of the first image to finish
    pixel = page.locator("canvas.sd-bg").evaluate("c => Array.from(c.getContext('2d').getImageData(128, 128, 1, 1).data)")
    assert pixel == [0, 0, 0, 0] and clear_button.is_disabled()


@pytest.mark.parametrize("painter", ["first", "second"])
def test_a_late_sync_does_not_wipe_paint(open_notebook, tmp_path, painter):
    """A second view of the canvas asks for every mask while the kernel is busy. The first view paints
    meanwhile; or the second view itself paints, after it has stopped waiting for the reply. The reply,
    a snapshot older than the stroke, must not wipe the stroke from the view that made it."""
    nb = open_notebook([CELL])
    page, kernel = nb.page, nb.kernel
    page.get_by_test_id("semdraw-canvas").evaluate("c => { c.dataset.view = 'first'; }")
    # The kernel stays busy until the stroke is made, so the new view's sync is answered after it.
    busy_flag, release_flag = tmp_path / "kernel-is-busy", tmp_path / "release-the-kernel"
    busy = threading.Thread(target=lambda: kernel.execute(
        f"import pathlib, time; pathlib.Path({str(busy_flag)!r}).touch()\n"
        f"while not pathlib.Path({str(release_flag)!r}).exists():\n    time.sleep(0.05)", timeout=120))
    busy.start()
    try:
        wait_until(busy_flag.exists, timeout=30, what="the kernel to be busy")
        page.evaluate("""async () => { const app = window.jupyterapp;
            app.shell.currentWidget.content.activeCellIndex = 0;
            await app.commands.execute('notebook:create-output-view'); }""")
        wait_until(lambda: page.get_by_test_id("semdraw-canvas").count() == 2, timeout=30, what="a second view")
        page.get_by_test_id("semdraw-canvas").evaluate_all("cs => cs.forEach(c => { c.dataset.view ||= 'second'; })")
        if painter == "second":
            page.wait_for_timeout(3500)  # past the view's wait for its sync (SYNC_TIMEOUT_MS): it paints now
        views = {name: page.locator(f"[data-testid=semdraw-canvas][data-view={name}]") for name in ("first", "second")}
        views[painter].scroll_into_view_if_needed()
        box = views[painter].bounding_box()
        # The second view opens in a panel below the notebook and each covers part of the other: paint near the top.
        on_top = "([x, y, name]) => document.elementFromPoint(x, y)?.dataset.view === name"
        assert page.evaluate(on_top, [*_screen(box, 0.5, 0.15), painter]), f"the {painter} view's canvas is covered"
        centre = to_canvas(box, 0.5, 0.15, SIZE, SIZE)
        alpha = "(c, [x, y]) => c.getContext('2d').getImageData(x, y, 1, 1).data[3]"

        def painted():
            drag(page, box, (0.2, 0.15), (0.8, 0.15))
            return views[painter].evaluate(alpha, list(centre)) > 0

        # A view still waiting for its sync ignores a stroke (it says "Loading the masks ..."), and on a busy
        # machine its 3 s timer may fire after our 3.5 s: paint again (the kernel is still busy) until it takes one.
        wait_until(painted, timeout=30, interval=0.5, what=f"the {painter} view to take the stroke")
        page.wait_for_timeout(300)  # the stroke's messages are on their way to the kernel
    finally:
        release_flag.touch()
        busy.join()
    wait_until(lambda: _value(kernel, centre) > 0.5, timeout=20, what="the stroke in the kernel")
    other = views["second" if painter == "first" else "first"]
    wait_until(lambda: other.evaluate(alpha, list(centre)) > 0, timeout=20, what="the stroke in the other view")
    page.wait_for_timeout(1000)  # every reply to the sync has arrived
    assert views[painter].evaluate(alpha, list(centre)) > 0, f"the {painter} view lost its stroke to the late sync"


def test_one_large_set_mask_from_python_is_one_undo_step(open_notebook):
    # A mask over one message's budget (4096 x 2056 bytes) reaches the view in two bands.
    nb = open_notebook(["from semdraw_widget import SemanticCanvas\n"
                        "canvas = SemanticCanvas(width=4096, height=2056)\n"
                        "a = canvas.add_layer('apple')\n"
                        "canvas"])
    page, kernel = nb.page, nb.kernel
    kernel.execute("import numpy as np\ncanvas.set_mask(a, np.ones((2056, 4096), bool))")
    for y in (10, 2050):  # both bands have arrived
        wait_until(lambda: canvas_pixel(page, 100, y)[3] > 0, timeout=30, what=f"row {y} of the mask in the view")
    page.get_by_role("button", name="Undo", exact=True).click()
    wait_until(lambda: kernel.eval("float(canvas.get_mask(a).max())") == 0, timeout=30,
               what="one undo to take the whole mask back in the kernel")
