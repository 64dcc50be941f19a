"""Scan support: the network asked about what it found with each scan alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clotseg.inference.engine import predict_alone, predict_probabilities
from clotseg.inference.qc import case_qc, component_qc
from clotseg.inference.support import LocalMap, Support, local_map
from clotseg.preprocess.roi import Box
from tests.helpers import DIRECTIONS
from tests.inference.conftest import case_volumes, paint_mask, tiny_net, write_run


@pytest.mark.parametrize("alone, blank", [("cta", 1), ("ncct", 0)])
def test_a_scan_alone_is_the_other_fed_as_missing_on_the_slices_near_what_was_found(
        alone, blank):
    """``predict_alone`` equals the prediction of the image whose other scan is the
    "missing" input (what modality dropout trained), on the slices where the both-scan map
    reaches the floor and one slice either side, and is 0 on every other slice."""
    slab = 3
    rng = np.random.default_rng(1)
    image = rng.uniform(0.1, 1.0, (2, 24, 20, 18)).astype(np.float32)
    prob = np.zeros(image.shape[1:], np.float32)
    prob[5, 6, 4] = 0.9  # hot slice 4
    prob[10, 3, 12] = 0.6  # hot slice 12
    prob[:, :, 8] = 0.3  # below the floor everywhere on slice 8
    net = tiny_net(2 * slab)
    run = dict(slab=slab, pad_multiple=8, batch_size=4, device="cpu")
    got = predict_alone(net, image, prob, alone, floor=0.5, **run)
    missing = image.copy()
    missing[blank] = 0.0
    want = predict_probabilities(net, missing, **run)
    near = [3, 4, 5, 11, 12, 13]
    np.testing.assert_allclose(got[..., near], want[..., near], atol=1e-6)
    others = [z for z in range(image.shape[-1]) if z not in near]
    assert not got[..., others].any() and want[..., others].min() > 0
    assert not predict_alone(net, image, prob * 0.1, alone, floor=0.5, **run).any()
    with pytest.raises(ValueError, match="alone"):
        predict_alone(net, image, prob, "mri", floor=0.5, **run)


def test_local_maps_hold_only_their_box_and_add_over_the_union():
    full = np.zeros((10, 10, 10), np.float32)
    full[2:4, 5:6, 7:9] = 0.5
    m = local_map(full)
    assert m.box == Box((2, 5, 7), (4, 6, 9)) and m.array.shape == (2, 1, 2)
    region = (slice(0, 10), slice(0, 10), slice(0, 10))
    np.testing.assert_array_equal(m.take(region), full)
    other = LocalMap(Box((8, 0, 0), (9, 1, 1)), np.ones((1, 1, 1), np.float32))
    both = m.plus(other).take(region)
    assert both.sum() == pytest.approx(full.sum() + 1) and both[8, 0, 0] == 1
    assert local_map(np.zeros((3, 3, 3))) is None
    sup = Support({"cta": m, "ncct": None})
    means = sup.of(full > 0)
    assert means == {"cta": pytest.approx(0.5), "ncct": 0.0}
    assert np.isnan(sup.of(np.zeros((10, 10, 10), bool))["cta"])


def _clot_case():
    prob = np.zeros((30, 12, 12), np.float32)
    prob[5:15, 4:8, 4:8] = 0.97  # the clot
    prob[22:25, 2:4, 2:4] = 0.95  # a second component
    mask = prob > 0.5
    return prob, mask


def _support(cta: float, ncct: float, where: np.ndarray) -> Support:
    return Support({"cta": local_map(where * np.float32(cta)),
                    "ncct": local_map(where * np.float32(ncct))})


def test_a_clot_that_neither_scan_sees_alone_gets_a_worse_review_score():
    prob, mask = _clot_case()
    sp = (0.5, 0.5, 0.5)
    seen, s_seen = case_qc(prob, mask, sp, 0.5, support=_support(0.95, 0.9, mask))
    unseen, s_unseen = case_qc(prob, mask, sp, 0.5, support=_support(0.02, 0.05, mask))
    plain, s_plain = case_qc(prob, mask, sp, 0.5)
    assert s_seen["unsupported"] == pytest.approx(1 - (0.95 + 0.9) / 2, abs=1e-3)
    assert s_unseen["unsupported"] == pytest.approx(1 - (0.02 + 0.05) / 2, abs=1e-3)
    assert "unsupported" not in s_plain
    assert plain <= seen < unseen
    # Two like components: the one that neither scan sees alone scores worse.
    twins = np.zeros((30, 12, 12), np.float32)
    twins[3:9, 4:8, 4:8] = twins[20:26, 4:8, 4:8] = 0.97
    first = np.zeros(twins.shape, np.float32)
    first[3:9, 4:8, 4:8] = 0.9
    sup = Support({"cta": local_map(first), "ncct": local_map(first)})
    a0, b0 = component_qc(twins, twins > 0.5, sp, 0.5)
    a, b = component_qc(twins, twins > 0.5, sp, 0.5, support=sup)
    assert a0 == b0 and a < b


def test_predict_asks_each_scan_alone_only_when_the_model_learned_to_go_without_one(
        tmp_path):
    """Asked to, a run trained with modality dropout gets the ``unsupported`` signal for a
    case with both scans (here the painted clot shows on the CTA only: half supported); a
    one-modality case, a run trained without dropout and the default (off) do not."""
    from clotseg.inference.predictor import Predictor

    cta, ncct = case_volumes(paint_mask((24, 20, 12)), DIRECTIONS["oblique"])
    with_dropout = write_run(tmp_path / "drop", "test-paint",
                             {"in_channels": 2, "modality": "any"}, modality_dropout=0.4)
    without = write_run(tmp_path / "plain", "test-paint",
                        {"in_channels": 2, "modality": "any"}, modality_dropout=0.0)
    pred = Predictor.from_runs(with_dropout, device="cpu", scan_support=True)
    seg = pred.segment(cta, ncct, "c")
    mask = np.asarray(seg.mask.array) > 0
    assert mask.any() and seg.support is not None
    seen = seg.support.of(mask)
    assert seen["cta"] > 0.99 and seen["ncct"] < 0.01
    assert seg.qc_signals["unsupported"] == pytest.approx(0.5, abs=0.01)
    assert pred.describe()["scan_support"] is True
    with pytest.warns(UserWarning, match="only a CTA"):
        alone = pred.segment(cta, None, "c")
    assert alone.support is None and "unsupported" not in alone.qc_signals
    for p in (Predictor.from_runs(without, device="cpu", scan_support=True),
              Predictor.from_runs(with_dropout, device="cpu")):  # off by default
        other = p.segment(cta, ncct, "c")
        assert other.support is None and "unsupported" not in other.qc_signals
        np.testing.assert_array_equal(np.asarray(other.mask.array), mask)
        assert p.describe()["scan_support"] is False
        assert other.qc_score < seg.qc_score


def test_predict_cli_records_whether_it_asked_each_scan(tmp_path):
    from clotseg.cli import main
    from tests.inference.conftest import write_case

    cta, ncct = case_volumes(paint_mask((24, 20, 12)), DIRECTIONS["identity"])
    case = write_case(tmp_path / "cases" / "p1", cta, ncct)
    run = write_run(tmp_path / "run", "test-paint", {"in_channels": 2, "modality": "any"},
                    modality_dropout=0.4)
    for flag, expected in (([], False), (["--scan-support"], True)):
        out = tmp_path / f"out{len(flag)}"
        assert main(["predict", str(run), str(case.parent), str(out), "--quiet", *flag]) == 0
        info = json.loads((out / "predict.json").read_text())
        assert info["scan_support"] is expected
        signals = info["qc"]["p1"]["signals"]
        assert ("unsupported" in signals) is expected


def test_the_flag_with_scan_support_uses_the_threshold_chosen_for_those_scores(tmp_path):
    from clotseg.inference.predictor import Predictor

    qc = {"threshold": 0.9, "source": "validation", "scan_support": {"threshold": 0.2}}
    run = write_run(tmp_path / "r", "test-paint", {"in_channels": 2, "modality": "any"},
                    modality_dropout=0.4, qc=qc)
    assert Predictor.from_runs(run, device="cpu").qc.threshold == 0.9
    asked = Predictor.from_runs(run, device="cpu", scan_support=True)
    assert asked.qc.threshold == 0.2 and "with scan support" in asked.describe()["qc_flag"]["note"]
    older = write_run(tmp_path / "o", "test-paint", {"in_channels": 2, "modality": "any"},
                      modality_dropout=0.4, qc={"threshold": 0.9, "source": "validation"})
    p = Predictor.from_runs(older, device="cpu", scan_support=True)
    assert p.qc.threshold == 0.9 and "scores run higher" in p.describe()["qc_flag"]["note"]
