"""The ``clotseg`` command line: a thin, lazily-importing layer over the package.

Each subcommand lives in ``clotseg/commands/<name>.py`` with ``add_arguments(parser)``
(light: no heavy imports) and ``run(args) -> int`` (imports what it needs). Exit codes:
0 success, 1 bad input / failed work (one-line message, no traceback), 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

#: (name, one-line help). Order is the order shown by ``clotseg --help``.
COMMANDS: list[tuple[str, str]] = [
    ("synth", "write a synthetic cohort of head CTA/NCCT phantoms with clots"),
    ("check", "validate a dataset and list every problem"),
    ("preprocess", "register NCCT to CTA, resample, crop an ROI"),
    ("train", "train a 2D/2.5D clot segmentation model"),
    ("predict", "segment clots in new cases and measure them"),
    ("evaluate", "compare predicted masks with reference masks"),
    ("measure", "measure the clots of any folder of masks (clots.csv)"),
    ("export", "export a trained run as a shareable model.zip and/or ONNX"),
    ("export-nnunet", "write a dataset as an nnU-Net raw dataset"),
    ("report", "write a self-contained HTML report of a run"),
    ("demo", "synth -> train -> predict -> evaluate -> report on the phantom"),
]


def build_parser() -> argparse.ArgumentParser:
    from clotseg import __version__

    parser = argparse.ArgumentParser(
        prog="clotseg",
        description="Segment and measure ischemic-stroke clots from paired CTA and NCCT.",
    )
    parser.add_argument("--version", action="version", version=f"clotseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = _wanted_command(sys.argv[1:])
    for name, help_text in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:])
        # Only the chosen subcommand's module is imported (keeps --help instant).
        if name == wanted:
            _module(name).add_arguments(p)
        p.add_argument("--quiet", "-q", action="store_true",
                       help="no progress bars (also off whenever output is not a terminal)")
    return parser


def _wanted_command(argv: list[str]) -> str | None:
    names = {n for n, _ in COMMANDS}
    return next((a for a in argv if a in names), None)


#: Environment variables a command may set for itself and its workers; restored after it.
_COMMAND_ENV = ("TQDM_DISABLE", "CLOTSEG_MASK_255", "CLOTSEG_REPLACE_NONFINITE")


def _module(name: str):
    return importlib.import_module(f"clotseg.commands.{name.replace('-', '_')}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``clotseg`` console script; returns the exit code."""
    from clotseg.errors import ClotsegError, UsageError

    argv = sys.argv[1:] if argv is None else argv
    saved = sys.argv
    sys.argv = [saved[0] if saved else "clotseg", *argv]
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    finally:
        sys.argv = saved
    if not args.command:
        parser.print_help()
        return 2
    warnings.simplefilter("default", UserWarning)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    # Progress bars only for a person watching a terminal: not with --quiet, not when
    # output goes to a file or a batch system's log. TQDM_DISABLE turns off every bar.
    args.progress = not args.quiet and sys.stdout.isatty() and sys.stderr.isatty()
    # Flags passed on through the environment (progress, --mask-255, --replace-nonfinite)
    # hold for this command only: a second main() in the same process starts clean.
    saved_env = {name: os.environ.get(name) for name in _COMMAND_ENV}
    if not args.progress:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        return int(_module(args.command).run(args) or 0)
    except UsageError as exc:
        print(f"clotseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ClotsegError as exc:
        print(f"clotseg {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"clotseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # disk full, permission denied, ... while reading or writing
        from clotseg.io.outputs import os_error_message

        print(f"clotseg {args.command}: error: {os_error_message(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        return _unexpected(args.command, exc)
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _unexpected(command: str, exc: Exception) -> int:
    """Last safety net: an error no check foresaw is still one line and exit 1 (the
    traceback with ``CLOTSEG_DEBUG=1``). Reaching it is a bug: a check is missing."""
    import os

    if os.environ.get("CLOTSEG_DEBUG"):
        raise exc
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    print(f"clotseg {command}: internal error: {type(exc).__name__}: {text} (please report "
          "it; CLOTSEG_DEBUG=1 shows the traceback)", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
