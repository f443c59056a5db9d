"""Class grouping (paper Sec. 3.1, supplementary Sec. A).

A grouping gamma maps each of the C original classes to one of k groups. SSAL builds it from the
confusion matrix of a trained model: ``distance_matrix`` is paper Eq. 1-2 and
``balanced_clustering`` is the balanced greedy clustering of supplementary Sec. A.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .errors import SSALError
from .io import atomic_write_json, atomic_write_text

__all__ = [
    "Criterion",
    "Grouping",
    "balanced_clustering",
    "distance_matrix",
    "group_from_confusion",
    "group_from_superclasses",
    "random_grouping",
    "refine_swaps",
    "validate_confusion",
    "validate_k",
]

Criterion = Literal["join", "split"]
CRITERIA: tuple[str, ...] = ("join", "split")
_TIE_TOL = 1e-12


@dataclass(frozen=True)
class Grouping:
    """A class-to-group map gamma with its provenance.

    ``assignment[c]`` is the group of class ``c`` (ints in ``[0, k)``, every group non-empty).
    """

    assignment: tuple[int, ...]
    k: int
    criterion: str | None = None
    seed: int | None = None
    source: str = "unknown"
    class_names: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "assignment", tuple(int(a) for a in self.assignment))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        a, k = self.assignment, int(self.k)
        if len(a) < 2:
            raise SSALError(f"a grouping needs at least 2 classes, got {len(a)}")
        if k < 1:
            raise SSALError(f"a grouping needs k >= 1, got k={k}")
        bad = [g for g in a if not 0 <= g < k]
        if bad:
            raise SSALError(f"group ids must lie in [0, {k}), found {bad[0]}")
        empty = sorted(set(range(k)) - set(a))
        if empty:
            raise SSALError(f"groups {empty[:5]} of k={k} have no class")
        if self.class_names is not None and len(self.class_names) != len(a):
            raise SSALError(f"{len(self.class_names)} class names for {len(a)} classes")

    @property
    def num_classes(self) -> int:
        """C, the number of original classes."""
        return len(self.assignment)

    def groups(self) -> list[list[int]]:
        """The members of each group, as lists of class indices."""
        out: list[list[int]] = [[] for _ in range(self.k)]
        for c, g in enumerate(self.assignment):
            out[g].append(c)
        return out

    def sizes(self) -> list[int]:
        """The number of classes in each group."""
        return [len(m) for m in self.groups()]

    def member_names(self, group: int) -> list[str]:
        """The class names (or indices as text) of the members of ``group``."""
        names = self.class_names
        return [names[c] if names else str(c) for c in self.groups()[group]]

    def as_tensor(self) -> torch.Tensor:
        """gamma as a LongTensor of shape (C,)."""
        return torch.tensor(self.assignment, dtype=torch.long)

    def describe(self) -> str:
        """A multi-line listing of every group with its members' names."""
        head = f"{self.k} groups of {self.num_classes} classes (source={self.source}"
        head += f", criterion={self.criterion}" if self.criterion else ""
        head += f", seed={self.seed})" if self.seed is not None else ")"
        lines = [head]
        for g in range(self.k):
            lines.append(f"  group {g:>3} ({len(self.groups()[g])}): " + ", ".join(self.member_names(g)))
        return "\n".join(lines)

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; the key ``assignment`` holds gamma."""
        d: dict[str, Any] = {
            "assignment": list(self.assignment),
            "k": self.k,
            "num_classes": self.num_classes,
            "criterion": self.criterion,
            "seed": self.seed,
            "source": self.source,
            "class_names": list(self.class_names) if self.class_names else None,
        }
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "grouping") -> Grouping:
        """Build a grouping from ``to_dict`` output; only ``assignment`` is required."""
        if not isinstance(d, dict) or "assignment" not in d:
            raise SSALError(f"{where}: expected a JSON object with the key 'assignment'")
        a = d["assignment"]
        if not isinstance(a, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in a):
            raise SSALError(f"{where}: 'assignment' must be a list of integers")
        if not a:
            raise SSALError(f"{where}: 'assignment' is empty")
        k = d.get("k", max(a) + 1)
        if not isinstance(k, int):
            raise SSALError(f"{where}: 'k' must be an integer")
        if "num_classes" in d and d["num_classes"] != len(a):
            raise SSALError(f"{where}: num_classes={d['num_classes']} but assignment has {len(a)} entries")
        known = {"assignment", "k", "num_classes", "criterion", "seed", "source", "class_names"}
        try:
            return cls(
                assignment=tuple(a),
                k=k,
                criterion=d.get("criterion"),
                seed=d.get("seed"),
                source=d.get("source") or "json",
                class_names=tuple(d["class_names"]) if d.get("class_names") else None,
                extra={key: v for key, v in d.items() if key not in known},
            )
        except SSALError as e:
            raise SSALError(f"{where}: {e}") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the grouping as JSON (atomically)."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Grouping:
        """Read a grouping from JSON, or from the authors' one-integer-per-line text format."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SSALError(f"groups file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SSALError(f"cannot read groups file {path}: {e}") from None
        if not text.strip():
            raise SSALError(f"groups file is empty: {path}")
        if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            try:
                d = json.loads(text)
            except json.JSONDecodeError as e:
                raise SSALError(f"groups file {path} is not valid JSON: {e.msg} (line {e.lineno})") from None
            return cls.from_dict(d, where=str(path))
        return cls.from_labels_text(text, where=str(path))

    def to_labels_text(self) -> str:
        """The authors' label-file format: line c holds the group of class c."""
        return "".join(f"{g}\n" for g in self.assignment)

    def save_labels(self, path: str | os.PathLike) -> Path:
        """Write the one-integer-per-line label file (atomically)."""
        return atomic_write_text(path, self.to_labels_text())

    @classmethod
    def from_labels_text(cls, text: str, where: str = "labels") -> Grouping:
        """Parse the one-integer-per-line label-file format."""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        try:
            a = [int(ln) for ln in lines]
        except ValueError:
            raise SSALError(f"{where}: expected one integer group id per line") from None
        if not a:
            raise SSALError(f"{where}: no group ids")
        try:
            return cls(assignment=tuple(a), k=max(a) + 1, source=f"labels:{Path(where).name}")
        except SSALError as e:
            raise SSALError(f"{where}: {e}") from None

    def with_class_names(self, names: Sequence[str] | None) -> Grouping:
        """A copy carrying ``names`` (checked against C)."""
        if names is None:
            return self
        return Grouping(self.assignment, self.k, self.criterion, self.seed, self.source, tuple(names), self.extra)


