#!/usr/bin/env bash
# The GPU benchmark in one go (≤ 8 minutes on one modern GPU); JSON into benchmarks/results/
# (or --out-dir DIR), and a summary with the targets in gpu_summary.json:
#   1. training throughput: full step vs the bare compiled model step (target ≥ 0.90),
#      cohort held on the device (train_throughput.py --compile)
#   2. the same data through a typical MONAI DataLoader + dictionary transforms
#      (monai_pipeline.py); target: clotseg ≥ 2.5× its slices/s
#   3. bf16 vs fp32 agreement of prediction (predict_latency.py --precision fp32 bf16)
#   4. predict latency of a clinical-size case, file to file (target ≤ 2 s, ≤ 1 s on GPU)
#   5. DDP scaling of `clotseg train` when more than one GPU is visible
# `--dry-run` runs every step on the CPU at toy sizes in seconds (the test suite does, so
# that this script cannot rot); its numbers mean nothing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python}"
out="$here/results"
dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --out-dir) out="$2"; shift ;;
    *) echo "usage: gpu.sh [--dry-run] [--out-dir DIR]" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
ngpu=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$dry" = 1 ]; then
  dev=cpu; tag=dryrun
  toy=(--base 4 --batch 2 --patch 32 --cases 1 --steps 1 --warmup 1 --threads 1)
  "$PY" "$here/train_throughput.py" --device cpu "${toy[@]}" --out "$out/train_throughput_$tag.json" >/dev/null
  "$PY" "$here/monai_pipeline.py" --device cpu "${toy[@]}" --workers 0 --out "$out/monai_pipeline_$tag.json" >/dev/null
  "$PY" "$here/predict_latency.py" --device cpu --sizes small --base 4 --threads 1 \
    --precision fp32 bf16 --no-baseline --out "$out/predict_agreement_$tag.json" >/dev/null
  clinical="skipped in --dry-run (a clinical case takes minutes on a CPU)"
  ngpu=0
else
  if [ "$ngpu" -lt 1 ]; then echo "gpu.sh: no CUDA device (use --dry-run on a CPU)" >&2; exit 1; fi
  dev=cuda; tag=gpu
  "$PY" "$here/train_throughput.py" --device cuda --compile --loader resident --out "$out/train_throughput_$tag.json" >/dev/null
  "$PY" "$here/monai_pipeline.py" --device cuda --workers "$(nproc)" --out "$out/monai_pipeline_$tag.json" >/dev/null
  "$PY" "$here/predict_latency.py" --device cuda --sizes medium --precision fp32 bf16 --out "$out/predict_agreement_$tag.json" >/dev/null
  "$PY" "$here/predict_latency.py" --device cuda --sizes clinical --out "$out/predict_latency_clinical_$tag.json" >/dev/null
  clinical="$out/predict_latency_clinical_$tag.json"
fi
ddp="skipped: $ngpu GPU(s) visible"
if [ "$ngpu" -gt 1 ]; then
  work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
  "$PY" -m clotseg.cli synth "$work/data" --cases 40 --no-progress >/dev/null
  for n in 1 "$ngpu"; do
    torchrun --standalone --nproc_per_node "$n" -m clotseg.cli train "$work/data" --out "$work/run$n" \
      --epochs 2 --set train.steps_per_epoch=100 --set train.tune_postprocess=false \
      --set train.batch_size=64 --set data.patch=256 >/dev/null 2>&1
  done
  ddp="$work"
fi
"$PY" - "$out" "$tag" "$clinical" "$ddp" "$ngpu" <<'PYEOF'
import json, os, sys
from pathlib import Path
out, tag, clinical, ddp, ngpu = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
load = lambda name: json.loads((out / f"{name}_{tag}.json").read_text())
tt, mp, ag = load("train_throughput"), load("monai_pipeline"), load("predict_agreement")
case = ag["cases"][0]
s = {"benchmark": "gpu", "dry_run": tag == "dryrun", "load_average": list(os.getloadavg()),
     "train_full_vs_bare": tt["ratio"], "train_full_vs_bare_target": 0.90,
     "train_full_slices_per_s": tt["full_slices_per_s"],
     "monai_slices_per_s": mp["slices_per_s"],
     "clotseg_vs_monai": round(tt["full_slices_per_s"] / mp["slices_per_s"], 2),
     "clotseg_vs_monai_target": 2.5,
     "bf16_vs_fp32_dice": case.get("optimised_bf16", {}).get("dice_vs_baseline"),
     "fp32_vs_plain_dice": case.get("optimised_fp32", {}).get("dice_vs_baseline")}
if Path(clinical).is_file():
    c = json.loads(Path(clinical).read_text())["clinical"]["optimised"]
    s.update(predict_clinical_s=c["seconds"], predict_clinical_infer_s=c["stages"].get("infer"),
             predict_clinical_target_s=2.0, predict_clinical_gpu_target_s=1.0)
else:
    s["predict_clinical"] = clinical
if ngpu > 1:
    rate = {n: json.loads((Path(ddp) / f"run{n}" / "train.json").read_text())["slices_per_s"]
            for n in (1, ngpu)}
    s["ddp"] = {"gpus": ngpu, "slices_per_s": rate,
                "scaling_efficiency": round(rate[ngpu] / (ngpu * rate[1]), 3)}
else:
    s["ddp"] = ddp
text = json.dumps(s, indent=2)
(out / f"gpu_summary_{tag}.json").write_text(text + "\n")
print(text)
PYEOF
