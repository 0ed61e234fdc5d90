"""EngineMirror without threads, torch or a model: a recording engine shows what each sync sends."""

import numpy as np
import pytest

from semdraw_widget.canvas_state import CanvasState
from semdraw_widget.engine_mirror import EngineMirror

SIZE = 16


class WordModel:
    """A text encoder that reads 5 words."""

    vocabulary = None  # it knows every word

    def tokens_over_limit(self, text):
        return max(0, len(text.split()) - 5)


class DemoWordModel(WordModel):
    """A model that knows only the demo model's words."""

    from semdraw_widget.engine.models.demo.vocabulary import VOCABULARY as vocabulary


class RecordingEngine:
    """Holds layers as the engine does (index `num_layers` appends one) and records every call."""

    def __init__(self, seed=2024):
        self.seed = seed
        self.model = WordModel()
        self.layers = []
        self.calls = []

    @property
    def num_layers(self):
        return len(self.layers)

    def update_single_layer(self, idx, **settings):
        assert 0 <= idx <= len(self.layers)
        self.calls.append(("layer", idx, sorted(settings)))
        if idx == len(self.layers):
            self.layers.append({})
        self.layers[idx].update(settings)

    def remove_layer(self, idx):
        self.calls.append(("remove", idx))
        del self.layers[idx]

    def update_background(self, image=None, prompt=None, negative_prompt=None):
        self.calls.append(("background", prompt))

    def reset_seed(self, seed=None):
        self.calls.append(("seed", seed))
        self.seed = seed

    def take_calls(self):
        calls, self.calls = self.calls, []
        return calls

    def prompts(self):
        return [layer["prompt"] for layer in self.layers]


ALL_SETTINGS = sorted(["prompt", "negative_prompt", "mask", "mask_strength", "mask_std", "prompt_strength"])


@pytest.fixture
def scene():
    state = CanvasState(SIZE, SIZE)
    apple = state.add_layer("an apple", id="apple")
    state.add_layer("a pear", id="pear")
    state.set_mask(apple, np.ones((SIZE, SIZE), bool))
    return state


def test_the_first_sync_sends_everything_and_the_next_only_what_changed(scene):
    engine = RecordingEngine(seed=2024)
    mirror = EngineMirror(engine, seed=7)
    mirror.sync(scene.snapshot())
    assert engine.take_calls() == [("seed", 7), ("background", ""), ("layer", 0, ALL_SETTINGS), ("layer", 1, ALL_SETTINGS)]
    assert engine.prompts() == ["an apple", "a pear"] and mirror.engine_index() == {"apple": 0, "pear": 1}
    mask = engine.layers[0]["mask"]
    assert mask.dtype == np.float32 and mask.min() == 1.0  # coverage as a fraction
    mirror.sync(scene.snapshot())
    assert engine.take_calls() == []  # nothing changed: nothing to do
    scene.update_layer("pear", prompt="a green pear")
    scene.set_mask("apple", np.zeros((SIZE, SIZE), bool))
    scene.set_background(prompt="a table")
    mirror.sync(scene.snapshot())
    assert engine.take_calls() == [("background", "a table"), ("layer", 0, ["mask"]), ("layer", 1, ["prompt"])]


def test_hidden_layers_leave_the_engine_and_the_layers_above_move_down(scene):
    engine = RecordingEngine()
    mirror = EngineMirror(engine, seed=2024)
    mirror.sync(scene.snapshot())
    engine.take_calls()
    scene.update_layer("apple", visible=False)
    mirror.sync(scene.snapshot())
    # the pear now sits at index 0, where the apple was: everything is sent for it; the top index goes
    assert engine.take_calls() == [("layer", 0, ALL_SETTINGS), ("remove", 1)]
    assert engine.prompts() == ["a pear"] and mirror.engine_index() == {"pear": 0}


