"""Training the demo model on a CPU: the autoencoder first, then the UNet and the text encoder together.

`train(out, recipe)` writes a complete diffusers folder (`model_index.json`, `unet/`, `text_encoder/`,
`tokenizer/`, `vae/`, `scheduler/`) into `out`, from nothing but the world generator, deterministically
from `recipe.seed` (for a given number of CPU threads). A checkpoint is written to `out/checkpoint.pt`
every `recipe.checkpoint_every` steps; a run started again with the same `out` resumes from it.

How it learns to work in few steps (the stream has 5 slots; there is no distillation here):
- it predicts v = sqrt(abar) eps - sqrt(1 - abar) x0 (as SD 2.x does) rather than eps, so its clean
  estimate x0 = sqrt(abar) x_t - sqrt(1 - abar) v is as good at the noisiest slot as at the others (from
  an eps prediction, x0 at t=999 carries 15 times the prediction's error); the engine turns v into eps;
- timesteps are drawn half from the slots the stream samples at (the 50-step LCM grid indices 0, 4, 12,
  25, 37: timesteps 999, 919, 759, 499, 259) and half uniformly, so it is best exactly where it is used;
- its world is made for few steps: a texture repeats every two or four latent pixels, and in the pictures it
  learns from its marks sit on one fixed grid, so no step has an offset left to choose (`world.render`);
- the weights used are an exponential moving average of the trained ones.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import captions, world
from .vocabulary import COLOURS, Material, all_materials

SLOT_TIMESTEPS = (999, 919, 759, 499, 259)
SCHEDULER_CONFIG = {
    "_class_name": "LCMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "original_inference_steps": 50,
}


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained weights (besides the code)."""

    seed: int = 0
    # autoencoder
    ae_channels: int = 32
    ae_encoder_blocks: tuple[int, ...] = (0, 1, 1, 1)
    ae_decoder_blocks: tuple[int, ...] = (1, 1, 1, 0)
    ae_steps: int = 2500
    ae_batch: int = 16
    ae_size: int = 64
    ae_lr: float = 1e-3
    # UNet and text encoder
    unet_channels: tuple[int, ...] = (16, 32, 64)
    unet_norm_groups: int = 8
    lowest_self_attention: bool = True  # self-attention at the lowest resolution (see unet_config)
    unet_heads: int = 2  # attention heads per layer: 16- and 32-wide at these widths (see unet_config)
    text_width: int = 64
    text_layers: int = 2
    max_tokens: int = 24  # the tokenizer's length: every cross-attention reads this many keys
    pool_images: int = 1024  # 256x256 training images, encoded once; refreshed as training goes
    pool_refresh: int = 1  # images replaced in the pool after every step
    composites: float = 0.6  # share of training pictures with regions of other materials (see LatentPool)
    composite_radii: tuple[float, float] = (0.1, 0.35)  # ... whose regions' half-axes are this share of the side
    caption_inside: float = 0.3  # share of composites whose captioned material fills a region, not the rest (see LatentPool)
    plain_share: float = 0.0  # extra share of pictures captioned with a plain colour (see LatentPool._draw; 0.15 tried: the model card)
    anchored_textures: bool = True  # the denoiser's textures on a fixed grid (see world.render); crops keep it
    composites_below: int = 400  # ... whose target is the composite below this timestep, the captioned material alone above (see targets)
    grow_pixels: int = 8  # ... with the captioned material grown this many pixels into its neighbours (see targets; 0: as before)
    lerp_share: float = 0.3  # share of captions whose embedding is lerped towards another's, as prompt strength does
    lerp_low: float = 0.75  # ... by at most this much (the canvas's default prompt strength is 0.95)
    soft_inputs: float = 0.0  # share of training pictures faded towards a blurred copy before the noise (see soften)
    soft_blur: float = 1.0  # ... whose blur has a sigma of up to this many latent pixels
    unet_steps: int = 6000
    batch: int = 64
    crop: int = 16  # latent crop side (128 pixels); every fourth step trains on whole 32x32 latents
    lr: float = 1.5e-3
    ema: float = 0.995
    checkpoint_every: int = 250
    classifier_images: int = 1200

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def unet_config(recipe: Recipe) -> dict:
    return dict(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=tuple(recipe.unet_channels),
        layers_per_block=1,
        # No attention at full latent resolution, and at the middle one both attention layers read the prompt
        # (only_cross_attention): a frame of 20 images at 256x256 stays fast on a CPU. At the lowest resolution
        # (8x8 for a 256-pixel canvas) self-attention lets a whole region agree on what it holds (how big its clouds
        # are, how tall its grass; the texture's offset, before textures were anchored), which convolutions alone
        # decide patch by patch.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        only_cross_attention=(True, True, not recipe.lowest_self_attention),
        mid_block_only_cross_attention=not recipe.lowest_self_attention,
        cross_attention_dim=recipe.text_width,
        # diffusers reads UNet2DConditionModel's `attention_head_dim` as the number of heads. Few wide heads: on
        # a CPU, sixteen heads 2 or 4 wide made attention take half the UNet's time (torch's CPU kernel is slow
        # for narrow heads) and taught nothing that two heads do not.
        attention_head_dim=recipe.unet_heads,
        norm_num_groups=recipe.unet_norm_groups,
    )


