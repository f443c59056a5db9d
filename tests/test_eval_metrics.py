"""How a model errs: calibration error and errors inside the true class's coarse group."""

from __future__ import annotations

import pytest
import torch

from ssal.evaluation import calibration_error, mistakes_within


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
