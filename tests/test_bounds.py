"""Issue 16: no small input may cost gigabytes, and errors quote at most a short prefix of a bad value.

One test per defect found by attacking the widget; each failed before the budgets in `limits.py`. The
memory-hungry ones run under a memory budget, so that a regression fails at once instead of swapping.
"""

import io
import json
import logging
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hostile_inputs import png_bomb, png_bytes, scene_json, write_scene
from memory_budget import MiB, memory_budget
from widget_helpers import from_browser, stroke_message
from semdraw_widget import limits, protocol
from semdraw_widget.canvas_state import CanvasState
from semdraw_widget.protocol import ProtocolError


# ---- 1. a thin background image is scaled only where it shows ------------------------------------------
def test_a_thin_background_upload_costs_no_more_than_the_canvas():
    # 3.8 KB of PNG; scaled whole to cover 512 x 512 it would be 2,560,000 x 512 pixels (3.9 GB of RGB)
    thin = Image.new("RGB", (80_000, 16), (10, 200, 30))
    thin.paste((250, 0, 0), (39_992, 0, 40_008, 16))  # the centre, which is all that shows
    payload = png_bytes(thin)
    assert len(payload) < 10_000
    with memory_budget(256 * MiB):
        rgb = protocol.decode_background_image({"format": "png"}, [payload], 512, 512)
    assert rgb.shape == (512, 512, 3) and tuple(rgb[256, 256]) == (250, 0, 0)


def test_a_thin_background_from_a_path_costs_no_more_than_the_canvas(make_canvas, tmp_path):
    path = tmp_path / "thin.png"
    Image.new("RGB", (16, 80_000), (10, 200, 30)).save(path)
    canvas = make_canvas(width=512, height=512)
    with memory_budget(256 * MiB):
        canvas.set_background_image(path)
    assert canvas.background_image.size == (512, 512)
    assert canvas.background_image.getpixel((256, 256)) == (10, 200, 30)


def test_fitting_still_covers_and_centres():
    wide = Image.new("RGB", (300, 100), (0, 0, 255))
    wide.paste((255, 0, 0), (100, 0, 200, 100))  # the middle third: exactly what a square canvas shows
    rgb = protocol.fit_image(wide, 32, 32)
    assert rgb.shape == (32, 32, 3) and (np.abs(rgb[:, 2:30].astype(int) - (255, 0, 0)) <= 3).all()


# ---- 2. scene zip bombs ---------------------------------------------------------------------------------
def test_a_scene_json_that_inflates_past_its_budget_is_refused_unread(tmp_path):
    path = tmp_path / "bomb.semdraw"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("scene.json", "w") as member:
        member.write(json.dumps(scene_json())[:-1].encode())
        for _ in range(64):  # 64 MiB of spaces in a file of about 64 KB
            member.write(b" " * MiB)
        member.write(b"}")
    assert path.stat().st_size < 200_000
    with memory_budget(32 * MiB), pytest.raises(ValueError, match=r"scene\.json inflates to 671\d{5} bytes \(\d+ compressed\), more than the 2097152"):
        CanvasState.read_scene(path)


def test_a_scene_member_claiming_a_huge_compressed_size_is_refused_unread(tmp_path):
    # found by the fuzz tests: zipfile reads a member's compressed bytes in one piece, so a directory entry
    # claiming 2 GB made it allocate 2 GB for a file of a few hundred bytes
    path = write_scene(tmp_path / "liar.semdraw", scene_json())
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")  # the directory's first entry: scene.json
    data[entry + 20 : entry + 24] = (2**31).to_bytes(4, "little")  # its compressed size
    path.write_bytes(bytes(data))
    with memory_budget(64 * MiB), pytest.raises(ValueError, match=r"scene\.json inflates to \d+ bytes \(2147483648 compressed\)"):
        CanvasState.read_scene(path)


def test_a_damaged_zip_directory_is_a_value_error_quoting_little(tmp_path):
    # found by the fuzz tests: an unknown zip version in the directory raised NotImplementedError out of load()
    path = write_scene(tmp_path / "version.semdraw", scene_json())
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")
    data[entry + 6] = 84  # "version needed to extract": 8.4
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"version.semdraw is not a saved semdraw scene \(NotImplementedError: zip file version 8.4\)"):
        CanvasState.read_scene(path)
    # ... and zipfile's message about a member whose local header disagrees with the directory quotes its bytes
    scene = scene_json(layers=[{"id": "a" * 60}], version=1)
    path = write_scene(tmp_path / "names.semdraw", scene, {"masks/" + "a" * 60 + ".png": bytes(100_000)})
    data = path.read_bytes()
    local = data.index(b"PK\x03\x04", 4)  # the mask's local header: make its name length cover the data
    path.write_bytes(data[: local + 26] + (60_000).to_bytes(2, "little") + data[local + 28 :])
    with pytest.raises(ValueError) as error:
        CanvasState.read_scene(path)
    assert "BadZipFile" in str(error.value) and len(str(error.value)) < 600


