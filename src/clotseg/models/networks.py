"""Importing this module registers every built-in network."""

from clotseg.models import fusion, monai_nets, unet_original  # noqa: F401
