"""Data on a fresh machine: the default data folder, first-use downloads (faked network), offline errors."""

from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data import _write_official, _write_tiny

from ssal.cli import main
from ssal.config import expand_env, load_config
from ssal.data import data_home, default_root, download_cifar100, download_tinyimagenet, load_arrays
from ssal.data.cifar100 import mini_subset
from ssal.errors import SSALError

REPO = Path(__file__).resolve().parents[1]


class _Response(io.BytesIO):
    """What ``urllib.request.urlopen`` returns, serving ``body``; ``fail_at`` breaks the connection there."""

    def __init__(self, url: str, body: bytes, fail_at: int | None, error: BaseException) -> None:
        super().__init__(body)
        self.url, self.length, self.fail_at, self.error = url, len(body), fail_at, error

    def read(self, n: int | None = -1) -> bytes:
        if self.fail_at is not None:
            if self.tell() >= self.fail_at:
                raise self.error
            n = min(n or 0, self.fail_at - self.tell())
        return super().read(n)


class FakeNetwork:
    """Serves one archive for every URL (or none: offline) and records the URLs asked for."""

    def __init__(self, body: bytes | None = None, fail_at: int | None = None, error: BaseException | None = None):
        self.body, self.fail_at, self.error = body, fail_at, error or ConnectionResetError(104, "Connection reset")
        self.urls: list[str] = []

    def urlopen(self, request: urllib.request.Request, *args, **kwargs) -> _Response:
        url = request.full_url
        self.urls.append(url)
        if self.body is None:
            raise urllib.error.URLError("[Errno -2] Name or service not known")
        return _Response(url, self.body, self.fail_at, self.error)


def _tar_gz(src: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src, arcname=src.name)
    return buf.getvalue()


def _cifar_archive(tmp_path: Path, n: int = 300) -> bytes:
    _write_official(tmp_path / "src" / "cifar-100-python", n=n)
    return _tar_gz(tmp_path / "src" / "cifar-100-python")


def _serve(monkeypatch: pytest.MonkeyPatch, net: FakeNetwork, md5_of: bytes | None = None) -> FakeNetwork:
    """Route torchvision's downloads to ``net``; the official MD5 becomes that of ``md5_of`` (a fake archive)."""
    from torchvision.datasets import CIFAR100

    monkeypatch.setattr(urllib.request, "urlopen", net.urlopen)
    if md5_of is not None:
        monkeypatch.setattr(CIFAR100, "tgz_md5", hashlib.md5(md5_of).hexdigest())
    return net


def _left(root: Path) -> list[str]:
    """What a download left in ``root`` besides its lock file."""
    return sorted(p.name for p in root.iterdir() if p.name != ".ssal-download.lock") if root.exists() else []


def test_data_home_and_default_roots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SSAL_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_home() == tmp_path / "cache" / "ssal" / "data"
    monkeypatch.setenv("SSAL_DATA", str(tmp_path / "d"))
    assert data_home() == tmp_path / "d"
    assert default_root("cifar100") == default_root("cifar100_mini") == str(tmp_path / "d" / "cifar100")
    assert default_root("tinyimagenet") == str(tmp_path / "d" / "tinyimagenet")
    assert default_root("digits") == default_root("folder") == ""
    monkeypatch.setenv("SSAL_CIFAR100_DIR", "/x/c100")
    assert expand_env("${SSAL_CIFAR100_DIR:-${SSAL_DATA}/cifar100}") == "/x/c100"
    monkeypatch.delenv("SSAL_CIFAR100_DIR")
    assert expand_env("${SSAL_CIFAR100_DIR:-${SSAL_DATA}/cifar100}") == f"{tmp_path}/d/cifar100"
    monkeypatch.setenv("LOOP", "${LOOP}")  # a value that names itself is not expanded forever
    assert expand_env("${LOOP}") == "${LOOP}"
    cfg = load_config(REPO / "configs" / "demo.yaml", ["data.name=cifar100", "data.root=''"])
    assert cfg.data.root == str(tmp_path / "d" / "cifar100") and cfg.data.download is True


