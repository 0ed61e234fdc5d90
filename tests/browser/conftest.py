"""Browser end-to-end harness: a headless JupyterLab, Debian's Chromium driven by Playwright, and a
kernel client attached to the very kernel a page's notebook runs in.

Pieces (all used by the tests in this folder):
  lab_server   session: `python -m jupyterlab` on a free localhost port with a known token, a temp
               root dir, its own runtime/settings/workspace dirs, SEMDRAW_MODEL=tiny, and the repo
               root on PYTHONPATH so the kernel imports this checkout's `semdraw_widget`. The same
               server serves Notebook 7 (/notebooks/...) and Voilà (/voila/render/...).
  browser      session: headless Chromium (executable /usr/bin/chromium).
  page         one fresh browser context + page per test; uncaught page exceptions and the widget's
               console errors/warnings are collected and fail the test (`page_errors.check()`).
  open_notebook(cells) -> Notebook: writes the notebook, opens it in the page, waits for its kernel,
               runs all cells, fails on any error output, and connects a `KernelHandle` to that kernel.
               `before_run`: JavaScript run in the page once the kernel is ready, before the cells
               (e.g. to patch the kernel connection). `app="notebook"` opens it in Notebook 7.
  KernelHandle.eval(expr, setup=...) runs Python in that kernel and returns `expr` as JSON.

Page helpers (drag, pixel reads, frame reads) and `wait_until` live in browser_helpers.py.
Everything waits on conditions with generous, bounded timeouts; nothing sleeps to assert.
Skips only when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from browser_helpers import CellError, wait_until

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BUNDLE = REPO / "semdraw_widget" / "static" / "widget.js"
VIEWPORT = {"width": 1280, "height": 900}

# Console messages that come from the widget (its own `semdraw:` warnings, anywidget, and the
# widget manager failing to load/render a model). Other console noise from JupyterLab itself
# (404s for optional resources and the like) is recorded and shown, but does not fail a test.
SLOW_PLUGIN = re.compile(r"^Plugin \S+ \(with \d+ dependants\) took [\d.]+ms to activate")
WIDGET_CONSOLE_MARKERS = ("semdraw", "anywidget", "AnyModel", "AnyView", "Could not create a view", "jupyter-widgets")


# ---------------------------------------------------------------------------------------------
# skip only when the browser is missing
# ---------------------------------------------------------------------------------------------
def pytest_collection_modifyitems(config, items):
    if os.path.exists(CHROMIUM):
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason=f"{CHROMIUM} is not installed (apt-get install chromium)")
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# the JupyterLab server
# ---------------------------------------------------------------------------------------------
@dataclass
class LabServer:
    url: str
    token: str
    root_dir: Path
    runtime_dir: Path
    log_path: Path
    process: subprocess.Popen

    def api(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"


def _write_lab_settings(settings_dir: Path) -> None:
    """No news/update toasts over the notebook, and no cell virtualisation hiding the output."""
    files = {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "checkForUpdates": False,
            "fetchNews": "false",
        },
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    }
    for rel, value in files.items():
        path = settings_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory) -> LabServer:
    if not BUNDLE.is_file():
        pytest.fail(f"the front end is not built ({BUNDLE} is missing): run `cd js && npm ci && npm run build`")
    base = tmp_path_factory.mktemp("lab")
    root, runtime, settings, workspaces, config = (base / n for n in ("root", "runtime", "settings", "workspaces", "config"))
    for d in (root, runtime, workspaces, config):
        d.mkdir()
    _write_lab_settings(settings)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    env.update(
        SEMDRAW_MODEL="tiny",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
        JUPYTER_RUNTIME_DIR=str(runtime),
        JUPYTER_CONFIG_DIR=str(config),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(workspaces),
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONUNBUFFERED="1",
    )
    cmd = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        "--JupyterNotebookApp.expose_app_in_browser=True",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        "--ServerApp.terminals_enabled=False",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        cmd.append("--allow-root")
    log_path = base / "server.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(cmd, cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = LabServer(f"http://127.0.0.1:{port}", token, root, runtime, log_path, process)
    try:
        def answering():
            if process.poll() is not None:
                raise AssertionError(f"jupyter lab exited with {process.returncode}:\n{server.log_tail()}")
            try:
                return server.api("GET", "/api/status", timeout=2) is not None
            except (urllib.error.URLError, OSError):
                return False

        wait_until(answering, timeout=90, interval=0.25, what="the JupyterLab server to answer")
        yield server
    finally:
        _shutdown_kernels(server)
        _stop_process(process)
        log.close()


def _shutdown_kernels(server: LabServer) -> None:
    """Ask the server to end every kernel it still runs (they live in their own process groups)."""
    if server.process.poll() is not None:
        return
    try:
        for kernel in server.api("GET", "/api/kernels", timeout=5) or []:
            server.api("DELETE", f"/api/kernels/{kernel['id']}", timeout=15)
    except (urllib.error.URLError, OSError):
        pass


def _stop_process(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()  # the server shuts its kernels down on SIGTERM
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, 9)  # its own session: the server and any kernel it left behind
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


# ---------------------------------------------------------------------------------------------
# the browser
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


class PageErrors:
    """Uncaught exceptions in the page and console errors/warnings from the widget."""

    def __init__(self) -> None:
        self.fatal: list[str] = []
        self.other: list[str] = []
        self.app_bundles: list[str] = []  # URL parts of a front end's own code (see `not_fatal_from`)

    def not_fatal_from(self, url_part: str) -> None:
        """Page exceptions raised wholly inside the front end's own code (every frame of their stack in a URL
        containing `url_part`) are its bugs, not the widget's: recorded, not fatal."""
        self.app_bundles.append(url_part)

    def _in_app_only(self, stack: str) -> bool:
        urls = re.findall(r"(https?://[^\s)]+):\d+:\d+", stack)
        return bool(urls) and any(all(part in url for url in urls) for part in self.app_bundles)

    def on_pageerror(self, error) -> None:
        stack = getattr(error, "stack", "") or ""
        entry = f"uncaught page exception: {error}\n{stack}"
        (self.other if self._in_app_only(stack) else self.fatal).append(entry)

    def on_console(self, message) -> None:
        kind, text = message.type, message.text
        if kind not in ("error", "warning"):
            return
        entry = f"console.{kind}: {text} ({message.location.get('url', '')})"
        if SLOW_PLUGIN.search(text):  # JupyterLab timing its start-up on a busy machine: no fault of the widget
            return
        if any(marker in text for marker in WIDGET_CONSOLE_MARKERS):
            self.fatal.append(entry)
        elif kind == "error":
            self.other.append(entry)

    def check(self) -> None:
        if self.fatal:
            extra = "\nother console errors:\n" + "\n".join(self.other) if self.other else ""
            raise AssertionError("errors in the page:\n" + "\n".join(self.fatal) + extra)


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


