"""Real (tiny) training runs on the phantom: artifacts, resume, CLI, torchrun."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

import pytest
import torch

from clotseg.cli import main
from clotseg.runs import load_model, load_model_spec

TINY = ["--set", "model.base=4", "--set", "train.steps_per_epoch=3", "--set",
        "train.batch_size=4", "--set", "data.patch=32", "--set", "data.slab=1",
        "--set", "data.n_folds=3"]


def _losses(run):
    return [float(r["train_loss"]) for r in csv.DictReader((run / "metrics.csv").open())]


def test_two_epoch_run_writes_every_artifact(phantom_cohort, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(phantom_cohort), "--out", str(run), "--epochs", "2", *TINY]) == 0
    for name in ("config.yaml", "splits.json", "checkpoints/last.pt", "checkpoints/best.pt",
                 "metrics.csv", "curves.png", "model.json", "train.json"):
        assert (run / name).is_file(), name
    assert len(_losses(run)) == 2
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng", "epoch", "config"} <= set(ck)
    model, spec = load_model(run)
    assert spec.slab == 1 and spec.model_kwargs["in_channels"] == 2
    assert sum(p.numel() for p in model.parameters()) > 0
    assert "best validation Dice" in capsys.readouterr().out
    # a second train into the same folder without --resume is refused
    assert main(["train", str(phantom_cohort), "--out", str(run), "--epochs", "2", *TINY]) == 1


def test_resume_equals_uninterrupted(phantom_cohort, tmp_path, monkeypatch):
    from clotseg.training import trainer

    full, part = tmp_path / "full", tmp_path / "part"
    det = [*TINY, "--set", "train.deterministic=true"]
    assert main(["train", str(phantom_cohort), "--out", str(full), "--epochs", "3", *det]) == 0
    # Kill the second run during epoch 3 (after epoch 2's checkpoint was written).
    real_validate, calls = trainer.validate, []

    def killed(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(trainer, "validate", killed)
    assert main(["train", str(phantom_cohort), "--out", str(part), "--epochs", "3", *det]) == 130
    assert len(_losses(part)) == 2
    monkeypatch.setattr(trainer, "validate", real_validate)
    assert main(["train", str(phantom_cohort), "--out", str(part), "--resume"]) == 0
    assert _losses(part) == pytest.approx(_losses(full), rel=1e-6)
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_bad_set_key_exit_code(phantom_cohort, tmp_path, capsys):
    assert main(["train", str(phantom_cohort), "--out", str(tmp_path / "r"),
                 "--set", "train.epoch=3"]) == 1
    assert "valid keys" in capsys.readouterr().err


def test_reuse_splits_file(phantom_cohort, tmp_path):
    a = tmp_path / "a"
    assert main(["train", str(phantom_cohort), "--out", str(a), "--epochs", "1", *TINY]) == 0
    b = tmp_path / "b"
    assert main(["train", str(phantom_cohort), "--out", str(b), "--epochs", "1", *TINY,
                 "--set", f"data.splits={a / 'splits.json'}", "--fold", "2"]) == 0
    assert (a / "splits.json").read_text() == (b / "splits.json").read_text()


def test_torchrun_two_processes_gloo(phantom_cohort, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "clotseg.cli", "train", str(phantom_cohort),
           "--out", str(run), "--epochs", "1", "--device", "cpu", *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(_losses(run)) == 1
    assert (run / "checkpoints" / "best.pt").is_file()
    assert load_model_spec(run).model_name == "unet-original"
    assert '"world_size": 2' in (run / "train.json").read_text()
    leftovers = [p.name for p in run.rglob("*") if ".tmp" in p.name]
    assert not leftovers
