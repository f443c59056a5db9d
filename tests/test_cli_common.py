"""The CLI's shared arguments, and its choices agreeing with the modules that own them."""

from __future__ import annotations

import argparse

import pytest

from ssal.cli import build_parser


def _choices(command: str, option: str) -> tuple[str, ...]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if option in a.option_strings)
    return tuple(action.choices)


@pytest.mark.parametrize(
    ("command", "option", "owner"),
    [
        ("attack", "--method", "ssal.attack:ATTACKS"),
        ("explain", "--method", "ssal.explain:METHODS"),
        ("export", "--format", "ssal.export:EXPORT_FORMATS"),
        ("export", "--mode", "ssal.export:EXPORT_MODES"),
        ("evaluate", "--tta", "ssal.evaluation:TTA_MODES"),
    ],
)
def test_cli_choices_are_the_owning_modules(command: str, option: str, owner: str) -> None:
    import importlib

    module, name = owner.split(":")
    assert _choices(command, option) == tuple(getattr(importlib.import_module(module), name))


@pytest.mark.parametrize("command", ["evaluate", "confusion", "attack"])
def test_run_reading_commands_share_checkpoint_device_and_data_root(command: str) -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    opts = {o for a in sub.choices[command]._actions for o in a.option_strings}
    assert {"--checkpoint", "--device", "--data-root"} <= opts
    defaults = sub.choices[command].parse_args(["RUN", *(["--method", "fgsm", "--eps", "0", "--out", "o"] if
                                                        command == "attack" else [])])  # fmt: skip
    assert defaults.checkpoint == "best" and defaults.device is None and defaults.data_root is None
