"""trainer.loggers: CSV, TensorBoard, MLflow (a local SQLite store) and W&B (offline), and ssal evaluate's logging."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ssal.cli import main
from ssal.config import load_config
from ssal.engine.loggers import LOGGER_FILE, flat_config, mlflow_uri, run_files
from ssal.errors import SSALError
from ssal.runs import RunPaths, read_metrics

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"
FAST = ["ssal.groupings=random", "schedule.name=constant", "trainer.limit_train_batches=0.5",
        "trainer.log_every_n_steps=2"]  # fmt: skip


def _train(run: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(DEMO), f"run_dir={run}", *FAST, *extra]


def test_default_keeps_tensorboard_and_metrics_csv_is_always_written(tmp_path: Path) -> None:
    assert load_config(DEMO).trainer.loggers == ["tensorboard"]
    run = tmp_path / "none"
    assert main([*_train(run, "trainer.epochs=1", "trainer.loggers=[]")]) == 0
    assert len(read_metrics(RunPaths(run).metrics)) == 1
    assert not (run / "tb").exists() and not (run / "csv").exists() and not (run / LOGGER_FILE).exists()
    run = tmp_path / "csv"
    assert main([*_train(run, "trainer.epochs=1", "trainer.loggers=[csv, tensorboard]")]) == 0
    steps = (run / "csv" / "metrics.csv").read_text().splitlines()
    assert "train/loss" in steps[0] and "epoch/f_top1" in steps[0] and len(steps) > 3  # per step and per epoch
    assert "optim.lr: 0.1" in (run / "csv" / "hparams.yaml").read_text()
    assert any((run / "tb").iterdir()) and len(read_metrics(RunPaths(run).metrics)) == 1


def test_mlflow_store_is_local_unless_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(DEMO, [f"run_dir={tmp_path / 'runs' / 'a'}"])
    paths = RunPaths(Path(cfg.run_dir))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_uri(cfg, paths) == f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert mlflow_uri(cfg, paths) == "http://tracking:5000"
    cfg.trainer.mlflow_uri = "sqlite:///elsewhere.db"
    assert mlflow_uri(cfg, paths) == "sqlite:///elsewhere.db"


def test_bad_logger_settings_are_one_line(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    for bad, key in (("trainer.loggers=[neptune]", "trainer.loggers"), ("trainer.loggers=[csv, csv]", "loggers"),
                     ("trainer.experiment=' '", "trainer.experiment")):  # fmt: skip
        with pytest.raises(SSALError, match=key):
            load_config(DEMO, [bad])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert main([*_train(tmp_path / "r", "trainer.loggers=[wandb]"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'ssal[wandb]'" in err[0]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    assert main([*_train(tmp_path / "r", "trainer.loggers=[mlflow]"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'ssal[mlflow]'" in err[0]


def test_flat_config_has_dotted_keys_and_run_files_skip_logger_stores(tmp_path: Path) -> None:
    flat = flat_config(load_config(DEMO))
    assert flat["optim.lr"] == 0.1 and flat["data.name"] == "digits"
    assert json.loads(flat["ssal.branches"])[0]["k"] == 4 and "variant" not in flat
    for f in ("metrics.csv", "checkpoints/last.ckpt", "wandb/run.wandb", "mlruns/x", "tb/events"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x")
    got = sorted(p.relative_to(tmp_path).as_posix() for p in run_files(tmp_path))
    assert got == ["checkpoints/last.ckpt", "metrics.csv", "tb/events"]


def test_mlflow_gets_config_metrics_artefact_resume_and_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "runs" / "ml"
    args = _train(run, "trainer.loggers=[mlflow]", "trainer.experiment=ssal-test", "trainer.epochs=2")
    assert main([*args, "trainer.epochs=1"]) == 0
    ids = json.loads((run / LOGGER_FILE).read_text())["mlflow"]
    assert ids["tracking_uri"] == f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').as_posix()}"
    client = mlflow.MlflowClient(ids["tracking_uri"])
    r = client.get_run(ids["run_id"])
    assert r.data.params["optim.lr"] == "0.1" and r.data.params["data.name"] == "digits"
    assert client.get_experiment(r.info.experiment_id).name == "ssal-test"
    assert len(client.get_metric_history(r.info.run_id, "train/loss")) >= 2  # per step
    rows = read_metrics(RunPaths(run).metrics)
    assert r.data.metrics["epoch/f_top1"] == pytest.approx(float(rows[0]["f_top1"]), abs=1e-4)
    assert "val/jp_top1" in r.data.metrics
    arts = {a.path for a in client.list_artifacts(r.info.run_id, "run")}
    assert {"run/metrics.csv", "run/config.yaml", "run/checkpoints"} <= arts
    assert (tmp_path / "runs" / "mlartifacts").is_dir() and not (tmp_path / "mlruns").exists()

    assert main([*args, "--resume"]) == 0  # the same MLflow run continues
    assert json.loads((run / LOGGER_FILE).read_text())["mlflow"]["run_id"] == ids["run_id"]
    history = client.get_metric_history(ids["run_id"], "epoch/f_top1")
    assert sorted(m.step for m in history) == [1, 2]

    assert main(["evaluate", str(run)]) == 0
    report = json.loads((run / "eval.json").read_text())
    metrics = client.get_run(ids["run_id"]).data.metrics
    assert metrics["eval/tr_top1"] == pytest.approx(report["tr_top1"])
    assert metrics["eval/group_acc/g1"] == pytest.approx(report["group_acc"]["g1"])


def test_wandb_offline_gets_config_metrics_artefact_and_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")  # not in the test extra (heavy); tested where it is installed
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "")  # recorded, so restored after the test (Lightning's offline logger sets
    monkeypatch.delenv("WANDB_MODE")  # it to dryrun); unset: the default, offline
    run = tmp_path / "wb"
    assert main([*_train(run, "trainer.loggers=[wandb]", "trainer.epochs=1")]) == 0
    ids = json.loads((run / LOGGER_FILE).read_text())["wandb"]
    assert ids["mode"] == "offline" and ids["project"] == "ssal"
    logs = sorted((run / "wandb").glob(f"offline-run-*-{ids['id']}/run-{ids['id']}.wandb"))
    assert len(logs) == 1
    data = logs[0].read_bytes()  # the offline run's record log (protobuf): the keys are stored as text
    for key in (b"optim.lr", b"train/loss", b"epoch/f_top1", b"val/jp_top1", b"demo-run", b"metrics.csv"):
        assert key in data, key
    assert main(["evaluate", str(run)]) == 0
    logs = sorted((run / "wandb").glob(f"offline-run-*-{ids['id']}/run-{ids['id']}.wandb"))
    assert any(b"eval/tr_top1" in f.read_bytes() for f in logs)  # the same run id: `wandb sync` joins them


def test_pipeline_logs_each_runs_evaluation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "pipe"
    args = ["demo", "--out", str(out), *FAST, "pipeline.baseline=false", "trainer.epochs=1", "trainer.loggers=[mlflow]"]
    assert main(args) == 0
    reports = sorted(out.glob("*/eval.json"))
    assert reports
    for report in reports:
        ids = json.loads((report.parent / LOGGER_FILE).read_text())["mlflow"]
        metrics = mlflow.MlflowClient(ids["tracking_uri"]).get_run(ids["run_id"]).data.metrics
        assert metrics["eval/tr_top1"] == pytest.approx(json.loads(report.read_text())["tr_top1"])


def test_a_logger_that_fails_after_evaluation_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import ssal.engine.loggers as loggers

    pytest.importorskip("mlflow")
    (tmp_path / LOGGER_FILE).write_text(json.dumps({"mlflow": {"tracking_uri": "http://tracking:5000", "run_id": "x"}}))

    def unreachable(*args: object) -> None:
        raise ConnectionError("tracking:5000 is unreachable")

    monkeypatch.setattr(loggers, "_log_mlflow", unreachable)
    with caplog.at_level("WARNING"):
        assert loggers.log_evaluation(tmp_path, {"tr_top1": 50.0}) == []
    assert "mlflow: eval not logged (tracking:5000 is unreachable)" in caplog.text
