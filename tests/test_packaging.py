"""Installing without node: the wheel and the sdist carry the built front end, and building either (or a
wheel from the sdist, as `pip install semdraw_widget-*.tar.gz` does) needs no npm once it is built.

Both are built with `python -m build` and installed into a fresh virtual environment with no node on PATH,
which then imports the package and renders once. To keep this to seconds, the fresh environment sees the
dependencies (torch, diffusers, ...) of this checkout's .venv through a .pth file, and the package is
installed with --no-deps and without build isolation: no download, and what is tested is the package's own
files (the bundle, the code, the metadata). The editable install of this checkout stays out of the way,
since a .pth file's paths get no .pth processing of their own; the test checks that the package imported
is the one just installed."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLE = ("semdraw_widget/static/widget.js", "semdraw_widget/static/widget.css")
RENDER_ONCE = """
import sys
from pathlib import Path
import semdraw_widget
from semdraw_widget import SemanticCanvas
installed = Path(semdraw_widget.__file__).resolve()
assert installed.is_relative_to(Path(sys.prefix).resolve()), f"imported {installed}, not the installed package"
canvas = SemanticCanvas(64, 64, model="tiny")
canvas.add_layer("a red apple")
assert len(canvas._esm) > 10_000 and canvas._css, "the installed package has no front end"
print("rendered", canvas.render().size)
"""


@pytest.fixture(scope="module")
def no_node(tmp_path_factory) -> dict:
    """An environment whose PATH holds no node or npm: one empty folder."""
    empty = tmp_path_factory.mktemp("no-node-bin")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("npm_", "NODE"))}
    env.update(PATH=str(empty), SEMDRAW_MODEL="tiny", PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)
    return env


def run(args, env, cwd=None, timeout=600) -> str:
    done = subprocess.run([str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory, no_node) -> Path:
    """The sdist, and a wheel built from it, as `python -m build` makes them, without node."""
    if not all((REPO / path).is_file() for path in BUNDLE):
        pytest.fail("the front end is not built: run `cd js && npm ci && npm run build` first")
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, REPO], no_node)
    return out


def test_the_sdist_and_the_wheel_carry_the_built_front_end(dist):
    (sdist,) = dist.glob("semdraw_widget-*.tar.gz")
    (wheel,) = dist.glob("semdraw_widget-*.whl")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames()}
    assert set(BUNDLE) <= names, "the sdist lacks the built front end"
    assert "js/src/index.js" in names and "js/package-lock.json" in names, "the sdist lacks the front end's source"
    assert not any(name.startswith(("js/node_modules", ".venv")) for name in names)
    with zipfile.ZipFile(wheel) as archive:
        assert set(BUNDLE) <= set(archive.namelist()), "the wheel lacks the built front end"
        assert not any(name.startswith("js/") for name in archive.namelist())


@pytest.mark.parametrize("kind", ["whl", "tar.gz"], ids=["wheel", "sdist"])
def test_installs_without_node_then_imports_and_renders(dist, kind, tmp_path, no_node):
    (artifact,) = dist.glob(f"semdraw_widget-*.{kind}")
    venv = tmp_path / "fresh"
    run([sys.executable, "-m", "venv", "--without-pip", venv], no_node)
    python = venv / "bin" / "python"
    site_packages = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], no_node).strip())
    (site_packages / "checkout_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-build-isolation", artifact],
        no_node, cwd=tmp_path)
    assert "rendered (64, 64)" in run([python, "-c", RENDER_ONCE], no_node, cwd=tmp_path)
