"""``benchmarks/gpu.sh --dry-run``: the GPU benchmark script runs end to end on the CPU at
toy sizes and writes its JSON, so that it still works on the day a GPU is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_dry_run_writes_its_json(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run",
                           "--out-dir", str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "gpu_summary_dryrun.json").read_text())
    assert summary["dry_run"] is True and summary == json.loads(proc.stdout)
    assert summary["train_full_vs_bare"] > 0 and summary["monai_slices_per_s"] > 0
    assert summary["clotseg_vs_monai"] > 0
    assert summary["train_full_vs_bare_target"] == 0.90 and summary["clotseg_vs_monai_target"] == 2.5
    for name in ("train_throughput", "monai_pipeline", "predict_agreement"):
        assert json.loads((tmp_path / f"{name}_dryrun.json").read_text())
    agreement = json.loads((tmp_path / "predict_agreement_dryrun.json").read_text())
    precisions = {k for k in agreement["cases"][0] if k.startswith("optimised_")}
    assert precisions == {"optimised_fp32", "optimised_bf16"}
    assert "skipped" in summary["ddp"] and "skipped" in summary["predict_clinical"]


def test_gpu_benchmark_refuses_unknown_arguments(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--bogus"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage" in proc.stderr
