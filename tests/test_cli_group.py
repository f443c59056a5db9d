"""`ssal group` end to end, in a subprocess like a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def ssal(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssal", *args], capture_output=True, text=True, timeout=120)


def test_group_from_example_confusion(tmp_path: Path) -> None:
    out = tmp_path / "groups.json"
    r = ssal(
        "group",
        "--confusion",
        str(EXAMPLES / "digits_confusion.npy"),
        "--k",
        "3",
        "--criterion",
        "join",
        "--seed",
        "1",
        "--class-names",
        str(EXAMPLES / "digits_names.txt"),
        "--out",
        str(out),
        "--labels-out",
        str(tmp_path / "labels.txt"),
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert len(d["assignment"]) == 10 and set(d["assignment"]) == {0, 1, 2} and d["criterion"] == "join"
    assert "group   0" in r.stdout and "eight" in r.stdout  # members printed by name
    assert [int(v) for v in (tmp_path / "labels.txt").read_text().split()] == d["assignment"]


def test_group_superclasses_and_random(tmp_path: Path, cifar100_dir: Path) -> None:
    r = ssal("group", "--from-superclasses", str(cifar100_dir / "meta.json"), "--out", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "s.json").read_text())["k"] == 20 and "apple" in r.stdout
    r = ssal("group", "--random", "100", "--k", "33", "--out", str(tmp_path / "r.json"), "--quiet")
    assert r.returncode == 0 and r.stdout == ""
    assert sorted(set(json.loads((tmp_path / "r.json").read_text())["assignment"])) == list(range(33))


@pytest.mark.parametrize(
    ("matrix", "k", "message"),
    [
        (np.ones((4, 6)), "2", "square"),
        (-np.ones((6, 6)), "2", "negative"),
        (np.full((6, 6), np.nan), "2", "NaN"),
        (np.zeros((6, 6)), "2", "all zero"),
        (np.eye(6) + 0.1, "4", "out of range"),
        (np.eye(6) + 0.1, "1", "out of range"),
    ],
)
def test_group_bad_input_one_line_exit_2(tmp_path: Path, matrix: np.ndarray, k: str, message: str) -> None:
    np.save(tmp_path / "c.npy", matrix)
    r = ssal("group", "--confusion", str(tmp_path / "c.npy"), "--k", k, "--out", str(tmp_path / "g.json"))
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "g.json").exists()


def test_group_missing_and_corrupt_files(tmp_path: Path) -> None:
    r = ssal("group", "--confusion", str(tmp_path / "nope.npy"), "--k", "2", "--out", str(tmp_path / "g.json"))
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    r = ssal("group", "--confusion", str(tmp_path / "bad.npy"), "--k", "2", "--out", str(tmp_path / "g.json"))
    assert r.returncode == 2 and "cannot read" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    r = ssal(
        "group",
        "--confusion",
        str(EXAMPLES / "digits_confusion.npy"),
        "--k",
        "2",
        "--class-names",
        str(names),
        "--out",
        str(tmp_path / "g.json"),
    )
    assert r.returncode == 2 and "2 class names given for 10 classes" in r.stderr
