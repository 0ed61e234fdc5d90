"""What the stream holds about its inputs for the seed project's API: the background as given
(`BackgroundState`), and changes held until a commit (`PendingUpdates`, behind `update` / `commit`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class BackgroundState:
    """The stream's background: the image as given (None: white), the prompts ('' for none) and the latent."""

    image: Any
    prompt: str
    negative_prompt: str
    latent: torch.Tensor


class PendingUpdates:
    """Background and layer changes held until taken: the latest background change wins whole; a layer request
    for an index already held fills in only the settings it names over the held one (None = not named). At most
    `capacity` layer requests wait; more are refused with a warning, as in the seed project."""

    def __init__(self, capacity: int):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"prompt_queue_capacity must be a whole number >= 1 (got {capacity!r})")
        self.capacity = capacity
        self._background: dict | None = None
        self._layers: list[dict] = []

    @property
    def waiting(self) -> bool:
        return self._background is not None or bool(self._layers)

    def hold(self, background: dict, layer: dict) -> None:
        if any(value is not None for value in background.values()):
            self._background = background
        if all(value is None for name, value in layer.items() if name != "idx"):
            return
        for held in self._layers:
            if held["idx"] == layer["idx"]:
                held.update({name: value for name, value in layer.items() if value is not None})
                return
        if len(self._layers) >= self.capacity:
            warnings.warn(
                f"{self.capacity} layer changes are waiting for commit() (prompt_queue_capacity): this one was dropped. "
                "Call commit() (or run a frame) more often, or raise prompt_queue_capacity.",
                UserWarning, stacklevel=3,
            )
            return
        self._layers.append(dict(layer))

    def take(self) -> tuple[dict | None, list[dict]]:
        """What was held, in order, leaving nothing held."""
        taken = (self._background, self._layers)
        self._background, self._layers = None, []
        return taken
