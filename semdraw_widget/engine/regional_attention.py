"""`region_mode="attention"`: every layer's prompt confined to its region inside the UNet's attention, so a frame
costs one denoiser item per slot whatever the number of layers (docs/architecture.md, "Region modes").

The exact mode (`blend.denoise` over slots x layers) runs the denoiser once per layer and blends the x0
estimates with the layers' weights. The attention mode runs it once per slot with every active layer's text
embedding side by side (`encoder_hidden_states` (T, P*L, D)) and the layers' per-slot weights, normalised to
sum to 1 at each latent pixel (`region_weights` (T, P, h, w)). Each cross-attention layer attends the pixel's
query to each layer's keys and values separately and mixes the P outputs with the weights, pooled to that
attention layer's resolution (`RegionalCrossAttention`); each self-attention layer lets a pixel attend mostly
to the pixels that share its layers (`RegionalSelfAttention`), so a prompt does not travel through attention
into another layer's area. The weights are the ones the exact mode blends with --
blur, cover decay, mask strength, quantisation, the background prompt's share where the painted layers leave
some -- and prompt strength acts, as there, on the embeddings. What no layer covers is settled as in the
exact mode, at x0: the single "layer" the blend sees is the coverage min(1, sum of weights), so uncovered area
is the background latent (image or white). Where no layer has weight the attention takes the layers' plain
mean; it does not matter there, the blend replaces it.

Conditioning other than the token sequence (SDXL's pooled `text_embeds`) is global to an image: a slot takes
the layers' mean weighted by their share of the canvas.

Everything here is computed at update time; a frame adds only tensor arithmetic of fixed shapes (no host
syncs), and the weights travel as a conditioning entry, so CUDA graphs and torch.compile treat them as an
ordinary input.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

REGION_MODES = ("exact", "attention")
TOKENS = "encoder_hidden_states"  # the conditioning entry cross-attention reads
WEIGHTS = "region_weights"  # the conditioning entry that carries the per-pixel layer weights (T, P, h, w)


def check_region_mode(mode: Any, family: Any = None) -> str:
    """`region_mode` checked against REGION_MODES and, for "attention", against the model's denoiser."""
    if mode not in REGION_MODES:
        raise ValueError(f"region_mode must be one of {REGION_MODES} (got {mode!r})")
    if mode == "attention" and family is not None and not supports_attention_mode(family):
        raise ValueError(
            f"region_mode='attention' needs a UNet with cross-attention (SD 1.5, SDXL); the {family.name} model's "
            "denoiser has none (SD3 mixes text and image in joint attention). Use region_mode='exact'."
        )
    return mode


def supports_attention_mode(family: Any) -> bool:
    unet = getattr(family, "unet", None)
    return unet is not None and hasattr(unet, "set_attn_processor")


def install(family: Any) -> None:
    """Give the family's UNet our processors (once): `RegionalCrossAttention` on the cross-attention layers,
    `RegionalSelfAttention` on the rest. Both call the layer's original processor when no region weights are
    given, so the exact mode -- and any other pipeline sharing the model -- computes what it did before; that is
    why the originals are wrapped rather than swapped back and forth (a model may serve both modes at once)."""
    unet = family.unet
    processors = unet.attn_processors
    if all(isinstance(p, _RegionalProcessor) for p in processors.values()):
        return
    cross = {name for name, module in unet.named_modules() if getattr(module, "is_cross_attention", False)}
    unet.set_attn_processor({
        name: (RegionalCrossAttention if name.removesuffix(".processor") in cross else RegionalSelfAttention)(processor)
        for name, processor in processors.items()
    })


