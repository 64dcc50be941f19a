"""Fault injection: hostile but fair input, full disks, odd names and configs, for every
command that reads or writes. Each kind of fault is one row of a table and is checked the
same way: the exit code (1 for bad input, 2 for bad usage, 0 where the fault must be
handled), no traceback and no internal error, the message names the file at fault, and
afterwards nothing is lost or half-written (``intact``: every volume left in an output
folder reads back completely, no temporary file is left, JSON and CSV outputs parse).

A row's ``make(ctx)`` builds the fault from the phantom and returns the command line; its
optional ``after(ctx, result)`` checks what must (not) be there afterwards.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from clotseg.io import Volume, read_volume, write_volume
from tests.faults.conftest import Ctx, Result, cli


@dataclass
class Fault:
    name: str
    make: Callable[[Ctx], list]
    code: int
    names: Callable[[Ctx], str] | str  # text the output must contain (the file at fault)
    after: Callable[[Ctx, Result], None] | None = None


FAULTS: list[Fault] = []


def fault(name: str, code: int, names, after=None):
    def register(make):
        FAULTS.append(Fault(name, make, code, names, after))
        return make
    return register


# --- helpers ------------------------------------------------------------------------------

def gz_payload(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def nifti_bytes(arr: np.ndarray, pixdim=(0.5, 0.5, 1.0), dtype=None) -> bytes:
    img = nib.Nifti1Image(arr if dtype is None else arr.astype(dtype),
                          np.diag([*(tuple(pixdim) + (1.0,) * 3)[:3], 1]))
    img.header.set_zooms((tuple(pixdim) + (1.0,) * 4)[: arr.ndim])
    return img.to_bytes()


def set_header_field(path: Path, field: str, value) -> None:
    """Rewrite one raw header field of a .nii.gz (nibabel's writer would 'fix' it)."""
    raw = bytearray(gz_payload(path))
    hdr = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(bytes(raw[:348])),
                                        check=False)
    hdr[field] = value
    raw[:348] = hdr.binaryblock
    path.write_bytes(gzip.compress(bytes(raw), compresslevel=1))


def cta_volume(ctx: Ctx) -> Volume:
    return read_volume(ctx.case() / "cta.nii.gz")


def tmp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


def intact(folder: Path) -> None:
    """Nothing half-written under ``folder``: volumes read fully, JSON/CSV parse, no
    temporary files."""
    if not folder.is_dir():
        return
    assert not tmp_files(folder), tmp_files(folder)
    for p in folder.rglob("*.nii.gz"):
        read_volume(p)  # the full gzip pass and payload checks
    for p in folder.rglob("*.json"):
        json.loads(p.read_text())
    for p in folder.rglob("*.csv"):
        with p.open(newline="") as fh:
            list(csv.reader(fh))


def no_output(name: str):
    def after(ctx: Ctx, res: Result) -> None:
        assert not (ctx.tmp / name).exists() or not any((ctx.tmp / name).glob("*.nii.gz"))
        intact(ctx.tmp / name)
    return after


def predict(ctx: Ctx, *extra) -> list:
    return ["predict", ctx.run(), ctx.data(), ctx.tmp / "pred", "--quiet", *extra]


def check(ctx: Ctx, *extra) -> list:
    return ["check", ctx.data(), *extra]


# --- reading volumes (check shows the reason; predict / preprocess refuse the case) ---------

@fault("truncated gzip", 1, "cta.nii.gz")
def _(ctx):
    p = ctx.case() / "cta.nii.gz"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return check(ctx)


@fault("text renamed .nii.gz", 1, "ncct.nii.gz")
def _(ctx):
    (ctx.case() / "ncct.nii.gz").write_text("patient notes, not an image\n")
    return check(ctx)


@fault("empty file", 1, "cta.nii.gz")
def _(ctx):
    (ctx.case() / "cta.nii.gz").write_bytes(b"")
    return check(ctx)


def _short_payload(ctx) -> Path:
    p = ctx.case() / "cta.nii.gz"
    raw = gz_payload(p)
    p.write_bytes(gzip.compress(raw[: int(len(raw) * 0.6)], compresslevel=1))  # valid gzip
    return p


def _says_cut_short(ctx, res):
    assert "cut short" in res.text


@fault("voxel data cut short inside valid gzip: check", 1, "cta.nii.gz", _says_cut_short)
def _(ctx):
    _short_payload(ctx)
    return check(ctx)


@fault("voxel data cut short inside valid gzip: predict", 1, "cta.nii.gz",
       lambda c, r: (_says_cut_short(c, r), no_output("pred")(c, r)))
def _(ctx):
    _short_payload(ctx)
    return predict(ctx)


@fault("voxel data cut short inside valid gzip: preprocess", 1, "cta.nii.gz",
       lambda c, r: _says_cut_short(c, r))
def _(ctx):
    _short_payload(ctx)
    return ["preprocess", ctx.data(), ctx.tmp / "prep", "--no-register", "--roi", "none",
            "--no-progress"]


@fault("short .nii payload", 1, "cta.nii", _says_cut_short)
def _(ctx):
    case = ctx.case()
    raw = gz_payload(case / "cta.nii.gz")
    (case / "cta.nii.gz").unlink()
    (case / "cta.nii").write_bytes(raw[: len(raw) - 5000])
    return check(ctx)


def _huge_header(ctx) -> None:
    p = ctx.case() / "cta.nii.gz"
    p.write_bytes(gzip.compress(nifti_bytes(np.zeros((4, 4, 4), np.int16))))
    set_header_field(p, "dim", [3, 1500, 1500, 1000, 1, 1, 1, 1])


@fault("huge header (memory bomb): check", 1, "cta.nii.gz",
       lambda c, r: ("above the limit" in r.text) or pytest.fail(r.text))
def _(ctx):
    _huge_header(ctx)
    return check(ctx)


@fault("huge header (memory bomb): predict", 1, "cta.nii.gz", no_output("pred"))
def _(ctx):
    _huge_header(ctx)
    return predict(ctx)


@fault("volume above a configured cap", 1, "cta.nii.gz",
       lambda c, r: ("CLOTSEG_MAX_VOLUME_GB" in r.text) or pytest.fail(r.text))
def _(ctx):
    ctx.mp.setenv("CLOTSEG_MAX_VOLUME_GB", "0.0001")  # 100 KiB
    return check(ctx)


@fault("gzip bomb", 1, "cta.nii.gz",
       lambda c, r: ("decompression bomb" in r.text) or pytest.fail(r.text))
