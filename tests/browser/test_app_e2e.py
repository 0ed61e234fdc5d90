"""Issue 12 end to end: `semdraw-app` serves the canvas as a page through Voilà. Start it, open the address it
prints, see the tiny model's banner, press play, paint, see frames advance; Ctrl+C stops it cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest

from browser_helpers import canvas_box, drag, frame_state, wait_until
from conftest import REPO, _free_port

FRAME_TIMEOUT = 90


class App:
    """A running `python -m semdraw_widget.app`, its output collected line by line."""

    def __init__(self, *args: str):
        env = {**os.environ, "SEMDRAW_MODEL": "tiny", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen([sys.executable, "-m", "semdraw_widget.app", *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def address(self) -> str:
        found = wait_until(lambda: re.search(r"semdraw-app: open (\S+)", self.output), timeout=120,
                           what="semdraw-app to print the page's address")
        return found.group(1)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)  # Ctrl+C
        return self.process.wait(30)


@pytest.fixture
def app():
    running = App("--model", "tiny", "--height", "128", "--width", "128", "--port", str(_free_port()), "--seed", "-1",
                  "--bootstrap_steps", "2", "--bootstrap_mix_steps", "1.5", "--guidance_scale", "1.0", "--device", "cpu")
    yield running
    if running.process.poll() is None:
        running.process.kill()


def test_the_app_serves_the_canvas_paints_and_stops_on_ctrl_c(app, page):
    address = app.address()
    assert re.search(r"seed: \d+", app.output), app.output  # -1: a random seed, printed
    page.goto(address)
    notice = page.locator(".sd-notice")
    wait_until(lambda: notice.is_visible() and "Tiny model" in notice.text_content(), timeout=FRAME_TIMEOUT,
               what="the canvas with the tiny model's banner, as in a notebook")
    page.get_by_role("button", name=re.compile(r"\bPlay\b")).click()
    wait_until(lambda: frame_state(page)["seq"] >= 1, timeout=FRAME_TIMEOUT, what="the first frame")
    before = frame_state(page)
    drag(page, canvas_box(page), (0.2, 0.5), (0.8, 0.5), steps=10)
    wait_until(lambda: frame_state(page)["seq"] >= before["seq"] + 2, timeout=FRAME_TIMEOUT,
               what="frames to advance after the stroke")
    assert frame_state(page)["src"] != before["src"]
    page.close()

    assert app.stop() == 0, app.output
    assert "semdraw-app: stopped" in app.output
    with pytest.raises(OSError):  # the server is gone
        urllib.request.urlopen(address, timeout=5)
