"""Typed training configuration: dataclasses, YAML presets, ``--set section.key=value``.

Every setting lives here (no hyper-parameters hidden in code); the fully resolved config is
saved as ``RUN/config.yaml`` so a run can be reproduced from its folder alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from clotseg.errors import ConfigError


@dataclass
class DataConfig:
    slab: int = 3  # neighbouring slices per modality (2.5D); 1 = original 2-channel input
    windows: dict = field(default_factory=lambda: {"cta": [-100.0, 700.0], "ncct": [0.0, 100.0]})
    pad_multiple: int = 16
    patch: int = 64  # training crop (pixels, multiple of pad_multiple); 0 = whole slice
    clot_fraction: float = 0.5  # share of each batch drawn from slices that contain clot
    scheme: str = "kfold"  # kfold | random (the original 60/20/20)
    n_folds: int = 5
    fold: int = 0
    test_fraction: float = 0.2
    val_fraction: float = 0.2  # only for scheme=random
    split_seed: int = 0
    splits: str | None = None  # reuse an existing splits.json
    cache_dir: str | None = None  # default RUN/cache


@dataclass
class ModelConfig:
    name: str = "unet-original"
    base: int = 16  # width of the first level (32 = original)
    dropout: float = 0.1


@dataclass
class AugmentConfig:
    enabled: bool = True
    flip: float = 0.5  # probability per axis (left-right, anterior-posterior)
    rotate_deg: float = 15.0
    scale: list = field(default_factory=lambda: [0.85, 1.15])
    spatial_prob: float = 0.7
    brightness: float = 0.1  # additive, in normalised units
    contrast: float = 0.15  # multiplicative around the mean
    gamma: list = field(default_factory=lambda: [0.8, 1.25])
    blur_prob: float = 0.2
    noise_std: float = 0.03
    intensity_prob: float = 0.8


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | adam | sgd
    lr: float = 3e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | constant
    warmup_epochs: int = 1
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 16
    steps_per_epoch: int = 80
    time_limit_min: float | None = None
    patience: int = 12  # early stopping on validation Dice
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast where supported (CUDA); fp32 on CPU
    channels_last: bool = True  # on CUDA
    compile: bool = False
    deterministic: bool = False
    loss: str = "dice_bce"  # dice_bce | dice | dice_focal
    threshold: float = 0.5
    min_component_mm3: float = 5.0
    val_batch_size: int = 32


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def valid_keys(cfg: Config | None = None) -> list[str]:
    cfg = cfg or Config()
    return [f"{s.name}.{f.name}" for s in dataclasses.fields(cfg)
            for f in dataclasses.fields(getattr(cfg, s.name))]


def from_dict(data: dict[str, Any], base: Config | None = None, source: str = "config") -> Config:
    """Apply a nested dict onto ``base`` (defaults when None), rejecting unknown keys."""
    cfg = base or Config()
    for section, values in (data or {}).items():
        if not hasattr(cfg, section) or not isinstance(values, dict):
            raise ConfigError(f"{source}: unknown section {section!r}; valid keys: "
                              + ", ".join(valid_keys(cfg)))
        for key, value in values.items():
            set_value(cfg, f"{section}.{key}", value, source)
    return cfg


def set_value(cfg: Config, dotted: str, value: Any, source: str = "--set") -> None:
    section, _, key = dotted.partition(".")
    sub = getattr(cfg, section, None)
    if sub is None or not key or key not in {f.name for f in dataclasses.fields(sub)}:
        raise ConfigError(f"{source}: unknown key {dotted!r}; valid keys: "
                          + ", ".join(valid_keys(cfg)))
    current = getattr(sub, key)
    if isinstance(current, bool) and not isinstance(value, bool):
        raise ConfigError(f"{source}: {dotted} must be true or false, got {value!r}")
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        try:  # YAML reads "1e-3" as a string
            value = float(value) if isinstance(value, str) else value
        except ValueError:
            pass
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{source}: {dotted} must be a number, got {value!r}")
        if isinstance(current, int) and float(value).is_integer():
            value = int(value)
    setattr(sub, key, value)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings (values parsed as YAML)."""
    import yaml

    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: cannot parse value ({exc})") from None
        set_value(cfg, key.strip(), value)
    return cfg


def load_yaml(path: str | Path, base: Config | None = None) -> Config:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: config must be a mapping of sections")
    return from_dict(data, base, source=str(path))


PRESETS = ("default", "original")


def preset(name: str) -> Config:
    """A packaged preset: ``default`` (phantom, CPU-friendly) or ``original``."""
    import yaml

    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    text = resources.files("clotseg.configs").joinpath(f"{name}.yaml").read_text()
    return from_dict(yaml.safe_load(text) or {}, source=f"preset {name}")
