"""Bad config input at the CLI: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ssal.branches=[{at:g2,k:4}]", "unknown key(s)"),  # YAML flow style without spaces
        ("ssal.branches=[{at: g2}]", "needs 'at'"),
        ("ssal.branches=[{at: nowhere, k: 4}]", "unknown attach point 'nowhere'"),
        ("ssal.eta=1.5", "(0, 1]"),
        ("ssal.branches=[{at: g2, k: 9}]", "out of range"),
        ("ssal.branches.2.k=3", "override ssal.branches.2.k: ssal.branches has 2 element(s)"),
        ("ssal.eta.0=0.5", "override ssal.eta.0: ssal.eta is 0.5, not a section or a list"),
        ("ssal.branches.0.k=9", "out of range"),  # an index override reaches the same checks as a whole list
    ],
)
def test_bad_branch_config_is_one_line(override: str, message: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "ssal", "train", "--config", str(DEMO), "--dry-run", override],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_internal_errors_are_one_line(monkeypatch, capsys) -> None:
    from ssal import cli
    from ssal.cli import group

    def boom(args: object) -> int:
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(group, "run", boom)
    code = cli.main(["group", "--random", "10", "--k", "2", "--out", "x.json"])
    err = capsys.readouterr().err
    assert code == 1 and "internal error: RuntimeError: something broke" in err and "second line" not in err
