"""SSALModel (paper Sec. 3.2), SSALLoss (Eq. 3) and predictions (Sec. 3.4) on real torchvision models."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

import ssal
from ssal.errors import SSALError
from ssal.heads import build_head, parse_head
from ssal.prediction import (
    LinearCombination,
    SSALMetrics,
    fit_linear_combination,
    joint_log_probs,
    topk_correct,
    validate_eta,
)

C = 100


@pytest.fixture(scope="module")
def groupings() -> list[ssal.Grouping]:
    return [ssal.random_grouping(C, 20, seed=0), ssal.random_grouping(C, 50, seed=1)]


def make(groupings: list[ssal.Grouping], size: int = 32) -> ssal.SSALModel:
    torch.manual_seed(0)
    branches = [
        ssal.Branch("layer2", groupings[0], "conv64-gap"),
        ssal.Branch("layer3", groupings[1], "conv64-gap-fc32"),
    ]
    return ssal.SSALModel(resnet18(num_classes=C), branches, input_size=(3, size, size))


def test_shapes_and_inferred_widths(groupings) -> None:
    m = make(groupings)
    out = m(torch.randn(2, 3, 32, 32))
    assert out.main.shape == (2, C) and [a.shape for a in out.aux] == [(2, 20), (2, 50)]
    first_convs = [next(mod for mod in b.head.modules() if isinstance(mod, nn.Conv2d)) for b in m.branches]
    assert [c.in_channels for c in first_convs] == [128, 256]  # layer2 / layer3 widths of resnet18
    assert m.branch_names == ["g1", "g2"] and [int(g.max()) + 1 for g in m.gammas] == [20, 50]


def test_aux_gradients_reach_trunk_not_main_head(groupings) -> None:
    m = make(groupings)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, C, (4,))
    out = m(x)
    aux_loss = ssal.SSALLoss(m.gammas, main_weight=0.0)(out, y).total
    aux_loss.backward()
    bb = m.backbone
    assert bb.fc.weight.grad is None or bb.fc.weight.grad.abs().sum() == 0  # main head f untouched
    assert bb.layer4[0].conv1.weight.grad is None or bb.layer4[0].conv1.weight.grad.abs().sum() == 0
    assert bb.conv1.weight.grad.abs().sum() > 0 and bb.layer2[0].conv1.weight.grad.abs().sum() > 0
    assert bb.layer3[0].conv1.weight.grad.abs().sum() > 0  # g2 at layer3 reaches layer3
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for b in m.branches for p in b.parameters())


def test_main_only_and_unchanged_logits(groupings) -> None:
    m = make(groupings).eval()
    x = torch.randn(2, 3, 32, 32)
    full = m(x)
    main = m(x, with_branches=False)
    assert len(full.aux) == len(m.branches) and main.aux == () and torch.allclose(full.main, main.main)
    assert torch.allclose(m.backbone(x), full.main)  # the wrapped model's own output


def test_channels_last_and_bf16_autocast(groupings) -> None:
    m = make(groupings).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
        loss = ssal.SSALLoss(m.gammas)(out, torch.tensor([1, 2])).total
    loss.backward()
    assert out.aux[0].dtype == torch.bfloat16 and torch.isfinite(loss)


def test_torch_compile_small_model() -> None:
    g = ssal.random_grouping(10, 2, seed=0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    m = ssal.SSALModel(net, [ssal.Branch("1", g, "gap")], input_size=(3, 8, 8))
    x = torch.randn(2, 3, 8, 8)
    eager = m(x)
    compiled = torch.compile(m, backend="eager")(x)
    assert torch.allclose(eager.main, compiled.main) and torch.allclose(eager.aux[0], compiled.aux[0])


def test_input_normalisation() -> None:
    g = ssal.random_grouping(10, 2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
    m = ssal.SSALModel(net, [ssal.Branch("1", g, "gap")], input_size=(3, 2, 2), mean=(0.5,) * 3, std=(0.25,) * 3)
    x = torch.rand(2, 3, 2, 2)
    assert torch.allclose(m(x).main, net((x - 0.5) / 0.25))


def test_input_normalisation_rejects_bad_stats_and_integer_pixels() -> None:
    g = ssal.random_grouping(10, 2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
    for mean, std, msg in (((0.5,) * 2, (0.25,) * 2, "one value per input channel"), ((0.5,) * 3, (0.2, 0, 1), "std")):
        with pytest.raises(SSALError, match=msg):
            ssal.SSALModel(net, [ssal.Branch("1", g, "gap")], input_size=(3, 2, 2), mean=mean, std=std)
    m = ssal.SSALModel(net, [ssal.Branch("1", g, "gap")], input_size=(3, 2, 2), mean=(0.5,) * 3, std=(0.25,) * 3)
    with pytest.raises(SSALError, match="float image batch, got torch.uint8"):  # was NaN: mean and std cast to 0
        m(torch.randint(0, 256, (2, 3, 2, 2), dtype=torch.uint8))


def test_unknown_attach_point_lists_names(groupings) -> None:
    with pytest.raises(SSALError, match=r"unknown attach point 'layer9'.*valid names: .*layer2"):
        ssal.SSALModel(resnet18(num_classes=C), [ssal.Branch("layer9", groupings[0])], input_size=(3, 32, 32))


def test_grouping_class_count_mismatch() -> None:
    g = ssal.random_grouping(10, 2)
    with pytest.raises(SSALError, match="10 classes but the model predicts 100"):
        ssal.SSALModel(resnet18(num_classes=C), [ssal.Branch("layer2", g)], input_size=(3, 32, 32))


class _DictOut(nn.Module):
    """A backbone whose output, or one of whose modules' output, is a dict (not a tensor)."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor):
        h = self.conv(x)
        if self.where == "module":
            h = self.inner(h)["h"]
        out = self.fc(h.mean((2, 3)))
        return {"logits": out} if self.where == "output" else out


