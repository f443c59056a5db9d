"""The training engine: schedules, optimiser, checkpoints, shards, NaN guard, kill -9 + resume, and 2-process DDP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssal.config import OptimConfig, ScheduleConfig, load_config
from ssal.engine import build_optimizer, lr_factor
from ssal.errors import SSALError
from ssal.runs import RunPaths, load_checkpoint, load_run, read_metrics

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "configs" / "cifar100_mini.yaml"


def _mini(cifar100_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    """CLI arguments of a tiny CIFAR-100-mini run (4-channel small_cnn, one CPU thread)."""
    return ["train", "--config", str(MINI), f"data.root={cifar100_dir}", f"run_dir={run_dir}", *extra]


def _ssal(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "ssal", *args], capture_output=True, text=True, env=env, **kw)


# --- schedules and optimiser ----------------------------------------------------------------------------
def test_val_every_validates_the_last_epoch_too(tmp_path: Path) -> None:
    from ssal.cli import main

    run = tmp_path / "v"
    args = ["train", "--config", str(REPO / "configs" / "demo.yaml"), f"run_dir={run}", "ssal.branches=[]"]
    args += ["trainer.epochs=3", "trainer.val_every=2", "schedule.peak_epoch=1", "trainer.limit_train_batches=0.3"]
    assert main(args) == 0
    assert [bool(r["f_top1"]) for r in read_metrics(RunPaths(run).metrics)] == [False, True, True]


def test_triangular_schedule_matches_paper_shape() -> None:
    s = ScheduleConfig(name="triangular", peak_epoch=8)
    assert lr_factor(s, 20, 0) == 0.0
    assert lr_factor(s, 20, 4) == pytest.approx(0.5)
    assert lr_factor(s, 20, 8) == pytest.approx(1.0)
    assert lr_factor(s, 20, 14) == pytest.approx(0.5)
    assert lr_factor(s, 20, 20) == pytest.approx(0.0)
    assert lr_factor(s, 20, 25) == pytest.approx(0.0)  # clamped, never negative


def test_warmup_cosine_linear_and_step() -> None:
    cos = ScheduleConfig(name="warmup_cosine", warmup_epochs=5, final_lr=0.0)
    assert lr_factor(cos, 90, 2.5) == pytest.approx(0.5)
    assert lr_factor(cos, 90, 5) == pytest.approx(1.0)
    assert lr_factor(cos, 90, 47.5) == pytest.approx(0.5)
    assert lr_factor(cos, 90, 90) == pytest.approx(0.0, abs=1e-9)
    lin = ScheduleConfig(name="warmup_linear", warmup_epochs=0, final_lr=0.1)
    assert lr_factor(lin, 10, 5) == pytest.approx(0.55)
    step = ScheduleConfig(name="step", milestones=[3, 6], gamma=0.1)
    assert [lr_factor(step, 10, t) for t in (0, 2.9, 3, 7)] == pytest.approx([1, 1, 0.1, 0.01])


def test_weight_decay_on_kernels_only_by_default() -> None:
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = build_optimizer(m, OptimConfig(lr=0.1, momentum=0.9, nesterov=True, weight_decay=2e-4))
    decays = {p.ndim: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays == {4: 2e-4, 1: 0.0}
    assert opt.defaults["nesterov"] is True
    opt = build_optimizer(m, OptimConfig(weight_decay=1e-4, decay_norm_and_bias=True))
    assert all(g["weight_decay"] == 1e-4 for g in opt.param_groups)


# --- checkpoints and shards -------------------------------------------------------------------------------
def test_corrupt_or_foreign_checkpoint_is_an_ssal_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SSALError, match="corrupt"):
        load_checkpoint(bad)
    torch.save({"state_dict": {}, "x": Path("a")}, tmp_path / "pickled.ckpt")  # an arbitrary object
    with pytest.raises(SSALError, match="weights_only=True"):
        load_checkpoint(tmp_path / "pickled.ckpt")
    with pytest.raises(SSALError, match="not found"):
        load_checkpoint(tmp_path / "none.ckpt")


def test_two_rank_shards_are_disjoint_and_cover_the_epoch(cifar100_dir: Path) -> None:
    from ssal.build import load_data, make_loader

    cfg = load_config(MINI, [f"data.root={cifar100_dir}", "data.augment=none"])
    data = load_data(cfg.data)
    seen = []
    for rank in (0, 1):
        loader = make_loader(cfg, data, data.train, train=True, rank=rank, world_size=2)
        loader.set_epoch(3)
        seen.append([x.numpy().tobytes() for xb, _ in loader for x in xb])
    one = make_loader(cfg, data, data.train, train=True)
    assert not set(seen[0]) & set(seen[1])
    assert len(seen[0]) + len(seen[1]) == one.num_samples == len(data.train)


# --- training runs ------------------------------------------------------------------------------------------
def test_train_writes_a_complete_run_dir(cifar100_dir: Path, tmp_path: Path) -> None:
    from ssal.cli import main

    run = tmp_path / "run"
    assert main(_mini(cifar100_dir, run, "ssal.groupings=random", "trainer.epochs=2")) == 0
    paths = RunPaths(run)
    for p in (paths.config, paths.last, paths.best, paths.metrics, paths.grouping(0), paths.grouping(1)):
        assert p.is_file(), p
    assert any(paths.tensorboard.glob("events.out.tfevents*"))
    rows = read_metrics(paths.metrics)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for key in ("train_loss", "train_loss_f", "train_loss_g1", "train_loss_g2", "f_top1", "jp_top1", "g1_acc"):
        assert 0.0 <= float(rows[-1][key]) < 1000, key
    ckpt = torch.load(paths.last, weights_only=True)
    assert {"state_dict", "optimizer_states", "lr_schedulers", "ssal", "epoch", "global_step"} <= set(ckpt)
    assert {"config", "groupings", "rng", "version", "epochs_done"} <= set(ckpt["ssal"])
    info = load_run(run, "last")
    assert info.epoch == 2 and len(info.groupings) == 2 and info.num_classes == 100
    assert not info.model.training
    with pytest.raises(SSALError, match="--resume"):
        from ssal.engine import fit

        fit(load_config(paths.config))
    # --resume RUN_DIR alone takes the saved config; one more epoch continues the same run
    assert main(["train", "--resume", str(run), "trainer.epochs=3", "schedule.peak_epoch=1"]) == 0
    rows = read_metrics(paths.metrics)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert float(rows[2]["wall_seconds"]) > float(rows[1]["wall_seconds"]) > 0


def test_resume_takes_an_optional_run_dir_and_never_swallows_an_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import yaml

    from ssal.cli import main

    demo = str(REPO / "configs" / "demo.yaml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "optim.lr=0.05").mkdir()  # a folder of that name does not make the word a run directory

    def printed(*args: str) -> dict:
        assert main(["train", *args, "--print-config"]) == 0
        return yaml.safe_load(capsys.readouterr().out)

    cfg = printed("--config", demo, "--resume", "optim.lr=0.05", "seed=3")
    assert cfg["optim"]["lr"] == 0.05 and cfg["seed"] == 3 and cfg["run_dir"] != "optim.lr=0.05"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({**cfg, "run_dir": "elsewhere"}))
    assert printed("--resume", str(run), "seed=4")["run_dir"] == str(run)  # the config comes from RUN_DIR
    assert printed("--config", demo, "--resume", str(run))["run_dir"] == str(run)  # RUN_DIR is the run resumed
    assert main(["train", "--config", demo, "--resume", str(run), "run_dir=other"]) == 2
    assert "two run directories" in capsys.readouterr().err


def test_limit_train_batches_is_a_step_budget_with_a_full_schedule(tmp_path: Path) -> None:
    """A fraction of each epoch's batches: fewer steps, the schedule still ends at final_lr, every epoch validated."""
    from ssal.cli import main

    demo = REPO / "configs" / "demo.yaml"
    steps = {}
    for lim in (1.0, 0.5):
        run = tmp_path / f"lim{lim}"
        args = ["train", "--config", str(demo), f"run_dir={run}", "ssal.branches=[]", "trainer.epochs=3"]
        assert main([*args, "schedule.peak_epoch=1", f"trainer.limit_train_batches={lim}"]) == 0
        rows = read_metrics(RunPaths(run).metrics)
        assert [r["epoch"] for r in rows] == ["1", "2", "3"] and all(r["f_top1"] for r in rows)
        assert float(rows[-1]["lr"]) == 0.0  # triangular schedule to final_lr 0 over the budget
        steps[lim] = [int(r["step"]) for r in rows]
    full = steps[1.0][0]
    assert steps[0.5] == [full // 2 * e for e in (1, 2, 3)] and steps[1.0] == [full * e for e in (1, 2, 3)]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(cifar100_dir: Path, tmp_path: Path, capsys) -> None:
    from ssal.cli import main

    run = tmp_path / "nan"
    # lr 0.01 in epoch 1, then x 1e12 from epoch 2 on: the loss diverges in epoch 2
    args = [
        "ssal.branches=[]",
        "trainer.epochs=3",
        "schedule.name=step",
        "schedule.milestones=[1]",
        "schedule.gamma=1e12",
        "optim.lr=0.01",
        "trainer.log_every_n_steps=1",
    ]
    assert main(_mini(cifar100_dir, run, *args)) == 1
    err = capsys.readouterr().err
    assert "NaN/Inf" in err and "Traceback" not in err
    assert [r["epoch"] for r in read_metrics(run / "metrics.csv")] == ["1"]
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["ssal"]["epochs_done"] == 1


def test_kill_9_mid_epoch_then_resume(cifar100_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "killed"
    args = _mini(cifar100_dir, run, "ssal.groupings=random", "trainer.epochs=4", "data.batch_size=10")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ssal", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    metrics, deadline = run / "metrics.csv", time.monotonic() + 300
    while not (metrics.is_file() and read_metrics(metrics)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "training finished before it could be killed"
    done = len(read_metrics(metrics))
    assert 1 <= done < 4
    res = _ssal(*args, "--resume", timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = read_metrics(metrics)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert [int(r["step"]) for r in rows] == [i * 160 for i in (1, 2, 3, 4)]
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["ssal"]["epochs_done"] == 4


def test_two_process_ddp_matches_one_process(cifar100_dir: Path, tmp_path: Path) -> None:
    common = ["ssal.groupings=random", "trainer.epochs=1", "schedule.name=constant", "data.augment=none"]
    one = _ssal(*_mini(cifar100_dir, tmp_path / "one", *common), timeout=600)
    two = _ssal(
        *_mini(cifar100_dir, tmp_path / "two", *common, "trainer.devices=2", "trainer.strategy=ddp"), timeout=600
    )
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    r1, r2 = read_metrics(tmp_path / "one" / "metrics.csv"), read_metrics(tmp_path / "two" / "metrics.csv")
    assert len(r1) == len(r2) == 1  # written once, by rank 0
    assert r1[0]["train_samples"] == r2[0]["train_samples"] == "1600"
    assert r1[0]["val_samples"] == r2[0]["val_samples"] == "400"
    assert int(r2[0]["step"]) == int(r1[0]["step"]) // 2  # each rank did half the batches
    assert two.stdout.count(str(tmp_path / "two")) == 1  # only rank 0 reports
    assert (tmp_path / "two" / "checkpoints" / "last.ckpt").is_file()
    assert len(list((tmp_path / "two" / "checkpoints").iterdir())) == 2  # last + best, no stray temp files
