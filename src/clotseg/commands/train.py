"""`clotseg train DATA --out RUN`: train a 2D/2.5D clot segmentation model."""

from __future__ import annotations

import argparse

from clotseg.commands import apply_value_args, spacing_arg, value_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="training dataset (any supported layout, with masks)")
    parser.add_argument("--out", required=True, metavar="RUN",
                        help="run folder to create (config, splits, checkpoints, logs)")
    parser.add_argument("--config", metavar="FILE", help="YAML config (applied on the preset)")
    parser.add_argument("--preset", default="default", choices=["default", "original"],
                        help="starting settings: default (phantom, CPU-friendly) or original "
                             "(the original CT-ClotSeg setup)")
    parser.add_argument("--fold", type=int, help="cross-validation fold (0-based)")
    parser.add_argument("--epochs", type=int, help="number of epochs")
    parser.add_argument("--time-limit", type=float, metavar="MINUTES",
                        help="stop cleanly (with a checkpoint) after this many minutes")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in RUN from checkpoints/last.pt")
    parser.add_argument("--device", default=None,
                        help="auto (default: cuda when available), cpu, cuda, cuda:N")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a setting, e.g. --set optim.lr=1e-3 "
                                                  "(repeatable)")
    spacing_arg(parser)
    value_args(parser)


def resolve_config(args: argparse.Namespace):
    """Preset → --config → --set → first-class flags; on --resume, the run's own config
    (plus --set / flags that do not change the model, e.g. more --epochs)."""
    import warnings

    from clotseg.config import apply_overrides, check, load_yaml, preset, set_value
    from clotseg.errors import ConfigError
    from clotseg.runs import Run

    saved = Run(args.out).read_config() if args.resume else None
    resumed = saved is not None
    if resumed:
        cfg = saved
        if args.config or args.preset != "default":
            warnings.warn("--resume continues with the run's own config.yaml; --config and "
                          "--preset are ignored", stacklevel=2)
        before = repr((cfg.model, cfg.data.slab, cfg.data.windows, cfg.data.pad_multiple))
    else:
        cfg = preset(args.preset)
        if args.config:
            cfg = load_yaml(args.config, cfg)
    apply_overrides(cfg, args.overrides)
    for key, value in (("data.fold", args.fold), ("train.epochs", args.epochs),
                       ("train.time_limit_min", args.time_limit), ("train.device", args.device)):
        if value is not None:
            set_value(cfg, key, value, "command line")
    if args.fold is not None and cfg.data.scheme != "kfold" and not cfg.data.splits:
        raise ConfigError(f"--fold needs data.scheme=kfold (this config uses "
                          f"{cfg.data.scheme!r})")
    if resumed and repr((cfg.model, cfg.data.slab, cfg.data.windows,
                         cfg.data.pad_multiple)) != before:
        raise ConfigError("--resume cannot change the model, slab, windows or padding of a run")
    return check(cfg)


def run(args: argparse.Namespace) -> int:
    import os

    # OpenMP threads that sleep instead of spinning while they wait: on a small, shared CPU
    # (2 cores, other work running) spinning threads made training steps several times
    # slower; unloaded, the cost is within noise. Only effective before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import contextlib

    from clotseg.io.outputs import OutLock, check_run_apart
    from clotseg.training.trainer import train

    apply_value_args(args)
    check_run_apart(args.out, args.data)
    cfg = resolve_config(args)
    # One writer per run folder; with torchrun only rank 0 writes, so only it locks.
    lock = OutLock(args.out, "train") if os.environ.get("RANK", "0") == "0" else \
        contextlib.nullcontext()
    with lock:
        res = train(args.data, args.out, cfg, resume=args.resume,
                    npy_spacing=tuple(args.spacing) if args.spacing else None)
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: one summary, from rank 0
        print(f"best validation Dice {res.best_dice:.3f} at epoch {res.best_epoch} "
              f"({res.epochs_done} epoch(s), {res.seconds / 60:.1f} min, stopped: "
              f"{res.stopped}); run folder: {res.run}")
    return 0