def test_every_shipped_config_uses_the_data_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("SSAL_CIFAR100_DIR", "SSAL_TINYIMAGENET_DIR", "SSAL_IMAGENET_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SSAL_DATA", str(tmp_path))
    configs = sorted((REPO / "configs").glob("*.yaml"))
    roots = {p.name: load_config(p).data.root for p in configs}
    for name, root in roots.items():
        assert root == "" or Path(root).parent == tmp_path, f"{name}: {root}"
    assert roots["cifar100_fast.yaml"] == str(tmp_path / "cifar100")
    assert roots["table2_tinyimagenet_baselines.yaml"] == str(tmp_path / "tinyimagenet")
    assert roots["table4_imagenet_resnet50.yaml"] == str(tmp_path / "imagenet")
    shipped = [REPO / "README.md", *configs]
    for folder in ("src", "docs", "benchmarks", "examples"):
        shipped += [p for p in (REPO / folder).rglob("*") if p.suffix in {".py", ".md", ".yaml", ".sh", ".txt"}]
    assert len(shipped) > 80
    for path in shipped:
        assert "shared/data" not in path.read_text(encoding="utf-8"), path


def test_fresh_machine_trains_a_shipped_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No data and no environment but the data folder: the shipped config downloads CIFAR-100 once and trains."""
    body = _cifar_archive(tmp_path)
    net = _serve(monkeypatch, FakeNetwork(body), md5_of=body)
    monkeypatch.delenv("SSAL_CIFAR100_DIR", raising=False)
    monkeypatch.setenv("SSAL_DATA", str(tmp_path / "data"))
    argv = ["train", "--config", str(REPO / "configs" / "cifar100_mini.yaml"), "ssal.branches=[]", "trainer.epochs=1",
            "schedule.peak_epoch=0.5", f"run_dir={tmp_path / 'run'}"]  # fmt: skip
    with caplog.at_level("INFO"):
        assert main(argv) == 0
    assert net.urls[-1] == "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    root = tmp_path / "data" / "cifar100"
    assert _left(root) == ["cifar-100-python"]  # the archive and the temporary folder are gone
    assert sorted(p.name for p in (root / "cifar-100-python").iterdir()) == ["meta", "test", "train"]
    lines = [r.getMessage() for r in caplog.records if "download" in r.getMessage()]
    assert lines == [f"CIFAR-100: downloading {net.urls[-1]} to {root / 'cifar-100-python'}"]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    calls = len(net.urls)
    assert main([*argv[:-1], f"run_dir={tmp_path / 'run2'}"]) == 0
    assert len(net.urls) == calls  # the second run finds the data: no download


def test_mini_subset_is_the_first_images_of_each_class(tmp_path: Path) -> None:
    _write_official(tmp_path / "cifar-100-python", n=700)
    full = load_arrays("cifar100", tmp_path, "train")
    mini = load_arrays("cifar100_mini", tmp_path, "train")
    assert mini.name == "cifar100_mini" and mini.images.shape[0] == 100 * 7
    assert mini.labels.tolist() == sorted(full.labels.tolist())
    assert torch.equal(mini.images[:7], full.images[::100][:7])  # class 0: images 0, 100, ..., 600
    assert torch.equal(mini_subset(full, 2).labels, torch.arange(100).repeat_interleave(2))
    assert load_arrays("cifar100_mini", tmp_path, "test").images.shape[0] == 500


@pytest.mark.parametrize("error", [ConnectionResetError(104, "Connection reset by peer"), KeyboardInterrupt()])
def test_interrupted_download_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error) -> None:
    body = _cifar_archive(tmp_path)
    _serve(monkeypatch, FakeNetwork(body, fail_at=len(body) // 2, error=error), md5_of=body)
    root = tmp_path / "data"
    expected = KeyboardInterrupt if isinstance(error, KeyboardInterrupt) else SSALError
    with pytest.raises(expected) as info:
        load_arrays("cifar100", root, "train", download=True)
    assert _left(root) == []
    if expected is SSALError:
        msg = str(info.value)
        assert "download failed (ConnectionResetError" in msg and "\n" not in msg
        assert f"unpack it into {root}" in msg and "cifar-100-python.tar.gz" in msg
    _serve(monkeypatch, FakeNetwork(body), md5_of=body)  # the next try starts afresh and succeeds
    assert load_arrays("cifar100", root, "train", download=True).images.shape[0] == 300
    assert _left(root) == ["cifar-100-python"]


def test_stale_temporary_folder_of_a_killed_download_is_removed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    body = _cifar_archive(tmp_path)
    _serve(monkeypatch, FakeNetwork(body), md5_of=body)
    (tmp_path / "data" / ".ssal-download-old" / "unpacked").mkdir(parents=True)
    assert download_cifar100(tmp_path / "data") == tmp_path / "data" / "cifar-100-python"
    assert _left(tmp_path / "data") == ["cifar-100-python"]


def test_corrupt_archives(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    body = _cifar_archive(tmp_path)
    _serve(monkeypatch, FakeNetwork(body[:-100] + b"x" * 100), md5_of=body)  # damaged in transit: MD5 differs
    with pytest.raises(SSALError, match="download of .*cifar-100-python.tar.gz is corrupt") as info:
        download_cifar100(tmp_path / "a")
    assert "\n" not in str(info.value) and _left(tmp_path / "a") == []
    garbage = b"\x1f\x8b\x08 not really gzip" * 50  # the checksum matches, the archive is broken
    _serve(monkeypatch, FakeNetwork(garbage), md5_of=garbage)
    with pytest.raises(SSALError, match="cannot unpack cifar-100-python.tar.gz"):
        download_cifar100(tmp_path / "b")
    assert _left(tmp_path / "b") == []
    (tmp_path / "other" / "cifar-100-python").mkdir(parents=True)  # an archive without the data files
    (tmp_path / "other" / "cifar-100-python" / "readme").write_text("x")
    wrong = _tar_gz(tmp_path / "other" / "cifar-100-python")
    _serve(monkeypatch, FakeNetwork(wrong), md5_of=wrong)
    with pytest.raises(SSALError, match="lacks train, test or meta"):
        download_cifar100(tmp_path / "c")
    assert _left(tmp_path / "c") == []


def test_offline_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    net = _serve(monkeypatch, FakeNetwork(None))
    monkeypatch.delenv("SSAL_CIFAR100_DIR", raising=False)
    monkeypatch.setenv("SSAL_DATA", str(tmp_path / "data"))
    argv = ["train", "--config", str(REPO / "configs" / "cifar100_fast.yaml"), f"run_dir={tmp_path / 'run'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    root = tmp_path / "data" / "cifar100"
    assert err == [
        f"ssal train: error: CIFAR-100: no data in {root} and the download failed (URLError: [Errno -2] Name or "
        f"service not known); download {net.urls[0]} and unpack it into {root} (giving {root}/cifar-100-python)"
    ]
    assert main([*argv, "data.download=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ssal train: error: cifar100: data folder {root} has no CIFAR-100; set data.download=true")
    assert len(net.urls) == 1 and not (tmp_path / "run" / "checkpoints").exists()  # no network: one try
    _write_official(tmp_path / "here" / "cifar-100-python", n=300)  # data in place: no network needed
    assert load_arrays("cifar100", tmp_path / "here", "test", download=True).images.shape[0] == 300
    assert len(net.urls) == 1


def test_tinyimagenet_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ssal.data import tinyimagenet

    _write_tiny(tmp_path / "src" / "tiny-imagenet-200")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted((tmp_path / "src").rglob("*")):
            z.write(p, p.relative_to(tmp_path / "src"))
    body = buf.getvalue()
    net = _serve(monkeypatch, FakeNetwork(body))
    archive = tinyimagenet.ARCHIVE
    with pytest.raises(SSALError, match="is corrupt"):  # the official MD5 is not that of the fake archive
        download_tinyimagenet(tmp_path / "t")
    fake = type(archive)(archive.name, archive.url, archive.filename, hashlib.md5(body).hexdigest(), archive.folder)
    monkeypatch.setattr(tinyimagenet, "ARCHIVE", fake)
    test = load_arrays("tinyimagenet", tmp_path / "t", "test", download=True)
    assert net.urls[-1] == "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
    assert test.labels.tolist() == [1, 2] and _left(tmp_path / "t") == ["tiny-imagenet-200"]
    assert np.array_equal(load_arrays("tinyimagenet", tmp_path / "t", "train").labels.numpy(), [0, 0, 1, 1, 2, 2])
