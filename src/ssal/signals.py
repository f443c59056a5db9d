"""SIGINT and SIGTERM: stop cleanly with the conventional exit codes (130, 143) and one line saying what was kept.

The CLI installs ``handle_signals()`` around every command; a signal then raises ``Interrupted``. Training runs
inside ``deferred()``: a signal only marks itself pending and the engine stops at the next safe point (the end of
a batch, or right after the epoch's metrics row and checkpoints are written), so no file is left half-updated and
``--resume`` continues exactly. A second signal while one is pending stops at once.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

__all__ = ["Interrupted", "check", "deferred", "handle_signals"]

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state: dict[str, int | None] = {"pending": None, "defer": 0}


class Interrupted(BaseException):
    """A SIGINT or SIGTERM stopped the command (a BaseException: ``except Exception`` does not swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.run_dir: Path | None = None  # set by the engine when training was interrupted
        self.epoch: int | None = None  # the epoch (1-based) that was running
        self.epochs_saved: int | None = None  # epochs held by last.ckpt

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM (what a shell reports for a killed process)."""
        return 128 + self.signum

    def describe(self, command: str) -> str:
        """One line: what stopped, what is kept, and how to continue."""
        msg = f"interrupted by {signal.Signals(self.signum).name}"
        if self.run_dir is None:
            return msg + ("; run the same command again to continue" if command in ("pipeline", "demo") else "")
        msg += f" in epoch {self.epoch} of {self.run_dir}" if self.epoch else f" while training {self.run_dir}"
        if self.epochs_saved:
            msg += f"; checkpoints/last.ckpt holds epoch {self.epochs_saved}"
        else:
            msg += "; no epoch was finished yet"
        if command == "train":
            return msg + f"; continue with: ssal train --resume {self.run_dir}"
        return msg + "; run the same command again to continue (finished runs are skipped)"


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state["defer"] and _state["pending"] is None:
        _state["pending"] = signum
        log.debug(
            "%s received: stopping at the next safe point (send it again to stop now)", signal.Signals(signum).name
        )
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise ``Interrupted`` (deferred inside ``deferred()``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _handler)
    _state["pending"] = None
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _state["pending"] = None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block a signal only marks itself pending; ``check()`` raises it at a safe point."""
    _state["defer"] = int(_state["defer"] or 0) + 1
    try:
        yield
    finally:
        _state["defer"] = int(_state["defer"] or 0) - 1


def check() -> None:
    """Raise ``Interrupted`` if a signal arrived since the last check."""
    signum = _state["pending"]
    if signum is not None:
        _state["pending"] = None
        raise Interrupted(signum)
