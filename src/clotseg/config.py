"""Typed training configuration: dataclasses, YAML presets, ``--set section.key=value``.

Every setting lives here (no hyper-parameters hidden in code); the fully resolved config is
saved as ``RUN/config.yaml`` so a run can be reproduced from its folder alone. The
dataclass defaults are the ``default`` preset (tuned for the phantom on a 2-core CPU);
``configs/original.yaml`` reproduces the original research setup.

Errors (unknown key, wrong type, value out of range) raise :class:`ConfigError`, which the
CLI reports in one line with exit code 1; unknown keys list every valid key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from clotseg.errors import ConfigError

#: Default HU windows of the network input, the one definition (``data.windows``,
#: :func:`clotseg.data.slabs.prepare_case`). CTA: just below brain to the start of the
#: contrast lumen, so the clot itself (≈ 40–80 HU) stands out from the brain around it
#: (≈ 20–45 HU) by a tenth of the window; the lumen, calcification and bone saturate
#: together, which the NCCT separates (lumen ≈ 40 HU there, calcification above 100). The
#: earlier −100..700 HU made that difference a fortieth of the window: a network trained
#: on the CTA alone for 10 minutes reached a validation Dice of 0.29 with it, 0.61 with
#: this one (README, "Quality on unseen data"). NCCT: a narrow window around blood/clot
#: density (40–61 HU) keeps the faint hyperdensity visible. Fixed windows, not per-case
#: percentiles, so that inputs are in HU. Figures use their own display windows
#: (:mod:`clotseg.report.figures`).
DEFAULT_WINDOWS: dict[str, tuple[float, float]] = {"cta": (-20.0, 300.0), "ncct": (0.0, 100.0)}
#: The windows of every run trained before :data:`DEFAULT_WINDOWS` changed: a ``model.json``
#: without ``windows`` was written with these.
LEGACY_WINDOWS: dict[str, tuple[float, float]] = {"cta": (-100.0, 700.0), "ncct": (0.0, 100.0)}


#: Highest ``train.modality_dropout``: above it most samples would lack a modality and the
#: paired CTA+NCCT input, the main use, would be the minority of what the network sees.
MAX_MODALITY_DROPOUT = 0.5

#: ``data.roi`` values. ``preprocess --roi mask`` has no counterpart: predict has no mask
#: to centre a box on.
TRAIN_ROI_MODES = ("none", "auto")


#: Slice orientations a 2.5D network can be trained on (``data.views``): the canonical
#: spatial axes (0 = X left-right, 1 = Y anterior-posterior, 2 = Z head-foot) that become
#: a view's (X, Y, Z); its Z is the axis slices are cut across
#: (:mod:`clotseg.data.slabs`, where the views are used).
VIEWS: dict[str, tuple[int, int, int]] = {"axial": (0, 1, 2), "coronal": (0, 2, 1),
                                          "sagittal": (1, 2, 0)}


def valid_views(views: object) -> bool:
    """True for a non-empty list of distinct :data:`VIEWS` names (``data.views``, and
    ``views`` in ``model.json``).

    Examples:
        >>> valid_views(["axial", "coronal"]), valid_views(["axial", "axial"]), valid_views([])
        (True, False, False)
    """
    return (isinstance(views, list) and bool(views)
            and all(isinstance(v, str) and v in VIEWS for v in views)
            and len(set(views)) == len(views))


#: Networks that read a block of ``data.slab`` slices as one volume and mark every slice
#: (:mod:`clotseg.models.volumetric`), where the others mark the slab's centre slice.
VOLUMETRIC_MODELS = frozenset({"monai-dynunet-3d"})


def default_windows() -> dict[str, list[float]]:
    """:data:`DEFAULT_WINDOWS` as lists, the form a config and ``model.json`` store.

    Examples:
        >>> default_windows()["cta"]
        [-20.0, 300.0]
    """
    return {name: list(window) for name, window in DEFAULT_WINDOWS.items()}


@dataclass
class DataConfig:
    slab: int = 3  # neighbouring slices per modality (2.5D, odd); 1 = original 2-channel input
    windows: dict = field(default_factory=default_windows)  # HU [low, high] per modality
    pad_multiple: int = 16  # slices are zero-padded to a multiple of this (train and predict)
    # Resample every case to one voxel size (mm, patient x y z) before training, and every
    # scan at predict time (the mask is mapped back onto the CTA grid): "auto" = the median
    # spacing of the training cases (as nnU-Net does), a list [x, y, z], or none = each
    # scan's own spacing. Makes the model see vessels at one size whatever the scanner.
    target_spacing: list | str | None = "auto"
    # Crop every case to the automatic Circle-of-Willis box (as `preprocess --roi auto`)
    # when it is cached, and every new scan the same way at predict time: "none" keeps the
    # whole volume, "auto" is for raw whole-head scans (a 512 x 512 x 300 CTA caches a
    # fifth of its voxels and training crops land near the vessels, not in the skull).
    # A dataset written by `clotseg preprocess` carries its own ROI.
    roi: str = "none"
    roi_size_mm: float = 120.0  # edge of the ROI cube (mm)
    patch: int = 64  # square training crop in pixels; 0 = the padded full slice
    # slice orientations the network is trained on and predicts, averaged at predict
    # (data/slabs.py): axial, coronal, sagittal. More views see head-to-foot vessels (ICA,
    # basilar) along their length, for one more 2D pass per view at predict time; at the
    # 30-minute CPU budget all three were no better on unseen patients and cut ICA clots
    # short (the views share the samples; README), hence axial only by default.
    views: list = field(default_factory=lambda: ["axial"])
    # CTA projections (data/slabs.py): the slab's outer CTA slices become maximum-intensity
    # projections reaching this many slices either side (0 = off; > slab // 2): the
    # opacified lumen above and below a clot, which the thin slab leaves out. 8 measured
    # no better: ICA clots found as by the best default run, M2 clots lost (README,
    # quality_30min_stratified_cta_mip8_90patients.json).
    cta_mip: int = 0
    clot_fraction: float = 0.5  # share of each batch drawn from slices that contain clot
    # How the clot-centred share is spread: "slice" (each clot slice alike, so a clot
    # 40 slices long is drawn ten times as often as a 4-slice distal one) or "clot" (each
    # training case's clot alike, then a slice of it).
    clot_sampling: str = "slice"
    # share of each batch centred near a vessel or a dense spot outside the clot (hard
    # negatives, data/cache.py): teaches clot vs other vessel, where specks appear
    hard_negative_fraction: float = 0.0
    # Mined negatives (training/mining.py): every ``mine_every`` epochs the network predicts
    # ``mine_cases`` training cases (in turn) and the voxels it calls clot outside the clot
    # become crop centres for this share of each batch. Unlike the HU-defined hard
    # negatives these are whatever the network itself gets wrong (slow-flow segments,
    # plaque, a bifurcation), on any data. 0 = off: at 0.25 two seeds disagreed (shifted
    # site: 18 missed / 3 clot-free patients with a speck, and 9 / 9; defaults 15-17 / 4-5;
    # README, quality_30min_mined025*_90patients.json).
    mined_negative_fraction: float = 0.0
    mine_every: int = 5
    mine_cases: int = 16
    scheme: str = "kfold"  # kfold | random (the original 60/20/20)
    n_folds: int = 5
    fold: int = 0
    test_fraction: float = 0.2  # held-out test cases (both schemes)
    val_fraction: float = 0.2  # only for scheme=random
    split_seed: int = 0
    # Share clot-free and clot cases out over test / validation / training in proportion
    # (read from the masks; data/splits.py): a validation set without a clot-free patient
    # chooses the threshold and the review threshold blind to false-positive patients.
    # Off by default: one 30-minute run with it kept an early epoch whose validation Dice
    # spiked (25 of 72) and did worse on unseen patients (README, quality_30min_stratified*).
    stratify: bool = False
    splits: str | None = None  # reuse an existing splits.json (compare runs on the same cases)
    cache_dir: str | None = None  # memory-mapped cache of prepared cases; default RUN/cache
    loader: str = "auto"  # auto | resident (cohort in device memory) | stream (DataLoader)
    workers: int = 0  # DataLoader worker processes for the stream loader


@dataclass
class ModelConfig:
    # unet-original | fusion-unet | monai-unet | monai-dynunet (2.5D: the slab's centre
    # slice) | monai-dynunet-3d (3D over data.slab slices, every one marked; e.g. slab 9).
    # 3D at the 30-min CPU budget (slab 9, base 8, bf16; two seeds): 36-37 epochs, 13-14
    # of 14 clot-free shifted patients with a speck, but 15 and 17 of 19 shifted ICA clots
    # found (2.5D 9-13; README, quality_30min_dynunet3d*_90patients.json): for larger
    # budgets.
    name: str = "unet-original"
    base: int = 16  # width of the first level (32 = original)
    dropout: float = 0.1
    # The network also reads every input channel mirrored left to right about the
    # slice's centre, so that each pixel sees the other hemisphere's mirror point
    # (clotseg.models.mirror). Not with a sagittal view (no left-right axis). Off: a
    # 30-min run with it missed 29 of 76 clots of the phantom's unseen site (defaults
    # 15-21; README, quality_30min_mirror*_90patients.json).
    mirror: bool = False
    # monai-dynunet-3d only: this many extra output heads at coarser decoder levels (0-3),
    # trained with halving weights and dropped at prediction (nnU-Net trains its 3D U-Nets
    # this way; clotseg.models.volumetric). 0 = off.
    deep_supervision: int = 0
    kwargs: dict = field(default_factory=dict)  # extra constructor arguments of the model


@dataclass
class AugmentConfig:
    enabled: bool = True
    flip: float = 0.5  # probability per axis (left-right, anterior-posterior)
    spatial_prob: float = 0.7  # probability of a rotation + scale
    rotate_deg: float = 15.0
    scale: list = field(default_factory=lambda: [0.85, 1.15])
    intensity_prob: float = 0.8  # probability of brightness/contrast/gamma (per modality)
    brightness: float = 0.1  # additive shift, in normalised units
    contrast: float = 0.3  # multiplicative change around the mean (contrast timing)
    gamma: list = field(default_factory=lambda: [0.8, 1.25])
    # The scanner-shift knobs below are wide on purpose (domain randomisation). Two
    # 30-minute runs with them, scored on 90 unseen patients of the shifted phantom site,
    # missed 29 and 27 of 76 clots (mild settings: 28-37 over five runs) with a Dice
    # median over clot patients of 0.37 and 0.53 (mild: 0.16-0.25), and did no worse on
    # the training site (benchmarks/results/quality_30min_wide_aug*_90patients.json).
    # At 20 epochs they had learned slower (quality_20ep_*.json): short budgets pay.
    hu_shift: float = 15.0  # calibration offset per modality, HU (with intensity_prob)
    lowres_prob: float = 0.2  # simulate a coarser in-plane resolution
    lowres_zoom: list = field(default_factory=lambda: [0.5, 1.0])
    blur_prob: float = 0.3
    blur_sigma: list = field(default_factory=lambda: [0.3, 1.5])  # pixels
    noise_prob: float = 0.4
    noise_std: float = 0.03  # largest noise standard deviation, normalised units
    noise_hu: float = 15.0  # largest extra noise standard deviation, HU, both modalities
    # Share of samples whose NCCT is made to look reconstructed at thick slices (clinics
    # often keep the NCCT at 2.5-5 mm): the slab's NCCT is rebuilt from a window of thin
    # slices as the mean over each thick slice, interpolated back onto the thin grid, as
    # predict sees a thick NCCT after resampling (clotseg.data.augment.thick_slice_weights;
    # axial view only). 0 = off.
    thick_ncct_prob: float = 0.0
    thick_ncct_mm: list = field(default_factory=lambda: [2.5, 5.0])  # slice thickness range
    # Share of samples blurred across slices (both modalities, one Gaussian sigma in mm):
    # a scanner's blur is 3D, `blur_*` above blurs within the slice only. 0 = off.
    z_blur_prob: float = 0.0
    z_blur_mm: list = field(default_factory=lambda: [0.3, 1.2])  # Gaussian sigma range, mm
    # Share of clot samples whose clot is made isodense on the NCCT: inside the mask the
    # clot's excess over its surroundings is reduced by a share in isodense_strength
    # (clotseg.data.augment.isodense_clot). Many real clots show no hyperdense sign, and
    # on the shifted phantom site the clots every run missed had none (NCCT clot minus
    # tissue 0.4 HU, against 10.7 HU for those every run found; detectability.py). 0 = off.
    # 0.5 in two 30-min runs: 18 and 19 of 76 shifted clots missed (defaults 22-28), 13
    # and 15 on the training site (6-9); 0.25, three seeds: 17 / 10, 15 / 12 and 21 / 11
    # (quality_30min_isodense0{5,25}*_90patients.json): the default, for the unseen site.
    isodense_prob: float = 0.25
    isodense_strength: list = field(default_factory=lambda: [0.7, 1.0])


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | adam | sgd
    lr: float = 3e-3
    weight_decay: float = 1e-4
    momentum: float = 0.99  # sgd only
    schedule: str = "cosine"  # cosine | onecycle | constant
    warmup: float = 0.03  # fraction of the schedule spent warming up linearly
    min_lr_ratio: float = 0.02  # final learning rate / lr (cosine)
    grad_clip: float = 1.0  # max gradient norm; 0 = off


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 16  # per process
    steps_per_epoch: int = 80
    time_limit_min: float | None = None  # stop (with a checkpoint) when this budget is used
    schedule_by_time: bool = True  # with a time limit, fit the LR schedule into it
    patience: int = 12  # early stopping: epochs without a better validation Dice
    # ... counted only once the learning-rate schedule is this far (0-1): while the rate
    # is high the validation Dice swings, an early lucky epoch must not end the run, and
    # the best epochs of a cosine schedule come at its low-rate end (30-min phantom runs:
    # best at epochs 45/53, 57/59; stopping from half the schedule cut one at 63 of ~110)
    patience_from: float = 0.8
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast where supported (train.precision); false = fp32 always
    # Precision of the training steps (validation and predict keep their own rule: fp32 on
    # the CPU). auto: bf16 on CUDA cards that support it, fp32 on the CPU; bf16: also on
    # the CPU, where oneDNN runs it natively on CPUs with AVX512-BF16 or AMX (full
    # training step 1.48x faster for unet-original base 16 on 2 EPYC cores,
    # benchmarks/results/train_throughput_cpu_bf16.json; only 1.11x more epochs in a
    # 30-min run, whose fp32 validation does not speed up) and emulates it, slower than
    # fp32, elsewhere; fp32: never bf16.
    precision: str = "auto"
    channels_last: bool = True  # NHWC memory layout (faster convolutions on CPU and GPU)
    compile: bool = False  # torch.compile the model
    deterministic: bool = False  # deterministic algorithms (bit-for-bit resume on CPU)
    loss: str = "dice_bce"  # dice_bce | dice_bce_sample | dice_focal | dice (the original's)
    threshold: float = 0.5  # on the sigmoid probability (validation and predict)
    min_component_mm3: float = 5.0  # smaller predicted components are dropped
    # The kept clot is then grown into the touching voxels of at least this probability
    # (0 = off): a slice-wise network marks the clot's confident core, the rest of its
    # length sits just below the (validation-chosen, often 0.8) threshold. On saved maps of
    # two 30-min phantom runs and the demo's run, 0.5 raised the Dice median of unseen
    # patients by 0.04-0.16 without changing which patients got a mask; 0.3-0.4 grew the
    # demo's clots well past their true volume (clotseg.masks.grow_into;
    # benchmarks/results/quality_postprocess_grow.json)
    grow_threshold: float = 0.5
    tune_postprocess: bool = True  # pick threshold + min component on validation at the end
    fp_filter: bool = False  # learn a component filter on validation (lost test clots: off)
    val_batch_size: int = 32
    threads: int = 0  # CPU threads for torch; 0 = leave torch's default
    # Each training sample, with this probability, has one modality (CTA or NCCT, 50/50)
    # replaced by the "missing" input (clotseg.data.slabs.MISSING_VALUE), so one model
    # serves CTA+NCCT, CTA-only and NCCT-only cases; in [0, 0.5]; 0 = off. 0.4 rather than
    # 0.2: with 0.2 one of two 30-min phantom runs never learned to find a clot from the
    # CTA alone; with 0.4 both did, and both found more clots from the NCCT alone, at a
    # cost of a few clots with both scans (three runs: 25-30 of 76 shifted clots missed,
    # two with 0.2: 17-26; benchmarks/results/quality_30min_modality_dropout04*.json)
    modality_dropout: float = 0.4
    # Share of the dropped samples that lose the NCCT (the rest lose the CTA): above 0.5
    # more samples teach the CTA path alone, which must find a filling defect without the
    # NCCT sign (benchmarks/detectability.py: the clots runs miss lack that sign). 0.8
    # with dropout 0.5 measured no better (quality_30min_dropout05_ncct08_90patients.json).
    modality_dropout_ncct: float = 0.5
    # Validate, keep and predict with an exponential moving average of the weights
    # (per-step decay; 0 = off, the trained weights themselves): the average of the last
    # few hundred steps swings less from one epoch to the next than the weights do, so the
    # best-epoch choice on a dozen validation cases is less of a lottery
    # (clotseg.training.ema). Off: on a 30-min phantom run (decay 0.998) unseen patients
    # were segmented no better (quality_30min_modality_dropout04_ema0998_90patients.json)
    ema_decay: float = 0.0
    # predict with the mean of the best-validated and the last weights (best.pt keeps the
    # best ones as "best_model"): applied afterwards to four 30-min runs it found 1-8 more
    # unseen-site clots each, with 0-1 more clot-free patients with a speck in three of
    # them, but one run trained with it was no better than the defaults (README): off
    average_last: bool = False


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
        from clotseg.io import yamlsafe

        return yamlsafe.dump(self.to_dict(), sort_keys=False)


CHOICES = {
    "data.scheme": ("kfold", "random"),
    "data.loader": ("auto", "resident", "stream"),
    "data.clot_sampling": ("slice", "clot"),
    "optim.name": ("adamw", "adam", "sgd"),
    "optim.schedule": ("cosine", "onecycle", "constant"),
    "train.loss": ("dice_bce", "dice_bce_sample", "dice_focal", "dice"),
    "train.precision": ("auto", "fp32", "bf16"),
}


def valid_keys(cfg: Config | None = None) -> list[str]:
    """Every ``section.key`` that a config file or ``--set`` may name."""
    cfg = cfg or Config()
    return [f"{s.name}.{f.name}" for s in dataclasses.fields(cfg)
            for f in dataclasses.fields(getattr(cfg, s.name))]


def _unknown(source: str, what: str, cfg: Config) -> ConfigError:
    return ConfigError(f"{source}: unknown {what}; valid keys: " + ", ".join(valid_keys(cfg)))


def from_dict(data: dict[str, Any], base: Config | None = None, source: str = "config") -> Config:
    """Apply a nested dict onto ``base`` (defaults when None), rejecting unknown keys."""
    cfg = base or Config()
    for section, values in (data or {}).items():
        if section not in {f.name for f in dataclasses.fields(cfg)} or not isinstance(values,
                                                                                    dict):
            raise _unknown(source, f"section {section!r}", cfg)
        for key, value in values.items():
            set_value(cfg, f"{section}.{key}", value, source)
    return cfg


def _coerce(dotted: str, current: Any, value: Any, hint: Any, source: str) -> Any:
    """``value`` converted to the type of the field (``current``/its annotation)."""
    if value is None:
        if current is None or "None" in str(hint):
            return None
        raise ConfigError(f"{source}: {dotted} cannot be empty")
    if isinstance(current, bool) or hint in (bool, "bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {dotted} must be true or false, got {value!r}")
        return value
    if isinstance(current, (int, float)) or "float" in str(hint) or "int" in str(hint):
        if isinstance(value, str):  # YAML reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{source}: {dotted} must be a number, got {value!r}")
        if "int" in str(hint) and "float" not in str(hint):
            if not float(value).is_integer():
                raise ConfigError(f"{source}: {dotted} must be a whole number, got {value!r}")
            return int(value)
        return float(value)
    if isinstance(current, list) or hint in (list, "list") or (
            isinstance(value, list) and "list" in str(hint)):
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {dotted} must be a list, got {value!r}")
        return value
    if isinstance(current, dict) or hint in (dict, "dict"):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {dotted} must be a mapping, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {dotted} must be text, got {value!r}")
    return value


def set_value(cfg: Config, dotted: str, value: Any, source: str = "--set") -> None:
    """Set ``section.key`` to ``value`` (checked against the field's type)."""
    section, _, key = dotted.partition(".")
    sub = getattr(cfg, section, None) if section in {f.name for f in
                                                      dataclasses.fields(cfg)} else None
    fields = {f.name: f for f in dataclasses.fields(sub)} if sub is not None else {}
    if key not in fields:
        raise _unknown(source, f"key {dotted!r}", cfg)
    value = _coerce(dotted, getattr(sub, key), value, fields[key].type, source)
    if dotted in CHOICES and value not in CHOICES[dotted]:
        raise ConfigError(f"{source}: {dotted} must be one of {', '.join(CHOICES[dotted])}, "
                          f"got {value!r}")
    setattr(sub, key, value)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings (values parsed with ``yaml.safe_load``)."""
    import yaml

    from clotseg.io import yamlsafe

    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        key, raw = item.split("=", 1)
        try:
            value = yamlsafe.load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: cannot parse value ({exc})") from None
        set_value(cfg, key.strip(), value)
    return cfg


def load_yaml(path: str | Path, base: Config | None = None) -> Config:
    """Read a YAML config (any subset of sections/keys) on top of ``base``."""
    import yaml

    from clotseg.io import yamlsafe

    path = Path(path)
    try:
        data = yamlsafe.load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start}); a config is "
                          "YAML text") from None
    except OSError as exc:
        from clotseg.io.outputs import os_error_message

        raise ConfigError(f"cannot read config: {os_error_message(exc)}") from None
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())[:300]
        raise ConfigError(f"{path}: not a valid YAML config ({reason})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: config must be a mapping of sections")
    return from_dict(data, base, source=str(path))


PRESETS = ("default", "original")


def preset(name: str) -> Config:
    """A packaged preset: ``default`` (phantom, CPU-friendly) or ``original``."""
    from clotseg.io import yamlsafe

    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    text = resources.files("clotseg.configs").joinpath(f"{name}.yaml").read_text()
    return from_dict(yamlsafe.load(text) or {}, source=f"preset {name}")


def _volumetric_problems(cfg: Config) -> list[str]:
    """What a volumetric network (``monai-dynunet-3d``, :mod:`clotseg.models.volumetric`)
    cannot work with: it marks every slice of a block of ``data.slab`` slices, so the
    block must be long enough to see along a vessel, hold thin slices only (no CTA
    projections) and keep its scans' channels apart (no mirror); its in-plane pooling
    needs a plane padded to a multiple of 16. Only these networks have deep-supervision
    heads (``model.deep_supervision``)."""
    ds = cfg.model.deep_supervision
    if not isinstance(ds, int) or isinstance(ds, bool) or not 0 <= ds <= 3:
        return [f"model.deep_supervision must be a number of extra output heads in [0, 3], "
                f"got {ds!r}"]
    if cfg.model.name not in VOLUMETRIC_MODELS:
        return ([f"model.deep_supervision is for the volumetric networks "
                 f"({', '.join(sorted(VOLUMETRIC_MODELS))}), not {cfg.model.name}"]
                if ds else [])
    d, name = cfg.data, cfg.model.name
    problems = []
    if d.slab < 5:
        problems.append(f"{name} reads a block of data.slab slices as one volume: data.slab "
                        f"must be at least 5 (e.g. 9), got {d.slab}")
    if d.cta_mip:
        problems.append(f"{name} reads thin slices only: data.cta_mip must be 0, got "
                        f"{d.cta_mip}")
    if cfg.model.mirror is True:
        problems.append(f"model.mirror is not available for {name}")
    if d.pad_multiple % 16:
        problems.append(f"{name} pools the plane four times: data.pad_multiple must be a "
                        f"multiple of 16, got {d.pad_multiple}")
    return problems


def check(cfg: Config) -> Config:
    """Reject settings that cannot work, before any data is read."""
    d, a, o, t = cfg.data, cfg.augment, cfg.optim, cfg.train
    problems = []
    if d.slab < 1 or d.slab % 2 == 0:
        problems.append(f"data.slab must be a positive odd number, got {d.slab}")
    if d.pad_multiple < 1:
        problems.append("data.pad_multiple must be >= 1")
    if d.cta_mip < 0 or (d.cta_mip and (d.slab < 3 or d.cta_mip <= d.slab // 2)):
        problems.append(f"data.cta_mip must be 0 (off) or, with data.slab >= 3, more than "
                        f"half the slab ({d.slab // 2}) slices, got {d.cta_mip}")
    if not valid_views(d.views):
        problems.append(f"data.views must be a list of distinct views out of "
                        f"{', '.join(VIEWS)}, got {d.views!r}")
    if d.patch < 0 or (d.patch and d.patch % d.pad_multiple):
        problems.append(f"data.patch must be 0 (full slice) or a multiple of data.pad_multiple "
                        f"({d.pad_multiple}), got {d.patch}")
    if isinstance(cfg.model.kwargs, dict) and "mirror" in cfg.model.kwargs:
        problems.append("model.kwargs must not set mirror: use model.mirror, which is checked")
    if not isinstance(cfg.model.mirror, bool):
        problems.append(f"model.mirror must be true or false, got {cfg.model.mirror!r}")
    elif cfg.model.mirror and valid_views(d.views) and "sagittal" in d.views:
        problems.append(f"model.mirror mirrors slices left to right: a sagittal slice has no "
                        f"left-right axis; drop it from data.views, got {d.views}")
    problems += _volumetric_problems(cfg)
    if not 0 <= d.clot_fraction <= 1:
        problems.append("data.clot_fraction must be within [0, 1]")
    if not 0 <= d.hard_negative_fraction <= 1 - d.clot_fraction:
        problems.append("data.hard_negative_fraction must be within [0, 1 - clot_fraction]")
    if not 0 <= d.mined_negative_fraction <= 1 - d.clot_fraction - d.hard_negative_fraction:
        problems.append("data.mined_negative_fraction must be within "
                        "[0, 1 - clot_fraction - hard_negative_fraction]")
    if d.mine_every < 1 or d.mine_cases < 1:
        problems.append(f"data.mine_every and data.mine_cases must be >= 1, got "
                        f"{d.mine_every} and {d.mine_cases}")
    if not 0 <= d.test_fraction < 1 or not 0 < d.val_fraction < 1:
        problems.append("data.test_fraction must be in [0, 1) and data.val_fraction in (0, 1)")
    if d.workers < 0:
        problems.append("data.workers must be >= 0")
    ts = d.target_spacing
    if not (ts is None or ts in ("auto", "none") or (
            isinstance(ts, list) and len(ts) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 20
                    for v in ts))):
        problems.append(f"data.target_spacing must be auto, none or [x, y, z] mm (each in "
                        f"(0, 20)), got {ts!r}")
    if d.roi not in TRAIN_ROI_MODES:
        problems.append(f"data.roi must be one of {', '.join(TRAIN_ROI_MODES)}, got {d.roi!r}")
    if not (isinstance(d.roi_size_mm, (int, float)) and not isinstance(d.roi_size_mm, bool)
            and 20 <= d.roi_size_mm <= 500):
        problems.append(f"data.roi_size_mm must be a length in [20, 500] mm, got "
                        f"{d.roi_size_mm!r}")
    for name in ("cta", "ncct"):
        w = d.windows.get(name) if isinstance(d.windows, dict) else None
        if not (isinstance(w, list) and len(w) == 2 and float(w[1]) > float(w[0])):
            problems.append(f"data.windows.{name} must be [low, high] HU with high > low")
    for key in ("flip", "spatial_prob", "intensity_prob", "lowres_prob", "blur_prob",
                "noise_prob", "thick_ncct_prob", "z_blur_prob", "isodense_prob"):
        if not 0 <= getattr(a, key) <= 1:
            problems.append(f"augment.{key} must be a probability in [0, 1], got "
                            f"{getattr(a, key)}")
    for key in ("scale", "gamma", "blur_sigma", "lowres_zoom", "thick_ncct_mm", "z_blur_mm"):
        v = getattr(a, key)
        if len(v) != 2 or not 0 < float(v[0]) <= float(v[1]):
            problems.append(f"augment.{key} must be [low, high] with 0 < low <= high")
    v = a.isodense_strength
    if not (isinstance(v, list) and len(v) == 2 and 0 <= float(v[0]) <= float(v[1]) <= 1):
        problems.append(f"augment.isodense_strength must be [low, high] with "
                        f"0 <= low <= high <= 1, got {v!r}")
    for key in ("brightness", "contrast", "hu_shift", "noise_std", "noise_hu"):
        if getattr(a, key) < 0:
            problems.append(f"augment.{key} must be >= 0 (a largest change), got "
                            f"{getattr(a, key)}")
    if not 0 <= a.rotate_deg <= 180:
        problems.append(f"augment.rotate_deg must be in [0, 180] degrees, got {a.rotate_deg}")
    if d.scheme == "kfold" and d.n_folds < 2:
        problems.append(f"data.n_folds must be >= 2 (k-fold holds one fold out), got "
                        f"{d.n_folds}")
    m = cfg.model
    if m.base < 1:
        problems.append(f"model.base must be >= 1, got {m.base}")
    if not 0 <= m.dropout < 1:
        problems.append(f"model.dropout must be in [0, 1), got {m.dropout}")
    if o.lr <= 0 or not 0 <= o.warmup < 1:
        problems.append("optim.lr must be > 0 and optim.warmup in [0, 1)")
    if o.weight_decay < 0 or not 0 <= o.momentum < 1 or o.grad_clip < 0:
        problems.append(f"optim.weight_decay and optim.grad_clip must be >= 0 and "
                        f"optim.momentum in [0, 1), got {o.weight_decay}, {o.grad_clip}, "
                        f"{o.momentum}")
    if not 0 <= o.min_lr_ratio <= 1:
        problems.append(f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}")
    if t.epochs < 1 or t.batch_size < 1 or t.steps_per_epoch < 1 or t.val_batch_size < 1:
        problems.append("train.epochs, batch_size, steps_per_epoch, val_batch_size must be >= 1")
    if t.time_limit_min is not None and t.time_limit_min <= 0:
        problems.append("train.time_limit_min must be > 0")
    if not 0 <= t.patience_from <= 1:
        problems.append(f"train.patience_from must be a share of the schedule in [0, 1], "
                        f"got {t.patience_from}")
    if not 0 < t.threshold <= 1:
        problems.append(f"train.threshold must be in (0, 1], got {t.threshold}")
    if t.min_component_mm3 < 0:
        problems.append(f"train.min_component_mm3 must be >= 0, got {t.min_component_mm3}")
    if t.patience < 1:
        problems.append(f"train.patience must be >= 1 epoch, got {t.patience}")
    if not 0 <= t.grow_threshold < 1:
        problems.append(f"train.grow_threshold must be in [0, 1) (0 = off), got "
                        f"{t.grow_threshold}")
    if not 0 <= t.modality_dropout_ncct <= 1:
        problems.append(f"train.modality_dropout_ncct must be a share in [0, 1], got "
                        f"{t.modality_dropout_ncct}")
    if not 0 <= t.modality_dropout <= MAX_MODALITY_DROPOUT:
        problems.append(f"train.modality_dropout must be a probability in "
                        f"[0, {MAX_MODALITY_DROPOUT}], got {t.modality_dropout}")
    if not 0 <= t.ema_decay < 1:
        problems.append(f"train.ema_decay must be in [0, 1) (0 = off), got {t.ema_decay}")
    if problems:
        raise ConfigError("invalid settings: " + "; ".join(problems))
    return cfg
