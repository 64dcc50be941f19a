"""clotseg: segment and measure ischemic-stroke clots from paired CTA and NCCT of the head.

Heavy dependencies (torch, SimpleITK, MONAI) are imported lazily by the modules that need
them, so that ``import clotseg`` and ``clotseg --help`` stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "segment"]


def segment(*args, **kwargs):
    """Segment clots in one or more cases; see :func:`clotseg.api.segment`."""
    from clotseg.api import segment as _segment

    return _segment(*args, **kwargs)
