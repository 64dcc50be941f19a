"""Trained runs as ensemble members, and averaging their probabilities on the CTA grid.

Each run gets the input it was trained on — its own HU windows, slab size and, when its
``model.json`` says so, the preprocessing of :mod:`clotseg.preprocess.pipeline` — and its
probability is brought back onto the CTA grid before averaging, so fold models with
different settings can be mixed. Runs that share windows and preprocessing share one
prepared input (prepared once per case).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clotseg.errors import ClotsegError
from clotseg.inference.engine import predict_alone, predict_probabilities, prepare_model
from clotseg.inference.support import SCANS, LocalMap, Support, local_map
from clotseg.io.volume import Volume
from clotseg.preprocess.ncct import CtaGridNcct, NcctAlignment
from clotseg.runs import ModelSpec
from clotseg.timing import stage


@dataclass
class Member:
    """One trained run of an ensemble, with its network ready for inference."""

    run: Path
    spec: ModelSpec
    model: Any

    @property
    def input_key(self) -> tuple:
        """Runs with equal keys see identical input."""
        windows = tuple(sorted((k, tuple(v)) for k, v in self.spec.windows.items()))
        pre = (None if self.spec.preprocess is None
               else repr(sorted(self.spec.preprocess.to_dict().items())))
        return windows, pre


def load_member(run: str | Path, device: str, *, engine: str = "torch",
                num_threads: int | None = None) -> Member:
    """Load a run folder's network (or an exported ``model.zip`` / ``model.onnx``); every
    failure is a :class:`ClotsegError` naming RUN. ``engine="onnx"`` (implied by a
    ``.onnx`` file) runs the network with onnxruntime on the CPU."""
    from clotseg.model_export import model_folder
    from clotseg.runs import load_model

    if engine == "onnx" or Path(run).suffix.lower() == ".onnx":
        from clotseg.inference.onnx_engine import load_onnx

        net, spec = load_onnx(run, num_threads)
        return Member(Path(run), spec, net)
    try:
        model, spec = load_model(model_folder(run), device=device)
    except ClotsegError:
        raise
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        text = str(exc).strip()
        msg = text.splitlines()[0] if text else type(exc).__name__
        raise ClotsegError(f"{run}: cannot rebuild the trained network ({msg})") from None
    model = prepare_model(model, device, in_channels=2 * spec.slab,
                          check_size=max(64, 4 * spec.pad_multiple))
    return Member(Path(run), spec, model)


@dataclass
class InferenceOptions:
    """How the networks are run (see :func:`clotseg.inference.engine.predict_probabilities`)."""

    device: str = "cpu"
    precision: str = "auto"
    tta: bool = False
    batch_size: int = 16
    skip_empty: bool = True
    # Probability from each scan alone near what the both-scan map finds, down to this
    # probability (clotseg.inference.support); None: not computed.
    support_floor: float | None = None


@dataclass
class EnsembleOutput:
    """Mean probability on the CTA grid, and the NCCT→CTA alignment a preprocessing step
    found (None without registration), so measurements can use the same alignment."""

    prob: np.ndarray
    alignment: NcctAlignment | None = None
    support: Support | None = None  # each scan alone (InferenceOptions.support_floor)

    @property
    def ncct_transform(self) -> dict | None:
        """The registration's transform in its JSON form (None without one)."""
        reg = None if self.alignment is None else self.alignment.registration
        return None if reg is None else reg.get("transform")


def ensemble_probability(members: list[Member], cta: Volume, ncct: Volume,
                         on_cta: CtaGridNcct, opts: InferenceOptions, case_id: str = "case",
                         missing: str | None = None) -> EnsembleOutput:
    """Mean clot probability of ``members`` on the CTA grid (stored array order).

    ``ncct`` is the original NCCT (given to the preprocessing, which may register it);
    ``on_cta`` makes the NCCT on the CTA grid once per alignment, for runs without
    preprocessing and for preprocessing that only crops. Runs whose preprocessing registers
    share one registration (it is deterministic). ``missing``: the modality a
    one-modality case lacks (its volume here is a stand-in on the present scan's grid);
    its channels are fed as :data:`clotseg.data.slabs.MISSING_VALUE`.

    With ``opts.support_floor`` set, a case with both scans and members that were all
    trained with modality dropout also gets each scan's own probability near what was
    found (:mod:`clotseg.inference.support`), averaged over the members like the map.
    """
    total = np.zeros(cta.shape, dtype=np.float32)
    alignment = None
    wants = (opts.support_floor is not None and missing is None
             and all(m.spec.trained_for_missing for m in members))
    support: dict[str, LocalMap | None] | None = dict.fromkeys(SCANS) if wants else None
    groups: dict[tuple, list[Member]] = {}
    for m in members:
        groups.setdefault(m.input_key, []).append(m)
    for group in groups.values():
        if group[0].spec.preprocess is not None:
            found = _add_preprocessed(total, group, cta, ncct, on_cta, opts, case_id, alignment,
                                      missing, support)
            alignment = alignment or (found if found.transform is not None else None)
        else:
            total += _sum_on_grid(group, cta, on_cta.get(), opts, case_id, missing, support)
    total /= len(members)
    if support is not None:
        support = {k: None if v is None else v.scaled(1.0 / len(members))
                   for k, v in support.items()}
    return EnsembleOutput(total, alignment, None if support is None else Support(support))


def _add_local(support: dict[str, LocalMap | None], scan: str, part: LocalMap | None) -> None:
    if part is not None:
        have = support[scan]
        support[scan] = part if have is None else have.plus(part)


def _sum_on_grid(group: list[Member], cta: Volume, ncct: Volume, opts: InferenceOptions,
                 case_id: str, missing: str | None = None,
                 support: dict[str, LocalMap | None] | None = None) -> np.ndarray:
    """Sum of the group's probabilities on ``cta``'s grid (NCCT already on it); with
    ``support`` (a dict of :data:`~clotseg.inference.support.SCANS`), each scan's own
    probability is added into it as local maps on that grid."""
    from clotseg.data.slabs import prepare_case

    windows = {k: tuple(v) for k, v in group[0].spec.windows.items()}
    with stage("normalise"):
        prep = prepare_case(case_id, cta, ncct, None, windows, missing)
    total = np.zeros(cta.shape, dtype=np.float32)
    for m in group:
        run = dict(slab=m.spec.slab, pad_multiple=m.spec.pad_multiple,
                   batch_size=opts.batch_size, device=opts.device, tta=opts.tta,
                   precision=opts.precision, skip_empty=opts.skip_empty,
                   views=m.spec.slice_views, cta_mip=m.spec.cta_mip)
        with stage("infer"):
            p = predict_probabilities(m.model, prep.image, **run)
        total += prep.orientation.from_canonical(p)
        if support is not None:
            with stage("support"):
                for scan in SCANS:
                    alone = predict_alone(m.model, prep.image, p, scan,
                                          floor=opts.support_floor, **run)
                    _add_local(support, scan, local_map(prep.orientation.from_canonical(alone)))
    return total


def _add_preprocessed(total: np.ndarray, group: list[Member], cta: Volume, ncct: Volume,
                      on_cta: CtaGridNcct, opts: InferenceOptions, case_id: str,
                      alignment: NcctAlignment | None, missing: str | None = None,
                      support: dict[str, LocalMap | None] | None = None) -> NcctAlignment:
    """Add the group's probabilities, computed on the preprocessed grid the runs were
    trained on, into ``total`` on the CTA grid; returns the NCCT alignment used.

    When the preprocessing only crops (no new spacing), the ROI's probabilities are added
    into their box of the CTA grid by index arithmetic, with no full-size copy; otherwise
    they are resampled back (:meth:`PreprocessRecord.restore_prob`)."""
    from clotseg.preprocess.pipeline import preprocess_case
    from clotseg.preprocess.roi import crop_grid

    pre = preprocess_case(cta, ncct, None, group[0].spec.preprocess, alignment=alignment,
                          ncct_on_cta=on_cta.get, missing=missing)
    roi_cta, roi_ncct, record, used = pre.cta, pre.ncct, pre.record, pre.alignment
    del pre
    # Mapped back as a mean (a probability in [0, 1], whatever the restore does at the
    # edges), then weighted by the group size again.
    local: dict[str, LocalMap | None] | None = None if support is None else dict.fromkeys(SCANS)
    mean = _sum_on_grid(group, roi_cta, roi_ncct, opts, case_id, missing, local) / len(group)
    del roi_ncct
    for scan, part in (local or {}).items():  # onto the CTA grid, as the map below
        if part is not None:
            with stage("restore"):
                box, values = record.restore_prob_part(part.array, part.box)
            _add_local(support, scan, LocalMap(box, values))
    if record.is_exact_crop:
        box = record.crop_box
        if not crop_grid(cta.grid, box).same_as(roi_cta.grid, atol_mm=1e-6):
            raise ClotsegError(f"case {case_id}: the preprocessed grid is not the crop box "
                               "of the CTA grid")
        with stage("restore"):
            total[box.slices] += mean * len(group)
        return used
    with stage("restore"):
        back = record.restore_prob(roi_cta.with_array(mean))
    if not back.grid.same_as(cta.grid):
        raise ClotsegError(f"case {case_id}: probability mapped back from the preprocessed "
                           f"grid is not on the CTA grid "
                           f"({'; '.join(back.grid.differences(cta.grid))})")
    total += np.asarray(back.array, dtype=np.float32) * len(group)
    return used
