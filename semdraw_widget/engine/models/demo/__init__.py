"""The demo model: a small SD-1.5-family model trained in this repository on a synthetic world.

It paints what its closed vocabulary names -- ten colours and eight textures, read from free-text
prompts -- in the painted regions, on a CPU, live. Its weights ship in `weights/` (a diffusers folder:
`model_index.json`, `unet/`, `text_encoder/`, `tokenizer/`, `vae/` (an AutoencoderTiny), `scheduler/`)
with the classifier that measures it and its model card (`weights/MODEL_CARD.md`).

- `vocabulary.py`: the words and what a prompt asks for;
- `world.py`: the procedural images it learns from;
- `captions.py`: training captions and its byte-pair tokenizer;
- `train.py`: the training recipe (`python -m semdraw_widget.engine.models.demo train --out DIR`);
- `classifier.py`, `evaluate.py`: the oracle and the quality figures (`... evaluate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .vocabulary import describe, known_words, parse

WEIGHTS_DIR = Path(__file__).parent / "weights"


def load_demo_model(folder: Path | str | None = None, device: Any = "cpu", dtype: Any = None):
    """The demo model (`hf_key="demo"`), or a model trained into `folder` by the train command, loaded
    through the ordinary loading code (`load_model(folder)` reads such a folder as a demo model)."""
    from .. import load_model

    return load_model("demo" if folder is None else str(folder), device=device, dtype=dtype)


__all__ = ["WEIGHTS_DIR", "describe", "known_words", "load_demo_model", "parse"]
