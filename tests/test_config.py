"""Config loading: YAML, base includes, dotted overrides, variants, validation, and every file in configs/."""

from __future__ import annotations

from pathlib import Path

import pytest

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
        ({"ssal": {"branches": [{"at": "g2", "k": 2}], "eta": [0.5, 0.5]}}, "ssal.eta"),
        ({"ssal": {"branches": [{"at": "g2", "k": 2}], "aux_weights": [0.5, 0.5]}}, "ssal.aux_weights"),
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


def test_configs_demo_is_the_packaged_demo() -> None:
    from ssal.cli.demo import DEMO_CONFIG, DEMO_FILE

    assert (REPO / "configs" / "demo.yaml").resolve() == DEMO_FILE.resolve()  # one file, not a copy
    assert DEMO_CONFIG["data"]["name"] == "digits" and len(DEMO_CONFIG["ssal"]["branches"]) == 2


def test_list_elements_by_index_in_overrides_and_variants() -> None:
    raw = {
        "ssal": {"branches": [{"at": "g2", "k": 4, "head": "tiny_auxnet1"}, {"at": "g3", "k": 5}]},
        "variants": {"k10": {"ssal.branches.1.k": 10, "ssal.branches.0.at": "g1"}},
    }
    cfg = resolve_raw(raw, "k10", parse_overrides(["ssal.branches.0.k=3"]))
    assert cfg.ssal.branches == [{"at": "g1", "k": 3, "head": "tiny_auxnet1"}, {"at": "g3", "k": 10}]
    assert raw["ssal"]["branches"][0] == {"at": "g2", "k": 4, "head": "tiny_auxnet1"}  # the raw dict is not changed
    whole = resolve_raw(raw, None, parse_overrides(["ssal.branches.1={at: g4, k: 2}"]))
    assert whole.ssal.branches[1] == {"at": "g4", "k": 2}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ssal.branches.2.k=3", "ssal.branches has 2 element(s); '2' is not an index in [0, 2)"),
        ("ssal.branches.-1.k=3", "'-1' is not an index"),
        ("ssal.branches.first.k=3", "'first' is not an index"),
        ("optim.0=3", "optim is not a list (index 0)"),
        ("optim.lr.0=3", "optim.lr is 0.1, not a section or a list"),
        ("schedule.milestones.0=3", "schedule.milestones is not set, so not a list"),
    ],
)
def test_bad_index_overrides_name_the_key(override: str, message: str) -> None:
    raw = {"optim": {"lr": 0.1}, "ssal": {"branches": [{"at": "g2", "k": 4}, {"at": "g3", "k": 5}]}}
    with pytest.raises(SSALError) as e:
        resolve_raw(raw, None, parse_overrides([override]))
    assert message in str(e.value) and str(e.value).startswith(f"override {override.split('=')[0]}:")


def test_paper_auxnets_by_name_build_the_same_heads() -> None:
    from ssal.heads import AUXNETS, parse_head

    assert parse_head("wrn_auxnet1") == parse_head(AUXNETS["wrn_auxnet1"]) == AUXNETS["wrn_auxnet1"].split("-")
    with pytest.raises(SSALError, match="unknown head token 'wrn_auxnet9'"):
        parse_head("wrn_auxnet9")


def test_scientific_notation_without_dot_is_a_float() -> None:
    cfg = resolve_raw({}, None, parse_overrides(["optim.weight_decay=5e-4", "optim.lr=1E2"]))
    assert cfg.optim.weight_decay == 5e-4 and cfg.optim.lr == 100.0
    with pytest.raises(SSALError, match="optim.lr"):
        resolve_raw({}, None, {"optim.lr": "5e"})


@pytest.mark.parametrize(
    ("override", "warning"),
    [
        ("schedule.milestones=[1]", "schedule.milestones is used by schedule.name=step only; ignored with triangular"),
        ("schedule.warmup_epochs=1", "schedule.warmup_epochs is not used by schedule.name=triangular"),
        ("ssal.regroup_every=1", "ssal.regroup_every is used by ssal.groupings=online / weights only"),
        ("model.mean=[0.5,0.5,0.5]", "model.mean / model.std are ignored: data.normalize is false"),
    ],
)
def test_settings_without_effect_are_named_in_a_warning(override: str, warning: str, caplog) -> None:
    from ssal.cli import main

    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    args = ["train", "--config", str(demo), "--dry-run", override, "model.std=[0.2,0.2,0.2]", "data.normalize=false"]
    args = args if override.startswith("model.") else args[:-2]
    with caplog.at_level("WARNING"):
        assert main(args) == 0
    warnings = [r.message for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith(f"demo: {warning}"), warnings


def test_step_milestones_after_the_last_epoch_are_named_in_a_warning() -> None:
    from ssal.config import ignored_settings

    cfg = resolve_raw({}, None, parse_overrides(["schedule.name=step", "schedule.milestones=[3, 20, 30]"]))
    assert ignored_settings(cfg) == ["schedule.milestones [20.0, 30.0] lie at or after the end of training (20 epochs)"]
    cfg = resolve_raw({}, None, parse_overrides(["schedule.name=step", "schedule.milestones=[3, 19.5]"]))
    assert ignored_settings(cfg) == []
