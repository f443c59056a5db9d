"""Data-limited training (data.per_class), the zero-cost group objectives, and temperature scaling (+TS)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ssal
from ssal.config import load_config
from ssal.data.arrays import ImageArrays, per_class_indices, per_class_subset
from ssal.errors import SSALError
from ssal.heads import group_log_probs
from ssal.prediction import fit_temperature

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"


# --- data.per_class ---------------------------------------------------------------------------------------------
def test_per_class_is_stratified_seeded_and_nested() -> None:
    labels = torch.arange(5).repeat_interleave(20)[torch.randperm(100)]
    a, b = per_class_indices(labels, 4, seed=3), per_class_indices(labels, 4, seed=3)
    assert torch.equal(a, b)
    assert torch.bincount(labels[a]).tolist() == [4] * 5
    bigger = per_class_indices(labels, 10, seed=3)
    assert set(a.tolist()) <= set(bigger.tolist())  # smaller sizes are subsets of larger ones
    assert not torch.equal(a, per_class_indices(labels, 4, seed=4))
    assert per_class_indices(labels, 50, seed=0).numel() == 100  # a class with fewer keeps all of them


def test_per_class_zero_keeps_everything_and_negative_is_refused() -> None:
    data = ImageArrays(torch.zeros(6, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 0, 0, 1, 1, 1]), name="t")
    assert per_class_subset(data, 0) is data
    assert per_class_subset(data, 2).labels.tolist() == [0, 0, 1, 1]
    with pytest.raises(SSALError, match="data.per_class"):
        load_config(DEMO, ["data.per_class=-1"])


def test_per_class_subsets_train_after_the_validation_split() -> None:
    from ssal.build import load_data

    full = load_data(load_config(DEMO).data)
    small = load_data(load_config(DEMO, ["data.per_class=5"]).data)
    assert torch.equal(full.val.labels, small.val.labels)  # one validation split for every size
    assert torch.bincount(small.train.labels).tolist() == [5] * 10
    assert len(full.train) > len(small.train)


def test_per_class_on_an_image_folder(tmp_path: Path, write_tree) -> None:

    from ssal.build import load_data, make_loader

    write_tree(tmp_path, {"train": "abc", "val": "abc"}, n=6)
    cfg = load_config(DEMO, ["data.name=folder", f"data.root={tmp_path}", "data.per_class=2", "data.workers=0",
                             "data.val_fraction=0", "model.input_size=12"])  # fmt: skip
    bundle = load_data(cfg.data)
    loader = make_loader(cfg, bundle, bundle.train, train=False)
    ys = sorted(int(v) for _, y in loader for v in y)
    assert ys == [0, 0, 1, 1, 2, 2]


# --- zero-cost group objectives ---------------------------------------------------------------------------------
def test_group_log_probs_are_logsumexp_over_members_and_exact_far_in_the_tail() -> None:
    z = torch.randn(4, 6) * 50  # large logits: naive exp/sum/log would underflow to -inf
    gamma = torch.tensor([0, 1, 0, 2, 1, 2])
    got = group_log_probs(z, gamma, 3)
    want = torch.stack([z.log_softmax(-1)[:, gamma == k].logsumexp(1) for k in range(3)], 1)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.isfinite(got).all()
    assert torch.allclose(got.exp().sum(1), torch.ones(4), atol=1e-5)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def test_output_branch_has_no_parameters_and_trains_f_towards_the_group() -> None:
    g = ssal.Grouping((0, 0, 1, 1, 2, 2), 3)
    model = ssal.SSALModel(_Tiny(), [ssal.Branch("output", g)], input_size=(3, 8, 8))
    assert sum(p.numel() for p in model.branches.parameters()) == 0
    x, y = torch.rand(5, 3, 8, 8), torch.tensor([0, 1, 2, 3, 4])
    out = model(x)
    assert out.aux[0].shape == (5, 3)
    assert torch.allclose(out.aux[0], group_log_probs(out.main, model.gammas[0], 3))
    loss = ssal.SSALLoss(model.gammas, aux_weights=1.0)
    parts = loss(out, y)
    assert torch.allclose(parts.aux[0], F.nll_loss(out.aux[0], model.gammas[0][y]))
    parts.total.backward()
    assert model.backbone.fc.weight.grad is not None


def test_group_smoothing_puts_the_mass_on_group_mates_only() -> None:
    gamma = torch.tensor([0, 0, 0, 1, 2, 2])
    loss = ssal.SSALLoss([gamma], label_smoothing=0.3, group_smoothing=True)
    t = loss.group_smoothed_target(torch.tensor([0, 3, 5]))
    assert torch.allclose(t.sum(1), torch.ones(3))
    assert torch.allclose(t[0], torch.tensor([0.7, 0.15, 0.15, 0, 0, 0]))
    assert torch.allclose(t[1], torch.tensor([0, 0, 0, 1.0, 0, 0]))  # alone in its group: all mass stays on y
    assert torch.allclose(t[2], torch.tensor([0, 0, 0, 0, 0.3, 0.7]))
    out = ssal.SSALOutput(torch.randn(3, 6), (torch.randn(3, 3),))
    y = torch.tensor([0, 3, 5])
    want = -(t * out.main.log_softmax(-1)).sum(1).mean()
    assert torch.allclose(loss(out, y).main, want, atol=1e-6)
    plain = ssal.SSALLoss([gamma], label_smoothing=0.3)(out, y).main
    assert not torch.allclose(plain, want)
    with pytest.raises(SSALError, match="group_smoothing"):
        ssal.SSALLoss([], label_smoothing=0.1, group_smoothing=True)
    with pytest.raises(SSALError, match="optim.group_smoothing"):
        load_config(DEMO, ["optim.group_smoothing=true"])  # label smoothing 0 in the demo


# --- temperature scaling ----------------------------------------------------------------------------------------
def test_fit_temperature_recovers_the_scale_of_overconfident_logits() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (4000,), generator=g)
    z = torch.randn(4000, 10, generator=g)
    z[torch.arange(4000), y] += 2.0
    t1 = fit_temperature(z, y)
    t3 = fit_temperature(3 * z, y)
    assert t3 == pytest.approx(3 * t1, rel=1e-3)
    nll = lambda t: float(F.cross_entropy(3 * z / t, y))  # noqa: E731
    assert nll(t3) <= min(nll(t3 * 0.9), nll(t3 * 1.1), nll(1.0))
    with pytest.raises(SSALError, match="held-out"):
        fit_temperature(z[:0], y[:0])


def _train_demo(run: Path, *overrides: str) -> None:
    cmd = [sys.executable, "-m", "ssal", "train", "--config", str(DEMO), f"run_dir={run}", "trainer.epochs=2",
           "schedule.peak_epoch=1", "ssal.groupings=random", "trainer.progress_bar=false", *overrides]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch digits run with two branches and a validation split, not evaluated yet."""
    run = tmp_path_factory.mktemp("ts") / "run"
    _train_demo(run)
    return run


