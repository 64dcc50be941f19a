"""The learned false-positive component filter: fitted on validation-like cases, it drops
a planted speck and keeps a planted small clot; it is stored as plain numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clotseg.inference.fp_filter import (
    FEATURES,
    PROBABILITY_FEATURES,
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


# --- image features: a clot and a slow-flow segment look alike to the network ----------
BLOOD, BRAIN_NCCT, BRAIN_CTA, LUMEN = 41.0, 30.0, 35.0, 350.0
WINDOWS = {"cta": (-20.0, 300.0), "ncct": (0.0, 100.0)}


def vessel_case(rng, clot: bool, slow_flow: bool, noise: float = 1.0):
    """Two straight vessels along axis 0; one may hold a clot (hyperdense on the NCCT,
    late filling beyond it), the other a slow-flow segment (dark on the CTA like the clot,
    blood on the NCCT, full enhancement on both sides). Both are predicted with
    probability near 1, the slow flow a little higher. Returns (mask, prob, reference, spacing, cta, ncct), scans clipped
    to the windows as the filter reads them."""
    shape = (48, 40, 24)
    cta, ncct = np.full(shape, BRAIN_CTA), np.full(shape, BRAIN_NCCT)
    prob, ref = np.full(shape, 0.01, np.float32), np.zeros(shape, np.uint8)
    yy, zz = np.mgrid[:shape[1], :shape[2]]
    for centre, lesion in (((10, 12), "clot" if clot else None),
                           ((30, 12), "slow" if slow_flow else None)):
        disc = (yy - centre[0]) ** 2 + (zz - centre[1]) ** 2 <= 4
        cta[:, disc], ncct[:, disc] = LUMEN, BLOOD
        if lesion is None:
            continue
        a = int(rng.integers(10, 20))
        b = a + int(rng.integers(6, 14))
        seg = np.zeros(shape, bool)
        seg[a:b, disc] = True
        density = rng.uniform(50, 62) if lesion == "clot" else BLOOD
        cta[seg], ncct[seg] = density + rng.uniform(5, 30), density
        if lesion == "clot":
            ref[seg] = 1
            distal = np.zeros(shape, bool)
            distal[b:, disc] = True
            cta[distal] = BLOOD + (LUMEN - BLOOD) * rng.uniform(0.35, 0.6)
        prob[seg] = 0.99 if lesion == "clot" else 0.995  # surer of the slow flow
    cta = cta + rng.normal(0, noise, shape)
    ncct = ncct + rng.normal(0, noise, shape)
    return ((prob >= 0.5).astype(np.uint8), prob, ref, SPACING,
            np.clip(cta, *WINDOWS["cta"]), np.clip(ncct, *WINDOWS["ncct"]))


def _features_by_truth(case_):
    mask, prob, ref, spacing, cta, ncct = case_
    labels, n = components(mask)
    x = component_features(prob, labels, n, spacing, cta, ncct)
    is_clot = [bool(ref[labels == i + 1].any()) for i in range(n)]
    return {("clot" if c else "slow"): row for c, row in zip(is_clot, x)}


def test_image_features_tell_a_clot_from_slow_flow():
    rng = np.random.default_rng(0)
    f = _features_by_truth(vessel_case(rng, clot=True, slow_flow=True))
    excess, ratio = (FEATURES.index("ncct_excess_over_vessel_hu"),
                     FEATURES.index("vessel_end_enhancement_ratio"))
    assert f["clot"][excess] > 8 and abs(f["slow"][excess]) < 2  # hyperdense vs blood
    assert f["clot"][ratio] < 0.7 and f["slow"][ratio] > 0.95  # late filling beyond a clot
    # the probability features point the wrong way
    assert f["clot"][FEATURES.index("max_prob")] < f["slow"][FEATURES.index("max_prob")]


def test_ncct_excess_ignores_a_calibration_offset():
    rng = np.random.default_rng(4)
    mask, prob, ref, spacing, cta, ncct = vessel_case(rng, clot=True, slow_flow=False)
    labels, n = components(mask)
    base = component_features(prob, labels, n, spacing, cta, ncct)
    moved = component_features(prob, labels, n, spacing, cta, ncct + 12.0)
    i = FEATURES.index("ncct_excess_over_vessel_hu")
    assert moved[0, i] == pytest.approx(base[0, i], abs=1e-3)


def test_image_features_are_unmeasured_without_a_scan_or_a_vessel():
    rng = np.random.default_rng(1)
    mask, prob, ref, spacing, cta, ncct = vessel_case(rng, clot=True, slow_flow=False)
    labels, n = components(mask)
    image = [FEATURES.index("ncct_excess_over_vessel_hu"),
             FEATURES.index("vessel_end_enhancement_ratio")]
    assert np.isnan(component_features(prob, labels, n, spacing, cta, None)[:, image]).all()
    assert np.isnan(component_features(prob, labels, n, spacing)[:, image]).all()
    flat = np.full(cta.shape, BRAIN_CTA)  # no enhancing vessel anywhere
    assert np.isnan(component_features(prob, labels, n, spacing, flat, ncct)[:, image]).all()


def test_windowed_scan_reads_the_cache_back_in_hu():
    from clotseg.data.slabs import normalize
    from clotseg.inference.fp_filter import WindowedScan

    hu = np.random.default_rng(2).uniform(-200, 900, (6, 7, 8)).astype(np.float32)
    stored = normalize(hu, WINDOWS["cta"]).astype(np.float16)  # as the training cache
    box = (slice(1, 5), slice(0, 7), slice(2, 6))
    read = WindowedScan(stored, WINDOWS["cta"], normalised=True)[box]
    assert np.allclose(read, np.clip(hu, *WINDOWS["cta"])[box], atol=0.2)
    assert np.array_equal(WindowedScan(hu, WINDOWS["cta"])[box], np.clip(hu, *WINDOWS["cta"])[box])


def test_filter_with_image_features_drops_slow_flow_that_the_network_is_sure_of():
    rng = np.random.default_rng(5)
    val = [vessel_case(rng, clot=i % 4 != 0, slow_flow=i % 2 == 0) for i in range(12)]
    filt, why = fit_component_filter(val)
    assert filt is not None, why
    assert filt.features == FEATURES
    for seed in range(3):  # new patients: the clot stays, the slow-flow segment goes
        mask, prob, ref, spacing, cta, ncct = vessel_case(np.random.default_rng(50 + seed),
                                                          clot=True, slow_flow=True)
        out = filt.apply(mask, prob, spacing, cta, ncct)
        assert (out[ref > 0] == 1).all() and out[ref == 0].sum() == 0
    # a clot-free patient with only a slow-flow segment is left empty
    mask, prob, ref, spacing, cta, ncct = vessel_case(rng, clot=False, slow_flow=True)
    assert mask.any() and not filt.apply(mask, prob, spacing, cta, ncct).any()
    # without the scans (a one-modality case) the image features count as their fitted
    # means: no evidence either way
    mask, prob, ref, spacing, cta, ncct = vessel_case(rng, clot=True, slow_flow=True)
    labels, n = components(mask)
    x = component_features(prob, labels, n, spacing)
    image = [FEATURES.index("ncct_excess_over_vessel_hu"),
             FEATURES.index("vessel_end_enhancement_ratio")]
    at_mean = x.copy()
    at_mean[:, image] = np.asarray(filt.mean)[image]
    assert np.allclose(filt.scores(x), filt.scores(at_mean))


def test_a_filter_fitted_before_the_image_features_still_scores_with_its_own(fitted):
    # fitted without scans, the filter keeps the five probability features, as every
    # filter written before the image features existed
    assert fitted.features == PROBABILITY_FEATURES
    again = ComponentFilter.from_dict(json.loads(json.dumps(fitted.to_dict())))
    rng = np.random.default_rng(8)
    mask, prob, ref, spacing, cta, ncct = vessel_case(rng, clot=True, slow_flow=True)
    labels, n = components(mask)
    x = component_features(prob, labels, n, spacing, cta, ncct)
    z = (x[:, :5] - np.asarray(fitted.mean)) / np.asarray(fitted.scale)
    expected = 1 / (1 + np.exp(-(z @ np.asarray(fitted.weights) + fitted.bias)))
    assert np.allclose(again.scores(x), expected)
    with pytest.raises(ValueError, match="features"):  # lengths that do not match
        ComponentFilter.from_dict({**fitted.to_dict(), "weights": fitted.weights[:3]})
