"""A canvas that loads its model shows one line of ours while it loads, and nothing else: no "Loading
weights" bar or torchvision warning from transformers in the cell (nor in a Voilà page)."""

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
LOAD = 'from semdraw_widget import SemanticCanvas\ncanvas = SemanticCanvas(64, 64, model="tiny")'
ATTACH = (
    "statuses = []\n"
    'canvas.observe(lambda change: statuses.append(change["new"]), "status")\n'
    'canvas.attach_pipeline(model="tiny")\n'
    "print(statuses)"
)


def test_loading_a_model_shows_one_line_of_ours_and_no_third_party_output(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMDRAW_MODEL", "tiny")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(LOAD), nbformat.v4.new_code_cell(ATTACH)])
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    load, attach = (cell["outputs"] for cell in notebook.cells)

    # made with model=: one line of ours while loading, replaced by nothing once the model is there
    assert [output["output_type"] for output in load] == ["display_data"], f"more than our line in the cell: {load}"
    assert load[0]["data"] == {"text/plain": ""}, "the loading line stayed"
    # a canvas that exists says it in its status line instead, and nothing reaches the cell but the print
    assert [output["output_type"] for output in attach] == ["stream"], attach
    statuses = attach[0]["text"]
    assert statuses.startswith("[\"Loading the model 'tiny'…") and statuses.rstrip().endswith("'']"), statuses


def test_the_libraries_settings_are_restored_after_a_load():
    import warnings

    import diffusers.utils.logging as diffusers_logging
    import huggingface_hub.utils as hub
    import transformers.utils.logging as transformers_logging

    from semdraw_widget.model_loading import quiet_third_party

    before = (transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled(),
              diffusers_logging.get_verbosity(), hub.are_progress_bars_disabled(), list(warnings.filters))
    with quiet_third_party():
        assert not transformers_logging.is_progress_bar_enabled() and not diffusers_logging.is_progress_bar_enabled()
        assert hub.are_progress_bars_disabled()
        assert transformers_logging.get_verbosity() == transformers_logging.ERROR
    after = (transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled(),
             diffusers_logging.get_verbosity(), hub.are_progress_bars_disabled(), list(warnings.filters))
    assert after == before
