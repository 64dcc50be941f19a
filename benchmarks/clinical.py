"""The real-size part of ``predict_latency.py`` (``--sizes clinical``): one whole-head
phantom case, ``clotseg predict`` stage by stage against a plain baseline, each in a fresh
process so that its peak resident memory is its own. See predict_latency.py's docstring."""

from __future__ import annotations

import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

#: The default model of ``clotseg train`` (configs/default.yaml).
DEFAULT_MODEL = {"name": "unet-original", "kwargs": {"in_channels": 6, "base": 16}, "slab": 3}
#: Stages of the ``predict`` path, in order (names from clotseg.timing and predict_case).
STAGES = ["read", "roi", "register", "resample", "normalise", "infer", "support", "restore",
          "postprocess", "ncct_on_cta", "write", "measure"]


def trained_preprocessing(folder: Path) -> tuple:
    """``model.json``'s ``preprocess`` as the default workflow leaves it, resolved by
    ``clotseg train``'s own code (:func:`clotseg.data.spacing.model_preprocessing`) on a
    small standard-phantom cohort written by ``clotseg synth --unregistered`` and
    ``clotseg preprocess`` with their defaults: ``clotseg preprocess RAW PREP && clotseg
    train PREP`` (registration and ROI included, the path of a real CTA + NCCT pair).
    Returns (those settings, a record for the JSON that also says what ``clotseg train
    RAW`` without preprocessing would store)."""
    from clotseg.cli import main
    from clotseg.config import Config
    from clotseg.data.spacing import model_preprocessing
    from clotseg.io.layouts import discover

    raw, prep = folder / "raw", folder / "prep"
    for argv in (["synth", str(raw), "--cases", "1", "--unregistered", "--quiet"],
                 ["preprocess", str(raw), str(prep), "--quiet"]):
        if main(argv) != 0:
            raise RuntimeError(f"clotseg {' '.join(argv)} failed")
    target = Config().data.target_spacing
    used, _ = model_preprocessing(prep, target, discover(prep).cases)
    if used is None:
        raise RuntimeError("a preprocessed dataset must give its settings to the model")
    # Without preprocessing, train would resample to the cohort's median spacing: that of
    # synth's default cohort (its first 20 cases' grids; drawn, not rendered).
    from clotseg.data.spacing import patient_spacing
    from clotseg.synth import case_seed
    from clotseg.synth.phantom import plan_case

    median = np.median([patient_spacing(plan_case(case_seed(0, k), "small").grid)
                        for k in range(20)], axis=0)
    from_raw = {"register": False, "spacing": [round(float(v), 2) for v in median],
                "roi": "none"}
    return used, {
        "workflow": "clotseg preprocess RAW PREP && clotseg train PREP (defaults)",
        "model_json_preprocess": used.to_dict(),
        "data_target_spacing": target,
        "note": "train stores the preprocessed dataset's settings, with data.target_spacing "
                "(the median spacing of its cases) when preprocess kept each scan's own",
        "train_on_raw_would_store": from_raw}


def default_run(folder: Path, preprocess) -> Path:
    """A run folder as ``clotseg train`` leaves it after training the default model, with
    ``preprocess`` (:func:`trained_preprocessing`) in its ``model.json`` (weights
    untrained: timing only)."""
    import torch

    from clotseg.models import create_model
    from clotseg.runs import ModelSpec, save_model_spec

    torch.manual_seed(0)
    model = create_model(DEFAULT_MODEL["name"], **DEFAULT_MODEL["kwargs"])
    save_model_spec(folder, ModelSpec(DEFAULT_MODEL["name"], DEFAULT_MODEL["kwargs"],
                                      slab=DEFAULT_MODEL["slab"], preprocess=preprocess))
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "model_name": DEFAULT_MODEL["name"],
                "model_kwargs": DEFAULT_MODEL["kwargs"], "epoch": 0},
               folder / "checkpoints" / "best.pt")
    return folder


