"""3D per-case evaluation metrics in millimetres and their summary.

Small functions on numpy masks plus spacing (:mod:`overlap`, :mod:`surface`,
:mod:`detection`); :mod:`clotseg.metrics.evaluate` applies them per case and summarises.
"""

from clotseg.metrics.detection import detection, false_positive_components
from clotseg.metrics.overlap import dice, volume_error_mm3, volume_mm3
from clotseg.metrics.surface import assd, hd95, surface_dice, surface_distances

__all__ = ["assd", "detection", "dice", "false_positive_components", "hd95", "surface_dice",
           "surface_distances", "volume_error_mm3", "volume_mm3"]
