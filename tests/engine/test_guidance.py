"""Classifier-free guidance (DESIGN: the algorithm): `full` (negative prompts, a second model pass) and `self`
(StreamDiffusion's residual CFG, no second pass). As in StreamDiffusion and the seed project, guidance acts only
at guidance_scale > 1; its settings are checked; the stream still settles on the one-shot image with it."""

import numpy as np
import pytest
import torch

from semdraw_widget.engine import StableMultiDiffusionPipeline, StreamMultiDiffusion, load_model
from semdraw_widget.engine.blend import slot_noise

from engine_helpers import APPLE, PEAR, SIZE, run, scene

FULL = np.ones((SIZE, SIZE), dtype=bool)
LCM_INDICES = (0, 4, 12, 25, 37)  # the stream's default for SD 1.5


@pytest.fixture(scope="module")
def models(tiny):
    torch.manual_seed(0)
    return {"tiny": tiny, "tiny-xl": load_model("tiny-xl", device="cpu"), "tiny-3": load_model("tiny-3", device="cpu")}


def one_full_layer(stream, prompt="a red apple"):
    """One unblurred full-canvas layer, all of its own prompt: the stream batch is StreamDiffusion's."""
    stream.update_single_layer(0, prompt=prompt, mask=FULL, mask_std=0.0, prompt_strength=1.0)
    return stream


