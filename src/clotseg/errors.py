"""Exception types. Every error a user can cause is a :class:`ClotsegError`; the CLI turns it
into a one-line message and exit code 1 instead of a traceback."""

from __future__ import annotations

from pathlib import Path


class ClotsegError(Exception):
    """An error caused by the user's input or environment (bad file, bad option)."""


class VolumeReadError(ClotsegError):
    """A volume file or DICOM series could not be read."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class DatasetError(ClotsegError):
    """A dataset folder has no recognisable layout or is unusable as a whole."""


class ConfigError(ClotsegError):
    """A configuration file or ``--set`` override is invalid."""


class UsageError(ClotsegError):
    """A command-line usage problem that argparse cannot detect itself (exit code 2)."""