def text_config(recipe: Recipe, tokenizer) -> dict:
    return dict(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_size=recipe.text_width, intermediate_size=2 * recipe.text_width,
        num_hidden_layers=recipe.text_layers, num_attention_heads=4, max_position_embeddings=77,
        projection_dim=recipe.text_width,
    )


def autoencoder_config(recipe: Recipe, scaling_factor: float = 1.0) -> dict:
    return dict(
        encoder_block_out_channels=(recipe.ae_channels,) * 4,
        decoder_block_out_channels=(recipe.ae_channels,) * 4,
        num_encoder_blocks=tuple(recipe.ae_encoder_blocks),
        num_decoder_blocks=tuple(recipe.ae_decoder_blocks),
        latent_channels=4,
        scaling_factor=scaling_factor,
    )


def alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


def lerp_some(cond: torch.Tensor, recipe: Recipe, generator: torch.Generator) -> torch.Tensor:
    """Move a share of the batch's embeddings a little towards another caption's, lerp(other, own, rho) with
    rho in [lerp_low, 1], keeping their targets: the engine conditions every layer on lerp(background, layer,
    prompt strength), so the model learns that a strength near 1 paints the layer's words (and, by symmetry,
    one near 0 the background's)."""
    count = cond.shape[0]
    chosen = torch.rand(count, generator=generator) < recipe.lerp_share
    rho = recipe.lerp_low + (1.0 - recipe.lerp_low) * torch.rand(count, generator=generator)
    rho = torch.where(chosen, rho, torch.ones(count)).view(-1, 1, 1)
    other = cond[torch.randperm(count, generator=generator)]
    return torch.lerp(other, cond, rho)


def sample_timesteps(count: int, generator: torch.Generator) -> torch.Tensor:
    slots = torch.tensor(SLOT_TIMESTEPS)[torch.randint(len(SLOT_TIMESTEPS), (count,), generator=generator)]
    uniform = torch.randint(0, 1000, (count,), generator=generator)
    return torch.where(torch.rand(count, generator=generator) < 0.5, slots, uniform)


def soften(pictures: torch.Tensor, recipe: Recipe, generator: torch.Generator) -> torch.Tensor:
    """The pictures the noise is added to: a share `soft_inputs` of them moved a random part of the way towards
    a blurred copy (one blur per batch, sigma up to `soft_blur` latent pixels); their targets stay crisp.

    After its first slot the stream hands the model its own previous estimate, noised, not a clean picture. An
    estimate trained with a squared error is the mean of the pictures the noise leaves possible: where a
    texture's offset or a cloud's place is still open, a faded, blurred texture. A model that has only seen
    crisp pictures under noise keeps such a fade at the quietest slot (259). Off in the shipped recipe: with
    textures of random offset it lifted region adherence by a point at most and cost prompt adherence (93.9%
    and 96.0% against 99.0%); with anchored textures, which leave no offset open, it cost 0.8 points (the model
    card). It draws from `generator` even when off, so the shipped weights' random stream is this code's.
    """
    from ...regions import blur

    count = pictures.shape[0]
    amount = torch.rand(count, generator=generator) * (torch.rand(count, generator=generator) < recipe.soft_inputs)
    sigma = 0.3 + max(recipe.soft_blur - 0.3, 0.0) * float(torch.rand((), generator=generator))
    if recipe.soft_blur <= 0 or not amount.any():
        return pictures
    return torch.lerp(pictures, blur(pictures, sigma), amount.view(-1, 1, 1, 1))


