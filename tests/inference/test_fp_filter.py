"""The learned false-positive component filter: fitted on validation-like cases, it drops
a planted speck and keeps a planted small clot; it is stored as plain numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clotseg.inference.fp_filter import (
    FEATURES,
    ComponentFilter,
    component_features,
    fit_component_filter,
)
from clotseg.masks import components

SHAPE = (48, 48, 24)
SPACING = (0.6, 0.6, 1.0)


def case(rng, clot: bool, n_specks: int, clot_size: int = 4):
    """(mask, prob, reference): a confident clot and fainter specks far from it."""
    prob = np.full(SHAPE, 0.01, np.float32)
    ref = np.zeros(SHAPE, np.uint8)
    if clot:
        x, y = rng.integers(4, 14, 2)
        sl = (slice(x, x + clot_size), slice(y, y + 3), slice(8, 8 + clot_size))
        ref[sl] = 1
        prob[sl] = rng.uniform(0.85, 0.99)
    for _ in range(n_specks):
        x, y = rng.integers(30, 44, 2)
        z = rng.integers(2, 20)
        prob[x:x + 2, y:y + 2, z:z + 2] = rng.uniform(0.5, 0.75)
    return (prob >= 0.5).astype(np.uint8), prob, ref


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    data = [case(rng, clot=i % 5 != 0, n_specks=int(rng.integers(0, 3))) for i in range(14)]
    filt, why = fit_component_filter([(m, p, r, SPACING) for m, p, r in data])
    assert filt is not None, why
    return filt


def test_features_of_components():
    rng = np.random.default_rng(1)
    mask, prob, _ = case(rng, clot=True, n_specks=1)
    labels, n = components(mask)
    x = component_features(prob, labels, n, SPACING)
    assert x.shape == (2, len(FEATURES))
    top = int(np.argmax(x[:, FEATURES.index("max_prob")]))
    assert x[top, FEATURES.index("is_most_probable")] == 1
    assert x[top, FEATURES.index("log_distance_to_most_probable_mm")] == 0
    assert x[1 - top, FEATURES.index("log_distance_to_most_probable_mm")] > np.log1p(10)


def test_filter_drops_planted_speck_and_keeps_small_clot(fitted):
    rng = np.random.default_rng(7)
    mask, prob, ref = case(rng, clot=True, n_specks=1, clot_size=2)  # a 2x3x2 voxel clot
    assert components(mask)[1] == 2
    out = fitted.apply(mask, prob, SPACING)
    assert (out[ref > 0] == 1).all()  # the small clot is kept whole
    assert out[ref == 0].sum() == 0  # the speck is gone


def test_filter_empties_a_clot_free_case_with_a_faint_speck(fitted):
    rng = np.random.default_rng(3)
    mask, prob, _ = case(rng, clot=False, n_specks=1)
    prob[mask > 0] = 0.55
    assert mask.any()
    assert not fitted.apply(mask, prob, SPACING).any()


def test_filter_round_trips_as_plain_json(fitted):
    again = ComponentFilter.from_dict(json.loads(json.dumps(fitted.to_dict())))
    rng = np.random.default_rng(5)
    mask, prob, _ = case(rng, clot=True, n_specks=2)
    assert np.array_equal(again.apply(mask, prob, SPACING), fitted.apply(mask, prob, SPACING))
    bad = {**fitted.to_dict(), "features": ["volume"]}
    with pytest.raises(ValueError, match="features"):
        ComponentFilter.from_dict(bad)


def test_no_filter_without_false_positives_to_learn_from():
    rng = np.random.default_rng(2)
    data = [case(rng, clot=True, n_specks=0) for _ in range(6)]
    filt, why = fit_component_filter([(m, p, r, SPACING) for m, p, r in data])
    assert filt is None and "too few" in why
