import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from semdraw_widget.canvas_state import CanvasState, check_canvas_size
from semdraw_widget.coverage import to_coverage
from semdraw_widget.protocol import MaskPatch


def test_canvas_size_must_be_a_multiple_of_8_and_the_error_suggests_neighbours():
    assert check_canvas_size(512, 2560) == (512, 2560)
    with pytest.raises(ValueError, match=r"width must be a multiple of 8 \(got 500\); try 496 or 504"):
        check_canvas_size(500, 512)
    with pytest.raises(ValueError, match="height"):
        check_canvas_size(512, 0)
    with pytest.raises(ValueError, match="integer"):
        check_canvas_size(512.0, 512)


def test_layers_masks_and_label_map():
    state = CanvasState(32, 16)
    a = state.add_layer("a red apple")
    b = state.add_layer("a blue sky", color="#1E88E5")
    assert state.layer(b)["color"] == "#1e88e5"
    state.apply_patch(MaskPatch(a, 0, 0, np.full((16, 20), 255, np.uint8)))
    state.apply_patch(MaskPatch(b, 10, 0, np.full((16, 22), 128, np.uint8)))
    masks = state.masks
    assert masks.shape == (2, 16, 32) and masks.dtype == np.float32
    assert masks[0, :, :20].min() == 1.0 and masks[0, :, 20:].max() == 0.0
    assert masks[1, 0, 10] == pytest.approx(128 / 255)
    labels = state.label_map()
    assert labels[0, 5] == 0 and labels[0, 15] == 1 and labels[0, 25] == 1
    state.remove_layer(b)
    assert state.label_map().max() == 0 and state.masks.shape == (1, 16, 32)


@pytest.mark.parametrize(
    "mask, expected",
    [
        (np.ones((4, 8), bool), 255),
        (np.full((4, 8), 7, np.uint8), 7),
        (np.full((1, 4, 8), 0.5, np.float64), 128),
        (np.ones((4, 8), np.int64), 255),  # other integers are fractions, like floats
        (Image.new("L", (8, 4), 200), 200),
        (Image.new("RGBA", (8, 4), (0, 0, 0, 60)), 60),
        (Image.new("RGBA", (8, 4), (200, 200, 200, 255)), 200),  # fully opaque: its grey, not its alpha
        (Image.new("F", (8, 4), 0.5), 128),  # float pixels are fractions, not grey levels
        (Image.new("I", (8, 4), 1), 255),
    ],
)
def test_masks_are_accepted_in_the_usual_forms(mask, expected):
    coverage = to_coverage(mask, 4, 8)
    assert coverage.dtype == np.uint8 and coverage.shape == (4, 8) and (coverage == expected).all()


def test_torch_masks_keep_their_dtype_rules():
    torch = pytest.importorskip("torch")
    assert (to_coverage(torch.ones(4, 8), 4, 8) == 255).all()
    assert (to_coverage(torch.full((4, 8), 200, dtype=torch.uint8), 4, 8) == 200).all()  # 0..255, as numpy uint8
    assert (to_coverage(torch.ones(4, 8, dtype=torch.uint8), 4, 8) == 1).all()  # 1/255, not full coverage
    assert (to_coverage(torch.ones(1, 4, 8, dtype=torch.bool), 4, 8) == 255).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_coverage(torch.full((4, 8), 2.0), 4, 8)


@pytest.mark.parametrize(
    "mask, needle",
    [
        (np.ones((8, 4)), r"\(height, width\) = \(4, 8\)"),
        (np.full((4, 8), 2.0), r"\[0, 1\]"),
        (np.full((4, 8), -0.5), r"\[0, 1\]"),
        (np.full((4, 8), 255, np.int16), "pass uint8 for 0..255"),
        (np.full((4, 8), np.nan), "NaN"),
        (np.full((4, 8), np.inf), "infinite"),
        (np.full((4, 8), "x"), "real numbers"),
        (Image.new("I", (8, 4), 255), r"\[0, 1\]"),
    ],
)
def test_bad_masks_get_clear_errors(mask, needle):
    with pytest.raises(ValueError, match=needle):
        to_coverage(mask, 4, 8)


def test_canvas_state_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, semdraw_widget.canvas_state as c; c.CanvasState(8, 8); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_input_leaves_the_state_unchanged():
    state = CanvasState(16, 16)
    a = state.add_layer("a")
    state.set_mask(a, np.ones((16, 16), bool))
    before = (state.layers, state.masks.copy(), state.revision)
    with pytest.raises(ValueError):
        state.set_mask(a, np.ones((8, 8), bool))
    with pytest.raises(KeyError, match="unknown layer 'nope'"):
        state.set_mask("nope", np.ones((16, 16), bool))
    with pytest.raises(ValueError, match="prompt_strength"):
        state.set_layers([{"id": a, "prompt_strength": 3}])
    with pytest.raises(ValueError, match="unique"):
        state.set_layers([{"id": a}, {"id": a}])
    with pytest.raises(ValueError, match="printable"):  # ids name mask files in a saved scene
        state.add_layer(id="a\x00b")
    with pytest.raises(ValueError, match="unknown layer field"):
        state.set_layers([{"id": a, "colour": "#ffffff"}])
    with pytest.raises(ValueError, match="characters long"):
        state.update_layer(a, prompt="x" * 5000)
    with pytest.raises(ValueError, match="id cannot change"):
        state.update_layer(a, id="renamed")
    with pytest.raises(ValueError, match="^background negative_prompt is 3000"):
        state.set_background("changed", "x" * 3000)
    assert state.layers == before[0] and state.revision == before[2] and state.background["prompt"] == ""
    np.testing.assert_array_equal(state.masks, before[1])
    assert state.update_layer(a, id=a, name="same id")["id"] == a  # naming its own id is no change


