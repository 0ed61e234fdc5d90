"""The generation loop with the tiny model on the CPU: frames, back-pressure, convergence, failures."""

import asyncio
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from waiting import wait_until
from widget_helpers import stroke_message

SIZE = 64


@pytest.fixture
def pipe():
    from semdraw_widget import StreamMultiDiffusion

    return StreamMultiDiffusion("cpu", hf_key="tiny", height=SIZE, width=SIZE)


@pytest.fixture
def tiny_pipelines():
    """tiny_pipelines(n) -> n separate tiny pipelines (for canvases that share or swap them)."""
    from semdraw_widget import StreamMultiDiffusion

    return lambda count: [StreamMultiDiffusion("cpu", hf_key="tiny", height=SIZE, width=SIZE) for _ in range(count)]


@pytest.fixture
def live(make_canvas, pipe):
    """A canvas on the tiny pipeline whose fake browser acknowledges every frame it is sent."""

    def factory(auto_ack=True, **kwargs):
        canvas = make_canvas(SIZE, SIZE, pipeline=pipe, **kwargs)
        sent = canvas.sent

        def send(content, buffers=None):
            sent.append((content, list(buffers or [])))
            if auto_ack and content.get("type") == "frame":
                canvas._handle_custom_msg({"type": "ack", "seq": content["seq"]}, [])

        canvas.send = send
        return canvas

    return factory


def frames(canvas):
    return canvas.sent.of_type("frame")


def decode(message):
    content, buffers = message
    return Image.open(io.BytesIO(bytes(buffers[0])))


def paint(canvas, layer, x=0, y=0, w=SIZE, h=SIZE, value=255):
    canvas._handle_custom_msg(*stroke_message(layer, x, y, w, h, value=value))


def run_in_own_thread(scenario):
    """asyncio.run(scenario()) in a fresh thread (this one may already run a loop, e.g. Playwright's);
    returns (that thread's id, the result)."""
    result = {}

    def target():
        result["thread"] = threading.get_ident()
        result["value"] = asyncio.run(scenario())

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=120)
    return result["thread"], result["value"]


def stream_threads():
    return [t for t in threading.enumerate() if t.name == "semdraw-stream" and t.is_alive()]


def test_frames_are_valid_images_of_the_canvas_size(live):
    canvas = live()
    canvas.add_layer("an apple")
    canvas.start()
    wait_until(lambda: len(frames(canvas)) >= 3)
    canvas.stop()
    sent = frames(canvas)  # one reading: the encoder may still send frames queued before the stop
    content, _ = sent[0]
    assert content["format"] == "jpeg" and (content["width"], content["height"]) == (SIZE, SIZE)
    image = decode(sent[0])
    assert image.format == "JPEG" and image.size == (SIZE, SIZE)
    assert [c["seq"] for c, _ in sent] == sorted({c["seq"] for c, _ in sent})
    assert canvas.frame.size == (SIZE, SIZE)


def test_never_more_than_max_in_flight_unacknowledged(live):
    canvas = live(auto_ack=False, max_in_flight=2)
    layer = canvas.add_layer("an apple")
    canvas.start()
    wait_until(lambda: len(frames(canvas)) == 2)
    paint(canvas, layer)  # a change, so the loop would love to go on
    time.sleep(0.5)
    assert len(frames(canvas)) == 2 and canvas._runner.sender.in_flight == 2
    canvas._handle_custom_msg({"type": "ack", "seq": 1}, [])
    wait_until(lambda: len(frames(canvas)) == 3)
    time.sleep(0.3)
    assert len(frames(canvas)) == 3
    canvas.stop()


