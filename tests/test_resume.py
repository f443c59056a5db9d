"""Exact resume: a run interrupted at any point and resumed gives the metrics and weights of an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssal import engine
from ssal.config import load_config
from ssal.data import DeviceLoader
from ssal.engine import fit
from ssal.engine import trainer as engine_trainer
from ssal.runs import RunPaths, load_checkpoint, read_metrics

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"
TIMES = ("epoch_seconds", "train_img_per_s", "wall_seconds")
ARGS = ["ssal.groupings=random", "trainer.epochs=3", "schedule.peak_epoch=1", "trainer.limit_train_batches=0.5"]


class Crash(BaseException):
    """Stands for a kill at a chosen point (a BaseException, so nothing on the way catches it)."""


def _cfg(run_dir: Path):
    return load_config(DEMO, [*ARGS, f"run_dir={run_dir}"])


def _rows(run_dir: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in TIMES} for r in read_metrics(run_dir / "metrics.csv")]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("resume") / "straight"
    fit(_cfg(run))
    return run


def _crash_mid_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    step = engine.SSALTask.training_step

    def training_step(self, batch, batch_idx):  # the 4th batch of epoch 3
        if self.current_epoch == 2 and batch_idx == 3:
            raise Crash
        return step(self, batch, batch_idx)

    monkeypatch.setattr(engine.SSALTask, "training_step", training_step)


def _crash_after_row(monkeypatch: pytest.MonkeyPatch) -> None:
    write = engine_trainer.write_metrics

    def write_metrics(path, rows):  # epoch 3's row is on disk, its checkpoint is not
        write(path, rows)
        if len(rows) == 3:
            raise Crash

    monkeypatch.setattr(engine_trainer, "write_metrics", write_metrics)


def _crash_between_best_and_last(monkeypatch: pytest.MonkeyPatch) -> None:
    save = engine_trainer.AtomicCheckpointIO.save_checkpoint

    def save_checkpoint(self, checkpoint, path, storage_options=None):  # epoch 3 improved: best.ckpt written
        if Path(path).name == "last.ckpt" and len(read_metrics(Path(path).parents[1] / "metrics.csv")) == 3:
            assert Path(path).with_name("best.ckpt").stat().st_mtime_ns > Path(path).stat().st_mtime_ns
            raise Crash
        return save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(engine_trainer.AtomicCheckpointIO, "save_checkpoint", save_checkpoint)


def _straight_and_resumed(tmp_path: Path, overrides: list[str]) -> None:
    """Train straight and with a mid-epoch crash + resume; both runs' metrics rows must be the same."""

    def cfg(run: Path):
        return load_config(DEMO, [*ARGS, *overrides, f"run_dir={run}"])

    fit(cfg(tmp_path / "straight"))
    with pytest.MonkeyPatch.context() as mp:
        _crash_mid_epoch(mp)
        with pytest.raises(Crash):
            fit(cfg(tmp_path / "resumed"))
    fit(cfg(tmp_path / "resumed"), resume=True)
    assert _rows(tmp_path / "resumed") == _rows(tmp_path / "straight")


@pytest.mark.parametrize("crash", [_crash_mid_epoch, _crash_after_row, _crash_between_best_and_last])
def test_resume_after_a_crash_is_bit_identical(crash, uninterrupted: Path, tmp_path: Path) -> None:
    run = tmp_path / "resumed"
    with pytest.MonkeyPatch.context() as mp:
        crash(mp)
        with pytest.raises(Crash):
            fit(_cfg(run))
    ckpt = load_checkpoint(RunPaths(run).last)
    assert ckpt["ssal"]["epochs_done"] == 2  # stopped in epoch 3: the resumed run starts from epoch 2's state
    fit(_cfg(run), resume=True)
    assert _rows(run) == _rows(uninterrupted)
    for name in ("last", "best"):
        a, b = (_weights(RunPaths(r).checkpoints / f"{name}.ckpt") for r in (run, uninterrupted))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_every_epoch_gets_its_own_permutation_even_with_an_unused_iterator() -> None:
    """An iterator made and dropped (as Lightning does before restoring a checkpoint) does not use up an epoch."""
    from ssal.data import ImageArrays

    data = ImageArrays(torch.zeros(40, 3, 4, 4, dtype=torch.uint8), torch.arange(40) % 4, ["a", "b", "c", "d"])
    loader = DeviceLoader(data, 40, train=True, augment="none")
    iter(loader)  # made, never used
    loader.set_epoch(2)
    resumed = next(iter(loader))[1]
    fresh = DeviceLoader(data, 40, train=True, augment="none")
    labels = [next(iter(fresh))[1] for _ in range(3)]  # epochs 0, 1, 2
    assert not torch.equal(labels[0], labels[1]) and torch.equal(resumed, labels[2])


