"""Post-processing chosen on validation: the scoring grid and the keep-unless-better rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clotseg.training.tuning import MIN_GAIN, _scores


def _blob(shape, centre, radius):
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    return np.linalg.norm(grid - np.asarray(centre), axis=-1) <= radius


def test_scores_find_the_rule_that_removes_a_confident_small_false_positive():
    shape = (40, 40, 20)
    clot = _blob(shape, (12, 12, 10), 4)  # ~268 voxels
    fp = _blob(shape, (30, 30, 10), 1.5)  # ~ 19 voxels, also confident
    prob = np.zeros(shape, np.float32)
    prob[clot] = 0.9
    prob[fp] = 0.85
    prob[_blob(shape, (12, 12, 10), 5) & ~clot] = 0.45  # a soft rim around the clot
    thresholds, sizes = [0.3, 0.5, 0.8], [0.0, 10.0, 40.0]
    s, found, speck = _scores(prob, clot, (1.0, 1.0, 1.0), thresholds, sizes)
    assert s.shape == found.shape == (3, 3) and found.all()
    # the 19 mm³ false positive is a speck under every rule but 40 mm³; the rim is not one
    assert speck.tolist() == [[True, True, False]] * 3
    # the rim lowers Dice at 0.3; the false positive is removed only by the 40 mm³ rule
    assert s[0, 2] < s[1, 2]
    assert s[1, 0] < s[1, 2] and s[1, 2] == pytest.approx(1.0)
    assert s[1, 1] == pytest.approx(s[1, 0])  # 19 mm³ survives a 10 mm³ rule
    # spacing counts: the same voxels at 2 mm are 8x larger, the 40 mm³ rule keeps the FP
    s2, _, _ = _scores(prob, clot, (2.0, 2.0, 2.0), thresholds, sizes)
    assert s2[1, 2] < 1.0


def test_a_rule_that_deletes_the_clot_is_marked_as_missing_it():
    shape = (30, 30, 16)
    clot = _blob(shape, (15, 15, 8), 2)  # 33 voxels = 33 mm³
    prob = np.where(clot, 0.9, 0.0).astype(np.float32)
    s, found, speck = _scores(prob, clot, (1.0, 1.0, 1.0), [0.5, 0.95], [0.0, 20.0, 40.0])
    assert found.tolist() == [[True, True, False], [False, False, False]]
    assert not speck.any()  # the only component is the clot
    assert s[0, 2] == 0.0 and s[0, 1] == pytest.approx(1.0)


def test_empty_reference_and_empty_prediction_score_one():
    prob = np.zeros((8, 8, 8), np.float32)
    s, found, speck = _scores(prob, np.zeros_like(prob, dtype=bool), (1, 1, 1), [0.5], [0.0, 5.0])
    assert s.tolist() == [[1.0, 1.0]] and found.all() and not speck.any()
    assert 0 < MIN_GAIN < 0.05


def test_spilled_validation_maps_equal_the_in_memory_ones(phantom_cohort, tmp_path):
    """Maps written to disk and memory-mapped back (memory bounded by one case) are the
    maps themselves."""
    from clotseg.config import Config
    from clotseg.data.cache import build_cache
    from clotseg.io.layouts import discover
    from clotseg.training.trainer import build_model, model_spec
    from clotseg.training.tuning import validation_probabilities

    cfg = Config()
    cfg.model.base, cfg.data.slab = 4, 1
    cases = build_cache(discover(phantom_cohort).cases[:2], tmp_path / "cache",
                        cfg.data.windows, progress=False)
    torch.manual_seed(0)
    model = build_model(model_spec(cfg)).eval()
    held = validation_probabilities(model, cases, cfg, torch.device("cpu"))
    (tmp_path / "spill").mkdir()
    spilled = validation_probabilities(model, cases, cfg, torch.device("cpu"),
                                       spill=tmp_path / "spill")
    for a, b, case in zip(held, spilled, cases):
        assert isinstance(b, np.memmap) and b.shape == case.mask.shape
        np.testing.assert_array_equal(a, b)
    assert len(list((tmp_path / "spill").glob("*.prob.npy"))) == 2


def test_any_component_of_a_clot_free_patient_is_a_speck():
    shape = (30, 30, 16)
    prob = np.where(_blob(shape, (10, 10, 8), 2.5), 0.9, 0.0).astype(np.float32)  # 81 mm³
    _, found, speck = _scores(prob, np.zeros(shape, bool), (1, 1, 1), [0.5, 0.95],
                              [0.0, 100.0])
    assert found.all() and speck.tolist() == [[True, False], [False, False]]
