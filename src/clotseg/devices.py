"""Which torch device to run on: one rule for ``train``, ``predict`` and the benchmarks.

``auto`` picks a CUDA GPU when there is one, then an Apple-silicon GPU (``mps``), then the
CPU. An explicit name (``cpu``, ``cuda``, ``cuda:N``, ``mps``) is checked here, before any
data is read, so that a missing accelerator is a one-line :class:`ClotsegError` rather than
a failure deep inside torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clotseg.errors import ClotsegError, ConfigError

if TYPE_CHECKING:
    import torch

#: Device types clotseg runs on (``torch.device(...).type``).
SUPPORTED = ("cpu", "cuda", "mps")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for a ``--device`` / ``train.device`` value, checked.

    Why: training and inference used to decide differently (one knew ``mps``, one did
    not); one function keeps ``clotseg train --device X`` and ``clotseg predict --device X``
    in agreement.

    Args:
        name: ``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Returns:
        The :class:`torch.device` to use.

    Raises:
        ConfigError: ``name`` is not a device name, or a device type clotseg does not use.
        ClotsegError: the named accelerator is not available on this machine.

    Examples:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)"
                          ) from None
    if dev.type not in SUPPORTED:
        raise ConfigError(f"unsupported device {name!r} (use auto, cpu, cuda, cuda:N or mps)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ClotsegError(f"device {name!r} requested but no CUDA device is available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ClotsegError(f"device {name!r} requested but only {torch.cuda.device_count()} "
                           "CUDA device(s) are available")
    if dev.type == "mps" and not _mps_available():
        raise ClotsegError(f"device {name!r} requested but no Apple MPS device is available")
    return dev


def device_name(name: str = "auto") -> str:
    """:func:`resolve_device` as text (``"cpu"``, ``"cuda:1"``, ``"mps"``), for code that
    keeps the device in settings and JSON files (``predict.json``).

    Args:
        name: as for :func:`resolve_device`.

    Examples:
        >>> device_name("auto") in ("cpu", "cuda", "mps")
        True
    """
    return str(resolve_device(name))
