"""Output folders and files: checked before any work, one writer at a time.

* :func:`ensure_out_dir` / :func:`ensure_out_file` turn "OUT is a file", "OUT is a
  read-only folder", "--out is a folder" into one clear error before hours of work.
* :class:`OutLock` makes a run the only writer of its output folder: a lock file holding
  the pid and host of the run; a second run into the same folder stops at once. A lock
  left by a killed run on this host (its pid no longer alive) is taken over.
* :func:`os_error_message` is the one wording of an operating-system error (disk full,
  permission denied, ...), used by the command line's error handler.

Safe CSV cells and CSV files are in :mod:`clotseg.io.tables`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
import warnings
from pathlib import Path

from clotseg.errors import ClotsegError

LOCK_NAME = ".clotseg.lock"

_HINTS = {
    errno.ENOSPC: "no space left on the disk",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.EEXIST: "exists already",
    errno.ENOTDIR: "a path component is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "file name too long",
}


def os_error_message(exc: OSError) -> str:
    """``PATH: what went wrong`` for an :class:`OSError`, in one line."""
    what = _HINTS.get(exc.errno or -1) or (exc.strerror or str(exc)).strip()
    if exc.errno and exc.strerror and exc.strerror != os.strerror(exc.errno):
        what += f" ({exc.strerror})"  # our own detail, e.g. "short write: ..."
    where = exc.filename if exc.filename is not None else None
    if where is None:
        return f"{what} ({exc.strerror or exc})" if exc.strerror else what
    text = f"{where}: {what}"
    if exc.filename2 is not None:
        text += f" (to {exc.filename2})"
    return text


def _writable_dir(folder: Path) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ClotsegError(f"{folder}: folder is not writable (permission denied)")


def ensure_out_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` as a folder (parents included) or check the existing one; a clear
    error when it is a file, lies under a file, or is not writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ClotsegError(f"{path}: {what} is an existing file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClotsegError(f"{path}: cannot create the {what} ({os_error_message(exc)})"
                           ) from None
    _writable_dir(path)
    return path


def check_out_apart(out: str | Path, inputs: str | Path, files) -> None:
    """Refuse an output folder where the outputs would replace or mix with the inputs:
    the input itself, a folder above it, or a folder holding (or inside) any input file
    or DICOM folder of ``files``. ``<case>.nii.gz`` is the name of a prediction and also
    the name of a reference mask in nnU-Net's ``labelsTr``: predicting into that folder
    replaced the reference masks in silence."""
    from clotseg.errors import UsageError

    o, d = Path(out).resolve(), Path(inputs).resolve()
    if o == d or o in d.parents:
        raise UsageError(f"OUT ({out}) must not be the input ({inputs}) or a folder above "
                         "it: predictions would be written among the scans")
    for f in files:
        f = Path(f).resolve()
        if o in (f, f.parent) or f in o.parents:
            raise UsageError(f"OUT ({out}) holds input file {f}: predictions there could "
                             "replace inputs (a reference mask is named <case>.nii.gz like "
                             "a prediction); choose a folder that holds no input file")


def check_run_apart(run: str | Path, data: str | Path, files=()) -> None:
    """Refuse a training run folder that is the dataset itself or one of its case
    folders (holds one of ``files``): the run's ``config.yaml``, ``model.json``,
    ``cache/`` and ``checkpoints/`` would be written among the scans."""
    from clotseg.errors import UsageError

    o, d = Path(run).resolve(), Path(data).resolve()
    if o == d:
        raise UsageError(f"--out ({run}) must not be the training dataset ({data}): the "
                         "run's files would be written among the scans; choose another "
                         "folder")
    for f in files:
        if Path(f).resolve().parent == o:
            raise UsageError(f"--out ({run}) is the folder of input file {f}: the run's "
                             "files would be written among the scans; choose a folder that "
                             "holds no input file")


#: Files ``predict`` writes beside its masks: inputs of ``evaluate``, ``report``, ``measure``.
PREDICT_FILES = ("predict.json", "clots.csv", "cases.csv")


def check_not_an_input(path: str | Path, what: str, *, trees=(), keep=(),
                       files=()) -> None:
    """Refuse an output file that would replace an input of the same command: an existing
    file anywhere under one of ``trees`` (a dataset, a run folder) unless its name is in
    ``keep`` (the command's own earlier output there, e.g. a run's ``report.html``), or
    one of ``files`` (predicted masks, ``predict.json``). ``evaluate --out`` named after
    the dataset's ``truth.csv`` replaced it, and ``report --out RUN/model.json`` the run's
    model description, without a word."""
    from clotseg.errors import UsageError

    if path is None:
        return
    out = Path(path).resolve()
    if not out.is_file():
        return  # a new file replaces nothing
    hit = any(out == Path(f).resolve() for f in files if f is not None)
    for tree in trees:
        if tree is not None and Path(tree).resolve() in out.parents and out.name not in keep:
            hit = True
    if hit:
        raise UsageError(f"{what} {path} is a file of this command's inputs (the dataset, "
                         "run or prediction folder); writing it would replace it. Give "
                         "another file name")


def ensure_out_file(path: str | Path, what: str = "output file") -> Path:
    """Check that ``path`` can be written as a file: not a folder, its folder creatable
    and writable, an existing file replaceable."""
    path = Path(path)
    if path.is_dir():
        raise ClotsegError(f"{path}: {what} is an existing folder; give a file name")
    ensure_out_dir(path.parent if str(path.parent) else Path("."), f"folder of the {what}")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class OutLock:
    """Exclusive use of an output folder by one run (context manager).

    The lock file ``OUT/.clotseg.lock`` is created atomically (``O_EXCL``) and holds the
    command, pid, host and start time. It is removed when the run ends, whatever the
    outcome; after a ``kill -9`` it stays, and the next run on the same host sees that the
    pid is gone and takes the lock over (with a warning). A lock held by another host
    cannot be checked, so it is reported with what to do.
    """

    def __init__(self, folder: str | Path, command: str):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command
        self._held = False
        self._created = False

    def __enter__(self) -> OutLock:
        self._created = not self.folder.exists()
        ensure_out_dir(self.folder)
        info = {"command": self.command, "pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_stale()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(info))
            self._held = True
            return self
        raise ClotsegError(f"{self.path}: could not take the lock of {self.folder}")

    def _take_over_stale(self) -> None:
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
            pid, host = int(holder["pid"]), str(holder["host"])
        except FileNotFoundError:
            return  # released meanwhile: try again
        except (OSError, ValueError, KeyError, TypeError):
            holder, pid, host = {}, -1, ""
        here = socket.gethostname()
        if host == here and pid > 0 and not _pid_alive(pid):
            warnings.warn(f"{self.path}: removing the lock of an earlier run that ended "
                          f"without releasing it (pid {pid} is gone)", UserWarning, stacklevel=3)
            self.path.unlink(missing_ok=True)
            for tmp in self.folder.rglob(".*.tmp*"):  # that run's unfinished atomic writes
                tmp.unlink(missing_ok=True)
            return
        who = (f"clotseg {holder.get('command', '?')} (pid {pid} on {host}, since "
               f"{holder.get('started', '?')})" if pid > 0 else "an unreadable lock")
        raise ClotsegError(f"{self.folder}: in use by {who}; one run at a time may write "
                           f"into a folder. If no such run is going on, delete {self.path}")

    def __exit__(self, *exc_info) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False
            if self._created:  # a run that failed before writing leaves no empty folder
                with contextlib.suppress(OSError):
                    self.folder.rmdir()  # only succeeds when empty

