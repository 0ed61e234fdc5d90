import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import traitlets

from waiting import wait_until
from widget_helpers import from_browser, stroke_message
from semdraw_widget import protocol, widget as widget_module
from semdraw_widget.canvas_state import CanvasState


def test_canvas_works_without_any_model(make_canvas):
    canvas = make_canvas(width=64, height=32)
    apple = canvas.add_layer("a red apple", color="#e53935")
    sky = canvas.add_layer("sky")
    assert [layer["id"] for layer in canvas.layers] == [apple, sky]
    assert canvas.active_layer == apple and not canvas.has_pipeline
    from_browser(canvas, *stroke_message(apple, 4, 2, 10, 6))
    masks = canvas.masks
    assert masks.shape == (2, 32, 64)
    assert masks[0, 2:8, 4:14].min() == 1.0 and masks[0].sum() == 60 and masks[1].sum() == 0
    label = canvas.label_map()
    assert label[3, 5] == 0 and label[0, 0] == -1


def test_deflated_strokes_and_observers(make_canvas):
    canvas = make_canvas(width=32, height=32)
    layer = canvas.add_layer("a")
    seen = []
    canvas.observe_masks(seen.append)
    from_browser(canvas, *stroke_message(layer, 0, 0, 32, 32, value=128, enc="deflate"))
    assert seen == [layer]
    assert canvas.get_mask(layer)[5, 5] == pytest.approx(128 / 255)
    canvas.unobserve_masks(seen.append)
    from_browser(canvas, *stroke_message(layer, 0, 0, 1, 1))
    assert seen == [layer]
    canvas.unobserve_masks(seen.append)  # one not (or no longer) observing: no error, as traitlets' unobserve


def test_the_canvas_mask_observers_are_its_states(make_canvas):
    canvas = make_canvas(width=16, height=16)
    layer = canvas.add_layer("a")
    seen = []
    canvas.observe_masks(seen.append)
    canvas.state.set_mask(layer, np.ones((16, 16), bool))
    canvas.state.unobserve_masks(seen.append)  # one list of observers, whichever side registered them
    canvas.set_mask(layer, np.zeros((16, 16), bool))
    assert seen == [layer]


@pytest.mark.parametrize(
    "content, buffers, needle",
    [
        ({"type": "mask", "layer": "L", "x": 30, "y": 0, "w": 4, "h": 1}, [bytes(4)], "outside"),
        ({"type": "mask", "layer": "L", "x": 0, "y": 0, "w": 4, "h": 1}, [bytes(3)], "needs 4"),
        ({"type": "teleport"}, [], "unknown message type"),
        ({"type": "action", "name": "start"}, [], "needs a pipeline"),
        ({"type": "ack"}, [], "seq"),
        (["not", "a", "dict"], [], "JSON object"),
    ],
)
def test_malformed_messages_are_visible_errors_and_change_nothing(make_canvas, content, buffers, needle):
    canvas = make_canvas(width=32, height=32)
    canvas.add_layer("a", id="L")
    canvas.set_mask("L", np.ones((32, 32), bool))
    canvas.sent.clear()
    before = canvas.masks.copy()
    from_browser(canvas, content, buffers)
    assert needle in canvas.status
    errors = canvas.sent.of_type("error")
    assert len(errors) == 1 and needle in errors[0][0]["message"]
    np.testing.assert_array_equal(canvas.masks, before)


def test_a_view_update_that_adds_a_layer_and_makes_it_active_at_once_is_taken(make_canvas):
    """The front end merges held-back updates: a new layer and `active_layer` naming it arrive together."""
    canvas = make_canvas(width=32, height=32)
    canvas.add_layer("a", id="L")
    canvas.set_state({"layers": [*canvas.layers, {"id": "N", "name": "new"}], "active_layer": "N"})
    assert [layer["id"] for layer in canvas.layers] == ["L", "N"] and canvas.active_layer == "N"
    assert canvas.state.layer_ids == ["L", "N"]
    canvas.set_state({"layers": [canvas.layers[1]], "active_layer": "N"})  # and deleting the other one
    assert canvas.state.layer_ids == ["N"] and canvas.active_layer == "N"
    canvas.set_state({"active_layer": "ghost"})  # from a view: reported, not raised
    assert canvas.active_layer == "N" and "unknown layer 'ghost'" in canvas.status


