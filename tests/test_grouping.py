"""Grouping: paper Sec. 3.1 / supplementary Sec. A, property-based and on block-structured confusions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssal.errors import SSALError
from ssal.grouping import (
    Grouping,
    balanced_clustering,
    distance_matrix,
    group_from_confusion,
    group_from_superclasses,
    random_grouping,
    refine_swaps,
    within_group_distance,
)


def block_confusion(num_blocks: int, block: int, seed: int = 0, noise: float = 0.0) -> np.ndarray:
    """Counts where classes are confused only with members of their own block."""
    rng = np.random.default_rng(seed)
    C = num_blocks * block
    m = np.zeros((C, C))
    for i in range(C):
        for j in range(C):
            if i // block == j // block:
                m[i, j] = 50 if i == j else rng.integers(1, 10)
    return m + noise * rng.random((C, C))


@st.composite
def confusion_and_k(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    C = draw(st.integers(4, 40))
    k = draw(st.integers(2, C // 2))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    m = rng.integers(0, 20, size=(C, C)).astype(float) * (rng.random((C, C)) < 0.3)
    m[np.arange(C), np.arange(C)] += 30
    return m, k


@settings(max_examples=60, deadline=None)
@given(confusion_and_k(), st.sampled_from(["join", "split"]), st.integers(0, 1000), st.booleans())
def test_partition_balanced_deterministic(ck: tuple[np.ndarray, int], criterion: str, seed: int, refine: bool) -> None:
    conf, k = ck
    C = conf.shape[0]
    g = group_from_confusion(conf, k, criterion, seed=seed, refine=refine)
    a = np.array(g.assignment)
    assert a.shape == (C,) and set(a.tolist()) == set(range(k))  # a partition into exactly k non-empty groups
    sizes = np.bincount(a, minlength=k)
    assert sizes.max() <= math.ceil(C / k) and sizes.max() - sizes.min() <= 1
    assert group_from_confusion(conf, k, criterion, seed=seed, refine=refine).assignment == g.assignment


@settings(max_examples=40, deadline=None)
@given(confusion_and_k(), st.floats(1.05, 1.5))
def test_size_margin_caps_sizes(ck: tuple[np.ndarray, int], margin: float) -> None:
    conf, k = ck
    C = conf.shape[0]
    g = group_from_confusion(conf, k, "join", size_margin=margin)
    cap = max(math.ceil(C / k), math.floor(margin * C / k))
    assert max(g.sizes()) <= cap and sorted(set(g.assignment)) == list(range(k))


@settings(max_examples=40, deadline=None)
@given(st.integers(4, 300), st.data())
def test_random_grouping_balanced(C: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(2, C // 2))
    g = random_grouping(C, k, seed=3)
    sizes = g.sizes()
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == C
    assert random_grouping(C, k, seed=3) == g


def test_distance_matrix_equations() -> None:
    conf = np.array([[8, 2, 0, 0], [1, 6, 3, 0], [0, 0, 10, 0], [0, 5, 0, 5]], float)
    F = conf / conf.sum(1, keepdims=True)
    np.fill_diagonal(F, 0)
    join, split = distance_matrix(conf, "join"), distance_matrix(conf, "split")
    np.testing.assert_allclose(join, ((1 - F) + (1 - F).T) / 2)  # paper Eq. 1-2
    np.testing.assert_allclose(split, (F + F.T) / 2)  # "omitting the inversion"
    np.testing.assert_allclose(join, join.T)


def test_rates_and_counts_give_the_same_groups() -> None:
    conf = block_confusion(5, 4, seed=1, noise=0.5)
    rates = conf / conf.sum(1, keepdims=True)
    assert group_from_confusion(conf, 5, seed=2).assignment == group_from_confusion(rates, 5, seed=2).assignment


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize(("num_blocks", "block"), [(5, 4), (10, 10), (4, 3)])
def test_join_recovers_blocks(seed: int, num_blocks: int, block: int) -> None:
    conf = block_confusion(num_blocks, block, seed=seed)
    g = group_from_confusion(conf, num_blocks, "join", seed=seed)
    found = sorted(sorted(m) for m in g.groups())
    assert found == [list(range(b * block, (b + 1) * block)) for b in range(num_blocks)]


def _block_mate_pairs(assignment: tuple[int, ...], block: int) -> int:
    a = np.array(assignment)
    C = len(a)
    return sum(1 for i in range(C) for j in range(i + 1, C) if i // block == j // block and a[i] == a[j])


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize(("num_blocks", "block", "k"), [(5, 4, 5), (10, 10, 10), (4, 3, 4), (6, 4, 6), (8, 5, 8)])
def test_split_refined_separates_block_mates(seed: int, num_blocks: int, block: int, k: int) -> None:
    conf = block_confusion(num_blocks, block, seed=seed)
    refined = group_from_confusion(conf, k, "split", seed=seed, refine=True)
    assert _block_mate_pairs(refined.assignment, block) == 0


def test_greedy_split_alone_leaves_some_pairs() -> None:
    """Why --refine exists: the paper's greedy pass leaves a block-mate pair for some seeds."""
    left = [
        _block_mate_pairs(group_from_confusion(block_confusion(5, 4, seed=s), 5, "split", seed=s).assignment, 4)
        for s in range(10)
    ]
    assert max(left) >= 1 and max(left) <= 2


