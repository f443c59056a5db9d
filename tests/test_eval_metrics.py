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
