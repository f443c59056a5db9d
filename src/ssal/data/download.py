"""The data folder and first-use downloads: fetch an official archive, verify it, unpack it, move it into place.

``data_home()`` is where data sets live unless a config says otherwise: ``$SSAL_DATA``, else the user's cache
folder (``$XDG_CACHE_HOME/ssal/data``, by default ``~/.cache/ssal/data``). ``fetch_archive`` downloads with
torchvision (which checks the archive's MD5), unpacks into a hidden temporary folder next to the target and moves
the unpacked folder into place in one rename, so an interrupted or failed download leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import SSALError

__all__ = ["Archive", "data_home", "fetch_archive"]

log = logging.getLogger(__name__)

_TMP_PREFIX = ".ssal-download-"


def data_home() -> Path:
    """The default data folder: ``$SSAL_DATA``, else ``$XDG_CACHE_HOME/ssal/data`` (``~/.cache/ssal/data``)."""
    if os.environ.get("SSAL_DATA"):
        return Path(os.environ["SSAL_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "ssal" / "data"


@dataclass(frozen=True)
class Archive:
    """An official archive of a data set: where it is, its MD5 and the folder it unpacks to."""

    name: str  # the data set's readable name, for messages
    url: str
    filename: str
    md5: str
    folder: str  # the top folder inside the archive

    def instructions(self, root: Path) -> str:
        """What to do by hand: the URL and where its unpacked folder goes."""
        return f"download {self.url} and unpack it into {root} (giving {root / self.folder})"


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``root`` (several processes of one run download once; POSIX only)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    with open(root / ".ssal-download.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch_archive(archive: Archive, root: str | os.PathLike, check: Callable[[Path], None] | None = None) -> Path:
    """Download ``archive`` into ``root`` and return ``root/archive.folder``.

    The MD5 is verified (torchvision), the archive unpacked in a temporary folder, ``check(folder)`` (if given) must
    pass, and only then is the folder renamed into place; the archive itself is not kept. If the folder already
    exists nothing is downloaded. Any failure (no network, a broken connection, a wrong checksum, a corrupt archive,
    an interrupt) removes everything the download wrote and raises ``SSALError`` with one line saying what to do.
    """
    from torchvision.datasets.utils import download_url, extract_archive

    root = Path(root).expanduser()
    dest = root / archive.folder
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SSALError(f"{archive.name}: cannot create the data folder {root} ({e.strerror})") from None
    with _locked(root):
        if dest.is_dir():  # another process fetched it while this one waited
            return dest
        for stale in root.glob(f"{_TMP_PREFIX}*"):  # left by a killed download (the lock says no one else is busy)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=root))
        try:
            log.info("%s: downloading %s to %s", archive.name, archive.url, dest)
            try:
                download_url(archive.url, str(tmp), archive.filename, archive.md5)
            except RuntimeError as e:  # torchvision: "File not found or corrupted." (MD5 mismatch)
                raise SSALError(
                    f"{archive.name}: the download of {archive.url} is corrupt ({e}, MD5 is not {archive.md5}); "
                    f"try again, or {archive.instructions(root)}"
                ) from None
            except OSError as e:  # URLError, a broken connection, a full disk
                reason = getattr(e, "reason", None) or e.strerror or e
                raise SSALError(
                    f"{archive.name}: no data in {root} and the download failed ({type(e).__name__}: {reason}); "
                    f"{archive.instructions(root)}"
                ) from None
            try:
                extract_archive(str(tmp / archive.filename), str(tmp / "unpacked"))
            except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, RuntimeError) as e:
                raise SSALError(
                    f"{archive.name}: cannot unpack {archive.filename} ({type(e).__name__}: {e}); "
                    f"{archive.instructions(root)}"
                ) from None
            unpacked = tmp / "unpacked" / archive.folder
            if not unpacked.is_dir():
                raise SSALError(f"{archive.name}: {archive.filename} has no folder {archive.folder}; "
                                f"{archive.instructions(root)}")  # fmt: skip
            if check is not None:
                check(unpacked)
            os.replace(unpacked, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.debug("%s: unpacked to %s", archive.name, dest)
    return dest