# --- validation ------------------------------------------------------------------------------------
def shipped_groupings() -> list[str]:
    """Names of the groupings shipped with the package (``ssal.groupings: cifar100-join-20``)."""
    return sorted(p.stem for p in (Path(__file__).parent / "data" / "groups").glob("*.json"))


def load_shipped(name: str) -> Grouping:
    """A grouping shipped with the package, by name (``shipped_groupings()``); its JSON says how it was made."""
    path = Path(__file__).parent / "data" / "groups" / f"{name}.json"
    if not path.is_file():
        raise SSALError(f"no shipped grouping {name!r}; available: {', '.join(shipped_groupings())}")
    return Grouping.load(path)


def validate_confusion(confusion: Any) -> np.ndarray:
    """Check a C x C confusion matrix (counts or rates) and return it as float64."""
    m = np.asarray(confusion)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise SSALError(f"confusion matrix must be square (C x C), got shape {tuple(m.shape)}")
    if m.shape[0] < 4:
        raise SSALError(f"confusion matrix must have at least 4 classes, got {m.shape[0]}")
    if not np.issubdtype(m.dtype, np.number) or np.issubdtype(m.dtype, np.complexfloating):
        raise SSALError(f"confusion matrix must be real numbers, got dtype {m.dtype}")
    m = m.astype(np.float64)
    if not np.isfinite(m).all():
        raise SSALError("confusion matrix contains NaN or Inf")
    if (m < 0).any():
        raise SSALError("confusion matrix contains negative entries")
    if m.sum() == 0:
        raise SSALError("confusion matrix is all zero")
    return m


