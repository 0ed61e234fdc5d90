"""A canvas loading its model in a notebook: one progress indicator of ours, and no third-party noise.

Loading prints, unasked, into the cell above the widget (and into Voilà pages): transformers' "Loading
weights" progress bar, its torchvision warnings, hub download bars. While a canvas loads its model (the
`model=` argument, `attach_pipeline(model=...)`), those libraries' progress bars, log lines below errors and
warnings are switched off, and one line of ours says what is loading: in the canvas's status line when the
canvas exists already, else a line in the cell's output that goes away once the model is loaded.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from typing import Any, Callable, Iterator

log = logging.getLogger("semdraw_widget")

#: Packages whose warnings are theirs to fix, not the notebook's reader's, while a model loads.
NOISY_PACKAGES = r"(transformers|diffusers|huggingface_hub|accelerate|peft|torchvision|torch)(\.|$)"


def load_pipeline_quietly(model: str | None, *, device: Any, width: int, height: int,
                          say: Callable[[str], None] | None = None):
    """`load_pipeline(model, ...)` with one indicator of ours and no third-party output. `say(text)` shows a
    line in the canvas (its status), "" when done; without it the line goes into the cell's output."""
    from .engine.models.choice import load_pipeline

    what = f"the model {model!r}" if model else "the model"
    text = f"Loading {what}… (the first load of hub weights downloads them, which can take minutes)"
    started = time.perf_counter()
    with _indicator(text, say), quiet_third_party():
        pipeline = load_pipeline(model, device=device, width=width, height=height)
    log.info("loaded %s in %.1f s", what, time.perf_counter() - started)
    return pipeline


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Within it: no progress bars, log lines below errors or warnings from the model libraries."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(_hub_bars_off())  # first in, last out: transformers' switches also flip the hub's bars
        for name in ("transformers", "diffusers"):
            stack.enter_context(_library_quiet(name))
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", module=NOISY_PACKAGES)
        yield


@contextlib.contextmanager
def _library_quiet(name: str) -> Iterator[None]:
    """transformers and diffusers share one API for their verbosity and progress bars."""
    try:
        logging_api = __import__(f"{name}.utils.logging", fromlist=["logging"])
    except ImportError:  # not installed: nothing of it to quiet
        yield
        return
    verbosity, bars = logging_api.get_verbosity(), logging_api.is_progress_bar_enabled()
    logging_api.set_verbosity_error()
    logging_api.disable_progress_bar()
    # Code inside the load may switch the bars back on (the tiny model's builder does); transformers' tqdm
    # hook (from 5.0) still gets every bar made in the meantime.
    set_hook = getattr(logging_api, "set_tqdm_hook", None)
    previous_hook = set_hook(_silent_bar) if set_hook else None
    try:
        yield
    finally:
        if set_hook:
            set_hook(previous_hook)
        logging_api.set_verbosity(verbosity)
        logging_api.enable_progress_bar() if bars else logging_api.disable_progress_bar()


def _silent_bar(factory, args, kwargs):
    return factory(*args, **{**kwargs, "disable": True})


@contextlib.contextmanager
def _hub_bars_off() -> Iterator[None]:
    try:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    except ImportError:
        yield
        return
    were_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not were_disabled:
            enable_progress_bars()


@contextlib.contextmanager
def _indicator(text: str, say: Callable[[str], None] | None) -> Iterator[None]:
    """`text` in the canvas (`say`), or in the running cell's output, for as long as the block runs."""
    if say is not None:
        say(text)
        try:
            yield
        finally:
            say("")
        return
    handle = _cell_line(text)
    try:
        yield
    finally:
        if handle is not None:
            handle.update({"text/plain": ""}, raw=True)


def _cell_line(text: str):
    """A display of `text` in the running cell that can be replaced later, or None outside a kernel."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        get_ipython = lambda: None  # noqa: E731 (no IPython: no kernel)
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        log.info("%s", text)
        return None
    return display({"text/plain": text}, raw=True, display_id=True)