class _Inner(nn.Module):
    def forward(self, h: torch.Tensor) -> dict:
        return {"h": h}


def test_a_backbone_or_attach_point_without_a_tensor_output_is_named() -> None:
    g = ssal.random_grouping(10, 2)
    with pytest.raises(SSALError, match="the backbone returned dict; an SSAL branch needs a tensor output"):
        ssal.SSALModel(_DictOut("output"), [ssal.Branch("conv", g)], input_size=(3, 8, 8))
    net = _DictOut("module")
    net.inner = _Inner()
    with pytest.raises(SSALError, match="inner returned dict; an SSAL branch needs a tensor output"):
        ssal.SSALModel(net, [ssal.Branch("inner", g)], input_size=(3, 8, 8))
    assert net.training  # the probe restores the mode it found


def test_aliases_from_backbone(groupings) -> None:
    net = resnet18(num_classes=C)
    net.ssal_positions = {"g2": "layer2"}
    m = ssal.SSALModel(net, [ssal.Branch("g2", groupings[0], "gap")], input_size=(3, 32, 32))
    assert m.branches[0].at == "layer2"


def test_head_spec_parsing() -> None:
    head = build_head("conv16k5s2-incC0.1-incD0.1-incE0.1-maxpool-gap-fc12-drop0.1", 8, 5)
    assert head(torch.randn(2, 8, 17, 17)).shape == (2, 5)
    assert build_head("fc7", 9, 3)(torch.randn(2, 9)).shape == (2, 3)  # a 2-D feature vector works too
    with pytest.raises(SSALError, match="unknown head token"):
        parse_head("conv12-bogus")
    with pytest.raises(SSALError, match="after global pooling"):
        build_head("gap-conv12", 4, 2)


