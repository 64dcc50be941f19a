"""The phantom needs both modalities: a small CNN trained on CTA + NCCT finds the clot
clearly better than the same CNN trained on CTA alone or on NCCT alone.

CTA alone cannot tell a clot from a slow-flow segment or a poorly filled distal vessel
(all dark in the lumen); NCCT alone cannot tell a faint clot from blood, nor a clot from
partial-volumed plaque or grey matter. Each model is a dilated 2D CNN (receptive field
≈ 30 px) trained for a few hundred steps on axial patches, then run on whole held-out
volumes; the score is the voxel-wise average precision of the clot probability (threshold
free) and the median per-case Dice at 0.5.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

PATCH = 32
N_TRAIN, N_TEST, STEPS = 16, 8, 400


def _case_arrays(seed: int):
    from clotseg.data.slabs import DEFAULT_WINDOWS, normalize
    from clotseg.io.orientation import orientation_of
    from clotseg.synth import case_seed, make_case

    c = make_case(case_seed(123, seed), clot=True)
    o = orientation_of(c.cta.grid)
    x = np.stack([normalize(o.to_canonical(c.cta.array), DEFAULT_WINDOWS["cta"]),
                  normalize(o.to_canonical(c.ncct.array), DEFAULT_WINDOWS["ncct"])])
    return x, o.to_canonical(c.clot.array) > 0, o.to_canonical(c.labels.array)


def _patches(cases, rng: np.random.Generator, per_case: int = 24):
    """Axial patches with a random offset: half around clot voxels, a quarter around the
    traps (slow flow, calcification) where a case has them, the rest around any vessel."""
    xs, ys = [], []
    for x, y, lab in cases:
        pos, ves = np.argwhere(y), np.argwhere((lab > 0) & (lab != 2) & (lab != 5))
        traps = np.argwhere((lab == 3) | (lab == 4))
        n_traps = per_case // 2 if len(traps) else 0
        centres = [pos[rng.integers(len(pos))] for _ in range(per_case)]
        centres += [traps[rng.integers(len(traps))] for _ in range(n_traps)]
        centres += [ves[rng.integers(len(ves))] for _ in range(per_case - n_traps)]
        for i, j, k in centres:
            i = int(np.clip(i + rng.integers(-10, 11) - PATCH // 2, 0, y.shape[0] - PATCH))
            j = int(np.clip(j + rng.integers(-10, 11) - PATCH // 2, 0, y.shape[1] - PATCH))
            xs.append(x[:, i:i + PATCH, j:j + PATCH, k])
            ys.append(y[i:i + PATCH, j:j + PATCH, k])
    return torch.tensor(np.stack(xs)), torch.tensor(np.stack(ys), dtype=torch.float32)[:, None]


def _net(channels: int):
    layers, c = [], channels
    for d in (1, 2, 4, 8, 1):
        layers += [torch.nn.Conv2d(c, 12, 3, padding=d, dilation=d), torch.nn.BatchNorm2d(12),
                   torch.nn.ReLU()]
        c = 12
    return torch.nn.Sequential(*layers, torch.nn.Conv2d(12, 1, 1))


def _train_and_score(train, test, chans: list[int], seed: int = 0) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    xs, ys = _patches(train, rng)
    model = _net(len(chans))
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=STEPS, pct_start=0.15)
    for _ in range(STEPS):
        idx = torch.from_numpy(rng.integers(0, len(xs), 24))
        xb, yb = xs[idx][:, chans], ys[idx]
        if rng.random() < 0.5:
            xb, yb = xb.flip(-1), yb.flip(-1)
        out = model(xb)
        prob = torch.sigmoid(out)
        soft_dice = (2 * (prob * yb).sum() + 1) / (prob.sum() + yb.sum() + 1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out, yb) + 1 - soft_dice
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    probs, truths, dices = [], [], []
    with torch.no_grad():
        for x, y, _ in test:
            p = torch.sigmoid(model(torch.from_numpy(x[chans]).permute(3, 0, 1, 2)))
            p = p[:, 0].permute(1, 2, 0).numpy()
            pred = p > 0.5
            dices.append(2 * (pred & y).sum() / max(pred.sum() + y.sum(), 1))
            probs.append(p.ravel())
            truths.append(y.ravel())
    return {"ap": _average_precision(np.concatenate(probs), np.concatenate(truths)),
            "dice": float(np.median(dices))}


def _average_precision(score: np.ndarray, truth: np.ndarray) -> float:
    """Area under the precision-recall curve (step-wise, as scikit-learn defines it)."""
    order = np.argsort(-score, kind="stable")
    hits = truth[order].astype(np.float64)
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / max(hits.sum(), 1))


@pytest.mark.slow
def test_both_modalities_beat_each_single_one(capsys):
    t0 = time.perf_counter()
    train = [_case_arrays(k) for k in range(N_TRAIN)]
    test = [_case_arrays(1000 + k) for k in range(N_TEST)]
    scores = {name: _train_and_score(train, test, chans)
              for name, chans in (("both", [0, 1]), ("cta", [0]), ("ncct", [1]))}
    with capsys.disabled():
        print("\nmodality test (AP / median Dice on held-out cases): "
              + ", ".join(f"{k} {v['ap']:.3f} / {v['dice']:.3f}" for k, v in scores.items())
              + f" ({time.perf_counter() - t0:.0f} s)")
    both = scores["both"]
    for single in ("cta", "ncct"):
        assert both["ap"] > scores[single]["ap"] + 0.08, scores
        assert both["dice"] > scores[single]["dice"] + 0.05, scores
    assert both["ap"] > 0.45 and both["dice"] > 0.4, scores
