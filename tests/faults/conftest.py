"""Shared pieces of the fault-injection suite: a phantom dataset and an untrained run
folder built once per session, fresh copies per test, and the command line run in-process
with its output captured."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

#: A tiny real architecture (runs in a child process too, unlike the test-only networks).
RUN_MODEL = ("unet-original", {"in_channels": 2, "base": 4})


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def cli(*argv: object, env: dict[str, str] | None = None) -> Result:
    """``clotseg ARGV`` in this process: exit code, stdout, stderr. The environment and
    warning filters are restored afterwards (flags pass settings through the environment)."""
    from clotseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings():
            # printed as the console script prints them (pytest would record them instead)
            warnings.showwarning = lambda msg, *a, **k: err.write(f"warning: {msg}\n")
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exc:  # argparse usage errors
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return Result(int(code), out.getvalue(), err.getvalue())


#: Slices kept around the clot of each phantom case (keeps every prediction quick).
SLICES = 16


@pytest.fixture(scope="session")
def fault_cohort(tmp_path_factory) -> Path:
    """Four small phantom cases, each cut to the 16 slices around its clot (geometry
    kept: the origin moves with the cut), written once per session."""
    import numpy as np

    from clotseg.io import Volume, read_volume, write_volume
    from clotseg.synth import write_cohort

    root = tmp_path_factory.mktemp("fault_cohort")
    write_cohort(root, 4, seed=21, size="small", progress=False)
    for case in sorted(p for p in root.iterdir() if p.is_dir()):
        vols = {n: read_volume(case / f"{n}.nii.gz") for n in ("cta", "ncct", "clot")}
        mask = np.asarray(vols["clot"].array)
        hits = np.argwhere(mask > 0)
        mid = int(hits[:, 2].mean()) if len(hits) else mask.shape[2] // 2
        k0 = int(np.clip(mid - SLICES // 2, 0, mask.shape[2] - SLICES))
        for name, vol in vols.items():
            d = np.asarray(vol.direction).reshape(3, 3)
            origin = np.asarray(vol.origin) + d[:, 2] * vol.spacing[2] * k0
            cut = Volume(np.ascontiguousarray(vol.array[:, :, k0:k0 + SLICES]), vol.spacing,
                         tuple(origin), vol.direction)
            write_volume(cut, case / f"{name}.nii.gz", mask=name == "clot")
    return root


@pytest.fixture(scope="session")
def fault_run(tmp_path_factory) -> Path:
    """An untrained run folder as ``clotseg train`` leaves it for ``predict``."""
    from clotseg.models import create_model
    from clotseg.runs import ModelSpec, save_model_spec

    run = tmp_path_factory.mktemp("fault_run")
    name, kwargs = RUN_MODEL
    torch.manual_seed(0)
    save_model_spec(run, ModelSpec(name, kwargs, min_component_mm3=0.0))
    (run / "checkpoints").mkdir()
    torch.save({"model": create_model(name, **kwargs).state_dict(), "model_name": name,
                "model_kwargs": kwargs, "epoch": 0}, run / "checkpoints" / "best.pt")
    return run


@dataclass
class Ctx:
    """What one fault gets: fresh copies it may break, and pytest's monkeypatch."""

    tmp: Path
    cohort: Path
    run_src: Path
    mp: pytest.MonkeyPatch

    def data(self, n: int = 1) -> Path:
        """A fresh dataset folder with the first ``n`` phantom cases."""
        root = self.tmp / "data"
        if not root.exists():
            for case in sorted(p for p in self.cohort.iterdir() if p.is_dir())[:n]:
                shutil.copytree(case, root / case.name)
        return root

    def case(self) -> Path:
        """The first case folder of :meth:`data`."""
        return sorted(p for p in self.data().iterdir() if p.is_dir())[0]

    def run(self) -> Path:
        """A fresh copy of the run folder."""
        dst = self.tmp / "run"
        if not dst.exists():
            shutil.copytree(self.run_src, dst)
        return dst


@pytest.fixture
def ctx(tmp_path, fault_cohort, fault_run, monkeypatch) -> Ctx:
    return Ctx(tmp_path, fault_cohort, fault_run, monkeypatch)