def test_refine_never_increases_objective_and_keeps_sizes() -> None:
    rng = np.random.default_rng(0)
    D = distance_matrix(rng.random((30, 30)), "split")
    g0 = balanced_clustering(D, 6, seed=0)
    g1 = refine_swaps(D, g0)
    assert within_group_distance(D, g1) <= within_group_distance(D, g0)
    assert sorted(np.bincount(g0)) == sorted(np.bincount(g1))


def test_seed_changes_ties_only() -> None:
    conf = np.eye(12) * 10  # no confusion at all: every choice is a tie
    groupings = {group_from_confusion(conf, 3, seed=s).assignment for s in range(8)}
    assert len(groupings) > 1  # ties are broken randomly, per seed


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        (np.ones((4, 5)), "square"),
        (-np.ones((6, 6)), "negative"),
        (np.full((6, 6), np.nan), "NaN"),
        (np.zeros((6, 6)), "all zero"),
    ],
)
def test_bad_confusion(conf: np.ndarray, message: str) -> None:
    with pytest.raises(SSALError, match=message):
        group_from_confusion(conf, 2)


@pytest.mark.parametrize("k", [1, 0, 6, 11, 2.5])
def test_k_out_of_range(k: float) -> None:
    with pytest.raises(SSALError, match="k"):
        group_from_confusion(np.eye(10) + 0.1, k)  # type: ignore[arg-type]


def test_superclasses(cifar100_dir) -> None:
    meta = json.loads((cifar100_dir / "meta.json").read_text())
    g = group_from_superclasses(meta["fine_to_coarse"], meta["fine_label_names"])
    assert g.k == 20 and g.num_classes == 100 and set(g.sizes()) == {5}
    assert "apple" in g.member_names(g.assignment[meta["fine_label_names"].index("apple")])


def test_json_and_labels_roundtrip(tmp_path) -> None:
    names = [f"c{i}" for i in range(10)]
    g = group_from_confusion(block_confusion(2, 5), 2, "join", seed=4, class_names=names)
    g.save(tmp_path / "g.json")
    d = json.loads((tmp_path / "g.json").read_text())
    assert d["assignment"] == list(g.assignment) and d["criterion"] == "join" and d["seed"] == 4
    assert Grouping.load(tmp_path / "g.json") == g
    g.save_labels(tmp_path / "labels.txt")
    assert (tmp_path / "labels.txt").read_text().split() == [str(a) for a in g.assignment]
    assert Grouping.load(tmp_path / "labels.txt").assignment == g.assignment


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("{not json", "not valid JSON"),
        ('{"k": 2}', "assignment"),
        ('{"assignment": [0, 1, 5]}', "no class"),
        ('{"assignment": [0, 1, 2], "k": 2}', r"\[0, 2\)"),
        ('{"assignment": []}', "empty"),
        ('{"assignment": ["a", "b"]}', "integers"),
    ],
)
def test_bad_groups_json(tmp_path, text: str, message: str) -> None:
    p = tmp_path / "g.json"
    p.write_text(text)
    with pytest.raises(SSALError, match=message):
        Grouping.load(p)


def test_a_grouping_is_aligned_to_the_data_sets_class_order(tmp_path) -> None:
    from ssal.build import DataBundle, resolve_groupings
    from ssal.config import Config

    g = Grouping((0, 0, 1, 1, 2), 3, class_names=("ant", "bee", "cat", "dog", "eel"))
    assert g.aligned_to(None) is g and g.aligned_to(list(g.class_names)) is g
    shuffled = ["eel", "cat", "ant", "dog", "bee"]
    a = g.aligned_to(shuffled)
    assert a.class_names == tuple(shuffled) and a.assignment == (2, 1, 0, 1, 0)  # every class keeps its group
    with pytest.raises(SSALError, match=r"grouping 1 was made for other classes.*\['fox'\] are not in it"):
        g.aligned_to(["ant", "bee", "cat", "dog", "fox"], "grouping 1")
    # through the config: a grouping JSON of the same classes in another order is remapped, of others refused
    g.save(tmp_path / "g.json")
    cfg = Config(name="t")
    cfg.ssal.branches, cfg.ssal.groupings = [{"at": "g2", "k": 3}], [str(tmp_path / "g.json")]
    [r] = resolve_groupings(cfg, DataBundle("folder", 5, shuffled))
    assert r.assignment == (2, 1, 0, 1, 0)
    with pytest.raises(SSALError, match="made for other classes"):
        resolve_groupings(cfg, DataBundle("folder", 5, ["ant", "bee", "cat", "dog", "fox"]))
