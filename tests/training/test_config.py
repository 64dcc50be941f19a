"""Typed config: presets, YAML round trip, --set overrides and their errors."""

from __future__ import annotations

import dataclasses

import pytest

from clotseg.config import Config, apply_overrides, check, load_yaml, preset, valid_keys
from clotseg.errors import ConfigError


def test_yaml_round_trip(tmp_path):
    cfg = apply_overrides(preset("default"), ["optim.lr=1e-3", "data.slab=5",
                                              "augment.scale=[0.9, 1.1]",
                                              "train.time_limit_min=2", "model.kwargs={levels: 3}"])
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    back = load_yaml(tmp_path / "c.yaml")
    assert back == cfg and back.optim.lr == 0.001 and back.data.slab == 5
    assert back.augment.scale == [0.9, 1.1] and back.train.time_limit_min == 2.0
    assert back.model.kwargs == {"levels": 3}


def test_default_preset_equals_the_dataclass_defaults():
    assert dataclasses.asdict(preset("default")) == dataclasses.asdict(Config())


def test_original_preset_reproduces_original_setup():
    cfg = check(preset("original"))
    assert cfg.model.name == "unet-original" and cfg.model.base == 32
    assert cfg.model.dropout == 0.1
    assert cfg.data.slab == 1 and cfg.data.pad_multiple == 256 and cfg.data.patch == 0
    assert cfg.optim.name == "adam" and cfg.optim.lr == 5e-4 and cfg.optim.schedule == "constant"
    assert cfg.train.batch_size == 20 and cfg.train.epochs == 100 and cfg.train.loss == "dice"
    assert cfg.data.scheme == "random" and cfg.data.split_seed == 1
    assert cfg.data.test_fraction == 0.2 and cfg.data.val_fraction == 0.2
    assert cfg.augment.spatial_prob == 0 and cfg.augment.flip > 0 and cfg.augment.blur_prob > 0


