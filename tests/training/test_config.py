"""Typed config: presets, YAML round trip, --set overrides and their errors."""

from __future__ import annotations

import pytest

from clotseg.config import Config, apply_overrides, load_yaml, preset, valid_keys
from clotseg.errors import ConfigError


def test_yaml_round_trip(tmp_path):
    cfg = apply_overrides(preset("default"), ["optim.lr=1e-3", "data.slab=5",
                                              "augment.scale=[0.9, 1.1]"])
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    back = load_yaml(tmp_path / "c.yaml")
    assert back == cfg and back.optim.lr == 0.001 and back.data.slab == 5


def test_original_preset_reproduces_original_setup():
    cfg = preset("original")
    assert cfg.model.name == "unet-original" and cfg.model.base == 32
    assert cfg.data.slab == 1 and cfg.data.pad_multiple == 256
    assert cfg.optim.name == "adam" and cfg.optim.lr == 5e-4
    assert cfg.train.batch_size == 20 and cfg.train.epochs == 100 and cfg.train.loss == "dice"
    assert cfg.data.scheme == "random" and cfg.data.split_seed == 1


def test_bad_keys_and_values_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="valid keys: .*train.epochs"):
        apply_overrides(Config(), ["train.epoch=3"])
    with pytest.raises(ConfigError, match="must be a number"):
        apply_overrides(Config(), ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides(Config(), ["lr"])
    (tmp_path / "bad.yaml").write_text("optim:\n  learning_rate: 1\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_yaml(tmp_path / "bad.yaml")
    assert "data.slab" in valid_keys()
