"""Checkpoints: atomic ``torch.save`` of plain tensors/builtins, safe ``weights_only`` load.

RNG states are stored as tensors and lists (numpy's state converted to builtins) so that
``torch.load(..., weights_only=True)`` reads everything back without unpickling code.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clotseg.errors import ClotsegError
from clotseg.io.atomic import atomic_path


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) generator states as tensors/ints/lists."""
    py = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 - the global state is what we restore
    state = {"python": list(py[1]), "python_gauss": py[2],
             "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
             "numpy_pos": int(np_state[2]), "numpy_has_gauss": int(np_state[3]),
             "numpy_gauss": float(np_state[4]), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32),  # noqa: NPY002
                         state["numpy_pos"], state.get("numpy_has_gauss", 0),
                         state.get("numpy_gauss", 0.0)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically: a kill leaves the previous checkpoint intact."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, device="cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); a clear error if it is broken."""
    if not path.is_file():
        raise ClotsegError(f"{path}: checkpoint not found")
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt or unsafe file: a user-facing error
        from clotseg.runs import first_line

        raise ClotsegError(f"{path}: cannot load checkpoint ({first_line(exc)})") from None
    if not isinstance(ck, dict) or not isinstance(ck.get("model"), dict):
        raise ClotsegError(f"{path}: not a clotseg checkpoint (no 'model' weights in it)")
    return ck