def test_a_shared_engine_holding_another_canvas_layers_is_cleared_and_refilled(scene):
    engine = RecordingEngine()
    other = CanvasState(SIZE, SIZE)
    other.add_layer("a cup", id="cup")
    ours, theirs = EngineMirror(engine, seed=1), EngineMirror(engine, seed=2)
    ours.sync(scene.snapshot())
    assert ours.owns_engine and not theirs.owns_engine
    theirs.sync(other.snapshot())
    assert theirs.owns_engine and not ours.owns_engine
    assert engine.prompts() == ["a cup"] and engine.seed == 2
    engine.take_calls()
    ours.sync(scene.snapshot())  # back to our canvas: all of it again, with our seed
    assert engine.take_calls() == [("remove", 0), ("seed", 1), ("background", ""),
                                   ("layer", 0, ALL_SETTINGS), ("layer", 1, ALL_SETTINGS)]


def test_a_seed_reaches_the_engine_once_and_only_when_it_differs(scene):
    engine = RecordingEngine(seed=5)
    mirror = EngineMirror(engine, seed=5)
    assert mirror.seed_pending
    mirror.sync(scene.snapshot())
    assert not mirror.seed_pending and ("seed", 5) not in engine.take_calls()
    mirror.request_seed(9)
    assert mirror.seed_pending
    mirror.sync(scene.snapshot())
    assert engine.take_calls() == [("seed", 9)] and not mirror.seed_pending


def test_an_overlong_prompt_is_warned_about_until_it_changes_or_its_layer_hides(scene):
    engine = RecordingEngine()
    heard = []
    mirror = EngineMirror(engine, seed=2024, on_warnings=heard.append)
    scene.update_layer("pear", prompt="a ripe green pear on a wooden table")
    mirror.sync(scene.snapshot())
    (warning,) = mirror.prompt_warnings
    assert heard == [warning] and "'a ripe green pear on a wooden" in warning and "3 token(s) longer" in warning
    mirror.sync(scene.snapshot())
    assert heard == [warning]  # said once, held on
    scene.update_layer("pear", visible=False)
    mirror.sync(scene.snapshot())
    assert heard == [warning, None] and mirror.prompt_warnings == ()
    scene.update_layer("pear", visible=True)
    mirror.sync(scene.snapshot())
    assert mirror.prompt_warnings == (warning,)  # shown again, the prompt is sent (and checked) again
    scene.update_layer("pear", prompt="a pear")
    mirror.sync(scene.snapshot())
    assert heard[-1] is None and mirror.prompt_warnings == ()


def test_a_prompt_with_no_word_the_demo_model_knows_is_warned_about_until_it_names_one(scene):
    engine = RecordingEngine()
    engine.model = DemoWordModel()
    heard = []
    mirror = EngineMirror(engine, seed=2024, on_warnings=heard.append)
    mirror.sync(scene.snapshot())  # "an apple", "a pear": the demo model knows neither
    assert len(mirror.prompt_warnings) == 2
    assert all("knows none of the words" in warning and "red, green" in warning for warning in mirror.prompt_warnings)
    scene.update_layer("pear", prompt="a green pear")
    mirror.sync(scene.snapshot())
    assert heard[-1] is None and len(mirror.prompt_warnings) == 1 and "'an apple'" in mirror.prompt_warnings[0]


def test_the_latency_counts_the_oldest_new_stroke_made_since_the_start_once(scene):
    engine = RecordingEngine()
    mirror = EngineMirror(engine, seed=2024)
    scene.set_mask("apple", np.ones((SIZE, SIZE), bool), arrival=1.0)  # before the start
    mirror.count_strokes_from(2.0)
    mirror.sync(scene.snapshot())
    assert mirror.take_stroke_arrival() is None
    scene.set_mask("apple", np.zeros((SIZE, SIZE), bool), arrival=3.0)
    scene.set_mask("pear", np.ones((SIZE, SIZE), bool), arrival=2.5)
    mirror.sync(scene.snapshot())
    assert mirror.take_stroke_arrival() == 2.5 and mirror.take_stroke_arrival() is None
    scene.update_layer("apple", visible=False)
    mirror.sync(scene.snapshot())
    scene.update_layer("apple", visible=True)
    engine.take_calls()
    mirror.sync(scene.snapshot())  # the apple's mask goes to the engine again: no new stroke
    assert ("layer", 0, ALL_SETTINGS) in engine.take_calls() and mirror.take_stroke_arrival() is None
