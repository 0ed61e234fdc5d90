"""The README's Python examples run as written, on the CPU with the tiny model in place of the hub weights."""

import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def runnable_examples():
    text = README.read_text(encoding="utf-8")
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        yield (
            block.replace('"cuda:0"', '"cpu"')
            .replace('"cuda"', '"cpu"')
            .replace('hf_key="stable-diffusion-v1-5/stable-diffusion-v1-5"', 'hf_key="tiny"')
        )


def test_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEMDRAW_MODEL", "tiny")  # what hf_key=None loads, as in CI
    namespace: dict = {}
    blocks = list(runnable_examples())
    assert len(blocks) >= 3
    canvases = []  # each block's canvas (later blocks make their own)
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
        if "canvas" in namespace and all(namespace["canvas"] is not seen for seen in canvases):
            canvases.append(namespace["canvas"])
    rendered = [canvas for canvas in canvases if canvas.frame is not None]
    assert rendered and rendered[0].frame.size == (512, 512)  # "Live generation" renders one at 512 x 512
    assert namespace["image"].size == (512, 512) and (tmp_path / "output.png").is_file()
    for canvas in canvases:
        canvas.close()


def test_the_differences_from_the_seed_project_are_tabled_with_how_to_get_its_behaviour():
    text = README.read_text(encoding="utf-8")
    table = text[text.index("### Differences from the seed project"):text.index("## App mode")]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| |")]
    assert rows and all(line.count(" | ") == 4 for line in rows)  # the seed, here, why, the seed's behaviour
    for switch in ("fresh_noise=True", "the clean background latent", "1 - min(1, sum of the painted layers' weights)",
                   "autoflush=True", "has_i2t=True"):
        assert switch in table, switch