def targets(pictures: torch.Tensor, alone: torch.Tensor, mixed: torch.Tensor, t: torch.Tensor, recipe: Recipe,
            grown: torch.Tensor | None = None) -> torch.Tensor:
    """The clean picture the model is taught to see in each noisy input: the picture itself, except for a
    composite at a timestep at or above `composites_below`, where it is the captioned material alone, and
    (with `recipe.grow_pixels`) a composite below it, where it is `grown`: the picture with the captioned material
    grown that many pixels into its neighbours.

    The region-based blend hands each layer a picture where the other layers' paint shows, and asks it for its
    own prompt. At the noisier slots (999, 919, 759, 499 with 400) a layer must paint its words whatever the
    input shows -- the blend, not the model, puts them in place -- so there a composite teaches it to paint its
    caption over the regions of other materials (a model that kept them would keep the white or the colours of
    the other layers at the start of its region, and paint a smaller, muddied region). At the quietest slot
    (259) what shows stays where it is: the layout the noisier slots settled, and a background image's detail.
    The last slot before it (499) is the first whose blend reaches close to a layer's painted edge, so a layer
    that still paints its words there fills its region up to that edge. With discrete masks it does not quite:
    there a layer has weight at 499 only where its blurred mask exceeds that slot's noise level, a band inside
    its edge, and the neighbour's paint shows in the band at 259, where the layer's weight reaches its edge.
    Grown targets teach the quietest slot to take such a band back for its own words.
    """
    quiet = pictures if grown is None else torch.where(mixed.view(-1, 1, 1, 1), grown, pictures)
    keep = (t < recipe.composites_below) | ~mixed
    return torch.where(keep.view(-1, 1, 1, 1), quiet, alone)


def images_to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1], as diffusers autoencoders read images."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) * 2.0 - 1.0