def model_kwargs(cond: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The UNet keywords that carry the region weights (none in the exact mode)."""
    weights = cond.get(WEIGHTS)
    return {} if weights is None else {"cross_attention_kwargs": {WEIGHTS: weights}}


def normalised_weights(masks: torch.Tensor) -> torch.Tensor:
    """Layer weights (T, P, 1, h, w) -> each pixel's share of each layer (T, P, h, w), summing to 1 over the
    layers; the plain mean where no layer has weight."""
    masks = masks[:, :, 0].float()
    total = masks.sum(dim=1, keepdim=True)
    uniform = torch.full_like(masks, 1.0 / masks.shape[1])
    return torch.where(total > 0, masks / total.clamp(min=torch.finfo(masks.dtype).tiny), uniform)


def slot_conditioning(layer_cond: dict[str, torch.Tensor], masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-layer conditioning (P, ...) and layer weights (T, P, 1, h, w) -> one conditioning per slot (T, ...):
    the layers' token sequences side by side, the other entries mixed by canvas share, and the weights."""
    t, p = masks.shape[:2]
    shares = normalised_weights(masks)
    cond = {}
    for key, value in layer_cond.items():
        if key == TOKENS:
            cond[key] = value.reshape(1, p * value.shape[1], *value.shape[2:]).expand(t, -1, *value.shape[2:])
        else:
            area = shares.mean(dim=(2, 3)).to(value.dtype)  # (T, P)
            cond[key] = torch.einsum("tp,p...->t...", area, value)
    cond[WEIGHTS] = shares.to(layer_cond[TOKENS].dtype)
    return cond


def pooled_weights(weights: torch.Tensor, tokens: int) -> torch.Tensor:
    """Weights (B, P, h, w) -> (B, P, tokens, 1) at the attention layer whose image has `tokens` pixels: the
    UNet halves the latent's sides (rounding up) between resolutions, so that layer's grid is found by halving."""
    h, w = weights.shape[-2:]
    while h * w > tokens:
        h, w = (h + 1) // 2, (w + 1) // 2
    if h * w != tokens:
        raise ValueError(f"an attention layer of {tokens} pixels does not match the {weights.shape[-2:]} latent")
    pooled = weights if (h, w) == tuple(weights.shape[-2:]) else F.adaptive_avg_pool2d(weights, (h, w))
    return pooled.flatten(2)[..., None]


class _RegionalProcessor:
    """An attention processor that runs `regional` when the call carries region weights (the attention mode) and
    the layer's original processor otherwise (the exact mode, or another pipeline sharing the model)."""

    def __init__(self, original: Any):
        self.original = original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, region_weights=None, **kwargs):
        if region_weights is None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        if attention_mask is not None or attn.spatial_norm is not None or attn.group_norm is not None or hidden_states.ndim != 3:
            raise ValueError("region_mode='attention' supports the attention layers of SD 1.5 / SDXL UNets only; use region_mode='exact'")
        return self.regional(attn, hidden_states, encoder_hidden_states, region_weights)

    def regional(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: Any, region_weights: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class RegionalSelfAttention(_RegionalProcessor):
    """Self-attention where a pixel attends to the pixels that share its layers: the logits get the bias
    log(sum_p s_p(i) s_p(j)) from the pixels' layer shares s, so a layer's pixels look mostly at each other and
    its prompt does not travel through attention into another layer's area (a single layer, or pixels with the
    same shares, get a constant bias: plain attention)."""

    def regional(self, attn, hidden_states, encoder_hidden_states, region_weights):
        b, n, _ = hidden_states.shape
        shares = pooled_weights(region_weights, n)[..., 0].float()  # (B, P, N)
        affinity = torch.einsum("bpi,bpj->bij", shares, shares)  # each row's diagonal is > 0: the shares sum to 1
        bias = affinity.clamp(min=AFFINITY_FLOOR).log()[:, None].to(hidden_states.dtype)
        query, key, value = (_heads(attn, projection(hidden_states)) for projection in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            query, key = attn.norm_q(query), attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=0.0, is_causal=False)
        return _output(attn, out.transpose(1, 2).reshape(b, n, -1).to(query.dtype), hidden_states)


class RegionalCrossAttention(_RegionalProcessor):
    """Cross-attention where each pixel attends to each layer's tokens separately and mixes the results with
    its weights."""

    def regional(self, attn, hidden_states, encoder_hidden_states, region_weights):
        b, n, _ = hidden_states.shape
        p = region_weights.shape[1]
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query = _heads(attn, attn.to_q(hidden_states))  # (B, heads, N, d)
        heads, head_dim = query.shape[1], query.shape[-1]
        query = query[:, None].expand(b, p, heads, n, head_dim).reshape(b * p, heads, n, head_dim)
        # keys and values (B, P*L, heads*d) -> (B*P, heads, L, d): each layer's tokens apart
        key = _heads(attn, attn.to_k(encoder_hidden_states).reshape(b * p, -1, heads * head_dim))
        value = _heads(attn, attn.to_v(encoder_hidden_states).reshape(b * p, -1, heads * head_dim))
        if attn.norm_q is not None:
            query, key = attn.norm_q(query), attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)  # (B*P, heads, N, d)
        out = out.transpose(1, 2).reshape(b, p, n, heads * head_dim)
        # the shares sum to 1 per pixel, so mixing before the (affine) output projection equals mixing after it
        mixed = (out * pooled_weights(region_weights, n).to(out.dtype)).sum(dim=1)
        return _output(attn, mixed.to(query.dtype), hidden_states)


AFFINITY_FLOOR = 1e-6  # pixels that share no layer: a bias of log(1e-6), about -14, never -inf (no NaN rows)


def _heads(attn, projected: torch.Tensor) -> torch.Tensor:
    """(B, S, heads*d) -> (B, heads, S, d)."""
    b, length, inner = projected.shape
    return projected.view(b, length, attn.heads, inner // attn.heads).transpose(1, 2)


def _output(attn, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """The attention layer's output projection, dropout, residual and rescaling (as diffusers' processors)."""
    hidden = attn.to_out[1](attn.to_out[0](hidden))
    if attn.residual_connection:
        hidden = hidden + residual
    return hidden / attn.rescale_output_factor
