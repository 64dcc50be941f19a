"""Predicting clot masks for cases, always written on exactly the CTA's grid."""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clotseg.data.slabs import prepare_case
from clotseg.errors import ClotsegError
from clotseg.inference.engine import predict_probabilities
from clotseg.inference.postprocess import postprocess
from clotseg.io.atomic import write_text
from clotseg.io.readers import write_volume
from clotseg.io.volume import Volume
from clotseg.runs import ModelSpec, load_model


@dataclass
class Predictor:
    """One or more trained runs (a fold ensemble) ready to segment cases."""

    models: list
    specs: list[ModelSpec]
    device: str = "cpu"
    tta: bool = False
    batch_size: int = 16
    threshold: float | None = None  # None: the run's own
    min_component_mm3: float | None = None
    keep_largest: bool = False

    @classmethod
    def from_runs(cls, runs: list[str | Path], device: str = "auto", **kwargs) -> Predictor:
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise ClotsegError("--device cuda requested but no CUDA device is available")
        if device == "cpu":
            torch.set_num_threads(max(1, torch.get_num_threads()))
        loaded = [load_model(r, device=device) for r in runs]
        return cls([m for m, _ in loaded], [s for _, s in loaded], device, **kwargs)

    def probability(self, cta: Volume, ncct: Volume) -> np.ndarray:
        """Clot probability on the CTA grid (stored array order), averaged over models."""
        if not ncct.grid.same_as(cta.grid):
            from clotseg.preprocess.resample import resample_to_grid

            if not ncct.grid.overlaps(cta.grid):
                raise ClotsegError("NCCT does not overlap the CTA in patient space")
            ncct = resample_to_grid(ncct, cta.grid, interpolation="linear",
                                    default_value=-1000.0)
        probs = []
        for model, spec in zip(self.models, self.specs):
            if spec.preprocess:
                raise ClotsegError("this run was trained on preprocessed data; run "
                                   "`clotseg preprocess` on the input first")
            prep = prepare_case("case", cta, ncct, None,
                                {k: tuple(v) for k, v in spec.windows.items()})
            p = predict_probabilities(model, prep.image, slab=spec.slab,
                                      pad_multiple=spec.pad_multiple, batch_size=self.batch_size,
                                      device=self.device, tta=self.tta)
            probs.append(prep.orientation.from_canonical(p))
        return np.ascontiguousarray(np.mean(probs, axis=0, dtype=np.float32))

    def segment(self, cta: Volume, ncct: Volume) -> tuple[Volume, np.ndarray]:
        """Mask (uint8 Volume on the CTA grid) and probability array."""
        prob = self.probability(cta, ncct)
        spec = self.specs[0]
        thr = spec.threshold if self.threshold is None else self.threshold
        mcv = spec.min_component_mm3 if self.min_component_mm3 is None else self.min_component_mm3
        mask = postprocess(prob, cta.spacing, threshold=thr, min_component_mm3=mcv,
                           keep_largest=self.keep_largest)
        return Volume.on_grid(mask, cta.grid), prob


def check_same_grid(mask: Volume, cta: Volume, case_id: str) -> None:
    """Refuse to write a mask that would not overlay its CTA voxel for voxel."""
    if not mask.grid.same_as(cta.grid, atol_mm=1e-6):
        raise ClotsegError(f"case {case_id}: internal error, predicted mask grid differs from "
                           f"the CTA grid ({'; '.join(mask.grid.differences(cta.grid))}); "
                           "nothing written")


@dataclass
class PredictSummary:
    ok: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)


def predict_dataset(predictor: Predictor, index, out: Path, *, save_prob: bool = False,
                    preview: bool = False, progress: bool = True) -> PredictSummary:
    """Segment every case of ``index`` into ``out``; a broken case is recorded and skipped."""
    from clotseg.measure.clots import measure_case, write_clots_csv

    out.mkdir(parents=True, exist_ok=True)
    summary = PredictSummary()
    it = index.cases
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="predicting", unit="case")
    for case in it:
        t0 = time.perf_counter()
        try:
            vols = case.load(with_mask=False)
            mask, prob = predictor.segment(vols.cta, vols.ncct)
            check_same_grid(mask, vols.cta, case.case_id)
            write_volume(mask, out / f"{case.case_id}.nii.gz", mask=True)
            if save_prob:
                write_volume(vols.cta.with_array(prob), out / f"{case.case_id}_prob.nii.gz")
            ncct = vols.ncct
            if not ncct.grid.same_as(vols.cta.grid):
                from clotseg.preprocess.resample import resample_to_grid

                ncct = resample_to_grid(ncct, vols.cta.grid, default_value=-1000.0)
            summary.rows += measure_case(case.case_id, mask, vols.cta, ncct, prob)
            if preview:
                from clotseg.report.figures import clot_slices_png

                clot_slices_png(vols.cta, ncct, None, mask, out / f"{case.case_id}.png")
            summary.ok.append(case.case_id)
        except ClotsegError as exc:
            summary.failed[case.case_id] = str(exc)
        except Exception as exc:  # noqa: BLE001 - keep going; the summary names the failure
            summary.failed[case.case_id] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        summary.seconds[case.case_id] = time.perf_counter() - t0
        write_clots_csv(out / "clots.csv", summary.rows)
    write_text(out / "predict.json", json.dumps({
        "device": predictor.device, "tta": predictor.tta, "ok": summary.ok,
        "failed": summary.failed, "seconds": summary.seconds}, indent=2))
    return summary
