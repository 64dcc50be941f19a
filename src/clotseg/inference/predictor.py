"""Predicting clot masks for cases, always on exactly the CTA's grid (the NCCT's for a
case that has only an NCCT).

A one-modality case (only a CTA or only an NCCT) is predicted with the absent scan's
input channels set to :data:`clotseg.data.slabs.MISSING_VALUE`, what modality dropout
(``train.modality_dropout``) trained the network on; the present scan's grid is the
reference grid and nothing is registered. It always comes with a warning, and a second
one when a model was trained without modality dropout (it never saw a missing scan).

:class:`Predictor` segments one case in memory: a mask, a probability and the NCCT on the
CTA grid (what measurements and previews use). Running it over a dataset, with the
measurements, previews and tables, is :func:`clotseg.api.predict_cases`; reading a case
and writing its masks with the geometry checked is :mod:`clotseg.inference.cases` and
:mod:`clotseg.inference.outputs` (their names are re-exported here for existing imports).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clotseg.devices import device_name as resolve_device  # one rule for train and predict
from clotseg.errors import ClotsegError
from clotseg.inference.cases import CaseResult, load_case, ncct_on_cta_grid
from clotseg.inference.engine import cpu_has_native_bf16, resolve_precision
from clotseg.inference.ensemble import (
    EnsembleOutput,
    InferenceOptions,
    Member,
    ensemble_probability,
    load_member,
)
from clotseg.inference.outputs import MASK_SUFFIX
from clotseg.inference.postprocess import postprocess
from clotseg.inference.qc import DISAGREEMENT_FLAG, QcSettings
from clotseg.inference.support import Support
from clotseg.io.ongrid import check_grid, cta_grid_on_disk, file_grid, write_on_grid
from clotseg.io.volume import Volume
from clotseg.masks import (
    FRAGMENT_GAP_MM,
    bounding_box,
    grow_into,
    keep_confirmed,
    keep_primary,
    keep_primary_grown,
)
from clotseg.preprocess.contrast import swap_note
from clotseg.timing import stage

__all__ = ["MASK_SUFFIX", "CaseResult", "Predictor", "Segmentation", "available_cpus",
           "check_grid", "cta_grid_on_disk", "file_grid", "load_case", "missing_modality",
           "ncct_on_cta_grid", "resolve_device", "with_stand_in", "write_on_grid"]


def missing_modality(cta: Volume | None, ncct: Volume | None, case_id: str = "case"
                     ) -> str | None:
    """``"cta"`` or ``"ncct"``: the scan a one-modality case lacks; None with both.

    Args:
        cta, ncct: the case's scans, either (not both) None.
        case_id: named in the error when both are None.

    Examples:
        >>> missing_modality(None, Volume(np.zeros((2, 2, 2)), (1.0, 1.0, 1.0)))
        'cta'
    """
    if cta is None and ncct is None:
        raise ClotsegError(f"case {case_id}: neither a CTA nor an NCCT to predict from")
    return "cta" if cta is None else "ncct" if ncct is None else None


def with_stand_in(cta: Volume | None, ncct: Volume | None, missing: str
                  ) -> tuple[Volume, Volume]:
    """``(cta, ncct)`` with the ``missing`` one replaced by a stand-in on the present
    scan's grid: air everywhere, a zero-stride array (no memory), whose values the
    network input never reads (:func:`clotseg.data.slabs.prepare_case` with ``missing``).

    Args:
        cta, ncct: the case's scans, the ``missing`` one None.
        missing: ``"cta"`` or ``"ncct"``.

    Examples:
        >>> v = Volume(np.zeros((2, 3, 4), np.int16), (1.0, 1.0, 1.0))
        >>> with_stand_in(v, None, "ncct")[1].shape
        (2, 3, 4)
    """
    from clotseg.preprocess.ncct import AIR_HU

    present = ncct if missing == "cta" else cta
    stand_in = present.with_array(np.broadcast_to(np.int16(AIR_HU), present.shape))
    return (stand_in, ncct) if missing == "cta" else (cta, stand_in)


def available_cpus() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass
class Segmentation:
    """The result for one case, all on the reference grid (the CTA's; the NCCT's for a
    case without a CTA)."""

    mask: Volume  # uint8
    prob: np.ndarray  # float32, same shape as the reference array
    ncct: Volume | None  # the NCCT on the reference grid (measurements, previews); None: no NCCT
    dropped: list[dict] = field(default_factory=list)  # components the primary-clot rule removed
    qc_score: float = float("nan")  # review score of the case (clotseg.inference.qc)
    qc_signals: dict = field(default_factory=dict)  # what the score is made of
    component_qc: list[float] = field(default_factory=list)  # per clots.csv component k - 1
    review: bool = False  # qc_score reached the flag threshold
    inputs: tuple[str, ...] = ("cta", "ncct")  # the scans the prediction used
    # Probability from each scan alone near what was found (clotseg.inference.support);
    # None for a one-modality case, a model trained without modality dropout, or when off.
    support: Support | None = None
    # The clot the confirming run(s) found on their own (bool, same shape as prob): the
    # second opinion the QC score's ``disagreement`` reads; None without confirming runs.
    second_clot: np.ndarray | None = None


@dataclass
class Predictor:
    """Trained run(s) plus inference and post-processing settings.

    Post-processing defaults (threshold, minimum clot volume) come from the first run's
    ``model.json``; fold runs of one training share them. By default only the primary
    clot and its fragments are kept (:func:`clotseg.masks.keep_primary`); what that drops
    is returned in :attr:`Segmentation.dropped`. What is kept then grows into the touching
    voxels of at least the run's ``grow_threshold`` (:func:`clotseg.masks.grow_into`).

    With :attr:`confirmers` (other runs, averaged among themselves), a component is kept
    only where their probability reaches :attr:`confirm_threshold` in one of its voxels
    (:func:`clotseg.masks.keep_confirmed`), before the false-positive filter and the
    primary-clot rule; the components dropped so are listed with ``reason: unconfirmed``.
    The kept clot then grows only into voxels where both its own and the confirming
    probability reach the grow threshold: a briefly trained 3D network's fringe between
    0.5 and its threshold is wide and noisy, and what the other network also marks there
    is the part worth adding.
    """

    members: list[Member]
    options: InferenceOptions = field(default_factory=InferenceOptions)
    threshold: float | None = None  # None: the (first) run's own
    min_component_mm3: float | None = None  # None: the (first) run's own
    keep_largest: bool = False
    num_threads: int | None = None  # CPU threads for torch; None leaves torch's setting
    use_filter: bool = True  # apply the run's learned false-positive filter, if it has one
    primary_only: bool = True  # keep the primary clot and its fragments (clotseg.masks)
    scan_support: bool = False  # ask each scan alone about what was found (QC signal)
    confirmers: list[Member] = field(default_factory=list)  # second opinion (class doc)
    confirm_threshold: float | None = None  # None: the first confirming run's threshold

    @classmethod
    def from_runs(cls, runs, *, device: str = "auto", precision: str = "auto",
                  tta: bool = False, batch_size: int = 16, skip_empty: bool = True,
                  engine: str = "torch", confirm=(), **settings) -> Predictor:
        """Load run folder(s) (several = fold ensemble, probabilities averaged), exported
        ``model.zip`` or ``model.onnx`` files.

        ``engine``: ``torch`` or ``onnx`` (onnxruntime, CPU). ``confirm``: run(s) whose
        averaged probability must confirm each component (class docstring). ``settings``:
        ``threshold``, ``min_component_mm3``, ``keep_largest``, ``num_threads``,
        ``use_filter``, ``primary_only``, ``scan_support``, ``confirm_threshold``.
        """
        runs = [runs] if isinstance(runs, (str, Path)) else list(runs)
        if not runs:
            raise ClotsegError("no run folder given")
        if batch_size < 1:
            raise ClotsegError(f"batch size must be at least 1, got {batch_size}")
        device = resolve_device(device)
        try:
            resolve_precision(device, precision)  # validates the name early
        except ValueError as exc:
            raise ClotsegError(str(exc)) from None
        if precision == "bf16" and device == "cpu" and not cpu_has_native_bf16():
            warnings.warn("this CPU has no bf16 matrix units: bf16 is emulated and slower "
                          "than fp32 here", UserWarning, stacklevel=2)
        if engine not in ("torch", "onnx"):
            raise ClotsegError(f"unknown engine {engine!r} (use torch or onnx)")
        members = [load_member(r, device, engine=engine,
                               num_threads=settings.get("num_threads")) for r in runs]
        confirm = [confirm] if isinstance(confirm, (str, Path)) else list(confirm or ())
        confirmers = [load_member(r, device, engine=engine,
                                  num_threads=settings.get("num_threads")) for r in confirm]
        t = settings.get("confirm_threshold")
        if t is not None and not 0.0 < t <= 1.0:
            raise ClotsegError(f"confirm threshold must be in (0, 1], got {t}")
        opts = InferenceOptions(device, precision, tta, batch_size, skip_empty)
        return cls(members, opts, confirmers=confirmers, **settings)

    @property
    def post(self) -> dict:
        """Post-processing actually applied (the first run's defaults filled in)."""
        spec = self.members[0].spec
        return {"threshold": spec.threshold if self.threshold is None else self.threshold,
                "min_component_mm3": (spec.min_component_mm3 if self.min_component_mm3 is None
                                      else self.min_component_mm3),
                "keep_largest": self.keep_largest,
                "component_filter": bool(self.use_filter and spec.component_filter),
                "scan_support": bool(self.scan_support and all(
                    m.spec.trained_for_missing for m in self.members)),
                "grow_threshold": float(spec.grow_threshold or 0.0),
                "primary_clot_only": self.primary_only, "fragment_gap_mm": FRAGMENT_GAP_MM,
                **({"confirm_threshold": self._confirm_threshold} if self.confirmers else {})}

    @property
    def _confirm_threshold(self) -> float:
        return float(self.confirmers[0].spec.threshold if self.confirm_threshold is None
                     else self.confirm_threshold)

    def describe(self) -> dict:
        """What ``predict.json`` records about the models and settings."""
        import torch

        o = self.options
        confirm = ({"confirm_runs": [str(m.run) for m in self.confirmers],
                    "confirm_models": [m.spec.model_name for m in self.confirmers]}
                   if self.confirmers else {})
        return {"runs": [str(m.run) for m in self.members],
                "models": [m.spec.model_name for m in self.members], **confirm,
                "device": o.device, "precision": resolve_precision(o.device, o.precision),
                "tta": o.tta, "batch_size": o.batch_size,
                "threads": self.num_threads or torch.get_num_threads(), **self.post,
                "qc_flag": self._qc_record()}

    def _qc_record(self) -> dict:
        """The review flag's threshold and where it came from (``predict.json``'s
        ``qc_flag``; each case's score and flag are under ``qc``)."""
        q = self.qc
        note = ("chosen on the validation cases at the end of training" if q.source ==
                "validation" else "model.json has no QC threshold (trained before QC "
                "existed): the default clotseg.inference.qc.DEFAULT_THRESHOLD is used")
        if self.post["scan_support"] and self._base_qc.with_scan_support() is None:
            note += ("; chosen for scores without scan support (the run has none for "
                     "--scan-support, whose scores run higher: more cases are flagged)")
        elif self.post["scan_support"]:
            note += " for scores with scan support"
        if self.confirmers:
            note += (f"; with the confirming runs, the threshold applies to the score "
                     f"without 'disagreement', and a case is also flagged when its mask "
                     f"and their own clot overlap by a Dice of at most {DISAGREEMENT_FLAG}")
        return {"threshold": q.threshold, "threshold_source": q.source, "note": note,
                **({"fitted_on": q.fitted_on} if q.fitted_on else {})}

    @contextlib.contextmanager
    def threads(self):
        """Run with ``num_threads`` torch threads, restoring the previous number after."""
        import torch

        before = torch.get_num_threads()
        if self.num_threads:
            torch.set_num_threads(int(self.num_threads))
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def probability(self, cta: Volume | None, ncct: Volume | None, case_id: str = "case"
                    ) -> tuple[np.ndarray, Volume | None]:
        """Clot probability on the reference grid (mean over runs) and the NCCT on that
        grid (aligned with the registration of a run's preprocessing, if it registers).

        The NCCT is resampled onto the CTA grid once per alignment
        (:class:`clotseg.preprocess.ncct.CtaGridNcct`) and that one volume serves the runs
        without preprocessing, a preprocessing that only crops, and the return value.
        With one of ``cta``/``ncct`` None (module docstring) the other's grid is the
        reference and the returned NCCT is the NCCT itself, or None without one."""
        res, ncct_on_ref, _ = self._ensemble(cta, ncct, case_id, support=False)
        return res.prob, ncct_on_ref

    def _ensemble(self, cta: Volume | None, ncct: Volume | None, case_id: str, *,
                  support: bool, confirm: bool = False
                  ) -> tuple[EnsembleOutput, Volume | None, np.ndarray | None]:
        """:meth:`probability`, with each scan's own support near what was found when
        ``support`` (and :attr:`scan_support`) asks for it, and with ``confirm`` the
        confirming runs' mean probability (None without confirming runs)."""
        from clotseg.preprocess.ncct import CtaGridNcct

        missing = missing_modality(cta, ncct, case_id)
        if missing is not None:
            self._warn_missing(missing)
            cta, ncct = with_stand_in(cta, ncct, missing)
        on_cta = CtaGridNcct(cta, ncct, case_id)
        if missing is None and any(m.spec.preprocess is None for m in self.members):
            on_cta.get()  # first, as before: its overlap check names the case
        opts = self.options
        if support and self.scan_support:
            opts = dataclasses.replace(opts, support_floor=self.support_floor)
        with self.threads():
            res = ensemble_probability(self.members, cta, ncct, on_cta, opts, case_id, missing)
            second = None
            if confirm and self.confirmers:
                plain = dataclasses.replace(self.options, support_floor=None)
                second = ensemble_probability(self.confirmers, cta, ncct, on_cta, plain,
                                              case_id, missing).prob
        return res, None if missing == "ncct" else on_cta.get(res.alignment), second

    @property
    def support_floor(self) -> float:
        """Lowest both-scan probability near which each scan's own support is computed:
        every voxel the mask can hold (threshold, then growth) lies on such slices."""
        p = self.post
        return float(min(p["threshold"], p["grow_threshold"] or 1.0))

    def _warn_missing(self, missing: str) -> None:
        """Say that a case is predicted without one scan, and when a model never saw that."""
        have = "NCCT" if missing == "cta" else "CTA"
        article = "an" if have == "NCCT" else "a"
        warnings.warn(f"only {article} {have} (no {missing.upper()}): predicted from the {have} "
                      f"alone; measurements that need the {missing.upper()} are empty (NaN)",
                      UserWarning, stacklevel=3)
        untrained = [str(m.run) for m in self.members if not m.spec.trained_for_missing]
        if untrained:
            warnings.warn(f"{', '.join(untrained)}: trained without modality dropout "
                          f"(model.json modality_dropout missing or 0), so the model never "
                          f"saw a missing {missing.upper()}; its mask for this case is unvalidated",
                          UserWarning, stacklevel=3)

    def segment(self, cta: Volume | None, ncct: Volume | None, case_id: str = "case"
                ) -> Segmentation:
        """Mask (uint8, on the reference grid: the CTA's, or the NCCT's without a CTA),
        probability and NCCT on that grid (None without an NCCT)."""
        res, ncct_on_ref, second = self._ensemble(cta, ncct, case_id, support=True,
                                                  confirm=True)
        if cta is not None and ncct is not None:
            with stage("swap_check"):
                note = swap_note(cta, ncct, ncct_on_ref)
            if note:
                warnings.warn(note, UserWarning, stacklevel=2)
        prob = res.prob
        ref = cta if cta is not None else ncct
        p = self.post
        # Post-processed inside the box of non-zero probability (the ROI, or less): what
        # lies outside is 0 and stays 0, components inside are the same either way.
        with stage("postprocess"):
            mask = np.zeros(prob.shape, np.uint8)
            box = bounding_box(prob)
            if box is not None:
                mask[box] = postprocess(prob[box], ref.spacing, threshold=p["threshold"],
                                        min_component_mm3=p["min_component_mm3"],
                                        keep_largest=p["keep_largest"])
            unconfirmed: list[dict] = []
            off = None
            if box is not None and second is not None:
                before = mask[box] > 0
                mask[box], unconfirmed = keep_confirmed(mask[box], prob[box], second[box],
                                                        p["confirm_threshold"], ref.spacing)
                off = before & (mask[box] == 0)  # never grown back into below
            if box is not None and self.component_filter is not None:
                mask[box] = self.component_filter.apply(mask[box], prob[box], ref.spacing,
                                                        *self._filter_scans(cta, ncct_on_ref,
                                                                            box))
            dropped: list[dict] = []
            grow = None if box is None else (prob[box] if second is None else
                                             np.minimum(prob[box], second[box]))
            if box is not None and self.primary_only:
                mask[box], dropped = keep_primary_grown(mask[box], prob[box], ref.spacing,
                                                        p["grow_threshold"], off, grow)
            elif box is not None and p["grow_threshold"]:
                mask[box] = grow_into(mask[box], grow, p["grow_threshold"], off)
            dropped += unconfirmed
            second_clot = (None if second is None else
                           self._second_clot(second, box, ref.spacing))
        inputs = tuple(n for n, v in (("cta", cta), ("ncct", ncct)) if v is not None)
        seg = Segmentation(Volume.on_grid(mask, ref.grid), prob, ncct_on_ref, dropped,
                           inputs=inputs, support=res.support, second_clot=second_clot)
        with stage("qc"):
            self.quality(seg, ref.spacing)
        return seg

    def _second_clot(self, second: np.ndarray, box, spacing) -> np.ndarray:
        """The clot the confirming runs find on their own: their probability at the confirm
        threshold, the size rule, then their primary clot and its fragments (no growth,
        no false-positive filter: those belong to the scored run)."""
        clot = np.zeros(second.shape, dtype=bool)
        if box is None:
            return clot
        p = self.post
        own = postprocess(second[box], spacing, threshold=p["confirm_threshold"],
                          min_component_mm3=p["min_component_mm3"])
        clot[box] = keep_primary(own, second[box], spacing)[0] > 0
        return clot

    def _filter_scans(self, cta: Volume | None, ncct: Volume | None, box) -> tuple:
        """CTA and NCCT inside ``box`` as the false-positive filter reads them (HU in the
        run's windows), or nothing when a scan is missing (the image features are then
        unmeasured)."""
        from clotseg.inference.fp_filter import WindowedScan

        if cta is None or ncct is None:
            return ()
        w = self.members[0].spec.windows
        return (WindowedScan(np.asarray(cta.array)[box], w["cta"]),
                WindowedScan(np.asarray(ncct.array)[box], w["ncct"]))

    def quality(self, seg: Segmentation, spacing: tuple[float, ...]) -> None:
        """Fill ``seg``'s QC score, signals, per-component scores and review flag."""
        from clotseg.inference.qc import case_qc, component_qc

        t = self.post["threshold"]
        mask = np.asarray(seg.mask.array)
        second = seg.second_clot
        seg.qc_score, seg.qc_signals = case_qc(seg.prob, mask, spacing, t, support=seg.support,
                                               second=second)
        seg.component_qc = component_qc(seg.prob, mask, spacing, t, support=seg.support,
                                        second=second)
        seg.review = self.qc.review_signals(seg.qc_signals, seg.qc_score)

    @property
    def qc(self) -> QcSettings:
        """The review-flag settings of the first run (:class:`clotseg.inference.qc.QcSettings`;
        the documented default when its ``model.json`` has none): those chosen for scores
        with scan support when it is used and the run has them."""
        base = self._base_qc
        own = base.with_scan_support() if self.post["scan_support"] else None
        return base if own is None else own

    @property
    def _base_qc(self) -> QcSettings:
        try:
            return QcSettings.from_dict(self.members[0].spec.qc)
        except ValueError as exc:
            raise ClotsegError(f"{self.members[0].run}/model.json: invalid qc ({exc})") from None

    @property
    def component_filter(self):
        """The first run's learned false-positive filter (None: none, or turned off)."""
        from clotseg.inference.fp_filter import ComponentFilter

        spec = self.members[0].spec
        if not self.use_filter or not spec.component_filter:
            return None
        try:
            return ComponentFilter.from_dict(spec.component_filter)
        except (TypeError, ValueError) as exc:
            raise ClotsegError(f"{self.members[0].run}/model.json: invalid component_filter "
                               f"({exc})") from None
