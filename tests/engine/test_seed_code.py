"""The seed project's own examples, run on this package: the Python blocks of its README and the code cells of its
notebooks, read from a copy of its repository at test time (nothing of it is kept here), with only the imports,
`hf_key`, the device and the asset paths changed, on the tiny models and a CPU.

Where the seed repository is not at hand these tests are skipped: point SEMDRAW_SEED_REPO at a checkout or a git
mirror of ironjr/semantic-draw to run them (about five minutes). tests/engine/test_seed_api.py checks the same API
everywhere.

What is changed, and only that:
- `from model import ...` imports from semdraw_widget; the seed's helper modules (`util`, `prompt_util`,
  `ipython_util`) and the few outside packages this package does not need (torchvision's ToTensor, imageio) are
  small stand-ins made here;
- every `hf_key` names the tiny miniature, and SEMDRAW_MODEL=tiny stands for the default models;
- the device is the CPU;
- asset URLs and paths read the repository's own assets; `requests.get` reads them from disk;
- `while True:` streaming loops run three frames.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ASSET_URL = "https://raw.githubusercontent.com/ironjr/StreamMultiDiffusion/main/"
OUTSIDE = "seed_stand_ins"  # the module standing in for the outside packages the examples import
NOTEBOOKS = [
    "demo_simple", "demo_simple_sdxl", "demo_simple_sd3", "demo_inpaint", "demo_inpaint_sd3",
    "demo_stream", "demo_stream_sdxl", "demo_stream_sd3",
]


class SeedRepo:
    """Files of the seed repository: a checkout (a folder with src/) or a git directory (read at HEAD)."""

    def __init__(self, root: Path):
        self.root = root
        self.is_git = not (root / "src").is_dir()

    def read(self, path: str) -> bytes:
        if self.is_git:
            return subprocess.run(["git", "--git-dir", str(self.root), "show", f"HEAD:{path}"], check=True,
                                  capture_output=True).stdout
        return (self.root / path).read_bytes()

    def export(self, prefix: str, into: Path) -> None:
        if self.is_git:
            names = subprocess.run(["git", "--git-dir", str(self.root), "ls-tree", "-r", "--name-only", "HEAD", prefix],
                                   check=True, capture_output=True, text=True).stdout.split()
        else:
            names = [str(p.relative_to(self.root)) for p in (self.root / prefix).rglob("*") if p.is_file()]
        for name in names:
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.read(name))


@pytest.fixture(scope="module")
def seed_repo():
    root = os.environ.get("SEMDRAW_SEED_REPO")
    if not root or not Path(root).exists():
        pytest.skip("SEMDRAW_SEED_REPO does not name a copy of the seed repository (ironjr/semantic-draw)")
    return SeedRepo(Path(root))


@pytest.fixture(scope="module")
def workspace(seed_repo, tmp_path_factory):
    root = tmp_path_factory.mktemp("seed")
    for folder in ("assets/timessquare", "assets/zeus", "assets/fantasy_large", "assets/irworobongdo"):
        seed_repo.export(folder, root)
    (root / "notebooks").mkdir()
    return root


def stand_in_modules(root: Path) -> dict[str, types.ModuleType]:
    """Our stand-ins for the seed's helper modules and the outside packages its examples import."""

    def module(name: str, **members) -> types.ModuleType:
        made = types.ModuleType(name)
        made.__dict__.update(members)
        return made

    def seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def unused(name):
        def fail(*args, **kwargs):
            raise NotImplementedError(f"the seed's {name} is imported by its examples but not used by them")
        return fail

    class ToTensor:  # torchvision.transforms.ToTensor: PIL -> (C, H, W) float in [0, 1]
        def __call__(self, image):
            array = np.asarray(image, dtype=np.float32) / 255.0
            return torch.from_numpy(array[..., None] if array.ndim == 2 else array).permute(2, 0, 1).contiguous()

    class Response:
        def __init__(self, content: bytes):
            self.content = content

    def get(url: str, *args, **kwargs):  # the examples' asset downloads, read from the repository's copy
        assert url.startswith(ASSET_URL), url
        return Response((root / url[len(ASSET_URL):]).read_bytes())

    def mimsave(path, frames, **kwargs):
        frames[0].save(path, save_all=True, append_images=frames[1:], loop=kwargs.get("loop", 0))

    return {
        "util": module("util", seed_everything=seed_everything, blend=unused("util.blend"), Streamer=unused("util.Streamer")),
        "prompt_util": module("prompt_util", preprocess_prompts=lambda p, n, **kw: (p, n),
                              print_prompts=lambda p, n, **kw: None),
        "ipython_util": module("ipython_util", dispt=lambda *args, **kwargs: None),
        # torchvision's transforms, imageio and requests: imported under their names by the ported imports
        OUTSIDE: module(OUTSIDE, ToTensor=ToTensor, mimsave=mimsave, get=get),
    }


