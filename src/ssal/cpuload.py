"""The load other processes put on the machine, from ``/proc`` (Linux): CPU ticks of the whole machine and of each
visible process between two snapshots. Speed goals are judged only on a quiet machine.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BUSY_CORES",
    "BUSY_PROCESS_SHARE",
    "CpuSnapshot",
    "ProcessLoad",
    "cpu_snapshot",
    "load_between",
    "parse_loadavg",
    "parse_proc_stat",
    "parse_system_stat",
]

#: Other work using this many CPU cores on average (or more) makes the machine "busy": goals are not judged.
BUSY_CORES = 0.2
#: A visible process using at least this share of one core is listed as a busy process.
BUSY_PROCESS_SHARE = 0.05


def parse_loadavg(text: str) -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages from the text of ``/proc/loadavg``."""
    a, b, c = text.split()[:3]
    return float(a), float(b), float(c)


def parse_proc_stat(text: str) -> tuple[str, int, int]:
    """(command name, parent pid, user + system CPU ticks) from the text of ``/proc/<pid>/stat``."""
    head, _, rest = text.rpartition(")")  # the name may hold spaces and parentheses
    name = head.split("(", 1)[1]
    fields = rest.split()  # fields[0] is the state (field 3 of proc(5))
    return name, int(fields[1]), int(fields[11]) + int(fields[12])  # ppid, utime, stime


def parse_system_stat(text: str) -> tuple[int, int, int]:
    """(busy CPU ticks of all CPUs, all ticks, processes running now) from the text of ``/proc/stat``.

    Busy is user + nice + system + irq + softirq + steal (guest time is already inside user and nice).
    """
    busy = total = running = 0
    for line in text.splitlines():
        f = line.split()
        if f and f[0] == "cpu":
            v = [int(x) for x in f[1:9]] + [0] * max(0, 9 - len(f))
            user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
            busy = user + nice + system + irq + softirq + steal
            total = busy + idle + iowait
        elif f and f[0] == "procs_running":
            running = int(f[1])
    return busy, total, running


@dataclass
class CpuSnapshot:
    """CPU ticks of the whole machine and of every visible process, and the load average, at one moment."""

    time: float
    system: tuple[int, int, int]  # (busy ticks, all ticks, processes running), machine-wide
    ticks: dict[int, tuple[str, int, int]]  # pid -> (name, ppid, ticks) of the processes this one can see
    own_children: int  # CPU ticks of this process's finished (waited-for) children
    loadavg: tuple[float, float, float] | None


def cpu_snapshot(proc: str | Path = "/proc", own: int | None = None) -> CpuSnapshot:
    """Read ``/proc/stat``, ``/proc/loadavg`` and ``/proc/<pid>/stat`` of every visible process.

    Processes in other containers or PID namespaces are not visible, but their CPU time is in ``/proc/stat``.
    """
    proc = Path(proc)
    own = os.getpid() if own is None else own
    ticks: dict[int, tuple[str, int, int]] = {}
    with contextlib.suppress(OSError):
        for d in proc.iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):  # a process may end while being read
                    ticks[int(d.name)] = parse_proc_stat((d / "stat").read_text())
    system, load, children = (0, 0, 0), None, 0
    with contextlib.suppress(OSError, ValueError):
        system = parse_system_stat((proc / "stat").read_text())
    with contextlib.suppress(OSError, ValueError):
        load = parse_loadavg((proc / "loadavg").read_text())
    with contextlib.suppress(OSError, ValueError, IndexError):
        f = (proc / str(own) / "stat").read_text().rpartition(")")[2].split()
        children = int(f[13]) + int(f[14])  # cutime, cstime
    return CpuSnapshot(time.monotonic(), system, ticks, children, load)


@dataclass
class ProcessLoad:
    """What other work did between two snapshots: CPU cores used on average, and which processes were busy."""

    seconds: float
    other_cores: float  # machine-wide busy CPU time minus this process and its children, per second
    busy_processes: list[tuple[int, str, float]]  # visible processes (pid, name, cores), busiest first
    running_others: int  # processes running at the start or the end besides this one (machine-wide, maximum)
    loadavg_start: tuple[float, float, float] | None
    loadavg_end: tuple[float, float, float] | None
    cpus: int

    @property
    def busy(self) -> bool:
        """Whether other work used at least ``BUSY_CORES`` cores: then speed goals are not judged."""
        return self.other_cores >= BUSY_CORES

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "other_cores": self.other_cores,
            "busy_processes": [{"pid": p, "name": n, "cores": c} for p, n, c in self.busy_processes],
            "running_others": self.running_others,
            "loadavg_start": self.loadavg_start,
            "loadavg_end": self.loadavg_end,
            "cpus": self.cpus,
            "busy": self.busy,
        }

    def describe(self) -> str:
        la = ", ".join(
            f"{w} {'/'.join(f'{x:.2f}' for x in v)}"
            for w, v in (("start", self.loadavg_start), ("end", self.loadavg_end))
            if v is not None
        )
        names = ", ".join(f"{n} ({c:.2f})" for _, n, c in self.busy_processes[:5])
        return (
            f"load: other work used {self.other_cores:.2f} of {self.cpus} CPU cores on average over "
            f"{self.seconds:.0f} s; {self.running_others} other process(es) running; "
            f"{len(self.busy_processes)} busy visible process(es){': ' + names if names else ''}; "
            f"load average (1/5/15 min) {la or 'unavailable'} -> {'BUSY' if self.busy else 'quiet'}"
        )


def _descendants(ticks: dict[int, tuple[str, int, int]], root: int) -> set[int]:
    """``root`` and every process below it (by parent pid)."""
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in ticks.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, []))
    return out


def load_between(
    a: CpuSnapshot, b: CpuSnapshot, own: int | None = None, ticks_per_s: float | None = None, cpus: int | None = None
) -> ProcessLoad:
    """The CPU use of everything but ``own`` (default: this process) and its children between a and b."""
    own = os.getpid() if own is None else own
    hz = ticks_per_s or float(os.sysconf("SC_CLK_TCK"))
    dt = max(b.time - a.time, 1e-9)
    mine = _descendants(b.ticks, own) | _descendants(a.ticks, own)

    def used(pid: int, name: str, t1: int) -> int:  # a process new since a (or a reused pid): all its ticks
        return max(t1 - a.ticks[pid][2], 0) if pid in a.ticks and a.ticks[pid][0] == name else t1

    own_ticks = sum(used(p, *b.ticks[p][::2]) for p in mine if p in b.ticks) + b.own_children - a.own_children
    busy = []
    for pid, (name, _, t1) in b.ticks.items():
        share = used(pid, name, t1) / hz / dt
        if pid not in mine and share >= BUSY_PROCESS_SHARE:
            busy.append((pid, name, share))
    busy.sort(key=lambda x: -x[2])
    other = max(b.system[0] - a.system[0] - own_ticks, 0) / hz / dt
    running = max(a.system[2], b.system[2]) - 1  # procs_running counts this process while it reads /proc
    return ProcessLoad(dt, other, busy, max(running, 0), a.loadavg, b.loadavg, cpus or os.cpu_count() or 1)