@pytest.mark.slow
def test_evaluate_reports_temperature_scaling(demo_run: Path, tmp_path: Path) -> None:
    run = demo_run
    res = subprocess.run([sys.executable, "-m", "ssal", "evaluate", str(run)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ev = json.loads((run / "eval.json").read_text())
    assert set(ev["temperature"]) == {"tr", "jp"} and ev["temperature_fitted_on"] == "val"
    assert all(t > 0 for t in ev["temperature"].values())
    assert ev["nll_tr_ts"] <= ev["nll_tr"] + 0.05 and ev["nll_jp_ts"] is not None
    assert "+TR +TS (T = " in res.stdout
    # without a held-out split: no temperatures, and the report says so
    run2 = tmp_path / "noval"
    _train_demo(run2, "data.val_fraction=0", "ssal.branches=[]")
    res = subprocess.run([sys.executable, "-m", "ssal", "evaluate", str(run2)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ev = json.loads((run2 / "eval.json").read_text())
    assert ev["temperature"] == {} and ev["ece_tr_ts"] is None
    assert "No temperature scaling" in res.stdout


@pytest.mark.slow
def test_predict_and_export_use_the_fitted_temperatures(demo_run: Path, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from ssal.evaluation import load_temperatures
    from ssal.export import run_exported
    from ssal.predict import predict_tensor
    from ssal.runs import load_run

    run = tmp_path / "run"
    shutil.copytree(demo_run, run)
    (run / "eval.json").unlink(missing_ok=True)
    with pytest.raises(SSALError, match="ssal evaluate"):
        load_temperatures(run)
    subprocess.run([sys.executable, "-m", "ssal", "evaluate", str(run)], check=True, capture_output=True)
    temps = load_temperatures(run)
    info = load_run(run)
    x = torch.rand(4, *info.model.input_size, generator=torch.Generator().manual_seed(0))
    raw, cal = predict_tensor(info, x, 3), predict_tensor(info, x, 3, temps)
    for r, c in zip(raw, cal, strict=True):
        assert [s.index for s in r["jp"]] == [s.index for s in c["jp"]]  # top-1..k unchanged by a temperature
    out = info.model.eval()(x)
    want = (ssal.joint_probability(out, info.gammas, info.eta).log() / temps["jp"]).softmax(-1)
    assert cal[0]["jp"][0].prob == pytest.approx(float(want[0].max()), rel=1e-4)
    img = tmp_path / "a.png"
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(img)
    res = subprocess.run([sys.executable, "-m", "ssal", "predict", str(run), str(img), "--calibrated", "--json"],
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["temperature"] == pytest.approx(temps)
    pt = tmp_path / "m.pt"
    res = subprocess.run([sys.executable, "-m", "ssal", "export", str(run), "--format", "torchscript", "--out",
                          str(pt), "--calibrated"], capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"temperature {temps['jp']:.3f}" in res.stdout
    assert json.loads((tmp_path / "m.pt.json").read_text())["temperature"] == pytest.approx(temps["jp"])
    probs = run_exported(pt, x[:2], "torchscript")[0]
    assert torch.allclose(probs, want[:2], atol=1e-4)