def ported(code: str) -> str:
    """The seed's code with only the imports, hf_key, device, asset URLs and endless loops changed."""
    code = code.replace("from model import", "from semdraw_widget import")
    for outside in ("import torchvision.transforms as T", "import imageio", "import requests"):
        code = code.replace(outside, f"import {OUTSIDE} as {outside.split()[-1]}")
    code = re.sub(r"hf_key=(['\"]).*?\1", "hf_key='tiny'", code)
    code = code.replace("torch.device(f'cuda:{device}')", "torch.device('cpu')")
    code = code.replace("device = f'cuda:{device}'", "device = 'cpu'")
    code = code.replace("while True:", "for _ in range(3):")
    return code


@pytest.fixture
def run_seed(workspace, monkeypatch):
    monkeypatch.setenv("SEMDRAW_MODEL", "tiny")
    monkeypatch.chdir(workspace / "notebooks")
    for name, made in stand_in_modules(workspace).items():
        monkeypatch.setitem(sys.modules, name, made)

    def run(blocks: list[str], what: str) -> dict:
        namespace: dict = {"display": lambda *args, **kwargs: None, "__name__": what}
        for block in blocks:
            exec(compile(ported(block), what, "exec"), namespace)
        return namespace

    return run


def readme_blocks(seed_repo) -> list[str]:
    text = seed_repo.read("README.md").decode("utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "from model import" in b]
    # The seed's SD3 example builds StableMultiDiffusionSDXLPipeline without importing it (a NameError there too):
    # its import line gets the name it uses.
    return [b.replace("from model import StableMultiDiffusion3Pipeline\n",
                      "from model import StableMultiDiffusion3Pipeline, StableMultiDiffusionSDXLPipeline\n") for b in blocks]


def test_the_seed_readme_examples_run(seed_repo, run_seed):
    blocks = readme_blocks(seed_repo)
    assert len(blocks) >= 7  # streaming, region-based (SD 1.5, SD3, SDXL), larger, inpainting, panorama, basic
    namespace = run_seed(blocks, "the seed's README")
    assert Path("my_beautiful_creation.gif").is_file() and Path("my_beautiful_inpainting.png").is_file()
    assert namespace["image"].size == (512, 512)  # the last example: basic StableDiffusion
    assert Image.open("my_beautiful_creation.png").size == (1920, 768)  # the larger region-based example


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_seed_notebooks_run(seed_repo, run_seed, name):
    try:
        notebook = json.loads(seed_repo.read(f"notebooks/{name}.ipynb"))
    except subprocess.CalledProcessError:
        pytest.skip(f"{name}.ipynb is not in this copy of the seed repository")
    cells = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    namespace = run_seed(cells, f"the seed's {name}.ipynb")
    produced = namespace.get("img", namespace.get("streamer"))
    assert produced is not None
    if "streamer" in namespace:
        assert namespace["streamer"].num_layers == 3 and namespace["streamer"]().size[0] == namespace["width"]


def test_the_seed_kolors_notebook_is_refused_with_what_it_needs(seed_repo, run_seed):
    notebook = json.loads(seed_repo.read("notebooks/demo_simple_kolors.ipynb"))
    cells = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    with pytest.raises(NotImplementedError, match="Kolors would need"):
        run_seed(cells, "the seed's demo_simple_kolors.ipynb")