@pytest.fixture
def page(browser, page_errors):
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    context.set_default_navigation_timeout(90_000)
    pg = context.new_page()
    pg.on("pageerror", page_errors.on_pageerror)
    pg.on("console", page_errors.on_console)
    try:
        yield pg
    finally:
        context.close()
    page_errors.check()


# ---------------------------------------------------------------------------------------------
# the notebook's kernel, from Python
# ---------------------------------------------------------------------------------------------
class KernelError(AssertionError):
    pass


# numpy scalars/arrays (anything with .tolist()) become plain JSON; anything else its repr.
_JSON_DEFAULT = "(lambda o: o.tolist() if hasattr(o, 'tolist') else repr(o))"


class KernelHandle:
    """A jupyter_client connection to the kernel a page's notebook uses (shares its namespace)."""

    def __init__(self, connection_file: Path):
        from jupyter_client import BlockingKernelClient

        self.client = BlockingKernelClient()
        self.client.load_connection_file(str(connection_file))
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def execute(self, code: str, timeout: float = 60.0, user_expressions: dict | None = None) -> dict:
        stream: list[str] = []

        def hook(msg):
            if msg["msg_type"] == "stream":
                stream.append(msg["content"]["text"])

        reply = self.client.execute_interactive(
            code, timeout=timeout, store_history=False, user_expressions=user_expressions or {}, output_hook=hook
        )
        content = reply["content"]
        if content["status"] != "ok":
            tb = "\n".join(content.get("traceback", []))
            raise KernelError(f"kernel raised {content.get('ename')}: {content.get('evalue')}\n{tb}")
        content["stdout"] = "".join(stream)
        return content

    def eval(self, expr: str, setup: str = "", timeout: float = 60.0) -> Any:
        """Run `setup`, then return `expr` evaluated in the kernel, through JSON (numpy values via .tolist())."""
        content = self.execute(setup, timeout, {"r": f"__import__('json').dumps({expr}, default={_JSON_DEFAULT})"})
        result = content["user_expressions"]["r"]
        if result["status"] != "ok":
            raise KernelError(f"{expr!r} raised {result.get('ename')}: {result.get('evalue')}")
        return json.loads(ast.literal_eval(result["data"]["text/plain"]))

    def close(self) -> None:
        self.client.stop_channels()