def _(ctx):
    raw = nifti_bytes(np.zeros((8, 8, 8), np.int16)) + bytes(80 << 20)
    (ctx.case() / "cta.nii.gz").write_bytes(gzip.compress(raw, compresslevel=1))
    return check(ctx)


@fault("4D image", 1, "ncct.nii.gz", lambda c, r: ("4D" in r.text) or pytest.fail(r.text))
def _(ctx):
    (ctx.case() / "ncct.nii.gz").write_bytes(
        gzip.compress(nifti_bytes(np.zeros((8, 8, 8, 3), np.int16))))
    return check(ctx)


@fault("2D image", 1, "ncct.nii.gz", lambda c, r: ("2D" in r.text) or pytest.fail(r.text))
def _(ctx):
    (ctx.case() / "ncct.nii.gz").write_bytes(
        gzip.compress(nifti_bytes(np.zeros((8, 8), np.int16))))
    return check(ctx)


@fault("RGB image", 1, "cta.nii.gz")
def _(ctx):
    rgb = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    (ctx.case() / "cta.nii.gz").write_bytes(gzip.compress(nifti_bytes(rgb)))
    return check(ctx)


@fault("pixdim 0: check", 1, "cta.nii.gz",
       lambda c, r: ("spacing" in r.text) or pytest.fail(r.text))
def _(ctx):
    set_header_field(ctx.case() / "cta.nii.gz", "pixdim", [1, 0, 0, 0, 1, 1, 1, 1])
    return check(ctx)


@fault("pixdim 0 in every file: predict", 1, "nii.gz", no_output("pred"))
def _(ctx):
    for name in ("cta", "ncct"):
        set_header_field(ctx.case() / f"{name}.nii.gz", "pixdim", [1, 0, 0, 0, 1, 1, 1, 1])
    return predict(ctx)


@fault("negative pixdim", 1, "ncct.nii.gz")
def _(ctx):
    set_header_field(ctx.case() / "ncct.nii.gz", "pixdim", [1, -0.5, 0.5, 1, 1, 1, 1, 1])
    return check(ctx)


@fault("truncated NRRD", 1, "cta.nrrd")
def _(ctx):
    case = ctx.case()
    write_volume(read_volume(case / "cta.nii.gz"), case / "cta.nrrd", compress=False)
    (case / "cta.nii.gz").unlink()
    p = case / "cta.nrrd"
    p.write_bytes(p.read_bytes()[:-4000])
    return check(ctx)


@fault("NRRD without any voxel spacing (not read as 1 mm)", 1, "ncct.nrrd: the header gives no voxel spacing")
def _(ctx):
    case = ctx.case()
    vol = read_volume(case / "ncct.nii.gz")
    (case / "ncct.nii.gz").unlink()
    arr = np.asarray(vol.array, dtype=np.int16)
    head = (f"NRRD0004\ntype: short\ndimension: 3\nsizes: {' '.join(map(str, arr.shape))}\n"
            "encoding: raw\nendian: little\n\n")
    (case / "ncct.nrrd").write_bytes(head.encode() + arr.tobytes(order="F"))
    return predict(ctx)


def _scale_spacing(ctx, factor: float) -> None:
    """Every file of the case with its voxels ``factor`` times larger (a unit slip)."""
    for p in ctx.case().glob("*.nii.gz"):
        img = nib.load(str(p))
        affine = img.affine.copy()
        affine[:3, :3] *= factor
        out = nib.Nifti1Image(np.asarray(img.dataobj), affine, header=img.header)
        out.set_qform(affine, code=1)
        out.set_sform(affine, code=1)
        nib.save(out, str(p))


@fault("spacing 100 times too large (a head several metres wide): check", 1,
       "cta.nii.gz: the voxel spacing in the header")
def _(ctx):
    _scale_spacing(ctx, 100.0)
    return check(ctx)


@fault("spacing too coarse for any CT: check warns", 0, "outside what CT scanners reconstruct")
def _(ctx):
    _scale_spacing(ctx, 16.0)
    return check(ctx)


@fault("spacing too coarse: predict warns", 0, "cta.nii.gz: voxel spacing")
def _(ctx):
    _scale_spacing(ctx, 16.0)
    return predict(ctx)


@fault("spacing too coarse: preprocess refuses the resample, no memory taken", 1,
       "above the 2 GiB limit", no_output("prep"))
def _(ctx):
    _scale_spacing(ctx, 16.0)
    return ["preprocess", ctx.data(), ctx.tmp / "prep", "--target-spacing", "0.5", "0.5", "0.5",
            "--roi", "none"]


@fault("NRRD header claiming a huge volume", 1, "ncct.nrrd")
def _(ctx):
    case = ctx.case()
    write_volume(read_volume(case / "ncct.nii.gz"), case / "ncct.nrrd", compress=False)
    (case / "ncct.nii.gz").unlink()
    p = case / "ncct.nrrd"
    head, _, body = p.read_bytes().partition(b"\n\n")
    lines = [b"sizes: 3000 3000 3000" if ln.startswith(b"sizes:") else ln
             for ln in head.split(b"\n")]
    p.write_bytes(b"\n".join(lines) + b"\n\n" + body[:1000])
    return check(ctx)


@fault("truncated MetaImage", 1, "cta.mha")
def _(ctx):
    case = ctx.case()
    write_volume(read_volume(case / "cta.nii.gz"), case / "cta.mha", compress=False)
    (case / "cta.nii.gz").unlink()
    p = case / "cta.mha"
    p.write_bytes(p.read_bytes()[:-3000])
    return check(ctx)


