"""The RUN folder contract between ``train`` and ``predict``.

A RUN folder holds ``config.yaml`` (resolved settings), ``splits.json``,
``checkpoints/{last,best}.pt``, ``metrics.csv``, ``curves.png`` and ``model.json``.
``model.json`` (a :class:`ModelSpec`) is everything inference needs besides the weights,
so ``predict`` needs nothing but the RUN folder.

Checkpoints are plain dictionaries of tensors and builtin types, loaded with
``torch.load(..., weights_only=True)``: keys ``model`` (state dict), ``model_name``,
``model_kwargs``, ``epoch``, and for ``last.pt`` also the optimiser/scheduler/scaler/RNG
states used to resume.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clotseg.errors import ClotsegError, UsageError
from clotseg.io.atomic import write_text
from clotseg.preprocess.settings import PreprocessSettings

MODEL_JSON = "model.json"
SPLITS_JSON = "splits.json"
CHECKPOINTS = "checkpoints"
SPEC_FORMAT = 1


@dataclass
class ModelSpec:
    """What inference must know to reproduce training's input and output handling."""

    model_name: str
    model_kwargs: dict[str, Any]
    slab: int = 1  # number of neighbouring slices per modality (2.5D); 1 = original input
    windows: dict[str, list[float]] = field(
        default_factory=lambda: {"cta": [-100.0, 700.0], "ncct": [0.0, 100.0]})
    pad_multiple: int = 16  # slices are zero-padded to a multiple of this
    threshold: float = 0.5  # on the sigmoid probability
    min_component_mm3: float = 5.0  # predicted components smaller than this are dropped
    preprocess: PreprocessSettings | None = None  # None = native grid
    component_filter: dict[str, Any] | None = None  # learned false-positive filter, or None
    format: int = SPEC_FORMAT

    def to_json(self) -> str:
        data = asdict(self)
        data["preprocess"] = None if self.preprocess is None else self.preprocess.to_dict()
        return json.dumps(data, indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Build from parsed JSON, checking every field's type and range (``ValueError``
        naming the field otherwise): a hand-edited ``"slab": "3"`` must not reach the
        network as a string."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, found {type(data).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in data.items() if k in known}
        if isinstance(kw.get("preprocess"), dict):  # {} (falsy) meant the native grid
            try:
                kw["preprocess"] = (PreprocessSettings.from_dict(kw["preprocess"])
                                    if kw["preprocess"] else None)
            except (TypeError, UsageError) as exc:
                raise ValueError(f"'preprocess' is not valid preprocessing ({exc})") from None
        spec = cls(**kw)
        _validate_spec(spec)
        return spec


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _validate_spec(spec: ModelSpec) -> None:
    """Raise ``ValueError`` naming the first field of ``spec`` with a wrong type or value."""
    checks = [
        ("model_name", isinstance(spec.model_name, str) and spec.model_name != "",
         "a non-empty string"),
        ("model_kwargs", isinstance(spec.model_kwargs, dict), "an object"),
        ("slab", isinstance(spec.slab, int) and not isinstance(spec.slab, bool)
         and spec.slab >= 1, "a whole number >= 1"),
        ("windows", isinstance(spec.windows, dict) and all(
            isinstance(w, list) and len(w) == 2 and all(_number(x) for x in w) and w[0] < w[1]
            for w in spec.windows.values()) and {"cta", "ncct"} <= set(spec.windows),
         'an object {"cta": [low, high], "ncct": [low, high]} with low < high'),
        ("pad_multiple", isinstance(spec.pad_multiple, int)
         and not isinstance(spec.pad_multiple, bool) and spec.pad_multiple >= 1,
         "a whole number >= 1"),
        ("threshold", _number(spec.threshold) and 0 < spec.threshold <= 1,
         "a number in (0, 1]"),
        ("min_component_mm3", _number(spec.min_component_mm3) and spec.min_component_mm3 >= 0,
         "a number >= 0"),
        ("preprocess", spec.preprocess is None
         or isinstance(spec.preprocess, PreprocessSettings), "an object or null"),
    ]
    for name, ok, expected in checks:
        if not ok:
            raise ValueError(f"{name!r} must be {expected}, got {getattr(spec, name)!r}")


def save_model_spec(run: str | Path, spec: ModelSpec) -> Path:
    """Write ``RUN/model.json`` atomically."""
    return write_text(Path(run) / MODEL_JSON, spec.to_json())


def load_model_spec(run: str | Path) -> ModelSpec:
    """Read ``RUN/model.json``; a clear error if RUN is not a trained run folder."""
    path = Path(run) / MODEL_JSON
    if not Path(run).is_dir():
        raise ClotsegError(f"{run}: not a run folder (expected a directory made by "
                           "`clotseg train`)")
    if not path.is_file():
        raise ClotsegError(f"{path}: missing; {run} is not a trained run folder")
    try:
        return ModelSpec.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        raise ClotsegError(f"{path}: invalid model description ({first_line(exc)})") from None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when the message is empty."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def checkpoint_path(run: str | Path, which: str = "best") -> Path:
    """``RUN/checkpoints/<which>.pt``, falling back from best to last."""
    ck = Path(run) / CHECKPOINTS
    path = ck / f"{which}.pt"
    if not path.is_file() and which == "best" and (ck / "last.pt").is_file():
        path = ck / "last.pt"
    if not path.is_file():
        raise ClotsegError(f"{path}: checkpoint missing in run folder {run}")
    return path


def load_model(run: str | Path, *, device: str = "cpu", which: str = "best"):
    """Rebuild the network of a run and load its weights (safe: ``weights_only=True``)."""
    import torch

    from clotseg.models import create_model

    spec = load_model_spec(run)
    path = checkpoint_path(run, which)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/format failure is user-facing
        raise ClotsegError(f"{path}: cannot load checkpoint ({first_line(exc)})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ClotsegError(f"{path}: not a clotseg checkpoint (no 'model' weights in it)")
    model = create_model(spec.model_name, **spec.model_kwargs)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return model, spec