# ---- phase 1: the autoencoder -------------------------------------------------------------------
def train_autoencoder(recipe: Recipe, rng: np.random.Generator, log: Callable[[str], None], state: dict):
    from diffusers import AutoencoderTiny

    torch.manual_seed(recipe.seed)
    ae = AutoencoderTiny(**autoencoder_config(recipe))
    optimizer = torch.optim.AdamW(ae.parameters(), lr=recipe.ae_lr, weight_decay=0.0)
    start = 0
    if "ae" in state:
        ae.load_state_dict(state["ae"])
        optimizer.load_state_dict(state["ae_optimizer"])
        start = state["ae_step"]
    noise = torch.Generator().manual_seed(recipe.seed + 1)
    began = time.perf_counter()
    for step in range(start, recipe.ae_steps):
        lr = recipe.ae_lr * 0.5 * (1 + math.cos(math.pi * step / recipe.ae_steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        images = images_to_tensor([world.autoencoder_sample(rng, recipe.ae_size, recipe.ae_size) for _ in range(recipe.ae_batch)])
        latents = ae.encode(images).latents
        # Noise on the latents: the decoder must also draw what a diffusion model hands it, which is never exact.
        noisy = latents + 0.1 * latents.detach().std() * torch.randn(latents.shape, generator=noise)
        decoded = ae.decode(noisy).sample
        loss = F.mse_loss(decoded, images) + 0.5 * F.l1_loss(decoded, images) + 1e-3 * latents.pow(2).mean()
        state.setdefault("ae_losses", []).append(loss.item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == recipe.ae_steps - 1:
            log(f"autoencoder step {step}/{recipe.ae_steps} loss {loss.item():.4f} ({time.perf_counter() - began:.0f} s)")
        if (step + 1) % recipe.checkpoint_every == 0:
            state.update(ae=ae.state_dict(), ae_optimizer=optimizer.state_dict(), ae_step=step + 1, rng=rng.bit_generator.state)
            state["save"]()
    state.update(ae=ae.state_dict(), ae_optimizer=optimizer.state_dict(), ae_step=recipe.ae_steps, rng=rng.bit_generator.state)
    return ae.eval().requires_grad_(False)


# ---- phase 2: the UNet and the text encoder -------------------------------------------------------
class LatentPool:
    """Encoded 256x256 training images with their materials; a few are replaced by new ones after each step."""

    def __init__(self, ae, recipe: Recipe, rng: np.random.Generator, saved: dict | None = None):
        self.ae, self.rng, self.recipe = ae, rng, recipe
        self.materials = all_materials()
        if saved is not None:  # resuming: the pool as the checkpoint left it
            self.latents, self.scaling_factor = saved["pool_latents"], saved["scaling_factor"]
            self.labels = [Material(*label) for label in saved["pool_labels"]]
            self.mixed, self.alone = saved["pool_mixed"], saved["pool_alone"]
            self.grown = saved.get("pool_grown", self.latents)
            return
        self.labels = [self._draw() for _ in range(recipe.pool_images)]
        self.mixed = torch.zeros(recipe.pool_images, dtype=torch.bool)  # which pictures are composites
        encoded = [self._encode(self.labels[i:i + 32], self.mixed[i:i + 32]) for i in range(0, len(self.labels), 32)]
        self.latents = torch.cat([pictures for pictures, _, _ in encoded])
        self.alone = torch.cat([alone for _, alone, _ in encoded])  # each picture's captioned material alone
        # each composite with its captioned material grown (see targets); without growth, the pictures themselves
        self.grown = torch.cat([grown for _, _, grown in encoded]) if self.recipe.grow_pixels > 0 else self.latents
        self.scaling_factor = float(1.0 / self.latents.std())

    def saved(self) -> dict:
        saved = {"pool_latents": self.latents, "pool_labels": [(m.colour, m.texture) for m in self.labels],
                 "pool_mixed": self.mixed, "pool_alone": self.alone, "scaling_factor": self.scaling_factor}
        return saved | ({"pool_grown": self.grown} if self.grown is not self.latents else {})

    def _draw(self) -> Material:
        # neutral prompts are one material of 99: draw them a little more often
        if self.rng.random() < 0.04:
            return Material(None, None)
        # A plain colour is where a squared error hedges: a flat target among many textured ones is learnt as
        # their mean, a faint regular hatch, which reads as brick. Drawn only when on, so that recipes without it
        # keep their random stream (and weights).
        if self.recipe.plain_share > 0 and self.rng.random() < self.recipe.plain_share:
            colours = list(COLOURS)
            return Material(colours[self.rng.integers(len(colours))], None)
        return self.materials[self.rng.integers(len(self.materials))]

    @torch.no_grad()
    def _encode(self, labels: list[Material], mixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pictures, alone, grown): the encoded picture of each material, of its material alone and of the
        picture with its material grown `recipe.grow_pixels` pixels (both the picture itself for a picture that
        is not a composite; grown is the picture itself without growth); `mixed` (written in place) says which are
        composites."""
        pictures, alone, grown = [], [], []
        for k, material in enumerate(labels):
            mixed[k] = bool(self.rng.random() < self.recipe.composites)
            picture, base = self._picture(material, bool(mixed[k]))
            pictures.append(picture)
            if mixed[k]:
                alone.append(base)
                grown.append(world.grow_into_neighbours(picture, base, self.recipe.grow_pixels))
        encoded = self.ae.encode(images_to_tensor(pictures)).latents
        targets, grown_targets = encoded.clone(), encoded
        if alone:
            targets[mixed[:len(labels)]] = self.ae.encode(images_to_tensor(alone)).latents
            if self.recipe.grow_pixels > 0:
                grown_targets = encoded.clone()
                grown_targets[mixed[:len(labels)]] = self.ae.encode(images_to_tensor(grown)).latents
        return encoded, targets, grown_targets

    def _picture(self, material: Material, mixed: bool) -> tuple[np.ndarray, np.ndarray]:
        """(picture, material alone): the material alone (both), or (a share `composites`) the material as the
        background of a picture with a region or two of other materials, and the material alone under it (the
        two targets of a composite; see `targets`). A share `caption_inside` of the composites show the material
        in a region instead, with other materials around it: the stream asks that of every painted layer, whose
        input shows its own paint inside its region and the other layers' around it."""
        anchored = self.recipe.anchored_textures
        if mixed:
            # drawn only when on, so that recipes without it keep their random stream (and weights)
            inside = self.recipe.caption_inside > 0 and bool(self.rng.random() < self.recipe.caption_inside)
            return world.composite_over(self.rng, 256, 256, background=material, shapes=(1, 3), anchored=anchored,
                                        radii=tuple(self.recipe.composite_radii), inside=inside)
        image = world.render(material, 256, 256, self.rng, anchored)
        return image, image

    def refresh(self, count: int) -> None:
        for _ in range(count):
            i = int(self.rng.integers(len(self.labels)))
            self.labels[i] = self._draw()
            pictures, alone, grown = self._encode([self.labels[i]], self.mixed[i:i + 1])
            self.latents[i], self.alone[i] = pictures[0], alone[0]
            if self.grown is not self.latents:
                self.grown[i] = grown[0]

    def batch(self, size: int, crop: int) -> tuple[torch.Tensor, torch.Tensor, list[Material], torch.Tensor, torch.Tensor]:
        """(pictures, alone, labels, mixed, grown) of `size` random crops."""
        index = self.rng.integers(0, len(self.labels), size)
        side = self.latents.shape[-1]
        out, alone, grown = (torch.empty(size, 4, crop, crop) for _ in range(3))
        # anchored textures stay on their grid in a crop that starts on it, as they are on a canvas's latents
        step = world.REPEAT // world.CELL if self.recipe.anchored_textures else 1
        for k, i in enumerate(index):
            y, x = self.rng.integers(0, (side - crop) // step + 1, 2) * step
            out[k] = self.latents[i, :, y:y + crop, x:x + crop]
            alone[k] = self.alone[i, :, y:y + crop, x:x + crop]
            grown[k] = self.grown[i, :, y:y + crop, x:x + crop]
        mixed = self.mixed[torch.from_numpy(index)]
        scale = self.scaling_factor
        return out * scale, alone * scale, [self.labels[i] for i in index], mixed, grown * scale


def train_denoiser(recipe: Recipe, ae, tokenizer, rng: np.random.Generator, log: Callable[[str], None], state: dict):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(recipe.seed + 2)
    unet = UNet2DConditionModel(**unet_config(recipe))
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config(recipe, tokenizer)))
    parameters = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=recipe.lr, weight_decay=0.01)
    ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)
    start = 0
    if "unet" in state:
        for module, key in ((unet, "unet"), (text_encoder, "text_encoder"), (ema_unet, "ema_unet"), (ema_text, "ema_text")):
            module.load_state_dict(state[key])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        rng.bit_generator.state = state["rng"]
    pool = LatentPool(ae, recipe, rng, state if "pool_latents" in state else None)
    log(f"latent pool: {len(pool.labels)} images, scaling factor {pool.scaling_factor:.4f}")
    abar = alphas_cumprod()
    generator = torch.Generator().manual_seed(recipe.seed + 3)
    if "generator" in state:
        generator.set_state(state["generator"])

    def checkpoint(step: int) -> None:
        state.update(
            unet=unet.state_dict(), text_encoder=text_encoder.state_dict(), ema_unet=ema_unet.state_dict(),
            ema_text=ema_text.state_dict(), optimizer=optimizer.state_dict(), step=step, rng=rng.bit_generator.state,
            generator=generator.get_state(), **pool.saved(),
        )
        state["save"]()

    began, running = time.perf_counter(), None
    for step in range(start, recipe.unet_steps):
        warmup = min(1.0, (step + 1) / 200)
        lr = recipe.lr * warmup * 0.5 * (1 + math.cos(math.pi * step / recipe.unet_steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        whole = step % 4 == 3
        size, crop = (recipe.batch // 4, 32) if whole else (recipe.batch, recipe.crop)
        x0, alone, labels, mixed, grown = pool.batch(size, crop)
        texts = [captions.caption(m, rng) for m in labels]
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        t = sample_timesteps(size, generator)
        a = abar[t].view(-1, 1, 1, 1)
        noise = torch.randn(x0.shape, generator=generator)
        x_t = a.sqrt() * soften(x0, recipe, generator) + (1 - a).sqrt() * noise
        cond = text_encoder(ids)[0]
        cond = lerp_some(cond, recipe, generator)
        v = unet(x_t, t, encoder_hidden_states=cond).sample
        # v for the clean picture wanted, from x0 = sqrt(abar) x_t - sqrt(1 - abar) v (the engine's formula)
        wanted = targets(x0, alone, mixed, t, recipe, grown)
        target = (a.sqrt() * x_t - wanted) / (1 - a).sqrt()
        loss = F.mse_loss(v, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(recipe.ema, (1 + step) / (10 + step))
            for ema, model in ((ema_unet, unet), (ema_text, text_encoder)):
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.lerp_(p, 1 - decay)
        pool.refresh(recipe.pool_refresh)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        state.setdefault("losses", []).append(loss.item())
        if step % 100 == 0 or step == recipe.unet_steps - 1:
            log(f"denoiser step {step}/{recipe.unet_steps} loss {running:.4f} lr {lr:.2e} ({time.perf_counter() - began:.0f} s)")
        if (step + 1) % recipe.checkpoint_every == 0:
            checkpoint(step + 1)
    if start < recipe.unet_steps:
        checkpoint(recipe.unet_steps)
    return ema_unet.eval(), ema_text.eval(), pool.scaling_factor


# ---- the whole run ---------------------------------------------------------------------------------
def train(out: str | Path, recipe: Recipe = Recipe(), log: Callable[[str], None] = print) -> Path:
    """Train the demo model from scratch (or resume) into the diffusers folder `out`."""
    # Subnormal floats flushed to zero (x86 CPUs compute them far more slowly): the shipped weights were trained
    # so, and a run that did not would differ from them in its last bits.
    torch.set_flush_denormal(True)
    try:
        return _train(out, recipe, log)
    finally:
        torch.set_flush_denormal(False)


def _train(out: str | Path, recipe: Recipe, log: Callable[[str], None]) -> Path:
    from diffusers import AutoencoderTiny

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.pt"
    state: dict = {}
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state.get("recipe") != asdict(recipe):
            raise ValueError(f"{checkpoint} was written by another recipe: delete it to start again")
        log(f"resuming from {checkpoint}")
    state["recipe"] = asdict(recipe)

    def save():
        torch.save({k: v for k, v in state.items() if k != "save"}, checkpoint)

    state["save"] = save
    began = time.perf_counter()
    rng = np.random.default_rng(recipe.seed)
    if "rng" in state:
        rng.bit_generator.state = state["rng"]
    tokenizer = captions.write_tokenizer(out / "tokenizer", recipe.max_tokens)
    if state.get("ae_step", 0) < recipe.ae_steps or "ae" not in state:
        ae = train_autoencoder(recipe, rng, log, state)
        save()
    else:
        ae = AutoencoderTiny(**autoencoder_config(recipe))
        ae.load_state_dict(state["ae"])
        ae.eval().requires_grad_(False)
    unet, text_encoder, scaling_factor = train_denoiser(recipe, ae, tokenizer, rng, log, state)
    state.pop("save")
    write_folder(out, unet, text_encoder, ae, recipe, scaling_factor)
    fit_classifier(ae, recipe, log).save(out / "classifier.safetensors")
    minutes = (time.perf_counter() - began) / 60
    (out / "training.json").write_text(json.dumps({"recipe": asdict(recipe), "minutes": round(minutes, 1),
                                                    "threads": torch.get_num_threads(), "versions": library_versions()},
                                                   indent=2))
    log(f"done in {minutes:.1f} min: {out} (paint with it: hf_key='{out}' or SEMDRAW_MODEL={out}; "
        f"measure it: python -m semdraw_widget.engine.models.demo evaluate --model {out})")
    return out


def library_versions() -> dict[str, str]:
    """The libraries whose arithmetic and random draws the weights depend on: the same recipe and thread count
    give the same weights bit for bit only with the same versions (a numpy Generator's draws, for one, may change
    between releases)."""
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "numpy", "diffusers", "transformers")}


def round_trip(ae):
    """(B, H, W, 3) images in [0, 1] -> the same after the autoencoder's encode and decode."""

    @torch.no_grad()
    def run(images: np.ndarray) -> np.ndarray:
        decoded = ae.decode(ae.encode(images_to_tensor(list(images))).latents).sample
        return ((decoded.permute(0, 2, 3, 1) + 1.0) / 2.0).clamp(0.0, 1.0).numpy()

    return run


def fit_classifier(ae, recipe: Recipe, log: Callable[[str], None]):
    """The oracle, fitted on world images as the autoencoder gives them back."""
    from .classifier import fit

    return fit(round_trip(ae), seed=recipe.seed, images=recipe.classifier_images, log=log)


def write_folder(out: Path, unet, text_encoder, ae, recipe: Recipe, scaling_factor: float) -> None:
    """The diffusers layout of an SD 1.5 model, in float16 (the weights ship in the package): the autoencoder
    is an AutoencoderTiny, kept as the model's VAE."""
    from diffusers import AutoencoderTiny

    unet.to(torch.float16).save_pretrained(out / "unet")
    text_encoder.to(torch.float16).save_pretrained(out / "text_encoder")
    vae = AutoencoderTiny(**autoencoder_config(recipe, scaling_factor))
    vae.load_state_dict(ae.state_dict())
    vae.to(torch.float16).save_pretrained(out / "vae")
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2))
    (out / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline",
        "scheduler": ["diffusers", "LCMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderTiny"],
    }, indent=2))


# A smoke test of the whole command in seconds (its model is untrained).
QUICK = Recipe(ae_steps=2, ae_batch=2, ae_size=32, pool_images=4, unet_steps=4, batch=4, checkpoint_every=2,
               classifier_images=16)

__all__ = ["QUICK", "Recipe", "train", "write_folder"]