# ---------------------------------------------------------------------------------------------
# notebooks in the page
# ---------------------------------------------------------------------------------------------
# Both take the notebook's path, and only accept the panel showing that very notebook.
_KERNEL_READY_JS = """path => {
  const app = window.jupyterapp;
  const panel = app && app.shell && app.shell.currentWidget;
  if (!panel || !panel.context || panel.context.path !== path || !panel.content) return false;
  const kernel = panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
  return Boolean(kernel && kernel.status === 'idle' && kernel.connectionStatus === 'connected');
}"""

_RUN_ALL_JS = """async ([path, ms]) => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  if (panel.context.path !== path) throw new Error(`the current tab is ${panel.context.path}, not ${path}`);
  const ok = await Promise.race([
    app.commands.execute('notebook:run-all-cells'),
    new Promise((_, reject) => setTimeout(() => reject(new Error(`run-all did not finish in ${ms / 1000}s`)), ms)),
  ]);
  const errors = [];
  for (const cell of panel.content.model.cells) {
    if (cell.type !== 'code') continue;
    for (let i = 0; i < cell.outputs.length; i++) {
      const out = cell.outputs.get(i).toJSON();
      if (out.output_type === 'error') errors.push({ename: out.ename, evalue: out.evalue, traceback: (out.traceback || []).join('\\n')});
    }
  }
  return {ok, errors, kernel: panel.sessionContext.session.kernel.id, session: panel.sessionContext.session.id};
}"""


@dataclass
class Notebook:
    page: Any
    kernel: KernelHandle
    kernel_id: str
    session_id: str
    errors: PageErrors


@pytest.fixture
def open_notebook(lab_server, page, page_errors, request):
    """open_notebook(cells, name=None, before_run=None, app="lab") -> Notebook, with all cells run and the kernel
    connected."""
    import nbformat

    opened: list[Notebook] = []

    def _open(cells: list[str], name: str | None = None, timeout: float = 120.0, before_run: str | None = None,
              app: str = "lab") -> Notebook:
        name = name or f"{request.node.name.replace('[', '_').replace(']', '')}.ipynb"
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, str(lab_server.root_dir / name))
        if app == "lab":  # a workspace of its own, reset: JupyterLab must not restore tabs from earlier tests
            page.goto(f"{lab_server.url}/lab/workspaces/e2e-{secrets.token_hex(4)}/tree/{name}?reset&token={lab_server.token}")
        else:  # Notebook 7: one notebook per page
            page.goto(f"{lab_server.url}/notebooks/{name}?token={lab_server.token}")
        page.wait_for_function(_KERNEL_READY_JS, arg=name, timeout=timeout * 1000, polling=250)
        if before_run:
            page.evaluate(before_run)
        result = page.evaluate(_RUN_ALL_JS, [name, timeout * 1000])
        kernel = KernelHandle(lab_server.runtime_dir / f"kernel-{result['kernel']}.json")
        notebook = Notebook(page, kernel, result["kernel"], result["session"], page_errors)
        opened.append(notebook)
        if result["errors"]:
            err = result["errors"][0]
            raise CellError(err["ename"], err["evalue"], err["traceback"])
        assert result["ok"], "JupyterLab reported that run-all did not complete"
        return notebook

    yield _open
    for notebook in opened:
        notebook.kernel.close()
        try:  # ends the kernel (and any generation thread in it) so the next test has the CPUs
            lab_server.api("DELETE", f"/api/sessions/{notebook.session_id}")
        except (urllib.error.URLError, OSError):
            pass
