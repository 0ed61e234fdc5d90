"""The optional fast path on the CPU: torch.compile in the background (inductor), its fallbacks.

CUDA-graph capture needs a GPU and is exercised by `benchmarks/gpu_run.sh`; everything else of
`AcceleratedPredictor` -- when frames use which path, background compiling, one compile for every
layer count, failure handling -- is the same on the CPU and tested here.
"""

import threading
import time

import pytest
import torch

from semdraw_widget.engine import StreamMultiDiffusion, load_model
from semdraw_widget.engine import accel

from engine_helpers import SIZE, box_mask, scene
from waiting import wait_until


@pytest.fixture(scope="module")
def sd3():
    # the SD3 miniature: the cheapest of the three to compile on a CPU
    return load_model("tiny-3", device="cpu")


def make(model, **kwargs):
    return StreamMultiDiffusion("cpu", model=model, height=SIZE, width=SIZE, **kwargs)


def latent(stream):
    return stream(output_type="latent")


def test_inductor_compiles_in_the_background_and_then_serves_every_layer_count(sd3):
    from torch._dynamo.utils import counters

    compiled, eager = scene(make(sd3, compile="inductor")), scene(make(sd3))
    assert torch.equal(latent(compiled), latent(eager))  # nothing is compiled before warm_up
    assert compiled.needs_warm_up and not compiled.compiling

    assert compiled.warm_up(block=False) == 0  # starts the compile, does not wait for it
    assert compiled.compiling and not compiled.needs_warm_up
    during = 0
    while compiled.compiling:  # frames go on, uncompiled and unchanged, meanwhile
        assert torch.equal(latent(compiled), latent(eager))
        during += 1
    assert during >= 1
    assert compiled.compile_error is None
    assert compiled.needs_warm_up  # its batch size is now ready to be switched over
    assert compiled.warm_up(block=False) == 1 and not compiled.needs_warm_up

    calls = dict(compiled.predictor.calls)
    for _ in range(3):
        torch.testing.assert_close(latent(compiled), latent(eager), atol=1e-4, rtol=1e-4)
    assert compiled.predictor.calls["compiled"] == calls["compiled"] + 3
    assert compiled.predictor.calls["eager"] == calls["eager"]

    graphs = counters["stats"]["unique_graphs"]
    for stream in (compiled, eager):  # one more layer: a new batch size, the same compiled model
        stream.update_single_layer(2, prompt="a blue cup", mask=box_mask(0, 20, 40, 64))
    torch.testing.assert_close(latent(compiled), latent(eager), atol=1e-4, rtol=1e-4)
    assert compiled.predictor.calls["eager"] == calls["eager"]
    assert counters["stats"]["unique_graphs"] == graphs
    assert not compiled.needs_warm_up


