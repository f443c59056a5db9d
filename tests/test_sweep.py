"""``ssal sweep`` on Optuna: search spaces, trials as run directories, pruning, resuming, the summary (digits)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")  # the test extra installs it; a bare install skips
pytest.importorskip("optuna_integration")

from ssal.cli import main  # noqa: E402
from ssal.config import load_config  # noqa: E402
from ssal.errors import SSALError  # noqa: E402
from ssal.runs import read_metrics  # noqa: E402
from ssal.sweep import Space, parse_space, split_space_args  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "configs" / "demo.yaml")
FAST = ["ssal.branches=[]", "schedule.peak_epoch=1", "trainer.limit_train_batches=0.5"]


def _sweep(out: Path, trials: int, *extra: str) -> list[str]:
    return ["sweep", "--config", DEMO, "--trials", str(trials), "--out", str(out), "--study", "digits", *FAST,
            "trainer.epochs=2", "optim.lr=float:0.01:0.5:log", "data.batch_size=choice:32,64", *extra]  # fmt: skip


def test_parse_spaces() -> None:
    assert parse_space("ssal.eta=float:0.05:1:log") == Space("ssal.eta", "float", 0.05, 1.0, log=True)
    assert parse_space("ssal.branches.0.k=int:10:50") == Space("ssal.branches.0.k", "int", 10, 50)
    assert parse_space("trainer.epochs=int:2:10:2").step == 2
    assert parse_space("ssal.aux_weights=choice:0.25,0.5,1").choices == (0.25, 0.5, 1)
    assert parse_space("model.name=choice:small_cnn,fastnet_cifar").choices == ("small_cnn", "fastnet_cifar")
    spaces, fixed = split_space_args(["optim.lr=float:0.01:0.1", "seed=3", "name=a:b"])
    assert [s.key for s in spaces] == ["optim.lr"] and fixed == ["seed=3", "name=a:b"]
    bad = {
        "optim.lr=float:0.1": "LOW:HIGH",
        "optim.lr=float:0.5:0.1": "LOW must be below HIGH",
        "optim.lr=float:0:1:log": "LOW > 0",
        "optim.lr=float:a:1": "not a number",
        "optim.lr=float:0:nan": "not finite",
        "x=int:1.5:3": "not an integer",
        "x=int:1:9:0": "STEP must be >= 1",
        "x=float:1:2:lin": "only be 'log'",
        "x=choice:1": "at least two different",
        "x=choice:1,1": "at least two different",
        "x=choice:[1],2": "numbers, strings",
    }
    for item, match in bad.items():
        with pytest.raises(SSALError, match=match):
            parse_space(item)
    with pytest.raises(SSALError, match="more than once"):
        split_space_args(["a=int:1:3", "a=int:2:4"])


def test_sweep_runs_prunes_and_summarises(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sw"
    assert main(_sweep(out, 4)) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| trial | state | f_top1 | data.batch_size | optim.lr | run_dir |")
    study = optuna.load_study(study_name="digits", storage=f"sqlite:///{out / 'study.db'}")
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    for t in trials:  # every trial is a normal run directory; the objective is its last validation f_top1
        run = Path(t.user_attrs["run_dir"])
        assert run == out / f"trial_{t.number:03d}" and (run / "config.yaml").is_file()
        cfg = load_config(run / "config.yaml")
        assert cfg.optim.lr == pytest.approx(t.params["optim.lr"])
        assert cfg.data.batch_size == t.params["data.batch_size"]
        rows = read_metrics(run / "metrics.csv")
        if t.state.name == "COMPLETE":
            assert t.value == pytest.approx(float(rows[-1]["f_top1"])) and len(rows) == 2
            assert 0.01 <= t.params["optim.lr"] <= 0.5
    best = load_config(out / "best.yaml")  # a config ssal train takes: the best trial's values, its own run_dir
    assert best.optim.lr == pytest.approx(study.best_params["optim.lr"]) and best.run_dir == "runs/demo_best"
    assert best.trainer.epochs == 2 and best.data.val_fraction == 0.2
    for name in ("trials.csv", "trials.md", "history.png", "importance.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"best config: {out / 'best.yaml'}" in printed
    # resumable: the same command with more trials runs only the missing ones
    stamp = (out / "trial_000" / "metrics.csv").stat().st_mtime_ns
    assert main(_sweep(out, 5)) == 0
    assert len(study.get_trials()) == 5 and (out / "trial_000" / "metrics.csv").stat().st_mtime_ns == stamp
    assert main(_sweep(out, 5)) == 0 and len(study.get_trials()) == 5  # already done: no new trial


def test_median_pruner_stops_a_bad_trial(tmp_path: Path) -> None:
    """A trial whose validation is far below the earlier trials' is pruned after its second epoch."""
    out = tmp_path / "pr"
    base = ["sweep", "--config", DEMO, "--out", str(out), *FAST, "trainer.epochs=3", "--pruner", "median"]
    assert main([*base, "--trials", "2", "optim.lr=float:0.08:0.1"]) == 0  # two good trials
    assert main([*base, "--trials", "3", "optim.lr=float:0.00001:0.00002"]) == 0  # one that learns nothing
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert len(read_metrics(out / "trial_002" / "metrics.csv")) < 3  # stopped before its last epoch
    assert [len(read_metrics(out / f"trial_00{i}" / "metrics.csv")) for i in (0, 1)] == [3, 3]


