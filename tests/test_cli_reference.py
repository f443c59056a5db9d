"""docs/cli.md is the reference: it names every config key and every flag of every command."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

from ssal.cli import build_parser
from ssal.config import Config

CLI_MD = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")


def _keys(cls: type, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        out += _keys(t, f"{prefix}{f.name}.") if dataclasses.is_dataclass(t) else [prefix + f.name]
    return out


def test_every_config_key_is_in_the_reference() -> None:
    keys = _keys(Config)
    assert "trainer.loggers" in keys and "data.random_erasing" in keys and len(keys) > 60
    missing = [k for k in keys if k != "variant" and f"`{k}" not in CLI_MD and f"{k}`" not in CLI_MD]
    assert not missing, f"config keys not in docs/cli.md: {missing}"


def test_every_flag_of_every_command_is_in_the_reference() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"train", "sweep", "group", "attack"} <= set(commands)
    missing = [f"ssal {name} {flag}" for name, sub in commands.items() for action in sub._actions
               for flag in action.option_strings if flag.startswith("--") and flag != "--help"
               and flag not in CLI_MD]  # fmt: skip
    assert not missing, f"flags not in docs/cli.md: {missing}"
