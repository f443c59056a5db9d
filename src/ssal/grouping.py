"""Class grouping (paper Sec. 3.1, supplementary Sec. A).

A grouping gamma maps each of the C original classes to one of k groups. SSAL builds it from the
confusion matrix of a trained model: ``distance_matrix`` is paper Eq. 1-2 and
``balanced_clustering`` is the balanced greedy clustering of supplementary Sec. A.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .errors import SSALError
from .files import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    import torch

__all__ = [
    "Criterion",
    "Grouping",
    "balanced_clustering",
    "distance_matrix",
    "group_from_confusion",
    "group_from_superclasses",
    "load_class_names",
    "load_confusion",
    "load_superclasses",
    "random_grouping",
    "refine_swaps",
    "validate_confusion",
    "validate_k",
]

Criterion = Literal["join", "split"]
CRITERIA: tuple[str, ...] = ("join", "split")
_TIE_TOL = 1e-12
_BLOCK = 512  # rows or tiles processed at a time: bounds temporaries and keeps transposes in cache


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
        if k > len(a):
            raise SSALError(f"k={k} groups for {len(a)} classes: {k - len(a)} or more groups have no class")
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
        import torch  # not at module level: `ssal group` runs without loading torch

        return torch.tensor(self.assignment, dtype=torch.long)

    def describe(self) -> str:
        """A multi-line listing of every group with its members' names."""
        head = f"{self.k} groups of {self.num_classes} classes (source={self.source}"
        head += f", criterion={self.criterion}" if self.criterion else ""
        head += f", seed={self.seed})" if self.seed is not None else ")"
        names = self.class_names
        lines = [head]
        for g, members in enumerate(self.groups()):  # the member lists once: describe stays linear in C
            shown = [names[c] if names else str(c) for c in members]
            lines.append(f"  group {g:>3} ({len(members)}): " + ", ".join(shown))
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
        if not isinstance(k, int) or isinstance(k, bool):
            raise SSALError(f"{where}: 'k' must be an integer")
        if "num_classes" in d and d["num_classes"] != len(a):
            raise SSALError(f"{where}: num_classes={d['num_classes']} but assignment has {len(a)} entries")
        names = d.get("class_names")
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise SSALError(f"{where}: 'class_names' must be a list of strings")
        for key, types in (("criterion", str), ("source", str), ("seed", int)):
            if d.get(key) is not None and (not isinstance(d[key], types) or isinstance(d[key], bool)):
                raise SSALError(f"{where}: '{key}' must be {'an integer' if types is int else 'a string'} or null")
        known = {"assignment", "k", "num_classes", "criterion", "seed", "source", "class_names"}
        try:
            return cls(
                assignment=tuple(a),
                k=k,
                criterion=d.get("criterion"),
                seed=d.get("seed"),
                source=d.get("source") or "json",
                class_names=tuple(names) if names else None,
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

    def aligned_to(self, names: Sequence[str] | None, where: str = "grouping") -> Grouping:
        """This grouping in the class order ``names`` (a data set's): the same if the class names agree or either
        is unknown, reordered if they are the same classes in another order; ``SSALError`` for other classes."""
        mine = self.class_names
        if names is None or mine is None or tuple(mine) == tuple(names):
            return self
        names = tuple(str(n) for n in names)
        if len(set(mine)) == len(mine) == len(names) == len(set(names)) and set(mine) == set(names):
            index = {n: i for i, n in enumerate(mine)}
            a = tuple(self.assignment[index[n]] for n in names)
            return Grouping(a, self.k, self.criterion, self.seed, self.source, names, self.extra)
        missing, extra = [n for n in names if n not in set(mine)], [n for n in mine if n not in set(names)]
        detail = "its class names repeat or differ in count"
        if missing or extra:
            detail = f"the data's {missing[:3]} are not in it, its {extra[:3]} are not in the data"
        raise SSALError(f"{where} was made for other classes than the data set's: {detail}")


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


def _check_confusion_shape(m: np.ndarray) -> None:
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise SSALError(f"confusion matrix must be square (C x C), got shape {tuple(m.shape)}")
    if m.shape[0] < 4:
        raise SSALError(f"confusion matrix must have at least 4 classes, got {m.shape[0]}")
    if not np.issubdtype(m.dtype, np.number) or np.issubdtype(m.dtype, np.complexfloating):
        raise SSALError(f"confusion matrix must be real numbers, got dtype {m.dtype}")


def _confusion_row_sums(m: np.ndarray) -> np.ndarray:
    """Validate the values of a confusion matrix block by block; return its float64 row sums."""
    rows = np.empty(len(m))
    nonfinite = negative = False
    integer = np.issubdtype(m.dtype, np.integer)
    for i in range(0, len(m), _BLOCK):
        blk = np.asarray(m[i : i + _BLOCK], dtype=np.float64)  # no copy for float64 input
        nonfinite = nonfinite or (not integer and not np.isfinite(blk).all())
        negative = negative or (m.dtype.kind != "u" and blk.min() < 0)
        rows[i : i + len(blk)] = blk.sum(axis=1)
    if nonfinite:
        raise SSALError("confusion matrix contains NaN or Inf")
    if negative:
        raise SSALError("confusion matrix contains negative entries")
    if not rows.any():
        raise SSALError("confusion matrix is all zero")
    return rows


def load_class_names(path: Path | None) -> list[str] | None:
    """Read class names, one per non-empty line."""
    if path is None:
        return None
    if not path.is_file():
        raise SSALError(f"class names file not found: {path}")
    try:
        names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise SSALError(f"cannot read class names file {path}: {e}") from None
    if not names:
        raise SSALError(f"class names file is empty: {path}")
    return names


def load_superclasses(path: Path) -> tuple[list[int], list[str] | None]:
    """Read ``fine_to_coarse`` (and ``fine_label_names`` if present) from a meta JSON file."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SSALError(f"meta file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise SSALError(f"{path} is not valid JSON: {e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SSALError(f"cannot read meta file {path}: {e}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("fine_to_coarse"), list):
        raise SSALError(f"{path} has no list 'fine_to_coarse'")
    mapping, names = meta["fine_to_coarse"], meta.get("fine_label_names")
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in mapping):
        raise SSALError(f"{path}: 'fine_to_coarse' must be a list of integers >= 0")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise SSALError(f"{path}: 'fine_label_names' must be a list of strings")
    return mapping, names


def load_confusion(path: str | os.PathLike, npy_only: bool = False) -> np.ndarray:
    """Read a C x C confusion matrix from .npy (memory-mapped, no pickle) or a text/CSV file (unless ``npy_only``).

    A missing, unreadable or non-numeric file, or one that is not a square matrix of at least 4 classes, is an
    ``SSALError`` naming it; the values are checked where the matrix is used (``validate_confusion``).
    """
    path = Path(path)
    if path.is_dir():
        raise SSALError(f"confusion matrix {path} is a folder, not a file")
    if not path.is_file():
        raise SSALError(f"confusion matrix not found: {path}")
    try:
        if npy_only or path.suffix.lower() not in (
            ".csv",
            ".txt",
        ):  # memory-mapped: read tile by tile (C = 10,000: 800 MB)
            m = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            with warnings.catch_warnings():  # an empty file: numpy warns, then the shape check below says so
                warnings.simplefilter("ignore", UserWarning)
                sep = "," if path.suffix.lower() == ".csv" else None
                m = np.loadtxt(path, delimiter=sep, ndmin=2, encoding="utf-8")
    except Exception as e:  # a damaged header or text: OSError, ValueError, SyntaxError, MemoryError, ...
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "pickle" in text:  # numpy's own text for a non-.npy file or an object array suggests loading unsafely
            text = "not a NumPy .npy array file of numbers"
        raise SSALError(f"cannot read confusion matrix {path}: {text[:200]}") from None
    if not isinstance(m, np.ndarray):
        raise SSALError(f"cannot read confusion matrix {path}: not a single array")
    try:
        _check_confusion_shape(m)
    except SSALError as e:
        raise SSALError(f"{path}: {e}") from None
    return m


def validate_confusion(confusion: Any) -> np.ndarray:
    """Check a C x C confusion matrix (counts or rates) and return it as float64."""
    m = np.asarray(confusion)
    _check_confusion_shape(m)
    _confusion_row_sums(m)
    return m.astype(np.float64)


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
    m = np.asarray(confusion)
    _check_confusion_shape(m)
    rows = _confusion_row_sums(m)
    join, every_row = criterion == "join", bool((rows > 0).all())
    n, b = len(m), _BLOCK

    def tile(i: int, j: int) -> np.ndarray:  # rows i.., columns j.. of D (D = 1 - F or F)
        r = rows[i : i + b, None]
        if every_row:
            f = np.divide(m[i : i + b, j : j + b], r)  # F: the row-normalised confusion
        else:  # rows of classes that never occur stay zero
            f = np.zeros((min(b, n - i), min(b, n - j)))
            np.divide(m[i : i + b, j : j + b], r, out=f, where=r > 0)
        if i == j:
            np.fill_diagonal(f, 0.0)
        return np.subtract(1.0, f, out=f) if join else f

    out = np.empty((n, n))
    for i in range(0, n, b):  # tile by tile: D_c = (D + D^T) / 2 without C x C temporaries
        for j in range(i, n, b):
            dij, dji = tile(i, j), tile(j, i)
            t = np.add(dij, dji.T, out=dij)
            t *= 0.5
            out[i : i + b, j : j + b] = t
            if i != j:
                out[j : j + b, i : i + b] = t.T
    return out


# --- supplementary Sec. A --------------------------------------------------------------------------
def _pick(scores: np.ndarray, rng: np.random.Generator, largest: bool) -> int:
    """Index of the best score; exact ties (within 1e-12) are broken by ``rng``."""
    best = scores.max() if largest else scores.min()
    tied = np.flatnonzero(np.abs(scores - best) <= _TIE_TOL * max(1.0, abs(best)))
    return int(tied[rng.integers(len(tied))]) if len(tied) > 1 else int(tied[0])


def _capacities(num_classes: int, k: int, margin: float | None) -> tuple[int, int, int]:
    """(floor size, ceil size, how many groups may reach ceil) for exact balance, or a margin cap."""
    lo, rem = divmod(num_classes, k)
    if margin is not None and not 1 <= margin < math.inf:
        raise SSALError(f"size_margin must be a finite number >= 1, got {margin}")
    if margin is not None:
        cap = max(math.ceil(num_classes / k), math.floor(margin * num_classes / k))
        return cap, cap, k
    return lo, lo + (rem > 0), rem if rem else k


def _working_distance(distance: Any) -> np.ndarray:
    """A C-contiguous float64 copy of a square, finite distance matrix with a zero diagonal."""
    D = np.array(distance, dtype=np.float64, order="C")  # always a copy: the diagonal is zeroed below
    if D.ndim != 2 or D.shape[0] != D.shape[1]:
        raise SSALError(f"distance matrix must be square (C x C), got shape {tuple(D.shape)}")
    if not all(np.isfinite(D[i : i + _BLOCK]).all() for i in range(0, len(D), _BLOCK)):
        raise SSALError("distance matrix contains NaN or Inf")
    np.fill_diagonal(D, 0.0)
    return D


def _columns(D: np.ndarray, symmetric: bool | None) -> np.ndarray:
    """An array whose row c is column c of D: D itself when symmetric, else a transposed copy."""
    n, b = len(D), _BLOCK
    if symmetric is None:  # compared tile by tile: a whole transposed comparison thrashes the cache
        symmetric = all(
            np.array_equal(D[i : i + b, j : j + b], D[j : j + b, i : i + b].T)
            for i in range(0, n, b)
            for j in range(i, n, b)
        )
    return D if symmetric else np.ascontiguousarray(D.T)


def balanced_clustering(
    distance: np.ndarray, k: int, seed: int = 0, size_margin: float | None = None, symmetric: bool | None = None
) -> np.ndarray:
    """Balanced greedy clustering of supplementary Sec. A; returns gamma as an int array of shape (C,).

    Initialisation: the first group is seeded with the label of highest average distance to all others;
    each next seed is the remaining label farthest from its nearest seeded group. Clustering: repeatedly
    the (remaining label, not-full group) pair of smallest average distance is assigned. Groups hold at
    most ceil(C/k) labels and sizes differ by at most one; ``size_margin`` (the authors used 1.1) caps
    sizes at ``margin * C / k`` instead. Ties are broken by a generator seeded with ``seed``.
    ``symmetric`` (checked when None) only selects how columns of D are read; it never changes the result.
    """
    D = _working_distance(distance)
    return _cluster(D, _columns(D, symmetric), validate_k(k, len(D)), seed, size_margin)


def _cluster(D: np.ndarray, cols: np.ndarray, k: int, seed: int, size_margin: float | None) -> np.ndarray:
    """``balanced_clustering`` on a zero-diagonal D whose columns are the rows of ``cols``.

    The clustering phase is incremental (``_GreedyState``) and chooses exactly what re-scanning every
    (label, group) pair at every step would choose; the tests compare both on many random cases.
    """
    C = len(D)
    rng = np.random.default_rng(seed)
    gamma = np.full(C, -1, dtype=np.int64)
    seeds = [_pick(D.sum(axis=1) / (C - 1), rng, largest=True)]
    gamma[seeds[0]] = 0
    # distance of every label to its nearest seeded group (each group holds just its seed); seeds at -inf
    nearest = cols[seeds[0]].copy()
    nearest[seeds[0]] = -np.inf
    for g in range(1, k):  # initialisation phase: farthest label from the nearest seeded group
        c = _pick(nearest, rng, largest=True)
        seeds.append(c)
        gamma[c] = g
        np.minimum(nearest, cols[c], out=nearest)
        nearest[c] = -np.inf

    remaining = np.flatnonzero(gamma < 0)
    state = _GreedyState(cols, np.asarray(seeds), remaining, *_capacities(C, k, size_margin), size_margin is None)
    for label, group in state.run(rng):  # clustering phase
        gamma[label] = group
    return gamma


class _GreedyState:
    """The clustering phase of ``balanced_clustering`` without re-scanning all (label, group) pairs per step.

    ``S[g, p]`` is the sum of D between remaining label ``rem[p]`` and the members of group g, accumulated in
    assignment order as a plain scan would. Per open group it keeps the minimum average over the labels still
    unassigned (``colmin``) and how many of them hit it exactly (``colexact``). ``rowcnt[p]`` counts the open
    groups whose average with ``rem[p]`` ties the current global minimum ``v`` (within the tie tolerance); it
    gives the number of tied pairs and, through a cumulative sum, the j-th tied pair in row-major (label,
    group) order, the order in which a plain scan lists them.
    """

    def __init__(
        self, cols: np.ndarray, seeds: np.ndarray, rem: np.ndarray, lo: int, hi: int, n_hi: int, exact: bool
    ) -> None:
        self.cols, self.rem = cols, rem
        self.lo, self.hi, self.n_hi, self.exact = lo, hi, n_hi, exact
        k = len(seeds)
        self.S = cols[np.ix_(seeds, rem)]  # D between each seed and each remaining label
        self.alive = np.ones(len(rem), dtype=bool)
        self.sizes = np.ones(k, dtype=np.int64)
        self.open = np.ones(k, dtype=bool)
        self.colmin = self.S.min(axis=1)  # averages over one member are the sums themselves
        self.colexact = np.count_nonzero(self.colmin[:, None] == self.S, axis=1)
        self.v = np.nan  # the global minimum rowcnt refers to (nan: not built)
        self.rowcnt = np.zeros(len(rem), dtype=np.int64)
        self.counted = np.zeros(k, dtype=bool)  # groups whose tied labels are included in rowcnt

    def _column_stats(self, g: int) -> None:
        a = self.S[g] / self.sizes[g]
        a[~self.alive] = np.inf
        m = a.min()
        self.colmin[g], self.colexact[g] = m, np.count_nonzero(a == m)

    def _tol(self) -> float:
        return _TIE_TOL * max(1.0, abs(self.v))

    def _tied(self, groups: np.ndarray) -> np.ndarray:
        """(len(groups), R) bool: unassigned labels whose average with each group ties ``v``."""
        return (np.abs(self.S[groups] / self.sizes[groups, None] - self.v) <= self._tol()) & self.alive

    def _near_v(self, groups: np.ndarray) -> np.ndarray:
        return self.open[groups] & (np.abs(self.colmin[groups] - self.v) <= self._tol())

    def _rebuild(self) -> None:
        self.rowcnt[:] = 0
        self.counted[:] = False
        groups = np.flatnonzero(self._near_v(np.arange(len(self.open))))
        self.counted[groups] = True
        step = max(1, (1 << 20) // max(1, len(self.rem)))
        for i in range(0, len(groups), step):
            self.rowcnt += self._tied(groups[i : i + step]).sum(axis=0)

    def _uncount(self, g: int) -> None:
        if self.counted[g]:
            self.rowcnt -= self._tied(np.array([g]))[0]
            self.counted[g] = False

    def _count(self, g: int) -> None:
        if self._near_v(np.array([g]))[0]:
            self.rowcnt += self._tied(np.array([g]))[0]
            self.counted[g] = True

    def _choose(self, rng: np.random.Generator) -> tuple[int, int, np.ndarray, np.ndarray]:
        """The (position, group) pair a full scan with ``_pick`` would choose, and that label's averages
        with the open groups (groups, averages)."""
        v = self.colmin[self.open].min()
        if v != self.v:  # also when rowcnt was never built (nan)
            self.v = v
            self._rebuild()
        n = int(self.rowcnt.sum())
        j = int(rng.integers(n)) if n > 1 else 0
        cum = np.cumsum(self.rowcnt)
        p = int(np.searchsorted(cum, j, side="right"))
        j -= int(cum[p - 1]) if p else 0
        groups = np.flatnonzero(self.open)
        a = self.S[groups, p] / self.sizes[groups]
        tied = groups[self.counted[groups] & (np.abs(a - v) <= self._tol())]
        return p, int(tied[j]), groups, a

    def _remove_label(self, p: int, groups: np.ndarray, a: np.ndarray) -> None:
        """Label ``rem[p]`` (averages ``a`` with the open ``groups``) is assigned: drop it from the statistics."""
        hit = groups[a == self.colmin[groups]]
        self.alive[p] = False
        self.rowcnt[p] = 0
        self.colexact[hit] -= 1
        for g in hit[self.colexact[hit] == 0]:  # it was the only label at that group's minimum
            self._column_stats(int(g))

    def _close(self, groups: np.ndarray) -> None:
        for g in groups:
            self._uncount(int(g))
        self.open[groups] = False
        self.colmin[groups] = np.inf

    def run(self, rng: np.random.Generator) -> Iterator[tuple[int, int]]:
        """Yield (label, group) assignments in the order of the greedy clustering phase."""
        lo, hi = self.lo, self.hi
        for _ in range(len(self.rem)):
            p, g, groups, a = self._choose(rng)
            label = int(self.rem[p])
            yield label, g
            self._remove_label(p, groups, a)
            self._uncount(g)
            self.S[g] += self.cols[label][self.rem]
            self.sizes[g] += 1
            # exact balance: once n_hi groups hold hi labels, groups holding lo labels are full as well
            at_hi = self.exact and np.count_nonzero(self.sizes == hi) >= self.n_hi
            if self.sizes[g] >= hi or (at_hi and self.sizes[g] >= lo):
                self._close(np.array([g]))
                if at_hi:
                    self._close(np.flatnonzero(self.open & (self.sizes >= lo)))
            else:
                self._column_stats(g)
                self._count(g)


def _member_sums(cols: np.ndarray, gamma: np.ndarray, k: int) -> np.ndarray:
    """``sums[g, c]``: the sum of D[c, m] over the members m of group g, added in ascending member order.

    D has a zero diagonal; its column m is ``cols[m]``. A fixed order of additions (not a BLAS product)
    makes the sums, and so the refinement, the same on every machine.
    """
    order = np.argsort(gamma, kind="stable")
    sizes = np.bincount(gamma, minlength=k)
    starts = np.cumsum(sizes) - sizes
    sums = np.zeros((k, len(gamma)))
    for i in range(int(sizes.max())):  # the i-th member of every group that has one
        groups = np.flatnonzero(sizes > i)
        for j in range(0, len(groups), _BLOCK):
            g = groups[j : j + _BLOCK]
            m = order[starts[g] + i]
            if len(groups) == k:  # every group: contiguous rows, added in place
                sums[g[0] : g[-1] + 1] += cols[m]
            else:
                sums[g] += cols[m]
    return sums


class _SwapState:
    """Best improving swap of ``refine_swaps`` without building the C x C matrix of swap gains per swap.

    ``delta[a, b]`` (the change of the total within-group distance when a and b trade groups) is evaluated
    with the same floating-point expression as a full matrix would use. Columns are cut into blocks of
    ``BLOCK`` labels; per row and block the smallest value over other-group labels and its first column are
    kept. A swap of a and b changes only the rows and the columns of the members of the two groups involved:
    those rows are evaluated again, and per changed column block a row is either updated with the new values
    or, if its block minimum sat in a changed column, that block is evaluated again. The member sums are kept
    in both layouts, (group, label) and (label, group), so that gathers read contiguous memory.
    """

    ROWS = 8  # rows of delta evaluated at a time: the temporaries stay in the CPU cache
    BLOCK = 128

    def __init__(self, D: np.ndarray, cols: np.ndarray, gamma: np.ndarray) -> None:
        self.D, self.cols, self.gamma = D, cols, gamma
        C, k = len(gamma), int(gamma.max()) + 1
        self.skc = _member_sums(cols, gamma, k)  # skc[g, c] = sum of D[c, m] over members m of g
        self.sck = np.empty((C, k))
        for i in range(0, C, _BLOCK):
            self.sck[i : i + _BLOCK] = self.skc[:, i : i + _BLOCK].T
        self.own = self.skc[gamma, np.arange(C)]
        order, sizes = np.argsort(gamma, kind="stable"), np.bincount(gamma, minlength=k)
        starts = np.cumsum(sizes) - sizes
        # members[g, i]: the i-th member of group g (the last one repeated in smaller groups)
        self.members = order[starts[:, None] + np.minimum(np.arange(sizes.max()), sizes[:, None] - 1)]
        self.nb = -(-C // self.BLOCK)
        self.bmin = np.empty((C, self.nb))  # per row and column block: smallest delta ...
        self.barg = np.empty((C, self.nb), dtype=np.int64)  # ... and its first column
        self.buf = np.full((self.ROWS, self.nb * self.BLOCK), np.inf)  # padding columns stay inf
        self._rows(np.arange(C))

    def _rows(self, rows: np.ndarray) -> None:
        """Evaluate delta on whole rows and store the minimum and first arg-minimum of every block."""
        g, C, nb, bs = self.gamma, len(self.gamma), self.nb, self.BLOCK
        for i in range(0, len(rows), self.ROWS):
            r = rows[i : i + self.ROWS]
            buf = self.buf[: len(r)]
            vals = buf[:, :C]
            vals[...] = self.sck[r][:, g]  # sums[a, gamma[b]]
            vals += self.skc[g[r]]  # + sums[b, gamma[a]]
            vals -= self.own[r, None]
            vals -= self.own[None, :]
            vals -= 2.0 * self.D[r]
            vals[np.arange(len(r))[:, None], self.members[g[r]]] = np.inf  # same group: no swap
            blocks = buf.reshape(len(r), nb, bs)
            arg = blocks.argmin(axis=2)
            self.bmin[r] = np.take_along_axis(blocks, arg[:, :, None], axis=2)[:, :, 0]
            self.barg[r] = arg + np.arange(nb) * bs

    def _block(self, rows: np.ndarray, b: int) -> None:
        """Evaluate delta on column block b of ``rows``."""
        g, bs = self.gamma, self.BLOCK
        cols = np.arange(b * bs, min(len(g), (b + 1) * bs))
        for i in range(0, len(rows), 2048):
            r = rows[i : i + 2048]
            vals = self._columns_of_delta(cols, r)
            arg = vals.argmin(axis=0)
            self.bmin[r, b] = vals[arg, np.arange(len(r))]
            self.barg[r, b] = cols[arg]

    def _columns_of_delta(self, cols: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
        """``vals[i, j] = delta[rows[j], cols[i]]`` (same-group pairs at inf), read row-wise from the sums."""
        g = self.gamma
        if isinstance(rows, slice):
            vals = self.skc[g[cols]] + self.sck[cols][:, g]  # sums[x, gamma[y]] + sums[y, gamma[x]]
            vals -= self.own[None, :]
            vals -= self.own[cols, None]
            vals -= 2.0 * self.cols[cols]
            vals[g[cols, None] == g[None, :]] = np.inf
            return vals
        vals = self.skc[np.ix_(g[cols], rows)] + self.sck[np.ix_(cols, g[rows])]
        vals -= self.own[None, rows]
        vals -= self.own[cols, None]
        vals -= 2.0 * self.cols[np.ix_(cols, rows)]
        vals[g[cols, None] == g[None, rows]] = np.inf
        return vals

    def best(self) -> tuple[int, int, float]:
        """The first (row-major) pair of smallest delta, and that delta."""
        a, blk = divmod(int(self.bmin.argmin()), self.nb)
        return a, int(self.barg[a, blk]), float(self.bmin[a, blk])

    def swap(self, a: int, b: int) -> None:
        g = self.gamma
        ga, gb = int(g[a]), int(g[b])
        da, db = self.cols[a], self.cols[b]  # columns of D (zero diagonal)
        self.skc[ga] += db - da
        self.skc[gb] += da - db
        self.sck[:, ga], self.sck[:, gb] = self.skc[ga], self.skc[gb]
        g[a], g[b] = gb, ga
        row_a, row_b = self.members[ga], self.members[gb]  # views
        row_a[row_a == a], row_b[row_b == b] = b, a
        members = np.flatnonzero((g == ga) | (g == gb))  # ascending
        self.own[members] = self.skc[g[members], members]
        vals = self._columns_of_delta(members, slice(None))  # the changed columns, for every row
        others = np.ones(len(g), dtype=bool)
        others[members] = False
        for blk in np.unique(members // self.BLOCK):
            sel = members // self.BLOCK == blk
            first = vals[sel].argmin(axis=0)
            new_min, new_arg = vals[sel][first, np.arange(len(g))], members[sel][first]
            old_min, old_arg = self.bmin[:, blk], self.barg[:, blk]
            stale = np.isin(old_arg, members[sel])  # the block's minimum sat in a changed column
            better = others & ~stale & ((new_min < old_min) | ((new_min == old_min) & (new_arg < old_arg)))
            old_min[better], old_arg[better] = new_min[better], new_arg[better]
            self._block(np.flatnonzero(others & stale), int(blk))
        self._rows(members)


def refine_swaps(
    distance: np.ndarray, gamma: np.ndarray, max_swaps: int | None = None, symmetric: bool | None = None
) -> np.ndarray:
    """Pairwise swaps between groups that lower the total within-group distance, keeping group sizes.

    Beyond the paper: applies the best improving swap (the first pair of smallest change in row-major order)
    until none is left (a local optimum) or ``max_swaps`` (default 50 C) swaps were made.
    ``symmetric`` (checked when None) only selects how columns of D are read; it never changes the result.
    """
    D = _working_distance(distance)
    gamma = np.asarray(gamma, dtype=np.int64)
    if gamma.shape != (len(D),):
        raise SSALError(f"gamma has shape {gamma.shape}, the distance matrix {D.shape}")
    return _refine(D, _columns(D, symmetric), gamma, max_swaps)


def _refine(D: np.ndarray, cols: np.ndarray, gamma: np.ndarray, max_swaps: int | None) -> np.ndarray:
    """``refine_swaps`` on a zero-diagonal D whose columns are the rows of ``cols``."""
    gamma = gamma.copy()
    state = _SwapState(D, cols, gamma)
    for _ in range(max_swaps if max_swaps is not None else 50 * len(gamma)):
        a, b, delta = state.best()
        if delta >= -1e-12:
            break
        state.swap(a, b)
    return gamma


def within_group_distance(distance: np.ndarray, gamma: Sequence[int]) -> float:
    """The sum of D over all unordered pairs of classes that share a group."""
    D = np.asarray(distance)
    g = np.asarray(gamma, dtype=np.int64)
    C = len(g)
    order = np.argsort(g, kind="stable")
    sizes = np.bincount(g)
    starts = np.cumsum(sizes) - sizes
    flat = []
    for n in np.unique(sizes[sizes > 1]):  # groups of n members: n (n - 1) ordered pairs each
        groups = np.flatnonzero(sizes == n)
        m = order[starts[groups, None] + np.arange(n)]  # (groups, n) members
        i, j = np.broadcast_arrays(m[:, :, None], m[:, None, :])
        off = i != j
        flat.append(i[off] * C + j[off])
    if not flat:
        return 0.0
    # the same elements in the same (row-major) order as D[same_group].sum(): the same float result
    return float(np.take(D, np.sort(np.concatenate(flat))).sum() / 2.0)


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
    D = distance_matrix(confusion, criterion)  # a fresh, exactly symmetric array
    k = validate_k(k, D.shape[0])
    np.fill_diagonal(D, 0.0)  # the clustering and the refinement ignore the diagonal
    gamma = _cluster(D, D, k, seed, size_margin)
    if refine:
        gamma = _refine(D, D, gamma, None)
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
