"""The demo model's training code: short runs learn, the command writes a loadable model."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import torch

from semdraw_widget.engine.models.demo import captions, train

SMALL = replace(
    train.QUICK, ae_steps=40, ae_batch=8, ae_size=32, ae_lr=3e-3, unet_channels=(16, 32, 32), text_width=32,
    pool_images=16, unet_steps=120, batch=16, lr=3e-3, checkpoint_every=1000,
)


def _mean(values):
    return float(np.mean(values))


def test_a_short_autoencoder_run_lowers_its_loss():
    state = {"save": lambda: None}
    train.train_autoencoder(SMALL, np.random.default_rng(0), lambda message: None, state)
    losses = state["ae_losses"]
    assert _mean(losses[-10:]) < 0.6 * _mean(losses[:5])


def test_a_short_denoiser_run_lowers_its_loss(tmp_path):
    state = {"save": lambda: None}
    autoencoder = train.train_autoencoder(replace(SMALL, ae_steps=2), np.random.default_rng(0), lambda message: None, state)
    tokenizer = captions.write_tokenizer(tmp_path / "tokenizer")
    train.train_denoiser(SMALL, autoencoder, tokenizer, np.random.default_rng(1), lambda message: None, state)
    losses = state["losses"]
    assert len(losses) == SMALL.unet_steps
    assert _mean(losses[-15:]) < 0.5 * _mean(losses[:5])


def test_timesteps_favour_the_slots_the_samplers_use():
    drawn = train.sample_timesteps(4000, torch.Generator().manual_seed(0))
    at_slots = torch.isin(drawn, torch.tensor(train.SLOT_TIMESTEPS)).float().mean().item()
    assert 0.45 < at_slots < 0.6
    assert drawn.min() >= 0 and drawn.max() <= 999


def test_soften_fades_the_texture_of_a_share_of_the_pictures_and_keeps_their_colour():
    stripes = torch.zeros(400, 4, 16, 16)
    stripes[..., ::2] = 1.0  # a texture two latent pixels wide, as the world's are
    stripes += torch.arange(4.0).view(1, 4, 1, 1)  # and a colour per channel
    softened = train.soften(stripes, train.Recipe(soft_inputs=0.5, soft_blur=1.0), torch.Generator().manual_seed(0))
    contrast = (softened[..., ::2] - softened[..., 1::2]).mean(dim=(1, 2, 3))  # 1 when crisp, 0 when fully faded
    faded = contrast < 0.999
    assert 0.4 < faded.float().mean() < 0.6
    assert contrast.min() < 0.3  # some fade almost completely
    torch.testing.assert_close(softened.mean(dim=(2, 3)), stripes.mean(dim=(2, 3)), atol=0.02, rtol=0)
    plain = torch.ones(8, 4, 16, 16) * torch.arange(4.0).view(1, 4, 1, 1)
    assert torch.equal(train.soften(plain, train.Recipe(), torch.Generator().manual_seed(0)), plain)
    assert torch.equal(train.soften(stripes, train.Recipe(soft_inputs=0.0), torch.Generator().manual_seed(0)), stripes)


def test_the_denoiser_learns_from_softened_inputs_against_crisp_targets(tmp_path, monkeypatch):
    seen = []
    original = train.soften

    def recording(pictures, recipe, generator):
        softened = original(pictures, recipe, generator)
        seen.append((pictures.clone(), softened))
        return softened

    monkeypatch.setattr(train, "soften", recording)
    state = {"save": lambda: None}
    autoencoder = train.train_autoencoder(replace(SMALL, ae_steps=2), np.random.default_rng(0), lambda message: None, state)
    tokenizer = captions.write_tokenizer(tmp_path / "tokenizer")
    train.train_denoiser(replace(SMALL, unet_steps=3, soft_inputs=0.5), autoencoder, tokenizer, np.random.default_rng(1), lambda message: None, state)
    assert len(seen) == 3 and any(not torch.equal(crisp, soft) for crisp, soft in seen)


def test_the_train_command_writes_a_model_the_loader_reads_as_a_demo_model_and_resumes(tmp_path):
    from semdraw_widget.engine import load_model
    from semdraw_widget.engine.models.demo.__main__ import main
    from semdraw_widget.engine.models.demo.vocabulary import VOCABULARY

    out = tmp_path / "model"
    assert main(["train", "--quick", "--out", str(out)]) == 0
    for part in ("model_index.json", "unet/config.json", "text_encoder/config.json", "tokenizer/vocab.json",
                 "vae/config.json", "scheduler/scheduler_config.json", "classifier.safetensors", "checkpoint.pt"):
        assert (out / part).is_file(), part
    # with no options, as SEMDRAW_MODEL=<folder> loads it: its own tiny autoencoder and no LoRA (the family's
    # defaults would ask the unreachable hub for TAESD and LCM-LoRA), and it knows the demo's words
    model = load_model(str(out))
    assert model.name == "sd15" and type(model.vae).__name__ == "AutoencoderTiny"
    assert model.vocabulary is VOCABULARY and str(out) in model.notice
    # what a rerun needs to give the same weights: the recipe, the thread count and the libraries' versions
    record = json.loads((out / "training.json").read_text())
    assert record["recipe"] == json.loads(json.dumps(asdict(train.QUICK))) and record["threads"] == torch.get_num_threads()
    assert record["versions"]["torch"] == torch.__version__ and record["versions"]["numpy"] == np.__version__
    # a second run finds the finished checkpoint and writes the same weights again
    first = (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert main(["train", "--quick", "--out", str(out)]) == 0
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == first
