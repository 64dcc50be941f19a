"""Checkpoint contents for resuming: the random generators' states.

Writing and the one safe loader (``torch.load(..., weights_only=True)``) live with the
run folder in :mod:`clotseg.runs`; ``save_checkpoint`` and ``load_checkpoint`` here are
those same functions under their older names.

RNG states are stored as tensors and lists (numpy's state converted to builtins) so that
``torch.load(..., weights_only=True)`` reads everything back without unpickling code.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from clotseg.runs import read_checkpoint as load_checkpoint
from clotseg.runs import write_checkpoint as save_checkpoint

__all__ = ["load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]


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
