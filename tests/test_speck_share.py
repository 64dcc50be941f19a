"""``benchmarks/speck_share.py``: a speck is a kept component away from the clot, any
component of a clot-free patient, and the size rule decides what is kept."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
speck_share = pytest.importorskip("speck_share")


def test_case_flags_count_components_away_from_the_clot(monkeypatch):
    monkeypatch.setattr(speck_share, "THRESHOLDS", (0.5, 0.95))
    monkeypatch.setattr(speck_share, "MIN_COMPONENTS_MM3", (5.0, 20.0))
    prob = np.zeros((30, 10, 10), np.float32)
    truth = np.zeros(prob.shape, bool)
    truth[2:8, 4:6, 4:6] = True  # 24 mm³ clot
    prob[truth] = 0.9
    prob[20:22, 4:6, 4:6] = 0.7  # 8 mm³ speck, away from the clot
    flags = speck_share.case_flags(prob, truth, (1.0, 1.0, 1.0))
    assert flags == {(0.5, 5.0): True, (0.5, 20.0): False, (0.95, 5.0): False,
                     (0.95, 20.0): False}
    clot_free = speck_share.case_flags(prob, np.zeros_like(truth), (1.0, 1.0, 1.0))
    assert clot_free[(0.5, 20.0)] and not clot_free[(0.95, 5.0)]  # the clot-like blob


def test_agreement_compares_the_two_shares_over_the_grid():
    table = {"0.5/5": {"speck_share_clot_patients": 0.5, "fp_share_clot_free": 0.4},
             "0.8/5": {"speck_share_clot_patients": 0.2, "fp_share_clot_free": 0.3},
             "0.9/5": {"speck_share_clot_patients": None, "fp_share_clot_free": 0.1}}
    got = speck_share.agreement(table)
    assert got["max_abs_difference"] == pytest.approx(0.1)
    assert got["pearson_r"] == pytest.approx(1.0)
    assert speck_share.agreement({}) is None
