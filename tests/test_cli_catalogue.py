"""The catalogue of bad input: every case runs through the real CLI and must give exit code 2, exactly one line on
stderr (``ssal COMMAND: error: ...`` naming the problem), no traceback, no internal error, and no changed file.

Each case is (id, setup, expected text): ``setup(ws)`` prepares the workspace ``ws`` (the working directory, with a
tiny trained run in ``ws/run``) and returns the command line.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from ssal.cli import main
from ssal.grouping import random_grouping
from ssal.runs import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "configs" / "demo.yaml")
TRAIN = ["train", "--config", DEMO, "ssal.groupings=random", "trainer.epochs=2", "schedule.peak_epoch=1"]
TRAIN += ["trainer.limit_train_batches=0.3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SSAL run (digits, small_cnn, 2 branches, 2 epochs)."""
    run = tmp_path_factory.mktemp("catalogue") / "run"
    assert main([*TRAIN, f"run_dir={run}"]) == 0
    return run


def _edit_checkpoint(ws: Path, edit: Callable[[dict], None]) -> None:
    for name in ("best", "last"):
        path = ws / "run" / "checkpoints" / f"{name}.ckpt"
        ckpt = load_checkpoint(path)
        edit(ckpt)
        save_checkpoint(ckpt, path)


def _nan_weights(ckpt: dict) -> None:
    key = next(k for k, v in ckpt["state_dict"].items() if k.startswith("model.") and v.is_floating_point())
    ckpt["state_dict"][key] = torch.full_like(ckpt["state_dict"][key], float("nan"))


def _nan_backbone(ckpt: dict) -> None:
    key = next(k for k in ckpt["state_dict"] if k.startswith("model.backbone.") and k.endswith("weight"))
    ckpt["state_dict"][key] = torch.full_like(ckpt["state_dict"][key], float("nan"))


def _int_backbone(ckpt: dict) -> None:
    key = next(k for k in ckpt["state_dict"] if k.startswith("model.backbone.") and k.endswith("weight"))
    ckpt["state_dict"][key] = ckpt["state_dict"][key].long()


def _other_width(ckpt: dict) -> None:
    ckpt["ssal"]["config"]["model"]["options"] = {"width": 8}


def _empty_checkpoints(ws: Path) -> None:
    for name in ("best", "last"):
        (ws / "run" / "checkpoints" / f"{name}.ckpt").write_bytes(b"")


def _folder(ws: Path, layout: dict[str, str]) -> list[str]:
    from conftest import _write_tree as write_tree

    write_tree(ws / "data", layout)
    return [
        *TRAIN,
        "data.name=folder",
        "data.root=data",
        "data.workers=0",
        "data.batch_size=4",
        "ssal.branches=[]",
        "run_dir=out",
    ]


def _grouping_k5(ws: Path) -> list[str]:
    random_grouping(10, 5, 0).save(ws / "g5.json")
    random_grouping(10, 5, 1).save(ws / "g5b.json")
    return [*TRAIN, "ssal.groupings=[g5.json, g5b.json]", "run_dir=out"]


def _meta(key: str, value: object) -> Callable[[dict], None]:
    def edit(ckpt: dict) -> None:
        ckpt["ssal"][key] = value

    return edit


def _int_weights(ckpt: dict) -> None:
    key = next(k for k, v in ckpt["state_dict"].items() if k.startswith("model.") and v.is_floating_point())
    ckpt["state_dict"][key] = ckpt["state_dict"][key].long()


def _no_training_state(ws: Path) -> None:
    path = ws / "run" / "checkpoints" / "last.ckpt"
    ckpt = load_checkpoint(path)
    save_checkpoint({"state_dict": ckpt["state_dict"], "ssal": ckpt["ssal"]}, path)


def _huge_png(ws: Path) -> str:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    (ws / "huge.png").write_bytes(png)
    return "huge.png"


def _fifo(ws: Path) -> Path:
    os.mkfifo(ws / "pipe")
    return ws / "pipe"


_HOLDERS: list = []  # processes holding a run directory's lock for the running case


@pytest.fixture(autouse=True)
def _release_holders() -> Iterator[None]:
    yield
    from test_lock import release

    while _HOLDERS:
        release(_HOLDERS.pop())