def test_a_failed_compile_is_reported_and_frames_go_on_without_it(sd3, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(accel.torch, "compile", broken)
    compiled, eager = scene(make(sd3, compile="inductor")), scene(make(sd3))
    latent(compiled), latent(eager)
    compiled.warm_up(block=False)
    wait_until(lambda: not compiled.compiling, timeout=600.0)
    assert "no C++ compiler found" in compiled.compile_error
    compiled.warm_up(block=False)  # nothing left to do on a CPU: the eager model is the path
    assert not compiled.needs_warm_up and compiled.predictor.pending == []
    assert torch.equal(latent(compiled), latent(eager))

    blocking = scene(make(sd3, compile="inductor"))
    blocking.warm_up()  # a blocking warm-up fails the same way, without raising
    assert "no C++ compiler found" in blocking.compile_error


def test_a_new_batch_size_while_compiling_waits_for_that_compile(sd3, monkeypatch):
    """A second layer count met during the compile joins it instead of starting another one."""
    release = threading.Event()
    compiled_shapes = []

    def slow_compile(self, signature):
        compiled_shapes.append(signature[0][0])
        release.wait(30)

    monkeypatch.setattr(accel.torch, "compile", lambda fn, **kwargs: fn)
    monkeypatch.setattr(accel.AcceleratedPredictor, "_compile_kind", slow_compile)
    stream = scene(make(sd3, compile="inductor"))
    latent(stream)
    stream.warm_up(block=False)
    stream.update_single_layer(2, prompt="a blue cup", mask=box_mask(0, 20, 40, 64))
    latent(stream)
    assert stream.compiling and not stream.needs_warm_up  # same kind as the compile under way
    release.set()
    wait_until(lambda: not stream.compiling, timeout=600.0)
    assert stream.warm_up(block=False) == 2 and not stream.needs_warm_up
    assert len(compiled_shapes) == 1


class _LinearFamily:
    """Just what `AcceleratedPredictor` reads of a family: a device and a `predict` that calls a module."""

    device = torch.device("cpu")

    def __init__(self, fails: bool = False):
        self.layer, self.fails = torch.nn.Linear(4, 4), fails

    def predict(self, latents, timesteps, cond):
        if self.fails:
            raise ValueError("bad input")
        return self.layer(latents)


def test_a_frame_that_meets_the_compile_s_fx_trace_is_made_again_and_a_real_failure_still_raises():
    # While torch.fx traces, nn.Module.__call__ is replaced for every thread; inductor traces a module of its own
    # during a compile, so a frame running eagerly beside it can meet that moment (once, in CI, under load).
    inside = threading.Event()

    class HeldOpen(torch.nn.Module):
        def forward(self, x):
            inside.set()
            time.sleep(0.3)  # the trace stays open while the frame below runs
            return x

    tracer = threading.Thread(target=torch.fx.symbolic_trace, args=(HeldOpen(),))
    family = _LinearFamily()
    predictor = accel.AcceleratedPredictor(family, mode="inductor")
    predictor._compile_thread = tracer  # the tracing thread stands for the background compile
    tracer.start()
    assert inside.wait(10.0)
    latents = torch.ones(2, 4)
    out = predictor.predict(latents, torch.zeros(2), {})
    tracer.join()
    torch.testing.assert_close(out, family.layer(latents))

    broken, compile_ends = accel.AcceleratedPredictor(_LinearFamily(fails=True), mode="inductor"), threading.Event()
    broken._compile_thread = threading.Thread(target=compile_ends.wait, args=(10.0,), daemon=True)
    broken._compile_thread.start()
    try:
        with pytest.raises(ValueError, match="bad input"):
            broken.predict(latents, torch.zeros(2), {})
    finally:
        compile_ends.set()


def test_compile_argument_is_checked():
    with pytest.raises(ValueError, match="compile must be"):
        accel.compile_mode("fast")
    assert accel.compile_mode(True) == "cudagraph" and accel.compile_mode(False) is None


def test_a_failed_graph_capture_is_reported_and_frames_go_on_without_graphs(sd3, monkeypatch):
    class Uncapturable:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(accel, "_Graph", Uncapturable)
    monkeypatch.setattr(accel.torch.cuda, "graph_pool_handle", lambda: None)
    stream, eager = scene(make(sd3, compile=True)), scene(make(sd3))
    stream.predictor.uses_graphs = True  # as on a GPU, where a capture may meet an op that cannot be captured
    assert torch.equal(latent(stream), latent(eager))
    assert stream.needs_warm_up
    assert stream.warm_up() == 0
    assert "stream is capturing" in stream.compile_error
    assert not stream.needs_warm_up and not stream.predictor.uses_graphs
    assert torch.equal(latent(stream), latent(eager))


@pytest.mark.parametrize("key", ["tiny", "tiny-xl", "tiny-3"])
def test_every_family_traces_with_a_dynamic_batch(key):
    """What `compile="inductor"` relies on: one trace of `predict` serves every batch size (Dynamo only,
    with the eager backend, so it takes seconds; the real compile is tested above on the SD3 miniature)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    family = load_model(key, device="cpu")
    torch._dynamo.reset()
    counters.clear()
    traced = torch.compile(family.predict, backend="eager")
    for batch in (5, 10):
        latents = torch.randn(batch, family.latent_channels, 8, 8)
        timesteps = torch.linspace(999, 100, batch)
        timesteps = timesteps if key == "tiny-3" else timesteps.long()
        cond = family.encode_prompts([str(i) for i in range(batch)])
        for tensor in (latents, timesteps, *cond.values()):
            torch._dynamo.mark_dynamic(tensor, 0)
        with torch.no_grad():
            expected = family.predict(latents, timesteps, cond)  # first, as `_compile_kind` does: fills lazy caches
            torch.testing.assert_close(traced(latents, timesteps, cond), expected)
    assert counters["stats"]["unique_graphs"] == 1
