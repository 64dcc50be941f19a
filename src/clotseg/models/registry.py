"""Model registry: ``create_model(name, **kwargs)`` and the constructor arguments saved
beside the weights, so that a checkpoint can be rebuilt without pickling code.

All registered networks take ``(B, C, H, W)`` with ``C = 2 * slab`` channels ordered
``[CTA slices..., NCCT slices...]`` and return **logits** ``(B, 1, H, W)``; the sigmoid
is applied by the loss and at inference (more stable than a sigmoid head in the model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_model(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: make a model factory available as ``create_model(name, ...)``."""

    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[name] = factory
        return factory

    return deco


def available_models() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any):
    """Build a registered model; raises ``KeyError`` listing valid names on a bad name."""
    _load_builtin()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


def _load_builtin() -> None:
    # Importing the model modules registers them; done lazily to keep imports light.
    import clotseg.models.networks  # noqa: F401