def write_case(folder: Path, seed: int) -> dict:
    """One clinical-size case as ``clotseg synth --size clinical`` writes it."""
    from clotseg.io.readers import write_volume
    from clotseg.synth import make_case

    t0 = time.perf_counter()
    case = make_case(seed, "clinical", registered=False, clot=True)
    synth = time.perf_counter() - t0
    folder.mkdir(parents=True, exist_ok=True)
    write_volume(case.cta, folder / "cta.nii.gz")
    write_volume(case.ncct, folder / "ncct.nii.gz")
    write_volume(case.clot, folder.parent / "truth_clot.nii.gz", mask=True)
    return {"cta_shape": list(case.cta.shape), "cta_spacing": list(case.cta.spacing),
            "ncct_shape": list(case.ncct.shape), "ncct_spacing": list(case.ncct.spacing),
            "cta_voxels": int(np.prod(case.cta.shape)), "synth_seconds": round(synth, 2),
            "truth_voxels": int(np.count_nonzero(case.clot.array)),
            "true_motion": {k: case.truth["ncct_motion"][k]
                            for k in ("angle_deg", "translation_mm", "cta_to_ncct")}}


def registration_error(case_dir: str, cta_to_ncct) -> dict:
    """The registration ``predict`` runs (deterministic: same transform), against the
    case's true motion: distances (mm) between where the estimated and the true
    CTA-to-NCCT maps send the 8 corners of a box halfway into the CTA."""
    from clotseg.io.readers import read_volume
    from clotseg.preprocess.register import register_rigid

    cta = read_volume(Path(case_dir) / "cta.nii.gz")
    ncct = read_volume(Path(case_dir) / "ncct.nii.gz")
    c0, t0 = time.process_time(), time.perf_counter()
    res = register_rigid(cta, ncct, warn=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    shape = np.asarray(cta.shape) - 1
    corners = np.array([[a, b, c] for a in (0.25, 0.75) for b in (0.25, 0.75)
                        for c in (0.25, 0.75)]) * shape
    pts = cta.grid.index_to_physical(corners)
    m = np.asarray(cta_to_ncct, float)
    truth = pts @ m[:3, :3].T + m[:3, 3]
    est = np.array([res.transform.TransformPoint(p.tolist()) for p in pts])
    err = np.linalg.norm(est - truth, axis=1)
    return {"landmark_error_mm_mean": round(float(err.mean()), 3),
            "landmark_error_mm_max": round(float(err.max()), 3),
            "true_motion_at_landmarks_mm_mean": round(float(
                np.linalg.norm(pts - truth, axis=1).mean()), 3),
            "alignment_ok": bool(res.alignment_ok), "message": res.message,
            "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2)}


def _peak_rss_gb() -> float:
    """This process's peak resident memory (GiB): VmHWM, which, unlike ru_maxrss, is not
    inherited from the parent through fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def optimised(run: str, case_dir: str, out: str, device: str, threads: int) -> dict:
    """``clotseg predict`` on the case (files in, mask + clots.csv out), in this process."""
    from clotseg.api import predict_cases
    from clotseg.inference.predictor import Predictor
    from clotseg.io.layouts import discover

    _threads(threads)
    predictor = Predictor.from_runs(run, device=device)
    cases = discover(case_dir).cases
    rss_before = _peak_rss_gb()
    c0, t0 = time.process_time(), time.perf_counter()
    res = predict_cases(predictor, cases, Path(out), progress=False)[0]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if not res.ok:
        raise RuntimeError(f"prediction failed: {res.error}")
    stages = {**{k: v for k, v in res.seconds.items() if k not in ("predict", "total")},
              **res.stages}
    return {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "stages": {k: round(stages[k], 2) for k in STAGES if k in stages},
            "stages_cpu": {k: round(res.stages_cpu[k], 2) for k in STAGES
                           if k in res.stages_cpu},
            "predict_step_other": round(res.seconds["predict"] - sum(res.stages.values()), 2),
            "peak_rss_gb": round(_peak_rss_gb(), 3),
            "peak_rss_gb_model_loaded": round(rss_before, 3),
            "mask_voxels": int(np.count_nonzero(_read(res.mask_path))),
            "clot_rows": len(res.rows)}


def _read(path) -> np.ndarray:
    from clotseg.io.readers import read_volume

    return np.asarray(read_volume(path).array)


def baseline(run: str, case_dir: str, out: str, device: str, threads: int,
             n_slices: int) -> dict:
    """The plain path: whole volume, NCCT resampled onto the CTA grid as it lies (no ROI,
    no registration), fp32 eager network one slice at a time. The network is timed on
    ``n_slices`` evenly spread slices and scaled to all of them."""
    import torch

    from clotseg.data.slabs import pad_to_multiple, prepare_case, slab
    from clotseg.inference.postprocess import postprocess
    from clotseg.inference.predictor import ncct_on_cta_grid
    from clotseg.io.readers import read_volume, write_volume
    from clotseg.io.volume import Volume
    from clotseg.measure.clots import measure_case
    from clotseg.runs import load_model

    _threads(threads)
    model, spec = load_model(run, device=device)
    st: dict[str, float] = {}
    t0 = time.perf_counter()
    cta = read_volume(Path(case_dir) / "cta.nii.gz")
    ncct = read_volume(Path(case_dir) / "ncct.nii.gz")
    st["read"] = time.perf_counter() - t0
    t = time.perf_counter()
    ncct = ncct_on_cta_grid(cta, ncct)
    st["ncct_on_cta"] = time.perf_counter() - t
    t = time.perf_counter()
    prep = prepare_case("case", cta, ncct, None, {k: tuple(v) for k, v in spec.windows.items()})
    st["normalise"] = time.perf_counter() - t
    depth = prep.image.shape[-1]
    zs = np.unique(np.linspace(0, depth - 1, max(1, min(n_slices, depth))).round().astype(int))
    prob = np.zeros(prep.image.shape[1:], np.float32)
    t = time.perf_counter()
    with torch.no_grad():
        for z in zs:
            x, crop = pad_to_multiple(slab(prep.image, int(z), spec.slab), spec.pad_multiple)
            y = torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(x))[None].to(device)))
            prob[:, :, z] = y[0, 0].cpu().numpy()[crop]
    per_slice = (time.perf_counter() - t) / len(zs)
    st["infer"] = per_slice * depth
    t = time.perf_counter()
    prob = prep.orientation.from_canonical(prob)
    del prep
    mask = postprocess(prob, cta.spacing, threshold=spec.threshold,
                       min_component_mm3=spec.min_component_mm3)
    st["postprocess"] = time.perf_counter() - t
    t = time.perf_counter()
    write_volume(Volume.on_grid(mask, cta.grid), Path(out) / "case.nii.gz", mask=True)
    st["write"] = time.perf_counter() - t
    t = time.perf_counter()
    measure_case("case", Volume.on_grid(mask, cta.grid), cta, ncct, prob)
    st["measure"] = time.perf_counter() - t
    measured = time.perf_counter() - t0  # with the network on the timed slices only
    return {"seconds": round(measured - per_slice * len(zs) + st["infer"], 2),
            "stages": {k: round(v, 2) for k, v in st.items()},
            "infer_seconds_per_slice": round(per_slice, 3), "slices": int(depth),
            "infer_timed_on_slices": len(zs), "infer_extrapolated": True,
            "peak_rss_gb": round(_peak_rss_gb(), 3)}


def nnunet(model_dir: str | None, case_dir: str, out: str, threads: int) -> dict:
    """nnU-Net v2 prediction of the case (a trained model folder is needed)."""
    try:
        import nnunetv2  # noqa: F401
    except ImportError:
        return {"skipped": "nnunetv2 is not installed (pip install nnunetv2)"}
    if not model_dir:
        return {"skipped": "nnunetv2 is installed, but no trained nnU-Net v2 2d model folder "
                           "was given (--nnunet-model); an untrained one cannot be built "
                           "without running its planning on a dataset"}
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from clotseg.inference.predictor import ncct_on_cta_grid
    from clotseg.io.readers import read_volume, write_volume

    _threads(threads)
    src = Path(out) / "nnunet_in"
    src.mkdir(parents=True, exist_ok=True)
    cta = read_volume(Path(case_dir) / "cta.nii.gz")
    write_volume(cta, src / "case_0000.nii.gz")  # nnU-Net needs both channels on one grid
    write_volume(ncct_on_cta_grid(cta, read_volume(Path(case_dir) / "ncct.nii.gz")),
                 src / "case_0001.nii.gz")
    del cta
    if Path(model_dir, "fold_0", "budget.json").is_file():  # trained by peer_nnunet.py
        import nnunet_budget  # its trainer class, which nnU-Net's own search cannot find
        from nnunetv2.inference import predict_from_raw_data

        predict_from_raw_data.recursive_find_trainer_class_by_name = nnunet_budget.find_trainer
    predictor = nnUNetPredictor(device=torch.device("cpu"), use_mirroring=True)
    predictor.initialize_from_trained_model_folder(model_dir, use_folds=(0,),
                                                   checkpoint_name="checkpoint_final.pth")
    c0, t0 = time.process_time(), time.perf_counter()
    predictor.predict_from_files(str(src), str(Path(out) / "nnunet_out"),
                                 num_processes_preprocessing=1,
                                 num_processes_segmentation_export=1)
    return {"seconds": round(time.perf_counter() - t0, 2),
            "cpu_seconds": round(time.process_time() - c0, 2), "tta": "mirroring",
            "peak_rss_gb": round(_peak_rss_gb(), 3)}


def _in_fresh_process(fn, *args, timeout: float | None = None):
    """``fn(*args)`` in a fresh process (its own peak memory); past ``timeout`` seconds the
    process is killed and TimeoutError raised."""
    pool = ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"))
    try:
        return pool.submit(fn, *args).result(timeout=timeout)
    except TimeoutError:
        for proc in list(getattr(pool, "_processes", {}).values()):  # no public kill
            proc.kill()
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def measure_clinical(tmp: Path, args, device: str) -> dict:
    """Everything above for one case; the result block of the JSON."""
    threads = args.threads or len(os.sched_getaffinity(0))
    preprocess, how = trained_preprocessing(tmp / "train_data")
    case_dir, run = tmp / "case", default_run(tmp / "run", preprocess)
    row: dict = {"case": write_case(case_dir, args.seed), "model": DEFAULT_MODEL,
                 "preprocess": how, "threads": threads,
                 "load_average_before": list(os.getloadavg())}
    for name in ("optimised", "baseline"):
        (tmp / name).mkdir(parents=True, exist_ok=True)
    row["optimised"] = _in_fresh_process(optimised, str(run), str(case_dir),
                                         str(tmp / "optimised"), device, threads)
    if not args.no_baseline:
        row["baseline"] = _in_fresh_process(baseline, str(run), str(case_dir),
                                            str(tmp / "baseline"), device, threads,
                                            args.baseline_slices)
        row["speedup"] = round(row["baseline"]["seconds"] / row["optimised"]["seconds"], 2)
    row["registration"] = _in_fresh_process(registration_error, str(case_dir),
                                            row["case"]["true_motion"]["cta_to_ncct"])
    try:
        row["nnunet_v2_2d"] = _in_fresh_process(nnunet, args.nnunet_model, str(case_dir),
                                                str(tmp / "optimised"), threads,
                                                timeout=args.nnunet_timeout)
    except TimeoutError:
        row["nnunet_v2_2d"] = {"timed_out_after_s": args.nnunet_timeout, "tta": "mirroring"}
    row["load_average_after"] = list(os.getloadavg())
    o = row["optimised"]
    row["targets"] = {"end_to_end_s": 60, "end_to_end_met": o["seconds"] <= 60,
                      "peak_rss_gb": 4, "peak_rss_met": o["peak_rss_gb"] <= 4}
    return row
