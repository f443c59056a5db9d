"""trainer.compile: the first batch's compiled gradients are checked against eager's before training on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ssal.cli import main
from ssal.engine import compiled_gradient_problem
from ssal.loss import SSALLoss
from ssal.models import create_model

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
TRAIN = ["train", "--config", str(DEMO), "trainer.compile=true", "ssal.groupings=random", "trainer.epochs=3"]


class _Grad(torch.autograd.Function):
    """Identity forward; backward replaces the gradient with ``fill`` (a stand-in for a miscompiled backward)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fill: float) -> torch.Tensor:
        ctx.fill = fill
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        return torch.full_like(g, ctx.fill), None


def broken(model: torch.nn.Module, fill: float) -> Any:
    """A "compiled" forward whose gradient with respect to the input of the model is ``fill`` everywhere."""

    def forward(x: torch.Tensor, with_branches: bool = True) -> Any:
        out = model(x, with_branches=with_branches)
        return out._replace(main=_Grad.apply(out.main, fill))

    return forward


def _setup(**kw: Any) -> tuple[Any, SSALLoss, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, ssal=[{"at": "g2", "k": 3}], width=8, **kw).train()
    return model, SSALLoss(model.gammas), torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))


def test_agreeing_gradients_pass_and_leave_the_model_as_it_was() -> None:
    model, loss, x, y = _setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert compiled_gradient_problem(model, model.forward, loss, x, y) is None
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # batch-norm statistics restored
    assert all(p.grad is None for p in model.parameters())
    model.requires_grad_(False)
    assert compiled_gradient_problem(model, broken(model, float("nan")), loss, x, y) is None  # nothing trains


def test_non_finite_and_wrong_gradients_are_named() -> None:
    model, loss, x, y = _setup()
    assert "non-finite" in compiled_gradient_problem(model, broken(model, float("nan")), loss, x, y)
    wrong = compiled_gradient_problem(model, broken(model, 0.0), loss, x, y)
    assert wrong is not None and "cosine similarity" in wrong


def test_with_dropout_only_non_finite_gradients_count() -> None:
    model, loss, x, y = _setup()
    model.backbone.fc = torch.nn.Sequential(torch.nn.Dropout(0.5), model.backbone.fc)  # two passes, two masks
    assert compiled_gradient_problem(model, broken(model, 0.0), loss, x, y) is None
    assert "non-finite" in compiled_gradient_problem(model, broken(model, float("inf")), loss, x, y)


def test_train_stops_before_the_first_compiled_step_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: broken(fn.__self__, float("nan")))
    run = tmp_path / "run"
    code = main([*TRAIN, f"run_dir={run}"])
    err = capsys.readouterr().err
    assert code == 2 and "trainer.compile=false" in err and "non-finite" in err and "Traceback" not in err
    assert not (run / "checkpoints" / "last.ckpt").exists()  # no step was taken on the wrong gradients
    # a compiled forward that agrees trains as usual
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    run2 = tmp_path / "run2"
    assert main([*TRAIN, f"run_dir={run2}"]) == 0
