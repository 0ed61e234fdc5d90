"""The front ends people paint in besides JupyterLab: Notebook 7, Voilà and marimo. One scenario each, seen
from the page alone (Voilà and marimo have no notebook kernel to ask): press Play, wait for the stream to
settle (the status line says "still"), paint, and see new frames arrive. New frames after a settled stream
mean the stroke reached the kernel and the frames reached the page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import nbformat
import pytest

from browser_helpers import canvas_box, drag, frame_state, wait_until
from conftest import REPO, _free_port, _stop_process

pytestmark = pytest.mark.browser

SIZE = 128
FRAME_TIMEOUT = 90
CANVAS_CODE = (
    "from semdraw_widget import SemanticCanvas\n"
    f'canvas = SemanticCanvas(width={SIZE}, height={SIZE}, model="tiny")\n'
    'canvas.add_layer("a red apple")\n'
)


def paint_and_see_frames(page) -> None:
    """Play until the stream settles, paint, and see frames advance; the transport keeps binary buffers."""
    page.get_by_test_id("semdraw-canvas").wait_for(timeout=120_000)
    page.get_by_role("button", name=re.compile(r"\bPlay\b")).click()
    wait_until(lambda: frame_state(page)["seq"] >= 1, timeout=FRAME_TIMEOUT, what="the first frame")
    status = page.locator(".sd-status")
    wait_until(lambda: status.inner_text().startswith("still"), timeout=FRAME_TIMEOUT, what="the stream to settle")
    settled = frame_state(page)["seq"]
    drag(page, canvas_box(page), (0.2, 0.5), (0.8, 0.5), steps=8)
    wait_until(lambda: frame_state(page)["seq"] >= settled + 2, timeout=FRAME_TIMEOUT,
               what=f"frames after the stroke (past {settled + 1})")
    assert not page.get_by_test_id("semdraw-transport").is_visible(), "this front end fell back to base64"
    assert "damaged" not in status.inner_text()


def test_notebook_7(open_notebook, page_errors):
    # Notebook 7.6 throws from its own code now and then, with or without a widget: its shortcuts plugin reads
    # the schema of a plugin it does not have (e.g. as the page unloads), a route runs 'filebrowser:open-path'
    # before it is registered. The widget's code is never in those stacks.
    page_errors.not_fatal_from("/static/notebook/notebook_core.")
    nb = open_notebook([CANVAS_CODE + "canvas"], app="notebook")
    paint_and_see_frames(nb.page)
    assert nb.kernel.eval("float(canvas.masks.sum())") > 0
    assert nb.kernel.eval("canvas.transport") == {"to_kernel": "binary", "to_browser": "binary"}
    nb.errors.check()


def test_voila(lab_server, page, page_errors):
    """Voilà runs the notebook itself and shows only the outputs: the canvas, live."""
    name = "voila_canvas.ipynb"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CANVAS_CODE + "canvas")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, str(lab_server.root_dir / name))
    page.goto(f"{lab_server.url}/voila/render/{name}?token={lab_server.token}")
    paint_and_see_frames(page)
    assert "Loading weights" not in page.inner_text("body"), "third-party loading output shows in the Voilà page"
    page_errors.check()


MARIMO_APP = textwrap.dedent(
    '''
    import marimo

    app = marimo.App()


    @app.cell
    def _():
        import marimo as mo
    {canvas}
        mo.ui.anywidget(canvas)
        return


    if __name__ == "__main__":
        app.run()
    '''
).format(canvas=textwrap.indent(CANVAS_CODE, "    "))


@pytest.fixture
def marimo_app(tmp_path):
    """`marimo run --headless` serving an app whose one cell shows `mo.ui.anywidget(canvas)`; yields its URL."""
    path = tmp_path / "canvas_app.py"
    path.write_text(MARIMO_APP)
    port = _free_port()
    env = dict(os.environ, SEMDRAW_MODEL="tiny", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    log_path = tmp_path / "marimo.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "marimo", "run", "--headless", "--host", "127.0.0.1", "--port", str(port),
             "--no-token", str(path)],
            cwd=str(tmp_path), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def answering():
        if process.poll() is not None:
            raise AssertionError(f"marimo exited with {process.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    try:
        wait_until(answering, timeout=90, interval=0.25, what="marimo to answer")
        yield url
    finally:
        _stop_process(process)


def test_marimo(marimo_app, page, page_errors):
    page.goto(marimo_app)
    paint_and_see_frames(page)
    page_errors.check()
