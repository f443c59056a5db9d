"""One writer per run directory: ``RUN_DIR/.ssal.lock``, held while a command writes into the run.

``train``, ``pipeline`` (its output folder and every run in it), ``evaluate``, ``confusion``, ``attack`` and
``explain`` hold the lock of the run directory they write into for as long as they run; a second command that
would write into a locked run is an ``SSALError`` naming the holder, before it changes any file.

The lock is an ``fcntl.flock`` on the lock file, which records the holder (command, pid, host, process start time,
when). The kernel drops a flock when its process ends, however it ends, so a lock file left behind by a killed
process is stale and simply taken over. Local file systems and NFS with working locks (NFSv4; NFSv3 with lockd)
hold the flock across processes and machines. Where locks are not shared across machines (NFS mounted with
``nolock`` or ``local_lock=all``, some FUSE/SMB mounts) or not supported at all, the recorded holder still tells
processes of the same machine apart (its pid is alive and started when the file says), but not processes of two
machines. The lock file is removed when the lock is released, and so are the folders the lock had to create if
they are still empty (a refused command leaves nothing behind). In a distributed run only the global rank 0
process takes the lock (the others do not write files).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SSALError

__all__ = ["LOCK_NAME", "holder", "inside", "is_global_zero_process", "refuse_if_live", "run_lock"]

log = logging.getLogger(__name__)

#: The lock file's name inside a run directory.
LOCK_NAME = ".ssal.lock"

try:  # POSIX; elsewhere only the recorded holder is checked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


@dataclass
class _Held:
    fd: int
    path: Path
    created: list[Path] = field(default_factory=list)
    count: int = 1


_held: dict[str, _Held] = {}  # lock files this process holds (re-entrant: a pipeline's fit and evaluate nest)


def is_global_zero_process() -> bool:
    """Whether this process is the global rank 0 of a (possibly distributed) run, the one that writes files.

    Read from the launcher's environment (Lightning, torchrun, SLURM) before any Trainer exists.
    """
    from lightning.pytorch.utilities import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) != 0:
        return False
    return all(os.environ.get(k, "0") in ("", "0") for k in ("NODE_RANK", "GROUP_RANK", "LOCAL_RANK"))


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` since boot (Linux ``/proc``), to tell a reused pid apart; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22 of the whole line


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        pass
    now = _start_time(pid)
    return started is None or now is None or now == started


def holder(root: str | os.PathLike) -> dict[str, Any] | None:
    """The recorded holder of ``root``'s lock file ({command, pid, host, ...}), or None (no or unreadable file)."""
    try:
        info = json.loads((Path(root) / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _describe(root: Path, info: dict[str, Any] | None) -> str:
    if not info:
        who = "another process"
    else:
        since = info.get("since")
        when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, int) else ""
        who = f"`ssal {info.get('command', '?')}` (pid {info.get('pid', '?')} on {info.get('host', '?')}{when})"
    return (
        f"{root} is in use by {who}; one command at a time writes into a run directory: wait for it to end, "
        "or use another run directory"
    )


def _live_other(info: dict[str, Any] | None) -> bool:
    """Whether a recorded holder is a live process of this machine other than this one."""
    if not info or info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return False
    pid = info["pid"]
    return pid != os.getpid() and _alive(pid, info.get("started"))


def _make_dirs(root: Path) -> list[Path]:
    """Create ``root`` and its missing parents; the folders created, outermost first."""
    missing = [p for p in (root, *root.parents) if not p.exists()][::-1]
    root.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(dirs: list[Path]) -> None:
    for d in reversed(dirs):
        try:
            d.rmdir()
        except OSError:
            break


def _acquire(root: Path, command: str, create: bool) -> _Held:
    created = _make_dirs(root) if create else []
    path = root / LOCK_NAME
    try:
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # a refused process removed the folder it thought it had made: make it again
                if not create:
                    raise
                root.mkdir(parents=True, exist_ok=True)
                continue
            locked = True
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        os.close(fd)
                        raise SSALError(_describe(root, holder(root))) from None
                    locked = False  # no locks on this file system: the recorded holder decides
                    log.debug("%s: no file locks here (%s); checking the recorded holder only", path, e.strerror)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if not same:  # the holder released (and removed) the file between our open and flock: start over
                os.close(fd)
                continue
            break
        info = holder(root)
        if _live_other(info):  # flock granted, yet a live process of this machine holds it: locks are not shared
            os.close(fd)
            raise SSALError(_describe(root, info))
        if not locked and info and info.get("host") != socket.gethostname():
            log.warning("%s names a process on %s, which cannot be checked from here; taking it over", path, info)
        me = {"command": command, "pid": os.getpid(), "host": socket.gethostname(), "since": int(time.time())}
        me["started"] = _start_time(os.getpid())
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        return _Held(fd, path, created)
    except BaseException:
        _remove_empty(created)
        raise


def _release(held: _Held) -> None:
    with contextlib.suppress(OSError):
        held.path.unlink()  # while the flock is still held: a waiting process re-checks the path's inode
    os.close(held.fd)
    _remove_empty(held.created)


@contextlib.contextmanager
def run_lock(
    root: str | os.PathLike, command: str, *, create: bool = True, required: bool = True
) -> Iterator[Path | None]:
    """Hold the lock of run directory ``root`` for ``ssal command`` (re-entrant within a process).

    ``create``: make ``root`` (and missing parents) for the lock; they are removed again on release if still empty.
    Without it, a missing ``root`` takes no lock (the command reports the missing folder itself). ``required=False``
    goes on without a lock where the lock file cannot be written (a read-only run, for a command writing elsewhere).
    Processes other than the global rank 0 take no lock. Yields the lock file, or None when no lock was taken.
    """
    root = Path(root)
    if not is_global_zero_process() or (not create and not root.is_dir()):
        yield None
        return
    key = str((root / LOCK_NAME).resolve())
    held = _held.get(key)
    if held is not None:
        held.count += 1
    else:
        try:
            held = _acquire(root, command, create)
        except OSError as e:
            if required or e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise SSALError(f"cannot lock run directory {root}: {e.strerror or e}") from None
            log.debug("%s: read-only (%s); no lock taken", root, e.strerror)
        if held is None:
            yield None
            return
        _held[key] = held
    try:
        yield held.path
    finally:
        held.count -= 1
        if held.count == 0:
            del _held[key]
            _release(held)


def inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path`` lies in folder ``root`` (or is it), after resolving both."""
    p, r = Path(path).resolve(), Path(root).resolve()
    return p == r or r in p.parents


def _held_elsewhere(path: Path) -> bool:
    """Whether another process holds the lock file ``path`` (a brief try of its flock; the recorded holder where
    locks do not work)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return True
        return _live_other(holder(path.parent))
    finally:
        os.close(fd)


def refuse_if_live(path: str | os.PathLike) -> None:
    """``SSALError`` if ``path`` (an output file or folder) lies in a run directory that another command holds the
    lock of, e.g. ``ssal group --out RUN_DIR/groupings/g1.json`` while RUN_DIR trains."""
    for d in [Path(path).resolve(), *Path(path).resolve().parents]:
        lock = d / LOCK_NAME
        if lock.is_file() and str(lock) not in _held and _held_elsewhere(lock):
            rel = os.path.relpath(d)
            raise SSALError(_describe(Path(d if rel.startswith("..") else rel), holder(d)))
