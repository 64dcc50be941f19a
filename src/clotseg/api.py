"""The user-facing Python API; the ``clotseg predict`` command is a thin layer over it."""

from __future__ import annotations

from pathlib import Path

from clotseg.inference.predictor import Predictor, PredictSummary, predict_dataset
from clotseg.io.layouts import discover
from clotseg.io.volume import Volume


def segment(run: str | Path | list[str | Path], inputs: str | Path, out: str | Path, *,
            device: str = "auto", tta: bool = False, save_prob: bool = False,
            preview: bool = False, spacing=None, progress: bool = True,
            **options) -> PredictSummary:
    """Segment every case under ``inputs`` (any layout, or one case folder) into ``out``.

    ``run`` may be a list of run folders (fold ensemble: probabilities are averaged).
    ``options``: ``threshold``, ``min_component_mm3``, ``keep_largest``, ``batch_size``.
    """
    runs = run if isinstance(run, (list, tuple)) else [run]
    predictor = Predictor.from_runs(runs, device=device, tta=tta, **options)
    index = discover(inputs, spacing=spacing)
    return predict_dataset(predictor, index, Path(out), save_prob=save_prob, preview=preview,
                           progress=progress)


def segment_volumes(run: str | Path, cta: Volume, ncct: Volume, *, device: str = "auto",
                    tta: bool = False) -> tuple[Volume, object]:
    """Segment in-memory volumes: returns (mask on the CTA grid, probability array)."""
    return Predictor.from_runs([run], device=device, tta=tta).segment(cta, ncct)