def test_resume_on_image_folder_data_with_workers_is_bit_identical(tmp_path: Path, write_tree) -> None:
    """Folder data: a per-epoch seeded sampler and worker seeds from (seed, epoch, rank, worker) make resume exact."""

    write_tree(tmp_path / "data", {"train": "abcd", "val": "abcd"}, n=5)
    extra = [f"data.root={tmp_path / 'data'}", "data.name=folder", "data.workers=1", "data.batch_size=4"]
    extra += ["ssal.branches=[{at: g3, k: 2, head: gap}]", "trainer.limit_train_batches=1.0"]

    _straight_and_resumed(tmp_path, extra)


def test_resume_keeps_the_best_score_of_a_moved_run(uninterrupted: Path, tmp_path: Path) -> None:
    """The best score comes back by value from a run directory copied elsewhere; a worse epoch then leaves best.ckpt
    alone."""
    import shutil

    run = tmp_path / "moved"
    shutil.copytree(uninterrupted, run)
    last = RunPaths(run).last
    ckpt = load_checkpoint(last)
    best = next(k for k in ckpt["callbacks"] if k.startswith("BestCheckpoint"))
    ckpt["callbacks"][best]["best_model_score"] = torch.tensor(1000.0, dtype=torch.float64)
    torch.save(ckpt, last)
    before = RunPaths(run).best.read_bytes()
    fit(load_config(DEMO, [*ARGS, "trainer.epochs=4", f"run_dir={run}"]), resume=True)
    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"] and float(rows[3]["jp_top1"]) < 1000
    assert RunPaths(run).best.read_bytes() == before
    assert load_checkpoint(RunPaths(run).last)["callbacks"][best]["best_model_score"] == 1000.0


def test_resume_with_weight_averaging_is_bit_identical(tmp_path: Path) -> None:
    # trainer.ema_decay: both the averaged weights (state_dict) and the current ones resume exactly
    _straight_and_resumed(tmp_path, ["trainer.ema_decay=0.9"])
    a, b = (load_checkpoint(RunPaths(tmp_path / r).last) for r in ("resumed", "straight"))
    for key in ("state_dict", "current_model_state"):
        assert a[key].keys() == b[key].keys() and all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key


def test_resume_with_an_optimiser_state_of_other_parameter_groups_is_one_error(uninterrupted: Path, tmp_path) -> None:
    """A checkpoint whose optimiser has other parameter groups (another code version or config) is refused with one
    line naming the checkpoint, not an internal error."""
    import shutil

    from ssal.errors import SSALError

    run = tmp_path / "other_groups"
    shutil.copytree(uninterrupted, run)
    last = RunPaths(run).last
    ckpt = load_checkpoint(last)
    opt = ckpt["optimizer_states"][0]
    opt["param_groups"] = [*opt["param_groups"], {**opt["param_groups"][0], "params": []}]
    torch.save(ckpt, last)
    with pytest.raises(SSALError, match="optimiser state does not fit"):
        fit(load_config(DEMO, [*ARGS, "trainer.epochs=4", f"run_dir={run}"]), resume=True)
    assert len(read_metrics(run / "metrics.csv")) == 3  # nothing written