def _nonfinite(ctx, name="cta", value=np.nan, every=False) -> Path:
    for case in sorted(ctx.data().iterdir()) if every else [ctx.case()]:
        p = case / f"{name}.nii.gz"
        vol = read_volume(p)
        arr = np.asarray(vol.array, dtype=np.float32).copy()
        arr[arr.shape[0] // 2, arr.shape[1] // 2, :] = value
        write_volume(vol.with_array(arr), p)
    return p


def _train(ctx) -> list:
    return ["train", ctx.data(), "--out", ctx.tmp / "run_new", "--epochs", "1",
            "--set", "model.base=4"]


@fault("NaN voxels: check", 1, "cta.nii.gz")
def _(ctx):
    _nonfinite(ctx)
    return check(ctx)


@fault("NaN voxels: predict", 1, "cta.nii.gz",
       lambda c, r: ("non-finite" in r.text and not (c.tmp / "pred" / f"{c.case().name}.nii.gz"
                                                      ).exists()) or pytest.fail(r.text))
def _(ctx):
    _nonfinite(ctx)
    return predict(ctx)


@fault("inf voxels in the NCCT: predict", 1, "ncct.nii.gz")
def _(ctx):
    _nonfinite(ctx, "ncct", np.inf)
    return predict(ctx)


@fault("NaN voxels: preprocess with registration", 1, "cta.nii.gz")
def _(ctx):
    _nonfinite(ctx)
    return ["preprocess", ctx.data(), ctx.tmp / "prep", "--roi", "none", "--no-progress"]


@fault("NaN voxels: train", 1, "cta.nii.gz")
def _(ctx):
    ctx.data(4)
    _nonfinite(ctx, every=True)
    return _train(ctx)


def _constant(ctx, name="cta", every=False) -> Path:
    for case in sorted(ctx.data().iterdir()) if every else [ctx.case()]:
        p = case / f"{name}.nii.gz"
        vol = read_volume(p)
        write_volume(vol.with_array(np.full(vol.shape, -1024.0, np.float32)), p)
    return p


def _no_mask_for_case(ctx: Ctx, res: Result) -> None:
    assert not (ctx.tmp / "pred" / f"{ctx.case().name}.nii.gz").exists(), res.text


@fault("constant CTA (a blank export): predict refuses it, no mask written", 1,
       "cta.nii.gz: CTA is a constant image (every voxel -1024)", _no_mask_for_case)
def _(ctx):
    _constant(ctx)
    return predict(ctx)


@fault("constant NCCT: train", 1, "ncct.nii.gz: NCCT is a constant image")
def _(ctx):
    ctx.data(4)
    _constant(ctx, "ncct", every=True)
    return _train(ctx)


@fault("NaN voxels replaced on request (--replace-nonfinite)", 0, "replaced by -1000",
       lambda c, r: intact(c.tmp / "pred"))
def _(ctx):
    _nonfinite(ctx)
    return predict(ctx, "--replace-nonfinite", "-1000")


# --- masks ------------------------------------------------------------------------------

def _mask_values(ctx, values, dtype=np.uint8, every=False) -> Path:
    for case in sorted(ctx.data().iterdir()) if every else [ctx.case()]:
        p = case / "clot.nii.gz"
        vol = read_volume(p)
        arr = np.asarray(vol.array).astype(dtype)
        nz = np.argwhere(arr > 0)
        arr[arr > 0] = values[0]
        if len(values) > 1 and len(nz):
            arr[tuple(nz[0])] = values[1]
        write_volume(vol.with_array(arr), p)
    return p


def _evaluate(ctx, *extra) -> list:
    pred = ctx.tmp / "pred"
    for case in ctx.data().iterdir():
        write_volume(read_volume(case / "clot.nii.gz"), pred / f"{case.name}.nii.gz", mask=True)
    return ["evaluate", pred, ctx.data(), "--out", ctx.tmp / "eval.csv", *extra]


@fault("mask values {0, 2, 255}: evaluate", 1, "clot.nii.gz",
       lambda c, r: ("not binary" in r.text) or pytest.fail(r.text))
def _(ctx):
    cmd = _evaluate(ctx)
    _mask_values(ctx, (2, 255))
    return cmd


@fault("mask values {0, 2, 255}: train", 1, "clot.nii.gz")
def _(ctx):
    ctx.data(4)
    _mask_values(ctx, (2, 255), every=True)
    return _train(ctx)


@fault("mask values {0, 2, 255}: check", 1, "clot.nii.gz")
def _(ctx):
    _mask_values(ctx, (2, 255))
    return check(ctx)


@fault("float mask: train", 1, "clot.nii.gz",
       lambda c, r: ("floating-point" in r.text) or pytest.fail(r.text))
def _(ctx):
    ctx.data(4)
    _mask_values(ctx, (1.0,), np.float32, every=True)
    return _train(ctx)


@fault("float mask: evaluate", 1, "clot.nii.gz")
def _(ctx):
    cmd = _evaluate(ctx)
    _mask_values(ctx, (0.7,), np.float32)
    return cmd


@fault("mask 0/255 without --mask-255", 1, "clot.nii.gz",
       lambda c, r: ("--mask-255" in r.text) or pytest.fail(r.text))
def _(ctx):
    cmd = _evaluate(ctx)
    _mask_values(ctx, (255,))
    return cmd


@fault("mask 0/255 with --mask-255 (scores as 0/1)", 0, "eval.csv",
       lambda c, r: (float(next(csv.DictReader((c.tmp / "eval.csv").open()))["dice"]) == 1.0)
       or pytest.fail(r.text))
def _(ctx):
    cmd = _evaluate(ctx, "--mask-255")
    _mask_values(ctx, (255,))
    return cmd


@fault("mask on another grid", 1, "clot.nii.gz",
       lambda c, r: ("grid differs" in r.text) or pytest.fail(r.text))
def _(ctx):
    p = ctx.case() / "clot.nii.gz"
    vol = read_volume(p)
    write_volume(Volume(vol.array, vol.spacing, (0.0, 0.0, 0.0), vol.direction), p, mask=True)
    return check(ctx)


@fault("predicted mask on another grid: evaluate", 1, "pred")
def _(ctx):
    cmd = _evaluate(ctx)
    p = next((ctx.tmp / "pred").glob("*.nii.gz"))
    vol = read_volume(p)
    write_volume(Volume(vol.array[:-2], vol.spacing, vol.origin, vol.direction), p, mask=True)
    return cmd


# --- names and layouts ----------------------------------------------------------------------

@fault("two files for one modality (cta.nii.gz and cta.nrrd): check", 1, "cta.nrrd",
       lambda c, r: ("cta.nii.gz" in r.text) or pytest.fail(r.text))
def _(ctx):
    case = ctx.case()
    write_volume(read_volume(case / "cta.nii.gz"), case / "cta.nrrd")
    return check(ctx)


@fault("two files for one modality: predict", 1, "cta.nrrd", no_output("pred"))
def _(ctx):
    case = ctx.case()
    write_volume(read_volume(case / "cta.nii.gz"), case / "cta.nrrd")
    return predict(ctx)


@fault("two masks in one case (clot.* and seg.*)", 1, "seg.nii.gz")
def _(ctx):
    case = ctx.case()
    write_volume(read_volume(case / "clot.nii.gz"), case / "seg.nii.gz", mask=True)
    return check(ctx)


@fault("dot-prefixed case folder is reported", 0, ".hidden_case")
def _(ctx):
    root = ctx.data(2)
    first = sorted(root.iterdir())[0]
    first.rename(root / ".hidden_case")
    return check(ctx)


# A case with one scan used to be a fault; predict now takes it (a check warning), while
# training still needs both scans and a case with neither is still an error.
def _two_geometries(ctx) -> None:
    """The CTA's qform moved 6 mm from its sform (both valid, code 1: ITK reads the sform,
    so the case still lines up as read): two places for one file."""
    p = ctx.case() / "cta.nii.gz"
    set_header_field(p, "qoffset_z", float(nib.load(str(p)).header["qoffset_z"]) + 6.0)


@fault("qform and sform disagree: check warns", 0, "cta.nii.gz: the header's qform")
def _(ctx):
    _two_geometries(ctx)
    return check(ctx)


def _predict_json_warns(text: str):
    """After-check: some case's warnings in ``pred/predict.json`` contain ``text``."""
    def after(ctx, res) -> None:
        said = json.loads((ctx.tmp / "pred" / "predict.json").read_text())["warnings"]
        assert any(text in w for ws in said.values() for w in ws), res.text
    return after


@fault("qform and sform disagree: predict states it in predict.json", 0, "disagree",
       _predict_json_warns("qform"))
def _(ctx):
    _two_geometries(ctx)
    return predict(ctx)


def _swap_files(ctx) -> None:
    case = ctx.case()
    (case / "cta.nii.gz").rename(case / "tmp.nii.gz")
    (case / "ncct.nii.gz").rename(case / "cta.nii.gz")
    (case / "tmp.nii.gz").rename(case / "ncct.nii.gz")


@fault("CTA and NCCT files swapped: check warns", 0, "look swapped")
def _(ctx):
    _swap_files(ctx)
    return check(ctx)


@fault("CTA and NCCT files swapped: predict states it in predict.json", 0, "look swapped",
       _predict_json_warns("look swapped"))
def _(ctx):
    _swap_files(ctx)
    return predict(ctx)


@fault("no orientation in any header: check warns", 0, "gives no orientation")
def _(ctx):
    for p in ctx.case().glob("*.nii.gz"):
        set_header_field(p, "qform_code", 0)
        set_header_field(p, "sform_code", 0)
    return check(ctx)


def _without_intercept(ctx, name: str) -> None:
    """The scan stored as raw scanner values: HU + 1024 with no rescale (air at 0)."""
    p = ctx.case() / f"{name}.nii.gz"
    img = nib.load(str(p))
    raw = (np.asarray(img.dataobj).astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16)
    hdr = img.header.copy()
    hdr.set_data_dtype(np.uint16)
    hdr.set_slope_inter(1.0, 0.0)
    nib.save(nib.Nifti1Image(raw, img.affine, hdr), str(p))


@fault("CT without its rescale intercept (values HU + 1024): check", 1,
       "ncct.nii.gz: NCCT values look shifted")
def _(ctx):
    _without_intercept(ctx, "ncct")
    return check(ctx)


@fault("CT without its rescale intercept: predict refuses the case", 1,
       "cta.nii.gz: CTA values look shifted", no_output("pred"))
def _(ctx):
    _without_intercept(ctx, "cta")
    return predict(ctx)


def _cta_twice(ctx) -> None:
    case = ctx.case()
    shutil.copyfile(case / "cta.nii.gz", case / "ncct.nii.gz")


@fault("the CTA file given as the NCCT too: check", 1, "ncct.nii.gz: the NCCT holds exactly")
def _(ctx):
    _cta_twice(ctx)
    return check(ctx)


@fault("the CTA file given as the NCCT too: predict refuses the case", 1,
       "ncct.nii.gz: the NCCT holds exactly", no_output("pred"))
def _(ctx):
    _cta_twice(ctx)
    return predict(ctx)


@fault("missing NCCT: check warns", 0, "only a CTA, no NCCT")
def _(ctx):
    (ctx.case() / "ncct.nii.gz").unlink()
    return check(ctx)


@fault("missing NCCT: train refuses the case", 1, "a training case needs both")
def _(ctx):
    for case in sorted(ctx.data(4).iterdir()):
        (case / "ncct.nii.gz").unlink()
    return _train(ctx)


@fault("neither CTA nor NCCT", 1, "neither a CTA nor an NCCT")
def _(ctx):
    case = sorted(ctx.data(2).iterdir())[0]  # the other case makes it a dataset
    (case / "cta.nii.gz").unlink()
    (case / "ncct.nii.gz").unlink()
    return check(ctx)


@fault("dataset folder does not exist", 1, "no_such_data")
def _(ctx):
    return ["check", ctx.tmp / "no_such_data"]


@fault("dataset is a file", 1, "a_file.txt")
def _(ctx):
    (ctx.tmp / "a_file.txt").write_text("x")
    return ["check", ctx.tmp / "a_file.txt"]


@fault("empty dataset folder", 1, "empty")
def _(ctx):
    (ctx.tmp / "empty").mkdir()
    return ["check", ctx.tmp / "empty"]


def _csv_injection(ctx) -> Path:
    root = ctx.data()
    case = sorted(root.iterdir())[0]
    return case.rename(root / "=HYPERLINK(1)")


@fault("case name starting with '=' in clots.csv", 0, "1 of 1 case(s) segmented",
       lambda c, r: _cells_neutral(c.tmp / "pred" / "clots.csv"))
def _(ctx):
    _csv_injection(ctx)
    return predict(ctx)


@fault("case name starting with '=' in check --csv", 1, "HYPERLINK",
       lambda c, r: _cells_neutral(c.tmp / "problems.csv"))
def _(ctx):
    case = _csv_injection(ctx)
    (case / "ncct.nii.gz").write_text("broken")
    return check(ctx, "--csv", ctx.tmp / "problems.csv")


def _cells_neutral(path: Path) -> None:
    with path.open(newline="") as fh:
        cells = [c for row in list(csv.reader(fh))[1:] for c in row[:2]]
    assert cells and not any(c.startswith(("=", "+", "@")) for c in cells), cells
    assert any(c.startswith("'=") for c in cells), cells


@fault("nnU-Net dataset.json that is not JSON", 1, "dataset.json")
def _(ctx):
    root = ctx.tmp / "nn"
    case = ctx.case()
    for i, name in enumerate(("cta", "ncct")):
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        (root / "imagesTr" / f"c1_000{i}.nii.gz").write_bytes((case / f"{name}.nii.gz"
                                                               ).read_bytes())
    (root / "dataset.json").write_bytes(b"{not json")
    return ["check", root]


# --- DICOM ------------------------------------------------------------------------------

def _dicom_case(ctx) -> Path:
    from tests.inference.conftest import write_dicom_series

    vol = read_volume(ctx.case() / "cta.nii.gz")
    small = Volume(np.asarray(vol.array)[::4, ::4, ::4].astype(np.int16),
                   tuple(s * 4 for s in vol.spacing), vol.origin, vol.direction)
    case = ctx.tmp / "dcm" / "p1"
    write_dicom_series(case / "cta", small, "CTA head")
    write_dicom_series(case / "ncct", small.with_array(np.clip(small.array, -50, 90)
                                                        .astype(np.int16)), "NCCT head")
    return case


@fault("DICOM series with a missing slice", 1, "cta",
       lambda c, r: ("slice" in r.text or "gap" in r.text) or pytest.fail(r.text))
def _(ctx):
    case = _dicom_case(ctx)
    files = sorted((case / "cta").iterdir())
    files[len(files) // 2].unlink()
    return ["check", case]


@fault("DICOM file cut short", 1, "cta")
def _(ctx):
    case = _dicom_case(ctx)
    p = sorted((case / "cta").iterdir())[3]
    p.write_bytes(p.read_bytes()[:600])
    return ["check", case]


# --- original .npy layout ------------------------------------------------------------------

def _npy(ctx, arr: np.ndarray | None, raw: bytes | None = None) -> Path:
    root = ctx.tmp / "orig"
    vol_dir = root / "DL_vol_files" / "binary"
    vol_dir.mkdir(parents=True)
    good = np.zeros((16, 16, 8), np.int16)
    np.save(vol_dir / "CS1_NCCT_Reg_Binary.npy", good)
    p = vol_dir / "CS1_CTA_Binary.npy"
    if raw is not None:
        p.write_bytes(raw)
    else:
        np.save(p, arr, allow_pickle=True)
    return root


@fault(".npy with a 2D array", 1, "CS1_CTA_Binary.npy")
def _(ctx):
    return ["check", _npy(ctx, np.zeros((16, 16), np.int16)), "--spacing", "1", "1", "1"]


@fault(".npy with a 4D array", 1, "CS1_CTA_Binary.npy")
def _(ctx):
    return ["check", _npy(ctx, np.zeros((4, 4, 4, 2), np.int16)), "--spacing", "1", "1", "1"]


@fault(".npy holding pickled objects", 1, "CS1_CTA_Binary.npy")
def _(ctx):
    return ["check", _npy(ctx, np.array([{"a": 1}] * 8, dtype=object).reshape(2, 2, 2)),
            "--spacing", "1", "1", "1"]


@fault(".npy cut short", 1, "CS1_CTA_Binary.npy")
def _(ctx):
    import io

    buf = io.BytesIO()
    np.save(buf, np.zeros((16, 16, 8), np.int16))
    return ["check", _npy(ctx, None, buf.getvalue()[:-500]), "--spacing", "1", "1", "1"]


# --- usage --------------------------------------------------------------------------------

@fault("check --spacing -1 0 1", 2, "spacing")
def _(ctx):
    return ["check", ctx.data(), "--spacing", "-1", "0", "1"]


@fault("preprocess --spacing 0 0 0", 2, "spacing")
def _(ctx):
    return ["preprocess", ctx.data(), ctx.tmp / "prep", "--spacing", "0", "0", "0"]


@fault("predict --threshold 2", 2, "--threshold")
def _(ctx):
    return predict(ctx, "--threshold", "2")


@fault("predict --threads -1", 2, "--threads must be >= 0", no_output("pred"))
def _(ctx):
    return predict(ctx, "--threads", "-1")


@fault("predict --num-parts 0", 2, "--num-parts must be >= 1")
def _(ctx):
    return predict(ctx, "--num-parts", "0")


@fault("synth --seed -1", 2, "--seed must be >= 0")
def _(ctx):
    return ["synth", ctx.tmp / "syn", "--cases", "1", "--seed", "-1"]


@fault("--replace-nonfinite nan", 2, "--replace-nonfinite")
def _(ctx):
    return predict(ctx, "--replace-nonfinite", "nan")


# --- run folders, checkpoints, model.json, configs -------------------------------------------

def _checkpoint(ctx, data: bytes | None = None, obj=None) -> list:
    run = ctx.run()
    p = run / "checkpoints" / "best.pt"
    if obj is not None:
        import torch

        torch.save(obj, p)
    else:
        p.write_bytes(data)
    return predict(ctx)


@fault("empty checkpoint", 1, "best.pt", no_output("pred"))
def _(ctx):
    return _checkpoint(ctx, b"")


@fault("garbage checkpoint", 1, "best.pt", no_output("pred"))
def _(ctx):
    return _checkpoint(ctx, os.urandom(5000))


@fault("truncated checkpoint", 1, "best.pt", no_output("pred"))
def _(ctx):
    p = ctx.run_src / "checkpoints" / "best.pt"
    return _checkpoint(ctx, p.read_bytes()[: p.stat().st_size // 2])


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


@fault("pickled code in a checkpoint is never run", 1, "best.pt",
       lambda c, r: not Path("PWNED_BY_CHECKPOINT").exists() or pytest.fail("payload ran"))
def _(ctx):
    import pickle

    return _checkpoint(ctx, pickle.dumps({"model": _Payload()}))


@fault("checkpoint without weights (a list)", 1, "best.pt")
def _(ctx):
    return _checkpoint(ctx, obj=[1, 2, 3])


@fault("checkpoint of another architecture", 1, "run")
def _(ctx):
    import torch

    return _checkpoint(ctx, obj={"model": {"w": torch.zeros(3)}})


@fault("checkpoint missing", 1, "best.pt")
def _(ctx):
    (ctx.run() / "checkpoints" / "best.pt").unlink()
    return predict(ctx)


@fault("model.json is a list", 1, "model.json")
def _(ctx):
    (ctx.run() / "model.json").write_text("[1, 2]")
    return predict(ctx)


@fault('model.json with slab "3"', 1, "model.json",
       lambda c, r: ("slab" in r.text) or pytest.fail(r.text))
def _(ctx):
    p = ctx.run() / "model.json"
    spec = json.loads(p.read_text())
    spec["slab"] = "3"
    p.write_text(json.dumps(spec))
    return predict(ctx)


@fault("model.json with windows of the wrong shape", 1, "model.json")
def _(ctx):
    p = ctx.run() / "model.json"
    spec = json.loads(p.read_text())
    spec["windows"] = {"cta": [700]}
    p.write_text(json.dumps(spec))
    return predict(ctx)


@fault("model.json not JSON", 1, "model.json")
def _(ctx):
    (ctx.run() / "model.json").write_bytes(b"\xff\xfe{")
    return predict(ctx)


@fault("run folder missing", 1, "no_run")
def _(ctx):
    return ["predict", ctx.tmp / "no_run", ctx.data(), ctx.tmp / "pred"]


@fault("predict input missing", 1, "no_input",
       lambda c, r: not (c.tmp / "pred").exists() or pytest.fail("empty OUT left behind"))
def _(ctx):
    return ["predict", ctx.run(), ctx.tmp / "no_input", ctx.tmp / "pred"]


def _train_config(ctx, content: bytes) -> list:
    p = ctx.tmp / "cfg.yaml"
    p.write_bytes(content)
    return ["train", ctx.data(), "--out", ctx.tmp / "run_new", "--config", p]


@fault("non-UTF-8 YAML config", 1, "cfg.yaml")
def _(ctx):
    return _train_config(ctx, "optim:\n  lr: 0.001 # réglé\n".encode("latin-1"))


@fault("!!python tag in YAML config", 1, "cfg.yaml",
       lambda c, r: not Path("PWNED_BY_YAML").exists() or pytest.fail("tag ran"))
def _(ctx):
    return _train_config(ctx, b"optim: !!python/object/apply:os.system ['touch PWNED_BY_YAML']\n")


@fault("YAML config that is a list", 1, "cfg.yaml")
def _(ctx):
    return _train_config(ctx, b"- 1\n- 2\n")


@fault("YAML config with a wrong type", 1, "cfg.yaml")
def _(ctx):
    return _train_config(ctx, b"optim:\n  lr: fast\n")


@fault("YAML config that does not parse", 1, "cfg.yaml")
def _(ctx):
    return _train_config(ctx, b"optim: [unclosed\n")


def _alias_bomb(key: str) -> bytes:
    """Nested YAML aliases that unfold into 10**9 list items (the "billion laughs")."""
    lines = [f"{key}:", '  - &l0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"  - &l{i} [{','.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    return ("\n".join(lines) + "\n").encode()


def _no_new_run(ctx, res) -> None:
    assert not (ctx.tmp / "run_new").exists(), "a run folder was started"


@fault("YAML alias bomb in a config (a billion list items)", 1, "cfg.yaml", _no_new_run)
def _(ctx):
    return _train_config(ctx, b"data:\n  views:\n" + _alias_bomb("  x").split(b"\n", 1)[1])


@fault("YAML alias bomb in a run's config.yaml: report", 1, "config.yaml",
       lambda c, r: not (c.tmp / "r.html").exists() or pytest.fail("report written"))
def _(ctx):
    run = ctx.tmp / "shared_run"
    shutil.copytree(ctx.run(), run)
    (run / "config.yaml").write_bytes(_alias_bomb("data"))
    return ["report", run, "--out", ctx.tmp / "r.html"]


@fault("missing config file", 1, "nope.yaml")
def _(ctx):
    return ["train", ctx.data(), "--out", ctx.tmp / "run_new", "--config", ctx.tmp / "nope.yaml"]


# --- outputs: existing files, folders, locks, full disks ------------------------------------

@fault("predict OUT is an existing file", 1, "pred")
def _(ctx):
    (ctx.tmp / "pred").write_text("not a folder")
    return predict(ctx)


@fault("predict OUT under a file", 1, "pred")
def _(ctx):
    (ctx.tmp / "pred").write_text("not a folder")
    return ["predict", ctx.run(), ctx.data(), ctx.tmp / "pred" / "sub", "--quiet"]


def _labels_kept(ctx, res) -> None:
    labels = ctx.tmp / "nn" / "Dataset501_Clot" / "labelsTr"
    kept = sorted(labels.glob("*.nii.gz"))
    assert kept, "no labels exported"
    for p in kept:  # each still the phantom's own mask, not a prediction
        source = ctx.data() / p.name.removesuffix(".nii.gz") / "clot.nii.gz"
        assert np.array_equal(read_volume(p).array, read_volume(source).array), p
    assert not (labels / "clots.csv").exists() and not (labels / "predict.json").exists()


@fault("predict into nnU-Net's labelsTr (reference masks are named like predictions)", 2,
       "holds input file", _labels_kept)
def _(ctx):
    from clotseg.cli import main

    assert main(["export-nnunet", str(ctx.data()), str(ctx.tmp / "nn"), "--id", "501"]) == 0
    root = ctx.tmp / "nn" / "Dataset501_Clot"
    return ["predict", ctx.run(), root, root / "labelsTr", "--quiet"]


@fault("predict OUT is the dataset itself", 2, "must not be the input",
       lambda c, r: not list(c.data().glob("*.nii.gz")) or pytest.fail(r.text))
def _(ctx):
    return ["predict", ctx.run(), ctx.data(), ctx.data(), "--quiet"]


def _unchanged(path_of):
    def after(ctx, res) -> None:
        path, before = path_of(ctx), ctx.tmp / "before"
        assert path.read_bytes() == before.read_bytes(), f"{path} replaced"
    return after


def _keep_copy(ctx, path: Path) -> Path:
    (ctx.tmp / "before").write_bytes(path.read_bytes())
    return path


def _dataset_notes(ctx) -> Path:
    notes = ctx.data() / "notes.csv"  # a file of the user's own, kept with the data
    notes.write_text("case_id,comment\nsynth_000,reviewed\n")
    return _keep_copy(ctx, notes)


@fault("evaluate --out a file of the dataset", 2, "a file of this command's inputs",
       _unchanged(lambda c: c.data() / "notes.csv"))
def _(ctx):
    notes = _dataset_notes(ctx)
    assert cli(*predict(ctx)).code == 0
    return ["evaluate", ctx.tmp / "pred", ctx.data(), "--out", notes]


@fault("evaluate --out a predicted mask", 2, "a file of this command's inputs")
def _(ctx):
    assert cli(*predict(ctx)).code == 0
    mask = sorted((ctx.tmp / "pred").glob("*.nii.gz"))[0]
    _keep_copy(ctx, mask)
    return ["evaluate", ctx.tmp / "pred", ctx.data(), "--out", mask]


@fault("report --out the run's model.json", 2, "a file of this command's inputs",
       _unchanged(lambda c: c.run() / "model.json"))
def _(ctx):
    spec = _keep_copy(ctx, ctx.run() / "model.json")
    return ["report", ctx.run(), "--out", spec]


@fault("measure --out a scan of the dataset", 2, "a file of this command's inputs",
       _unchanged(lambda c: c.case() / "cta.nii.gz"))
def _(ctx):
    assert cli(*predict(ctx)).code == 0
    cta = _keep_copy(ctx, ctx.case() / "cta.nii.gz")
    return ["measure", ctx.tmp / "pred", ctx.data(), "--out", cta]


@fault("check --csv a file of the dataset", 2, "a file of this command's inputs",
       _unchanged(lambda c: c.data() / "notes.csv"))
def _(ctx):
    return ["check", ctx.data(), "--csv", _dataset_notes(ctx)]


@fault("train --out is an existing file", 1, "run_new")
def _(ctx):
    (ctx.tmp / "run_new").write_text("x")
    return ["train", ctx.data(), "--out", ctx.tmp / "run_new", "--epochs", "1"]


def _no_run_files(folder_of):
    def after(ctx, res) -> None:
        folder = folder_of(ctx)
        left = [p.name for p in folder.iterdir() if p.name in (
            "config.yaml", "model.json", "train.json", "cache", "checkpoints")]
        assert not left, f"run files written into {folder}: {left}"
    return after


@fault("train --out is the dataset itself", 2, "must not be the training dataset",
       _no_run_files(lambda c: c.data()))
def _(ctx):
    return ["train", ctx.data(), "--out", ctx.data(), "--epochs", "1"]


@fault("train --out is a case folder of the dataset", 2, "holds no input file",
       _no_run_files(lambda c: c.case()))
def _(ctx):
    return ["train", ctx.data(), "--out", ctx.case(), "--epochs", "1"]


def _exported_the_good_case(ctx, res) -> None:
    ds = ctx.tmp / "nn" / "Dataset502_Clot"
    good = sorted(p.name for p in (ds / "labelsTr").iterdir())
    assert len(good) == 1 and good[0] != f"{ctx.case().name}.nii.gz", good
    assert not list(ds.rglob(f"{ctx.case().name}_*")), "files of the failed case left"


@fault("export-nnunet with one unreadable case among good ones", 1, "FAILED",
       _exported_the_good_case)
def _(ctx):
    ctx.data(2)
    (ctx.case() / "ncct.nii.gz").write_bytes(b"not a volume")
    return ["export-nnunet", ctx.data(), ctx.tmp / "nn", "--id", "502"]


@fault("preprocess OUT is an existing file", 1, "prep")
def _(ctx):
    (ctx.tmp / "prep").write_text("x")
    return ["preprocess", ctx.data(), ctx.tmp / "prep", "--no-progress"]


@fault("synth OUT is an existing file", 1, "syn")
def _(ctx):
    (ctx.tmp / "syn").write_text("x")
    return ["synth", ctx.tmp / "syn", "--cases", "1", "--no-progress"]


@fault("synth OUT is a dataset already (its truth.csv would be replaced)", 2, "not empty",
       _unchanged(lambda c: c.data() / "truth.csv"))
def _(ctx):
    (ctx.data() / "truth.csv").write_text("case_id,has_clot\nsynth_000,True\n")  # the user's
    _keep_copy(ctx, ctx.data() / "truth.csv")
    return ["synth", ctx.data(), "--cases", "1", "--no-progress"]


@fault("evaluate --out named .json: the summary would overwrite the table", 2,
       "would be overwritten", lambda c, r: not (c.tmp / "ev.json").exists()
       or pytest.fail("written"))
def _(ctx):
    cmd = _evaluate(ctx)
    cmd[-1] = ctx.tmp / "ev.json"
    return cmd


@fault("evaluate --out is a folder", 1, "evaldir")
def _(ctx):
    cmd = _evaluate(ctx)
    (ctx.tmp / "evaldir").mkdir()
    cmd[-1] = ctx.tmp / "evaldir"
    return cmd


@fault("check --csv is a folder", 1, "csvdir")
def _(ctx):
    (ctx.tmp / "csvdir").mkdir()
    return check(ctx, "--csv", ctx.tmp / "csvdir")


@fault("report --out is a folder", 1, "repdir")
def _(ctx):
    (ctx.tmp / "repdir").mkdir()
    return ["report", ctx.run(), "--out", ctx.tmp / "repdir"]


def _deny_writes(ctx, under: Path) -> None:
    """A read-only folder, as the writer sees it (permissions do not stop root)."""
    import errno
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*a, dir=None, **k):
        if dir is not None and Path(dir).resolve().is_relative_to(under.resolve()):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*a, dir=dir, **k)

    ctx.mp.setattr("clotseg.io.atomic.tempfile.mkstemp", mkstemp)


@fault("predict into a read-only folder", 1, "pred",
       lambda c, r: ("permission denied" in r.text) or pytest.fail(r.text))
def _(ctx):
    _deny_writes(ctx, ctx.tmp / "pred")
    return predict(ctx)


@fault("evaluate into a read-only folder", 1, "evalro",
       lambda c, r: ("permission denied" in r.text) or pytest.fail(r.text))
def _(ctx):
    cmd = _evaluate(ctx)
    (ctx.tmp / "evalro").mkdir()
    _deny_writes(ctx, ctx.tmp / "evalro")
    cmd[-1] = ctx.tmp / "evalro" / "eval.csv"
    return cmd


def _short_sitk_writes(ctx, which: str = "") -> None:
    """A full disk as SimpleITK meets it: the write 'succeeds' but the file is cut short
    (to half its length)."""
    import SimpleITK as sitk

    real = sitk.WriteImage

    def write(image, path, *a, **k):
        real(image, path, *a, **k)
        if which in Path(path).name:
            with open(path, "r+b") as fh:
                fh.truncate(Path(path).stat().st_size // 2)

    ctx.mp.setattr(sitk, "WriteImage", write)


def _full_disk_after(ctx, res):
    pred = ctx.tmp / "pred"
    intact(pred)
    assert "no space left" in res.text, res.text


@fault("disk full while writing the mask (silent short write)", 1, "nii.gz", _full_disk_after)
def _(ctx):
    _short_sitk_writes(ctx)
    return predict(ctx)


@fault("disk full while writing --save-prob", 1, "_prob.nii.gz",
       lambda c, r: (_full_disk_after(c, r),
                     not list((c.tmp / "pred").glob("*_prob.nii.gz")) or pytest.fail("prob")))
def _(ctx):
    _short_sitk_writes(ctx, "_prob")
    return predict(ctx, "--save-prob", "--preview")


def _fail_python_writes(ctx, name: str, after_bytes: int = 10) -> None:
    """A full disk for Python's own writes: the file object raises ENOSPC after N bytes."""
    import builtins
    import errno

    real_open = builtins.open

    class Limited:
        def __init__(self, fh):
            self.fh, self.n = fh, 0

        def write(self, data):
            self.n += len(data)
            if self.n > after_bytes:
                self.fh.write(data[: max(0, after_bytes - (self.n - len(data)))])
                raise OSError(errno.ENOSPC, "No space left on device", self.fh.name)
            return self.fh.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def limited_open(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        return Limited(fh) if "w" in mode and name in Path(path).name else fh

    ctx.mp.setattr("clotseg.io.atomic.open", limited_open, raising=False)


@fault("disk full while writing clots.csv keeps the earlier one", 1, "clots.csv",
       lambda c, r: ((c.tmp / "pred" / "clots.csv").read_text() == "earlier\n")
       or pytest.fail("clots.csv was replaced"))
def _(ctx):
    (ctx.tmp / "pred").mkdir()
    (ctx.tmp / "pred" / "clots.csv").write_text("earlier\n")
    _fail_python_writes(ctx, "clots.csv")
    return predict(ctx)


@fault("disk full while writing evaluation.csv", 1, "eval.csv",
       lambda c, r: not (c.tmp / "eval.csv").exists() or pytest.fail("half-written csv"))
def _(ctx):
    _fail_python_writes(ctx, "eval.csv")
    return _evaluate(ctx)


@fault("disk full while writing check --csv", 1, "problems.csv",
       lambda c, r: not (c.tmp / "problems.csv").exists() or pytest.fail("half-written csv"))
def _(ctx):
    (ctx.case() / "ncct.nii.gz").write_text("broken")
    _fail_python_writes(ctx, "problems.csv")
    return check(ctx, "--csv", ctx.tmp / "problems.csv")


def _lock(folder: Path, pid: int, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".clotseg.lock").write_text(json.dumps(
        {"command": "predict", "pid": pid, "host": host or socket.gethostname(),
         "started": "2026-01-01T00:00:00"}))


@fault("second predict into an OUT in use", 1, "in use",
       lambda c, r: (str(os.getppid()) in r.text and not list((c.tmp / "pred").glob("*.nii.gz")))
       or pytest.fail(r.text))
def _(ctx):
    _lock(ctx.tmp / "pred", os.getppid())  # a live process on this host
    return predict(ctx)


@fault("second train into a run folder in use", 1, "in use")
def _(ctx):
    _lock(ctx.tmp / "run_new", os.getppid())
    return ["train", ctx.data(), "--out", ctx.tmp / "run_new", "--epochs", "1"]


@fault("OUT locked from another host", 1, "other-host")
def _(ctx):
    _lock(ctx.tmp / "pred", 1, "other-host")
    return predict(ctx)


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@fault("stale lock of a killed run is taken over", 0, "pid",
       lambda c, r: (not (c.tmp / "pred" / ".clotseg.lock").exists(), intact(c.tmp / "pred")))
def _(ctx):
    _lock(ctx.tmp / "pred", _dead_pid())
    return predict(ctx)


def _two_runs_agree(ctx, res):
    pred = ctx.tmp / "pred"
    with (pred / "clots.csv").open(newline="") as fh:
        in_csv = {r["case_id"] for r in csv.DictReader(fh)}
    masks = {p.name[: -len(".nii.gz")] for p in pred.glob("*.nii.gz")}
    assert in_csv == masks and len(masks) == 2, (in_csv, masks)
    assert json.loads((pred / "predict.json").read_text())["kept_from_earlier_runs"]


@fault("two predict runs into one OUT with different inputs", 0, "segmented", _two_runs_agree)
def _(ctx):
    root = ctx.data(2)
    cases = sorted(root.iterdir())
    first = cli("predict", ctx.run(), cases[0], ctx.tmp / "pred", "--quiet")
    assert first.code == 0, first.text
    return ["predict", ctx.run(), cases[1], ctx.tmp / "pred", "--quiet"]


@fault("a mask changed by hand after predict is reported, not measured", 0,
       "not in clots.csv",
       lambda c, r: "p_hand" not in (c.tmp / "pred" / "clots.csv").read_text())
def _(ctx):
    root = ctx.data(2)
    cases = sorted(root.iterdir())
    pred = ctx.tmp / "pred"
    assert cli("predict", ctx.run(), cases[0], pred, "--quiet").code == 0
    write_volume(read_volume(cases[0] / "clot.nii.gz"), pred / "p_hand.nii.gz", mask=True)
    return ["predict", ctx.run(), cases[1], pred, "--quiet"]


# --- the table itself ---------------------------------------------------------------------

def test_the_table_covers_at_least_60_kinds():
    names = [f.name for f in FAULTS]
    assert len(names) == len(set(names))
    assert len(FAULTS) + len(EXTRA_KINDS) >= 60


#: Kinds tested by their own functions below (they need a child process).
EXTRA_KINDS = ["kill -9 during predict", "kill -9 during train",
               "--resume with an unreadable metrics.csv", "FIFO in a DICOM folder"]


@pytest.mark.parametrize("f", FAULTS, ids=[f.name for f in FAULTS])
def test_fault(f: Fault, ctx: Ctx):
    argv = f.make(ctx)
    res = cli(*argv)
    text = res.text
    assert "Traceback" not in text, text
    assert "internal error" not in text, text
    assert res.code == f.code, f"exit {res.code}, expected {f.code}:\n{text}"
    expected = f.names(ctx) if callable(f.names) else f.names
    assert expected in text, f"{expected!r} not named in:\n{text}"
    errors = [ln for ln in res.err.splitlines() if "error:" in ln]
    assert len(errors) <= 1, errors  # one line per error, not a cascade
    if f.after is not None:
        f.after(ctx, res)
    for out in ("pred", "prep", "run_new"):
        intact(ctx.tmp / out)