# --- loss and predictions ------------------------------------------------------------------------
def test_loss_is_weighted_sum_of_cross_entropies() -> None:
    torch.manual_seed(1)
    gam = [torch.randint(0, 3, (6,)), torch.arange(6) % 2]
    out = ssal.SSALOutput(torch.randn(5, 6), (torch.randn(5, 3), torch.randn(5, 2)))
    y = torch.randint(0, 6, (5,))
    parts = ssal.SSALLoss(gam, main_weight=0.7, aux_weights=[0.42, 0.59], label_smoothing=0.1)(out, y)
    ce = nn.functional.cross_entropy
    expect = [ce(out.main, y, label_smoothing=0.1)] + [
        ce(a, g[y], label_smoothing=0.1) for a, g in zip(out.aux, gam, strict=True)
    ]
    assert torch.allclose(parts.main, expect[0]) and all(
        torch.allclose(p, e) for p, e in zip(parts.aux, expect[1:], strict=True)
    )
    assert torch.allclose(parts.total, 0.7 * expect[0] + 0.42 * expect[1] + 0.59 * expect[2])


def test_loss_names_mismatched_targets_and_groupings() -> None:
    gam = [torch.tensor([0, 0, 1, 1, 2, 2]), torch.arange(6) % 2]
    out = ssal.SSALOutput(torch.randn(5, 6), (torch.randn(5, 3), torch.randn(5, 2)))
    y = torch.randint(0, 6, (5,))
    loss = ssal.SSALLoss(gam)
    onehot = nn.functional.one_hot(y, 6)
    for bad in (y.int(), y.float(), y[:, None], onehot, onehot[:, :5].float(), onehot[:4].float(), y[:4]):
        with pytest.raises(SSALError, match="class indices of shape"):
            loss(out, bad)
    assert torch.allclose(loss(out, onehot.float()).total, loss(out, y).total)  # soft targets (B, C): mixup
    with pytest.raises(SSALError, match="gamma 0 maps 6 classes to 2 groups but .* branch 0 3 groups"):
        ssal.SSALLoss(gam[::-1])(out, y)  # was silently accepted (k=2 targets on 3 logits) or an IndexError
    with pytest.raises(SSALError, match="gamma 0 maps 8 classes"):
        ssal.SSALLoss([torch.arange(8) % 3, gam[1]])(out, y)
    with pytest.raises(SSALError, match="SSALOutput"):
        loss(out.main, y)
    for weights in ({"aux_weights": -0.5}, {"aux_weights": [0.5, float("nan")]}, {"main_weight": float("inf")}):
        with pytest.raises(SSALError, match="loss weights must be finite and >= 0"):
            ssal.SSALLoss(gam, **weights)


def test_joint_probability_against_direct_formula() -> None:
    torch.manual_seed(2)
    B, Cn = 4, 7
    gam = [torch.tensor([0, 0, 1, 1, 2, 2, 2]), torch.tensor([0, 1, 0, 1, 0, 1, 0])]
    out = ssal.SSALOutput(torch.randn(B, Cn), (torch.randn(B, 3), torch.randn(B, 2)))
    eta = [0.3, 0.8]
    got = ssal.joint_probability(out, gam, eta)
    pf, pg1, pg2 = out.main.softmax(1), out.aux[0].softmax(1), out.aux[1].softmax(1)
    direct = torch.empty(B, Cn)
    for b in range(B):
        for y in range(Cn):
            direct[b, y] = pf[b, y] * pg1[b, gam[0][y]] ** eta[0] * pg2[b, gam[1][y]] ** eta[1]
    direct = direct / direct.sum(1, keepdim=True)
    assert torch.allclose(got, direct, atol=1e-6)
    assert torch.allclose(got.sum(1), torch.ones(B))


@pytest.mark.parametrize("eta", [0.0, -0.1, 1.01, float("nan")])
def test_eta_out_of_range(eta: float) -> None:
    with pytest.raises(SSALError, match="eta"):
        validate_eta(eta, 2)


def test_eta_count_mismatch() -> None:
    out = ssal.SSALOutput(torch.randn(2, 4), (torch.randn(2, 2),))
    with pytest.raises(SSALError, match="2 eta values given for 1 branches"):
        joint_log_probs(out, [torch.tensor([0, 0, 1, 1])], [0.5, 0.5])


