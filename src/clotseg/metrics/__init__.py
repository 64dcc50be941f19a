"""3D per-case evaluation metrics (in millimetres) and their summary."""

from clotseg.metrics.overlap import dice, volume_error_mm3
from clotseg.metrics.surface import assd, hd95, surface_dice

__all__ = ["assd", "dice", "hd95", "surface_dice", "volume_error_mm3"]