def test_bad_keys_and_values_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="valid keys: .*train.epochs"):
        apply_overrides(Config(), ["train.epoch=3"])
    with pytest.raises(ConfigError, match="valid keys: .*data.slab"):
        apply_overrides(Config(), ["nosuch.slab=3"])
    with pytest.raises(ConfigError, match="must be a number"):
        apply_overrides(Config(), ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="whole number"):
        apply_overrides(Config(), ["train.epochs=2.5"])
    with pytest.raises(ConfigError, match="true or false"):
        apply_overrides(Config(), ["train.amp=3"])
    with pytest.raises(ConfigError, match="must be one of adamw, adam, sgd"):
        apply_overrides(Config(), ["optim.name=lbfgs"])
    with pytest.raises(ConfigError, match="must be a list"):
        apply_overrides(Config(), ["augment.scale=2"])
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides(Config(), ["lr"])
    (tmp_path / "bad.yaml").write_text("optim:\n  learning_rate: 1\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_yaml(tmp_path / "bad.yaml")
    assert "data.slab" in valid_keys() and "train.time_limit_min" in valid_keys()


@pytest.mark.parametrize("override, message", [
    ("data.slab=2", "odd"), ("data.patch=40", "multiple"), ("data.clot_fraction=1.5", "within"),
    ("augment.gamma=[2, 1]", "augment.gamma"), ("data.windows={cta: [1, 0], ncct: [0, 1]}",
                                                "windows.cta"),
    ("data.target_spacing=[0.5, 0]", "target_spacing"), ("data.target_spacing=fine",
                                                         "target_spacing"),
    ("data.roi=mask", "data.roi must be one of none, auto"), ("data.roi_size_mm=5",
                                                              "roi_size_mm"),
    # each of these used to train (a probability of 2, a negative size rule) or to stop
    # with an internal error (a threshold of 1.5, zero channels, dropout 1.5)
    ("augment.flip=2", "augment.flip must be a probability"),
    ("augment.noise_std=-1", "augment.noise_std must be >= 0"),
    ("augment.rotate_deg=-400", "rotate_deg"), ("data.n_folds=1", "n_folds"),
    ("train.threshold=1.5", "train.threshold must be in"),
    ("train.threshold=0", "train.threshold must be in"),
    ("train.min_component_mm3=-3", "min_component_mm3"), ("train.patience=0", "patience"),
    ("model.base=0", "model.base"), ("model.dropout=1.5", "model.dropout"),
    ("optim.weight_decay=-1", "weight_decay"), ("optim.min_lr_ratio=2", "min_lr_ratio")])
def test_check_rejects_settings_that_cannot_work(override, message):
    with pytest.raises(ConfigError, match=message):
        check(apply_overrides(Config(), [override]))


def test_the_packaged_presets_pass_the_checks():
    for name in ("default", "original"):
        check(preset(name))
    check(apply_overrides(Config(), ["data.scheme=random", "data.n_folds=1"]))  # unused


def test_target_spacing_accepts_auto_none_and_a_list():
    for value, expected in (("auto", "auto"), ("none", "none"), ("null", None),
                            ("[0.7, 0.7, 1.0]", [0.7, 0.7, 1.0])):
        cfg = check(apply_overrides(Config(), [f"data.target_spacing={value}"]))
        assert cfg.data.target_spacing == expected


def test_modality_dropout_is_a_probability_up_to_one_half(tmp_path):
    from clotseg.runs import Run

    assert Config().train.modality_dropout == 0.4
    assert preset("original").train.modality_dropout == 0.0  # the original had none
    check(apply_overrides(preset("default"), ["train.modality_dropout=0.5"]))
    for bad in ("0.9", "-0.1"):
        with pytest.raises(ConfigError, match="train.modality_dropout must be a probability"):
            check(apply_overrides(preset("default"), [f"train.modality_dropout={bad}"]))
    # a run's config.yaml from before the setting existed: trained without it, so a
    # resume must not switch it on
    cfg = preset("default").to_dict()
    del cfg["train"]["modality_dropout"]
    import yaml

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert Run(tmp_path).read_config().train.modality_dropout == 0.0
    assert Run(tmp_path).read_config(lenient=True).train.modality_dropout == 0.0


def test_hard_negative_share_is_checked_and_old_runs_read_as_trained(tmp_path):
    import yaml

    from clotseg.runs import Run

    check(apply_overrides(preset("default"), ["data.hard_negative_fraction=0.5"]))
    with pytest.raises(ConfigError, match="hard_negative_fraction"):  # no room beside clot
        check(apply_overrides(preset("default"), ["data.hard_negative_fraction=0.6"]))
    cfg = preset("default").to_dict()
    cfg["data"]["hard_negative_fraction"] = 0.3
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert Run(tmp_path).read_config().data.hard_negative_fraction == 0.3
    del cfg["data"]["hard_negative_fraction"]  # a run from before hard negatives
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert Run(tmp_path).read_config().data.hard_negative_fraction == 0.0


def test_mined_negative_share_is_checked_and_old_runs_read_as_trained(tmp_path):
    import yaml

    from clotseg.runs import Run

    check(apply_overrides(preset("default"), ["data.hard_negative_fraction=0.25",
                                              "data.mined_negative_fraction=0.25"]))
    with pytest.raises(ConfigError, match="mined_negative_fraction"):  # 0.5 + 0.25 + 0.3 > 1
        check(apply_overrides(preset("default"), ["data.hard_negative_fraction=0.25",
                                                  "data.mined_negative_fraction=0.3"]))
    with pytest.raises(ConfigError, match="mine_every"):
        check(apply_overrides(preset("default"), ["data.mine_every=0"]))
    cfg = preset("default").to_dict()
    del cfg["data"]["mined_negative_fraction"]  # a run from before mining
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert Run(tmp_path).read_config().data.mined_negative_fraction == 0.0


def test_grow_threshold_is_checked_stored_and_old_runs_do_not_grow(tmp_path):
    import json

    import yaml

    from clotseg.runs import ModelSpec, Run
    from clotseg.training.trainer import model_spec

    assert preset("default").train.grow_threshold == 0.5
    assert model_spec(preset("default")).grow_threshold == 0.5  # what predict will use
    for bad in ("1.0", "-0.1"):
        with pytest.raises(ConfigError, match="grow_threshold"):
            check(apply_overrides(preset("default"), [f"train.grow_threshold={bad}"]))
    cfg = preset("default").to_dict()
    del cfg["train"]["grow_threshold"]  # a run from before growth
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert Run(tmp_path).read_config().train.grow_threshold == 0.0
    spec = model_spec(preset("default")).to_json()
    data = json.loads(spec)
    assert ModelSpec.from_dict({k: v for k, v in data.items() if k != "grow_threshold"}
                               ).grow_threshold is None
    with pytest.raises(ValueError, match="grow_threshold"):
        ModelSpec.from_dict({**data, "grow_threshold": 1.5})


def test_ema_decay_is_checked_and_old_runs_read_without_it(tmp_path):


    check(apply_overrides(preset("default"), ["train.ema_decay=0.998"]))
    for bad in ("1.0", "-0.5"):
        with pytest.raises(ConfigError, match=r"train.ema_decay must be in \[0, 1\)"):
            check(apply_overrides(preset("default"), [f"train.ema_decay={bad}"]))
    assert _read_back_without(tmp_path, "train", "ema_decay") == 0.0


def test_views_are_checked_stored_and_old_runs_predict_axial(tmp_path):
    import json

    from clotseg.runs import ModelSpec
    from clotseg.training.trainer import model_spec

    cfg = check(apply_overrides(preset("default"), ["data.views=[axial, coronal, sagittal]"]))
    assert model_spec(cfg).views == ["axial", "coronal", "sagittal"]
    for bad in ("[]", "[axial, axial]", "[oblique]", "axial", "[[axial]]"):
        with pytest.raises(ConfigError, match="data.views must be a list"):
            check(apply_overrides(preset("default"), [f"data.views={bad}"]))
    assert _read_back_without(tmp_path, "data", "views") == ["axial"]
    data = json.loads(model_spec(cfg).to_json())
    assert ModelSpec.from_dict(data).slice_views == ["axial", "coronal", "sagittal"]
    assert ModelSpec.from_dict({k: v for k, v in data.items() if k != "views"}
                               ).slice_views == ["axial"]
    for bad in (["coronal", "coronal"], ["up"], "axial", []):
        with pytest.raises(ValueError, match="'views' must be"):
            ModelSpec.from_dict({**data, "views": bad})


def test_average_last_is_off_by_default_and_in_old_runs(tmp_path):


    assert preset("default").train.average_last is False
    assert check(apply_overrides(preset("default"), ["train.average_last=true"])
                 ).train.average_last is True
    with pytest.raises(ConfigError, match="average_last"):
        apply_overrides(preset("default"), ["train.average_last=3"])
    assert _read_back_without(tmp_path, "train", "average_last") is False


def test_slice_axis_and_clot_augmentations_are_checked_and_off_in_old_runs(tmp_path):


    cfg = check(apply_overrides(preset("default"), ["augment.thick_ncct_prob=0.3",
                                                     "augment.thick_ncct_mm=[2.5, 5]"]))
    assert cfg.augment.thick_ncct_prob == 0.3 and cfg.augment.thick_ncct_mm == [2.5, 5]
    for bad, what in (("augment.thick_ncct_prob=1.5", "thick_ncct_prob"),
                      ("augment.thick_ncct_mm=[5, 2.5]", "thick_ncct_mm"),
                      ("augment.thick_ncct_mm=[0, 5]", "thick_ncct_mm"),
                      ("augment.z_blur_prob=-0.1", "z_blur_prob"),
                      ("augment.z_blur_mm=[1]", "z_blur_mm"),
                      ("augment.isodense_prob=2", "isodense_prob"),
                      ("augment.isodense_strength=[0.5, 1.5]", "isodense_strength"),
                      ("augment.isodense_strength=[1, 0.5]", "isodense_strength")):
        with pytest.raises(ConfigError, match=what):
            check(apply_overrides(preset("default"), [bad]))
    assert _read_back_without(tmp_path, "augment", "thick_ncct_prob", "z_blur_prob") == 0.0
    assert _read_back_without(tmp_path, "augment", "z_blur_prob", "thick_ncct_prob") == 0.0
    assert _read_back_without(tmp_path, "augment", "isodense_prob") == 0.0


def test_stratified_split_setting_is_checked_and_off_in_old_runs(tmp_path):


    assert preset("default").data.stratify is False  # measured worse in one run (README)
    assert preset("original").data.stratify is False  # the original split was plain random
    assert check(apply_overrides(preset("default"), ["data.stratify=true"])).data.stratify
    with pytest.raises(ConfigError, match="stratify"):
        apply_overrides(preset("default"), ["data.stratify=3"])
    assert _read_back_without(tmp_path, "data", "stratify") is False


def test_cta_projections_setting_is_checked_in_config_and_model_json(tmp_path):

    from clotseg.runs import ModelSpec

    assert preset("default").data.cta_mip == 0
    assert check(apply_overrides(preset("default"), ["data.cta_mip=6"])).data.cta_mip == 6
    for bad in (["data.cta_mip=1"], ["data.cta_mip=-2"], ["data.slab=1", "data.cta_mip=4"]):
        with pytest.raises(ConfigError, match="cta_mip"):
            check(apply_overrides(preset("default"), bad))
    assert _read_back_without(tmp_path, "data", "cta_mip") == 0
    base = {"model_name": "unet-original", "model_kwargs": {}, "slab": 3}
    assert ModelSpec.from_dict(base).cta_mip == 0  # model.json from before: no projections
    assert ModelSpec.from_dict({**base, "cta_mip": 5}).cta_mip == 5
    for bad in (1, 2.5, True, -1):
        with pytest.raises(ValueError, match="cta_mip"):
            ModelSpec.from_dict({**base, "cta_mip": bad})


def _read_back_without(tmp_path, section: str, *keys: str):
    """The value a run whose ``config.yaml`` lacks ``section.key`` (written before the
    setting existed) reads back for the first key, as ``Run.read_config`` fills it in."""
    import yaml

    from clotseg.runs import Run

    old = preset("default").to_dict()
    for key in keys:
        del old[section][key]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    return getattr(getattr(Run(tmp_path).read_config(), section), keys[0])


def test_ncct_share_of_modality_dropout_is_checked_and_even_in_old_runs(tmp_path):
    assert preset("default").train.modality_dropout_ncct == 0.5
    cfg = check(apply_overrides(preset("default"), ["train.modality_dropout_ncct=0.8"]))
    assert cfg.train.modality_dropout_ncct == 0.8
    for bad in ("1.5", "-0.1"):
        with pytest.raises(ConfigError, match="modality_dropout_ncct"):
            check(apply_overrides(preset("default"), [f"train.modality_dropout_ncct={bad}"]))
    assert _read_back_without(tmp_path, "train", "modality_dropout_ncct") == 0.5


def test_mirror_is_checked_stored_only_when_on_and_off_in_old_runs(tmp_path):
    from clotseg.training.trainer import build_model, model_spec

    plain = check(preset("default"))
    assert plain.model.mirror is False and "mirror" not in model_spec(plain).model_kwargs
    cfg = check(apply_overrides(preset("default"), ["model.mirror=true",
                                                    "data.views=[axial, coronal]"]))
    spec = model_spec(cfg)
    assert spec.model_kwargs["mirror"] is True
    assert type(build_model(spec)).__name__ == "MirrorInput"
    with pytest.raises(ConfigError, match="a sagittal slice has no left-right axis"):
        check(apply_overrides(preset("default"), ["model.mirror=true",
                                                  "data.views=[axial, sagittal]"]))
    with pytest.raises(ConfigError, match="model.mirror must be true or false"):
        check(apply_overrides(preset("default"), ["model.mirror=2"]))
    with pytest.raises(ConfigError, match="model.kwargs must not set mirror"):
        check(apply_overrides(preset("default"), ["model.kwargs={mirror: true}"]))
    assert _read_back_without(tmp_path, "model", "mirror") is False


def test_volumetric_model_needs_a_block_of_thin_slices():
    from clotseg.training.trainer import build_model, model_spec

    cfg = check(apply_overrides(preset("default"), ["model.name=monai-dynunet-3d",
                                                    "data.slab=17", "model.base=8"]))
    model = build_model(model_spec(cfg))
    assert type(model).__name__ == "VolumetricUNet" and model.slices == 17
    for overrides, message in (
            (["data.slab=3"], "data.slab must be at least 5"),
            (["data.slab=9", "data.cta_mip=8"], "data.cta_mip must be 0"),
            (["data.slab=9", "model.mirror=true"], "model.mirror is not available"),
            (["data.slab=9", "data.pad_multiple=8"], "multiple of 16"),
            (["data.slab=9", "model.deep_supervision=4"], "model.deep_supervision must be"),
            (["data.slab=9", "model.deep_supervision=true"], "model.deep_supervision must be")):
        with pytest.raises(ConfigError, match=message):
            check(apply_overrides(preset("default"), ["model.name=monai-dynunet-3d",
                                                      *overrides]))
    # the same settings are fine for a slice network, deep supervision is not
    check(apply_overrides(preset("default"), ["data.slab=3", "data.pad_multiple=8"]))
    with pytest.raises(ConfigError, match="deep_supervision is for the volumetric"):
        check(apply_overrides(preset("default"), ["model.deep_supervision=1"]))
    # heads go into the saved constructor arguments only when asked for
    assert "deep_supervision" not in model_spec(cfg).model_kwargs
    ds = check(apply_overrides(preset("default"), ["model.name=monai-dynunet-3d",
                                                   "data.slab=9", "model.deep_supervision=2"]))
    assert model_spec(ds).model_kwargs["deep_supervision"] == 2
    assert build_model(model_spec(ds)).net.deep_supervision is True
