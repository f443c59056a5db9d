"""Tests for the model registry and every registered architecture (issue 3)."""

from __future__ import annotations

import pytest
import torch

from ssal import SSALError, SSALModel, random_grouping
from ssal.models import create_model, list_models, model_input_size, register_model


def test_registry_lists_the_early_models() -> None:
    names = list_models()
    assert {"small_cnn", "resnet18_cifar"} <= set(names)
    assert names == sorted(names)


def test_register_model_refuses_duplicates() -> None:
    with pytest.raises(SSALError, match="already registered"):
        register_model("small_cnn")(lambda num_classes: torch.nn.Linear(2, num_classes))


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(SSALError, match="small_cnn"):
        create_model("no_such_net", 10)


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(SSALError, match="no option"):
        create_model("small_cnn", 10, depth=3)


def test_small_cnn_any_size_and_positions() -> None:
    m = create_model("small_cnn", 10)
    assert model_input_size("small_cnn") == (3, 16, 16)
    assert m.ssal_positions == {"g1": "stage1", "g2": "stage2", "g3": "stage3"}
    assert 10_000 < sum(p.numel() for p in m.parameters()) < 100_000
    assert m(torch.rand(2, 3, 16, 16)).shape == (2, 10)
    assert m(torch.rand(2, 3, 24, 20)).shape == (2, 10)


def test_ssal_forms() -> None:
    plain = create_model("small_cnn", 10)
    assert not isinstance(plain, SSALModel)
    empty = create_model("small_cnn", 10, ssal=[])
    assert isinstance(empty, SSALModel) and empty.branch_names == []
    custom = create_model("small_cnn", 10, ssal=[{"at": "g2", "k": 3, "head": "conv16-gap", "name": "coarse"}])
    assert custom.branch_names == ["coarse"]
    out = custom(torch.rand(2, 3, 16, 16))
    assert out.main.shape == (2, 10) and out.aux[0].shape == (2, 3)


def test_groupings_win_over_k_and_placeholders_are_marked() -> None:
    g = random_grouping(10, 2, seed=1)
    m = create_model("small_cnn", 10, ssal=[{"at": "g3", "k": 5}], groupings=[g])
    assert m.branches[0].num_groups == 2
    assert torch.equal(m.gammas[0], g.as_tensor())
    placeholder = create_model("small_cnn", 10, ssal=[{"at": "g3", "k": 5}])
    assert placeholder.branches[0].num_groups == 5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ssal": "papers"}, "ssal must be"),
        ({"ssal": [{"k": 2}]}, "missing the attach point"),
        ({"ssal": [{"at": "g2"}]}, "'k'"),
        ({"ssal": [{"at": "g2", "k": 2, "kk": 1}]}, "unknown keys"),
        ({"ssal": [{"at": "g2", "k": 2}], "groupings": []}, "groupings given"),
        ({"groupings": []}, "ssal=None"),
        ({"mean": [0.5] * 3, "std": [0.2] * 3}, "ssal=\\[\\]"),
    ],
)
def test_bad_ssal_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(SSALError, match=match):
        create_model("small_cnn", 10, **kwargs)


def test_mean_std_reach_the_ssal_model() -> None:
    m = create_model("small_cnn", 10, ssal=[], mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    assert m.normalize and torch.allclose(m.mean.flatten(), torch.full((3,), 0.5))


def _num_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", ["small_cnn", "resnet18_cifar"])
def test_paper_ssal_forward_backward(name: str) -> None:
    C = 10 if name == "small_cnn" else 100
    m = create_model(name, C, ssal="paper")
    out = m(torch.rand(2, *model_input_size(name)))
    assert out.main.shape == (2, C)
    assert [a.shape[1] for a in out.aux] == [b.num_groups for b in m.branches]
    (out.main.sum() + sum(a.sum() for a in out.aux)).backward()
    assert all(p.grad is not None for p in m.parameters())
