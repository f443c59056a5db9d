"""What the benchmark scripts share: running ``ssal`` as a subprocess, reading a run's eval.json, and summarising seeds.

Scripts import it as ``from common import ...`` (Python puts a script's own folder first on ``sys.path``).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["mean_std", "paired", "read_eval", "ssal"]


def ssal(*args: str) -> None:
    """Run ``python -m ssal ARGS`` in this interpreter, echoing the command; raise if it fails."""
    print("+ ssal", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "ssal", *args], check=True)


def read_eval(run: Path, stem: str = "eval") -> dict[str, Any] | None:
    """The ``<stem>.json`` that ``ssal evaluate`` wrote into ``run`` (None if it is not there)."""
    path = Path(run) / f"{stem}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def mean_std(values: Sequence[float | None], fmt: str = "{:.2f}", count: bool = False) -> str:
    """``mean ± std`` of the values that are not None (sample std); one value alone; "—" for none.

    ``count`` appends ``(n=N)``.
    """
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return "—"
    text = (
        fmt.format(vals[0])
        if len(vals) == 1
        else f"{fmt.format(statistics.mean(vals))} ± " + fmt.format(statistics.stdev(vals))
    )
    return f"{text} (n={len(vals)})" if count else text


def paired(arm: dict[int, float | None], base: dict[int, float | None]) -> list[float]:
    """Differences arm - base of the seeds both have (keys: seeds)."""
    return [float(v) - float(base[s]) for s, v in arm.items() if v is not None and base.get(s) is not None]
