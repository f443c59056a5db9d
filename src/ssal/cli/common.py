"""Arguments several sub-commands share: which checkpoint, which device, where the data is.

Choices such as ``--method fgsm|bim`` are written out in the commands rather than imported from their owning
modules (``ssal.attack.ATTACKS``, ...): those import torch, and ``ssal --help`` or ``ssal group``
should not wait for it.
``tests/test_cli_common.py`` checks that the two agree.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_checkpoint", "add_config_arguments", "add_data_root", "add_device", "add_run_inputs"]


def add_checkpoint(p: argparse.ArgumentParser) -> None:
    """``--checkpoint best|last|PATH`` (default best)."""
    p.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint path")


def add_device(p: argparse.ArgumentParser) -> None:
    """``--device DEV`` (default: cuda if available)."""
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")


def add_data_root(p: argparse.ArgumentParser) -> None:
    """``--data-root DIR``: the data set's location on this machine."""
    p.add_argument(
        "--data-root",
        type=Path,
        metavar="DIR",
        help="the data set's location on this machine (overrides the run's data.root)",
    )


def add_run_inputs(p: argparse.ArgumentParser) -> None:
    """What a command that reads a trained run's data takes: ``--checkpoint``, ``--device`` and ``--data-root``."""
    add_checkpoint(p)
    add_device(p)
    add_data_root(p)


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """``--config FILE``, ``--variant NAME`` and trailing ``key=value`` overrides (train, pipeline)."""
    p.add_argument("--config", type=Path, metavar="FILE", help="YAML config (see configs/ and docs/cli.md)")
    p.add_argument("--variant", metavar="NAME", help="one of the config's variants (a sweep entry)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=0.05")