def test_a_stroke_leads_to_a_frame_that_reflects_it(live):
    canvas = live()
    layer = canvas.add_layer("an apple")
    canvas.start()
    wait_until(lambda: canvas.status.startswith("still"))  # converged with an empty layer
    before = np.asarray(canvas.frame, dtype=np.int16)
    count = len(frames(canvas))
    paint(canvas, layer, 0, 0, SIZE // 2, SIZE)
    # The status still says "still" (the old one) until the first new frame has been queued, and the encoder
    # may send that frame first: wait for the scene to settle again, i.e. for a new lossless still frame.
    wait_until(lambda: any(c["format"] == "png" for c, _ in frames(canvas)[count:]) and canvas.status.startswith("still"))
    after = np.asarray(canvas.frame, dtype=np.int16)
    canvas.stop()
    assert np.abs(after - before).mean() > 1.0
    assert canvas.stats["latency_ms"] is not None and canvas.stats["latency_ms"] > 0
    assert {"fps", "frame_ms", "breakdown"} <= set(canvas.stats)


def test_convergence_stops_generation_and_a_change_restarts_it(live, pipe):
    canvas = live()
    layer = canvas.add_layer("an apple")
    paint(canvas, layer, 8, 8, 32, 32)
    canvas.start()
    wait_until(lambda: canvas.status.startswith("still"))
    generated = canvas._runner.frames_generated
    assert generated >= pipe.num_slots
    assert frames(canvas)[-1][0]["format"] == "png"  # the settled image is sent losslessly
    time.sleep(0.5)
    assert canvas._runner.frames_generated == generated  # a still scene costs nothing
    paint(canvas, layer, 0, 0, 8, 8)
    wait_until(lambda: canvas._runner.frames_generated > generated)
    canvas.stop()


def test_an_engine_failure_is_visible_and_survivable(live, pipe, monkeypatch):
    canvas = live()
    canvas.add_layer("an apple")
    calls = {"n": 0}
    original = type(pipe).__call__

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(pipe), "__call__", flaky)
    canvas.start()
    # stop() clears `running` a moment before the stream thread sends the error message: wait for both
    wait_until(lambda: not canvas.running and canvas.sent.of_type("error"))
    assert "generation stopped" in canvas.status and "out of memory" in canvas.status
    assert "out of memory" in canvas.sent.of_type("error")[-1][0]["message"]
    count = len(frames(canvas))
    canvas.start()  # works again after the failure
    wait_until(lambda: len(frames(canvas)) > count)
    canvas.stop()


def test_start_stop_cycles_and_close_leave_no_threads(live):
    canvas = live()
    canvas.add_layer("an apple")
    for _ in range(20):
        canvas.start()
        canvas.stop()
    assert len(stream_threads()) <= 1
    canvas.close()
    wait_until(lambda: not stream_threads())


def test_start_frees_the_starting_threads_idle_openmp_workers(live, monkeypatch):
    from semdraw_widget.engine import cpu_threads

    callers = []
    monkeypatch.setattr(cpu_threads, "release_idle_workers", lambda: callers.append(threading.current_thread()))
    canvas = live()
    canvas.add_layer("an apple")
    canvas.start()
    canvas.stop()
    assert callers == [threading.current_thread()]  # the kernel's thread, before the stream thread runs


def test_step_and_seed(live):
    canvas = live(seed=1)
    layer = canvas.add_layer("an apple")
    paint(canvas, layer)
    first = np.asarray(canvas.step())
    assert first.shape == (SIZE, SIZE, 3)
    canvas.seed = 2
    for _ in range(6):
        second = np.asarray(canvas.step())
    assert not np.array_equal(first, second)


def test_pipeline_and_canvas_sizes_must_match(make_canvas, pipe):
    with pytest.raises(ValueError, match="same size"):
        make_canvas(SIZE * 2, SIZE, pipeline=pipe)


def test_a_one_shot_pipeline_is_refused_up_front(make_canvas, live, monkeypatch):
    from semdraw_widget import SemanticCanvas, StableMultiDiffusionPipeline

    oneshot = StableMultiDiffusionPipeline("cpu", hf_key="tiny")
    canvas = live()
    with pytest.raises(TypeError, match="needs a streaming pipeline.*StreamMultiDiffusion"):
        canvas.attach_pipeline(oneshot)
    assert canvas.step() is not None  # the canvas keeps its working pipeline
    built = []
    monkeypatch.setattr(SemanticCanvas, "open", lambda self: built.append(self))  # the widget's comm opens here
    with pytest.raises(TypeError, match="needs a streaming pipeline.*StreamMultiDiffusion"):
        make_canvas(SIZE, SIZE, pipeline=oneshot)
    assert not built  # refused before any widget existed


