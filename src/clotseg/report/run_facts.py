"""The run facts of the report: what a RUN folder says about its training.

Everything is read through :class:`clotseg.runs.Run` (typed config, splits, model
description, ``train.json`` and ``metrics.csv``); any part may be missing, and the summary
shows what there is.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from clotseg.config import Config
from clotseg.errors import ClotsegError
from clotseg.report.formatting import DASH, as_float, fmt, fmt_duration
from clotseg.runs import ModelSpec, Run, TrainSummary


@dataclass
class RunInfo:
    """What the report shows about a RUN folder; every part may be missing.

    Args:
        run: the run folder.
        config: ``config.yaml`` as typed settings.
        splits: ``splits.json``.
        spec: ``model.json``.
        train: ``train.json``, written when training ends.
        metrics: ``metrics.csv`` rows, one per epoch.
    """

    run: Run
    config: Config | None = None
    splits: dict | None = None
    spec: ModelSpec | None = None
    train: TrainSummary = field(default_factory=TrainSummary)
    metrics: list[dict] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.run.path


def load_run(run: str | Path) -> RunInfo:
    """Read what exists of a RUN folder; an error if it is not a run folder at all.

    Args:
        run: the folder given to ``clotseg report``.

    Examples:
        >>> load_run("runs/fold0").train.best_epoch  # doctest: +SKIP
        27
    """
    r = Run(run)
    if not r.path.is_dir():
        raise ClotsegError(f"{run}: run folder does not exist (expected a folder made by "
                           "`clotseg train`)")
    files = (r.config_path, r.splits_path, r.spec_path, r.metrics_path)
    if not any(p.is_file() for p in files):
        raise ClotsegError(f"{run}: not a run folder (none of "
                           f"{', '.join(p.name for p in files)} found)")
    spec = r.read_spec() if r.spec_path.is_file() else None
    return RunInfo(r, r.read_config(lenient=True), r.read_splits(), spec,
                   r.read_summary() or TrainSummary(), r.read_metrics())


def _column(rows: list[dict], name: str) -> list[float | None]:
    return [as_float(r.get(name)) for r in rows]


def run_summary(info: RunInfo) -> list[tuple[str, str]]:
    """(label, value) rows: data, splits, model, training settings, time and device.

    Args:
        info: from :func:`load_run`.
    """
    cfg, spec = info.config, info.spec
    rows: list[tuple[str, str]] = []
    if info.train.data:
        rows.append(("Training data", str(info.train.data)))
    rows += _split_rows(info.splits or {})
    name = (cfg.model.name if cfg else None) or (spec.model_name if spec else None)
    if name:
        width = cfg.model.base if cfg else None
        rows.append(("Model", f"{name}" + (f", base width {width}" if width else "")))
    slab = (cfg.data.slab if cfg else None) or (spec.slab if spec else None)
    if slab:
        patch = cfg.data.patch if cfg else None
        views = spec.slice_views if spec is not None else (cfg.data.views if cfg else None)
        rows.append(("Input", f"{slab} slice(s) per modality (CTA + NCCT)"
                     + (f", training crop {patch} px" if patch else "")
                     + (f", {' + '.join(views)} slices averaged" if views and len(views) > 1
                        else "")))
    if cfg is not None:
        rows += _settings_rows(cfg)
    rows += _training_rows(info)
    if spec is not None:
        rows.append(("Inference", _inference_text(spec, info.train)))
    specks = _speck_text(info.train)
    if specks:
        rows.append(("Expected false positives", specks))
    return rows


def _speck_text(train: TrainSummary) -> str | None:
    """The validation patients who kept a component away from their clot, as the run's
    estimate of the clot-free patients who will get a false positive
    (:mod:`clotseg.training.tuning`); None for a run that does not record it."""
    tuned = train.postprocess or {}
    n, k = tuned.get("n_patients"), tuned.get("patients_with_speck")
    if not n or k is None:
        return None
    return (f"{k} of {n} validation patients kept a component away from their clot: "
            f"expect about {100 * k / n:.0f} % of clot-free patients like the training "
            "data's to get one")


def _split_rows(sp: dict) -> list[tuple[str, str]]:
    if not sp:
        return []
    sizes = " / ".join(f"{len(sp.get(k) or [])}" for k in ("train", "val", "test"))
    scheme = str(sp.get("scheme") or DASH)
    if sp.get("fold") is not None and sp.get("n_folds"):
        scheme += f", fold {sp['fold']} of {sp['n_folds']}"
    return [("Cases train / val / test", sizes), ("Split", f"{scheme}, seed {sp.get('seed')}")]


def _settings_rows(cfg: Config) -> list[tuple[str, str]]:
    """Batch, optimiser, loss and augmentation from the typed config."""
    t, o = cfg.train, cfg.optim
    rows: list[tuple[str, str]] = []
    if t.batch_size:
        steps = t.steps_per_epoch
        rows.append(("Batch", f"{t.batch_size} slices"
                     + (f", {steps} steps per epoch" if steps else "")))
    if o.name:
        rows.append(("Optimiser", f"{o.name}, lr {o.lr}, {o.schedule} schedule"))
    if t.loss:
        rows.append(("Loss", str(t.loss)))
    rows.append(("Augmentation", "on" if cfg.augment.enabled else "off"))
    return rows


def _inference_text(spec: ModelSpec, train: TrainSummary) -> str:
    tuned = train.postprocess or {}
    how = ""
    if tuned:
        how = (f" (chosen on validation: Dice {tuned['val_dice']:.3f} vs "
               f"{tuned['configured_val_dice']:.3f} with the configured values)"
               if tuned.get("changed") else " (configured; tuning on validation kept it)")
    grow = (f"; the kept clot grown into touching voxels of probability ≥ "
            f"{spec.grow_threshold:g}" if spec.grow_threshold else "")
    return (f"threshold {spec.threshold}, components under {spec.min_component_mm3} mm³ "
            f"dropped{how}{grow}")


def _training_rows(info: RunInfo) -> list[tuple[str, str]]:
    cfg, tr = info.config, info.train
    epochs_cfg = cfg.train.epochs if cfg else None
    done = tr.epochs_done if tr.epochs_done is not None else len(info.metrics)
    rows = [("Epochs", f"{done}" + (f" of {epochs_cfg}" if epochs_cfg else "")
             + (f" (stopped: {tr.stopped})" if tr.stopped else ""))]
    dice = _column(info.metrics, "val_dice")
    if tr.best_val_dice is not None:
        epoch = tr.best_epoch if tr.best_epoch is not None else DASH
        rows.append(("Best validation Dice", f"{fmt(tr.best_val_dice)} (epoch {epoch})"))
    elif any(d is not None for d in dice):
        best = max(range(len(dice)), key=lambda i: -1 if dice[i] is None else dice[i])
        rows.append(("Best validation Dice", f"{fmt(dice[best])} (epoch "
                                             f"{info.metrics[best].get('epoch', best + 1)})"))
    secs = as_float(tr.seconds)
    if secs is None:
        known = [s for s in _column(info.metrics, "seconds") if s is not None]
        secs = sum(known) if known else None
    rows.append(("Training time", fmt_duration(secs)))
    if cfg is not None and cfg.train.time_limit_min:
        rows.append(("Time limit", f"{cfg.train.time_limit_min} min"))
    device = tr.device or (cfg.train.device if cfg else None)
    if device:
        world = tr.world_size
        rows.append(("Device", f"{device}" + (f" × {world} processes" if world and world > 1
                                              else "")))
    return rows


def curves_png(info: RunInfo) -> bytes | None:
    """``RUN/curves.png`` if it is a readable image, else the same figure drawn from
    ``metrics.csv``; None when there is nothing to draw.

    Args:
        info: from :func:`load_run`.
    """
    path = info.run.curves_path
    if path.is_file():
        data = path.read_bytes()
        if _is_image(data):
            return data
    values = _column(info.metrics, "train_loss") + _column(info.metrics, "val_dice")
    if not any(v is not None for v in values):
        return None
    from clotseg.training.logging import curves_png as draw

    return draw(info.metrics)


def _is_image(data: bytes) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False
    return True
