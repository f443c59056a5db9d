"""How a model errs: calibration error and errors inside the true class's coarse group."""

from __future__ import annotations

import pytest
import torch

from ssal.evaluation import EvalReport, calibration_error, format_report, mistakes_within


def test_mistakes_within_counts_only_wrong_predictions() -> None:
    coarse = torch.tensor([0, 0, 1, 1])
    target = torch.tensor([0, 0, 2, 3, 1])
    pred = torch.tensor([0, 1, 3, 0, 2])  # right, wrong-in-group, wrong-in-group, wrong-outside, wrong-outside
    assert mistakes_within(pred, target, coarse) == pytest.approx(50.0)
    assert mistakes_within(target, target, coarse) is None  # no errors: undefined, not 0 or 100


def test_calibration_error_zero_when_confidence_matches_accuracy() -> None:
    # confidence 1.0 and always right -> ECE 0; confidence 1.0 and right half the time -> ECE 50 %
    probs = torch.eye(4)
    assert calibration_error(probs, torch.arange(4)) == pytest.approx(0.0, abs=1e-6)
    assert calibration_error(probs, torch.tensor([0, 1, 3, 2])) == pytest.approx(50.0, abs=1e-4)


PARAMS = {"total": 3, "backbone": 2, "branches": 1}


def test_report_keeps_the_training_compute_of_a_small_run() -> None:
    rep = EvalReport("run", "run/best.ckpt", 1, "test", 16, 50.0, 100.0, params=PARAMS, train_flops=8.54e10)
    assert "Training compute: 8.54e-05 PFLOP" in format_report(rep)  # not 0.0001
    rep.train_flops = 2.88e14
    assert "Training compute: 0.288 PFLOP" in format_report(rep)


def test_collect_outputs_gives_the_callers_train_mode_back() -> None:
    from torch import nn

    import ssal
    from ssal.evaluation import collect_outputs

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.bn(self.conv(x)).mean((2, 3)))

    model = ssal.SSALModel(Net(), input_size=(3, 8, 8)).train()
    model.backbone.fc.eval()  # a mixed state must come back exactly
    before = model.backbone.bn.running_mean.clone()
    out, y = collect_outputs(model, [(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]))])
    assert out.main.shape == (4, 3) and y.tolist() == [0, 1, 2, 0]
    assert model.training and model.backbone.bn.training and not model.backbone.fc.training
    assert torch.equal(model.backbone.bn.running_mean, before)  # evaluated in eval mode: BN statistics untouched
