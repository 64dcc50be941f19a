"""The ablation table: every measured change and what it did on the unseen (shifted) site.

Each ``benchmarks/quality.py`` run left a JSON file in ``benchmarks/results/``; this
collects them into one table. A row names a change in words, the result files that
measured it (one per training seed) and the files it is read against (the defaults of
the day, same seeds where there were several), and says what became of it. Numbers are
read from the files, never typed in: per row the clots missed and the clot-free patients
given a false positive on both test sites, the shifted site's Dice median over clot
patients, and the differences of the means from the reference.

Two readings guard against over-reading a row:

* ``seed_spread``: how far runs of identical settings (other training seeds) lie apart,
  the noise a single-seed difference must clear;
* ``targets``: each target of the quality and review-flag work against the present
  defaults' runs and the best value any run reached, with the file it came from.

    python benchmarks/ablation.py                                   # JSON on stdout
    python benchmarks/ablation.py --out benchmarks/results/ablation_shifted.json \\
        --markdown docs/ablation.md

Arms on the 90-patient test cohorts (76 clots, 14 clot-free per site) are the main table;
the first arms, on 30-patient cohorts (24 + 6 shifted, 28 + 2 same), are a second one.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import emit  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Arm:
    """One measured change: what differs, its runs, what they are read against, verdict."""

    change: str
    runs: tuple[str, ...]
    reference: tuple[str, ...]
    decision: str


def q(*names: str, patients: int = 90) -> tuple[str, ...]:
    """Result file names of ``quality.py`` runs (``quality_<name>[_90patients].json``)."""
    tail = "_90patients" if patients == 90 else ""
    return tuple(f"quality_{n}{tail}.json" for n in names)


MILD = q("30min_default_rerun")
WIDE = q("30min_wide_aug", "30min_wide_aug_seed1")
NARROW = q("30min_cta_window_narrow", "30min_cta_window_narrow_seed1")
MDROP = q("30min_modality_dropout04", "30min_modality_dropout04_seed1",
          "30min_modality_dropout04_seed2")
MASS = q("30min_modality_dropout04_massrule", "30min_modality_dropout04_seed1_massrule",
         "30min_modality_dropout04_seed2_massrule")
ISO = q("30min_isodense025", "30min_isodense025_seed1", "30min_isodense025_seed2")
SLOW = q("30min_isodense025_seed1_avx2machine", "30min_isodense025_seed2_avx2machine")
NET3D = q("30min_dynunet3d_s9_bf16", "30min_dynunet3d_s9_bf16_seed1")

#: The defaults as they stand, every run of them (two machines).
DEFAULTS = ISO + SLOW

NOT = "not adopted"
ARMS: tuple[Arm, ...] = (
    Arm("wide scanner-shift augmentation (contrast, HU shift, low resolution, blur, noise)",
        WIDE, MILD, "adopted"),
    Arm("200 training patients instead of 60", q("30min_train200"), MILD,
        NOT + ": fewer passes over each patient in the budget"),
    Arm("30 % of the training NCCTs thick-slice (2.5/5 mm)", q("30min_thick"), MILD, NOT),
    Arm("thick-slice training NCCTs + 25 % hard-negative crops",
        q("30min_thick_hardneg", "30min_thick_hardneg_seed1"), MILD,
        NOT + " (data.hard_negative_fraction, off)"),
    Arm("ceiling: trained on the shifted site's own settings (other patients)",
        q("30min_train_shifted_ceiling"), MILD, "a reading aid, not a method"),
    Arm("CTA window -20..300 HU", NARROW, WIDE, "adopted"),
    Arm("modality dropout 0.4 instead of 0.2", MDROP, NARROW,
        "adopted: one model for both scans, CTA only and NCCT only; costs clots with both"),
    Arm("running mean of the weights (EMA 0.998)", q("30min_modality_dropout04_ema0998"),
        MDROP[:1], NOT + " (train.ema_decay, off)"),
    Arm("last weights instead of the best validated",
        q("30min_modality_dropout04_lastweights", "30min_modality_dropout04_seed1_lastweights",
          "30min_modality_dropout04_seed2_lastweights"), MDROP,
        NOT + ": more clots and more specks, a threshold-like trade"),
    Arm("mean of the best and last weights",
        q("30min_modality_dropout04_avgbestlast", "30min_modality_dropout04_seed1_avgbestlast",
          "30min_modality_dropout04_seed2_avgbestlast"), MDROP,
        NOT + " (train.average_last, off)"),
    Arm("best and last weights as an ensemble",
        q("30min_modality_dropout04_ensbestlast", "30min_modality_dropout04_seed1_ensbestlast"),
        MDROP[:2], NOT),
    Arm("axial, coronal and sagittal slices, views averaged", q("30min_views3"), MDROP,
        NOT + " (data.views, axial)"),
    Arm("slab of 5 slices instead of 3", q("30min_slab5"), MDROP, NOT),
    Arm("primary clot: the component holding the most probability, not the highest peak",
        MASS, MDROP, "adopted"),
    Arm("Dice loss per sample", q("30min_loss_per_sample"), MASS, NOT),
    Arm("clot crops drawn per clot, not per voxel", q("30min_clot_sampling"), MASS, NOT),
    Arm("bf16 training steps", q("30min_bf16"), MASS, NOT + " (train.precision, fp32)"),
    Arm("bf16 and a wider network (base 24)",
        q("30min_bf16_base24", "30min_bf16_base24_seed1"), MASS, NOT),
    Arm("mean of best and last weights, as a training option", q("30min_average_last"),
        MASS[:1], NOT),
    Arm("split stratified by clot presence", q("30min_stratified"), MASS, NOT),
    Arm("stratified split + CTA projection over 8 slices", q("30min_stratified_cta_mip8"),
        MASS, NOT),
    Arm("slab 5 + CTA projection over 8 slices", q("30min_slab5_cta_mip8"), MASS, NOT),
    Arm("twice the CTA-only samples (dropout 0.5, 80 % of it on the NCCT)",
        q("30min_dropout05_ncct08"), MASS, NOT),
    Arm("blur across slices in 30 % of samples", q("30min_z_blur03"), MASS, NOT),
    Arm("thick-slice NCCT augmentation, 30 %, in the window", q("30min_thick_ncct_aug03_window"),
        MASS, NOT),
    Arm("thick-slice NCCT augmentation, 30 %, in HU",
        q("30min_thick_ncct_aug03_hu", "30min_thick_ncct_aug03_hu_seed1"), MASS,
        NOT + " (augment.thick_ncct_prob, off)"),
    Arm("isodense clots (NCCT sign removed) in 50 % of samples",
        q("30min_isodense05", "30min_isodense05_seed1"), MASS, NOT + ": costs the training site"),
    Arm("isodense clots in 25 % of samples", ISO, MASS, "adopted"),
    Arm("learned false-positive filter reading the scans",
        q("30min_isodense025_fpfilter_scans", "30min_isodense025_seed1_fpfilter_scans"),
        ISO[:2], NOT + " (train.fp_filter, off)"),
    Arm("25 % of crops on the network's own false positives (mined)",
        q("30min_mined025", "30min_mined025_seed1"), ISO[:2],
        NOT + " (data.mined_negative_fraction, off)"),
    Arm("whole slices instead of crops (batch 8)", q("30min_fullslice_b8"), ISO, NOT),
    Arm("each slice beside its left-right mirror", q("30min_mirror"), ISO,
        NOT + " (model.mirror, off)"),
    Arm("mirror + whole slices", q("30min_mirror_fullslice_b8"), ISO, NOT),
    Arm("3D network (DynUNet), blocks of 17 slices", q("30min_dynunet3d_s17"), ISO,
        NOT + ": too few steps in the budget"),
    Arm("3D network (DynUNet), blocks of 9 slices, bf16", NET3D, ISO,
        "an option (model.name): finds ICA clots, leaves blobs in tissue"),
    Arm("3D + deep supervision (last weights, post-processing retuned)",
        q("30min_dynunet3d_s9_bf16_ds2_lastweights"), NET3D[:1], NOT),
    Arm("3D + 25 % mined negatives", q("30min_dynunet3d_s9_bf16_mined025"), NET3D[:1], NOT),
    Arm("3D with 60 minutes (twice the budget)", q("60min_dynunet3d_s9_bf16"), NET3D,
        "outside the budget: measures what the budget costs"),
    Arm("mean of a 30-minute 3D run and the 2.5D run", q("30min_isodense025_seed2_ens_dynunet3d_s9"),
        ISO[2:], NOT + " (predict --runs)"),
    Arm("30-minute 3D runs confirmed by the 2.5D run (two trainings)",
        q("30min_dynunet3d_s9_bf16_confirmed_isodense025_seed2",
          "30min_dynunet3d_s9_bf16_seed1_confirmed_isodense025_seed2",
          "30min_dynunet3d_s9_bf16_mined025_confirmed_isodense025_seed2"), ISO[2:],
        "an option (predict --confirm-with), twice the training"),
    Arm("60-minute 3D run confirmed by the 2.5D run",
        q("60min_dynunet3d_s9_bf16_confirmed_isodense025_seed2"), ISO[2:],
        "the best measured; 90 minutes of training in all"),
    Arm("the defaults on a slower CPU (AVX2 only: about half the epochs)", SLOW, ISO[1:],
        "a machine, not a method"),
    Arm("the defaults with 60 minutes on the slower CPU (121 epochs, against 62)",
        q("60min_isodense025_seed1_avx2machine"), SLOW[:1],
        "outside the budget: twice the epochs find no more clots"),
    Arm("threshold grid up to 0.9 (was 0.8)",
        q("30min_isodense025_seed1_avx2machine_threshold09",
          "30min_isodense025_seed2_avx2machine_threshold09"), SLOW, NOT),
)

#: The first arms: 30-patient test cohorts, fixed epochs or 30 minutes.
EARLY: tuple[Arm, ...] = (
    Arm("one voxel size + wide augmentation + learned false-positive filter, 12 epochs",
        q("12ep_improved", patients=30), q("12ep_baseline", patients=30),
        "the filter removed every clot; one voxel size kept"),
    Arm("... without the learned false-positive filter", q("12ep_improved_nofilter", patients=30),
        q("12ep_improved", patients=30), "filter off by default"),
    Arm("one voxel size, 20 epochs", q("20ep_B_spacing", patients=30),
        q("20ep_A_old", patients=30), "adopted"),
    Arm("wide augmentation, 20 epochs", q("20ep_C_spacing_aug", patients=30),
        q("20ep_B_spacing", patients=30), "not at 20 epochs (adopted later at 30 min)"),
    Arm("no filter + primary-clot rule (each scan's spacing)",
        q("20ep_A_old_nofilter_primary", patients=30), q("20ep_A_old", patients=30), "adopted"),
    Arm("no filter + primary-clot rule (wide augmentation)",
        q("20ep_C_spacing_aug_nofilter_primary", patients=30),
        q("20ep_C_spacing_aug", patients=30), "adopted"),
    Arm("modality dropout 0.2", q("30min_default", patients=30),
        q("30min_default_nodropout", patients=30), "adopted (later 0.4)"),
    Arm("modality dropout 0.5", q("30min_modality_dropout05", patients=30),
        q("30min_default", patients=30), NOT),
    Arm("30 % thick-slice training NCCTs", q("30min_thick", patients=30),
        q("30min_default_rerun", patients=30), NOT),
    Arm("thick NCCTs + hard-negative crops",
        q("30min_thick_hardneg", "30min_thick_hardneg_seed1", patients=30),
        q("30min_thick", patients=30), NOT + ": the second seed and 90 patients undid it"),
    Arm("thick NCCTs + hard negatives + wider blur", q("30min_hardneg_blur_thick", patients=30),
        q("30min_thick", patients=30), NOT),
    Arm("thick NCCTs + 96-pixel crops", q("30min_thick_patch96", patients=30),
        q("30min_thick", patients=30), NOT),
    Arm("flip test-time augmentation", q("30min_thick_hardneg_tta", patients=30),
        q("30min_thick_hardneg", patients=30), NOT + " (predict --tta)"),
    Arm("two-seed ensemble", q("30min_thick_hardneg_ensemble2", patients=30),
        q("30min_thick_hardneg", "30min_thick_hardneg_seed1", patients=30),
        NOT + " (predict --runs)"),
    Arm("wide augmentation, 30 minutes", q("30min_wide_aug", "30min_wide_aug_seed1", patients=30),
        q("30min_default_rerun", patients=30), "adopted"),
    Arm("200 training patients", q("30min_train200", patients=30),
        q("30min_default_rerun", patients=30), NOT),
    Arm("ceiling: trained on the shifted settings", q("30min_train_shifted_ceiling", patients=30),
        q("30min_default_rerun", patients=30), "a reading aid"),
)

#: Runs of identical settings but the training seed (and, for the last, the machine).
SEED_GROUPS = {
    "wide augmentation": WIDE,
    "CTA window -20..300": NARROW,
    "modality dropout 0.4": MDROP,
    "modality dropout 0.4, mass rule": MASS,
    "isodense 0.25 (the defaults)": ISO,
    "the defaults, slower CPU": SLOW,
    "isodense 0.5": q("30min_isodense05", "30min_isodense05_seed1"),
    "mined negatives": q("30min_mined025", "30min_mined025_seed1"),
    "3D, 9 slices": NET3D,
}

#: (metric key in a cohort, target, "max" if higher is better else "min", words)
TARGETS = (
    ("median_dice", 0.85, "max", "median Dice, all patients"),
    ("missed_fraction", 0.02, "min", "share of clots missed"),
    ("fp_patient_fraction", 0.05, "min", "share of clot-free patients with a false positive"),
    ("median_hd95_mm", 3.0, "min", "median HD95 (mm)"),
    ("volume_pearson_r", 0.95, "max", "clot volume vs truth, Pearson r"),
    ("length_pearson_r", 0.90, "max", "clot length vs truth, Pearson r"),
    ("perviousness_median_abs_error_hu", 3.0, "min", "perviousness, median abs error (HU)"),
    ("qc_spearman_rho", -0.70, "min", "review score vs Dice, Spearman rho"),
)


class MissingResult(Exception):
    """A result file the table names is not in the results folder."""


@functools.cache
def load(name: str, results: Path = RESULTS) -> dict:
    """One result file, or a :class:`MissingResult` naming it; read once (the tables
    read each file several times, and nothing changes them)."""
    path = results / name
    if not path.is_file():
        raise MissingResult(f"{path}: no such result file")
    return json.loads(path.read_text())


def site(result: dict, cohort: str) -> dict | None:
    """The both-scan scores of one test site, or None when the run was not scored there."""
    return (result.get("cohorts") or {}).get(cohort)


def _mean(values: list[float]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return round(mean(kept), 3) if kept else None


def site_summary(files: tuple[str, ...], cohort: str, results: Path = RESULTS) -> dict:
    """Per run and mean: clots missed, clot-free patients with a false positive, Dice."""
    rows = [site(load(f, results), cohort) for f in files]
    rows = [r for r in rows if r]
    if not rows:
        return {}
    missed = [r["clots_missed"] for r in rows]
    fp = [r["clot_free_with_fp"] for r in rows]
    dice = [r.get("median_dice_clot_patients") for r in rows]
    return {
        "clots": rows[0]["n_clot"], "clot_free": rows[0]["n_clot_free"],
        "missed": missed, "with_fp": fp, "dice_clot_patients": dice,
        "missed_mean": _mean(missed), "with_fp_mean": _mean(fp), "dice_mean": _mean(dice),
    }


def _delta(arm: dict, ref: dict, key: str) -> float | None:
    if arm.get(key) is None or ref.get(key) is None:
        return None
    return round(arm[key] - ref[key], 3)


def arm_row(arm: Arm, results: Path = RESULTS) -> dict:
    """One table row: the arm's and its reference's scores per site, and the differences."""
    row = {"change": arm.change, "runs": list(arm.runs), "reference": list(arm.reference),
           "decision": arm.decision}
    for cohort in ("shifted", "same"):
        mine = site_summary(arm.runs, cohort, results)
        ref = site_summary(arm.reference, cohort, results)
        row[cohort] = mine
        row[f"{cohort}_reference"] = ref
        row[f"{cohort}_delta"] = {k: _delta(mine, ref, f"{k}_mean")
                                  for k in ("missed", "with_fp", "dice")}
    return row


def seed_spread(results: Path = RESULTS) -> dict:
    """Per group of identical settings: the range of clots missed and of specks, per site."""
    out = {}
    for name, files in SEED_GROUPS.items():
        entry = {"runs": list(files)}
        for cohort in ("shifted", "same"):
            s = site_summary(files, cohort, results)
            entry[cohort] = {"missed": s["missed"], "with_fp": s["with_fp"],
                             "missed_range": max(s["missed"]) - min(s["missed"]),
                             "with_fp_range": max(s["with_fp"]) - min(s["with_fp"])}
        out[name] = entry
    return out


def scored_files(results: Path = RESULTS) -> list[str]:
    """Every 90-patient quality result that scored the shifted site with both scans."""
    return sorted(p.name for p in results.glob("quality_*_90patients.json")
                  if site(load(p.name, results), "shifted"))


def _better(a: float, b: float, sense: str) -> bool:
    return a > b if sense == "max" else a < b


def met(value: float | None, target: float, sense: str) -> bool:
    """Whether ``value`` reaches ``target`` (at least it for "max", at most for "min")."""
    if value is None or math.isnan(value):
        return False
    return value >= target if sense == "max" else value <= target


def target_table(cohort: str, results: Path = RESULTS) -> list[dict]:
    """Each target: the present defaults' runs, and the best any run reached (and where)."""
    files = scored_files(results)
    out = []
    for key, target, sense, words in TARGETS:
        defaults = [site(load(f, results), cohort).get(key) for f in DEFAULTS]
        best_value, best_file = None, None
        for f in files:
            v = (site(load(f, results), cohort) or {}).get(key)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            if best_value is None or _better(v, best_value, sense):
                best_value, best_file = v, f
        out.append({
            "metric": key, "what": words, "target": target, "sense": sense,
            "defaults": [None if v is None else round(v, 3) for v in defaults],
            "defaults_met": [met(v, target, sense) for v in defaults],
            "best": None if best_value is None else round(best_value, 3),
            "best_file": best_file, "best_met": met(best_value, target, sense),
        })
    return out