def test_a_mask_png_bomb_is_refused_from_its_header(tmp_path):
    bomb = png_bomb(8000, 8000)  # 64 MB of pixels in about 64 KB
    for version, member in ((1, "masks/a.png"), (2, "masks/0.png")):
        path = write_scene(tmp_path / f"bomb{version}.semdraw", scene_json(layers=[{"id": "a"}], version=version), {member: bomb})
        with memory_budget(32 * MiB), pytest.raises(ValueError, match=f"{member} is 8000x8000 pixels; the canvas is 16x16"):
            CanvasState.read_scene(path)


def test_a_scene_member_larger_than_its_pixels_is_refused_unread(tmp_path):
    padded = png_bytes(Image.new("L", (16, 16))) + bytes(2 * MiB)  # a valid PNG, then megabytes of nothing
    path = write_scene(tmp_path / "padded.semdraw", scene_json(layers=[{"id": "a"}], version=1), {"masks/a.png": padded})
    with pytest.raises(ValueError, match=r"masks/a\.png inflates to \d+ bytes \(\d+ compressed\), more than the \d+"):
        CanvasState.read_scene(path)


def test_the_largest_legitimate_scene_fits_its_budgets(tmp_path):
    # every layer, every text at its longest, in characters JSON writes as 12-byte escapes
    state = CanvasState(16, 16)
    longest = "\U0001f600" * limits.MAX_TEXT_CHARS
    for i in range(limits.MAX_LAYERS):
        state.add_layer(longest, id=f"{i:02d}" + "\U0001f600" * (limits.MAX_ID_CHARS - 2), name=longest, negative_prompt=longest)
    state.set_background(longest, longest)
    path = state.save(tmp_path / "largest.semdraw")
    with zipfile.ZipFile(path) as archive:
        assert limits.MAX_SCENE_JSON_BYTES / 2 < archive.getinfo("scene.json").file_size < limits.MAX_SCENE_JSON_BYTES
    loaded, _ = CanvasState.read_scene(path)
    assert loaded.layers == state.layers


# ---- 3. layers per canvas -------------------------------------------------------------------------------
def test_python_cannot_add_more_layers_than_a_canvas_holds(make_canvas):
    canvas = make_canvas(width=16, height=16)
    for i in range(limits.MAX_LAYERS):
        canvas.add_layer(f"layer {i}")
    with pytest.raises(ValueError, match=f"a canvas holds at most {limits.MAX_LAYERS} layers"):
        canvas.add_layer("one too many")
    with pytest.raises(ValueError, match=f"at most {limits.MAX_LAYERS} layers"):
        canvas.state.set_layers([*canvas.layers, {"prompt": "one too many"}])
    assert len(canvas.layers) == limits.MAX_LAYERS


def test_a_browser_update_of_thousands_of_layers_is_refused_whole(make_canvas):
    canvas = make_canvas(width=512, height=512)
    kept = canvas.add_layer("kept")
    with memory_budget(64 * MiB):  # 2000 masks of 512 x 512 would take 500 MB
        canvas.set_state({"layers": [{"id": f"l{i}"} for i in range(2000)]})
        from_browser(canvas, {"type": "sync"})
    assert f"at most {limits.MAX_LAYERS} layers" in canvas.status
    assert canvas.state.layer_ids == [kept] and [layer["id"] for layer in canvas.layers] == [kept]


def test_the_view_stops_at_the_same_number_of_layers():
    palette_js = (Path(__file__).resolve().parents[1] / "js" / "src" / "palette.js").read_text(encoding="utf-8")
    assert f"export const MAX_LAYERS = {limits.MAX_LAYERS};" in palette_js


def test_a_scene_of_too_many_layers_is_refused_before_any_mask_exists(tmp_path):
    layers = [{"id": f"l{i}"} for i in range(60)]  # 60 masks of 4096 x 4096 would take 1 GB
    path = write_scene(tmp_path / "many.semdraw", scene_json(4096, 4096, layers, version=1))
    with memory_budget(64 * MiB), pytest.raises(ValueError, match=f"many.semdraw is damaged: a canvas holds at most {limits.MAX_LAYERS} layers"):
        CanvasState.read_scene(path)


