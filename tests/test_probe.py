"""Groups from a linear probe on a pretrained backbone's frozen features (ssal.groupings=probe)."""

from __future__ import annotations

import importlib.util
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
from ssal.compute import forward_flops_per_sample
from ssal.grouping import group_from_confusion, random_grouping
from ssal.models import create_model
from ssal.probe import FeatureSums, collect_features, fit_probe, probe_confusion
from ssal.runs import load_run, read_metrics

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "configs" / "cifar100_mini.yaml"


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    """A 'pretrained' small_cnn state_dict (the probe's mechanics do not depend on what the weights learnt)."""
    torch.manual_seed(0)
    path = tmp_path / "small_cnn.pt"
    torch.save(create_model("small_cnn", 100, width=4).state_dict(), path)
    return path


def _args(cifar100_dir: Path, run: Path, weights: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(MINI), f"data.root={cifar100_dir}", f"run_dir={run}",
            f"model.pretrained={weights}", "ssal.groupings=probe", "schedule.name=constant", *extra]  # fmt: skip


def _groups(run: Path) -> list[dict]:
    return [json.loads((run / "groupings" / f"g{i}.json").read_text()) for i in (1, 2)]


def test_probe_groups_exist_before_the_first_step(cifar100_dir: Path, tmp_path: Path, weights: Path) -> None:
    run, files = tmp_path / "probe", tmp_path / "files"
    assert main(_args(cifar100_dir, run, weights)) == 0
    gs = _groups(run)
    for g, k in zip(gs, (10, 20), strict=True):
        assert g["source"] == "probe" and g["group_epoch"] == 0.0 and g["step"] == 0 and g["k"] == k
        assert g["probe_eval"] == "val" and g["probe_eval_samples"] == 400 and g["probe_fit_samples"] == 1600
        assert g["probe_features"] == 16 and 0.0 <= g["probe_top1"] <= 100.0
        assert sorted(g["assignment"].count(i) for i in range(k)) == [100 // k] * k  # a balanced partition
    # the same run with these groups given as files from the start trains identically: the probe's groups were
    # in place before step 1 (epoch 1 already trains the branches), and the probe's pass is counted as compute
    listed = "[" + ",".join(str(run / "groupings" / f"g{i}.json") for i in (1, 2)) + "]"
    assert main(_args(cifar100_dir, files, weights, f"ssal.groupings={listed}")) == 0
    rows, frows = read_metrics(run / "metrics.csv"), read_metrics(files / "metrics.csv")
    for r, f in zip(rows, frows, strict=True):
        for key in ("train_loss_f", "train_loss_g1", "train_loss_g2", "val_loss", "jp_top1", "g2_acc"):
            assert r[key] == f[key], key
    assert float(rows[0]["train_loss_g1"]) > 0
    passes = forward_flops_per_sample(load_run(run).model) * 2000  # 1600 training + 400 validation images
    extra = float(rows[0]["train_flops"]) - float(frows[0]["train_flops"])
    assert passes <= extra <= passes * 1.5
    assert float(rows[1]["train_flops"]) - float(rows[0]["train_flops"]) == pytest.approx(
        float(frows[1]["train_flops"]) - float(frows[0]["train_flops"]),
        rel=1e-4,  # metrics.csv: 6 digits
    )
    assert main(["evaluate", str(run)]) == 0


def test_resume_keeps_the_probe_groups(
    cifar100_dir: Path, tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    assert main(_args(cifar100_dir, run, weights, "data.val_fraction=0")) == 0
    before = _groups(run)
    assert before[0]["probe_eval"] == "train-holdout"  # the run validates on test: the probe stays off it
    assert before[0]["probe_eval_samples"] == 200 and before[0]["probe_fit_samples"] == 1800

    def no_probe(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the probe ran again on resume")

    monkeypatch.setattr("ssal.probe.run_probe", no_probe)
    assert main(["train", "--resume", str(run), "trainer.epochs=3"]) == 0
    assert _groups(run) == before
    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and float(rows[2]["train_loss_g1"]) > 0
    gamma = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]["model.branches.1.gamma"]
    assert gamma.tolist() == before[1]["assignment"]


def test_probe_needs_a_pretrained_backbone(cifar100_dir: Path, tmp_path: Path, capsys) -> None:
    args = ["train", "--config", str(MINI), f"data.root={cifar100_dir}", f"run_dir={tmp_path / 'x'}"]
    assert main([*args, "ssal.groupings=probe", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "ssal.groupings" in err and "model.pretrained" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def _clustered(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8 classes in 4 far-apart clusters {0,1} {2,3} {4,5} {6,7}; the two classes of a cluster overlap."""
    g = torch.Generator().manual_seed(seed)
    centres = 12.0 * torch.eye(4, 6)
    y = torch.arange(8).repeat_interleave(n_per_class)
    x = centres[y // 2] + 0.6 * (y % 2).float()[:, None] * torch.eye(6)[5] + torch.randn(len(y), 6, generator=g)
    return x, y


def _identity_model() -> SSALModel:
    """f = a linear classifier on the flattened input: its penultimate features are the input itself."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 8))
    return SSALModel(net, [Branch("0", random_grouping(8, 4), head=lambda c, k: nn.Linear(c, k))], input_size=(6, 1, 1))


def test_probe_confusion_joins_the_classes_of_each_cluster() -> None:
    x, y = _clustered(60, 0)
    vx, vy = _clustered(30, 1)
    model = _identity_model()
    batches = [(x[i : i + 50, :, None, None], y[i : i + 50]) for i in range(0, len(y), 50)]
    sums, hx, hy, seen = collect_features(model, batches, 8)
    assert seen == 480 and len(hx) == 0 and float(sums.n) == 480
    assert torch.allclose(sums.xx, (x.double().T @ x.double()), atol=1e-6)  # the hook saw the classifier's input
    res = probe_confusion(sums, vx, vy, 8)
    conf = res.confusion
    assert conf.sum() == 240 and res.eval_samples == 240
    across = conf.sum() - sum(conf[2 * c : 2 * c + 2, 2 * c : 2 * c + 2].sum() for c in range(4))
    assert across == 0 and 50.0 < res.top1 < 95.0  # confused within clusters only
    g = group_from_confusion(conf, 4, "join")
    assert [g.assignment[2 * c] == g.assignment[2 * c + 1] for c in range(4)] == [True] * 4
    split = group_from_confusion(conf, 2, "split")  # split separates the confused pairs
    assert all(split.assignment[2 * c] != split.assignment[2 * c + 1] for c in range(4))
    # every 10th sample held out: the probe is fitted on the rest
    sums2, hx2, hy2, _ = collect_features(model, batches, 8, holdout_every=10)
    assert len(hx2) == 48 and float(sums2.n) == 432 and torch.equal(hy2, y[::10])


def test_feature_sums_add_over_ranks() -> None:
    """Summing two ranks' sums (what DDP's all-reduce does) gives the sums, and the probe, of all the data."""
    x, y = _clustered(20, 2)
    whole, a, b = (FeatureSums.zeros(6, 8) for _ in range(3))
    whole.add(x, y)
    a.add(x[::2], y[::2])
    b.add(x[1::2], y[1::2])
    other = torch.cat([t.reshape(-1) for t in (b.n, b.x, b.y, b.xx, b.xy)])
    summed = a.reduced(lambda t: t + other)
    for name in ("n", "x", "y", "xx", "xy"):
        assert torch.allclose(getattr(summed, name), getattr(whole, name)), name
    for (w1, b1), (w2, b2) in zip(fit_probe(summed), fit_probe(whole), strict=True):
        assert torch.allclose(w1, w2) and torch.allclose(b1, b2)


@pytest.mark.slow
def test_probe_under_two_process_ddp(cifar100_dir: Path, tmp_path: Path, weights: Path) -> None:
    run = tmp_path / "ddp"
    args = _args(cifar100_dir, run, weights, "trainer.devices=2", "trainer.strategy=ddp", "data.augment=none")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    res = subprocess.run([sys.executable, "-m", "ssal", *args], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    g = _groups(run)[0]
    assert g["source"] == "probe" and g["probe_eval_samples"] == 400 and g["probe_fit_samples"] == 1600
    rows = read_metrics(run / "metrics.csv")
    assert float(rows[0]["train_loss_g1"]) > 0 and float(rows[0]["jp_top1"]) > 0


def _benchmark() -> object:
    spec = importlib.util.spec_from_file_location("probe_groups", REPO / "benchmarks" / "probe_groups.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_probe_groups_benchmark_compares_with_the_runs_own_groups(cifar100_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "base"
    args = ["train", "--config", str(MINI), f"data.root={cifar100_dir}", f"run_dir={run}", "ssal.branches=[]"]
    assert main([*args, "trainer.epochs=1", "schedule.name=constant"]) == 0
    assert main(["confusion", str(run)]) == 0
    bench = _benchmark()
    table = bench.run([str(run), "--k", "10", "--out", str(tmp_path / "t.md")])
    rows = [r for r in table.splitlines() if r.startswith("| ") and "groups from" not in r]
    assert [r.split("|")[1].strip() for r in rows] == ["linear probe (frozen f)", "f's own confusion (two-stage)",
                                                       "random"]  # fmt: skip
    assert rows[1].split("|")[3].strip() == "1.000"  # the confusion groups against themselves
    assert (tmp_path / "t.md").read_text() == table
    a = random_grouping(12, 3, 0)
    b = type(a)(tuple(a.assignment[::-1]), 3)
    assert bench.adjusted_rand(a, a) == pytest.approx(1.0)
    relabel = type(a)(tuple((g + 1) % 3 for g in a.assignment), 3)
    assert bench.adjusted_rand(a, relabel) == pytest.approx(1.0) and bench.adjusted_rand(a, b) < 1.0
    assert bench.same_superclass_share(a, list(a.assignment)) == 100.0