def test_a_bad_value_in_a_view_update_is_reported_and_does_not_take_the_rest_down(make_canvas):
    canvas = make_canvas(width=32, height=32)
    canvas.add_layer("a", id="L")
    canvas.set_state({"tool": "spray can", "layers": [*canvas.layers, {"id": "N"}], "active_layer": "N", "brush_size": 9})
    assert canvas.state.layer_ids == ["L", "N"] and canvas.active_layer == "N" and canvas.brush_size == 9
    assert canvas.tool == "brush"
    assert "ignored a change of 'tool'" in canvas.status
    errors = canvas.sent.of_type("error")
    assert len(errors) == 1 and "spray can" in errors[0][0]["message"]


def test_a_stroke_on_a_layer_that_arrives_late_waits_for_it(make_canvas):
    """The front end may hold back a layers update while an earlier one is unanswered; a stroke sent
    meanwhile on the new (or restored) layer is applied once the layer arrives."""
    canvas = make_canvas(width=32, height=32)
    canvas.add_layer("a", id="L")
    from_browser(canvas, *stroke_message("N", 0, 0, 8, 8))
    assert "N" not in [layer["id"] for layer in canvas.layers] and not canvas.sent.of_type("error")
    canvas.layers = [*canvas.layers, {"id": "N", "name": "new"}]  # the view's layers update, late
    assert canvas.get_mask("N")[:8, :8].min() == 1.0 and canvas.get_mask("N")[8:].max() == 0.0
    assert [c["layer"] for c, _ in canvas.sent.of_type("mask") if c["origin"] == "peer"] == ["N"]
    assert not canvas.sent.of_type("error")


def test_each_held_stroke_gets_its_full_wait(make_canvas, monkeypatch):
    from semdraw_widget import stroke_inbox

    # No fixed sleep decides the outcome: the test waits for the first expiry check itself, and B is so much
    # younger than A that a late timer (up to 1.5 s) or a slow test thread (up to 3 s) still leaves it waiting.
    monkeypatch.setattr(stroke_inbox, "HOLD_UNKNOWN_LAYER_S", 3.0)
    canvas = make_canvas(width=32, height=32)
    checks = []
    expire = canvas._inbox._expire
    monkeypatch.setattr(canvas._inbox, "_expire", lambda: (expire(), checks.append(time.perf_counter())))
    from_browser(canvas, *stroke_message("A", 0, 0, 4, 4))  # arms the one pending check, 3 s from now
    time.sleep(1.5)
    from_browser(canvas, *stroke_message("B", 8, 8, 4, 4))  # held at least 1.5 s after A
    canvas.layers = [{"id": "A"}]
    wait_until(lambda: checks, timeout=30, what="the check at the end of A's hold")  # B had at most 1.5 s of its 3
    assert not canvas.sent.of_type("error"), "B was dropped at the end of A's hold, not its own"
    canvas.layers = [{"id": "A"}, {"id": "B"}]
    assert canvas.get_mask("A")[:4, :4].min() == 1.0 and canvas.get_mask("B")[8:12, 8:12].min() == 1.0
    assert not canvas.sent.of_type("error")


def test_a_stroke_on_a_layer_that_never_arrives_is_a_visible_error(make_canvas, monkeypatch):
    from semdraw_widget import stroke_inbox

    monkeypatch.setattr(stroke_inbox, "HOLD_UNKNOWN_LAYER_S", 0.05)
    canvas = make_canvas(width=32, height=32)
    canvas.add_layer("a", id="L")
    before = canvas.masks.copy()
    from_browser(canvas, *stroke_message("ghost", 0, 0, 1, 1))
    wait_until(lambda: canvas.sent.of_type("error"), timeout=10)
    errors = canvas.sent.of_type("error")
    assert len(errors) == 1 and "unknown layer 'ghost'" in errors[0][0]["message"]
    assert "unknown layer 'ghost'" in canvas.status
    np.testing.assert_array_equal(canvas.masks, before)


def test_set_mask_appears_in_the_browser_as_an_undoable_edit(make_canvas):
    canvas = make_canvas(width=40, height=24)
    layer = canvas.add_layer("a")
    mask = np.zeros((24, 40), np.float32)
    mask[4:10, 6:30] = 0.5
    canvas.set_mask(layer, mask)
    rebuilt = np.zeros((24, 40), np.uint8)
    sent = canvas.sent.of_type("mask")
    assert sent and all(content["origin"] == "python" for content, _ in sent)
    for content, buffers in sent:
        patch = protocol.decode_mask_message(content, buffers, 40, 24)
        rebuilt[patch.y : patch.y + patch.h, patch.x : patch.x + patch.w] = patch.data
    np.testing.assert_array_equal(rebuilt, np.rint(mask * 255).astype(np.uint8))
    with pytest.raises(ValueError, match=r"\(24, 40\)"):
        canvas.set_mask(layer, np.ones((40, 24)))