def test_a_failed_step_or_render_button_says_what_to_do_and_frees_memory(live, pipe, monkeypatch):
    import torch

    canvas = live()
    canvas.add_layer("an apple")
    released = []
    monkeypatch.setattr(canvas._runner, "_release_gpu_memory", lambda: released.append(1))

    def out_of_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(type(pipe), "__call__", out_of_memory)
    for action in ("step", "render"):
        canvas._handle_custom_msg({"type": "action", "name": action}, [])
        assert canvas.status.startswith(f"{action} failed: OutOfMemoryError")
        assert "The GPU ran out of memory: use fewer layers" in canvas.status
        assert "ran out of memory" in canvas.sent.of_type("error")[-1][0]["message"]
    assert len(released) == 2
    with pytest.raises(torch.OutOfMemoryError):
        canvas.step()  # from Python it raises, and still frees the cached memory
    assert len(released) == 3


def test_two_canvases_can_share_one_pipeline(live):
    full, empty = live(), live()
    a = full.add_layer("an apple")
    empty.add_layer("an apple")
    paint(full, a)
    for _ in range(6):
        frame_full = np.asarray(full.step(), dtype=np.int16)
        frame_empty = np.asarray(empty.step(), dtype=np.int16)
    assert not np.array_equal(frame_full, frame_empty)
    again = np.asarray(full.step(), dtype=np.int16)
    np.testing.assert_array_equal(again, frame_full)  # switching back restores its own scene exactly


def test_frames_are_sent_on_the_kernels_event_loop(pipe, monkeypatch):
    """Colab shows only messages sent from the kernel's thread: frames made elsewhere go through its loop."""
    from semdraw_widget import SemanticCanvas, kernel_thread

    monkeypatch.setattr(kernel_thread, "kernel_event_loop", asyncio.get_running_loop)  # as inside a kernel's cell

    async def scenario():
        canvas = SemanticCanvas(SIZE, SIZE, pipeline=pipe)
        senders = []
        canvas.send = lambda content, buffers=None: senders.append((content.get("type"), threading.get_ident()))
        canvas.add_layer("an apple")
        canvas.start()
        for _ in range(600):
            await asyncio.sleep(0.05)
            if any(kind == "frame" for kind, _ in senders):
                break
        canvas.close()
        return senders

    loop_thread, senders = run_in_own_thread(scenario)
    frame_threads = {ident for kind, ident in senders if kind == "frame"}
    assert frame_threads == {loop_thread}


def test_model_choice_is_never_silent(make_canvas, monkeypatch, tmp_path):
    from semdraw_widget import load_pipeline

    monkeypatch.delenv("SEMDRAW_MODEL", raising=False)
    auto = load_pipeline(None, width=SIZE, height=SIZE)  # no GPU here: the demo model, with the reason
    assert "Demo model" in auto.notice and "no CUDA GPU" in auto.notice
    canvas = make_canvas(SIZE, SIZE, model="tiny")
    assert canvas.has_pipeline and "noise" in canvas.notice
    monkeypatch.setenv("SEMDRAW_MODEL", str(tmp_path / "missing-model"))
    with pytest.raises(Exception, match="missing-model"):
        make_canvas(SIZE, SIZE, model="auto")
    # the environment forces its choice over one asked for by name, and says so
    monkeypatch.setenv("SEMDRAW_MODEL", "tiny")
    forced = load_pipeline("tiny-xl", width=SIZE, height=SIZE)
    assert forced.model.name == "sd15" and "SEMDRAW_MODEL=tiny replaces the model asked for (tiny-xl)" in forced.notice
    assert "replaces" not in load_pipeline("tiny", width=SIZE, height=SIZE).notice
    # what the model loader has to say (e.g. a removed hub repository read from its copy) reaches the banner
    pipeline = load_pipeline("tiny", width=SIZE, height=SIZE)
    pipeline.model.notice = "'runwayml/stable-diffusion-v1-5' was removed from the Hugging Face hub"
    canvas = make_canvas(SIZE, SIZE, pipeline=pipeline)
    assert "Tiny model" in canvas.notice and "runwayml" in canvas.notice