def test_joint_probability_checks_gamma_shape_and_takes_scalar_eta() -> None:
    import numpy as np

    out = ssal.SSALOutput(torch.randn(2, 4), (torch.randn(2, 2),))
    gam = [torch.tensor([0, 0, 1, 1])]
    with pytest.raises(SSALError, match=r"gamma 0 has shape \(6,\); the model predicts 4 classes"):
        joint_log_probs(out, [torch.tensor([0, 0, 1, 1, 0, 1])], 0.5)
    ref = joint_log_probs(out, gam, 0.5)
    for eta in (np.float32(0.5), torch.tensor(0.5)):
        assert torch.allclose(joint_log_probs(out, gam, eta), ref)


def test_topk_and_metrics() -> None:
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05]])
    assert topk_correct(scores, torch.tensor([2, 0]), ks=(1, 2)) == [1, 2]
    gam = [torch.tensor([0, 0, 1])]
    out = ssal.SSALOutput(scores.log(), (torch.tensor([[0.0, 5.0], [5.0, 0.0]]),))
    m = SSALMetrics(gam, eta=1.0)
    m.update(out, torch.tensor([2, 0]))
    r = m.compute()
    assert r["f_top1"] == 50.0 and r["g1_acc"] == 100.0 and r["jp_top1"] == 100.0 and m.num_samples == 2


def test_linear_combination_fits_held_out_data() -> None:
    torch.manual_seed(3)
    N, Cn = 600, 6
    y = torch.randint(0, Cn, (N,))
    gam = torch.tensor([0, 0, 1, 1, 2, 2])
    main = torch.randn(N, Cn)  # f is uninformative ...
    aux = 4.0 * nn.functional.one_hot(gam[y], 3).float() + torch.randn(N, 3)  # ... g knows the group
    aux2 = 4.0 * nn.functional.one_hot(y % 2, 2).float() + torch.randn(N, 2)  # ... and another bit
    out = ssal.SSALOutput(main, (aux, aux2))
    lc = fit_linear_combination(LinearCombination.features(out), y, Cn, [3, 2])
    acc = (lc(out).argmax(1) == y).float().mean().item()
    assert acc > 0.8  # groups x parity identify the class: far above f's chance level of 1/6


def test_deepcopy_and_state_dict_roundtrip(groupings) -> None:
    import copy

    m = make(groupings).eval()
    x = torch.randn(2, 3, 32, 32)
    ref = m(x)
    clone = copy.deepcopy(m)
    out = clone(x)
    assert torch.allclose(out.main, ref.main) and all(
        torch.allclose(a, b) for a, b in zip(out.aux, ref.aux, strict=True)
    )
    with torch.no_grad():
        clone.branches[0].head[-1].weight.add_(1.0)  # the copy's branch is its own: the original is unchanged
    assert torch.allclose(m(x).aux[0], ref.aux[0]) and not torch.allclose(clone(x).aux[0], ref.aux[0])


def test_atomic_write_permissions(tmp_path) -> None:
    import os

    from ssal.files import atomic_write_text

    p = atomic_write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert p.read_text() == "x" and (p.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_a_module_the_model_runs_twice_is_no_attach_point() -> None:
    # a torchvision ResNet block applies its one ReLU module twice: its output is not one feature
    g = ssal.random_grouping(10, 3, seed=0)
    with pytest.raises(SSALError, match=r"'layer1\.0\.relu' runs 2 times per forward pass.*e\.g\. 'layer1\.0'"):
        ssal.SSALModel(resnet18(num_classes=10), [ssal.Branch("layer1.0.relu", g)], input_size=(3, 32, 32))
    m = ssal.SSALModel(resnet18(num_classes=10), [ssal.Branch("layer1.0", g), ssal.Branch("relu", g)], (3, 32, 32))
    assert [tuple(a.shape) for a in m(torch.rand(2, 3, 32, 32)).aux] == [(2, 3), (2, 3)]  # run once each: fine
