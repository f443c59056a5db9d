"""The ``ssal`` command line. Each sub-command lives in its own module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from collections.abc import Sequence

from ..errors import SSALError
from ..files import check_output_path
from ..lock import refuse_if_live
from ..signals import Interrupted, handle_signals

__all__ = ["main", "plain_text"]

#: Sub-command modules of ``ssal.cli``, in the order ``ssal --help`` lists them.
COMMANDS: tuple[str, ...] = (
    "group",
    "train",
    "evaluate",
    "confusion",
    "pipeline",
    "sweep",
    "demo",
    "bench",
    "models",
    "predict",
    "explain",
    "attack",
    "export",
)

#: What ``--out`` names for each command that has one.
OUTPUT_KINDS = {
    "group": "file",
    "confusion": "file",
    "export": "file",
    "pipeline": "dir",
    "sweep": "dir",
    "demo": "dir",
    "explain": "dir",
    "attack": "dir",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="ssal", description="Self-Supervised Autogenous Learning (SSAL).")
    parser.add_argument("--version", action="version", version=f"ssal {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run one sub-command; user errors give one line on stderr and exit code 2."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides after an option (`a=1 --dry-run b=2`) belong to the overrides too
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.parse_args(argv)  # argparse's own one-line error and exit code 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        out = getattr(args, "out", None)
        if out is not None and args.command in OUTPUT_KINDS:  # before any work: a bad --out changes nothing
            check_output_path(out, OUTPUT_KINDS[args.command])
            refuse_if_live(out)  # nor does one into a run that another command is writing
        with handle_signals():
            return int(args.func(args) or 0)
    except Interrupted as e:
        print(f"ssal {args.command}: {e.describe(args.command)}", file=sys.stderr)
        return e.exit_code
    except SSALError as e:
        print(f"ssal {args.command}: error: {plain_text(_one_line(e))}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"ssal {args.command}: error: {plain_text(f'{e.strerror}: {e.filename}')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ssal {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug or an unexpected failure, not bad input: one line; -v shows the traceback
        if args.verbose:
            raise
        msg = plain_text(str(e).splitlines()[0]) if str(e).strip() else ""
        if _out_of_memory(e):  # settings too large for this machine: the user's to change
            print(
                f"ssal {args.command}: error: out of memory ({msg[:150] or type(e).__name__}); use a smaller model, "
                "input size or batch size",
                file=sys.stderr,
            )
            return 2
        print(
            f"ssal {args.command}: internal error: {type(e).__name__}: {msg} (rerun with -v for the traceback)",
            file=sys.stderr,
        )
        return 1


_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def plain_text(text: str) -> str:
    """``text`` as one plain line: terminal escape sequences removed, line breaks and other control characters
    turned into single spaces (an error line never recolours a terminal or spans lines)."""
    return " ".join(_CONTROL.sub(" ", _ESCAPES.sub("", text)).split())


def _out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` says that memory ran out (Python's MemoryError, torch's CPU or GPU allocator)."""
    text = str(e).lower()
    return (
        isinstance(e, MemoryError)
        or type(e).__name__ == "OutOfMemoryError"
        or "can't allocate memory" in text
        or "out of memory" in text
    )


def _one_line(e: SSALError) -> str:
    """The message of an ``SSALError``; one raised in a DataLoader worker comes back wrapped in its traceback."""
    text = str(e)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        return last.split("SSALError: ", 1)[-1]
    return text


if __name__ == "__main__":
    sys.exit(main())
