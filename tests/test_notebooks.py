"""Every example notebook runs top to bottom as a new user without a GPU would: the notebooks that make pictures on
the demo model (which paints what its words name on a CPU), the others on the tiny model (fast, noise-like)."""

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
ON_THE_DEMO_MODEL = {"quickstart", "how_it_works", "colab"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("SEMDRAW_MODEL", "demo" if path.stem in ON_THE_DEMO_MODEL else "tiny")
    repo = str(Path(__file__).parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
    shutil.copy(path, tmp_path / path.name)
    shutil.copytree(path.parent / "assets", tmp_path / "assets")  # the notebooks' own pictures and masks
    notebook = nbformat.read(tmp_path / path.name, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
