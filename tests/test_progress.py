"""Progress: on a terminal a per-epoch bar in images (img/s, ETA); in logs the one line per epoch only."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ssal.cli import main
from ssal.engine.trainer import ImageProgressBar

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "configs" / "demo.yaml")


def _train(tmp_path: Path, name: str, *extra: str) -> list[str]:
    return ["train", "--config", DEMO, f"run_dir={tmp_path / name}", "ssal.branches=[]", "trainer.epochs=2",
            "schedule.peak_epoch=1", *extra]  # fmt: skip


def test_terminal_shows_an_image_progress_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(_train(tmp_path, "tty")) == 0
    out = capsys.readouterr().out
    for text in ("epoch 1/2", "epoch 2/2", "img/s", "run_eta="):
        assert text in out, text
    assert "1088/1088 [" in out  # in images: 1,150 training digits (1,438 less 20 % held out) = 17 full batches of 64
    epochs = [x for x in out.replace("\r", "\n").splitlines() if x.startswith("epoch ")]
    assert epochs and all("img/s" in x and "it/s" not in x for x in epochs)
    assert main(["evaluate", str(tmp_path / "tty")]) == 0
    assert "test set:   0%|          | 0/359 [00:00<?, ?img/s]" in capsys.readouterr().err  # 359 test digits


def test_logs_get_one_line_per_epoch_and_no_bar(tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys) -> None:
    with caplog.at_level("INFO"):
        assert main(_train(tmp_path, "log")) == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split(" | ")[0] for line in lines] == ["epoch 1", "epoch 2"] and all("img/s" in x for x in lines)
    captured = capsys.readouterr()
    assert "img/s" not in captured.out + captured.err  # no bar: stderr is not a terminal here
    assert main([*_train(tmp_path, "off"), "trainer.progress_bar=false"]) == 0


def test_pipeline_shows_bars_and_progress_bar_false_hides_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    args = ["demo", "--out", str(tmp_path / "pipe"), "ssal.groupings=random", "pipeline.baseline=false",
            "trainer.epochs=2", "schedule.peak_epoch=1"]  # fmt: skip
    assert main(args) == 0
    assert "test set:" in capsys.readouterr().err
    assert main([*_train(tmp_path, "quiet"), "trainer.progress_bar=false"]) == 0
    assert main(["evaluate", str(tmp_path / "quiet")]) == 0
    captured = capsys.readouterr()
    assert "img/s" not in captured.out + captured.err


def test_run_eta_from_the_mean_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    bar = ImageProgressBar(64)
    trainer = SimpleNamespace(max_epochs=10, current_epoch=3)
    assert bar.run_eta(trainer) is None  # no epoch finished yet
    bar.epoch_seconds = [10.0, 14.0]
    assert bar.run_eta(trainer) == pytest.approx(12.0 * 6)  # epoch 4 (index 3) just ended: 6 left
    clock = iter([100.0])
    monkeypatch.setattr("ssal.engine.trainer.time.perf_counter", lambda: next(clock))
    bar._epoch_t0 = 95.0  # 5 s into epoch index 3
    assert bar.run_eta(trainer) == pytest.approx(12.0 * 7 - 5.0)
