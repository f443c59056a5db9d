"""Tests for the model registry and every registered architecture (issue 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from ssal import SSALError, SSALModel, random_grouping
from ssal.heads import ConvBNReLU, InceptionE
from ssal.models import (
    create_model,
    list_models,
    model_entry,
    model_input_size,
    paper_branches,
    register_model,
    scale_groups,
)
from ssal.models.baselines import BranchConcatNet
from ssal.models.joint import JointOutputNet
from ssal.models.params import PAPER_COUNTS, PaperCount, count_parameters, render_markdown
from ssal.prediction import joint_log_probs

REPO = Path(__file__).resolve().parents[1]


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
        ({"ssal": [{"k": 2}]}, "needs 'at'"),
        ({"ssal": [{"at": "g2"}]}, "'k'"),
        ({"ssal": [{"at": "g2", "k": 2, "kk": 1}]}, r"unknown key\(s\) \['kk'\]"),
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


# --- every registered model ------------------------------------------------------------------------------
HEAVY = {"densenet_bc_190_40", "gapcat_nossal_resnet50_imagenet", "resnet50_imagenet", "wrn28_10", "wrn28_10_joint"}


def _classes(name: str) -> int:
    return model_entry(name).paper_num_classes or 10


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in list_models()])
def test_every_model_forward_backward(name: str) -> None:
    """Paper SSAL (plain if none): shapes, a gradient for every parameter, main logits without branches."""
    entry, C = model_entry(name), _classes(name)
    m = create_model(name, C, ssal="paper" if entry.paper_ssal else None)
    B = 1 if entry.input_size[1] >= 224 else 2
    x = torch.rand(B, *entry.input_size)
    y = torch.randint(0, C, (B,))
    out = m(x)
    main, aux = (out.main, out.aux) if isinstance(m, SSALModel) else (out, ())
    ks = [b["k"] for b in paper_branches(name, C)] if entry.paper_ssal else []
    assert main.shape == (B, C)
    assert [tuple(a.shape) for a in aux] == [(B, k) for k in ks]
    gammas = m.gammas if isinstance(m, SSALModel) else []
    loss = F.cross_entropy(main, y) + sum(F.cross_entropy(a, g[y]) for a, g in zip(aux, gammas, strict=True))
    loss.backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
    if name in HEAVY or not aux:  # the check is generic (SSALModel hooks): keep the big ones to one pass
        return
    with torch.no_grad():  # train mode, same batch: BN uses the same batch statistics
        main_only = m(x, with_branches=False)
    assert main_only.aux == ()
    torch.testing.assert_close(main_only.main, main.detach())


@pytest.mark.parametrize("name", list_models())
def test_positions_resolve_to_modules(name: str) -> None:
    m = _meta(name)
    modules = dict(m.named_modules())
    positions = m.ssal_positions
    assert positions and list(positions) == [f"g{i + 1}" for i in range(len(positions))]
    assert all(target in modules for target in positions.values())


def _meta(name: str, **kwargs: object) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, _classes(name), **kwargs)


def _position_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """(C, H, W) at every position alias, from one forward pass on the meta device."""
    m, shapes = _meta(name), {}
    modules = dict(m.named_modules())
    for alias, target in m.ssal_positions.items():
        modules[target].register_forward_hook(lambda mod, i, o, a=alias: shapes.__setitem__(a, tuple(o.shape[1:])))
    m(torch.zeros(1, *model_input_size(name), device="meta"))
    return shapes


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18_cifar", {"g1": (64, 32, 32), "g2": (64, 32, 32), "g3": (128, 16, 16), "g5": (512, 4, 4)}),
        ("resnet18_tiny", {"g1": (64, 16, 16), "g2": (64, 16, 16), "g3": (128, 8, 8), "g5": (512, 2, 2)}),
        ("resnet50_cifar", {"g1": (64, 32, 32), "g2": (256, 32, 32), "g3": (512, 16, 16), "g4": (1024, 8, 8)}),
        ("resnet50_cifar", {"g5": (2048, 8, 8)}),
        ("resnet50_imagenet", {"g1": (64, 56, 56), "g2": (256, 56, 56), "g4": (1024, 14, 14)}),
        ("wrn28_10", {"g1": (16, 32, 32), "g2": (160, 32, 32), "g5": (320, 16, 16), "g6": (640, 8, 8)}),
        ("sewrn16_8", {"g2": (128, 32, 32), "g5": (256, 16, 16), "g6": (512, 8, 8), "g7": (512, 8, 8)}),
        ("densenet_bc_190_40", {"g1": (80, 32, 32), "g2": (720, 32, 32), "g3": (1320, 32, 32)}),
        ("densenet_bc_190_40", {"g5": (1900, 16, 16), "g6": (1590, 8, 8), "g7": (2190, 8, 8)}),
        ("densenet_bc_100_12", {"g2": (120, 32, 32), "g7": (342, 8, 8)}),
        ("deep_resnet18_tiny", {"g1": (256, 16, 16), "g2": (64, 16, 16)}),
        ("dwr_resnet18_tiny", {"g1": (512, 16, 16)}),
        ("wide_resnet18_tiny", {"g1": (96, 16, 16), "g5": (768, 2, 2)}),
    ],
)
def test_documented_position_shapes(name: str, expected: dict) -> None:
    shapes = _position_shapes(name)
    assert {a: shapes[a] for a in expected} == expected


# --- parameter counts against the paper (Tables 1-3) -------------------------------------------------------
@pytest.mark.parametrize("row", [r for r in PAPER_COUNTS if r.paper_m is not None], ids=lambda r: r.label)
def test_parameter_counts_match_the_paper(row: PaperCount) -> None:
    n = count_parameters(row.model, row.num_classes, row.ssal, row.linear_comb)
    assert abs(n / (row.paper_m * 1e6) - 1) <= row.tolerance, f"{n / 1e6:.2f}M vs paper {row.paper_m}M"


def test_backbone_tolerance_is_two_percent() -> None:
    backbones = {r.model for r in PAPER_COUNTS if r.ssal is None and r.tolerance == 0.02 and r.paper_m}
    expected = {"resnet18_cifar", "resnet50_cifar", "wrn28_10", "sewrn16_8", "densenet_bc_190_40", "resnet18_tiny"}
    assert backbones == expected


def test_params_report_is_complete_and_docs_are_current() -> None:
    text = render_markdown()
    for name in list_models():
        assert f"`{name}`" in text
    assert "| SSAL x3 |" in text and "deviation" in text and "**out**" not in text
    docs = REPO / "docs" / "parameters.md"
    assert docs.read_text(encoding="utf-8") == text, "regenerate: python -m ssal.models.params -o docs/parameters.md"


# --- paper configurations -----------------------------------------------------------------------------------
def test_paper_group_counts_scale_with_classes() -> None:
    assert [b["k"] for b in paper_branches("resnet50_cifar")] == [20, 33, 50]
    assert [b["k"] for b in paper_branches("resnet50_imagenet")] == [200, 334, 500]
    assert [b["k"] for b in paper_branches("resnet50_cifar", 1000)] == [200, 330, 500]
    assert [b["k"] for b in paper_branches("resnet18_cifar", 10)] == [2, 5]
    m = _meta("resnet18_cifar", ssal="paper")
    assert [b.head[-1].out_features for b in m.branches] == [20, 50]


def test_models_without_paper_ssal_say_so() -> None:
    with pytest.raises(SSALError, match="no paper SSAL configuration"):
        create_model("deep_resnet18_tiny", 200, ssal="paper")


def test_paper_heads_follow_the_aux_tables() -> None:
    m = _meta("wrn28_10", ssal="paper")
    assert m.branch_names == ["g1", "g2", "g3"]
    at = [b.at for b in m.branches]
    assert at == ["layer1.1", "layer2", "layer3.1"]
    first = m.branches[0].head
    assert isinstance(first[0], ConvBNReLU) and first[0][0].kernel_size == (5, 5) and first[0][0].stride == (2, 2)
    assert sum(isinstance(layer, InceptionE) for layer in first) == 2
    assert any(isinstance(layer, torch.nn.Linear) and layer.out_features == 768 for layer in m.branches[1].head)


# --- Sec. 4.3 baselines and supp. E.1 ------------------------------------------------------------------------
def test_width_and_depth_baselines() -> None:
    plain, wide = _meta("resnet18_tiny"), _meta("wide_resnet18_tiny")
    convs = [c for c in plain.modules() if isinstance(c, torch.nn.Conv2d)]
    wide_convs = [c for c in wide.modules() if isinstance(c, torch.nn.Conv2d)]
    assert [int(1.5 * c.out_channels) for c in convs] == [c.out_channels for c in wide_convs]
    for name, width in (("deep_resnet18_tiny", 256), ("dwr_resnet18_tiny", 512)):
        stem_convs = [c for c in _meta(name).stem.modules() if isinstance(c, torch.nn.Conv2d)]
        assert [c.out_channels for c in stem_convs] == [64, width, width, width, width]


def test_nossal_baselines_concatenate_branch_outputs() -> None:
    gapcat, catfc = _meta("gapcat_nossal_resnet18_tiny"), _meta("catfc_nossal_resnet18_tiny")
    assert isinstance(gapcat, BranchConcatNet) and isinstance(catfc, BranchConcatNet)
    assert gapcat.classifier.in_features == 512 + 40 + 67 + 100
    assert [layer.in_features for layer in catfc.classifier if isinstance(layer, torch.nn.Linear)] == [240, 2048]
    wrapped = _meta("catfc_nossal_resnet18_tiny", ssal=[{"at": "g4", "k": 10, "head": "gap"}])
    assert wrapped.branches[0].at == "net.backbone.layer3"


@pytest.mark.parametrize("mode", ["gapcat", "catfc"])
def test_branch_concat_net_small(mode: str) -> None:
    net = create_model("small_cnn", 10, ssal=[{"at": "g2", "k": 3, "head": "gap"}, {"at": "g3", "k": 4}])
    model = BranchConcatNet(net, mode, hidden=32)
    x = torch.rand(2, 3, 16, 16)
    out = model(x)
    assert out.shape == (2, 10)
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(SSALError, match="mode"):
        BranchConcatNet(create_model("small_cnn", 10, ssal=[]), "sum")  # type: ignore[arg-type]


def test_joint_output_net_is_the_joint_prediction() -> None:
    net = create_model("small_cnn", 10, ssal=[{"at": "g3", "k": 5, "head": "gap"}])
    joint = JointOutputNet(net).eval()
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        logp = joint(x)
        expected = joint_log_probs(net(x), net.gammas)
    torch.testing.assert_close(logp, expected)
    torch.testing.assert_close(logp.logsumexp(1), torch.zeros(3))
    with pytest.raises(SSALError, match="at least one"):
        JointOutputNet(create_model("small_cnn", 10, ssal=[]))


def test_wrn28_10_joint_options() -> None:
    g = random_grouping(100, 5, seed=3)
    m = _meta("wrn28_10_joint", grouping=g)
    assert isinstance(m, JointOutputNet)
    assert m.net.branches[0].at == "layer1.1" and m.net.branches[0].head[-1].out_features == 5
    assert _meta("wrn28_10_joint").net.branches[0].head[-1].out_features == 20


@given(k=st.integers(2, 500), C=st.integers(4, 2000), paper_C=st.sampled_from([100, 200, 1000]))
def test_scaled_group_counts_stay_in_the_paper_range(k: int, C: int, paper_C: int) -> None:
    scaled = scale_groups(k, C, paper_C)
    assert 2 <= scaled <= C // 2 or (paper_C == C and scaled == k)
    assert scale_groups(k, C, None) == k
