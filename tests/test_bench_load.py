"""`ssal bench` states the load it saw and judges no goal on a busy machine (no timing in these tests)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ssal import cpuload
from ssal.cli.bench import NOT_JUDGED, goal_lines, judge
from ssal.cpuload import CpuSnapshot, cpu_snapshot, load_between, parse_loadavg, parse_proc_stat, parse_system_stat

SYSTEM_STAT = """cpu  1000 200 300 5000 40 0 10 50 0 0
cpu0 500 100 150 2500 20 0 5 25 0 0
intr 123
procs_running 3
procs_blocked 0
"""


def proc_stat(pid: int, name: str, ppid: int, utime: int, stime: int, cutime: int = 0, cstime: int = 0) -> str:
    """A /proc/<pid>/stat line (fields after the name as in proc(5))."""
    rest = ["S", ppid, 0, 0, 0, 0, 0, 0, 0, 0, 0, utime, stime, cutime, cstime, 20, 0, 1, 0, 100]
    return f"{pid} ({name}) " + " ".join(map(str, rest)) + "\n"


def test_parsers() -> None:
    assert parse_loadavg("3.50 2.25 1.00 4/321 9999\n") == (3.5, 2.25, 1.0)
    assert parse_proc_stat(proc_stat(42, "python (train) x", 7, 300, 45)) == ("python (train) x", 7, 345)
    busy, total, running = parse_system_stat(SYSTEM_STAT)
    assert busy == 1000 + 200 + 300 + 0 + 10 + 50 and total == busy + 5000 + 40 and running == 3


def test_snapshot_reads_a_proc_tree(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text(SYSTEM_STAT)
    (tmp_path / "loadavg").write_text("1.00 0.50 0.25 2/100 5\n")
    procs = [(10, "me", 1, 100, 10, 7), (11, "worker", 10, 5, 0, 0), (20, "job", 1, 9, 1, 0)]
    for pid, name, ppid, ut, st, cut in procs:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(proc_stat(pid, name, ppid, ut, st, cut))
    (tmp_path / "30").mkdir()  # a process that ended while being read: no stat file
    snap = cpu_snapshot(tmp_path, own=10)
    assert snap.ticks == {10: ("me", 1, 110), 11: ("worker", 10, 5), 20: ("job", 1, 10)}
    assert snap.system == parse_system_stat(SYSTEM_STAT) and snap.loadavg == (1.0, 0.5, 0.25)
    assert snap.own_children == 7


def snapshots(other_ticks: int, seconds: float = 10.0) -> tuple[CpuSnapshot, CpuSnapshot]:
    """Before/after: this process (pid 10) used 300 ticks, its child 200, a finished child 100; others the rest."""
    hz = 100
    a = CpuSnapshot(0.0, (1000, 9000, 2), {10: ("me", 1, 50), 11: ("loader", 10, 0), 20: ("job", 1, 0)}, 0, None)
    own = 300 + 200 + 100
    b = CpuSnapshot(
        seconds,
        (1000 + own + other_ticks, 9000 + int(seconds * hz * 2), 1),
        {10: ("me", 1, 350), 11: ("loader", 10, 200), 20: ("job", 1, other_ticks), 21: ("new", 1, 0)},
        100,
        (2.0, 1.0, 0.5),
    )
    return a, b


def test_load_between_counts_other_work_only() -> None:
    a, b = snapshots(other_ticks=1500)
    load = load_between(a, b, own=10, ticks_per_s=100, cpus=2)
    assert load.other_cores == pytest.approx(1.5)  # 1500 ticks = 15 s of CPU in 10 s
    assert load.busy and [(p, n) for p, n, _ in load.busy_processes] == [(20, "job")]
    assert load.busy_processes[0][2] == pytest.approx(1.5) and load.running_others == 1
    d = load.to_dict()
    assert d["busy"] is True and d["loadavg_end"] == (2.0, 1.0, 0.5) and d["cpus"] == 2
    assert "BUSY" in load.describe() and "job (1.50)" in load.describe()


def test_a_quiet_machine_is_not_busy() -> None:
    a, b = snapshots(other_ticks=int(cpuload.BUSY_CORES * 1000) - 10)  # just under the threshold
    load = load_between(a, b, own=10, ticks_per_s=100, cpus=2)
    assert not load.busy and load.other_cores < cpuload.BUSY_CORES and "quiet" in load.describe()
    a, b = snapshots(other_ticks=int(cpuload.BUSY_CORES * 1000))
    assert load_between(a, b, own=10, ticks_per_s=100).busy


def test_a_reused_pid_counts_all_its_ticks() -> None:
    a, b = snapshots(other_ticks=0)
    b.ticks[20] = ("other", 1, 400)  # pid 20 now runs another program: all 400 ticks are new
    b.system = (b.system[0] + 400, *b.system[1:])
    load = load_between(a, b, own=10, ticks_per_s=100)
    assert load.busy_processes == [(20, "other", pytest.approx(0.4))] and load.other_cores == pytest.approx(0.4)


def test_the_live_machine_is_read() -> None:
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc")
    a = cpu_snapshot()
    end = time.process_time() + 0.3
    while time.process_time() < end:  # burn 0.3 s of this process's CPU between the snapshots
        pass
    b = cpu_snapshot()
    assert os.getpid() in b.ticks and b.system[1] >= a.system[1] > 0
    assert b.ticks[os.getpid()][2] - a.ticks[os.getpid()][2] >= 20  # our own 0.3 s, in 1/100 s ticks (>= 0.2 s)
    load = load_between(a, b)
    assert load.seconds >= 0.25 and load.other_cores <= load.cpus


RESULT = {
    "engine_vs_bare": 0.99,
    "train_gflops_fraction_of_peak": 0.2,
    "grouping_seconds_c1000_k500": 0.4,
    "ssal_step_cost": 1.1,
    "branch_flop_share": 0.12,
}


def test_goals_are_judged_on_a_quiet_machine() -> None:
    lines = goal_lines({**RESULT, "load": {"busy": False}})
    verdicts = ["NOT met" if line.endswith("NOT met") else "met" if line.endswith(" met") else line for line in lines]
    assert verdicts == ["met", "NOT met", "met", "met"]  # fraction of peak 0.2 < 0.35; step cost 1.1 <= 1.176


def test_busy_machine_judges_no_goal() -> None:
    lines = goal_lines({**RESULT, "load": {"busy": True}})
    assert len(lines) == 4 and all(line.endswith(NOT_JUDGED) for line in lines)
    assert NOT_JUDGED == "not judged: machine busy"
    assert judge(True, busy=True) == judge(False, busy=True) == NOT_JUDGED
    assert (judge(True, busy=False), judge(False, busy=False)) == ("met", "NOT met")
