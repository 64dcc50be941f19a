"""``clotseg demo``: synth → train → predict → evaluate → report on the phantom.

Each stage runs the real subcommand through :func:`clotseg.cli.main`, exactly as a user
would type it, so the demo exercises the command-line contract end to end. Layout of
``OUT``::

    data/            synthetic cohort (case folders + truth.csv)
    run/             trained run folder (config, splits, checkpoints, curves)
    test_data/       links to the held-out test cases of run/splits.json
    pred/            predicted masks, previews, clots.csv
    evaluation.csv   per-case metrics (+ evaluation.json summary)
    report.html      the self-contained report

The full demo fits a time budget (default 9 minutes on a 2-core CPU): training gets what
the budget leaves after synthesis, minus a reserve for prediction, evaluation and report.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clotseg.errors import ClotsegError

MARKER = ".clotseg-demo"
PRODUCTS = ("data", "run", "test_data", "pred", "evaluation.csv", "evaluation.json",
            "report.html")
FULL_CASES, QUICK_CASES = 60, 6
#: Minutes kept back from the budget for predict + evaluate + report (measured 15–20 s for
#: 12–16 small test cases on 2 CPU cores) and start-up; the last validation and the
#: post-processing tuning are inside the training time limit.
RESERVE_MIN = 0.6
MIN_TRAIN_MIN = 1.0
#: Quick mode: one short epoch, enough to produce every output, no quality target.
QUICK_TRAIN_ARGS = ["--epochs", "1", "--set", "train.steps_per_epoch=6",
                    "--set", "train.batch_size=8"]


class DemoStageError(ClotsegError):
    """A stage of the demo failed; the message names the stage."""


@dataclass
class DemoResult:
    """Where the outputs are and how the demo went."""

    out: Path
    report: Path
    test_cases: list[str]
    summary: dict  # evaluation.json
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def median_dice(self) -> float | None:
        return (self.summary.get("metrics") or {}).get("dice", {}).get("median")


def prepare_out(out: Path) -> None:
    """Create ``out``; refuse a non-empty folder that a previous demo did not make.

    A previous demo's own products are removed, so ``make demo`` can be run again.
    """
    if out.exists() and not out.is_dir():
        raise ClotsegError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ClotsegError(f"{out}: folder is not empty and was not made by `clotseg demo`; "
                           "choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by clotseg demo; its outputs here are replaced on rerun\n")
    for name in PRODUCTS:
        path = out / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)


def link_cases(data: Path, case_ids: list[str], dest: Path) -> None:
    """Make ``dest`` a dataset of the given case folders (symlinks, copies if unsupported)."""
    dest.mkdir(parents=True, exist_ok=True)
    for cid in case_ids:
        src = data / cid
        if not src.is_dir():
            raise ClotsegError(f"{src}: test case listed in splits.json is missing")
        try:
            os.symlink(src.resolve(), dest / cid, target_is_directory=True)
        except OSError:  # file systems without symlinks
            shutil.copytree(src, dest / cid)


def run_cli(stage: str, argv: list[str], echo: Callable[[str], None]) -> None:
    """Run one subcommand; raise :class:`DemoStageError` naming ``stage`` on failure."""
    from clotseg.cli import main

    echo(f"$ clotseg {' '.join(argv)}")
    try:
        rc = main(argv)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - report which stage broke, with the traceback
        traceback.print_exc()
        raise DemoStageError(f"stage '{stage}' failed: {type(exc).__name__}: {exc}") from None
    if rc == 130:
        raise KeyboardInterrupt
    if rc != 0:
        raise DemoStageError(f"stage '{stage}' failed (clotseg {argv[0]} exited with {rc}); "
                             "see the messages above")


def run_demo(out: str | Path, *, quick: bool = False, cases: int | None = None, seed: int = 0,
             budget_min: float = 9.0, device: str | None = None,
             echo: Callable[[str], None] = print) -> DemoResult:
    """Run the whole demo into ``out`` and return where everything went."""
    t0 = time.perf_counter()
    out = Path(out)
    n = cases if cases is not None else (QUICK_CASES if quick else FULL_CASES)
    if n < 3:
        raise ClotsegError("--cases must be at least 3 (train, validation and test)")
    prepare_out(out)
    data, run, test, pred = out / "data", out / "run", out / "test_data", out / "pred"
    evaluation, report = out / "evaluation.csv", out / "report.html"
    seconds: dict[str, float] = {}

    def stage(number: int, name: str, what: str, argv: list[str]) -> None:
        echo(f"\n[{number}/5] {name}: {what}")
        t = time.perf_counter()
        run_cli(name, argv, echo)
        seconds[name] = time.perf_counter() - t

    stage(1, "synth", f"{n} phantom cases (seed {seed})",
          ["synth", str(data), "--cases", str(n), "--seed", str(seed), "--size", "small"])
    if quick:
        limit, extra = 1.0, QUICK_TRAIN_ARGS
    else:
        limit = max(MIN_TRAIN_MIN, budget_min - (time.perf_counter() - t0) / 60 - RESERVE_MIN)
        extra = []
    train_args = ["train", str(data), "--out", str(run), *extra, "--time-limit", f"{limit:.2f}"]
    stage(2, "train", f"phantom defaults{' (quick)' if quick else ''}, time limit "
                      f"{limit:.1f} min", train_args + (["--device", device] if device else []))
    test_cases = _test_cases(run)
    link_cases(data, test_cases, test)
    stage(3, "predict", f"{len(test_cases)} held-out test case(s)",
          ["predict", str(run), str(test), str(pred), "--preview"]
          + (["--device", device] if device else []))
    stage(4, "evaluate", "against the phantom's reference masks",
          ["evaluate", str(pred), str(test), "--out", str(evaluation)])
    stage(5, "report", "self-contained HTML",
          ["report", str(run), "--pred", str(pred), "--data", str(test), "--eval",
           str(evaluation), "--out", str(report)])
    summary = json.loads(evaluation.with_suffix(".json").read_text())
    seconds["total"] = time.perf_counter() - t0
    return DemoResult(out, report, test_cases, summary, seconds)


def _test_cases(run: Path) -> list[str]:
    """The held-out test cases of the trained run (its ``splits.json``)."""
    from clotseg.runs import Run

    folder = Run(run)
    splits = folder.read_splits()
    cases = splits["test"] if splits is not None else []
    if not cases:
        raise DemoStageError(f"stage 'train' left no held-out test cases in "
                             f"{folder.splits_path}")
    return list(cases)


def format_summary(res: DemoResult) -> str:
    """The closing lines: test Dice, detection, timings and where the report is."""
    s = res.summary
    d = (s.get("metrics") or {}).get("dice", {})

    def num(v, spec=".3f"):
        return "n/a" if v is None else format(v, spec)

    times = ", ".join(f"{k} {v / 60:.1f} min" if v >= 60 else f"{k} {v:.0f} s"
                      for k, v in res.seconds.items())
    return "\n".join([
        "",
        f"demo done in {res.seconds['total'] / 60:.1f} min ({times})",
        f"held-out test cases: {len(res.test_cases)}; Dice median {num(d.get('median'))} "
        f"(IQR {num(d.get('q1'))}–{num(d.get('q3'))}); sensitivity "
        f"{num(s.get('sensitivity'), '.2f')}, specificity {num(s.get('specificity'), '.2f')}",
        f"report: {res.report}",
    ])


def main_demo(out: str, quick: bool, cases: int | None, seed: int, budget_min: float,
              device: str | None) -> int:
    """Run the demo and print its summary (used by the ``demo`` subcommand)."""
    res = run_demo(out, quick=quick, cases=cases, seed=seed, budget_min=budget_min,
                   device=device, echo=lambda msg: print(msg, flush=True))
    print(format_summary(res))
    sys.stdout.flush()
    return 0
