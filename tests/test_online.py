"""One-pass (autogenous) groupings: groups made from the model being trained, at ssal.group_epoch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ssal import Branch, SSALModel
from ssal.cli import main
from ssal.config import load_config
from ssal.engine import SSALTask, fit
from ssal.errors import SSALError
from ssal.grouping import random_grouping
from ssal.online import weight_similarity
from ssal.runs import load_checkpoint, load_run, read_metrics

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "configs" / "cifar100_mini.yaml"


def _args(cifar100_dir: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(MINI), f"data.root={cifar100_dir}", f"run_dir={run}", *extra]


ONLINE = ("ssal.groupings=online", "ssal.group_epoch=1", "trainer.epochs=2", "schedule.name=constant")


def test_online_groups_appear_at_group_epoch_and_cost_nothing_before(cifar100_dir: Path, tmp_path: Path) -> None:
    run, base = tmp_path / "online", tmp_path / "base"
    assert main(_args(cifar100_dir, run, *ONLINE)) == 0
    assert main(_args(cifar100_dir, base, *ONLINE, "ssal.branches=[]")) == 0
    rows, brows = read_metrics(run / "metrics.csv"), read_metrics(base / "metrics.csv")
    # epoch 1: main-only training, bit-identical to the baseline (the branches take no part in the steps)
    for key in ("train_loss_f", "val_loss", "f_top1", "train_flops"):
        assert rows[0][key] == brows[0][key], key
    assert float(rows[0]["train_loss_g1"]) == 0.0 and rows[0]["jp_top1"] == ""
    # epoch 2: the branches train on the groups made from f's own validation confusion
    assert float(rows[1]["train_loss_g1"]) > 0 and float(rows[1]["jp_top1"]) > 0
    assert rows[1]["train_loss_f"] != brows[1]["train_loss_f"]
    epoch2 = float(rows[1]["train_flops"]) - float(rows[0]["train_flops"])
    base2 = float(brows[1]["train_flops"]) - float(brows[0]["train_flops"])
    assert epoch2 > base2 * 1.001  # branches cost compute once they run, and the confusion pass is counted
    for i, k in enumerate((10, 20)):
        g = json.loads((run / "groupings" / f"g{i + 1}.json").read_text())
        assert g["online"] is True and g["group_epoch"] == 1.0 and g["k"] == k
        assert g["source"].startswith("online:val-confusion")
        assert sorted(set(g["assignment"])) == list(range(k))
    info = load_run(run)  # evaluate / predict / explain / export load the groups of the checkpoint
    assert [g.assignment for g in info.groupings] == [
        tuple(json.loads((run / "groupings" / f"g{i + 1}.json").read_text())["assignment"]) for i in range(2)
    ]
    assert main(["evaluate", str(run)]) == 0


def test_checkpoint_before_group_epoch_is_refused_by_load_run(
    cifar100_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    cfg = load_config(MINI, [f"data.root={cifar100_dir}", f"run_dir={run}", *ONLINE[:1], "ssal.group_epoch=1.5"])
    original = SSALTask.training_step

    def crash_after_first_epoch(self, batch, batch_idx):  # noqa: ANN001, ANN202
        if self.current_epoch == 1:
            raise RuntimeError("simulated crash after epoch 1")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(SSALTask, "training_step", crash_after_first_epoch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(cfg)
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["ssal"]["groupings_pending"] is True
    assert not (run / "groupings" / "g1.json").exists()
    with pytest.raises(SSALError, match="before the run's online groupings existed"):
        load_run(run, "last")
    monkeypatch.setattr(SSALTask, "training_step", original)
    fit(load_config(MINI, [f"data.root={cifar100_dir}", f"run_dir={run}", *ONLINE[:1], "ssal.group_epoch=1.5"]),
        resume=True)  # fmt: skip
    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    g = json.loads((run / "groupings" / "g1.json").read_text())
    assert g["group_epoch"] == pytest.approx(1.5, abs=0.05) and float(rows[1]["jp_top1"]) > 0


def test_resume_after_group_epoch_keeps_the_groups(cifar100_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(_args(cifar100_dir, run, *ONLINE)) == 0
    before = [(run / "groupings" / f"g{i}.json").read_text() for i in (1, 2)]
    assert main(["train", "--resume", str(run), "trainer.epochs=3"]) == 0
    assert [(run / "groupings" / f"g{i}.json").read_text() for i in (1, 2)] == before  # not remade on resume
    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and float(rows[2]["train_loss_g1"]) > 0
    assert float(rows[2]["train_flops"]) > float(rows[1]["train_flops"]) > float(rows[0]["train_flops"])
    gamma = load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]["model.branches.0.gamma"]
    assert gamma.tolist() == json.loads(before[0])["assignment"]


def test_regroup_every_and_weight_source(cifar100_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "w"
    extra = ("ssal.groupings=weights", "ssal.group_epoch=1", "ssal.regroup_every=1", "trainer.epochs=3")
    assert main(_args(cifar100_dir, run, *extra)) == 0
    g = json.loads((run / "groupings" / "g1.json").read_text())
    assert g["source"].startswith("online:class-weights") and g["group_epoch"] == 2.0  # remade at epoch 2
    assert main(["evaluate", str(run)]) == 0


def test_weight_similarity_joins_classes_with_parallel_weights() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 6))
    with torch.no_grad():
        w = net[3].weight
        w[1] = 2.0 * w[0]
        w[4] = 3.0 * w[3]
    model = SSALModel(
        net, [Branch("1", random_grouping(6, 3), head=lambda c, k: nn.Linear(c, k))], input_size=(3, 2, 2)
    )
    s = weight_similarity(model)
    assert s.shape == (6, 6) and (s >= 0).all() and s.diagonal().max() == 0.0
    assert s[0, 1] == pytest.approx(1.0, abs=1e-5) and s[3, 4] == pytest.approx(1.0, abs=1e-5)
    from ssal.grouping import group_from_confusion

    g = group_from_confusion(s, 3, "join")
    assert g.assignment[0] == g.assignment[1] and g.assignment[3] == g.assignment[4]


@pytest.mark.parametrize("spe", [1, 3, 7, 17, 100, 391])
def test_fractional_regroup_epochs_land_on_the_steps_nearest_to_the_epochs_they_name(spe: int) -> None:
    """group_epoch 1.5 and regroup_every 0.5: groups at the steps nearest to epochs 1.5, 2.0, 2.5 (each rounded from
    its own epoch, so 17 steps per epoch gives 26, 34, 42, not 26, 33, 40 drifting to epochs 1.94, 2.35)."""
    from ssal.online import OnlineGrouping

    if spe < 2:
        with pytest.raises(SSALError, match="less than one step"):
            OnlineGrouping([], "online", 1.5, 0.5).plan(spe, 3 * spe)
        return
    plan = OnlineGrouping([], "online", 1.5, 0.5).plan(spe, 3 * spe)
    assert [e for _, e in plan] == [1.5, 2.0, 2.5]
    assert all(abs(s / spe - e) <= 0.5 / spe + 1e-9 for s, e in plan)
    if spe == 17:
        assert [s for s, _ in plan] == [26, 34, 42]
    once = OnlineGrouping([], "online", 0.5, 0.0).plan(spe, 3 * spe)
    assert once == [(round(0.5 * spe), 0.5)]
    many = OnlineGrouping([], "online", 0.5, 0.5).plan(spe, 10 * spe)  # 19 regroups: no drift accumulates
    assert [e for _, e in many] == [0.5 * j for j in range(1, 20)]
    assert all(abs(s / spe - e) <= 0.5 / spe + 1e-9 for s, e in many)


@pytest.mark.parametrize("bad", ["ssal.group_epoch=2", "ssal.group_epoch=-1", "ssal.regroup_every=-1"])
def test_bad_online_settings_are_one_line(bad: str, cifar100_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(_args(cifar100_dir, tmp_path / "x", *ONLINE, bad, "--dry-run")) == 2
    err = capsys.readouterr().err
    assert bad.split("=")[0] in err and "Traceback" not in err


@pytest.mark.slow
def test_online_groupings_under_two_process_ddp(cifar100_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    args = _args(cifar100_dir, run, *ONLINE, "trainer.devices=2", "trainer.strategy=ddp", "data.augment=none")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    res = subprocess.run([sys.executable, "-m", "ssal", *args], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = read_metrics(run / "metrics.csv")
    assert len(rows) == 2 and float(rows[1]["jp_top1"]) > 0 and float(rows[1]["train_loss_g1"]) > 0
    assert json.loads((run / "groupings" / "g1.json").read_text())["online"] is True


def test_ema_checkpoints_hold_the_average_and_keep_integer_buffers(cifar100_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "ema"
    assert main(_args(cifar100_dir, run, *ONLINE, "trainer.ema_decay=0.9")) == 0
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    avg, cur = ckpt["state_dict"], ckpt["current_model_state"]
    w = "model.backbone.fc.weight"
    assert not torch.equal(avg[w], cur[w])  # the average differs from the last step's weights
    g = json.loads((run / "groupings" / "g1.json").read_text())["assignment"]
    assert avg["model.branches.0.gamma"].tolist() == g == cur["model.branches.0.gamma"].tolist()
    assert avg["model.branches.0.gamma"].dtype == torch.long
    assert main(["evaluate", str(run), "--checkpoint", "last", "--tta", "flip"]) == 0
    rep = json.loads((run / "eval_flip.json").read_text())
    assert rep["tta"] == "flip" and rep["jp_top1"] is not None and 0 <= rep["ece_tr"] <= 100
    assert rep["mistakes_reference"] == "superclasses" and 0 <= rep["mistakes_within"]["tr"] <= 100


def test_shipped_cifar100_groupings_match_the_class_order(cifar100_dir: Path) -> None:
    from ssal.grouping import load_shipped, shipped_groupings

    names = json.loads((cifar100_dir / "meta.json").read_text())["fine_label_names"]
    assert {"cifar100-join-20", "cifar100-split-20"} <= set(shipped_groupings())
    for name in shipped_groupings():
        g = load_shipped(name)
        assert g.num_classes == 100 and list(g.class_names) == names  # indices follow the data set's labels
        assert max(g.sizes()) - min(g.sizes()) <= 1 and g.k == int(name.rsplit("-", 1)[1])
        assert "ssal confusion" in g.extra["made_by"]
    with pytest.raises(SSALError, match="available"):
        load_shipped("cifar100-join-7")


def test_shipped_grouping_trains_and_k_must_agree(cifar100_dir: Path, tmp_path: Path, capsys) -> None:
    one = ("ssal.branches=[{at: g2, k: 20, head: gap}]", "trainer.epochs=1", "schedule.name=constant")
    assert main(_args(cifar100_dir, tmp_path / "a", *one, "ssal.groupings=cifar100-join-20")) == 0
    saved = json.loads((tmp_path / "a" / "groupings" / "g1.json").read_text())
    assert (
        saved["assignment"]
        == json.loads((REPO / "src" / "ssal" / "data" / "groups" / "cifar100-join-20.json").read_text())["assignment"]
    )
    assert main(_args(cifar100_dir, tmp_path / "b", *one, "ssal.groupings=cifar100-join-10")) == 2
    err = capsys.readouterr().err
    assert "k=10" in err and "ssal.branches[0] says k=20" in err and "Traceback" not in err
