"""``benchmarks/error_anatomy.py``: each missed clot gets the step that lost it, and each
false-positive component the structure of the phantom it lies on."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
ea = pytest.importorskip("error_anatomy")

from clotseg.synth.phantom import LABELS  # noqa: E402


def _clot():
    clot = np.zeros((40, 20, 10), bool)
    clot[5:12, 8:11, 4:7] = True  # 63 voxels
    return clot


@pytest.mark.parametrize("peak, size, kept_elsewhere, cause", [
    (0.3, 63, False, "not_seen"),
    (0.7, 63, False, "below_threshold"),
    (0.95, 3, False, "too_small"),
    (0.95, 63, True, "other_component_kept"),
    (0.95, 63, False, "unexplained"),
])
def test_a_missed_clot_is_put_down_to_the_step_that_lost_it(peak, size, kept_elsewhere,
                                                             cause):
    clot = _clot()
    prob = np.zeros(clot.shape, np.float32)
    prob[clot] = 0.4
    prob[tuple(np.argwhere(clot)[:size].T)] = peak  # the part above the threshold
    kept = np.zeros(clot.shape, bool)
    if kept_elsewhere:
        kept[30:33, 2:5, 2:5] = True
    assert ea.miss_cause(prob, clot, kept, 0.8, min_voxels=10) == cause
    kept[6, 9, 5] = True  # the written mask touches the clot: not missed
    assert ea.miss_cause(prob, clot, kept, 0.8, min_voxels=10) is None


def test_false_positives_are_named_by_the_structure_under_them():
    clot = _clot()
    labels = np.zeros(clot.shape, np.uint8)
    labels[clot] = LABELS["clot"]
    labels[20:26, 8:11, 4:7] = LABELS["slow_flow"]
    labels[0:40, 15:17, 4:6] = LABELS["lumen"]
    mask = np.zeros(clot.shape, bool)
    mask[6:9, 9, 5] = True  # on the clot: not a false positive
    mask[21:24, 9, 5] = True  # on the slow-flow segment
    mask[30:32, 15:17, 4:6] = True  # on the patent lumen
    mask[30:32, 2:4, 8:10] = True  # in the tissue, away from every vessel
    sites = ea.component_sites(mask, clot, labels, (1.0, 1.0, 1.0))
    assert sorted(s["site"] for s in sites) == ["lumen", "outside_vessels", "slow_flow"]
    (outside,) = [s for s in sites if s["site"] == "outside_vessels"]
    assert 8.0 < outside["median_mm_to_vessel"] < 14.0 and outside["voxels"] == 8
    # the size floor of the candidates drops the 3-voxel slow-flow component
    small = ea.component_sites(mask, clot, labels, (1.0, 1.0, 1.0), min_voxels=4)
    assert sorted(s["site"] for s in small) == ["lumen", "outside_vessels"]
    counts = ea.summarise({"a": {"has_clot": True, "location": "M1",
                                 "miss_cause": "too_small", "final_fp": sites,
                                 "candidate_fp": small},
                           "b": {"has_clot": False, "location": "", "final_fp": [],
                                 "candidate_fp": []}})
    assert counts["missed"] == 1 and counts["missed_by_cause"]["too_small"] == 1
    assert counts["final_fp"]["components"] == 3 and counts["final_fp"]["patients"] == 1
    assert counts["candidate_fp"]["by_site"] == {"lumen": 1, "outside_vessels": 1}
