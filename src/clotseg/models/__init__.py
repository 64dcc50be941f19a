"""Segmentation networks behind a registry (:func:`create_model`)."""

from clotseg.models.registry import available_models, create_model, register_model

__all__ = ["available_models", "create_model", "register_model"]
