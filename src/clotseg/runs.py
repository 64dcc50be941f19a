"""The RUN folder contract between ``train``, ``predict``, ``evaluate`` and ``report``.

A RUN folder holds ``config.yaml`` (resolved settings), ``splits.json``,
``checkpoints/{last,best}.pt``, ``metrics.csv``, ``curves.png``, ``train.log``,
``train.json`` (a :class:`TrainSummary`) and ``model.json``. :class:`Run` is the one place
that knows these names and how each file is read and written; every other module asks it.
``model.json`` (a :class:`ModelSpec`) is everything inference needs besides the weights,
so ``predict`` needs nothing but the RUN folder.

Checkpoints are plain dictionaries of tensors and builtin types, loaded with
``torch.load(..., weights_only=True)``: keys ``model`` (state dict), ``model_name``,
``model_kwargs``, ``epoch``, and for ``last.pt`` also the optimiser/scheduler/scaler/RNG
states used to resume.
"""

from __future__ import annotations

import copy
import csv
import io
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clotseg.config import LEGACY_WINDOWS, VIEWS, default_windows, valid_views
from clotseg.errors import ClotsegError, UsageError
from clotseg.io.atomic import atomic_path, write_text
from clotseg.preprocess.settings import PreprocessSettings

if TYPE_CHECKING:
    import torch

    from clotseg.config import Config

MODEL_JSON = "model.json"
SPLITS_JSON = "splits.json"
CHECKPOINTS = "checkpoints"
CONFIG_YAML = "config.yaml"
METRICS_CSV = "metrics.csv"
TRAIN_JSON = "train.json"
CURVES_PNG = "curves.png"
TRAIN_LOG = "train.log"
REPORT_HTML = "report.html"
CACHE = "cache"
SPEC_FORMAT = 1



#: Columns of ``metrics.csv``.
COLUMNS = ["epoch", "train_loss", "val_dice", "lr", "seconds", "slices_per_s", "data_share",
           "best"]