def validate_k(k: int, num_classes: int) -> int:
    """Check the number of groups against the paper's range 2 <= k <= C/2."""
    if isinstance(k, bool) or int(k) != k:
        raise SSALError(f"k must be an integer, got {k!r}")
    k = int(k)
    if not 2 <= k <= num_classes // 2:
        raise SSALError(f"k={k} is out of range: need 2 <= k <= C/2 = {num_classes // 2} for C={num_classes}")
    return k


# --- paper Eq. 1-2 ---------------------------------------------------------------------------------
def distance_matrix(confusion: Any, criterion: Criterion = "join") -> np.ndarray:
    """The symmetric label distance D_c of paper Eq. 1-2.

    F is the row-normalised confusion matrix with a zero diagonal. "join" uses D = 1 - F (Eq. 1),
    so confused classes are close; "split" uses D = F ("omitting the inversion"). D_c = (D + D^T) / 2.
    """
    if criterion not in CRITERIA:
        raise SSALError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    m = validate_confusion(confusion)
    rows = m.sum(axis=1, keepdims=True)
    F = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    np.fill_diagonal(F, 0.0)
    D = 1.0 - F if criterion == "join" else F
    return 0.5 * (D + D.T)


# --- supplementary Sec. A --------------------------------------------------------------------------
def _pick(scores: np.ndarray, rng: np.random.Generator, largest: bool) -> int:
    """Index of the best score; exact ties (within 1e-12) are broken by ``rng``."""
    best = scores.max() if largest else scores.min()
    tied = np.flatnonzero(np.abs(scores - best) <= _TIE_TOL * max(1.0, abs(best)))
    return int(tied[rng.integers(len(tied))]) if len(tied) > 1 else int(tied[0])


def _capacities(num_classes: int, k: int, margin: float | None) -> tuple[int, int, int]:
    """(floor size, ceil size, how many groups may reach ceil) for exact balance, or a margin cap."""
    lo, rem = divmod(num_classes, k)
    if margin is not None:
        cap = max(math.ceil(num_classes / k), math.floor(margin * num_classes / k))
        return cap, cap, k
    return lo, lo + (rem > 0), rem if rem else k


def balanced_clustering(distance: np.ndarray, k: int, seed: int = 0, size_margin: float | None = None) -> np.ndarray:
    """Balanced greedy clustering of supplementary Sec. A; returns gamma as an int array of shape (C,).

    Initialisation: the first group is seeded with the label of highest average distance to all others;
    each next seed is the remaining label farthest from its nearest seeded group. Clustering: repeatedly
    the (remaining label, not-full group) pair of smallest average distance is assigned. Groups hold at
    most ceil(C/k) labels and sizes differ by at most one; ``size_margin`` (the authors used 1.1) caps
    sizes at ``margin * C / k`` instead. Ties are broken by a generator seeded with ``seed``.
    """
    D = np.asarray(distance, dtype=np.float64)
    C = D.shape[0]
    k = validate_k(k, C)
    rng = np.random.default_rng(seed)
    lo, hi, n_hi = _capacities(C, k, size_margin)
    off = D.copy()
    np.fill_diagonal(off, 0.0)

    gamma = np.full(C, -1, dtype=np.int64)
    sums = np.zeros((C, k))  # sums[c, g] = sum of D[c, m] over members m of group g
    sizes = np.zeros(k, dtype=np.int64)

    def assign(c: int, g: int) -> None:
        gamma[c] = g
        sizes[g] += 1
        sums[:, g] += off[:, c]

    assign(_pick(off.sum(axis=1) / (C - 1), rng, largest=True), 0)
    for g in range(1, k):  # initialisation phase: farthest label from the nearest seeded group
        nearest = sums[:, :g].min(axis=1)
        nearest[gamma >= 0] = -np.inf
        assign(_pick(nearest, rng, largest=True), g)

    remaining = np.flatnonzero(gamma < 0)
    while remaining.size:  # clustering phase
        full = sizes >= hi
        if size_margin is None and (sizes == hi).sum() >= n_hi:
            full |= sizes >= lo
        open_ = np.flatnonzero(~full)
        avg = sums[np.ix_(remaining, open_)] / sizes[open_]  # (remaining labels, open groups)
        r, c = divmod(_pick(avg.ravel(), rng, largest=False), len(open_))
        assign(int(remaining[r]), int(open_[c]))
        remaining = np.delete(remaining, r)
    return gamma


