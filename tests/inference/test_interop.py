"""Fitting other tools: mask formats (Slicer, DICOM-SEG), labelled masks, `measure` on any
masks, batch conventions (--continue, parts), exported models (zip, ONNX)."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile

import numpy as np
import pytest
import torch

from clotseg.cli import main
from clotseg.io.readers import read_volume
from clotseg.io.slicer import read_seg_nrrd
from tests.helpers import DIRECTIONS
from tests.inference.conftest import (
    case_volumes,
    paint_mask,
    tiny_net,
    write_case,
    write_dicom_series,
    write_run,
)

SHAPE = (16, 14, 10)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _cohort(root, n=3):
    painted = paint_mask(SHAPE)
    for i, d in enumerate(("oblique", "ras_flip", "permuted")[:n]):
        write_case(root / f"c{i}", *case_volumes(painted, DIRECTIONS[d], seed=i))
    return painted


def test_seg_nrrd_and_labelled_mask_match_clots_csv(tmp_path, paint_run, capsys):
    painted = _cohort(tmp_path / "data", 1)
    out = tmp_path / "out"
    assert main(["predict", str(paint_run), str(tmp_path / "data"), str(out), "--format",
                 "nii.gz", "seg.nrrd", "--labels"]) == 0
    assert "%|" not in capsys.readouterr().err  # no progress bar off a terminal
    labels = read_volume(out / "c0.nii.gz")
    assert set(np.unique(labels.array)) == {0, 1, 2}
    rows = _rows(out / "clots.csv")
    assert [r["component"] for r in rows] == ["1", "2"]
    for row in rows:  # component k of the mask is row k: same volume and centroid
        k = int(row["component"])
        voxels = np.argwhere(labels.array == k)
        assert len(voxels) * labels.voxel_volume == pytest.approx(float(row["volume_mm3"]),
                                                                  abs=1e-3)
        centre = labels.grid.index_to_physical(voxels.mean(0))[0]
        np.testing.assert_allclose(centre, [float(row[f"centroid_{a}_mm"]) for a in "xyz"],
                                   atol=1e-3)
    slicer = read_seg_nrrd(out / "c0.seg.nrrd")
    assert slicer.grid.same_as(labels.grid)
    np.testing.assert_array_equal(slicer.array, painted)
    raw = (out / "c0.seg.nrrd").read_bytes()
    assert b"Segment0_Name:=clot" in raw[: raw.index(b"\n\n")]


def test_dicom_cta_gets_a_dicom_seg_alongside_the_mask(tmp_path, paint_run):
    import pydicom

    pytest.importorskip("highdicom")
    painted = paint_mask(SHAPE)
    cta, ncct = case_volumes(painted, DIRECTIONS["ras_flip"])
    case = tmp_path / "PAT1"
    write_dicom_series(case / "cta", cta, "CTA head")
    write_dicom_series(case / "ncct", ncct, "NCCT head")
    out = tmp_path / "out"
    assert main(["predict", str(paint_run), str(case), str(out)]) == 0
    np.testing.assert_array_equal(read_volume(out / "PAT1.nii.gz").array, painted)
    seg = pydicom.dcmread(out / "PAT1.seg.dcm")
    assert seg.Modality == "SEG" and seg.SegmentSequence[0].SegmentLabel == "clot"
    frames = seg.pixel_array
    assert int(frames.sum()) == int(painted.sum())
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ipp = np.asarray([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
        k = int(round(float((ipp - np.asarray(cta.origin)) @ cta.direction_matrix[:, 2])
                      / cta.spacing[2]))
        np.testing.assert_array_equal(frames[f], painted[:, :, k].T)
    # Only NIfTI when asked for it; a DICOM-SEG of a NIfTI CTA is a clear per-case error.
    assert main(["predict", str(paint_run), str(case), str(tmp_path / "o2"), "--format",
                 "nii.gz"]) == 0
    assert not (tmp_path / "o2" / "PAT1.seg.dcm").exists()
    _cohort(tmp_path / "nifti", 1)
    assert main(["predict", str(paint_run), str(tmp_path / "nifti"), str(tmp_path / "o3"),
                 "--format", "dicom-seg"]) == 1
    failures = json.loads((tmp_path / "o3" / "predict.json").read_text())["failed"]
    assert "needs a CTA read from DICOM" in failures["c0"]


def test_parts_then_continue_merges_without_recomputing(tmp_path, paint_run):
    _cohort(tmp_path / "data", 3)
    data, out = str(tmp_path / "data"), tmp_path / "out"
    for part in ("0", "1"):
        assert main(["predict", str(paint_run), data, str(out), "--num-parts", "2",
                     "--part-id", part]) == 0
    p0 = json.loads((out / "predict.part0of2.json").read_text())["ok"]
    p1 = json.loads((out / "predict.part1of2.json").read_text())["ok"]
    assert p0 == ["c0", "c2"] and p1 == ["c1"]
    before = (out / "c1.nii.gz").stat().st_mtime_ns
    assert main(["predict", str(paint_run), data, str(out), "--continue"]) == 0
    summary = json.loads((out / "predict.json").read_text())
    assert summary["skipped"] == ["c0", "c1", "c2"]
    assert (out / "c1.nii.gz").stat().st_mtime_ns == before
    parts = _rows(out / "clots.part0of2.csv") + _rows(out / "clots.part1of2.csv")
    assert sorted(map(tuple, (r.values() for r in _rows(out / "clots.csv")))) == sorted(
        map(tuple, (r.values() for r in parts)))
    (out / "c2.nii.gz").unlink()  # incomplete: predicted again, the others kept
    assert main(["predict", str(paint_run), data, str(out), "--continue"]) == 0
    assert json.loads((out / "predict.json").read_text())["skipped"] == ["c0", "c1"]
    assert (out / "c2.nii.gz").is_file()
    assert main(["predict", str(paint_run), data, str(out), "--num-parts", "2",
                 "--part-id", "2"]) == 2


def test_measure_any_masks_gives_predicts_numbers(tmp_path, paint_run, capsys):
    _cohort(tmp_path / "data", 2)
    out = tmp_path / "out"
    assert main(["predict", str(paint_run), str(tmp_path / "data"), str(out), "--format",
                 "nii.gz", "seg.nrrd", "--labels"]) == 0
    predicted = _rows(out / "clots.csv")
    (tmp_path / "slicer").mkdir()
    for case in ("c0", "c1"):
        (out / f"{case}.seg.nrrd").rename(tmp_path / "slicer" / f"{case}.seg.nrrd")
    for masks in (out, tmp_path / "slicer"):
        csv_path = tmp_path / f"{masks.name}.csv"
        assert main(["measure", str(masks), str(tmp_path / "data"), "--out",
                     str(csv_path)]) == 0
        measured = _rows(csv_path)
        assert len(measured) == len(predicted) == 4
        for a, b in zip(predicted, measured):
            a, b = dict(a), dict(b)
            assert a.pop("max_prob") != "nan" and b.pop("max_prob") == "nan"
            # the QC score needs predict's probability map; measure leaves it NaN
            assert a.pop("qc_score") != "nan" and b.pop("qc_score") == "nan"
            assert a == b
    # A mask on another grid is a per-case error naming the file.
    bad = tmp_path / "bad"
    bad.mkdir()
    vol = read_volume(out / "c0.nii.gz")
    from clotseg.io.readers import write_volume
    from clotseg.io.volume import Volume

    write_volume(Volume(vol.array[:, :, :-1], vol.spacing, vol.origin, vol.direction),
                 bad / "c0.nii.gz", mask=True)
    assert main(["measure", str(bad), str(tmp_path / "data"), "--out",
                 str(tmp_path / "b.csv")]) == 1
    assert "c0.nii.gz: mask grid differs" in capsys.readouterr().err
    # A float mask with a NaN voxel is named for what it holds, not as a probability map.
    nan = np.asarray(vol.array, np.float32)
    nan.flat[0] = np.nan
    write_volume(Volume(nan, vol.spacing, vol.origin, vol.direction), bad / "c0.nii.gz")
    assert main(["measure", str(bad), str(tmp_path / "data"), "--out",
                 str(tmp_path / "b.csv")]) == 1
    assert "c0.nii.gz: mask contains NaN or infinite values" in capsys.readouterr().err


def _tiny_run(root, mirror: bool = False, kind: str = "plain"):
    if kind.startswith("volumetric"):  # the 3D network over 5-slice blocks, random weights
        torch.manual_seed(0)
        heads = {"deep_supervision": 2} if kind == "volumetric-heads" else {}
        return write_run(root, "monai-dynunet-3d", {"in_channels": 10, "base": 4, **heads},
                         slab=5)
    if not mirror:
        return write_run(root, "test-tiny", {"in_channels": 2}, state=tiny_net(2).state_dict())
    from clotseg.models.mirror import MirrorInput

    state = MirrorInput(tiny_net(4), 2).state_dict()  # model.mirror: the flip is in the graph
    return write_run(root, "test-tiny", {"in_channels": 2, "mirror": True}, state=state)


def test_model_zip_holds_no_case_data_and_predicts_like_the_run(tmp_path, paint_run):
    import yaml

    run = _tiny_run(tmp_path / "run")
    (run / "splits.json").write_text(json.dumps({"test": ["secret_patient_7"]}))
    (run / "cache").mkdir()
    (run / "cache" / "secret_patient_7.npy").write_bytes(b"x")
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"data": {"splits": "/data/secret_patient_7/splits.json", "cache_dir": "/c",
                  "slab": 1}, "train": {"epochs": 3}}))
    model = tmp_path / "share" / "model.zip"
    assert main(["export", str(run), str(model)]) == 0
    with zipfile.ZipFile(model) as zf:
        names = sorted(zf.namelist())
        blob = b"".join(zf.read(n) for n in names)
    assert names == ["checkpoints/best.pt", "checksums.json", "config.yaml", "model.json"]
    assert b"secret_patient_7" not in blob and b"train" in blob
    _cohort(tmp_path / "data", 1)
    for source, out in ((run, "o_run"), (model, "o_zip")):
        assert main(["predict", str(source), str(tmp_path / "data"), str(tmp_path / out),
                     "--threshold", "0.5"]) == 0
    np.testing.assert_array_equal(read_volume(tmp_path / "o_run" / "c0.nii.gz").array,
                                  read_volume(tmp_path / "o_zip" / "c0.nii.gz").array)


def _rezip(src, dst, change):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            changed = change(item.filename, zin.read(item.filename))
            if changed is not None:
                zout.writestr(*changed)


@pytest.mark.parametrize("attack,message", [
    ("tamper", "checksum of checkpoints/best.pt does not match"),
    ("slip", "refusing to unpack"),
    ("missing", "model.json missing"),
    ("bomb", "refusing to unpack"),
])
def test_damaged_or_malicious_zip_is_refused(tmp_path, capsys, monkeypatch, attack, message):
    import clotseg.model_export as model_export

    run = _tiny_run(tmp_path / "run")
    good = tmp_path / "good.zip"
    assert main(["export", str(run), str(good)]) == 0

    def change(name, data):
        if attack == "tamper" and name.endswith(".pt"):
            return name, data[:-8] + b"\0" * 8
        if attack == "slip" and name == "config.yaml":
            return "../../escaped.yaml", data
        if attack == "missing" and name == "model.json":
            return None
        if attack == "bomb" and name == "config.yaml":  # zeros deflate ~1000:1
            return name, data + b"\0" * (4 << 20)
        return name, data

    bad = tmp_path / "in" / "bad.zip"
    bad.parent.mkdir()
    _rezip(good, bad, change)
    if attack == "bomb":  # the same rule at a size a test can afford
        assert bad.stat().st_size < 1 << 20
        monkeypatch.setattr(model_export, "MAX_UNPACKED_BYTES", 2 << 20)
    _cohort(tmp_path / "data", 1)
    assert main(["predict", str(bad), str(tmp_path / "data"), str(tmp_path / "o")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "escaped.yaml").exists()


@pytest.mark.parametrize("kind", ["plain", "mirror", "volumetric", "volumetric-heads"])
def test_onnx_engine_matches_torch_on_the_phantom(tmp_path, phantom_cohort, kind):
    pytest.importorskip("onnxruntime")
    from clotseg.inference.predictor import Predictor
    from clotseg.io.layouts import discover
    from clotseg.metrics.overlap import dice

    run = _tiny_run(tmp_path / "run", kind == "mirror", kind)
    onnx_file = tmp_path / "model.onnx"
    assert main(["export", str(run), "--onnx", str(onnx_file)]) == 0
    case = discover(phantom_cohort).cases[0]
    vols = case.load()
    probs = {}
    for engine, source in (("torch", run), ("onnx", onnx_file), ("onnx", run)):
        predictor = Predictor.from_runs(source, device="cpu", engine=engine, tta=True)
        probs[(engine, source.name)] = predictor.probability(vols.cta, vols.ncct)[0]
    ref = probs[("torch", "run")]
    # Thresholds across the network's output, so that the masks are not trivial.
    for q in (0.5, 0.9, 0.99):
        threshold = float(np.quantile(ref[ref > 0], q))
        for key, prob in probs.items():
            assert dice(prob >= threshold, ref >= threshold) >= 0.999, (key, q)
            assert np.abs(prob - ref).max() < 1e-4
    # The command line takes the .onnx file as the model.
    threshold = float(np.quantile(ref, 0.9995))
    out = tmp_path / "out"
    assert main(["predict", str(onnx_file), str(case.cta.parent), str(out), "--threshold",
                 f"{threshold:.6f}", "--tta", "--all-components"]) == 0
    mask = read_volume(out / f"{case.case_id}.nii.gz").array
    # Equal wherever the probability is clear of the threshold by more than the engines'
    # tolerance above (an untrained network puts many voxels within a hair of it).
    clear = np.abs(ref - threshold) > 1e-4
    assert np.array_equal((mask > 0)[clear], (ref >= threshold)[clear]) and mask.sum() > 50
    summary = json.loads((out / "predict.json").read_text())
    assert summary["runs"] == [str(onnx_file)]


def test_no_side_is_named_for_scans_that_do_not_say_how_they_lie(tmp_path, phantom_cohort):
    """A header without orientation (no qform, no sform) gives the array axes as the
    patient's: left and right would be a guess, so clots.csv and cases.csv leave the side
    (and the contralateral density) empty; the same case with its header keeps them."""
    import nibabel as nib

    from tests.inference.conftest import write_run

    # The stub network marks everything brighter than ~220 HU on the CTA: the arteries of
    # both sides (and bone), so components lie left and right of the midline.
    run = write_run(tmp_path / "run", "test-paint", {"in_channels": 2}, threshold=0.5,
                    min_component_mm3=20.0)
    case = sorted(p for p in phantom_cohort.iterdir() if p.is_dir())[0]
    sides = {}
    for name in ("kept", "stripped"):
        data = tmp_path / name
        shutil.copytree(case, data / case.name)
        if name == "stripped":
            for f in data.rglob("*.nii.gz"):
                img = nib.load(str(f))
                img.set_qform(None, code=0)
                img.set_sform(None, code=0)
                nib.save(img, str(f))
        out = tmp_path / f"out_{name}"
        assert main(["predict", str(run), str(data), str(out), "--quiet", "--all-components",
                     "--device", "cpu"]) == 0
        clots = _rows(out / "clots.csv")
        sides[name] = [r["side"] for r in clots] + [_rows(out / "cases.csv")[0]["side"]]
        sides[name + "_contra"] = [r["contralateral_ncct_mean_hu"] for r in clots]
        measured = tmp_path / f"measured_{name}.csv"
        assert main(["measure", str(out), str(data), "--out", str(measured)]) == 0
        sides[name + "_measure"] = [r["side"] for r in _rows(measured)]
    named = [s for s in sides["kept"] if s]
    assert len(named) >= 2 and set(named) <= {"left", "right", "midline"}, sides
    assert sides["stripped"] == [""] * len(sides["kept"])
    assert all(v == "nan" for v in sides["stripped_contra"])
    assert sides["kept_measure"] == sides["kept"][:-1]
    assert sides["stripped_measure"] == [""] * len(sides["kept_measure"])