def write_metrics(path: Path, rows: list[dict]) -> None:
    """One row per epoch: ``epoch`` (1-based), mean training loss, mean 3D validation Dice
    per patient, learning rate at the end of the epoch, wall seconds (training and
    validation), training slices per second (all processes), the share of the training
    time spent waiting for batches (``data_share``), whether it was the best."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in r.items()})
    write_text(path, buf.getvalue())


def read_metrics(path: Path) -> list[dict]:
    """Rows of ``metrics.csv`` (none when the file does not exist). A file that exists but
    cannot be read is an error, never an empty history: resuming would otherwise drop
    every earlier epoch from the log and the curves without a word."""
    if not path.exists():
        return []
    rows = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or "epoch" not in reader.fieldnames:
                raise ValueError(f"no 'epoch' column (header {reader.fieldnames})")
            for r in reader:
                if None in r or any(v is None for v in r.values()):
                    raise ValueError(f"line {reader.line_num} has the wrong number of cells")
                rows.append({k: (int(v) if k == "epoch" else (v == "True" if k == "best" else
                                                               float(v) if v else float("nan")))
                             for k, v in r.items() if k in COLUMNS})
    except (OSError, UnicodeDecodeError, csv.Error, ValueError, TypeError) as exc:
        raise ClotsegError(f"{path}: cannot read the training history ({exc}); resuming "
                           "would lose it. Repair the file, or move it away to resume "
                           "without the earlier epochs' log") from None
    return rows


#: Settings added after runs were first written, with the value such a run was trained
#: with: a config.yaml without the key means the setting was off, whatever today's default.
ADDED_SETTINGS: dict[tuple[str, str], object] = {
    ("train", "modality_dropout"): 0.0,
    ("data", "hard_negative_fraction"): 0.0,
    ("train", "patience_from"): 0.0,
    ("train", "grow_threshold"): 0.0,
    ("train", "ema_decay"): 0.0,
    ("data", "views"): ["axial"],
    ("train", "average_last"): False,
    ("augment", "thick_ncct_prob"): 0.0,
    ("augment", "z_blur_prob"): 0.0,
    ("augment", "isodense_prob"): 0.0,
    ("data", "clot_sampling"): "slice",
    ("train", "precision"): "auto",
    ("data", "stratify"): False,
    ("data", "cta_mip"): 0,
    ("train", "modality_dropout_ncct"): 0.5,
    ("data", "mined_negative_fraction"): 0.0,
    ("model", "mirror"): False,
}


@dataclass
class ModelSpec:
    """What inference must know to reproduce training's input and output handling."""

    model_name: str
    model_kwargs: dict[str, Any]
    slab: int = 1  # number of neighbouring slices per modality (2.5D); 1 = original input
    windows: dict[str, list[float]] = field(default_factory=default_windows)
    pad_multiple: int = 16  # slices are zero-padded to a multiple of this
    threshold: float = 0.5  # on the sigmoid probability
    min_component_mm3: float = 5.0  # predicted components smaller than this are dropped
    # the kept clot grows into touching voxels of at least this probability; None (runs
    # from before it existed) or 0: no growth
    grow_threshold: float | None = None
    preprocess: PreprocessSettings | None = None  # None = native grid
    component_filter: dict[str, Any] | None = None  # learned false-positive filter, or None
    # QC review-flag threshold chosen on validation (clotseg.inference.qc.QcSettings as a
    # dict); None in runs trained before it existed: predict uses the default and says so
    qc: dict[str, Any] | None = None
    # train.modality_dropout the model was trained with; None in runs from before it
    # existed (no dropout): predict still takes a one-modality case, with a warning
    modality_dropout: float | None = None
    # slice orientations trained on and averaged at predict (clotseg.config.VIEWS);
    # None in runs from before views existed: axial only
    views: list[str] | None = None
    # data.cta_mip: slices the CTA projection channels reach (0: none, as in older runs)
    cta_mip: int = 0
    format: int = SPEC_FORMAT

    @property
    def slice_views(self) -> list[str]:
        """The views to predict and average (axial for runs from before views existed)."""
        return list(self.views) if self.views else ["axial"]

    @property
    def trained_for_missing(self) -> bool:
        """True when training dropped modalities, so the network has seen a missing scan."""
        return bool(self.modality_dropout)

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
        # a model.json without windows predates the current defaults: it was trained on
        # the windows of its time, not today's
        kw.setdefault("windows", {k: list(w) for k, w in LEGACY_WINDOWS.items()})
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
        ("grow_threshold", spec.grow_threshold is None or (
            _number(spec.grow_threshold) and 0 <= spec.grow_threshold < 1),
         "null or a number in [0, 1)"),
        ("preprocess", spec.preprocess is None
         or isinstance(spec.preprocess, PreprocessSettings), "an object or null"),
        ("qc", spec.qc is None or (isinstance(spec.qc, dict) and _number(spec.qc.get("threshold"))
                                   and 0 <= spec.qc["threshold"] <= 1),
         'null or an object {"threshold": number in [0, 1], ...}'),
        ("views", spec.views is None or valid_views(spec.views),
         f"null or a list of distinct views out of {', '.join(VIEWS)}"),
        ("cta_mip", isinstance(spec.cta_mip, int) and not isinstance(spec.cta_mip, bool)
         and (spec.cta_mip == 0 or (spec.slab >= 3 and spec.cta_mip > spec.slab // 2)),
         "0 or, with a slab of 3 or more, a whole number above half the slab"),
        ("modality_dropout", spec.modality_dropout is None or (
            _number(spec.modality_dropout) and 0 <= spec.modality_dropout <= 1),
         "null or a number in [0, 1]"),
    ]
    for name, ok, expected in checks:
        if not ok:
            raise ValueError(f"{name!r} must be {expected}, got {getattr(spec, name)!r}")



@dataclass
class TrainSummary:
    """``RUN/train.json``: how training went, written once when it ends.

    Why a dataclass: the trainer writes it and the report reads it; one typed definition
    keeps the two in step. Every field may be missing from files written by older
    versions (they read back as ``None``); keys this version does not know are ignored.

    Args:
        best_val_dice: best mean validation Dice per patient.
        best_epoch: 1-based epoch of ``best_val_dice``.
        epochs_done: epochs in ``metrics.csv``.
        seconds: wall time of the training session that finished the run.
        stopped: ``epochs``, ``early-stopping`` or ``time-limit``.
        device: torch device of rank 0, e.g. ``cpu`` or ``cuda:0``.
        world_size: number of processes (torchrun).
        batches: how batches were made (resident or streamed).
        slices_per_s: training slices per second over the session, all processes.
        data_share: share of training time spent waiting for batches.
        n_train: training cases.
        n_val: validation cases.
        n_test: held-out test cases.
        data: absolute path of the training data.
        postprocess: post-processing chosen on validation (``tuning.TuneResult.to_dict``).
        component_filter: the learned false-positive filter, as in ``model.json``.

    Examples:
        >>> s = TrainSummary.from_dict({"best_val_dice": 0.7, "best_epoch": 3})
        >>> s.best_epoch, s.world_size
        (3, None)
    """

    best_val_dice: float | None = None
    best_epoch: int | None = None
    epochs_done: int | None = None
    seconds: float | None = None
    stopped: str | None = None
    device: str | None = None
    world_size: int | None = None
    batches: str | None = None
    slices_per_s: float | None = None
    data_share: float | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    data: str | None = None
    postprocess: dict[str, Any] | None = None
    component_filter: dict[str, Any] | None = None

    def to_json(self) -> str:
        """The JSON text of ``train.json`` (keys in field order, indented by 2)."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: Any) -> TrainSummary:
        """From parsed JSON; anything but an object reads as an empty summary.

        Args:
            data: the parsed content of a ``train.json``.
        """
        if not isinstance(data, dict):
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when the message is empty."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def read_checkpoint(path: str | Path, device: Any = "cpu") -> dict[str, Any]:
    """Load a clotseg checkpoint safely; the one loader for training, predict and export.

    Why: ``torch.load(..., weights_only=True)`` never runs code from the file, and a
    broken or foreign file becomes a one-line :class:`ClotsegError`.

    Args:
        path: a ``.pt`` file written by :func:`write_checkpoint`.
        device: where tensors are mapped (``"cpu"``, a :class:`torch.device`...).

    Examples:
        >>> read_checkpoint(Run("runs/a").checkpoint("best"))["epoch"]  # doctest: +SKIP
        11
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ClotsegError(f"{path}: checkpoint not found")
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt or unsafe file: a user-facing error
        raise ClotsegError(f"{path}: cannot load checkpoint ({first_line(exc)})") from None
    if not isinstance(ck, dict) or not isinstance(ck.get("model"), dict):
        raise ClotsegError(f"{path}: not a clotseg checkpoint (no 'model' weights in it)")
    return ck


def write_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (tensors and builtins only) atomically: a kill leaves the previous
    checkpoint intact.

    Args:
        path: target ``.pt`` file.
        payload: what :func:`read_checkpoint` will return.
    """
    import torch

    with atomic_path(Path(path)) as tmp:
        torch.save(payload, tmp)


@dataclass(frozen=True)
class Run:
    """A RUN folder: one property per file and typed read/write methods side by side.

    Why: the file names of a run used to be string literals in the trainer, the report,
    the demo and the commands; here they are named once, next to the format of each file.
    Nothing is created or read until a method is called.

    Args:
        path: the run folder (need not exist yet).

    Examples:
        >>> run = Run("runs/fold0")
        >>> run.spec_path.name, run.checkpoint_file("last").parts[-2:]
        ('model.json', ('checkpoints', 'last.pt'))
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # ------------------------------------------------------------------------- paths
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_YAML

    @property
    def splits_path(self) -> Path:
        return self.path / SPLITS_JSON

    @property
    def spec_path(self) -> Path:
        return self.path / MODEL_JSON

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_CSV

    @property
    def summary_path(self) -> Path:
        return self.path / TRAIN_JSON

    @property
    def curves_path(self) -> Path:
        return self.path / CURVES_PNG

    @property
    def log_path(self) -> Path:
        return self.path / TRAIN_LOG

    @property
    def report_path(self) -> Path:
        return self.path / REPORT_HTML

    @property
    def cache_dir(self) -> Path:
        """Default cache of prepared cases (``data.cache_dir`` overrides it)."""
        return self.path / CACHE

    def checkpoint_file(self, which: str) -> Path:
        """``checkpoints/<which>.pt`` (``last`` or ``best``), whether it exists or not."""
        return self.checkpoints_dir / f"{which}.pt"

    # ------------------------------------------------------------------------- config
    def write_config(self, cfg: Config) -> Path:
        """Write the fully resolved settings as ``config.yaml``."""
        return write_text(self.config_path, cfg.to_yaml())

    def read_config(self, *, lenient: bool = False) -> Config | None:
        """The typed settings of ``config.yaml``; ``None`` when there is none.

        Args:
            lenient: ignore keys this version does not know (a run from another version,
                shown by the report) instead of raising :class:`ConfigError`.
        """
        from clotseg.config import from_dict, load_yaml, valid_keys

        if not self.config_path.is_file():
            return None
        data = _read_yaml_mapping(self.config_path)
        if not lenient:
            cfg = load_yaml(self.config_path)
        else:
            known = set(valid_keys())
            kept = {s: {k: v for k, v in values.items() if f"{s}.{k}" in known}
                    for s, values in data.items()
                    if isinstance(values, dict) and any(key.startswith(f"{s}.") for key in known)}
            cfg = from_dict(kept, source=str(self.config_path))
        for (section, key), value in ADDED_SETTINGS.items():
            values = data.get(section)
            if not (isinstance(values, dict) and key in values):
                # written before it existed (a copy: the value may be a list)
                setattr(getattr(cfg, section), key, copy.copy(value))
        return cfg

    # ------------------------------------------------------------------------- splits
    def write_splits(self, splits: dict) -> Path:
        """Write ``splits.json`` (``train``/``val``/``test`` lists and how they were made)."""
        from clotseg.data.splits import save_splits

        return save_splits(self.splits_path, splits)

    def read_splits(self, known: list[str] | None = None) -> dict | None:
        """``splits.json`` checked (lists present, no case in two splits); ``None`` when
        absent.

        Args:
            known: case ids of the dataset; every listed case must be one of them.
        """
        from clotseg.data.splits import load_splits

        return load_splits(self.splits_path, known) if self.splits_path.is_file() else None

    # ------------------------------------------------------------------------- model spec
    def write_spec(self, spec: ModelSpec) -> Path:
        """Write ``model.json`` atomically."""
        return write_text(self.spec_path, spec.to_json())

    def read_spec(self) -> ModelSpec:
        """``model.json``; a clear error if this is not a trained run folder."""
        if not self.path.is_dir():
            raise ClotsegError(f"{self.path}: not a run folder (expected a directory made by "
                               "`clotseg train`)")
        if not self.spec_path.is_file():
            raise ClotsegError(f"{self.spec_path}: missing; {self.path} is not a trained run "
                               "folder")
        try:
            return ModelSpec.from_dict(json.loads(self.spec_path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:  # JSONDecodeError, UnicodeDecodeError included
            raise ClotsegError(f"{self.spec_path}: invalid model description "
                               f"({first_line(exc)})") from None

    # ------------------------------------------------------------------------- checkpoints
    def checkpoint(self, which: str = "best") -> Path:
        """The existing ``checkpoints/<which>.pt``, falling back from best to last."""
        path = self.checkpoint_file(which)
        last = self.checkpoint_file("last")
        if not path.is_file() and which == "best" and last.is_file():
            path = last
        if not path.is_file():
            raise ClotsegError(f"{path}: checkpoint missing in run folder {self.path}")
        return path

    def write_checkpoint(self, which: str, payload: dict[str, Any]) -> None:
        """Write ``checkpoints/<which>.pt`` atomically (see :func:`write_checkpoint`)."""
        write_checkpoint(self.checkpoint_file(which), payload)

    def load_checkpoint(self, which: str = "best", device: Any = "cpu") -> dict[str, Any]:
        """Read a checkpoint of this run safely (see :func:`read_checkpoint`)."""
        return read_checkpoint(self.checkpoint(which), device)

    def load_model(self, *, device: Any = "cpu", which: str = "best"
                   ) -> tuple[torch.nn.Module, ModelSpec]:
        """Rebuild the network from ``model.json`` and load its weights, in eval mode."""
        from clotseg.models import create_model

        spec = self.read_spec()
        state = self.load_checkpoint(which, device)
        model = create_model(spec.model_name, **spec.model_kwargs)
        model.load_state_dict(state["model"])
        model.to(device).eval()
        return model, spec

    # ------------------------------------------------------------------------- metrics
    def write_metrics(self, rows: list[dict]) -> None:
        """Write ``metrics.csv``, one row per epoch (columns: :data:`COLUMNS`)."""
        write_metrics(self.metrics_path, rows)

    def read_metrics(self) -> list[dict]:
        """Typed rows of ``metrics.csv`` (none when absent; an unreadable file is an error)."""
        return read_metrics(self.metrics_path)

    # ------------------------------------------------------------------------- train.json
    def write_summary(self, summary: TrainSummary) -> Path:
        """Write ``train.json`` atomically."""
        return write_text(self.summary_path, summary.to_json())

    def read_summary(self) -> TrainSummary | None:
        """``train.json`` (old files too); ``None`` when training has not finished."""
        if not self.summary_path.is_file():
            return None
        try:
            data = json.loads(self.summary_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ClotsegError(f"{self.summary_path}: cannot read JSON ({exc})") from None
        return TrainSummary.from_dict(data)


def _read_yaml_mapping(path: Path) -> dict:
    """A YAML file's top-level mapping ({} for anything else); unreadable: an error."""
    import yaml

    from clotseg.io import yamlsafe

    try:
        data = yamlsafe.load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ClotsegError(f"{path}: cannot read YAML ({exc})") from None
    return data if isinstance(data, dict) else {}


# ----------------------------------------------------------------------------- wrappers
# Function forms kept for the inference, export and benchmark code that calls them.

def save_model_spec(run: str | Path, spec: ModelSpec) -> Path:
    """Write ``RUN/model.json`` atomically (:meth:`Run.write_spec`)."""
    return Run(run).write_spec(spec)


def load_model_spec(run: str | Path) -> ModelSpec:
    """Read ``RUN/model.json`` (:meth:`Run.read_spec`)."""
    return Run(run).read_spec()


def checkpoint_path(run: str | Path, which: str = "best") -> Path:
    """``RUN/checkpoints/<which>.pt``, falling back from best to last (:meth:`Run.checkpoint`)."""
    return Run(run).checkpoint(which)


def load_model(run: str | Path, *, device: Any = "cpu", which: str = "best"):
    """Rebuild the network of a run and load its weights (:meth:`Run.load_model`)."""
    return Run(run).load_model(device=device, which=which)