def streamdiffusion_self_cfg(predict, model, steps, prompt, seed, scale, delta, frames):
    """StreamDiffusion's txt2img stream batch with cfg_type="self", written out from its definition, for one
    prompt over the whole canvas (LCM's x0 formula). Each slot keeps a stock noise S that moves on with its
    latent; the unconditional prediction is delta * S; after a step, the next slot's stock is its noise plus
    alpha'/beta' times the x0 formula applied to (beta S, guided prediction). Slot 0 takes the seed's fixed
    noise and the buffer starts from white, as ours (the start washes out after T frames anyway)."""
    t = len(steps)
    alpha, beta, c_skip, c_out = (v.view(-1, 1, 1, 1) for v in (steps.alpha, steps.beta, steps.c_skip, steps.c_out))
    noise = slot_noise(seed, (t, model.latent_channels, SIZE // 8, SIZE // 8), torch.device("cpu"), torch.float32)
    cond = {k: v.expand(t, *v.shape[1:]) for k, v in model.encode_prompts([prompt]).items()}
    latents = alpha[1:] * model.encode(torch.ones(1, 3, SIZE, SIZE)) + beta[1:] * noise[1:]
    stock, out = noise[1:], []
    lcm_x0 = lambda x, eps: c_out * (x - beta * eps) / alpha + c_skip * x
    for _ in range(frames):
        x, s = torch.cat([noise[:1], latents]), torch.cat([noise[:1], stock])
        eps = predict(x, steps.timesteps, cond)
        guided = delta * s + scale * (eps - delta * s)
        x0, moved = lcm_x0(x, guided), lcm_x0(beta * s, guided)
        latents = alpha[1:] * x0[:-1] + beta[1:] * noise[1:]
        stock = noise[1:] + alpha[1:] / beta[1:] * moved[:-1]
        out.append(x0[-1:])
    return out


def close(ours, reference, rel=1e-4):
    """Equal up to float rounding, relative to the reference's size (a random model guided at s = 3 grows large)."""
    return torch.allclose(ours, reference, rtol=rel, atol=rel * float(reference.abs().max()))


def test_self_guidance_is_streamdiffusions_residual_recursion(make_stream, tiny):
    """Self-guidance's residual is not just the noise a latent was made with: it moves on with the latent,
    carrying what guidance changed (StreamDiffusion's stock noise). Without that, s > 2 oscillates and grows."""
    stream = one_full_layer(make_stream(cfg_type="self", guidance_scale=3.0, bootstrap_steps=0, seed=11))
    ours = [stream(output_type="latent") for _ in range(8)]
    reference = streamdiffusion_self_cfg(tiny.predict, tiny, stream.steps, "a red apple", 11, 3.0, 1.0, 8)
    for frame, (a, b) in enumerate(zip(ours, reference)):
        assert close(a, b), (frame, (a - b).abs().max(), b.abs().max())


def oracle(model, target):
    """A fake model whose clean estimate is always `target`: the eps (or, for flow matching, the velocity)
    that makes x0 = target at every timestep. Unguided, the frame is the target; guided at scale s, the
    residual stands for "no prompt", so the frame is about s * target."""
    if model.name == "sd3":
        return lambda x, t, cond: (x - target) / (t.float() / model.schedule.num_train_timesteps).view(-1, 1, 1, 1)
    abar = model.schedule.alphas_cumprod

    def predict(x, t, cond):
        a = abar[t.long()].float().view(-1, 1, 1, 1)
        return (x - a.sqrt() * target) / (1.0 - a).sqrt()
    return predict


@pytest.mark.parametrize("scale", [1.5, 3.0])
@pytest.mark.parametrize("key", ["tiny", "tiny-xl", "tiny-3"])
def test_self_guidance_scales_the_prediction_by_the_guidance_scale(models, monkeypatch, key, scale):
    """SD 1.5 (LCM), SDXL-Lightning (Euler) and SD3 (flow matching: the velocity is not a noise; read as one,
    the residual pulled x0 to zero)."""
    model = models[key]
    target = torch.randn(1, model.latent_channels, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(5))
    stream = StreamMultiDiffusion("cpu", model=model, height=SIZE, width=SIZE, cfg_type="self", guidance_scale=scale,
                                  bootstrap_steps=0, seed=11)
    monkeypatch.setattr(stream.predictor, "predict", oracle(model, target))
    frame = run(one_full_layer(stream), 2 * stream.num_slots)
    k = float((frame * target).sum() / (target * target).sum())
    assert k == pytest.approx(scale, rel=0.02)


def test_a_tiled_one_shot_carries_the_residual_like_the_stream(oneshot, monkeypatch):
    """The one-shot blends each window's residual shift with the window weights, as it blends x0: with a
    model that works pixel by pixel, tiling changes nothing, so the image is StreamDiffusion's after T frames."""
    pixelwise = lambda x, t, cond: 0.3 * x + 0.2
    monkeypatch.setattr(oneshot.model, "predict", pixelwise)
    image = oneshot(["a red apple"], masks=[FULL], prompt_strengths=1.0, mask_stds=0.0, bootstrap_steps=0, seed=11,
                    height=SIZE, width=SIZE, t_index_list=LCM_INDICES, tile_size=32, cfg_type="self",
                    guidance_scale=3.0, output_type="latent")
    steps = oneshot.model.schedule.prepare(LCM_INDICES, torch.device("cpu"), torch.float32)
    reference = streamdiffusion_self_cfg(pixelwise, oneshot.model, steps, "a red apple", 11, 3.0, 1.0, len(steps))
    assert close(image, reference[-1])


@pytest.mark.parametrize("cfg_type, scale, delta", [("self", 3.0, 0.5), ("full", 3.0, 1.0)])
@pytest.mark.parametrize("key", ["tiny", "tiny-xl", "tiny-3"])
def test_guided_still_scene_converges_to_the_one_shot_image(models, key, cfg_type, scale, delta):
    model = models[key]
    stream = scene(StreamMultiDiffusion("cpu", model=model, height=SIZE, width=SIZE, seed=11, cfg_type=cfg_type,
                                        guidance_scale=scale, delta=delta))
    stream.update_single_layer(0, negative_prompt="blurry")
    frame = run(stream, stream.num_slots)
    image = StableMultiDiffusionPipeline("cpu", model=model)(
        ["a red apple", "a green pear"], negative_prompts=["blurry", ""], masks=[APPLE, PEAR],
        background_prompt="a wooden table", height=SIZE, width=SIZE, t_index_list=model.default_t_index_list,
        mask_type="continuous", mask_stds=[2.0, 0.0], prompt_strengths=0.95, seed=11, bootstrap_steps=1,
        bootstrap_leak_sensitivity=None, cfg_type=cfg_type, guidance_scale=scale, delta=delta, output_type="latent",
        preprocess_mask_cover_alpha=model.stream_cover_alpha,
    )
    assert close(frame, image, rel=1e-5), (frame - image).abs().max()
    assert close(stream(output_type="latent"), frame, rel=1e-6)  # and it stays there


@pytest.mark.parametrize("scale", [1.0, 0.5])
@pytest.mark.parametrize("cfg_type", ["full", "self"])
def test_guidance_acts_only_above_scale_one(make_stream, oneshot, tiny, monkeypatch, cfg_type, scale):
    """At guidance_scale <= 1 every kind is exactly the unguided path: the same model calls, the same frames."""
    batch_sizes = []
    predict = tiny.predict
    monkeypatch.setattr(tiny, "predict", lambda x, t, cond: batch_sizes.append(x.shape[0]) or predict(x, t, cond))

    def frames(**guidance):
        stream = scene(make_stream(**guidance))
        stream.update_single_layer(0, negative_prompt="blurry")
        batch_sizes.clear()
        return [stream(output_type="latent") for _ in range(3)], list(batch_sizes)

    (plain, plain_sizes), (guided, guided_sizes) = frames(), frames(cfg_type=cfg_type, guidance_scale=scale)
    assert guided_sizes == plain_sizes and all(torch.equal(a, b) for a, b in zip(plain, guided))

    settings = dict(negative_prompts="blurry", masks=[APPLE], height=SIZE, width=SIZE, seed=3, output_type="latent")
    unguided = oneshot(["a red apple"], cfg_type="none", **settings)
    assert torch.equal(oneshot(["a red apple"], cfg_type=cfg_type, guidance_scale=scale, **settings), unguided)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.5, 1e6, "2", True])
@pytest.mark.parametrize("name", ["guidance_scale", "delta"])
def test_guidance_settings_are_checked_in_both_pipelines(make_stream, oneshot, name, value):
    message = rf"^{name} must be a number between 0 and \d+ \(got "
    with pytest.raises(ValueError, match=message):
        make_stream(cfg_type="self", **{name: value})
    with pytest.raises(ValueError, match=message):  # before any model is looked for
        StreamMultiDiffusion("cpu", hf_key="/nowhere/at/all", **{name: value})
    with pytest.raises(ValueError, match=message):
        oneshot("a cat", height=SIZE, width=SIZE, cfg_type="self", **{name: value})
    make_stream(cfg_type="self", **{name: 2})  # a whole number is a number


def test_unsupported_cfg_type_names_the_supported_ones(make_stream, oneshot):
    message = r"cfg_type must be one of 'none', 'full', 'self' \(got 'initialize'\); StreamDiffusion's 'initialize' is not supported"
    with pytest.raises(ValueError, match=message):
        make_stream(cfg_type="initialize")
    with pytest.raises(ValueError, match=message):
        oneshot("a cat", height=SIZE, width=SIZE, cfg_type="initialize")