def test_the_tiny_banner_follows_a_pipeline_however_it_was_made(make_canvas, pipe):
    canvas = make_canvas(SIZE, SIZE, pipeline=pipe)  # StreamMultiDiffusion("cpu", hf_key="tiny"), not model="tiny"
    assert canvas.notice.startswith("Tiny model")


def test_a_gpu_pipeline_gets_cuda_graphs_unless_told_otherwise(monkeypatch):
    from semdraw_widget import engine

    made = []
    monkeypatch.setattr(engine, "StreamMultiDiffusion", lambda *args, **kwargs: made.append((args, kwargs)) or type("P", (), {})())
    engine.load_pipeline("tiny", device="cuda")
    engine.load_pipeline("tiny", device="cuda", compile="inductor")
    engine.load_pipeline("tiny", device="cpu")
    assert [kwargs.get("compile") for _, kwargs in made] == [True, "inductor", None]


def test_the_figures_travel_in_the_frame_messages_and_python_reads_the_latest(live):
    canvas = live()
    assert canvas.stats == {} and "stats" not in canvas.keys  # not a synced trait: one channel to the views
    paint(canvas, canvas.add_layer("an apple"))
    canvas.start()
    wait_until(lambda: canvas.status.startswith("still"))  # said once the settled PNG is out
    canvas.stop()
    last = frames(canvas)[-1][0]["stats"]
    assert canvas.stats == last and {"fps", "latency_ms", "frame_ms", "breakdown"} <= set(last)


def test_a_pipeline_without_what_the_runner_uses_is_refused_up_front(make_canvas, pipe):
    class WithoutUpdates:
        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            if name == "apply_updates":
                raise AttributeError(name)
            return getattr(self._inner, name)

    with pytest.raises(TypeError, match="needs a streaming pipeline, not a WithoutUpdates"):
        make_canvas(SIZE, SIZE, pipeline=WithoutUpdates(pipe))


def test_latency_counts_only_strokes_made_while_streaming(live):
    canvas = live()
    layer = canvas.add_layer("an apple")
    paint(canvas, layer)  # before play: not a stroke-to-frame delay anyone waited for
    canvas.start()
    wait_until(lambda: canvas.status.startswith("still"))
    canvas.stop()
    assert canvas.stats.get("latency_ms") is None
    *_, (last_jpeg, _), (png, _) = frames(canvas)
    assert png["format"] == "png" and png["stats"] == last_jpeg["stats"]  # the settled copy keeps the last figures


def test_an_overlong_prompt_is_reported_and_stays_reported_until_it_changes(live):
    canvas = live()
    layer = canvas.add_layer("a red apple " * 40)
    paint(canvas, layer)
    with pytest.warns(UserWarning, match="tokens long"):
        canvas.render()
    errors = [content["message"] for content, _ in canvas.sent.of_type("error")]
    assert any("longer than the text encoder reads" in message for message in errors)
    assert canvas.status.startswith("rendered") and "Shorten it" in canvas.status  # not hidden by the next status
    canvas.start()  # the scene is settled already: the status says "still", not "generating"
    wait_until(lambda: canvas.status.startswith("still"))
    assert "Shorten it" in canvas.status
    canvas.update_layer(layer, prompt="a red apple")
    wait_until(lambda: canvas.status.startswith("still") and "Shorten it" not in canvas.status)
    canvas.stop()
    assert canvas.status == "paused"


def test_an_unrelated_event_loop_is_not_used_for_sending(pipe):
    """Outside a kernel (a script that runs its own asyncio loop, Playwright's sync API) frames go out directly."""
    from semdraw_widget import SemanticCanvas

    async def scenario():
        canvas = SemanticCanvas(SIZE, SIZE, pipeline=pipe)
        return canvas._kernel.loop, canvas

    _, (loop, canvas) = run_in_own_thread(scenario)
    assert loop is None
    canvas.close()


