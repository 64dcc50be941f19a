"""The user-facing Python API; ``clotseg predict`` is a thin layer over :func:`segment`.

>>> import clotseg
>>> results = clotseg.segment("runs/fold0", "new_patients/", "predictions/")  # doctest: +SKIP
>>> [(r.case_id, r.ok, r.mask_path) for r in results]                         # doctest: +SKIP

Masks are always on exactly the CTA's grid (size, spacing, origin, direction).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clotseg.errors import DatasetError
from clotseg.inference.predictor import CaseResult, Predictor, predict_cases
from clotseg.io.volume import Volume

__all__ = ["CaseResult", "Predictor", "find_cases", "segment", "segment_volumes"]


def segment(run: str | Path | Sequence[str | Path], inputs: str | Path,
            out: str | Path | None = None, *, device: str = "auto", tta: bool = False,
            precision: str = "auto", save_prob: bool = False, preview: bool = False,
            threshold: float | None = None, min_component_mm3: float | None = None,
            keep_largest: bool = False, batch_size: int = 16,
            spacing: tuple[float, float, float] | None = None,
            cta_series: str | None = None, ncct_series: str | None = None,
            num_threads: int | None = None, progress: bool = True,
            fp_filter: bool = True,
            formats: Sequence[str] | None = None, labels: bool = False, resume: bool = False,
            num_parts: int = 1, part_id: int = 0, engine: str = "torch") -> list[CaseResult]:
    """Segment the clots of every case under ``inputs``.

    ``run``: a trained run folder, or several (fold ensemble: probabilities averaged).
    ``inputs``: one case folder (``cta.*`` + ``ncct.*`` files or ``cta/`` + ``ncct/``
    DICOM folders), a dataset in any supported layout (nnU-Net: ``imagesTs`` when present),
    or one DICOM folder holding both series (told apart by ``cta_series``/``ncct_series``
    UIDs, else by their descriptions).
    ``out``: where ``<case>.nii.gz`` masks, ``clots.csv`` and ``predict.json`` go; ``None``
    keeps masks and probabilities in memory (``CaseResult.mask``/``.prob``) instead.
    ``threshold``/``min_component_mm3`` default to the run's own values; ``fp_filter=False``
    skips the run's learned false-positive component filter; ``spacing`` is
    for the original ``.npy`` layout, which stores none. A case that fails is returned
    with ``ok=False`` and the reason; the others are still done.
    ``run`` may also be a model exported with ``clotseg export`` (``model.zip``, or
    ``model.onnx``, which implies ``engine="onnx"``). ``formats`` (``nii.gz``,
    ``seg.nrrd``, ``dicom-seg``), ``labels``, ``resume``, ``num_parts``/``part_id``: see
    :func:`clotseg.inference.predictor.predict_cases` and :mod:`clotseg.inference.outputs`.
    """
    import contextlib

    from clotseg.io.outputs import OutLock

    series = {k: v for k, v in (("cta", cta_series), ("ncct", ncct_series)) if v}
    # One writer per OUT (so its masks and clots.csv agree), taken before any work.
    with contextlib.nullcontext() if out is None else OutLock(out, "predict"):
        cases = find_cases(inputs, spacing=spacing)
        predictor = Predictor.from_runs(run, device=device, precision=precision, tta=tta,
                                        batch_size=batch_size, threshold=threshold,
                                        min_component_mm3=min_component_mm3,
                                        keep_largest=keep_largest, num_threads=num_threads,
                                        use_filter=fp_filter, engine=engine)
        return predict_cases(predictor, cases, None if out is None else Path(out),
                             save_prob=save_prob, preview=preview, series=series,
                             progress=progress, source=str(inputs),
                             formats=list(formats) if formats else None, labels=labels,
                             resume=resume, num_parts=num_parts, part_id=part_id)


def segment_volumes(run: str | Path | Sequence[str | Path] | Predictor, cta: Volume,
                    ncct: Volume, *, case_id: str = "case", device: str = "auto",
                    tta: bool = False, **settings) -> tuple[Volume, np.ndarray, list[dict]]:
    """Segment in-memory volumes: (uint8 mask on the CTA grid, float32 probability on the
    CTA grid, ``clots.csv`` rows). ``run`` may also be a ready :class:`Predictor`
    (load once, segment many)."""
    from clotseg.measure.clots import measure_case

    predictor = run if isinstance(run, Predictor) else Predictor.from_runs(
        run, device=device, tta=tta, **settings)
    seg = predictor.segment(cta, ncct, case_id)
    return seg.mask, seg.prob, measure_case(case_id, seg.mask, cta, seg.ncct, seg.prob)


def find_cases(inputs: str | Path, *, spacing: tuple[float, float, float] | None = None
               ) -> list:
    """The cases (:class:`~clotseg.io.layouts.CaseRef`) to predict under ``inputs``."""
    from clotseg.io.layouts import CaseRef, discover

    root = Path(inputs)
    if not root.exists():
        raise DatasetError(f"{root}: input does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (give a case folder, a dataset folder or "
                           "a DICOM folder)")
    if root.name in ("imagesTs", "imagesTr") and (root.parent / "dataset.json").is_file():
        index = discover(root.parent, layout="nnunet")
        cases = [c for c in index.cases if c.cta is not None and c.cta.parent == root]
    else:
        try:
            index = discover(root, spacing=spacing)
        except DatasetError:
            if _holds_dicom(root):  # one folder with both series (told apart by UID/kind)
                return [CaseRef(root.name, root, root)]
            raise
        cases = index.cases
        if index.layout == "nnunet":
            test = [c for c in cases if any(p.parent.name == "imagesTs" for p in
                                            c.files.values())]
            cases = test or cases
    for problem in index.problems:
        warnings.warn(problem, UserWarning, stacklevel=2)
    if not cases:
        raise DatasetError(f"{root}: no cases to predict found")
    return cases


def _holds_dicom(folder: Path) -> bool:
    from clotseg.io.dicom import list_series

    return bool(list_series(folder))