def test_a_new_view_gets_every_mask_and_the_background(make_canvas):
    canvas = make_canvas(width=16, height=16)
    a, b = canvas.add_layer("a"), canvas.add_layer("b")
    canvas.set_mask(b, np.eye(16, dtype=bool))
    canvas.set_background_image(np.full((16, 16, 3), 40, np.uint8))
    assert canvas.background["has_image"]
    canvas.sent.clear()
    from_browser(canvas, {"type": "sync"})
    synced = {content["layer"]: (content, buffers) for content, buffers in canvas.sent.of_type("mask")}
    assert set(synced) == {a, b} and all(content["origin"] == "sync" for content, _ in synced.values())
    patch = protocol.decode_mask_message(*synced[b], 16, 16)
    np.testing.assert_array_equal(patch.data, np.eye(16, dtype=np.uint8) * 255)
    assert len(canvas.sent.of_type("background_image")) == 1
    assert canvas.sent[-1][0] == {"type": "synced"}  # after every mask: the view may paint now


def test_a_sync_is_addressed_to_the_view_that_asked(make_canvas):
    # Other views may hold strokes the kernel has not applied yet: they skip replies meant for another view.
    canvas = make_canvas(width=16, height=16)
    a = canvas.add_layer("a")
    canvas.set_background_image(np.full((16, 16, 3), 40, np.uint8))
    canvas.sent.clear()
    from_browser(canvas, {"type": "sync", "view": "v2"})
    replies = [content for content, _ in canvas.sent if content["type"] != "frame"]
    assert [c["type"] for c in replies] == ["mask", "background_image", "synced"]
    assert all(c["view"] == "v2" for c in replies) and replies[0]["layer"] == a
    canvas.sent.clear()
    from_browser(canvas, {"type": "sync", "view": 7})
    assert not canvas.sent.of_type("mask") and "view must be a string" in canvas.status


def test_layer_edits_from_the_browser_follow_and_bad_ones_are_reverted(make_canvas):
    canvas = make_canvas(width=16, height=16)
    a = canvas.add_layer("a")
    canvas.set_mask(a, np.ones((16, 16), bool))
    canvas.layers = [{**canvas.layers[0], "prompt": "an apple"}, {"id": "fresh", "prompt": "pear"}]
    assert canvas.state.layer(a)["prompt"] == "an apple"
    assert canvas.layers[1]["color"].startswith("#") and canvas.layers[1]["mask_blur"] == 8.0  # defaults filled in
    assert canvas.masks.shape == (2, 16, 16) and canvas.get_mask(a).min() == 1.0
    good = canvas.layers
    canvas.layers = [{"id": a, "mask_strength": "lots"}]
    assert canvas.layers == good and "mask_strength" in canvas.status
    canvas.layers = [canvas.layers[1]]  # the browser deleted the active layer
    assert canvas.active_layer == "fresh"
    with pytest.raises(traitlets.TraitError, match="unknown layer"):
        canvas.active_layer = "nope"


def test_background_prompt_and_uploaded_image(make_canvas):
    import io

    from PIL import Image

    canvas = make_canvas(width=16, height=8, background_prompt="a meadow")
    assert canvas.state.background["prompt"] == "a meadow"
    canvas.background = {**canvas.background, "negative_prompt": "ugly"}
    assert canvas.state.background["negative_prompt"] == "ugly"
    out = io.BytesIO()
    Image.new("RGB", (32, 16), (10, 20, 30)).save(out, format="PNG")
    from_browser(canvas, {"type": "background_image", "format": "png"}, [out.getvalue()])
    assert canvas.background["has_image"] and canvas.background_image.size == (16, 8)
    canvas.background = {"prompt": "a beach"}  # a partial dict: the rest is empty text, has_image stays true
    assert canvas.background == {"prompt": "a beach", "negative_prompt": "", "has_image": True}
    assert canvas.state.background == {"prompt": "a beach", "negative_prompt": ""}
    from_browser(canvas, {"type": "background_image", "clear": True})
    assert not canvas.background["has_image"] and canvas.background_image is None


