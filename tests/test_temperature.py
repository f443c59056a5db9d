"""Temperature scaling (+TS): the fit, and what evaluate, predict and export do with it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ssal
from ssal.errors import SSALError
from ssal.prediction import fit_temperature

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


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
    from ssal.inference import predict_tensor
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
