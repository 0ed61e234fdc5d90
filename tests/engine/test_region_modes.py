"""region_mode: "exact" (a model item per slot and layer) and "attention" (one per slot, the layers' prompts
confined to their regions inside cross-attention; regional_attention.py)."""

import numpy as np
import pytest
import torch

from semdraw_widget.engine import StableMultiDiffusionPipeline, StreamMultiDiffusion, load_model
from semdraw_widget.engine import regional_attention

from engine_helpers import APPLE, PEAR, SIZE, box_mask, record_batch_sizes, run, scene

FULL = np.ones((SIZE, SIZE), dtype=bool)


def layers_scene(stream, count):
    """A background prompt and `count` painted layers side by side."""
    stream.update_background(prompt="a wooden table")
    step = SIZE // count
    for i in range(count):
        stream.update_single_layer(i, prompt=f"thing {i}", mask=box_mask(8, 56, i * step, (i + 1) * step))
    return stream


@pytest.mark.parametrize("count", [1, 3, 6])
def test_attention_mode_calls_the_model_once_per_slot_whatever_the_layer_count(make_stream, tiny, monkeypatch, count):
    sizes = record_batch_sizes(tiny, monkeypatch)
    stream = layers_scene(make_stream(region_mode="attention"), count)
    run(stream, 4)
    assert sizes == [stream.num_slots] * 4
    sizes.clear()
    exact = layers_scene(make_stream(), count)
    run(exact, 4)
    assert sizes == [exact._scene.batch().num_calls] * 4 and sizes[0] > exact.num_slots  # an item per (slot, layer)


@pytest.mark.parametrize("cfg_type", ["none", "full", "self"])
def test_one_full_canvas_layer_gives_the_exact_modes_frames(make_stream, cfg_type):
    frames = {}
    for mode in ("exact", "attention"):
        stream = make_stream(region_mode=mode, cfg_type=cfg_type, guidance_scale=2.0, bootstrap_steps=2)
        stream.update_single_layer(0, prompt="a red apple", negative_prompt="blurry", mask=FULL, mask_std=0.0)
        frames[mode] = run(stream, 6)
    torch.testing.assert_close(frames["attention"], frames["exact"], atol=1e-5, rtol=1e-5)


def test_one_shot_pipeline_takes_the_mode_and_one_full_layer_gives_the_same_image(tiny):
    images = {
        mode: StableMultiDiffusionPipeline("cpu", model=tiny, region_mode=mode)(
            ["a red apple"], masks=[FULL], mask_stds=0.0, height=SIZE, width=SIZE, seed=3, output_type="latent")
        for mode in ("exact", "attention")
    }
    torch.testing.assert_close(images["attention"], images["exact"], atol=1e-5, rtol=1e-5)
    other = StableMultiDiffusionPipeline("cpu", model=tiny)(
        ["a red apple", "a green pear"], masks=[APPLE, PEAR], height=SIZE, width=SIZE, seed=3, region_mode="attention")
    assert other.size == (SIZE, SIZE)


def test_a_layers_tokens_reach_only_the_pixels_it_weighs(tiny):
    """At the cross-attention where the text enters: changing one layer's prompt changes the output only where
    that layer has weight (at the attention layer's resolution)."""
    regional_attention.install(tiny)
    name, attn = next((n, m) for n, m in tiny.unet.named_modules() if getattr(m, "is_cross_attention", False))
    side = 8
    weights = torch.zeros(1, 2, side, side)
    weights[:, 0, :, :3] = 1.0  # layer 0 on the left, layer 1 elsewhere
    weights[:, 1] = 1.0 - weights[:, 0]
    pixels = torch.randn(1, side * side, attn.to_q.in_features)
    tokens = {text: tiny.encode_prompts([text, "a green pear"])["encoder_hidden_states"].reshape(1, -1, attn.to_k.in_features)
              for text in ("a red apple", "a blue whale")}
    with torch.no_grad():
        outs = [attn(pixels, encoder_hidden_states=tokens[text], region_weights=weights) for text in tokens]
    changed = (outs[0] - outs[1]).abs().amax(-1).view(side, side) > 1e-6
    assert changed[:, :3].all() and not changed[:, 3:].any()