def _live(ws: Path, folder: str, argv: list[str], command: str = "train") -> list[str]:
    """``argv`` while another process (e.g. a training) holds the lock of ``ws/folder``."""
    from test_lock import hold_lock

    _HOLDERS.append(hold_lock(ws / folder, command))
    return argv


def _files_k(ws: Path, k: int) -> str:
    """Two grouping files of ``k`` groups for the 10 digits classes (k=10: every class alone)."""
    from ssal.grouping import Grouping

    for name in ("a", "b"):
        Grouping(tuple(c % k for c in range(10)), k).save(ws / f"{name}.json")
    return "[a.json, b.json]"


def _pickled_module(ws: Path) -> str:
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), ws / "m.pt")
    return "m.pt"


def _one_pass_variant(ws: Path) -> str:
    (ws / "v.yaml").write_text(f"base: {DEMO}\nvariants:\n  r: {{ssal.groupings: random}}\n")
    return "v.yaml"


ONLINE = ["ssal.groupings=online", "ssal.group_epoch=1"]
IN_USE = "is in use by `ssal train` (pid "


CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    # ImageFolder data: classes by name from train/
    ("folder-extra-class-in-val", lambda ws: _folder(ws, {"train": "abc", "val": "abcd"}), "val has class folder(s) d"),
    ("folder-no-val", lambda ws: _folder(ws, {"train": "abc"}), "needs data/val/<class>"),
    (
        "folder-empty-class-in-train",
        lambda ws: [*_folder(ws, {"train": "ab", "val": "ab"}), (ws / "data/train/c").mkdir()][:-1],
        "data/train has class folder(s) without images: c",
    ),
    (
        "folder-empty-image",
        lambda ws: [*_folder(ws, {"train": "ab", "val": "ab"}), (ws / "data/train/a/x.png").write_bytes(b"")][:-1],
        "x.png (empty file)",
    ),
    (
        "folder-text-as-image",
        lambda ws: [*_folder(ws, {"train": "ab", "val": "ab"}), (ws / "data/val/b/y.jpg").write_text("hi")][:-1],
        "y.jpg (not an image)",
    ),
    # checkpoints
    ("evaluate-empty-ckpt", lambda ws: [_empty_checkpoints(ws), "evaluate", "run"][1:], "is an empty file"),
    ("predict-empty-ckpt", lambda ws: [_empty_checkpoints(ws), "predict", "run", "x.png"][1:], "is an empty file"),
    ("resume-empty-ckpt", lambda ws: [_empty_checkpoints(ws), *TRAIN, "run_dir=run", "--resume"][1:], "empty file"),
    ("evaluate-text-ckpt", lambda ws: ["evaluate", "run", "--checkpoint", DEMO], "corrupt or unreadable checkpoint"),
    ("evaluate-folder-ckpt", lambda ws: ["evaluate", "run", "--checkpoint", "run"], "is a folder, not a file"),
    (
        "evaluate-unsafe-ckpt",
        lambda ws: [
            torch.save({"state_dict": {}, "x": Path("p")}, ws / "u.ckpt"),
            "evaluate",
            "run",
            "--checkpoint",
            "u.ckpt",
        ][1:],
        "holds objects other than tensors",
    ),
    (
        "export-nan",
        lambda ws: [_edit_checkpoint(ws, _nan_weights), "export", "run", "--format", "torchscript", "--out", "m.pt"][
            1:
        ],
        "NaN/Inf weights",
    ),
    ("predict-nan", lambda ws: [_edit_checkpoint(ws, _nan_weights), "predict", "run", "x.png"][1:], "NaN/Inf weights"),
    ("evaluate-nan", lambda ws: [_edit_checkpoint(ws, _nan_weights), "evaluate", "run"][1:], "NaN/Inf weights"),
    ("evaluate-mismatch", lambda ws: [_edit_checkpoint(ws, _other_width), "evaluate", "run"][1:], "size mismatch"),
    # output paths
    ("export-out-is-folder", lambda ws: ["export", "run", "--format", "torchscript", "--out", "run"], "is a folder"),
    (
        "export-out-under-file",
        lambda ws: ["export", "run", "--format", "onnx", "--out", f"{DEMO}/m.onnx"],
        "is a file, not a folder",
    ),
    (
        "export-out-is-fifo",
        lambda ws: ["export", "run", "--format", "torchscript", "--out", str(_fifo(ws))],
        "not a regular file",
    ),
    ("confusion-out-is-folder", lambda ws: ["confusion", "run", "--out", "run"], "is a folder"),
    (
        "group-out-is-fifo",
        lambda ws: ["group", "--random", "10", "--k", "2", "--out", str(_fifo(ws))],
        "not a regular file",
    ),
    ("explain-out-is-file", lambda ws: ["explain", "run", "x.png", "--out", DEMO], "is a file, not a folder"),
    (
        "attack-out-is-file",
        lambda ws: ["attack", "run", "--method", "fgsm", "--eps", "1/255", "--out", DEMO],
        "is a file, not a folder",
    ),
    ("pipeline-out-is-file", lambda ws: ["pipeline", "--config", DEMO, "--out", DEMO], "is a file, not a folder"),
    ("train-run-dir-is-file", lambda ws: [*TRAIN, f"run_dir={DEMO}"], "is a file, not a folder"),
    ("train-run-dir-under-file", lambda ws: [*TRAIN, f"run_dir={DEMO}/sub"], "is a file, not a folder"),
    # settings that disagree
    ("grouping-k-disagrees", _grouping_k5, "has k=5 groups but ssal.branches[0] says k=4"),
    (
        "confusion-not-npy",
        lambda ws: [*TRAIN[:3], "ssal.groupings=confusion", f"ssal.confusion={DEMO}", "run_dir=out"],
        "not a NumPy .npy",
    ),
    # config values under their own key, devices, files
    ("val-every-0", lambda ws: [*TRAIN, "trainer.val_every=0", "--dry-run"], "config key trainer.val_every"),
    ("workers-negative", lambda ws: [*TRAIN, "data.workers=-1", "--dry-run"], "config key data.workers"),
    ("lr-inf", lambda ws: [*TRAIN, "optim.lr=.inf", "--dry-run"], "config key optim.lr"),
    ("aux-weight-negative", lambda ws: [*TRAIN, "ssal.aux_weights=-1", "--dry-run"], "config key ssal.aux_weights"),
    ("threads-negative", lambda ws: [*TRAIN, "trainer.threads=-2", "--dry-run"], "config key trainer.threads"),
    ("log-every-0", lambda ws: [*TRAIN, "trainer.log_every_n_steps=0", "--dry-run"], "trainer.log_every_n_steps"),
    (
        "config-not-utf8",
        lambda ws: [(ws / "c.yaml").write_bytes(b"name: caf\xe9\n"), "train", "--config", "c.yaml", "--dry-run"][1:],
        "is not UTF-8",
    ),
    ("accelerator-gpu-missing", lambda ws: [*TRAIN, "trainer.accelerator=gpu", "run_dir=out"], "trainer settings"),
    ("device-bad-name", lambda ws: ["evaluate", "run", "--device", "nonsense"], "is not a device"),
    ("device-cuda-missing", lambda ws: ["evaluate", "run", "--device", "cuda:7"], "--device cuda:7"),
    # readers and options the fuzz pass (tests/test_fuzz_readers.py) found wanting
    (
        "group-confusion-random-bytes",
        lambda ws: (
            [(ws / "m.npy").write_bytes(b"\x93NUMPY\x01\x00zz"), "group", "--confusion", "m.npy"][1:]
            + ["--k", "2", "--out", "g.json"]
        ),
        "cannot read confusion matrix m.npy",
    ),
    (
        "group-confusion-empty-csv",
        lambda ws: [(ws / "m.csv").write_text(""), "group", "--confusion", "m.csv", "--k", "2", "--out", "g.json"][1:],
        "must be square",
    ),
    (
        "groups-json-k-too-large",
        lambda ws: (
            [(ws / "g.json").write_text('{"assignment": [0, 1], "k": 99999999999}'), *TRAIN][1:]
            + ["ssal.groupings=[g.json, g.json]", "run_dir=out"]
        ),
        "groups have no class",
    ),
    (
        "evaluate-ckpt-bad-num-classes",
        lambda ws: [_edit_checkpoint(ws, _meta("num_classes", "ten")), "evaluate", "run"][1:],
        "num_classes must be an integer",
    ),
    (
        "evaluate-ckpt-bad-class-names",
        lambda ws: [_edit_checkpoint(ws, _meta("class_names", [1, 2])), "evaluate", "run"][1:],
        "class_names must be null or a list of 10 strings",
    ),
    (
        "evaluate-ckpt-tensor-in-config",
        lambda ws: [_edit_checkpoint(ws, _meta("config", {"seed": torch.zeros(0)})), "evaluate", "run"][1:],
        "config key seed",
    ),
    ("evaluate-ckpt-int-weights", lambda ws: [_edit_checkpoint(ws, _int_weights), "evaluate", "run"][1:], "int64"),
    (
        "resume-no-training-state",
        lambda ws: [_no_training_state(ws), *TRAIN, "run_dir=run", "--resume"][1:],
        "no training state",
    ),
    (
        "group-seed-negative",
        lambda ws: ["group", "--random", "10", "--k", "2", "--seed", "-1", "--out", "g.json"],
        "--seed",
    ),
    ("group-random-too-few", lambda ws: ["group", "--random", "-5", "--k", "2", "--out", "g.json"], "--random takes"),
    (
        "group-class-names-not-utf8",
        lambda ws: (
            [(ws / "n.txt").write_bytes(b"\xff\xfe"), "group", "--random", "10", "--k", "2"][1:]
            + ["--class-names", "n.txt", "--out", "g.json"]
        ),
        "cannot read class names file n.txt",
    ),
    (
        "group-superclasses-not-ints",
        lambda ws: (
            [(ws / "m.json").write_text('{"fine_to_coarse": ["a", 1]}'), "group", "--from-superclasses"][1:]
            + ["m.json", "--out", "g.json"]
        ),
        "'fine_to_coarse' must be a list of integers",
    ),
    (
        "evaluate-metrics-not-utf8",
        lambda ws: [(ws / "run" / "metrics.csv").write_bytes(b"epoch\n\xff\xfe\n"), "evaluate", "run"][1:],
        "metrics.csv is damaged",
    ),
    (
        "resume-metrics-bad-epoch",
        lambda ws: [
            (ws / "run" / "metrics.csv").write_text("epoch,x\none,1\n"),
            *TRAIN,
            "trainer.epochs=3",
            "run_dir=run",
            "--resume",
        ][1:],
        "an epoch that is not a number",
    ),
    ("predict-image-too-large", lambda ws: ["predict", "run", _huge_png(ws)], "huge.png: too large"),
    ("seed-too-large", lambda ws: [*TRAIN, "seed=99999999999999999999", "--dry-run"], "config key seed"),
    ("threads-too-many", lambda ws: [*TRAIN, "trainer.threads=99999999999", "--dry-run"], "config key trainer.threads"),
    (
        "input-size-too-large",
        lambda ws: [*TRAIN, "model.input_size=100000", "--dry-run"],
        "config key model.input_size",
    ),
    (
        "input-size-not-the-arrays-size",
        lambda ws: [*TRAIN, "model.input_size=32", "--dry-run"],
        "model.input_size=32, but data set 'digits' has 16-pixel images",
    ),
    (
        "pipeline-no-baseline-for-confusion",
        lambda ws: ["pipeline", "--config", DEMO, "pipeline.baseline=false", "--out", "p"],
        "pipeline.baseline=false, but ssal.groupings=confusion",
    ),
    ("bench-model-with-config", lambda ws: ["bench", "--config", DEMO, "--model", "small_cnn"], "--model does not"),
    ("bench-num-classes-alone", lambda ws: ["bench", "--quick", "--num-classes", "5"], "--num-classes applies"),
    ("bench-batch-size-zero", lambda ws: ["bench", "--quick", "--batch-size", "0"], "--batch-size must be at least 1"),
    (
        "group-superclasses-with-k",
        lambda ws: (
            [(ws / "m.json").write_text('{"fine_to_coarse": [0, 0, 1, 1]}'), "group", "--from-superclasses"][1:]
            + ["m.json", "--k", "3", "--out", "g.json"]
        ),
        "--k is not used with --from-superclasses",
    ),
    (
        "group-random-with-criterion",
        lambda ws: ["group", "--random", "10", "--k", "2", "--criterion", "split", "--refine", "--out", "g.json"],
        "--criterion, --refine are not used with --random",
    ),
    (
        "attack-fgsm-with-steps",
        lambda ws: ["attack", "run", "--method", "fgsm", "--eps", "0,1/255", "--steps", "3", "--out", "a"],
        "--steps and --alpha are BIM's",
    ),
    (
        "attack-batch-size-zero",
        lambda ws: ["attack", "run", "--method", "fgsm", "--eps", "0", "--batch-size", "0", "--out", "a"],
        "--batch-size must be at least 1",
    ),
    (
        "models-pattern-with-options",
        lambda ws: ["models", "torchvision:resnet*", "--input-size", "64", "img_size=64"],
        "--input-size, key=value options apply to one model NAME",
    ),
    ("models-depth-zero", lambda ws: ["models", "torchvision:resnet18", "--depth", "0"], "--depth must be at least 1"),
    (
        "pipeline-out-and-run-dir",
        lambda ws: ["pipeline", "--config", DEMO, "--out", "p", "run_dir=q"],
        "--out p and run_dir=q name two output folders",
    ),
    ("size-margin-nan", lambda ws: [*TRAIN, "ssal.size_margin=.nan", "--dry-run"], "config key ssal.size_margin"),
    ("gamma-negative", lambda ws: [*TRAIN, "schedule.gamma=-1", "--dry-run"], "config key schedule.gamma"),
    ("model-option-negative", lambda ws: [*TRAIN, "model.options={width: -1}", "--dry-run"], "options {'width': -1}"),
    (
        "pretrained-not-torch",
        lambda ws: [*TRAIN, f"model.pretrained={DEMO}", "--dry-run"],
        "not a file written by torch.save",
    ),
    # one writer per run directory: a second command writing into a live run changes nothing in it
    ("train-into-live-run-dir", lambda ws: _live(ws, "out", [*TRAIN, "seed=1", "run_dir=out"]), IN_USE),
    ("resume-live-run", lambda ws: _live(ws, "run", [*TRAIN, "trainer.epochs=3", "run_dir=run", "--resume"]), IN_USE),
    ("evaluate-live-run", lambda ws: _live(ws, "run", ["evaluate", "run"]), IN_USE),
    (
        "evaluate-while-evaluating",
        lambda ws: _live(ws, "run", ["evaluate", "run", "--split", "val"], "evaluate"),
        "is in use by `ssal evaluate`",
    ),
    ("confusion-live-run", lambda ws: _live(ws, "run", ["confusion", "run"]), IN_USE),
    (
        "attack-live-run",
        lambda ws: _live(ws, "run", ["attack", "run", "--method", "fgsm", "--eps", "0", "--out", "a"]),
        IN_USE,
    ),
    ("explain-live-run", lambda ws: _live(ws, "run", ["explain", "run", "x.png", "--out", "e"]), IN_USE),
    (
        "group-out-into-live-run",
        lambda ws: _live(ws, "run", ["group", "--random", "10", "--k", "2", "--out", "run/groupings/g1.json"]),
        "run is in use by `ssal train`",
    ),
    (
        "confusion-out-into-another-live-run",
        lambda ws: _live(ws, "o", ["confusion", "run", "--out", "o/sub/c.npy"]),
        "o is in use by `ssal train`",
    ),
    (
        "pipeline-into-live-out",
        lambda ws: _live(ws, "p", ["pipeline", "--config", DEMO, "--out", "p"], "pipeline"),
        "is in use by `ssal pipeline`",
    ),
    ("pipeline-live-run-inside", lambda ws: _live(ws, "p/ssal", ["pipeline", "--config", DEMO, "--out", "p"]), IN_USE),
    # settings checked before the first step (online groups are made an epoch later; a pipeline's SSAL runs train
    # after the baseline): nothing is trained or written
    (
        "online-k-above-half",
        lambda ws: [*TRAIN, *ONLINE, "ssal.branches.0.k=6", "run_dir=out"],
        "ssal.branches[0].k: k=6 is out of range: need 2 <= k <= C/2 = 5 for C=10",
    ),
    ("online-k-1", lambda ws: [*TRAIN, *ONLINE, "ssal.branches.0.k=1", "run_dir=out"], "k=1 is out of range"),
    ("online-k-C", lambda ws: [*TRAIN, *ONLINE, "ssal.branches.1.k=10", "run_dir=out"], "ssal.branches[1].k: k=10"),
    ("weights-k-6", lambda ws: [*TRAIN, "ssal.groupings=weights", "ssal.branches.0.k=6", "--dry-run"], "k=6 is out"),
    ("random-k-1", lambda ws: [*TRAIN, "ssal.branches.0.k=1", "--dry-run"], "ssal.branches[0].k: k=1 is out"),
    (
        "grouping-files-k-C",
        lambda ws: [*TRAIN, f"ssal.groupings={_files_k(ws, 10)}", "ssal.branches.0.k=10", "ssal.branches.1.k=10"],
        "ssal.branches[0].k: k=10 is out of range: need an integer 2 <= k < C = 10",
    ),
    (
        "pipeline-k-out-of-range",
        lambda ws: ["pipeline", "--config", DEMO, "ssal.branches.1.k=6", "--out", "p"],
        "ssal.branches[1].k: k=6 is out of range",
    ),
    (
        "online-group-epoch-leaves-no-step",
        lambda ws: [*TRAIN, "ssal.groupings=online", "ssal.group_epoch=1.99", "run_dir=out"],
        "no step is left to train the branches",
    ),
    (
        "regroup-every-below-one-step",
        lambda ws: [*TRAIN, *ONLINE, "ssal.regroup_every=0.01", "run_dir=out"],
        "ssal.regroup_every=0.01 epochs is less than one step",
    ),
    (
        "resume-with-another-model",
        lambda ws: [*TRAIN, "trainer.epochs=3", "model.options={width: 8}", "run_dir=run", "--resume"],
        "does not match the config's model (other shape: model.",
    ),
    ("batch-size-above-train-split", lambda ws: [*TRAIN, "data.batch_size=100000", "run_dir=out"], "no full batch"),
    (
        "pipeline-run-of-another-setup-inside",
        lambda ws: (
            [shutil.copytree(ws / "run", ws / "p" / "ssal"), "pipeline", "--config", DEMO, "seed=1"][1:]
            + ["--out", "p"]
        ),
        "p/ssal holds a run of another config (seed differ)",
    ),
    (
        "pipeline-without-branches",
        lambda ws: ["pipeline", "--config", DEMO, "ssal.branches=[]", "--out", "p"],
        "no SSAL run to train",
    ),
    (
        "one-pass-with-confusion",
        lambda ws: ["pipeline", "--config", DEMO, "--one-pass", "ssal.groupings=confusion", "--out", "p"],
        "--one-pass makes the groups in the SSAL run (ssal.groupings=online, weights or probe), but the override sets "
        "ssal.groupings=confusion, which needs the baseline run that one pass skips",
    ),
    (
        "one-pass-with-random",
        lambda ws: ["pipeline", "--config", DEMO, "--one-pass", "ssal.groupings=random", "--out", "p"],
        "ssal.groupings=random, which does not make them there",
    ),
    (
        "one-pass-variant-with-random",
        lambda ws: ["pipeline", "--config", _one_pass_variant(ws), "--one-pass", "--out", "p"],
        "but variant r sets ssal.groupings=random",
    ),
    # pretrained weights
    (
        "pretrained-nan",
        lambda ws: (
            [_edit_checkpoint(ws, _nan_backbone), *TRAIN, "model.pretrained=run/checkpoints/best.ckpt"][1:]
            + ["run_dir=out"]
        ),
        "model.pretrained: run/checkpoints/best.ckpt has NaN/Inf weights",
    ),
    (
        "pipeline-pretrained-nan",
        lambda ws: (
            [_edit_checkpoint(ws, _nan_backbone), "pipeline", "--config", DEMO, "--out", "p"][1:]
            + ["model.pretrained=run/checkpoints/best.ckpt"]
        ),
        "has NaN/Inf weights",
    ),
    (
        "pretrained-int-weights",
        lambda ws: (
            [_edit_checkpoint(ws, _int_backbone), *TRAIN, "model.pretrained=run/checkpoints/best.ckpt"][1:]
            + ["run_dir=out"]
        ),
        "holds torch.int64 values where small_cnn has torch.float32",
    ),
    (
        "pretrained-pickled-module",
        lambda ws: [*TRAIN, f"model.pretrained={_pickled_module(ws)}", "run_dir=out"],
        "cannot load m.pt safely: it holds objects other than tensors and plain values (a whole pickled model?",
    ),
]


