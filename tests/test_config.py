"""Config loading: YAML, base includes, dotted overrides, variants, validation, and every file in configs/."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ssal.config import (
    Config,
    config_from_dict,
    load_config,
    parse_overrides,
    read_yaml,
    resolve_raw,
    save_config,
    variant_names,
)
from ssal.errors import SSALError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_defaults_and_types() -> None:
    cfg = config_from_dict({"optim": {"lr": 1}, "trainer": {"precision": 32}})
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == 1.0
    assert cfg.trainer.precision == "32"
    assert cfg.run_dir == str(Path("runs") / "run")
    assert not cfg.has_branches
    assert config_from_dict({"ssal": {"branches": "paper"}}).has_branches


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"optim": {"lrr": 0.1}}, "optim.lrr"),
        ({"bogus": 1}, "bogus"),
        ({"optim": {"lr": "fast"}}, "optim.lr"),
        ({"optim": {"lr": -1}}, "optim.lr"),
        ({"trainer": {"precision": "64"}}, "trainer.precision"),
        ({"schedule": {"name": "linear"}}, "schedule.name"),
        ({"schedule": {"peak_epoch": 30}, "trainer": {"epochs": 20}}, "schedule.peak_epoch"),
        ({"ssal": {"criterion": "merge"}}, "ssal.criterion"),
        ({"ssal": {"eta": 1.5}}, "ssal.eta"),
        ({"ssal": {"branches": "all"}}, "ssal.branches"),
        ({"data": {"name": "mnist"}}, "data.name"),
        ({"data": {"batch_size": True}}, "data.batch_size"),
        ({"trainer": {"devices": "two"}}, "trainer.devices"),
        ({"trainer": {"limit_train_batches": 1.5}}, "trainer.limit_train_batches"),
        ({"trainer": {"limit_train_batches": 0}}, "trainer.limit_train_batches"),
    ],
)
def test_bad_keys_and_values_name_the_key(raw: dict, needle: str) -> None:
    with pytest.raises(SSALError, match=needle.replace(".", r"\.")):
        config_from_dict(raw)


def test_overrides_are_yaml_and_dotted() -> None:
    ov = parse_overrides(["optim.lr=0.5", "ssal.branches=[{at: g2, k: 4}]", "name=x", "trainer.devices=auto"])
    cfg = resolve_raw({}, None, ov)
    assert cfg.optim.lr == 0.5 and cfg.name == "x" and cfg.trainer.devices == "auto"
    assert cfg.ssal.branches == [{"at": "g2", "k": 4}]
    with pytest.raises(SSALError, match="key=value"):
        parse_overrides(["optim.lr"])
    with pytest.raises(SSALError, match="optim.nope"):
        resolve_raw({}, None, {"optim.nope": 1})


def test_variants_and_base_include(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("name: b\noptim: {lr: 0.2, momentum: 0.8}\n")
    (tmp_path / "top.yaml").write_text(
        "base: base.yaml\noptim: {lr: 0.3}\nvariants:\n  a: {optim.momentum: 0.5}\n  b: {ssal.branches: paper}\n"
    )
    raw = read_yaml(tmp_path / "top.yaml")
    assert variant_names(raw) == ["a", "b"]
    base = resolve_raw(raw)
    assert (base.optim.lr, base.optim.momentum, base.name) == (0.3, 0.8, "b")
    a = load_config(tmp_path / "top.yaml", ["optim.lr=0.4"], variant="a")
    assert (a.optim.lr, a.optim.momentum, a.name, a.variant) == (0.4, 0.5, "b_a", "a")
    assert a.run_dir == str(Path("runs") / "b_a")
    with pytest.raises(SSALError, match="unknown variant"):
        load_config(tmp_path / "top.yaml", variant="zz")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(SSALError, match="not found"):
        read_yaml(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(SSALError, match="not valid YAML"):
        read_yaml(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(SSALError, match="mapping"):
        read_yaml(tmp_path / "list.yaml")
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(SSALError, match="circular"):
        read_yaml(tmp_path / "loop.yaml")


def test_env_expansion_in_data_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSAL_TEST_ROOT", "/data/x")
    assert config_from_dict({"data": {"root": "${SSAL_TEST_ROOT:-/y}"}}).data.root == "/data/x"
    monkeypatch.delenv("SSAL_TEST_ROOT")
    assert config_from_dict({"data": {"root": "${SSAL_TEST_ROOT:-/y}"}}).data.root == "/y"


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = resolve_raw({"ssal": {"branches": "paper", "eta": [0.3, 0.4]}, "model": {"options": {"width": 8}}})
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert isinstance(again, Config)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_resolves(path: Path) -> None:
    raw = read_yaml(path)
    for v in [None, *variant_names(raw)]:
        cfg = resolve_raw(raw, v)
        assert cfg.trainer.epochs >= 1
        if cfg.schedule.name == "triangular":
            assert cfg.schedule.peak_epoch < cfg.trainer.epochs


def test_demo_yaml_matches_embedded_demo() -> None:
    from ssal.cli.demo import DEMO_CONFIG

    assert yaml.safe_load((REPO / "configs" / "demo.yaml").read_text()) == DEMO_CONFIG


def test_scientific_notation_without_dot_is_a_float() -> None:
    cfg = resolve_raw({}, None, parse_overrides(["optim.weight_decay=5e-4", "optim.lr=1E2"]))
    assert cfg.optim.weight_decay == 5e-4 and cfg.optim.lr == 100.0
    with pytest.raises(SSALError, match="optim.lr"):
        resolve_raw({}, None, {"optim.lr": "5e"})
