"""semdraw-app without a browser: its options, the page it writes, the canvas the page builds
(tests/browser/test_app_e2e.py serves it and paints)."""

import nbformat
import pytest

from semdraw_widget import app


def test_the_seed_demos_options_are_read_and_resolved():
    args = app.parse_args(["--model", "tiny", "-H", "64", "-W", "96", "--bootstrap_steps", "2", "--bootstrap_mix_steps", "1.5",
                           "--guidance_scale", "3", "--seed", "-1", "--device", "1", "--port", "9000", "--family", "1.5"])
    settings = app.page_settings(args)
    assert settings["device"] == "cuda:1" and 0 <= settings["seed"] < 2**31 and (settings["height"], settings["width"]) == (64, 96)
    assert app.page_settings(app.parse_args(["--device", "cpu", "--seed", "5"]))["device"] == "cpu"
    assert app.page_settings(app.parse_args(["--seed", "5"]))["seed"] == 5


@pytest.mark.parametrize("argv, message", [
    (["--family", "xl"], "give --model too"), (["--device", "gpu"], "a GPU number or cpu"), (["--seed", "-2"], "-1 for a random"),
])
def test_bad_options_say_what_to_do(argv, message, capsys):
    with pytest.raises(SystemExit):
        app.parse_args(argv)
    assert message in capsys.readouterr().err


def test_the_page_builds_the_canvas_as_a_notebook_would(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMDRAW_MODEL", "tiny")
    settings = app.page_settings(app.parse_args(["--model", "tiny", "-H", "64", "-W", "64", "--bootstrap_mix_steps", "1.5",
                                                 "--guidance_scale", "2", "--seed", "7", "--device", "cpu"]))
    page = nbformat.read(app.write_page(tmp_path, settings), as_version=4)
    namespace = {}
    exec(page.cells[0].source.rsplit("\n", 1)[0], namespace)  # the cell, less its last line (which shows the canvas)
    canvas = namespace["canvas"]
    pipeline = canvas.pipeline
    assert canvas.has_pipeline and "Tiny model" in canvas.notice and len(canvas.layers) == 1
    assert pipeline.seed == 7 and pipeline._scene.bootstrap_mix_steps == 1.5 and pipeline._scene.guidance.uses_negatives
    canvas.close()
