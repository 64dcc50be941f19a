"""Every registered network: 2.5D input of odd sizes in, logits of the same size out (one
map for the slab's centre slice, or one per slice for a volumetric network)."""

from __future__ import annotations

import copy

import pytest
import torch

from clotseg.data.slabs import pad_to_multiple
from clotseg.models import VOLUMETRIC_MODELS, available_models, create_model

#: The built-in networks (tests of other modules register test-only models too).
BUILTIN = [n for n in available_models() if not n.startswith("test-")]


def test_registry_lists_required_models():
    assert {"unet-original", "fusion-unet", "monai-unet"} <= set(available_models())
    with pytest.raises(KeyError, match="available"):
        create_model("nope")


@pytest.mark.parametrize("name", BUILTIN)
def test_forward_backward_odd_sizes(name):
    torch.manual_seed(0)
    model = create_model(name, in_channels=6, base=4)
    x = torch.rand(2, 6, 37, 45).numpy()
    xp, crop = pad_to_multiple(x, 16)
    xt = torch.from_numpy(xp).requires_grad_(True)
    out = model(xt)
    assert out.shape == (2, 3 if name in VOLUMETRIC_MODELS else 1, *xp.shape[-2:])
    out[:, :, crop[0], crop[1]].mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_unet_original_widths_follow_the_original():
    model = create_model("unet-original", in_channels=2)  # base 32 = original
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    outs = [c.out_channels for c in convs]
    assert outs[:6] == [32, 32, 64, 64, 128, 128]
    centre = [c for c in convs if c.out_channels == 256]
    assert [c.kernel_size for c in centre] == [(3, 3), (3, 3), (1, 1), (1, 1)]
    assert convs[-1].out_channels == 1 and convs[-1].kernel_size == (1, 1)


def test_fusion_unet_keeps_modalities_apart():
    model = create_model("fusion-unet", in_channels=6, base=4).eval()
    x = torch.rand(1, 6, 32, 32)
    first_cta = model.enc_cta.blocks[0][0]
    assert first_cta.in_channels == 3  # CTA slab only
    y1 = model(x)
    x2 = x.clone()
    x2[:, 3:] = 0  # NCCT channels matter
    assert not torch.allclose(y1, model(x2))


@pytest.mark.parametrize("name", BUILTIN)
def test_rebuilt_from_json_kwargs_gives_the_same_output(name):
    import json

    kwargs = json.loads(json.dumps({"in_channels": 2, "base": 4, "dropout": 0.1}))
    torch.manual_seed(1)
    a = create_model(name, **kwargs).eval()
    b = create_model(name, **kwargs).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 2, 32, 48)
    torch.testing.assert_close(a(x), b(x))


class _Recorder(torch.nn.Module):
    """Returns its input's first channel and keeps the input it was given."""

    def __init__(self, in_channels: int = 2):
        super().__init__()
        self.in_channels, self.seen = in_channels, None

    def forward(self, x):
        self.seen = x
        return x[:, :1]


def test_mirror_hands_the_network_each_modality_and_its_left_right_mirror():
    from clotseg.models.mirror import MirrorInput, mirrored

    model = mirrored(_Recorder, 6)
    assert isinstance(model, MirrorInput) and model.net.in_channels == 12
    x = torch.arange(2 * 6 * 5 * 4, dtype=torch.float32).reshape(2, 6, 5, 4)
    model(x)
    seen = model.net.seen
    assert seen.shape == (2, 12, 5, 4)
    # grouped by modality: CTA slab, CTA mirrored, NCCT slab, NCCT mirrored
    torch.testing.assert_close(seen[:, 0:3], x[:, 0:3])
    torch.testing.assert_close(seen[:, 3:6], x[:, 0:3].flip(2))
    torch.testing.assert_close(seen[:, 6:9], x[:, 3:6])
    torch.testing.assert_close(seen[:, 9:12], x[:, 3:6].flip(2))
    # the mirror is along the slice's first axis (canonical X, left-right), not the second
    assert torch.equal(seen[0, 3, 0], x[0, 0, -1]) and not torch.equal(seen[0, 3, 0], x[0, 0, 0])
    # training batches arrive mirrored already (the whole slice, before the crop)
    ready = torch.rand(2, 12, 5, 4)
    model(ready)
    assert model.net.seen is ready
    with pytest.raises(ValueError, match="expected 6 input channels"):
        model(torch.rand(2, 8, 5, 4))


@pytest.mark.parametrize("name", ["unet-original", "fusion-unet"])
def test_mirrored_model_trains_and_is_rebuilt_from_its_json_kwargs(name):
    import json

    kwargs = json.loads(json.dumps({"in_channels": 6, "base": 4, "dropout": 0.1,
                                    "mirror": True}))
    torch.manual_seed(2)
    a = create_model(name, **kwargs)
    x = torch.rand(2, 6, 32, 48)
    a(x).mean().backward()
    first = next(m for m in a.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
    a.eval()
    b = create_model(name, **kwargs).eval()
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x), b(x))
    # a plain model cannot take the mirrored one's weights: the spec must say mirror
    with pytest.raises(RuntimeError):
        create_model(name, **{**kwargs, "mirror": False}).load_state_dict(a.state_dict())
    with pytest.raises(TypeError, match="mirror must be true or false"):
        create_model(name, **{**kwargs, "mirror": "yes"})


def test_volumetric_network_marks_every_slice_from_its_neighbours_in_3d():
    from clotseg.models.volumetric import VolumetricUNet, is_volumetric

    torch.manual_seed(3)
    model = create_model("monai-dynunet-3d", in_channels=10, base=4).eval()
    assert isinstance(model, VolumetricUNet) and model.slices == 5 and is_volumetric(model)
    assert not is_volumetric(create_model("unet-original", in_channels=10, base=4))
    x = torch.rand(2, 10, 32, 48)
    out = model(x)
    assert out.shape == (2, 5, 32, 48)
    # A change in the first slice of either scan reaches the last slice's logits (3D
    # context), and only the sample that was changed.
    for channel in (0, 5):
        x2 = x.clone()
        x2[0, channel] = 1.0 - x2[0, channel]
        out2 = model(x2)
        assert (out2[0, 4] - out[0, 4]).abs().max() > 1e-6
        torch.testing.assert_close(out2[1], out[1])
    with pytest.raises(ValueError, match="built for 5 slices"):
        model(torch.rand(1, 6, 32, 32))
    with pytest.raises(ValueError, match="even number"):
        create_model("monai-dynunet-3d", in_channels=5)


def test_volumetric_network_returns_its_deep_supervision_heads_in_training_only():
    torch.manual_seed(4)
    model = create_model("monai-dynunet-3d", in_channels=10, base=4, deep_supervision=2)
    x = torch.rand(2, 10, 32, 48)
    heads = model.train()(x)
    assert heads.shape == (2, 3, 5, 32, 48)  # full resolution first, then two coarser
    # The coarser heads are upsampled from coarser grids: blockier than the main output.
    assert not torch.equal(heads[:, 0], heads[:, 1])
    # Nothing of the step is kept in the module: it deep-copies (as validation does) and
    # the copy gives the same output.
    copied = copy.deepcopy(model)
    torch.testing.assert_close(copied.eval()(x), model.eval()(x))
    assert model.eval()(x).shape == (2, 5, 32, 48)
    plain = create_model("monai-dynunet-3d", in_channels=10, base=4)
    assert plain.train()(x).shape == (2, 5, 32, 48)
    for bad in (4, -1, True, 1.5):
        with pytest.raises(ValueError, match="deep_supervision"):
            create_model("monai-dynunet-3d", in_channels=10, deep_supervision=bad)
