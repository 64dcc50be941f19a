"""Which imaging shift breaks a trained model: the shifted test cohort one factor at a time.

``quality.py`` scores a model on a cohort where every knob of
:data:`clotseg.synth.shift.SHIFTED` moves at once (noise, blur, contrast timing, HU offsets,
spacing, vessel radii, rotation, thick NCCT). When that cohort fails, this benchmark says
which knob is to blame: it writes the same patients (same seeds as ``quality.py``'s shifted
cohort) once per factor, with only that factor shifted, predicts each with the given run and
scores it exactly as ``quality.py`` does. A factor whose cohort scores like ``none`` is
harmless; the ones that drop detection are what augmentation (or the phantom) must cover.

    python benchmarks/shift_factors.py --run RUN                  # all factors, 30 patients
    python benchmarks/shift_factors.py --run RUN --factors bolus,hu_offset --cases 12
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from pathlib import Path

from _output import emit  # benchmarks/_output.py (scripts: their folder is on sys.path)
from quality import COHORTS, clotseg, score

#: factor name -> the fields of SHIFTED it moves (the rest stay standard).
FACTORS = {
    "none": (),
    "noise": ("noise_scale",),
    "blur": ("psf_mm",),
    "contrast_timing": ("bolus", "venous_enhancement_hu"),
    "hu_offset": ("hu_offset",),
    "spacing": ("inplane_mm", "slice_mm"),
    "radius": ("radius_scale",),
    "rotation": ("rotate_deg",),
    "thick_ncct": ("thick_ncct_share",),
}
#: Scalar fields whose "off" value is not None.
_OFF = {"rotate_deg": 0.0, "thick_ncct_share": 0.0}


def shift_for(factor: str):
    """The ImagingShift that moves only ``factor``'s fields of SHIFTED."""
    from clotseg.synth.shift import SHIFTED, ImagingShift

    keep = set(FACTORS[factor])
    fields = {f.name: getattr(SHIFTED, f.name) if f.name in keep else _OFF.get(f.name)
              for f in dataclasses.fields(ImagingShift) if f.name != "name"}
    return ImagingShift(name=f"only_{factor}", **fields)


def write_factor_cohort(folder: Path, factor: str, cases: int) -> Path:
    """The shifted cohort's patients with only ``factor`` shifted (NRRD, as there)."""
    from clotseg.synth import shift as shift_mod
    from clotseg.synth.cohort import write_cohort

    if (folder / "truth.csv").is_file():
        return folder
    seed = COHORTS["shifted"][0]
    name = f"only_{factor}"
    shift_mod.SHIFTS[name] = shift_for(factor)  # registered for this process only
    try:
        write_cohort(folder, cases, seed=seed, shift=name, suffix=".nrrd", progress=False)
    finally:
        del shift_mod.SHIFTS[name]
    return folder


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a trained run folder")
    p.add_argument("--work", default="shift_factors_work", help="cohorts and predictions")
    p.add_argument("--cases", type=int, default=30)
    p.add_argument("--factors", default=",".join(FACTORS),
                   help=f"comma-separated, from {', '.join(FACTORS)}")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    args.factors = [f.strip() for f in args.factors.split(",") if f.strip()]
    unknown = [f for f in args.factors if f not in FACTORS]
    if unknown:
        p.error(f"unknown factor(s) {', '.join(unknown)}; choose from {', '.join(FACTORS)}")
    return args


KEEP = ("median_dice", "mean_dice", "detection_sensitivity", "detection_specificity",
        "clots_missed", "clot_free_with_fp", "fp_components_per_patient", "median_hd95_mm",
        "volume_pearson_r", "by_location")


def main(argv=None) -> None:
    args = parse(argv)
    work = Path(args.work)
    t0 = time.perf_counter()
    result = {"benchmark": "shift_factors", "run": args.run, "cases": args.cases,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "factors": {}}
    for factor in args.factors:
        data = write_factor_cohort(work / "data" / f"{factor}_{args.cases}", factor,
                                   args.cases)
        pred = work / "preds" / f"{Path(args.run).name}_{factor}"
        clotseg("predict", args.run, str(data), str(pred), "--quiet", "--device", args.device)
        s = score(pred, data)
        result["factors"][factor] = {"fields": list(FACTORS[factor]),
                                     **{k: s[k] for k in KEEP}}
        print(f"{factor:16s} dice {s['median_dice']:.3f} (mean {s['mean_dice']:.3f}) "
              f"missed {s['clots_missed']}/{s['n_clot']} fp {s['clot_free_with_fp']}"
              f"/{s['n_clot_free']}", flush=True)
    result["seconds_total"] = round(time.perf_counter() - t0, 1)
    emit(result, args.out)


if __name__ == "__main__":
    main()