def refine_swaps(distance: np.ndarray, gamma: np.ndarray, max_swaps: int | None = None) -> np.ndarray:
    """Pairwise swaps between groups that lower the total within-group distance, keeping group sizes.

    Beyond the paper: applies the best improving swap until none is left (a local optimum).
    """
    D = np.asarray(distance, dtype=np.float64).copy()
    np.fill_diagonal(D, 0.0)
    gamma = np.asarray(gamma, dtype=np.int64).copy()
    C, k = len(gamma), int(gamma.max()) + 1
    onehot = np.zeros((C, k))
    onehot[np.arange(C), gamma] = 1.0
    sums = D @ onehot  # sums[c, g] = sum of D[c, m] over members m of group g
    max_swaps = max_swaps if max_swaps is not None else 50 * C
    idx = np.arange(C)
    for _ in range(max_swaps):
        own = sums[idx, gamma]  # (C,)
        # delta[a, b]: change of the total within-group distance when a and b trade groups
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


def within_group_distance(distance: np.ndarray, gamma: Sequence[int]) -> float:
    """The sum of D over all unordered pairs of classes that share a group."""
    g = np.asarray(gamma)
    same = g[:, None] == g[None, :]
    np.fill_diagonal(same, False)
    return float(np.asarray(distance)[same].sum() / 2.0)


# --- sources of groupings ------------------------------------------------------------------------
def group_from_confusion(
    confusion: Any,
    k: int,
    criterion: Criterion = "join",
    seed: int = 0,
    refine: bool = False,
    size_margin: float | None = None,
    class_names: Sequence[str] | None = None,
    source: str = "confusion",
) -> Grouping:
    """Group the classes of a confusion matrix into k balanced groups (paper Sec. 3.1)."""
    D = distance_matrix(confusion, criterion)
    validate_k(k, D.shape[0])
    gamma = balanced_clustering(D, k, seed=seed, size_margin=size_margin)
    if refine:
        gamma = refine_swaps(D, gamma)
    extra = {"refined": bool(refine), "within_group_distance": within_group_distance(D, gamma)}
    if size_margin is not None:
        extra["size_margin"] = size_margin
    return Grouping(tuple(gamma), k, criterion, seed, source, _names(class_names, D.shape[0]), extra)


def group_from_superclasses(
    fine_to_coarse: Sequence[int], class_names: Sequence[str] | None = None, source: str = "superclasses"
) -> Grouping:
    """A grouping given by a known coarse mapping, e.g. CIFAR-100's 20 superclasses."""
    a = [int(x) for x in fine_to_coarse]
    if not a:
        raise SSALError("the coarse mapping is empty")
    return Grouping(tuple(a), max(a) + 1, None, None, source, _names(class_names, len(a)))


def random_grouping(num_classes: int, k: int, seed: int = 0, class_names: Sequence[str] | None = None) -> Grouping:
    """A uniformly random balanced grouping (sizes differ by at most one)."""
    k = validate_k(k, num_classes)
    rng = np.random.default_rng(seed)
    gamma = np.arange(num_classes) % k
    rng.shuffle(gamma)
    return Grouping(tuple(gamma), k, None, seed, "random", _names(class_names, num_classes))


def _names(names: Sequence[str] | None, n: int) -> tuple[str, ...] | None:
    if names is None:
        return None
    if len(names) != n:
        raise SSALError(f"{len(names)} class names given for {n} classes")
    return tuple(names)