def test_a_sender_that_acknowledges_inline_does_not_deadlock(live):
    """An encoder that sends on the calling thread, to a view that acknowledges at once (as the benchmark's
    recorder does), must not wait on a lock the frame path already holds."""
    from concurrent.futures import Future

    class InlineEncoder:
        def submit(self, fn, *args):
            future = Future()
            future.set_result(fn(*args))
            return future

        def shutdown(self, wait=True):
            pass

    canvas = live()
    canvas.add_layer("an apple")
    canvas._runner.sender._encoder = InlineEncoder()
    worker = threading.Thread(target=canvas.step, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive() and len(frames(canvas)) == 1 and canvas._runner.sender.in_flight == 0


def test_a_background_compile_keeps_frames_coming_and_says_so(make_canvas, monkeypatch):
    from semdraw_widget import StreamMultiDiffusion
    from semdraw_widget.engine import accel

    release = threading.Event()
    monkeypatch.setattr(accel.torch, "compile", lambda fn, **kwargs: fn)  # the real compile is tested in tests/engine
    monkeypatch.setattr(accel.AcceleratedPredictor, "_compile_kind", lambda self, signature: release.wait(30))
    pipe = StreamMultiDiffusion("cpu", hf_key="tiny", height=SIZE, width=SIZE, compile="inductor")
    canvas = make_canvas(SIZE, SIZE, pipeline=pipe)
    canvas.send = lambda content, buffers=None: content.get("type") == "frame" and canvas._handle_custom_msg(
        {"type": "ack", "seq": content["seq"]}, [])
    layer = canvas.add_layer("an apple")
    paint(canvas, layer, 8, 8, 32, 32)
    canvas.start()
    wait_until(lambda: pipe.compiling)
    wait_until(lambda: "compiles in the background" in canvas.status)
    during = canvas._runner.frames_generated
    for i in range(3):  # painting goes on while compiling
        paint(canvas, layer, 40, 8 * i, 8, 8)
        wait_until(lambda: canvas._runner.frames_generated > during)
        during = canvas._runner.frames_generated
    release.set()
    # Paint only once the compile thread has ended: the stream switches to the compiled model after a frame,
    # and a compile thread still alive through every frame of this stroke would leave it nothing to do that.
    wait_until(lambda: not pipe.compiling)
    paint(canvas, layer, 0, 40, 8, 8)
    wait_until(lambda: not pipe.compiling and not pipe.needs_warm_up)
    wait_until(lambda: "compiles in the background" not in canvas.status)
    calls = pipe.predictor.calls["compiled"]
    paint(canvas, layer, 0, 48, 8, 8)
    wait_until(lambda: pipe.predictor.calls["compiled"] > calls)
    canvas.stop()


def test_render_generates_until_the_image_settles(live, pipe):
    canvas = live()
    layer = canvas.add_layer("an apple")
    paint(canvas, layer, 8, 8, 32, 32)
    image = canvas.render()  # without starting the stream
    assert not canvas.running and canvas.status.startswith("rendered: the image has settled")
    assert pipe.converged and canvas._runner.frames_generated == pipe.num_slots
    wait_until(lambda: frames(canvas) and frames(canvas)[-1][0]["format"] == "png")
    assert np.array_equal(np.asarray(decode(frames(canvas)[-1]).convert("RGB")), np.asarray(image))
    generated = canvas._runner.frames_generated
    assert np.array_equal(np.asarray(canvas.render()), np.asarray(image))  # already settled: no model call
    assert canvas._runner.frames_generated == generated

    canvas.start()
    paint(canvas, layer, 0, 0, 8, 8, value=0)  # erases nothing: the stream runs again and settles on the same image
    wait_until(lambda: canvas.status.startswith("still"))
    canvas.stop()
    assert np.array_equal(np.asarray(canvas.frame), np.asarray(image))


def test_render_from_the_browser_button(live, make_canvas):
    canvas = live()
    canvas._handle_custom_msg({"type": "action", "name": "render"}, [])
    assert canvas.status.startswith("rendered") and frames(canvas)
    masks_only = make_canvas(SIZE, SIZE)
    masks_only._handle_custom_msg({"type": "action", "name": "render"}, [])
    assert "needs a pipeline" in masks_only.status and masks_only.sent.of_type("error")


def test_the_canvas_seed_is_the_one_that_generates(make_canvas, tiny_pipelines):
    first, second, third = tiny_pipelines(3)
    seeded = make_canvas(SIZE, SIZE, pipeline=first, seed=7)
    layer = seeded.add_layer("a red apple")
    seeded.set_mask(layer, np.ones((SIZE, SIZE), bool))
    seeded.step()
    assert first.seed == 7  # given at creation, before the runner existed
    seeded.attach_pipeline(second)
    seeded.step()
    assert second.seed == 7
    other = make_canvas(SIZE, SIZE, pipeline=second, seed=3)  # shares the pipeline
    other.add_layer("a blue cup")
    other.step()
    assert second.seed == 3
    seeded.step()  # back to the first canvas: its own seed again
    assert second.seed == 7


def test_a_shared_pipeline_settled_on_another_canvas_does_not_count_as_settled_here(make_canvas, tiny_pipelines):
    (shared,) = tiny_pipelines(1)
    a, b = make_canvas(SIZE, SIZE, pipeline=shared), make_canvas(SIZE, SIZE, pipeline=shared)
    for canvas, prompt in ((a, "a red apple"), (b, "a blue cup")):
        canvas.set_mask(canvas.add_layer(prompt), np.ones((SIZE, SIZE), bool))
    one_step = np.asarray(a.step())
    b.render()
    assert shared.converged
    settled = np.asarray(a.render())
    alone = make_canvas(SIZE, SIZE, pipeline=tiny_pipelines(1)[0])
    alone.set_mask(alone.add_layer("a red apple"), np.ones((SIZE, SIZE), bool))
    assert not np.array_equal(settled, one_step) and np.array_equal(settled, np.asarray(alone.render()))


def test_attaching_a_pipeline_while_streaming_keeps_streaming(live, tiny_pipelines):
    canvas = live()
    canvas.set_mask(canvas.add_layer("a red apple"), np.ones((SIZE, SIZE), bool))
    canvas.start()
    canvas.attach_pipeline(tiny_pipelines(1)[0])
    assert canvas.running and canvas._runner.running
    wait_until(lambda: canvas.status.startswith("still"))
    canvas.stop()


def test_a_status_about_the_running_stream_is_dropped_once_it_is_paused(live):
    canvas = live()
    canvas.start()
    canvas.stop()
    canvas._runner._show_status("generating", while_running=True)  # as the stream's threads queue it
    assert canvas.status.startswith("paused")


def test_latency_counts_each_stroke_once(live):
    canvas = live()
    layer = canvas.add_layer("a red apple")
    canvas.start()
    paint(canvas, layer)
    wait_until(lambda: canvas.stats.get("latency_ms") is not None and canvas.status.startswith("still"))
    first = canvas.stats["latency_ms"]

    def settle_after(change):
        """Make a change and wait until the stream has settled on it: a new lossless still frame, sent after
        every frame the change made (the old "still" status may be read before the stream has even woken up)."""
        stills = len([c for c, _ in frames(canvas) if c["format"] == "png"])
        change()
        wait_until(lambda: len([c for c, _ in frames(canvas) if c["format"] == "png"]) > stills)

    time.sleep(1.0)  # a stroke counted again would now show a latency of over a second
    settle_after(lambda: canvas.update_layer(layer, visible=False))
    settle_after(lambda: canvas.update_layer(layer, visible=True))  # the stroke's mask is sent again: no new stroke
    assert canvas.stats["latency_ms"] == first
    settle_after(lambda: canvas.set_mask(layer, np.zeros((SIZE, SIZE), bool)))  # from Python: no stroke to time
    assert canvas.stats["latency_ms"] == first
    canvas.stop()


def test_a_layer_reusing_a_removed_layers_id_gets_its_own_mask_to_the_engine(make_canvas, tiny_pipelines):
    (pipeline,) = tiny_pipelines(1)
    canvas = make_canvas(SIZE, SIZE, pipeline=pipeline)
    half = np.zeros((SIZE, SIZE), bool)
    half[:, : SIZE // 2] = True
    canvas.set_mask(canvas.add_layer("a red apple", id="apple"), np.ones((SIZE, SIZE), bool))
    canvas.step()
    canvas.remove_layer("apple")
    canvas.add_layer("a red apple", id="apple")
    canvas.set_mask("apple", half)
    reference = make_canvas(SIZE, SIZE, pipeline=tiny_pipelines(1)[0])
    reference.set_mask(reference.add_layer("a red apple", id="apple"), half)
    assert np.array_equal(np.asarray(canvas.render()), np.asarray(reference.render()))


def test_no_frame_follows_a_stop_not_even_one_being_made_when_it_came(live, pipe, monkeypatch):
    canvas = live()
    canvas.add_layer("an apple")
    making, release = threading.Event(), threading.Event()
    original = type(pipe).__call__

    def slow(self, *args, **kwargs):
        if canvas._runner.frames_generated == 2:  # hold the third frame until the stop has returned
            making.set()
            assert release.wait(30)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(pipe), "__call__", slow)
    paint(canvas, canvas.layers[0]["id"])
    canvas.start()
    assert making.wait(30)
    canvas.stop()
    count, queued = canvas._runner.frames_generated, canvas._runner.sender._seq
    release.set()
    wait_until(lambda: not stream_threads())
    assert canvas._runner.frames_generated == count == 2
    wait_until(lambda: len(frames(canvas)) == queued)  # frames made before the stop still reach the view
    time.sleep(0.2)  # the encoder had its chance to send more
    assert [content["seq"] for content, _ in frames(canvas)] == list(range(1, queued + 1))
    canvas.start()  # and the stream goes on from there
    wait_until(lambda: canvas._runner.frames_generated > count)
    canvas.stop()


def test_a_frame_dropped_at_a_stop_is_not_taken_for_the_settled_image(make_canvas, tiny_pipelines, monkeypatch):
    """Stopping while the frame that completes convergence is being made: that frame is dropped, but the
    pipeline has converged on it, so the scene must not count as settled on the older frame shown."""
    stopped_pipe, twin_pipe = tiny_pipelines(2)
    canvases = [make_canvas(SIZE, SIZE, pipeline=p) for p in (stopped_pipe, twin_pipe)]
    for canvas in canvases:
        canvas._runner.acknowledge = lambda seq: None  # no browser: never wait for acks
        canvas._runner.sender.max_in_flight = 10**9
        paint(canvas, canvas.add_layer("a red apple"))  # the whole canvas: the last frames differ most
    stopped, twin = canvases
    making, release = threading.Event(), threading.Event()
    original = type(stopped_pipe).__call__
    last = stopped_pipe.num_slots - 1

    def slow(self, *args, **kwargs):
        if self is stopped_pipe and stopped._runner.frames_generated == last:  # the frame that converges
            making.set()
            assert release.wait(30)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(stopped_pipe), "__call__", slow)
    stopped.start()
    assert making.wait(30)
    stopped.stop()
    release.set()
    wait_until(lambda: not stream_threads())
    assert stopped._runner.frames_generated == last
    with pytest.raises(RuntimeError, match="dropped"):  # the pipeline is ahead of the image shown
        stopped.inspect_slots()
    np.testing.assert_array_equal(np.asarray(stopped.render()), np.asarray(twin.render()))
    assert np.array_equal(np.asarray(stopped.inspect_slots().estimates[-1]), np.asarray(stopped.frame))
    assert stopped.status.startswith("rendered: the image has settled")


