"""Segmentation networks by name: :func:`create_model` builds one from the table
:data:`MODELS`; the constructor arguments are saved beside the weights (``model.json``,
:mod:`clotseg.runs`), so that a checkpoint can be rebuilt without pickling code.

All networks take ``(B, C, H, W)`` with ``C = 2 * slab`` channels ordered
``[CTA slices..., NCCT slices...]`` and return **logits** ``(B, 1, H, W)`` for the centre
slice, or ``(B, slab, H, W)``, one per slice, for the networks of
:data:`VOLUMETRIC_MODELS`; the sigmoid
is applied by the loss and at inference (more stable than a sigmoid head in the model).

The table is written out here rather than filled by decorators in the network modules:
the network modules then import nothing from this package's ``__init__`` (no import
cycle), and each entry imports its module only when called, so that importing
``clotseg.models`` does not load torch or MONAI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Networks that read a block of slices as one volume and mark every slice; the names live
# with the settings, whose check needs them (clotseg.config.VOLUMETRIC_MODELS).
from clotseg.config import VOLUMETRIC_MODELS


def _unet_original(**kwargs: Any) -> Any:
    from clotseg.models.unet_original import unet_original

    return unet_original(**kwargs)


def _fusion_unet(**kwargs: Any) -> Any:
    from clotseg.models.fusion import fusion_unet

    return fusion_unet(**kwargs)


def _monai_unet(**kwargs: Any) -> Any:
    from clotseg.models.monai_nets import monai_unet

    return monai_unet(**kwargs)


def _monai_dynunet(**kwargs: Any) -> Any:
    from clotseg.models.monai_nets import monai_dynunet

    return monai_dynunet(**kwargs)


def _monai_dynunet_3d(**kwargs: Any) -> Any:
    from clotseg.models.volumetric import dynunet_3d

    return dynunet_3d(**kwargs)


#: ``name -> factory(**kwargs)`` of every network ``model.name`` may select.
MODELS: dict[str, Callable[..., Any]] = {
    "unet-original": _unet_original,
    "fusion-unet": _fusion_unet,
    "monai-unet": _monai_unet,
    "monai-dynunet": _monai_dynunet,
    "monai-dynunet-3d": _monai_dynunet_3d,
}


def register_model(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add a network factory under ``name`` (test stubs and extensions; the built-in
    networks are listed in :data:`MODELS`).

    Args:
        name: the name :func:`create_model` will accept.

    Returns:
        A decorator that registers the factory and returns it unchanged.

    Examples:
        >>> register_model("test-identity")(lambda **kw: kw)  # doctest: +ELLIPSIS
        <function <lambda> at ...>
        >>> create_model("test-identity", base=4)
        {'base': 4}
    """

    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        MODELS[name] = factory
        return factory

    return deco


def available_models() -> list[str]:
    """The names :func:`create_model` accepts, sorted.

    Examples:
        >>> "unet-original" in available_models()
        True
    """
    return sorted(MODELS)


def create_model(name: str, **kwargs: Any) -> Any:
    """Build the network ``name`` with constructor arguments ``kwargs``.

    Args:
        name: a key of :data:`MODELS`.
        **kwargs: the factory's arguments (``in_channels``, ``base``, ``dropout``, ...);
            ``mirror=True`` wraps the network so that it also reads its input mirrored
            left to right (:mod:`clotseg.models.mirror`; ``model.mirror``).

    Raises:
        KeyError: for an unknown name, listing the valid ones.
        TypeError: for arguments the factory does not take, or a ``mirror`` that is not
            a bool.

    Examples:
        >>> create_model("unet-original", in_channels=2, base=4).__class__.__name__
        'UNetOriginal'
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    mirror = kwargs.pop("mirror", False)
    if not isinstance(mirror, bool):
        raise TypeError(f"mirror must be true or false, got {mirror!r}")
    if mirror:
        from clotseg.models.mirror import mirrored

        return mirrored(MODELS[name], kwargs.pop("in_channels", 2), **kwargs)
    return MODELS[name](**kwargs)


__all__ = ["MODELS", "VOLUMETRIC_MODELS", "available_models", "create_model", "register_model"]
