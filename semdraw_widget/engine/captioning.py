"""A prompt for a background image given without one (the seed project's `has_i2t`).

The seed's pipelines caption such an image with BLIP-2 (`Salesforce/blip2-opt-2.7b`, about 15 GB) and use the
caption as the background prompt. Here the model is loaded through transformers on the first caption asked
for, not when the pipeline is made, so a pipeline that never meets such an image never pays for it.
"""

from __future__ import annotations

from typing import Any

import torch

from . import loading

DEFAULT_CAPTION_MODEL = "Salesforce/blip2-opt-2.7b"
QUESTION = "Question: what does this picture show? Answer:"
MAX_CAPTION_TOKENS = 77  # what a CLIP text encoder reads


class ImageCaptioner:
    """Callable: a PIL image -> a one-line description, from a BLIP-2 model (`model_key`, a hub id or a folder)
    run on `device`. The weights are read on the first call; where they cannot be had, the call raises
    `ModelNotFoundError` saying how to get them and how to do without."""

    def __init__(self, model_key: str = DEFAULT_CAPTION_MODEL, device: Any = "cpu"):
        self.model_key = model_key
        self.device = loading.resolve_device(device)
        self._parts: tuple[Any, Any] | None = None

    def __call__(self, image) -> str:
        processor, model = self._load()
        inputs = processor(images=image.convert("RGB"), text=QUESTION, return_tensors="pt").to(self.device)
        with torch.no_grad():
            tokens = model.generate(**inputs, max_new_tokens=MAX_CAPTION_TOKENS)
        return processor.decode(tokens[0], skip_special_tokens=True).strip()

    def _load(self) -> tuple[Any, Any]:
        if self._parts is None:
            from transformers import Blip2ForConditionalGeneration, Blip2Processor

            def read(cls):
                return lambda **kw: cls.from_pretrained(self.model_key, **kw)

            what = "Image captioning model (has_i2t=True)"
            if loading.is_local(self.model_key):
                processor, model = read(Blip2Processor)(), read(Blip2ForConditionalGeneration)()
            else:
                processor = loading.hub_call(read(Blip2Processor), self.model_key, [], what, option="i2t_key")
                model = loading.hub_call(read(Blip2ForConditionalGeneration), self.model_key, [], what, option="i2t_key")
            self._parts = (processor, model.to(self.device).eval())
        return self._parts
