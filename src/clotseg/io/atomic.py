"""Atomic file writes: write to a temporary name in the target folder, then rename.

An interrupted run therefore leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _suffix(path: Path) -> str:
    """Full multi-part suffix (".nii.gz"), so that format detection by name still works."""
    name = path.name
    for multi in (".nii.gz", ".tar.gz"):
        if name.endswith(multi):
            return multi
    return path.suffix


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The temporary name keeps the file's extension so that writers that pick the format
    from the name (SimpleITK, matplotlib) still do the right thing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + _suffix(path),
                               dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write a text file (UTF-8), checked by its byte count before the rename."""
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically write a binary file; the file as written must hold exactly ``data``'s
    length before it gets its final name (a full disk may cut a write short)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
        check_written(tmp, len(data), Path(path))
    return Path(path)


def check_written(tmp: Path, expected: int, final: Path) -> None:
    """Raise ``OSError(ENOSPC)`` naming ``final`` when ``tmp`` is not ``expected`` bytes."""
    import errno

    size = tmp.stat().st_size
    if size != expected:
        raise OSError(errno.ENOSPC, f"short write: {size} of {expected} bytes written "
                      "(disk full?); nothing written", str(final))