def _state(ws: Path) -> dict[str, tuple[int, int]]:
    """Every file (size, mtime) and folder under ``ws``: a refused command adds, changes and removes none."""
    return {
        str(p.relative_to(ws)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (-1, 0)
        for p in ws.rglob("*")
    }


@pytest.mark.parametrize(("setup", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    setup: Callable[[Path], list[str]],
    expected: str,
    trained: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    if "cuda" in expected and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 CUDA devices")
    shutil.copytree(trained, tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    argv = setup(tmp_path)
    capsys.readouterr()
    before = _state(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith(f"ssal {argv[0]}: error: "), err
    assert expected in err[0], err[0]
    assert "Traceback" not in err[0] and "internal error" not in err[0]
    assert err[0].isprintable(), f"not plain text: {err[0]!r}"  # no terminal escape codes
    assert _state(tmp_path) == before, "a failed command changed files"


def test_a_missing_class_in_val_is_scored_with_train_labels(tmp_path: Path, monkeypatch, capsys) -> None:
    """train/{a,b,c,d} and val/{a,c,d}: val/c is scored as c, not as b (the test split's confusion matrix)."""
    import numpy as np

    monkeypatch.chdir(tmp_path)
    argv = _folder(tmp_path, {"train": "abcd", "val": "acd"})
    assert (
        main([*argv[:-1], "run_dir=out", "trainer.epochs=1", "schedule.name=constant", "trainer.limit_train_batches=1"])
        == 0
    )
    assert main(["confusion", "out", "--split", "test"]) == 0
    conf = np.load(tmp_path / "out" / "confusion_test.npy")
    assert conf.sum(1).tolist() == [3, 0, 3, 3]  # rows are the true classes a, b, c, d
    assert main(["evaluate", "out"]) == 0
    assert "9 images" in capsys.readouterr().out
    (tmp_path / "data" / "val" / "b").mkdir()  # an empty class folder is a class without images too
    assert main(["evaluate", "out"]) == 0
    assert "9 images" in capsys.readouterr().out


def test_data_whose_classes_changed_since_training_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    """A class folder renamed or added after training would shift the labels: one error line, not wrong numbers."""
    monkeypatch.chdir(tmp_path)
    argv = _folder(tmp_path, {"train": "abcd", "val": "abcd"})
    assert main([*argv, "trainer.epochs=1", "schedule.name=constant", "trainer.limit_train_batches=1"]) == 0
    for split in ("train", "val"):
        (tmp_path / "data" / split / "a").rename(tmp_path / "data" / split / "e")  # same count, other names
    for args in (["evaluate", "out"], ["confusion", "out", "--split", "test"]):
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "are not those" in err[0] and "(new: e; missing: a)" in err[0], err


def test_checkpoint_from_another_run_is_named(trained: Path, tmp_path: Path, caplog) -> None:
    from ssal.runs import load_run

    other = tmp_path / "other"
    assert main([*TRAIN, "trainer.epochs=2", "seed=1", f"run_dir={other}", "name=other"]) == 0
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    shutil.copyfile(other / "checkpoints" / "best.ckpt", run / "checkpoints" / "best.ckpt")
    load_run(run)
    assert "was written by another run (name, seed differ" in caplog.text and "best.ckpt" in caplog.text
    caplog.clear()
    load_run(trained)
    assert "another run" not in caplog.text
    load_run(trained, str(other / "checkpoints" / "last.ckpt"))  # --checkpoint PATH of another run
    assert "was written by another run (name, seed differ" in caplog.text and "last.ckpt" in caplog.text