def flag_table(results: Path = RESULTS) -> list[dict]:
    """The review flag on the shifted site: poor masks flagged at what share of good ones
    (target: at least 90 % of Dice < 0.5 while at most 20 % of Dice >= 0.8)."""
    out = []
    for f in scored_files(results):
        s = site(load(f, results), "shifted")
        poor, good = s.get("flagged_of_dice_below_0_5"), s.get("flagged_of_dice_at_least_0_8")
        if not poor or not good or None in (poor["fraction"], good["fraction"]):
            continue
        out.append({"file": f, "rho": s.get("qc_spearman_rho"),
                    "poor_flagged": round(poor["fraction"], 3),
                    "good_flagged": round(good["fraction"], 3),
                    "met": poor["fraction"] >= 0.9 and good["fraction"] <= 0.2})
    return sorted(out, key=lambda f: f["rho"])


def one_scan_table(results: Path = RESULTS) -> list[dict]:
    """Runs scored with one scan on the shifted site: CTA-only Dice against both scans
    (target within 0.05) and NCCT-only detection (target sensitivity >= 0.85 at
    specificity >= 0.9)."""
    out = []
    for name in scored_files(results):
        r = load(name, results)
        both, cta, ncct = (site(r, c) for c in ("shifted", "shifted_cta_only", "shifted_ncct_only"))
        if not (both and cta and ncct):
            continue
        gap = round(both["median_dice"] - cta["median_dice"], 3)
        sens, spec = ncct["detection_sensitivity"], ncct["detection_specificity"]
        out.append({"file": name, "patients": both["n_patients"],
                    "dice_both": round(both["median_dice"], 3),
                    "dice_cta_only": round(cta["median_dice"], 3), "cta_gap": gap,
                    "cta_met": gap <= 0.05, "ncct_sensitivity": round(sens, 3),
                    "ncct_specificity": round(spec, 3),
                    "ncct_met": sens >= 0.85 and spec >= 0.9})
    return out


