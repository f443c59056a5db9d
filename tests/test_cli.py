"""The command line end to end: demo, pipeline, evaluate, confusion, dry runs of every config, and bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from ssal.cli import main
from ssal.config import read_yaml, resolve_raw, variant_names
from ssal.grouping import random_grouping
from ssal.runs import read_metrics

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "configs" / "cifar100_mini.yaml"
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def _numbers(text: str) -> list[float]:
    import re

    return [float(x) for x in re.findall(r"\|\s*(\d+\.\d+)\s*(?=\|)", text)]


def test_demo_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "trainer.epochs=3", "schedule.peak_epoch=1"]) == 0
    report = (out / "report.md").read_text()
    assert "| baseline |" in report and "| ssal |" in report and "val_accuracy.png" in report
    accs = _numbers(report)
    assert accs and all(0.0 <= a <= 100.0 for a in accs)
    assert max(accs) > 50.0  # digits is easy: a trained small CNN is far above chance (10%)
    rows = read_metrics(out / "metrics.csv")
    assert {r["run"] for r in rows} == {"baseline", "ssal"}
    assert [r["epoch"] for r in rows if r["run"] == "ssal"] == ["1", "2", "3"]
    last = {r["run"]: float(r["f_top1"]) for r in rows if r["epoch"] == "3"}
    assert min(last.values()) > 50.0  # both runs learned (chance is 10 %)
    assert (out / "val_accuracy.png").stat().st_size > 1000
    assert (out / "baseline" / "confusion.npy").is_file()
    g = json.loads((out / "ssal" / "groupings" / "g1.json").read_text())
    assert g["k"] == 4 and g["criterion"] == "join"
    assert "report:" in capsys.readouterr().out


def test_pipeline_without_a_baseline_when_the_groups_need_none(tmp_path: Path) -> None:
    out = tmp_path / "nb"
    args = ["demo", "--out", str(out), "ssal.groupings=random", "pipeline.baseline=false", "trainer.epochs=2"]
    assert main([*args, "schedule.peak_epoch=1", "trainer.limit_train_batches=0.3"]) == 0
    assert not (out / "baseline").exists()
    assert {r["run"] for r in read_metrics(out / "metrics.csv")} == {"ssal"}


def test_pipeline_does_not_skip_a_finished_run_of_another_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "p"
    args = ["demo", "--out", str(out), "ssal.groupings=random", "pipeline.baseline=false", "trainer.epochs=1"]
    args += ["schedule.name=constant", "trainer.limit_train_batches=0.3"]
    assert main(args) == 0
    assert main(args) == 0  # the same config: the finished run is skipped
    report = (out / "report.md").read_text()
    _fails_cleanly([*args, "model.options={width: 8}"], capsys, "holds a run of another config (model differ)")
    assert (out / "report.md").read_text() == report


def test_pipeline_checks_weights_per_branch_before_the_baseline(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "p"
    _fails_cleanly(["demo", "--out", str(out), "ssal.aux_weights=[0.5]"], capsys, "ssal.aux_weights: has 1 values")
    assert not out.exists()  # not after training the baseline
    dry = ["train", "--config", str(MINI), "--dry-run", "ssal.branches=paper"]
    _fails_cleanly([*dry, "ssal.eta=[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]"], capsys, "eta values given for")


def test_pipeline_names_the_ssal_confusion_it_replaces(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ssal.config import resolve_raw
    from ssal.pipeline import _ssal_configs

    raw = read_yaml(REPO / "configs" / "demo.yaml")
    conf = tmp_path / "baseline" / "confusion.npy"
    over = {"ssal.confusion": "mine.npy"}
    with caplog.at_level("WARNING"):
        cfgs = _ssal_configs(raw, over, resolve_raw(raw, None, over), tmp_path, conf)
    assert [c.ssal.confusion for c in cfgs] == [str(conf)]
    assert "ssal.confusion=mine.npy is replaced by the pipeline's baseline confusion matrix" in caplog.text


def test_evaluate_a_baseline_on_its_validation_split(tmp_path: Path) -> None:
    run = tmp_path / "b"
    args = ["train", "--config", str(REPO / "configs" / "demo.yaml"), "ssal.branches=[]", "trainer.epochs=2"]
    assert main([*args, "schedule.peak_epoch=1", "trainer.limit_train_batches=0.3", f"run_dir={run}"]) == 0
    assert main(["evaluate", str(run), "--split", "val"]) == 0
    ev = json.loads((run / "eval_val.json").read_text())
    assert ev["split"] == "val" and ev["num_samples"] == 287  # the held-out 20 % of digits' 1,437 training images


def test_lc_is_not_scored_on_the_split_it_is_fitted_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "s"
    args = ["train", "--config", str(REPO / "configs" / "demo.yaml"), "ssal.groupings=random", "trainer.epochs=1"]
    assert main([*args, "schedule.name=constant", "trainer.limit_train_batches=0.3", f"run_dir={run}"]) == 0
    assert main(["evaluate", str(run)]) == 0
    assert json.loads((run / "eval.json").read_text())["lc_top1"] is not None  # fitted on val, scored on test
    with caplog.at_level("WARNING"):
        assert main(["evaluate", str(run), "--split", "val"]) == 0
    ev = json.loads((run / "eval_val.json").read_text())
    assert ev["lc_top1"] is None and ev["jp_top1"] is not None
    assert "+LC and +TS are fitted on the validation split, so they are not reported on it" in caplog.text
    assert "validation images for 10 classes" not in caplog.text  # 287 held-out images: enough for +LC


def test_lc_on_a_tiny_validation_split_is_flagged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "s"
    args = ["train", "--config", str(REPO / "configs" / "demo.yaml"), "ssal.groupings=random", "trainer.epochs=1"]
    assert main([*args, "data.val_fraction=0.03", "schedule.name=constant", f"run_dir={run}"]) == 0
    with caplog.at_level("WARNING"):
        assert main(["evaluate", str(run)]) == 0
    assert "+LC is fitted on 40 validation images for 10 classes (fewer than 10 per class)" in caplog.text


def test_pipeline_on_cifar100_mini(cifar100_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "pipe"
    args = ["pipeline", "--config", str(MINI), "--out", str(out), f"data.root={cifar100_dir}"]
    assert main([*args, "trainer.epochs=1", "schedule.name=constant"]) == 0
    conf = np.load(out / "baseline" / "confusion.npy")
    assert conf.shape == (100, 100) and conf.sum() == 400  # the held-out 20 % of 2,000
    assert (out / "baseline" / "confusion.png").is_file()
    ev = json.loads((out / "ssal" / "eval.json").read_text())
    assert ev["num_samples"] == 500 and ev["lc_fitted_on"] == "val"
    for k in ("tr_top1", "jp_top1", "lc_top1", "tr_top5", "jp_top5", "lc_top5"):
        assert 0.0 <= ev[k] <= 100.0
    assert set(ev["group_acc"]) == {"g1", "g2"}
    assert ev["params"]["branches"] > 0 and ev["params"]["total"] == ev["params"]["backbone"] + ev["params"]["branches"]
    # evaluate and confusion on the SSAL run directly
    capsys.readouterr()
    assert main(["evaluate", str(out / "ssal"), "--checkpoint", "last"]) == 0
    printed = capsys.readouterr().out
    assert "+TR" in printed and "+JP" in printed and "+LC" in printed and "Parameters:" in printed
    assert main(["confusion", str(out / "ssal"), "--split", "test"]) == 0
    # a released run (config, groupings, one checkpoint) evaluates elsewhere, with the data at --data-root
    rel = tmp_path / "release" / "ssal"
    shutil.copytree(out / "ssal" / "groupings", rel / "groupings")
    shutil.copy(out / "ssal" / "config.yaml", rel / "config.yaml")
    (rel / "checkpoints").mkdir()
    shutil.copy(out / "ssal" / "checkpoints" / "last.ckpt", rel / "checkpoints" / "best.ckpt")
    nowhere = ["--data-root", str(tmp_path / "nowhere")]
    _fails_cleanly(["evaluate", str(rel), *nowhere], capsys, "nowhere")
    _fails_cleanly(["confusion", str(rel), *nowhere], capsys, "nowhere")
    _fails_cleanly(["attack", str(rel), "--method", "fgsm", "--eps", "0", "--out", str(tmp_path / "a"), *nowhere],
                   capsys, "nowhere")  # fmt: skip
    assert main(["confusion", str(rel), "--split", "test", "--data-root", str(cifar100_dir)]) == 0
    assert np.array_equal(np.load(rel / "confusion_test.npy"), np.load(out / "ssal" / "confusion_test.npy"))
    assert main(["evaluate", str(rel), "--data-root", str(cifar100_dir)]) == 0
    released, original = (json.loads((d / "eval.json").read_text()) for d in (rel, out / "ssal"))
    assert released["tr_top1"] == original["tr_top1"] and released["jp_top1"] == original["jp_top1"]
    assert np.load(out / "ssal" / "confusion_test.npy").sum() == 500
    # re-running skips the finished runs
    assert main([*args, "trainer.epochs=1", "schedule.name=constant"]) == 0
    assert len(read_metrics(out / "ssal" / "metrics.csv")) == 1


def test_pipeline_on_an_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 3)):
        for c in range(4):
            d = tmp_path / "mydata" / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray((rng.random((30, 40, 3)) * 60 + 50 * c).astype(np.uint8)).save(d / f"{i}.png")
    cfg = tmp_path / "my.yaml"
    cfg.write_text(
        f"base: {REPO / 'configs' / 'cifar100_recipe.yaml'}\nname: mydata\n"
        f"data: {{name: folder, root: {tmp_path / 'mydata'}, batch_size: 8, eval_batch_size: 16, workers: 0}}\n"
        "model: {name: small_cnn, options: {width: 4}}\n"
        "ssal: {branches: [{at: g3, k: 2, head: gap}], eta: 0.5, aux_weights: 1.0}\n"
        "trainer: {epochs: 1, threads: 1, precision: 32}\nschedule: {name: constant}\n"
    )
    assert main(["pipeline", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| baseline |" in report and "| ssal | 2 join |" in report
    ev = json.loads((tmp_path / "out" / "ssal" / "eval.json").read_text())
    assert ev["num_samples"] == 12 and ev["group_acc"]
    # no test/ folder: val/ is the test set, and validation, confusion and +LC use a held-out part of train/
    assert ev["lc_fitted_on"] == "val"
    assert np.load(tmp_path / "out" / "baseline" / "confusion.npy").sum() == 4  # round(0.1 x 8) = 1 image per class


def test_pipeline_report_names_the_split_lc_is_fitted_on(tmp_path: Path) -> None:
    from ssal.config import config_from_dict
    from ssal.pipeline import _lc_split

    for split in ("train", "val", "test"):
        (tmp_path / split).mkdir()
    folder = {"name": "folder", "root": str(tmp_path), "val_fraction": 0.1}
    assert _lc_split(config_from_dict({"data": folder})).endswith("validation split (val/)")  # not 0.1 of train
    (tmp_path / "test").rmdir()
    assert _lc_split(config_from_dict({"data": folder})).endswith("(0.1 of train)")
    assert "not reported" in _lc_split(config_from_dict({"data": {**folder, "val_fraction": 0.0}}))
    assert _lc_split(config_from_dict({"data": {"name": "digits", "val_fraction": 0.2}})).endswith("(0.2 of train)")


def _dry_run_cases() -> list[tuple[Path, str | None]]:
    cases = []
    for path in CONFIGS:
        raw = read_yaml(path)
        seen = set()
        for v in [None, *variant_names(raw)]:
            cfg = resolve_raw(raw, v)
            key = (cfg.model.name, json.dumps(cfg.model.options), json.dumps(cfg.ssal.branches), cfg.data.name)
            if key not in seen:  # build each distinct model once
                seen.add(key)
                cases.append((path, v))
    return cases


@pytest.mark.parametrize(("path", "variant"), _dry_run_cases(), ids=lambda x: getattr(x, "name", str(x)))
def test_every_config_builds_in_a_dry_run(path: Path, variant: str | None, capsys: pytest.CaptureFixture) -> None:
    args = ["train", "--config", str(path), "--dry-run"] + (["--variant", variant] if variant else [])
    assert main(args) == 0
    assert "config OK" in capsys.readouterr().out


# --- bad inputs: one line on stderr, exit code 2, no traceback ---------------------------------------------------
def _fails_cleanly(args: list[str], capsys: pytest.CaptureFixture, needle: str) -> None:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith(f"ssal {args[0]}: error:") and needle in err[-1], err


def test_bad_config_key_and_value(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _fails_cleanly(["train", "--config", str(MINI), "optim.lrr=1"], capsys, "optim.lrr")
    _fails_cleanly(["train", "--config", str(MINI), "trainer.epochs=0"], capsys, "trainer.epochs")
    _fails_cleanly(["train", "--config", str(tmp_path / "nope.yaml")], capsys, "not found")
    _fails_cleanly(["train", "--config", str(MINI), "--variant", "x"], capsys, "unknown variant")


def test_missing_or_corrupt_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["train", "--config", str(MINI), f"run_dir={tmp_path / 'r'}"]
    _fails_cleanly([*base, f"data.root={tmp_path / 'missing'}"], capsys, "missing")
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "mini_train.npz").write_bytes(b"garbage")
    (bad / "meta.json").write_text("{}")
    _fails_cleanly([*base, f"data.root={bad}"], capsys, "corrupt")


def test_wrong_array_shape(cifar100_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    d = tmp_path / "shape"
    d.mkdir()
    (d / "meta.json").write_text((cifar100_dir / "meta.json").read_text())
    np.savez(
        d / "mini_train.npz",
        images=np.zeros((10, 32, 32), np.uint8),
        fine_labels=np.zeros(10, np.int64),
        coarse_labels=np.zeros(10, np.int64),
    )
    _fails_cleanly(
        ["train", "--config", str(MINI), f"data.root={d}", f"run_dir={tmp_path / 'r'}"], capsys, "(10, 32, 32)"
    )


def test_grouping_with_wrong_class_count(cifar100_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    g1, g2 = tmp_path / "g1.json", tmp_path / "g2.json"
    random_grouping(10, 2).save(g1)
    random_grouping(100, 20).save(g2)
    args = [
        "train",
        "--config",
        str(MINI),
        f"data.root={cifar100_dir}",
        f"run_dir={tmp_path / 'r'}",
        f"ssal.groupings=[{g1}, {g2}]",
    ]
    _fails_cleanly(args, capsys, "10 classes")


def test_corrupt_checkpoint(cifar100_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"\x00" * 100)
    _fails_cleanly(["evaluate", str(run), "--checkpoint", "last"], capsys, "checkpoint")
    args = ["train", "--config", str(MINI), f"data.root={cifar100_dir}", f"run_dir={run}", "--resume"]
    _fails_cleanly(args, capsys, "checkpoint")
    _fails_cleanly(["evaluate", str(tmp_path / "no_run")], capsys, "not found")


def test_overrides_may_follow_an_option(capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--config", str(MINI), "optim.lr=0.5", "--print-config", "trainer.epochs=3"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["optim"]["lr"] == 0.5 and cfg["trainer"]["epochs"] == 3
    with pytest.raises(SystemExit) as e:  # anything else left over is still argparse's error
        main(["train", "--config", str(MINI), "optim.lr=0.5", "--print-config", "--bogus"])
    assert e.value.code == 2 and "--bogus" in capsys.readouterr().err


def test_print_config_shows_the_resolved_config(capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--config", str(MINI), "--print-config", "optim.lr=0.5"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["optim"]["lr"] == 0.5 and cfg["model"]["name"] == "small_cnn"


def test_evaluate_flags_a_best_checkpoint_chosen_on_the_test_split(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [
        "train",
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "data.val_fraction=0",
        "ssal.groupings=random",
        "trainer.epochs=3",
    ]
    assert main([*args, f"run_dir={run}"]) == 0
    assert main(["evaluate", str(run)]) == 0  # best.ckpt: chosen on the test split it is evaluated on
    assert json.loads((run / "eval.json").read_text())["selected_on_test"] is True
    assert "chosen by accuracy on this test split" in (run / "eval.md").read_text()
    assert main(["evaluate", str(run), "--checkpoint", "last"]) == 0
    assert json.loads((run / "eval.json").read_text())["selected_on_test"] is False
    assert "chosen by accuracy" not in (run / "eval.md").read_text()
