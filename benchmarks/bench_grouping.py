"""Grouping speed. Goals: C = 1000, k = 500 in under 1 s (in process); C = 10,000, k = 5,000 in under 10 s for
`ssal group` end to end (process start-up, reading the matrix, --refine and writing the JSON included).

Run: python benchmarks/bench_grouping.py [--repeats 3] [--large-repeats 3] [--skip-large]

The in-process table times ``group_from_confusion`` (best of ``--repeats``); the end-to-end table runs
``python -m ssal group --confusion CONF.npy --k 5000 --criterion join|split [--refine] --out G.json --quiet`` on a
synthetic 10,000 x 10,000 confusion matrix (``ssal.bench.synthetic_confusion``, saved as .npy first) and reports
the best and the median wall time and the least CPU time (user + system). Every row states the other work on
the machine while it ran (CPU cores used by other processes, machine-wide, from /proc): a wall time measured
next to other jobs is not a measurement of the code.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ssal.bench import grouping_seconds, machine_info, synthetic_confusion
from ssal.cpuload import cpu_snapshot, load_between


def end_to_end(conf: Path, k: int, criterion: str, refine: bool, out: Path) -> tuple[float, float, float]:
    """Wall seconds of one `ssal group` process, its CPU seconds (user + system), and the CPU cores other work
    used meanwhile. On a quiet machine wall and CPU seconds agree; on a busy one only the CPU seconds do not
    depend on the other work (much)."""
    cmd = [sys.executable, "-m", "ssal", "group", "--confusion", str(conf), "--k", str(k)]
    cmd += ["--criterion", criterion, "--out", str(out), "--quiet", *(["--refine"] if refine else [])]
    before, usage = cpu_snapshot(), resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    seconds = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime
    return seconds, cpu, load_between(before, cpu_snapshot()).other_cores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--large-repeats", type=int, default=3)
    p.add_argument("--skip-large", action="store_true", help="only the in-process table")
    args = p.parse_args()
    info = machine_info()
    print(f"cpu: {info['cpu']}, numpy {np.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"{'C':>6} {'k':>5} {'criterion':>9} {'refine':>6} {'seconds':>8} {'other cores':>11}")
    sizes = [(100, 20), (1000, 200), (1000, 500), (3000, 1500)]
    rows = [(C, k, crit, False) for C, k in sizes for crit in ("join", "split")]
    rows += [(1000, 500, "split", True), (3000, 1500, "join", True), (3000, 1500, "split", True)]
    for C, k, crit, refine in rows:
        before = cpu_snapshot()
        sec = grouping_seconds(C, k, args.repeats, crit, refine=refine)
        other = load_between(before, cpu_snapshot()).other_cores
        print(f"{C:>6} {k:>5} {crit:>9} {'yes' if refine else 'no':>6} {sec:8.3f} {other:11.2f}", flush=True)
    if args.skip_large:
        return
    print(f"\nssal group end to end, C = 10000, k = 5000 ({args.large_repeats} runs each)")
    print(f"{'criterion':>9} {'refine':>6} {'best s':>7} {'median s':>8} {'cpu s':>6} {'other cores (per run)':>22}")
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "confusion.npy"
        np.save(conf, synthetic_confusion(10_000))
        for crit in ("join", "split"):
            for refine in (False, True):
                runs = [end_to_end(conf, 5000, crit, refine, Path(tmp) / "g.json") for _ in range(args.large_repeats)]
                secs = [s for s, _, _ in runs]
                others = " ".join(f"{o:.2f}" for _, _, o in runs)
                print(
                    f"{crit:>9} {'yes' if refine else 'no':>6} {min(secs):7.2f} {statistics.median(secs):8.2f} "
                    f"{min(c for _, c, _ in runs):6.2f} {others:>22}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