def test_self_attention_keeps_each_layers_pixels_among_themselves(tiny):
    """Self-attention in the attention mode: what the pixels of one layer hold does not reach (beyond the
    bias floor, e^-14) the pixels that do not share a layer with them; a single layer is plain attention."""
    regional_attention.install(tiny)
    attn = next(m for n, m in tiny.unet.named_modules() if n.endswith("attn1"))
    side = 8
    weights = torch.zeros(1, 2, side, side)
    weights[:, 0, :, :3] = 1.0
    weights[:, 1] = 1.0 - weights[:, 0]
    pixels = torch.randn(1, side, side, attn.to_q.in_features)
    other = pixels.clone()
    other[:, :, 3:] = torch.randn_like(other[:, :, 3:])  # layer 1's pixels change
    with torch.no_grad():
        outs = [attn(x.view(1, side * side, -1), region_weights=weights).view(side, side, -1) for x in (pixels, other)]
        one_layer = torch.ones(1, 1, side, side)
        plain = attn.processor.original(attn, pixels.view(1, side * side, -1))
        torch.testing.assert_close(attn(pixels.view(1, side * side, -1), region_weights=one_layer), plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs[0][:, :3], outs[1][:, :3], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(outs[0][:, 3:], outs[1][:, 3:])


def test_switching_modes_while_streaming_keeps_the_scene(make_stream, tiny, monkeypatch):
    stream = scene(make_stream())
    run(stream, 3)
    layers = [(layer.prompt, layer.mask) for layer in stream._scene.layers]
    sizes = record_batch_sizes(tiny, monkeypatch)
    stream.region_mode = "attention"
    assert stream.region_mode == "attention"
    run(stream, 3)
    assert sizes == [stream.num_slots] * 3
    assert [(layer.prompt, layer.mask) for layer in stream._scene.layers] == layers
    stream.region_mode = "exact"
    back = run(stream, 8)  # a still scene settles to what the exact mode alone gives
    torch.testing.assert_close(back, run(scene(make_stream()), 8), atol=1e-4, rtol=1e-4)


def test_modes_are_checked_and_sd3_is_refused_with_what_to_do(make_stream):
    with pytest.raises(ValueError, match="region_mode must be one of"):
        make_stream(region_mode="fast")
    stream = make_stream()
    with pytest.raises(ValueError, match="region_mode must be one of"):
        stream.region_mode = "regions"
    sd3 = load_model("tiny-3")
    with pytest.raises(ValueError, match="region_mode='exact'"):
        StreamMultiDiffusion("cpu", model=sd3, height=SIZE, width=SIZE, region_mode="attention")
    exact = StreamMultiDiffusion("cpu", model=sd3, height=SIZE, width=SIZE)
    with pytest.raises(ValueError, match="region_mode='exact'"):
        exact.region_mode = "attention"
    assert exact.region_mode == "exact"


def test_sdxl_attention_mode_runs_with_one_call_per_slot(monkeypatch):
    xl = load_model("tiny-xl")
    sizes = record_batch_sizes(xl, monkeypatch)
    stream = scene(StreamMultiDiffusion("cpu", model=xl, height=SIZE, width=SIZE, region_mode="attention"))
    out = run(stream, 3)
    assert torch.isfinite(out).all() and sizes == [stream.num_slots] * 3


def test_the_attention_mode_traces_as_one_graph_for_torch_compile(make_stream, tiny):
    """No graph break (no host sync, no data-dependent branch) in the model call: torch.compile and CUDA graphs
    take it whole."""
    stream = scene(make_stream(region_mode="attention"))
    with torch.no_grad():
        explained = torch._dynamo.explain(tiny.predict)(*stream.batch_inputs())
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
