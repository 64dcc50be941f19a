"""Size limits every volume obeys, on reading and on resampling.

A header can claim any size (a 4 KB file can describe terabytes) and any spacing (a unit
slip makes a head two metres wide, which a resample to a model's spacing turns into
billions of voxels). These checks refuse such volumes with the sizes in the message,
before anything is allocated. Kept apart from the readers so that every reader (files,
DICOM) and the resampler share them without importing each other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clotseg.errors import ClotsegError, VolumeReadError
from clotseg.io.volume import Volume

#: Largest volume (bytes of voxel data, as the header describes it) read by default. A
#: header claiming more is refused before anything is allocated (a 4 KB file can claim
#: terabytes). Override with the environment variable ``CLOTSEG_MAX_VOLUME_GB``.
DEFAULT_MAX_VOLUME_BYTES = 2 << 30

#: Longest physical extent (mm) a volume may have along any axis. A whole-body CT is under
#: 2 m long and well under 1 m across; a larger volume has a voxel spacing in the wrong
#: unit (cm or inches read as mm), and resampling it to a model's spacing would try to
#: allocate terabytes.
MAX_EXTENT_MM = 2000.0


def check_extent(path: str | Path, vol: Volume) -> Volume:
    """``vol``, or a :class:`VolumeReadError` when its extent passes :data:`MAX_EXTENT_MM`."""
    extent = np.asarray(vol.shape, float) * np.asarray(vol.spacing, float)
    if float(extent.max()) > MAX_EXTENT_MM:
        spacing = " x ".join(f"{v:.4g}" for v in vol.spacing)
        size = " x ".join(f"{v:.0f}" for v in extent)
        raise VolumeReadError(path, f"the voxel spacing in the header ({spacing} mm) makes "
                              f"the volume {size} mm, larger than any CT: a spacing in the "
                              "wrong unit?")
    return vol


def max_volume_bytes() -> int:
    """The per-volume size cap in bytes (``CLOTSEG_MAX_VOLUME_GB``, default 2 GiB)."""
    import os

    text = os.environ.get("CLOTSEG_MAX_VOLUME_GB", "").strip()
    if not text:
        return DEFAULT_MAX_VOLUME_BYTES
    try:
        gb = float(text)
    except ValueError:
        raise ClotsegError(f"CLOTSEG_MAX_VOLUME_GB must be a number of GiB, got {text!r}"
                           ) from None
    if not gb > 0:
        raise ClotsegError(f"CLOTSEG_MAX_VOLUME_GB must be positive, got {text!r}")
    return int(gb * (1 << 30))


def size_text(n: float) -> str:
    """A byte count as GiB (from a quarter GiB up) or MiB, for messages."""
    return f"{n / (1 << 30):.3g} GiB" if n >= 1 << 28 else f"{n / (1 << 20):.3g} MiB"


def check_size(path: Path, shape, itemsize: int, limit: int | None = None) -> int:
    """Bytes of voxel data ``shape`` x ``itemsize``; an error above the cap."""
    limit = max_volume_bytes() if limit is None else limit
    nbytes = int(np.prod([int(s) for s in shape], dtype=object)) * int(itemsize)
    if nbytes > limit:
        dims = "x".join(str(int(s)) for s in shape)
        raise VolumeReadError(path, f"header describes {dims} voxels ({size_text(nbytes)}), above "
                              f"the limit of {size_text(limit)} per volume (raise it with "
                              "CLOTSEG_MAX_VOLUME_GB if the file is genuine)")
    return nbytes
