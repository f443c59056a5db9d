"""The incremental grouping code gives exactly the groupings of a plain implementation that re-scans everything.

``reference_clustering`` and ``reference_refine`` below are the straightforward versions of supplementary
Sec. A and of the swap refinement: every step evaluates the full (label, group) or (label, label) matrix.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssal import grouping
from ssal.errors import SSALError
from ssal.grouping import (
    _capacities,
    _pick,
    balanced_clustering,
    distance_matrix,
    group_from_confusion,
    refine_swaps,
    within_group_distance,
)


def reference_clustering(D: np.ndarray, k: int, seed: int, size_margin: float | None = None) -> np.ndarray:
    """Supplementary Sec. A, re-scanning all (remaining label, open group) pairs at every step."""
    C = D.shape[0]
    rng = np.random.default_rng(seed)
    lo, hi, n_hi = _capacities(C, k, size_margin)
    off = D.copy()
    np.fill_diagonal(off, 0.0)
    gamma = np.full(C, -1, dtype=np.int64)
    sums = np.zeros((C, k))
    sizes = np.zeros(k, dtype=np.int64)

    def assign(c: int, g: int) -> None:
        gamma[c] = g
        sizes[g] += 1
        sums[:, g] += off[:, c]

    assign(_pick(off.sum(axis=1) / (C - 1), rng, largest=True), 0)
    for g in range(1, k):
        nearest = sums[:, :g].min(axis=1)
        nearest[gamma >= 0] = -np.inf
        assign(_pick(nearest, rng, largest=True), g)
    remaining = np.flatnonzero(gamma < 0)
    while remaining.size:
        full = sizes >= hi
        if size_margin is None and (sizes == hi).sum() >= n_hi:
            full |= sizes >= lo
        open_ = np.flatnonzero(~full)
        avg = sums[np.ix_(remaining, open_)] / sizes[open_]
        r, c = divmod(_pick(avg.ravel(), rng, largest=False), len(open_))
        assign(int(remaining[r]), int(open_[c]))
        remaining = np.delete(remaining, r)
    return gamma


def reference_refine(D: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """Best improving swap from the full C x C matrix of changes, until none improves."""
    D = D.copy()
    np.fill_diagonal(D, 0.0)
    gamma = gamma.copy()
    C, k = len(gamma), int(gamma.max()) + 1
    sums = np.zeros((C, k))
    for c in range(C):  # members added in ascending order
        sums[:, gamma[c]] += D[:, c]
    idx = np.arange(C)
    for _ in range(50 * C):
        own = sums[idx, gamma]
        delta = sums[:, gamma] + sums[:, gamma].T - own[:, None] - own[None, :] - 2.0 * D
        delta[gamma[:, None] == gamma[None, :]] = 0.0
        a, b = divmod(int(delta.argmin()), C)
        if delta[a, b] >= -1e-12:
            break
        ga, gb = gamma[a], gamma[b]
        sums[:, ga] += D[:, b] - D[:, a]
        sums[:, gb] += D[:, a] - D[:, b]
        gamma[a], gamma[b] = gb, ga
    return gamma


@st.composite
def confusions(draw: st.DrawFn, max_classes: int = 40) -> np.ndarray:
    """Dense, sparse (many exact ties) and empty-off-diagonal (all ties) confusion matrices."""
    C = draw(st.integers(4, max_classes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["dense", "sparse", "diagonal", "heavy-tailed"]))
    if kind == "dense":
        m = rng.integers(0, 20, size=(C, C)).astype(float)
    elif kind == "sparse":
        m = rng.integers(0, 3, size=(C, C)) * (rng.random((C, C)) < 0.1)
    elif kind == "diagonal":
        m = np.zeros((C, C))
    else:
        m = (rng.random((C, C)) ** 8 * 10).round()
    m = m.astype(float)
    m[np.arange(C), np.arange(C)] += 30
    return m


@contextlib.contextmanager
def small_blocks() -> Iterator[None]:
    """Tiny blocks, so that small matrices exercise the block-wise code paths of large ones."""
    with (
        mock.patch.object(grouping, "_BLOCK", 5),
        mock.patch.object(grouping._SwapState, "BLOCK", 4),
        mock.patch.object(grouping._SwapState, "ROWS", 3),
    ):
        yield


@settings(max_examples=100, deadline=None)
@given(confusions(), st.sampled_from(["join", "split"]), st.integers(0, 10**6), st.data())
def test_clustering_equals_reference(conf: np.ndarray, criterion: str, seed: int, data: st.DataObject) -> None:
    C = conf.shape[0]
    k = data.draw(st.integers(2, C // 2))
    margin = data.draw(st.sampled_from([None, None, 1.1, 1.3]))
    D = distance_matrix(conf, criterion)
    expected = reference_clustering(D, k, seed, margin)
    np.testing.assert_array_equal(balanced_clustering(D, k, seed, margin), expected)
    g = group_from_confusion(conf, k, criterion, seed=seed, size_margin=margin)
    np.testing.assert_array_equal(g.assignment, expected)


@settings(max_examples=100, deadline=None)
@given(confusions(), st.sampled_from(["join", "split"]), st.integers(0, 10**6), st.data())
def test_refinement_equals_reference(conf: np.ndarray, criterion: str, seed: int, data: st.DataObject) -> None:
    C = conf.shape[0]
    k = data.draw(st.integers(2, C // 2))
    D = distance_matrix(conf, criterion)
    start = reference_clustering(D, k, seed)
    expected = reference_refine(D, start)
    np.testing.assert_array_equal(refine_swaps(D, start), expected)
    g = group_from_confusion(conf, k, criterion, seed=seed, refine=True)
    np.testing.assert_array_equal(g.assignment, expected)
    same = expected[:, None] == expected[None, :]
    np.fill_diagonal(same, False)
    assert g.extra["within_group_distance"] == D[same].sum() / 2.0  # the same float, not just close


@settings(max_examples=60, deadline=None)
@given(confusions(max_classes=30), st.sampled_from(["join", "split"]), st.integers(0, 10**6), st.data())
def test_block_wise_paths_equal_reference(conf: np.ndarray, criterion: str, seed: int, data: st.DataObject) -> None:
    C = conf.shape[0]
    k = data.draw(st.integers(2, C // 2))
    D = distance_matrix(conf, criterion)
    expected = reference_clustering(D, k, seed)
    with small_blocks():
        np.testing.assert_array_equal(distance_matrix(conf, criterion), D)
        g = group_from_confusion(conf, k, criterion, seed=seed, refine=True)
    np.testing.assert_array_equal(g.assignment, reference_refine(D, expected))
    same = np.asarray(g.assignment)
    mask = same[:, None] == same[None, :]
    np.fill_diagonal(mask, False)
    assert within_group_distance(D, same) == D[mask].sum() / 2.0


@settings(max_examples=60, deadline=None)
@given(st.integers(4, 30), st.integers(0, 2**32 - 1), st.booleans(), st.data())
def test_other_distances_equal_reference(C: int, seed: int, symmetric: bool, data: st.DataObject) -> None:
    """Any square distance, not only Eq. 2's: asymmetric ones (columns come from a transposed copy) and
    quarter-integer ones, whose sums are exact, so that equal swap gains and equal averages are common."""
    D = np.random.default_rng(seed).integers(0, 5, (C, C)) / 4
    if symmetric:
        D = D + D.T
    k = data.draw(st.integers(2, C // 2))
    gamma = balanced_clustering(D, k, seed % 1000)
    np.testing.assert_array_equal(gamma, reference_clustering(D, k, seed % 1000))
    np.testing.assert_array_equal(refine_swaps(D, gamma), reference_refine(D, gamma))
    with small_blocks():
        np.testing.assert_array_equal(refine_swaps(D, gamma), reference_refine(D, gamma))


def test_distance_matrix_equals_plain_formula() -> None:
    rng = np.random.default_rng(0)
    for C, dtype in [(5, np.int64), (600, np.int64), (1100, np.float32)]:  # one tile, several tiles
        conf = rng.integers(0, 5, (C, C)).astype(dtype)
        conf[3] = 0  # a class that never occurs: its row stays zero
        m = conf.astype(np.float64)
        rows = m.sum(axis=1, keepdims=True)
        F = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
        np.fill_diagonal(F, 0.0)
        for criterion, D in (("join", 1.0 - F), ("split", F)):
            np.testing.assert_array_equal(distance_matrix(conf, criterion), 0.5 * (D + D.T))


def test_exact_balance_at_the_paper_range_limit() -> None:
    """k = C/2 and sizes that do not divide: every group ends with ceil or floor of C/k members."""
    rng = np.random.default_rng(1)
    for C, k in [(40, 20), (41, 20), (43, 7), (50, 3)]:
        conf = rng.integers(0, 4, (C, C)).astype(float) + 20 * np.eye(C)
        sizes = np.bincount(group_from_confusion(conf, k, "split", refine=True).assignment, minlength=k)
        assert sizes.max() == math.ceil(C / k) and sizes.min() == C // k


@pytest.mark.parametrize(
    ("matrix", "message"),
    [(np.ones((4, 5)), "square"), (np.full((6, 6), np.inf), "NaN or Inf")],
)
def test_bad_distance(matrix: np.ndarray, message: str) -> None:
    with pytest.raises(SSALError, match=message):
        balanced_clustering(matrix, 2)
    with pytest.raises(SSALError, match=message):
        refine_swaps(matrix, np.arange(len(matrix)) % 2)