def test_loss_metric_minimises_with_a_variant_and_no_pruner(tmp_path: Path, capsys) -> None:
    """--metric val_loss is minimised; --variant applies to every trial; --pruner none finishes every trial."""
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(Path(DEMO).read_text() + "variants:\n  small: {data.batch_size: 32}\n")
    out = tmp_path / "loss"
    base = ["sweep", "--config", str(cfg), "--variant", "small", "--out", str(out), "--metric", "val_loss",
            "--pruner", "none", "--seed", "3", *FAST, "trainer.epochs=2", "optim.lr=float:0.00001:0.5:log"]  # fmt: skip
    assert main([*base, "--trials", "3"]) == 0
    study = optuna.load_study(study_name="demo_small", storage=f"sqlite:///{out / 'study.db'}")
    assert study.direction.name == "MINIMIZE"
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    for t in trials:
        run = Path(t.user_attrs["run_dir"])
        assert load_config(run / "config.yaml").data.batch_size == 32
        assert t.value == pytest.approx(float(read_metrics(run / "metrics.csv")[-1]["val_loss"]))
    assert study.best_value == min(t.value for t in trials)
    capsys.readouterr()
    assert main([*base, "--trials", "4", "--direction", "maximize"]) == 2  # the stored study minimises
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the other way" in err[0]


def test_a_setting_valid_only_with_the_searched_value_runs(tmp_path: Path) -> None:
    """The default study name is read without checking the config: peak_epoch 5 is valid only with epochs > 5."""
    out = tmp_path / "peak"
    argv = ["sweep", "--config", DEMO, "--trials", "1", "--out", str(out), "ssal.branches=[]",
            "trainer.limit_train_batches=0.25", "schedule.peak_epoch=5", "trainer.epochs=int:6:7"]  # fmt: skip
    assert main(argv) == 0
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE"]


def test_sweep_errors_are_one_line(tmp_path: Path, capsys) -> None:
    cases = [
        (["optim.lr=float:0.5:0.1"], "LOW must be below HIGH"),
        (["optim.nope=float:0.1:0.5"], "unknown config key optim.nope"),
        (["optim.lr=float:0.1:0.5", "data.val_fraction=0"], "must not be measured on the test split"),
        (["optim.lr=float:0.1:0.5", "--metric", "jp_top1"], "needs SSAL branches"),
        (["optim.momentum=float:0.5:1.5"], "config key optim.momentum"),
        ([], "at least one search space"),
    ]
    for extra, match in cases:
        argv = ["sweep", "--config", DEMO, "--trials", "1", "--out", str(tmp_path / "e"), "ssal.branches=[]", *extra]
        assert main(argv) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ssal sweep: error:") and match in err[0], (extra, err)
    assert not (tmp_path / "e" / "trial_000").exists()


def test_a_killed_sweep_goes_on_where_it_stopped(tmp_path: Path) -> None:
    """kill -9 in the middle of a trial; the same command retries that trial from its last checkpoint."""
    out = tmp_path / "k"
    argv = ["-m", "ssal", *_sweep(out, 2, "trainer.epochs=3", "--heartbeat", "1")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = out / "trial_000" / "metrics.csv"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and len(read_metrics(metrics)) >= 1) and proc.poll() is None:
        assert time.monotonic() < deadline, "the sweep never finished an epoch"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(read_metrics(metrics))
    assert done < 3, "the trial finished before it could be killed"
    # the killed trial's heartbeat is stale after 2 x 1 s; SQLite stores it in whole seconds, so wait 2 + 1 s and more
    time.sleep(3.5)
    assert main(_sweep(out, 2, "trainer.epochs=3", "--heartbeat", "1")) == 0
    study = optuna.load_study(study_name="digits", storage=f"sqlite:///{out / 'study.db'}")
    trials = study.get_trials()
    assert trials[0].state.name == "FAIL"
    retry = trials[1]
    assert retry.params == trials[0].params and retry.user_attrs["run_dir"] == str(out / "trial_000")
    assert [int(r["epoch"]) for r in read_metrics(metrics)] == [1, 2, 3]  # resumed, no epoch twice
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 2
