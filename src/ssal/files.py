"""Atomic file writes: write to a temporary file in the same folder, then rename."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import SSALError

__all__ = ["atomic_write", "atomic_write_json", "atomic_write_text", "check_output_path"]


def check_output_path(path: str | os.PathLike, kind: str = "file") -> Path:
    """``SSALError`` unless ``path`` can be written as a ``kind`` ("file" or "dir") without replacing anything else:
    an existing file output must be a regular file (never a folder, device, pipe or socket), an existing folder
    output a folder, and no existing part of the path above it may be a file."""
    path = Path(path)
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise SSALError(f"cannot write {path}: {parent} is a file, not a folder")
    if kind == "dir":
        if path.exists() and not path.is_dir():
            raise SSALError(f"{path} is a file, not a folder; give a folder for the output")
    elif path.is_dir():
        raise SSALError(f"{path} is a folder; give a file name for the output")
    elif path.exists() and not path.is_file():
        raise SSALError(f"{path} is not a regular file (a device, pipe or socket); refusing to replace it")
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one rename (no half-written files).

    Only a regular file is ever replaced: a folder, device, pipe or socket at ``path`` is an ``SSALError``.
    """
    path = check_output_path(path, "file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
