"""SIGTERM / SIGINT during training: the last checkpoint is kept, one line says how to resume, exit 143 / 130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssal.runs import load_checkpoint, read_metrics

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"


def _interrupt(command: list[str], metrics: Path, signum: int) -> subprocess.CompletedProcess:
    """Start ``ssal COMMAND``, send ``signum`` once two epochs are on disk, and wait for it to stop."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ssal", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 300
    while not (metrics.is_file() and len(read_metrics(metrics)) >= 2) and proc.poll() is None:
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_train_keeps_the_checkpoint_and_says_how_to_resume(
    signum: int, code: int, tmp_path: Path
) -> None:
    from ssal.cli import main

    run = tmp_path / "run"
    args = ["train", "--config", str(DEMO), "ssal.groupings=random", "trainer.epochs=500", f"run_dir={run}"]
    res = _interrupt(args, run / "metrics.csv", signum)
    assert res.returncode == code, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    assert last.startswith(f"ssal train: interrupted by {name} in epoch ") and "Traceback" not in res.stderr
    assert last.endswith(f"continue with: ssal train --resume {run}")
    done = load_checkpoint(run / "checkpoints" / "last.ckpt")["ssal"]["epochs_done"]
    assert f"last.ckpt holds epoch {done}" in last and done >= 2
    rows = read_metrics(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows][:done] == list(range(1, done + 1)) and len(rows) <= done + 1
    # the suggested command continues the run (shortened here to one more epoch)
    assert main(["train", "--resume", str(run), f"trainer.epochs={done + 1}"]) == 0
    assert [int(r["epoch"]) for r in read_metrics(run / "metrics.csv")] == list(range(1, done + 2))


def test_sigterm_during_pipeline_exits_143(tmp_path: Path) -> None:
    args = ["pipeline", "--config", str(DEMO), "trainer.epochs=500", "--out", str(tmp_path)]
    res = _interrupt(args, tmp_path / "baseline" / "metrics.csv", signal.SIGTERM)
    assert res.returncode == 143, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("ssal pipeline: interrupted by SIGTERM in epoch ") and "run the same command again" in last
    assert load_checkpoint(tmp_path / "baseline" / "checkpoints" / "last.ckpt")["ssal"]["epochs_done"] >= 2


def test_signal_outside_training_exits_with_its_code(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from ssal import cli
    from ssal.cli import group

    def slow(args: object) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        return 0

    monkeypatch.setattr(group, "run", slow)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["group", "--random", "10", "--k", "2", "--out", "x.json"]) == 143
    assert capsys.readouterr().err.strip() == "ssal group: interrupted by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored
