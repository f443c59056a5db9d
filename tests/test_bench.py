"""`ssal bench` runs and reports every key (values are measured, not asserted against time goals)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ssal import bench
from ssal.hardware import resolve_precision

KEYS = (
    "engine_vs_bare",
    "ssal_step_cost",
    "branch_flop_share",
    "train_gflops_fraction_of_bf16_peak",
    "grouping_seconds_c1000_k500",
    "joint_prediction_overhead",
)


def test_flop_counts_are_consistent() -> None:
    s = bench.BenchSettings(model="small_cnn", num_classes=10, batch_size=4, precision="32", channels_last=False)
    branch = [{"at": "g2", "k": 5, "head": "conv32-gap"}]
    share = bench.branch_flop_share(s, branch)
    assert 0 < share < 5
    base, with_branch = bench.train_step_flops(s), bench.train_step_flops(s, branch)
    assert with_branch > base > 0
    assert bench.branch_flop_share(s, [{"at": "g2", "k": 5, "head": "conv64-gap"}]) > share  # wider head, more


def test_resolve_precision() -> None:
    assert resolve_precision("32") == "32-true" and resolve_precision("bf16-mixed") == "bf16-mixed"
    auto_cpu = resolve_precision("auto", "cpu")
    assert auto_cpu in ("32-true", "bf16-mixed")
    assert (auto_cpu == "bf16-mixed") == __import__("ssal.hardware").hardware.cpu_has_fast_bf16()


def test_interleaved_step_cost_sees_a_heavy_branch() -> None:
    s = bench.BenchSettings(model="small_cnn", num_classes=10, batch_size=8, precision="32", channels_last=False)
    s.steps, s.warmup = 3, 1
    heavy = [{"at": "g1", "k": 5, "head": "conv256k3-conv256k3-gap"}]
    assert bench.branch_flop_share(s, heavy) > 3
    r = bench.interleaved_step_cost(s, heavy)
    assert r["ratio"] > 1.5 and r["ssal_sec_per_step"] > r["base_sec_per_step"] > 0
    assert r["base_img_per_s"] == pytest.approx(8 / r["base_sec_per_step"])


def test_bench_config_takes_model_branches_and_batch_from_the_config(tmp_path: Path) -> None:
    from ssal.cli.bench import from_config

    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    s, branches = from_config(demo, bench.BenchSettings(), 10, None)
    assert (s.model, s.model_options, s.batch_size, s.num_classes) == ("small_cnn", {"width": 16}, 64, 10)
    assert (s.precision, s.channels_last) == ("32", False)
    assert s.input_size == (3, 16, 16)  # the digits images
    assert [b["at"] for b in branches] == ["g2", "g3"] and [b["k"] for b in branches] == [4, 5]
    assert from_config(demo, bench.BenchSettings(), 10, 8)[0].batch_size == 8
    # a 32 px model on the 16 px digits: measured at the 16 px `ssal train` feeds, not at its native 32 px
    cfg = yaml.safe_load(demo.read_text())
    cfg["model"] = {"name": "fastnet_cifar", "options": {"widths": [8, 8, 8, 8]}}
    cfg["ssal"]["branches"] = []
    (tmp_path / "fast.yaml").write_text(yaml.safe_dump(cfg))
    s, _ = from_config(tmp_path / "fast.yaml", bench.BenchSettings(batch_size=2), None, 2)
    assert s.image_size() == (3, 16, 16) and bench.BenchSettings(model="fastnet_cifar").image_size() == (3, 32, 32)
    native = bench.train_step_flops(dataclasses.replace(s, input_size=None))
    assert bench.train_step_flops(s) < native / 3
    assert from_config(demo, bench.BenchSettings(), None, None)[0].num_classes == 10  # the data set's (digits)


def test_bench_config_runs_with_its_threads_and_the_command_lines_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ssal.cli import bench as bench_cli
    from ssal.cli import build_parser

    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"base: {demo}\ntrainer: {{threads: 3, channels_last: true}}\n")
    seen: list = []

    class StopError(Exception):
        pass

    def fake_headline(s: bench.BenchSettings, branches: object = None, cfg: object = None, data: object = None) -> None:
        seen.append((torch.get_num_threads(), s.precision, s.channels_last, cfg.trainer.precision))  # type: ignore[union-attr]
        raise StopError

    monkeypatch.setattr(bench_cli, "headline", fake_headline)
    before = torch.get_num_threads()
    args = build_parser().parse_args(["bench", "--quick", "--config", str(cfg), "--precision", "bf16-mixed"])
    with pytest.raises(StopError):
        args.func(args)
    args = build_parser().parse_args(["bench", "--quick", "--config", str(cfg), "--no-channels-last"])
    with pytest.raises(StopError):
        args.func(args)
    assert seen == [(3, "bf16-mixed", True, "bf16-mixed"), (3, "32", False, "32")]
    assert torch.get_num_threads() == before


def test_train_path_compiles_both_loops_when_the_config_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from ssal.config import Config

    compiled: list = []
    monkeypatch.setattr(torch, "compile", lambda fn=None, **kw: compiled.append(fn) or fn)
    s = bench.BenchSettings(model="small_cnn", num_classes=10, batch_size=8, precision="32", channels_last=False)
    s.steps, s.warmup = 1, 1
    cfg = Config(name="bench")
    cfg.data.batch_size = 8
    r = bench.interleaved_train_path(s, (), cfg)
    assert compiled == [] and r["rounds"] == 1 and r["engine_vs_bare"] > 0
    cfg.trainer.compile = True
    r = bench.interleaved_train_path(s, (), cfg)
    assert len(compiled) == 2 and r["rounds"] == 1
    assert compiled[0].__self__ is not compiled[1].__self__  # the engine's model and the bare loop's copy


@pytest.mark.slow
def test_bench_quick_cli_writes_all_keys(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ssal",
            "bench",
            "--quick",
            "--model",
            "small_cnn",
            "--batch-size",
            "8",
            "--precision",
            "32",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(out.read_text())
    for key in KEYS:
        assert isinstance(d[key], float) and d[key] > 0, key
    assert d["engine_img_per_s"] > 0 and d["bare_img_per_s"] > 0 and d["machine"]["torch"] == torch.__version__
    assert "engine_vs_bare" in r.stdout


def test_bench_config_without_its_data_times_synthetic_images(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ssal.cli.bench import config_and_data

    cfg = tmp_path / "c.yaml"
    absent = tmp_path / "absent"
    cfg.write_text(f"data: {{name: cifar100, root: {absent}, download: false}}\nmodel: {{name: small_cnn}}\n")
    s, _, _, data = config_and_data(cfg, bench.BenchSettings(), None, None)
    assert data is None and s.num_classes == 100  # the loader is then timed on synthetic images of that size
    assert "not available" in caplog.text and "synthetic" in caplog.text