# ---- 4. deep JSON -----------------------------------------------------------------------------------------
def test_deeply_nested_scene_json_is_a_value_error_naming_the_file(tmp_path):
    path = write_scene(tmp_path / "deep.semdraw", '{"format": "semdraw-scene", "x": ' + "[" * 1000 + "]" * 1000 + "}")
    with pytest.raises(ValueError, match=r"deep.semdraw is damaged: its scene.json nests deeper than 8 levels"):
        CanvasState.read_scene(path)
    # brackets inside strings are text, not nesting
    text = scene_json(background={"prompt": "[[[[[[[[[[{{{{{{{{{{", "negative_prompt": '\\"]]]]'})
    loaded, _ = CanvasState.read_scene(write_scene(tmp_path / "text.semdraw", text))
    assert loaded.background["prompt"] == "[[[[[[[[[[{{{{{{{{{{"


# ---- 5. declared formats and booleans ---------------------------------------------------------------------
@pytest.mark.parametrize("actual", ["BMP", "TIFF", "GIF", "PPM", "JPEG"])
def test_a_background_decodes_only_as_the_format_it_declares(actual):
    out = io.BytesIO()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(out, format=actual)
    with pytest.raises(ProtocolError, match="could not read the background image as png"):
        protocol.decode_background_image({"format": "png"}, [out.getvalue()], 16, 16)


@pytest.mark.parametrize("clear", ["false", "true", 1, 0, None, [], {}])
def test_clear_must_be_a_boolean(clear, make_canvas):
    with pytest.raises(ProtocolError, match="'clear' must be true or false"):
        protocol.decode_background_image({"clear": clear}, [], 16, 16)
    canvas = make_canvas(width=16, height=16)
    canvas.set_background_image(np.full((16, 16, 3), 9, np.uint8))
    from_browser(canvas, {"type": "background_image", "clear": clear})
    assert canvas.background["has_image"] and "must be true or false" in canvas.status


def test_has_background_image_in_a_scene_must_be_a_boolean(tmp_path):
    path = write_scene(tmp_path / "odd.semdraw", scene_json(has_background_image="false", version=1))
    with pytest.raises(ValueError, match="has_background_image must be true or false"):
        CanvasState.read_scene(path)


# ---- 6. errors quote a short prefix of a bad value ---------------------------------------------------------
HUGE = "x" * 10_000_000


@pytest.mark.parametrize(
    "content",
    [
        {"type": "mask", "layer": "a", "x": HUGE, "y": 0, "w": 1, "h": 1},
        {"type": "mask", "layer": HUGE, "x": 0, "y": 0, "w": 1, "h": 1},
        {"type": "mask", "layer": "a", "x": 0, "y": 0, "w": 1, "h": 1, "view": HUGE},
        {"type": "mask", "layer": "a", "x": 0, "y": 0, "w": 1, "h": 1, "enc": HUGE},
        {"type": HUGE},
        {"type": "action", "name": HUGE},
        {"type": "ack", "seq": HUGE},
        {"type": "sync", "view": HUGE},
        {"type": "background_image", "format": HUGE},
        {"type": "background_image", "clear": [[HUGE]]},
    ],
)
def test_a_rejected_message_quotes_only_a_prefix_of_its_bad_value(make_canvas, caplog, content):
    canvas = make_canvas(width=16, height=16)
    canvas.add_layer("a", id="a")
    with caplog.at_level(logging.WARNING, logger="semdraw_widget"):
        from_browser(canvas, content, [bytes(1)])
    errors = [message["message"] for message, _ in canvas.sent.of_type("error")]
    assert len(errors) == 1 and errors[0] == canvas.status and canvas.status.startswith("ignored a message")
    assert len(canvas.status) < 400 and "xxxxxxxxxx'... (10000000 characters)" in canvas.status
    assert all(len(record.getMessage()) < 400 for record in caplog.records)