def test_set_layers_keeps_masks_of_surviving_ids_and_adds_empty_ones():
    state = CanvasState(16, 16)
    a, b = state.add_layer("a"), state.add_layer("b")
    state.set_mask(b, np.ones((16, 16), bool))
    layers = state.set_layers([{**state.layer(b), "prompt": "bee"}, {"id": "new", "prompt": "c"}])
    assert [layer["id"] for layer in layers] == [b, "new"]
    assert state.get_mask(b).min() == 1.0 and state.get_mask("new").max() == 0.0
    with pytest.raises(KeyError):
        state.get_mask(a)


def test_snapshots_are_consistent_copies_that_reuse_unchanged_masks():
    state = CanvasState(16, 16)
    a = state.add_layer("a")
    first = state.snapshot()
    again = state.snapshot()
    assert again.masks[a] is first.masks[a]  # unchanged mask: no copy per frame
    state.apply_patch(MaskPatch(a, 0, 0, np.full((2, 2), 9, np.uint8)))
    assert first.masks[a].max() == 0 and state.snapshot().masks[a][0, 0] == 9
    with pytest.raises(ValueError):
        first.masks[a][0, 0] = 1  # read-only


def test_change_listeners_and_mask_observers_fire():
    state = CanvasState(16, 16)
    changes, masks = [], []
    state.add_change_listener(lambda: changes.append(1))
    state.observe_masks(masks.append)
    a = state.add_layer("a")
    state.set_mask(a, np.ones((16, 16), bool))
    state.set_background("a meadow")
    assert len(changes) == 3 and masks == [a]


def test_a_failing_mask_observer_is_logged_and_the_others_still_run(caplog):
    state = CanvasState(16, 16)
    layer = state.add_layer("a")
    seen = []

    def broken(layer_id):
        raise RuntimeError("a bug in someone's observer")

    state.observe_masks(broken)
    state.observe_masks(seen.append)
    state.set_mask(layer, np.ones((16, 16), bool))  # painting goes on
    assert seen == [layer] and state.get_mask(layer).min() == 1.0
    assert "observe_masks callback failed" in caplog.text and "a bug in someone's observer" in caplog.text


def test_save_and_load_round_trip(tmp_path):
    state = CanvasState(24, 16)
    a = state.add_layer("a red apple", negative_prompt="blurry", mask_blur=3, prompt_strength=0.5)
    b = state.add_layer("sky", visible=False)
    rng = np.random.default_rng(1)
    state.set_mask(a, rng.integers(0, 256, (16, 24), dtype=np.uint8))
    state.set_mask(b, rng.random((16, 24)) > 0.5)
    state.set_background("a meadow", "ugly")
    state.set_background_image(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8))
    path = state.save(tmp_path / "scene.semdraw")
    loaded, scene = CanvasState.read_scene(path)
    assert loaded.layers == state.layers and loaded.background == state.background
    np.testing.assert_array_equal(loaded.masks, state.masks)
    np.testing.assert_array_equal(loaded.background_image, state.background_image)
    assert scene["format"] == "semdraw-scene"


def test_loading_something_else_is_a_clear_error(tmp_path):
    bogus = tmp_path / "x.semdraw"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a saved semdraw scene"):
        CanvasState.read_scene(bogus)


def _rewrite(path, tmp_path, scene=None, drop=(), replace=None):
    """A copy of the saved scene at `path` with scene.json edited, members dropped or replaced."""
    out = tmp_path / "edited.semdraw"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name == "scene.json" and scene is not None:
                data = json.dumps(scene(json.loads(data)))
            if name in (replace or {}):
                data = replace[name]
            if name not in drop:
                target.writestr(name, data)
    return out


@pytest.mark.parametrize(
    "edit, needle",
    [
        (dict(scene=lambda s: [s]), "scene.json holds a list"),
        (dict(scene=lambda s: {**s, "format": "other"}), "format 'other'"),
        (dict(scene=lambda s: {**s, "version": "1"}), "version"),
        (dict(scene=lambda s: {**s, "version": 99}), "newer semdraw_widget"),
        (dict(scene=lambda s: {k: v for k, v in s.items() if k != "width"}), "lacks width"),
        (dict(scene=lambda s: {k: v for k, v in s.items() if k != "layers"}), "lacks layers"),
        (dict(scene=lambda s: {**s, "width": 20}), "multiple of 8"),
        (dict(scene=lambda s: {**s, "layers": {"a": 1}}), "list of dicts"),
        (dict(scene=lambda s: {**s, "background": None}), "background must be a dict"),
        (dict(scene=lambda s: {**s, "background": {"prompt": 5}}), "background prompt must be a string"),
        (dict(drop=("masks/0.png",)), "masks/0.png is missing"),
        (dict(replace={"masks/0.png": b"junk"}), "masks/0.png is not a readable image"),
        (dict(drop=("background.png",)), "background.png is missing"),
        (dict(replace={"scene.json": b"{"}), "not valid JSON"),
        (dict(drop=("scene.json",)), "scene.json is missing"),
    ],
)
def test_damaged_or_foreign_scenes_are_clear_errors_naming_the_file(tmp_path, edit, needle):
    state = CanvasState(16, 8)
    state.add_layer("a", id="L")
    state.set_background_image(np.zeros((8, 16, 3), np.uint8))
    path = _rewrite(state.save(tmp_path / "scene.semdraw"), tmp_path, **edit)
    with pytest.raises(ValueError, match=needle) as error:
        CanvasState.read_scene(path)
    assert str(path) in str(error.value)
