"""How a pipeline gets its model: wired from a loaded one, as diffusers pipelines take their components, or
loaded for it from the seed project's keywords.

    model = load_model(hf_key, device="cuda")                       # or SD15.load(hf_key, "cuda", ...)
    stream = StreamMultiDiffusion(model, height=512, width=512)    # wired: nothing is loaded
    one_shot = StableMultiDiffusionPipeline(model)                  # the same weights, shared
    stream = StreamMultiDiffusion.from_pretrained("tiny", device="cpu", lora_key=None, height=64, width=64)
    stream = StreamMultiDiffusion("cuda", hf_key="...", lora_key=...)  # the seed project's form: loads

A loaded model fixes everything loading decides, so loading options given beside one are refused
rather than ignored. A pipeline given a model runs on the model's device and in its dtype unless told.
"""

from __future__ import annotations

from typing import Any

import torch

from ..limits import LAYER_SETTING_LIMITS, check_number
from .loading import resolve_device
from .models import load_with_options
from .models.base import LatentFamily
from .models.options import LoadOptions

DEFAULT_DEVICE = "cuda"  # the seed project's pipelines run there


def check_layer_setting(setting: str, value: Any, name: str | None = None) -> float:
    """A layer setting (a key of LAYER_SETTING_LIMITS) as a float in [0, its limit]; NaN, infinities and
    other values raise, naming the argument as `name` (the setting itself by default)."""
    return check_number(name or setting, value, LAYER_SETTING_LIMITS[setting])


class ModelPipeline:
    """What both pipelines share: their family model (`model`), its `device` and `dtype`, and the settings a
    layer gets when they are not given (`default_prompt_strength`, `default_mask_strength`, `default_mask_std`).

    The constructor's first argument is a loaded family model (or `model=`), used as it is; or, in the seed
    project's form, the device to load onto (or `device=`; CUDA by default), with `hf_key` (None: SEMDRAW_MODEL,
    else the family's default model), `sd_version` ("1.5", "xl", "3"; detected from `hf_key` when None) and
    the options of `LoadOptions` as keywords (lora_key, use_tiny_vae, taesd_key, config, allow_pickle,
    lora_weight; SDXL unet_key, vae_key; SD3 use_t5). The family sets the defaults of `hf_key`, the LoRA and
    `taesd_key`. `load_from_local` (the seed's) is taken and changes nothing: the Hugging Face cache is always
    read first, and the hub asked only for what it lacks.
    """

    device: torch.device
    dtype: torch.dtype
    model: LatentFamily
    decodes_with_tiny_vae = True  # what `use_tiny_vae` is when this pipeline loads its model and it is not given

    def _take_model(
        self, model_or_device: Any, dtype: torch.dtype | None, *, model: Any, device: Any, hf_key: str | None,
        sd_version: str | None, load_options: dict[str, Any],
    ) -> None:
        """Set `model`, `device` and `dtype` from the constructor's arguments: a model given (first or as
        model=) is used as it is; otherwise one is loaded for `hf_key` with `load_options` (the seed's form)."""
        caller = type(self).__name__
        load_options.pop("load_from_local", None)  # the cache is read first anyway (see above)
        if model is None and not isinstance(model_or_device, LatentFamily):  # loading here
            load_options.setdefault("use_tiny_vae", self.decodes_with_tiny_vae)
        options = LoadOptions.from_keywords(load_options, caller)
        if isinstance(model_or_device, LatentFamily):
            if model is not None:
                raise TypeError(f"{caller}() got a model twice, as its first argument and as model=: pass it once")
            model = model_or_device
        elif model_or_device is not None:
            if isinstance(model_or_device, bool) or not isinstance(model_or_device, (str, int, torch.device)):
                raise TypeError(
                    f"{caller}()'s first argument is a loaded model (load_model(...)) or a device such as 'cuda', "
                    f"'cpu' or 0 (got {model_or_device!r})"
                )
            if device is not None:
                raise TypeError(f"{caller}() got a device twice, as its first argument and as device=: pass it once")
            device = model_or_device
        if model is None:
            device = resolve_device(DEFAULT_DEVICE if device is None else device)
            model = load_with_options(hf_key, device, dtype, sd_version, options)
        else:
            options.check_loaded(model.name, hf_key, sd_version)
            device = model.device if device is None else resolve_device(device)
        self.device, self.dtype, self.model = device, dtype or model.dtype, model

    def _take_captioner(self, has_i2t: Any, i2t_to_device: Any) -> None:
        """`captioner`: what prompts a background image given without one (`has_i2t`, the seed project's option):
        BLIP-2, loaded on the first caption; None: no caption. Any callable image -> text may replace it."""
        for name, value in (("has_i2t", has_i2t), ("i2t_to_device", i2t_to_device)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False (got {value!r})")
        self.captioner = None
        if has_i2t:
            from .captioning import ImageCaptioner

            self.captioner = ImageCaptioner(device=self.device if i2t_to_device else "cpu")

    def get_text_prompts(self, image: Any) -> str:
        """A prompt describing `image` (PIL) from the `captioner`; '' without one (the seed project's method)."""
        if self.captioner is None:
            return ""
        if not hasattr(image, "convert"):
            from .blend import image_to_pil

            image = image_to_pil(image)
        return self.captioner(image)

    def _take_layer_defaults(self, prompt_strength: Any, mask_strength: Any, mask_std: Any) -> None:
        self.default_prompt_strength = check_layer_setting("prompt_strength", prompt_strength, "default_prompt_strength")
        self.default_mask_strength = check_layer_setting("mask_strength", mask_strength, "default_mask_strength")
        self.default_mask_std = check_layer_setting("mask_std", mask_std, "default_mask_std")

    @classmethod
    def from_pretrained(
        cls, hf_key: str | None = None, *, device: Any = None, dtype: torch.dtype | None = None, sd_version: str | None = None,
        **kwargs: Any,
    ):
        """Load the model of `hf_key` (see `load_model`; None: SEMDRAW_MODEL, else the family's default) on
        `device` (CUDA by default) and wire a pipeline to it. `kwargs` are the pipeline's own settings
        (height, width, seed, ...) and the options of `LoadOptions` (lora_key, use_tiny_vae, ...)."""
        return cls(None, dtype, device=device, hf_key=hf_key, sd_version=sd_version, **kwargs)

