"""One writer per run directory (ssal.lock): refused while another process holds it, stale locks taken over,
nothing left behind, re-entrant within a process, only the global rank 0 locks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import ssal
from ssal.errors import SSALError
from ssal.lock import LOCK_NAME, holder, inside, is_global_zero_process, run_lock

HOLD = (
    "import sys\nfrom ssal.lock import run_lock\n"
    "with run_lock(sys.argv[1], sys.argv[2]):\n    print('locked', flush=True)\n    sys.stdin.read()\n"
)


def hold_lock(root: Path, command: str = "train") -> subprocess.Popen:
    """Another process holding ``root``'s lock until its stdin is closed (or it is killed)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(ssal.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root), command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def release(proc: subprocess.Popen) -> None:
    """Let a ``hold_lock`` process end normally."""
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0


def test_a_held_lock_refuses_a_second_writer_and_names_the_holder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = hold_lock(run, "evaluate")
    try:
        with (
            pytest.raises(SSALError, match=r"run is in use by `ssal evaluate` \(pid \d+ on .+ since "),
            run_lock(run, "train"),
        ):
            pass
        assert holder(run)["pid"] == proc.pid
    finally:
        release(proc)
    assert not run.exists(), "the holder created the folder for its lock and removes it again, empty"
    with run_lock(run, "train") as path:
        assert path == run / LOCK_NAME and holder(run)["pid"] == os.getpid()
    assert not run.exists()


def test_the_lock_of_a_killed_process_is_stale_and_taken_over(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\n")
    proc = hold_lock(run)
    proc.kill()  # no clean-up: the lock file stays, the kernel drops the flock
    proc.wait(timeout=60)
    assert (run / LOCK_NAME).is_file()
    with run_lock(run, "train"):
        assert holder(run)["pid"] == os.getpid()
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"], "the stale file is gone, the run kept"


def test_a_recorded_live_holder_of_this_machine_is_refused_even_without_flock(tmp_path: Path) -> None:
    """File systems whose locks are not shared still tell processes of one machine apart by the recorded pid."""
    from ssal.lock import _start_time

    run = tmp_path / "run"
    run.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        info = {"command": "train", "pid": sleeper.pid, "host": socket.gethostname(), "since": 0}
        (run / LOCK_NAME).write_text(json.dumps({**info, "started": _start_time(sleeper.pid)}))
        with pytest.raises(SSALError, match="in use by `ssal train`"), run_lock(run, "evaluate"):
            pass
        if _start_time(sleeper.pid) is not None:  # Linux: a reused pid (another start time) is not the holder
            (run / LOCK_NAME).write_text(json.dumps({**info, "started": "1"}))
            with run_lock(run, "evaluate"):
                pass
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()


def test_the_lock_is_reentrant_in_one_process_and_removes_only_empty_folders_it_made(tmp_path: Path) -> None:
    run = tmp_path / "a" / "b" / "run"
    with run_lock(run, "pipeline"), run_lock(run, "train"):
        assert holder(run)["command"] == "pipeline"
    assert not (tmp_path / "a").exists()
    with run_lock(run, "train"):
        (run / "metrics.csv").write_text("epoch\n")
    assert sorted(p.name for p in run.iterdir()) == ["metrics.csv"]
    with run_lock(tmp_path / "missing", "evaluate", create=False) as path:
        assert path is None and not (tmp_path / "missing").exists()


def test_the_lock_is_released_on_errors(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(RuntimeError), run_lock(run, "train"):
        raise RuntimeError("boom")
    assert not run.exists()
    with run_lock(run, "train"):
        pass


def test_only_the_global_rank_zero_process_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_global_zero_process()
    for key in ("LOCAL_RANK", "NODE_RANK"):
        with monkeypatch.context() as m:
            m.setenv(key, "1")
            assert not is_global_zero_process()
            with run_lock(tmp_path / "run", "train") as path:
                assert path is None and not (tmp_path / "run").exists()


def test_inside() -> None:
    assert inside("r/eval.md", "r") and inside("r", "r/.") and not inside("rr/x", "r") and not inside("x", "r")


def test_an_output_inside_a_live_run_is_refused_but_not_inside_ones_own(tmp_path: Path) -> None:
    from ssal.lock import refuse_if_live

    run = tmp_path / "run"
    proc = hold_lock(run)
    try:
        with pytest.raises(SSALError, match="run is in use by `ssal train`"):
            refuse_if_live(run / "groupings" / "g1.json")
        refuse_if_live(tmp_path / "elsewhere.npy")
    finally:
        release(proc)
    refuse_if_live(run / "groupings" / "g1.json")
    with run_lock(run, "pipeline"):
        refuse_if_live(run / "report.md")  # this process's own lock