def test_size_is_validated_and_fixed(make_canvas):
    with pytest.raises(ValueError, match="multiple of 8"):
        make_canvas(width=500, height=512)
    canvas = make_canvas(width=16, height=16)
    with pytest.raises(traitlets.TraitError, match="fixed"):
        canvas.width = 24


def test_save_and_load_keep_prompts_settings_and_masks(make_canvas, tmp_path):
    canvas = make_canvas(width=24, height=16, seed=7)
    a = canvas.add_layer("a red apple", mask_blur=2)
    canvas.add_layer("sky")
    canvas.set_mask(a, np.tri(16, 24, dtype=bool))
    path = canvas.save(tmp_path / "scene.semdraw")
    loaded = widget_module.SemanticCanvas.load(path)
    try:
        assert loaded.layers == canvas.layers and loaded.seed == 7 and loaded.active_layer == a
        np.testing.assert_array_equal(loaded.masks, canvas.masks)
    finally:
        loaded.close()


def test_missing_front_end_is_a_clear_error(tmp_path):
    """A source checkout without the JS build: the import works, and making a canvas says how to build.
    The package is copied without its static/ folder; the real build is left alone (others use it)."""
    package = Path(widget_module.__file__).parent
    shutil.copytree(package, tmp_path / package.name, ignore=shutil.ignore_patterns("static", "__pycache__"))
    script = (
        "import semdraw_widget\n"
        "try:\n"
        "    semdraw_widget.SemanticCanvas()\n"
        "except semdraw_widget.FrontendNotBuiltError as exc:\n"
        "    print('raised:', exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("raised:") and "npm run build" in result.stdout
    assert str(tmp_path / package.name) in result.stdout  # the copy was used, not the installed package


def test_a_layer_id_cannot_change(make_canvas):
    canvas = make_canvas(width=16, height=16)
    layer = canvas.add_layer("a")
    with pytest.raises(ValueError, match="id cannot change"):
        canvas.update_layer(layer, id="new")
    assert canvas.state.layer_ids == [layer] and canvas.masks.shape == (1, 16, 16)  # masks still readable


def test_load_lets_keyword_arguments_win_and_rejects_a_bad_seed(make_canvas, tmp_path):
    import json
    import zipfile

    canvas = make_canvas(width=16, height=16, seed=7)
    first, second = canvas.add_layer("a"), canvas.add_layer("b")
    canvas.active_layer = second
    path = canvas.save(tmp_path / "scene.semdraw")
    loaded = widget_module.SemanticCanvas.load(path, seed=3, active_layer=first)
    assert loaded.seed == 3 and loaded.active_layer == first
    loaded.close()
    bad = tmp_path / "bad.semdraw"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(bad, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            target.writestr(name, json.dumps({**json.loads(data), "seed": "abc"}) if name == "scene.json" else data)
    with pytest.raises(ValueError, match=r"bad.semdraw is damaged: its seed must be a whole number"):
        widget_module.SemanticCanvas.load(bad)


def test_the_seed_is_range_checked(make_canvas):
    canvas = make_canvas(width=16, height=16, seed=2**63 - 1)
    for bad in (2**80, 2**63, -1):
        with pytest.raises(traitlets.TraitError, match=r"0 to 2\*\*63 - 1"):
            canvas.seed = bad
    canvas.set_state({"seed": 2**64})  # from a view: reported and sent back, not raised
    assert canvas.seed == 2**63 - 1 and "ignored a change of 'seed'" in canvas.status


def test_a_bad_background_prompt_is_an_error_not_a_status(make_canvas):
    with pytest.raises(ValueError, match="^background prompt is 3000 characters long"):
        make_canvas(width=16, height=16, background_prompt="x" * 3000)
    canvas = make_canvas(width=16, height=16, background_prompt="a meadow")
    with pytest.raises(traitlets.TraitError, match="^background negative_prompt must be a string"):
        canvas.background = {**canvas.background, "negative_prompt": None}
    assert canvas.background["prompt"] == canvas.state.background["prompt"] == "a meadow"
    canvas.set_state({"background": {"prompt": "x" * 3000, "negative_prompt": ""}})  # from a view: reported
    assert canvas.state.background["prompt"] == "a meadow" and "characters long" in canvas.status


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.full((16, 16, 3), 0.5), 128),  # floats in [0, 1] are scaled, not cast to black
        (np.full((16, 16, 3), 0.5, np.float32), 128),
        (np.full((16, 16, 3), 200, np.uint8), 200),
        (np.full((16, 16, 3), 200, np.int64), 200),
        (np.full((16, 16, 4), 90, np.uint8), 90),
        (np.full((16, 16), 1.0), 255),
    ],
)
def test_background_image_arrays(make_canvas, array, expected):
    canvas = make_canvas(width=16, height=16)
    canvas.set_background_image(array)
    assert (np.asarray(canvas.background_image) == expected).all()