def test_a_canvas_inspects_its_last_frame_by_layer_id(make_canvas, tiny_pipelines):
    shared, = tiny_pipelines(1)
    canvas, other = make_canvas(SIZE, SIZE, pipeline=shared), make_canvas(SIZE, SIZE, pipeline=shared)
    sky = canvas.add_layer("a blue sky", mask_blur=0)
    paint(canvas, sky, 0, 0, SIZE, SIZE // 2)
    with pytest.raises(RuntimeError, match="press Step"):
        canvas.inspect_slots()
    canvas.step()
    seen = canvas.inspect_slots()
    assert seen.layer_ids == [sky] and seen.weights(sky).shape == (shared.num_slots, SIZE, SIZE)
    assert seen.weights(sky)[:, SIZE // 2 + 8:].max() == 0 and seen.weights(sky)[-1, : SIZE // 2 - 8].min() == 1
    cloud = canvas.add_layer("a white cloud", visible=False)  # a hidden layer is listed, with no weight
    with pytest.raises(RuntimeError, match="changed since the last frame"):
        canvas.inspect_slots()
    canvas.step()
    seen = canvas.inspect_slots()
    assert seen.layer_ids == [sky, cloud] and seen.weights(cloud).max() == 0 and seen.weights(sky).max() == 1
    with pytest.raises(KeyError, match="no background layer"):  # no background prompt on this canvas
        seen.weights("background")
    other.add_layer("a green field")
    other.step()  # the shared pipeline's last frame is the other canvas's now
    with pytest.raises(RuntimeError, match="another canvas"):
        canvas.inspect_slots()


def test_a_zero_one_uint8_mask_warns_where_a_person_hands_it_over_and_only_there(live, pipe):
    import warnings

    canvas = live()
    layer = canvas.add_layer("an apple")
    zero_one = np.zeros((SIZE, SIZE), np.uint8)
    zero_one[:8] = 1  # (mask > 0).astype(np.uint8): 1/255 coverage, a common slip
    with pytest.warns(UserWarning, match=r"only 0 and 1.*mask.astype\(bool\)") as record:
        canvas.set_mask(layer, zero_one)
    assert record[0].filename == __file__  # it names the person's own line
    with pytest.warns(UserWarning, match="only 0 and 1") as record:
        pipe.update_single_layer(pipe.num_layers, prompt="a pear", mask=zero_one)
    assert record[0].filename == __file__
    pipe.remove_layer(pipe.num_layers - 1)
    with warnings.catch_warnings():  # painted coverage (an eraser's edge leaves 1s) is nobody's slip: no warning
        warnings.simplefilter("error")
        paint(canvas, layer, 0, 0, 8, 8, value=1)
        canvas.step()
        canvas.set_mask(layer, zero_one * 255)


def test_the_region_mode_switches_while_streaming_and_the_frames_say_which(live, pipe):
    canvas = live()
    assert canvas.region_mode == pipe.region_mode == "exact"
    canvas.set_mask(canvas.add_layer("a red apple"), np.ones((SIZE, SIZE), bool))
    canvas.set_mask(canvas.add_layer("a green pear"), np.arange(SIZE)[None, :].repeat(SIZE, 0) < SIZE // 2)
    canvas.start()
    wait_until(lambda: canvas.stats.get("region_mode") == "exact")
    canvas.region_mode = "attention"  # as the views' "fast regions" toggle does
    wait_until(lambda: canvas.stats.get("region_mode") == "attention")
    assert pipe.region_mode == "attention" and canvas.running
    made = canvas._runner.frames_generated
    wait_until(lambda: canvas.status.startswith("still"))  # the stream went on to settle in the new mode
    assert canvas._runner.frames_generated > made and pipe.num_layers == 2
    canvas.stop()


def test_a_canvas_follows_its_pipelines_region_mode_unless_told_and_refuses_what_the_model_cannot(make_canvas):
    from traitlets import TraitError

    from semdraw_widget import StreamMultiDiffusion

    fast = StreamMultiDiffusion("cpu", hf_key="tiny", height=SIZE, width=SIZE, region_mode="attention")
    assert make_canvas(SIZE, SIZE, pipeline=fast).region_mode == "attention"
    told = make_canvas(SIZE, SIZE, pipeline=fast, region_mode="exact")
    told.step()
    assert told.region_mode == fast.region_mode == "exact"
    sd3 = make_canvas(SIZE, SIZE, pipeline=StreamMultiDiffusion("cpu", hf_key="tiny-3", height=SIZE, width=SIZE))
    with pytest.raises(TraitError, match="region_mode='exact'"):
        sd3.region_mode = "attention"
    assert sd3.region_mode == "exact"
