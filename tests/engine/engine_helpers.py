"""Small helpers shared by the engine tests."""

import numpy as np

SIZE = 64


def box_mask(top, bottom, left, right, size=SIZE):
    mask = np.zeros((size, size), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


APPLE = box_mask(8, 40, 16, 48)
PEAR = box_mask(30, 60, 4, 30)


def run(stream, frames):
    """The latent of the `frames`-th frame from now."""
    for _ in range(frames - 1):
        stream(output_type="latent")
    return stream(output_type="latent")


def scene(stream):
    """A background prompt and two overlapping layers, one blurred."""
    stream.update_background(prompt="a wooden table")
    stream.update_single_layer(0, prompt="a red apple", mask=APPLE, mask_std=2.0)
    stream.update_single_layer(1, prompt="a green pear", mask=PEAR, mask_std=0.0)
    return stream


def record_batch_sizes(model, monkeypatch):
    """The batch size of every model call made from now on (a list that grows)."""
    sizes = []
    original = model.predict

    def predict(latents, timesteps, cond):
        sizes.append(latents.shape[0])
        return original(latents, timesteps, cond)

    monkeypatch.setattr(model, "predict", predict)
    return sizes