def test_a_rejected_trait_change_and_python_errors_are_short(make_canvas):
    canvas = make_canvas(width=16, height=16)
    canvas.set_state({"brush_size": HUGE})  # traitlets quotes the value whole: the report is cut
    assert "brush_size" in canvas.status and len(canvas.status) < 1100
    canvas.set_state({"active_layer": HUGE})
    assert len(canvas.status) < 400
    for call in (lambda: canvas.get_mask(HUGE), lambda: canvas.add_layer(id=HUGE), lambda: canvas.add_layer(color=HUGE),
                 lambda: canvas.update_layer(HUGE, prompt="a")):
        with pytest.raises((KeyError, ValueError)) as error:
            call()
        assert len(str(error.value)) < 400


def test_quote_keeps_values_short_and_never_fails():
    assert limits.quote("abc") == "'abc'" and limits.quote(7) == "7"
    assert limits.quote("y" * 1000) == f"{'y' * 60!r}... (1000 characters)"
    assert len(limits.quote(list(range(10**6)))) < 100
    nested: list = []
    for _ in range(100_000):  # repr() itself would raise RecursionError
        nested = [nested]
    assert len(limits.quote(nested)) < 100
    assert limits.quote(10**5000) == f"an integer of {(10**5000).bit_length()} bits"


# ---- 7. zip member names never carry a layer id ----------------------------------------------------------------
def test_saved_member_names_never_contain_a_layer_id(tmp_path):
    state = CanvasState(16, 16)
    hostile = ["../../../tmp/x", "/etc/cron.d/evil", "C:\\evil", "masks/../scene.json"]
    for layer_id in hostile:
        state.add_layer("a", id=layer_id)
    state.set_mask("/etc/cron.d/evil", np.ones((16, 16), bool))
    path = state.save(tmp_path / "scene.semdraw")
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["scene.json", "masks/0.png", "masks/1.png", "masks/2.png", "masks/3.png"]
    loaded, scene = CanvasState.read_scene(path)
    assert loaded.layer_ids == hostile and scene["version"] == 2
    np.testing.assert_array_equal(loaded.masks, state.masks)


def test_scenes_in_the_first_layout_still_load(tmp_path):
    # version 1 (written until issue 16) named each mask member by its layer's id
    mask = np.zeros((8, 16), np.uint8)
    mask[2:5, 3:9] = 200
    layers = [{"id": "sky", "prompt": "blue sky"}, {"id": "lamp", "prompt": "a lamp"}]
    members = {"masks/sky.png": png_bytes(Image.fromarray(mask, "L")), "masks/lamp.png": png_bytes(Image.new("L", (16, 8))),
               "background.png": png_bytes(Image.new("RGB", (16, 8), (5, 6, 7)))}
    scene = scene_json(16, 8, layers, version=1, has_background_image=True, seed=5, active_layer="lamp")
    loaded, read = CanvasState.read_scene(write_scene(tmp_path / "v1.semdraw", scene, members))
    assert loaded.layer_ids == ["sky", "lamp"] and read["seed"] == 5
    np.testing.assert_array_equal(loaded.coverage("sky"), mask)
    assert tuple(loaded.background_image[0, 0]) == (5, 6, 7)


# ---- also seen: zlib streams, upper-case pickles ----------------------------------------------------------------
@pytest.mark.parametrize("damage", [lambda packed: packed[:-4], lambda packed: packed[:-1], lambda packed: packed + b"junk",
                                    lambda packed: packed + zlib.compress(b"")])
def test_a_cut_or_padded_deflate_stream_is_refused(damage):
    data = np.arange(8, dtype=np.uint8).reshape(2, 4)
    content = {"type": "mask", "layer": "a", "x": 0, "y": 0, "w": 4, "h": 2, "enc": "deflate"}
    with pytest.raises(ProtocolError, match="not one complete deflate stream"):
        protocol.decode_mask_message(content, [damage(zlib.compress(data.tobytes()))], 16, 16)


def test_an_upper_case_pickle_is_refused_as_a_pickle(tmp_path):
    pytest.importorskip("torch")
    from semdraw_widget.engine import UnsafeCheckpointError, load_model

    checkpoint = tmp_path / "EVIL.CKPT"
    checkpoint.write_bytes(b"not even read")
    with pytest.raises(UnsafeCheckpointError, match=r"EVIL\.CKPT is a pickled checkpoint \(\.CKPT\).*allow_pickle=True"):
        load_model(str(checkpoint))


def test_strokes_still_apply_after_all_these_checks(make_canvas):
    canvas = make_canvas(width=16, height=16)
    layer = canvas.add_layer("a")
    from_browser(canvas, *stroke_message(layer, 1, 2, 3, 4, value=77, enc="deflate"))
    assert canvas.state.coverage(layer)[2:6, 1:4].min() == 77 and not canvas.status