@pytest.mark.parametrize(
    "array, needle",
    [
        (np.zeros((3, 16, 16), np.uint8), r"\(H, W, 3\).*channels first"),
        (np.zeros((16, 16, 2), np.uint8), r"\(H, W, 4\) RGBA or \(H, W\) grey; got \(16, 16, 2\)"),
        (np.full((16, 16, 3), np.nan), r"\[0, 1\] \(no NaN\)"),
        (np.full((16, 16, 3), 2.0), r"\[0, 1\]"),
        (np.full((16, 16, 3), 300, np.int64), "0..255"),
    ],
)
def test_bad_background_image_arrays_are_clear_errors(make_canvas, array, needle):
    canvas = make_canvas(width=16, height=16)
    with pytest.raises(ValueError, match=needle):
        canvas.set_background_image(array)
    assert canvas.background_image is None


def test_canvas_over_an_existing_state(make_canvas):
    state = CanvasState(16, 8)
    state.add_layer("shared")
    canvas = make_canvas(16, 8, state=state)
    assert canvas.layers == state.layers and canvas.state is state


def test_strokes_are_echoed_to_the_other_views(make_canvas):
    canvas = make_canvas(width=16, height=16)
    layer = canvas.add_layer("a")
    canvas.sent.clear()
    content, buffers = stroke_message(layer, 2, 3, 4, 5, value=200)
    from_browser(canvas, {**content, "view": "v1"}, buffers)
    (echo, echo_buffers), = canvas.sent.of_type("mask")
    assert echo["origin"] == "peer" and echo["view"] == "v1"  # the painting view skips its own echo
    patch = protocol.decode_mask_message(echo, echo_buffers, 16, 16)
    assert (patch.x, patch.y, patch.w, patch.h) == (2, 3, 4, 5) and (patch.data == 200).all()


@pytest.mark.parametrize("max_in_flight", [0, -1, 1.5, True, "2"])
def test_a_bad_max_in_flight_is_refused_before_any_model_loads(make_canvas, max_in_flight):
    with pytest.raises(ValueError, match="max_in_flight must be a whole number of frames, at least 1"):
        make_canvas(16, 16, model="a-model-that-would-fail-to-load", max_in_flight=max_in_flight)


def test_the_bands_of_one_large_set_mask_share_an_edit_number(make_canvas):
    # 4096 x 2056 bytes is over one message's budget: two bands, which the view undoes as one step
    canvas = make_canvas(width=4096, height=2056)
    layer = canvas.add_layer("a")
    canvas.sent.clear()
    canvas.set_mask(layer, np.ones((2056, 4096), bool))
    canvas.set_mask(layer, np.zeros((2056, 4096), bool))
    edits = [content["edit"] for content, _ in canvas.sent.of_type("mask")]
    assert len(edits) == 4 and edits[0] == edits[1] != edits[2] == edits[3]


def test_traits_set_from_several_threads_outside_a_kernel_do_not_collide(make_canvas):
    """Without a kernel loop the stream's threads set traits directly; ipywidgets' hold_sync is not
    thread-safe ("Set changed size during iteration" at random), so the canvas serialises those writes."""
    import threading

    canvas = make_canvas(width=32, height=32)
    errors, end = [], time.monotonic() + 2.0

    def hammer(values):
        count = 0
        while time.monotonic() < end:
            count += 1
            try:
                canvas.set_traits_threadsafe(**values(count))
            except RuntimeError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(lambda i: {"status": f"still {i}"},)),  # as the encoder does
               threading.Thread(target=hammer, args=(lambda i: {"status": f"s{i}", "running": bool(i % 2)},))]
    for thread in threads:
        thread.start()
    hammer(lambda i: {"status": f"main {i}"})  # as render() and stop() do on the main thread
    for thread in threads:
        thread.join()
    assert not errors, errors[:2]
