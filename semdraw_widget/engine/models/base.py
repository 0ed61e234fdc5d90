"""What the family adapters share: loading's outline, the per-text embedding cache, CLIP token ids, the autoencoder calls.

Latents are scaled the diffusers way, `(raw - shift_factor) * scaling_factor`, with the factors of
the autoencoder in use (TAESD-style tiny autoencoders carry their own; SD3's VAE has a shift).
The autoencoder may keep its own dtype (SDXL's full VAE stays in float32 under float16 models).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any, Callable, Sequence

import torch

from .. import loading
from .options import LoadOptions
from .sources import Sources, builtin_model, sources_for

Conditioning = dict[str, torch.Tensor]


def clip_token_ids(tokenizer, text: str, warn: bool = True) -> torch.Tensor:
    """(1, max_length) token ids, padded; an overlong prompt is cut, with a warning saying how much."""
    max_tokens = int(tokenizer.model_max_length)
    if warn:
        full = tokenizer(text, truncation=False, add_special_tokens=True).input_ids
        if len(full) > max_tokens:
            dropped = len(full) - max_tokens
            warnings.warn(
                f"prompt {text[:40]!r}... is {len(full)} tokens long, but the text encoder reads at most "
                f"{max_tokens}: the last {dropped} token(s) were dropped. Shorten the prompt to keep them.",
                stacklevel=5,
            )
    return tokenizer(text, padding="max_length", max_length=max_tokens, truncation=True, return_tensors="pt").input_ids


class LatentFamily:
    """Base of the family adapters (see `models/__init__.py` for the interface they complete)."""

    name: str  # "sd15", "sdxl", "sd3"
    default_sources: Sources  # the family's default checkpoint, LoRA and tiny autoencoder
    embedding_cache_size = 256
    notice = ""  # what the user should know about what was loaded (e.g. a replaced hub id); "" when nothing
    vocabulary = None  # a model that knows only some words (the demo model) says which: see demo/vocabulary.py

    @classmethod
    def load(
        cls, hf_key: str | None = None, device: Any = "cpu", dtype: torch.dtype | None = None, options: LoadOptions | None = None,
    ) -> "LatentFamily":
        """This family's model for `hf_key` (a hub id, diffusers folder, single file or built-in key; None: the
        family's default model), loaded as `options` say, on `device`, in `dtype` (by default float16 on CUDA,
        float32 elsewhere). Options that this family would ignore are refused before anything loads."""
        options = options or LoadOptions()
        options.check_family(cls.name, repr(hf_key) if hf_key else "the default model")
        device = loading.resolve_device(device)
        model = cls._load(sources_for(hf_key, cls.default_sources), options, device, dtype or loading.default_dtype(device))
        builtin = builtin_model(hf_key)
        if builtin is not None:  # what a built-in model is goes with it, however the pipeline was made
            from .choice import builtin_notice

            model.notice = " ".join(part for part in (builtin_notice(str(hf_key)), model.notice) if part)
            model.vocabulary = builtin.vocabulary() if builtin.vocabulary else None
        return model

    @classmethod
    def _load(cls, sources: Sources, options: LoadOptions, device: torch.device, dtype: torch.dtype) -> "LatentFamily":
        """Read the parts `sources` and `options` name, put them together, and move them to `device`."""
        raise NotImplementedError

    def __init__(self, vae, device: torch.device, dtype: torch.dtype):
        if device.type == "cpu" and type(vae).__name__ == "AutoencoderTiny":
            # oneDNN's CPU convolutions run ~1.4x faster channels-last; a tiny autoencoder is all convolutions
            # (no GroupNorm, which is slower that way), and decoding is a fifth of a CPU frame
            vae.to(memory_format=torch.channels_last)
        self.vae = vae
        self.device, self.dtype = device, dtype
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)
        self._embeddings: OrderedDict[str, Conditioning] = OrderedDict()

    def slots(self, t_index_list: Sequence[int] | None, num_steps: int | None):
        """The schedule and slots a pipeline runs: `t_index_list` indexes the family's schedule in `num_steps`
        steps (None: its own length). Without `t_index_list`, the family's default slots of its own schedule,
        or every step of another length."""
        schedule = self.schedule if num_steps is None else self.schedule.with_steps(num_steps)
        if t_index_list is None:
            own = schedule.num_steps == self.schedule.num_steps
            t_index_list = self.default_t_index_list if own else tuple(range(schedule.num_steps))
        return schedule, t_index_list

    def tokens_over_limit(self, text: str) -> int:
        """How many of `text`'s tokens the (first) text encoder cannot read: 0 when the prompt fits."""
        tokenizer = getattr(self, "tokenizer", None) or self.tokenizers[0]
        count = len(tokenizer(text, truncation=False, add_special_tokens=True).input_ids)
        return max(0, count - int(tokenizer.model_max_length))

    def cached_conditioning(self, texts: Sequence[str], compute: Callable[[list[str]], Conditioning]) -> Conditioning:
        """Per-text conditioning, computing only the texts not cached (`compute(missing)` -> batch-first dict)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._embeddings]
        if missing:
            with torch.no_grad():
                computed = compute(missing)
            for i, text in enumerate(missing):
                self._embeddings[text] = {k: v[i:i + 1] for k, v in computed.items()}
        for text in texts:
            self._embeddings.move_to_end(text)
        first = self._embeddings[texts[0]]
        result = {k: torch.cat([self._embeddings[t][k] for t in texts]) for k in first}
        while len(self._embeddings) > self.embedding_cache_size:
            self._embeddings.popitem(last=False)
        return result

    def clip_pair_outputs(self, texts: Sequence[str]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """For families with two CLIP encoders (`self.tokenizers`, `self.text_encoders`): each encoder's
        penultimate hidden states and its first output (the projected pooled embedding of an encoder
        with projection). Only the first tokenizer warns about an overlong prompt: both cut it alike."""
        hidden, pooled = [], []
        for i, (tokenizer, encoder) in enumerate(zip(self.tokenizers, self.text_encoders)):
            ids = torch.cat([clip_token_ids(tokenizer, t, warn=i == 0) for t in texts]).to(self.device)
            out = encoder(ids, output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled.append(out[0])
        return hidden, pooled

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> scaled latents (B, C, H/8, W/8) (the distribution's mode for a KL VAE)."""
        out = self.vae.encode(images.to(self.device, self.vae.dtype) * 2.0 - 1.0)
        latents = out.latent_dist.mode() if hasattr(out, "latent_dist") else out.latents
        if self.shift_factor:
            latents = latents - self.shift_factor
        return (latents * self.scaling_factor).to(self.dtype).contiguous()  # channels-last on a CPU (see __init__)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> (B, 3, H, W) RGB in [0, 1]."""
        latents = latents / self.scaling_factor
        if self.shift_factor:
            latents = latents + self.shift_factor
        images = self.vae.decode(latents.to(self.vae.dtype), return_dict=False)[0]
        return (images * 0.5 + 0.5).clamp(0.0, 1.0)
