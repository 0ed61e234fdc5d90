"""Interrupting the kernel stops every stream, whether a cell is running or the kernel is idle."""

import os
import time
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from waiting import wait_until

REPO = str(Path(__file__).parent.parent)
SETUP = """
from semdraw_widget import SemanticCanvas, StreamMultiDiffusion
# Fresh noise every frame: the scene never settles, so only a stop ends the frames.
pipe = StreamMultiDiffusion("cpu", hf_key="tiny", height=64, width=64, fresh_noise=True)
canvas = SemanticCanvas(64, 64, pipeline=pipe)
canvas.add_layer("an apple")
canvas._runner.acknowledge = lambda seq: None  # no browser: keep the stream from waiting on acks
canvas._runner.sender.max_in_flight = 10**9
canvas.start()
"""


def run(client, code, timeout=120):
    reply = client.execute_interactive(code, timeout=timeout, store_history=False)
    return reply["content"]


def value(client, expr):
    outputs = []
    client.execute_interactive(
        f"print(repr({expr}))", timeout=60, output_hook=lambda msg: outputs.append(msg["content"].get("text", ""))
    )
    return "".join(outputs).strip()


@pytest.fixture
def kernel():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    manager, client = start_new_kernel(kernel_name="python3", env=env)
    yield manager, client
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def cell_printed(client, msg_id, text):
    """Read the kernel's iopub messages (frames and all) for up to a second; True once cell `msg_id` printed `text`."""
    import queue

    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            msg = client.get_iopub_msg(timeout=0.2)
        except queue.Empty:
            continue
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream"
                and text in msg["content"]["text"]):
            return True
    return False


def wait_running(client, expected):
    wait_until(lambda: value(client, "canvas.running") == repr(expected), interval=0.2,
               what=f"canvas.running to become {expected}")


def test_interrupt_while_idle_stops_the_stream(kernel):
    manager, client = kernel
    assert run(client, SETUP)["status"] == "ok"
    wait_running(client, True)
    before = int(value(client, "canvas._runner.frames_generated"))
    wait_until(lambda: int(value(client, "canvas._runner.frames_generated")) > before, interval=0.2,
               what="frames while the kernel is idle")
    manager.interrupt_kernel()
    wait_running(client, False)
    assert "interrupted" in value(client, "canvas.status")
    frames = value(client, "canvas._runner.frames_generated")
    time.sleep(1.0)
    assert value(client, "canvas._runner.frames_generated") == frames
    assert run(client, "canvas.start()")["status"] == "ok"  # and it starts again
    wait_running(client, True)


def test_interrupt_during_a_cell_stops_the_stream_too(kernel):
    manager, client = kernel
    assert run(client, SETUP)["status"] == "ok"
    msg_id = client.execute("import time\nprint('looping', flush=True)\nwhile True: time.sleep(0.05)")
    # Interrupt only once the cell runs: a kernel slow to start it would meet the interrupt while idle (and
    # the endless cell would then never end).
    wait_until(lambda: cell_printed(client, msg_id, "looping"), interval=0, what="the endless cell to start")
    manager.interrupt_kernel()
    wait_running(client, False)
