"""Volume I/O: the :class:`Volume` type, readers/writers, DICOM and dataset layouts."""

from clotseg.io.readers import VOLUME_SUFFIXES, read_volume, write_volume
from clotseg.io.volume import Grid, Volume

__all__ = ["VOLUME_SUFFIXES", "Grid", "Volume", "read_volume", "write_volume"]