def build(results: Path = RESULTS) -> dict:
    """The whole table as one JSON-ready dict."""
    return {
        "benchmark": "ablation",
        "what": __doc__.splitlines()[0],
        "arms": [arm_row(a, results) for a in ARMS],
        "early_arms": [arm_row(a, results) for a in EARLY],
        "seed_spread": seed_spread(results),
        "targets": {c: target_table(c, results) for c in ("shifted", "same")},
        "review_flag": flag_table(results),
        "one_scan": one_scan_table(results),
    }


# ---------------------------------------------------------------- Markdown

def _n(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _signed(v, digits: int = 1) -> str:
    return "–" if v is None else f"{v:+.{digits}f}"


def _counts(s: dict, key: str) -> str:
    return "/".join(str(v) for v in s.get(key, [])) or "–"


def _arm_lines(rows: list[dict]) -> list[str]:
    lines = ["| change | shifted: missed | Δ | with FP | Δ | Dice | Δ | training site: missed | Δ | with FP | Δ | decision |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, d, t, e = r["shifted"], r["shifted_delta"], r["same"], r["same_delta"]
        lines.append(
            f"| {r['change']} | {_counts(s, 'missed')} of {s.get('clots', '–')} "
            f"| {_signed(d['missed'])} | {_counts(s, 'with_fp')} of {s.get('clot_free', '–')} "
            f"| {_signed(d['with_fp'])} | {_n(s.get('dice_mean'))} | {_signed(d['dice'], 2)} "
            f"| {_counts(t, 'missed')} | {_signed(e['missed'])} | {_counts(t, 'with_fp')} "
            f"| {_signed(e['with_fp'])} | {r['decision']} |")
    return lines


def markdown(table: dict) -> str:
    """The table as a Markdown page (``docs/ablation.md``)."""
    out = ["# Ablation: each change and its effect on patients from an unseen site", "",
           "Generated by `python benchmarks/ablation.py --markdown docs/ablation.md` from the",
           "`quality.py` results in `benchmarks/results/`; edit the script, not this page.",
           "Each run trained 30 minutes on 2 CPU cores unless the change says otherwise.",
           "Counts are per training seed (a/b/c); Δ is the difference of the means from the",
           "reference files listed in `ablation_shifted.json`. Dice is the median over clot",
           "patients on the shifted site.", "",
           "## 90-patient test cohorts (76 clots and 14 clot-free patients per site)", ""]
    out += _arm_lines(table["arms"])
    out += ["", "## Seed spread: identical settings, other training seeds", "",
            "| settings | shifted: missed | with FP | training site: missed | with FP |",
            "|---|---|---|---|---|"]
    for name, g in table["seed_spread"].items():
        s, t = g["shifted"], g["same"]
        out.append(f"| {name} | {'/'.join(map(str, s['missed']))} (range {s['missed_range']}) "
                   f"| {'/'.join(map(str, s['with_fp']))} "
                   f"| {'/'.join(map(str, t['missed']))} (range {t['missed_range']}) "
                   f"| {'/'.join(map(str, t['with_fp']))} |")
    out += ["", "A single-seed difference smaller than these ranges is not a finding.", "",
            "## Targets", ""]
    for cohort, words in (("shifted", "shifted site"), ("same", "training site")):
        out += [f"### {words}", "",
                "| target | goal | the defaults' runs | met by any | best run |",
                "|---|---|---|---|---|"]
        for t in table["targets"][cohort]:
            goal = ("≥ " if t["sense"] == "max" else "≤ ") + _n(t["target"])
            out.append(f"| {t['what']} | {goal} | {', '.join(_n(v) for v in t['defaults'])} "
                       f"| {'yes' if t['best_met'] else 'no'} "
                       f"| {_n(t['best'])} ({t['best_file']}) |")
        out.append("")
    out += ["### Review flag (shifted site)", "",
            "| run (by rho) | rho | poor masks flagged | good masks flagged | met |", "|---|---|---|---|---|"]
    for f in table["review_flag"]:
        out.append(f"| {f['file']} | {_n(f['rho'])} | {_n(f['poor_flagged'])} "
                   f"| {_n(f['good_flagged'])} | {'yes' if f['met'] else 'no'} |")
    out += ["", "### One scan (shifted site)", "",
            "| run | patients | Dice both / CTA only | gap (≤ 0.05) | NCCT only: sensitivity / specificity (≥ 0.85 / 0.9) |",
            "|---|---|---|---|---|"]
    for f in table["one_scan"]:
        out.append(f"| {f['file']} | {f['patients']} | {_n(f['dice_both'])} / "
                   f"{_n(f['dice_cta_only'])} | {_n(f['cta_gap'])} "
                   f"| {_n(f['ncct_sensitivity'])} / {_n(f['ncct_specificity'])} |")
    out += ["", "## First arms: 30-patient test cohorts (24 clots + 6 clot-free shifted)", ""]
    out += _arm_lines(table["early_arms"])
    return "\n".join(out) + "\n"


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(RESULTS), help="folder of quality_*.json")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--markdown", help="also write the table as Markdown here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    try:
        table = build(Path(args.results))
    except MissingResult as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    emit(table, args.out)
    if args.markdown:
        Path(args.markdown).write_text(markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
