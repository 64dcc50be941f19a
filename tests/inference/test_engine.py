"""The optimised slice engine gives what a plain one-slice-at-a-time loop gives.

Batching, batch-norm folding, channels-last and skipping empty input must not change
the probabilities (beyond float rounding) where the network runs; skipped input gets 0.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clotseg.data.slabs import from_view, pad_to_multiple, slab, to_view
from clotseg.inference.engine import (
    active_slices,
    content_mask,
    inplane_box,
    predict_probabilities,
    prepare_model,
    resolve_precision,
)
from tests.inference.conftest import tiny_net


def plain_loop(model, image: np.ndarray, slab_size: int, multiple: int,
               flip: tuple[int, ...] = ()) -> np.ndarray:
    """Reference: one slice at a time, fp32, nothing skipped."""
    out = np.zeros(image.shape[1:], dtype=np.float32)
    with torch.no_grad():
        for z in range(image.shape[-1]):
            x, crop = pad_to_multiple(slab(image, z, slab_size), multiple)
            t = torch.from_numpy(np.ascontiguousarray(x))[None]
            if flip:
                t = torch.flip(t, flip)
            y = torch.sigmoid(model(t))
            if flip:
                y = torch.flip(y, flip)
            out[:, :, z] = y[0, 0][crop].numpy()
    return out


def _image(shape=(2, 40, 36, 12), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.uniform(0, 1, shape).astype(np.float32)
    img[rng.uniform(size=shape) < 0.3] = 0.0
    img[..., :3] = 0.0  # three slices of air at the bottom, one at the top
    img[..., -1] = 0.0
    return img


def test_fast_path_matches_plain_loop_and_skips_only_empty_slabs():
    net = tiny_net(6)
    img = _image()
    ref = plain_loop(net, img, 3, 16)
    fast = predict_probabilities(prepare_model(tiny_net(6)), img, slab=3, pad_multiple=16,
                                 batch_size=5)
    zs = active_slices(content_mask(img), 3)
    # slice 2 is empty but its slab touches slice 3: computed; 0, 1 (and none at the top,
    # whose slab touches the slice below) are skipped.
    assert zs.tolist() == list(range(2, 12))
    np.testing.assert_allclose(fast[..., zs], ref[..., zs], atol=2e-6)
    assert (fast[..., :2] == 0).all() and (ref[..., :2] > 0).all()
    full = predict_probabilities(net, img, slab=3, pad_multiple=16, skip_empty=False)
    np.testing.assert_allclose(full, ref, atol=2e-6)


def test_inplane_box_matches_full_slice_inside_the_box():
    img = np.zeros((2, 200, 190, 4), dtype=np.float32)
    img[:, 80:110, 60:95] = np.random.default_rng(1).uniform(0, 1, (2, 30, 35, 4))
    (x0, x1), (y0, y1) = inplane_box(content_mask(img), 64, 16)
    # padded slice 208 x 192 (4 + 200 + 4, 1 + 190 + 1); content + 64 px, on multiples of 16
    assert ((x0, x1), (y0, y1)) == ((16, 192), (0, 160))
    net = tiny_net(2, seed=3)
    ref = plain_loop(net, img, 1, 16)
    fast = predict_probabilities(prepare_model(net), img, slab=1, pad_multiple=16)
    near = (slice(80 - 32, 110 + 32), slice(60 - 32, 95 + 32))  # tissue and nearby air
    np.testing.assert_allclose(fast[near], ref[near], atol=2e-6)
    inside = np.zeros(img.shape[1:], bool)
    inside[x0 - 4:x1 - 4, max(y0 - 1, 0):y1 - 1] = True
    assert (fast[~inside] == 0).all() and (fast[inside] > 0).all()


def test_tta_is_the_mean_over_flips():
    net = tiny_net(2, seed=5)
    img = np.random.default_rng(2).uniform(0.01, 1, (2, 24, 20, 4)).astype(np.float32)
    ref = np.mean([plain_loop(net, img, 1, 8, f) for f in ((), (2,), (3,))], axis=0)
    got = predict_probabilities(prepare_model(net), img, slab=1, pad_multiple=8, tta=True)
    np.testing.assert_allclose(got, ref, atol=2e-6)
    assert np.abs(got - plain_loop(net, img, 1, 8)).max() > 1e-3  # TTA did something


class _CentreVoxelNet(torch.nn.Module):
    """A voxel-wise network: the probability of a voxel is a fixed function of its own
    CTA and NCCT values (the centre slice of each slab). Orientation cannot change it."""

    def __init__(self, slab_size: int):
        super().__init__()
        self.cta, self.ncct = slab_size // 2, slab_size + slab_size // 2

    def forward(self, x):
        return 4.0 * x[:, self.cta:self.cta + 1] - 3.0 * x[:, self.ncct:self.ncct + 1] + 0.5


def test_every_view_puts_each_voxel_back_where_it_came_from():
    img = np.random.default_rng(4).uniform(0.01, 1, (2, 20, 14, 9)).astype(np.float32)
    axial = predict_probabilities(_CentreVoxelNet(3), img, slab=3, pad_multiple=8)
    np.testing.assert_allclose(axial, 1 / (1 + np.exp(-(4 * img[0] - 3 * img[1] + 0.5))),
                               rtol=1e-5)
    for views in (["coronal"], ["sagittal"], ["axial", "coronal", "sagittal"]):
        got = predict_probabilities(_CentreVoxelNet(3), img, slab=3, pad_multiple=8,
                                    views=views)
        assert got.shape == img.shape[1:]
        np.testing.assert_allclose(got, axial, atol=1e-6, err_msg=str(views))


def test_several_views_average_each_views_slice_wise_prediction():
    net = tiny_net(2, seed=7)
    img = np.random.default_rng(5).uniform(0.01, 1, (2, 16, 12, 10)).astype(np.float32)
    ref = {v: from_view(plain_loop(net, to_view(img, v), 1, 8), v)
           for v in ("axial", "coronal", "sagittal")}
    got = predict_probabilities(prepare_model(net), img, slab=1, pad_multiple=8,
                                views=["axial", "coronal", "sagittal"])
    np.testing.assert_allclose(got, np.mean(list(ref.values()), axis=0), atol=2e-6)
    # a network with 3x3 kernels sees other neighbours in another view
    assert np.abs(ref["coronal"] - ref["axial"]).max() > 1e-3
    one = predict_probabilities(prepare_model(net), img, slab=1, pad_multiple=8,
                                views=["sagittal"])
    np.testing.assert_allclose(one, ref["sagittal"], atol=2e-6)


def test_precision_choice():
    assert resolve_precision("cpu", "auto") == "fp32"
    assert resolve_precision("cpu", "bf16") == "bf16"
    with pytest.raises(ValueError):
        resolve_precision("cpu", "fp8")
    net = prepare_model(tiny_net(2, seed=7))
    img = _image((2, 16, 16, 6), seed=4)
    fp32 = predict_probabilities(net, img, slab=1, pad_multiple=8)
    bf16 = predict_probabilities(net, img, slab=1, pad_multiple=8, precision="bf16")
    active = active_slices(content_mask(img), 1)
    assert np.abs(bf16 - fp32)[..., active].max() < 0.05


def test_folding_that_changes_the_output_is_not_used(monkeypatch):
    import torch.fx.experimental.optimization as fx_opt

    net = tiny_net(2, seed=9)

    class Broken(torch.nn.Module):
        def forward(self, x):
            return net(x) + 1.0

    monkeypatch.setattr(fx_opt, "fuse", lambda model: Broken())
    assert prepare_model(net, in_channels=2) is net
    monkeypatch.setattr(fx_opt, "fuse", lambda model: 1 / 0)
    assert prepare_model(net, in_channels=2) is net
    monkeypatch.undo()
    assert isinstance(prepare_model(net, in_channels=2), torch.fx.GraphModule)


def projected_slab(image: np.ndarray, z: int, slab_size: int, reach: int) -> np.ndarray:
    """Reference input with CTA projections, written out from their definition: the slab,
    its outer CTA slices replaced by the CTA maximum over z-reach..z-h and z+h..z+reach
    (edge slices repeated past the volume's ends)."""
    x = slab(image, z, slab_size).copy()
    h, depth = slab_size // 2, image.shape[-1]
    below = np.clip(np.arange(z - reach, z - h + 1), 0, depth - 1)
    above = np.clip(np.arange(z + h, z + reach + 1), 0, depth - 1)
    x[0] = image[0][..., below].max(-1)
    x[slab_size - 1] = image[0][..., above].max(-1)
    return x


@pytest.mark.parametrize("slab_size, reach", [(3, 4), (5, 3)])
def test_cta_projections_are_the_outer_cta_slices_replaced_by_maxima(slab_size, reach):
    net = tiny_net(2 * slab_size)
    img = _image()
    got = predict_probabilities(net, img, slab=slab_size, pad_multiple=16, skip_empty=False,
                                cta_mip=reach)
    ref = np.zeros_like(got)
    with torch.no_grad():
        for z in range(img.shape[-1]):
            x, crop = pad_to_multiple(projected_slab(img, z, slab_size, reach), 16)
            ref[:, :, z] = torch.sigmoid(net(torch.from_numpy(x)[None]))[0, 0][crop].numpy()
    np.testing.assert_allclose(got, ref, atol=2e-6)
    plain = predict_probabilities(net, img, slab=slab_size, pad_multiple=16, skip_empty=False)
    assert np.abs(plain - got).max() > 1e-3  # the projections do change the input


def test_cta_projections_are_built_before_a_scan_is_blanked():
    """CTA alone and NCCT alone with projections: a blanked CTA stays blank (its
    projections too), exactly as modality dropout trains it."""
    from clotseg.inference.engine import predict_alone

    net = tiny_net(6)
    img = _image()
    everywhere = np.ones(img.shape[1:], np.float32)
    ncct_alone = predict_alone(net, img, everywhere, "ncct", floor=0.5, slab=3,
                               pad_multiple=16, skip_empty=False, cta_mip=4)
    no_cta = img.copy()
    no_cta[0] = 0.0
    np.testing.assert_allclose(ncct_alone, predict_probabilities(
        net, no_cta, slab=3, pad_multiple=16, skip_empty=False, cta_mip=4), atol=2e-6)


class _SliceEcho(torch.nn.Module):
    """A volumetric stand-in: each slice's logit is a function of that slice's own CTA,
    so every block that holds a slice gives it the same value, and a block mapped onto the
    wrong slices shows. (Its 3D convolution makes the engine treat it as volumetric.)"""

    def __init__(self, slab_size: int):
        super().__init__()
        self.slab_size = slab_size
        self.unused = torch.nn.Conv3d(1, 1, 1)

    def forward(self, x):
        return 4.0 * x[:, :self.slab_size] + 0.5 * x[:, self.slab_size:] - 2.0


@pytest.mark.parametrize("batch_size", [1, 16])
def test_volumetric_blocks_are_slid_along_the_slices_and_blended_per_slice(batch_size):
    from clotseg.inference.engine import blend_weights, block_centres, marks_every_slice

    img = _image(shape=(2, 40, 36, 30), seed=4)
    img[..., :6] = 0.0  # six slices of air: 0-2 are skipped (their slabs hold no input)
    img[..., 14] = 0.0  # an empty slice inside the volume, computed
    echo = _SliceEcho(7)
    assert marks_every_slice(echo) and not marks_every_slice(tiny_net(6))
    prob = predict_probabilities(echo, img, slab=7, pad_multiple=16, batch_size=batch_size)
    zs = active_slices(content_mask(img), 7)
    want = 1.0 / (1.0 + np.exp(-(4.0 * img[0] + 0.5 * img[1] - 2.0)))
    box = content_mask(img).any(axis=2)
    np.testing.assert_allclose(prob[..., zs][box], want[..., zs][box], rtol=1e-5, atol=1e-6)
    skipped = np.setdiff1d(np.arange(30), zs)
    assert skipped.tolist() == [0, 1, 2] and (prob[..., skipped] == 0).all()
    # flips (TTA) of a slice-wise function change nothing
    tta = predict_probabilities(echo, img, slab=7, pad_multiple=16, tta=True)
    np.testing.assert_allclose(tta, prob, atol=1e-6)
    # only the slices asked for (predict_alone's restriction) are filled
    from clotseg.inference.engine import _predict_slices

    some = _predict_slices(echo, img, slab=7, pad_multiple=16, batch_size=4, device="cpu",
                           amp=False, tta=False, precision=None, skip_empty=True,
                           roi_margin=64, slices=np.array([10, 11]))
    assert set(np.flatnonzero(some.any(axis=(0, 1)))) == {10, 11}
    # every slice lies in a block; blocks stay inside the volume; Gaussian blending
    centres = block_centres(zs, 30, 7)
    assert centres.min() >= 3 and centres.max() <= 26
    assert all(np.abs(centres - z).min() <= 3 for z in zs)
    w = blend_weights(7)
    assert w.argmax() == 3 and np.allclose(w, w[::-1]) and w.min() > 0.1
