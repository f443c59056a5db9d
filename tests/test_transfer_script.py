"""benchmarks/transfer_cifar100.py runs end to end on tiny settings (a fake CIFAR-100 folder, small_cnn, 1 epoch)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from ssal.grouping import Grouping

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "transfer_cifar100.py"


def _fake_cifar(root: Path) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        labels = np.repeat(np.arange(100), n)
        images = (rng.random((len(labels), 32, 32, 3)) * 60).astype(np.uint8)
        images[..., 0] += (labels * 2).astype(np.uint8)[:, None, None]
        np.savez(root / f"{split}.npz", images=images, fine_labels=labels, coarse_labels=labels // 5)
    meta = {
        "fine_label_names": [f"fine{i}" for i in range(100)],
        "coarse_label_names": [f"coarse{i}" for i in range(20)],
        "fine_to_coarse": [i // 5 for i in range(100)],
    }
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def test_transfer_script_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # the scripts import benchmarks/common.py, as when run
    spec = importlib.util.spec_from_file_location("transfer_cifar100", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cifar, out = _fake_cifar(tmp_path / "cifar"), tmp_path / "out"
    args = ["--cifar", str(cifar), "--out", str(out), "--model", "small_cnn", "--model-options", "{width: 8}"]
    table = mod.run([*args, "--pretrain-epochs", "1", "--finetune-epochs", "1", "--per-class", "4", "--threads", "1"])
    text = table.read_text()
    for row in ("| scratch (no SSAL) |", "| fine-tuned (no SSAL) |", "| fine-tuned + SSAL (groups: fine-tuned",
                "| fine-tuned + SSAL (groups: linear probe"):  # fmt: skip
        assert row in text
    pngs = list((out / "data" / "finetune" / "train").glob("*/*.png"))
    classes = {p.parent.name for p in pngs}
    assert len(pngs) == 200 and len(classes) == 50  # the other 50 classes, 4 images each
    with np.load(out / "data" / "pretrain" / "train.npz") as z:
        pre = {f"fine{c}" for c in np.unique(z["fine_labels"])}
    assert len(pre) == 50 and not pre & classes  # disjoint halves
    ev = json.loads((out / "finetune" / "ssal" / "eval.json").read_text())
    assert ev["jp_top1"] is not None and 0.0 <= ev["jp_top1"] <= 100.0
    g = Grouping.load(next((out / "finetune_probe" / "groupings").glob("g*.json")))
    assert "probe" in g.source and len(g.assignment) == 50  # made by the probe, over the 50 new classes
    # --no-scratch: the same steps without the from-scratch run, and a table without its row
    (out / "scratch" / "eval.json").rename(out / "scratch" / "kept.json")
    text = mod.run([*args, "--pretrain-epochs", "1", "--finetune-epochs", "1", "--per-class", "4", "--no-scratch"])
    assert "| scratch (no SSAL) |" not in text.read_text() and "| fine-tuned (no SSAL) |" in text.read_text()
    assert not (out / "scratch" / "eval.json").exists()
    (out / "scratch" / "kept.json").rename(out / "scratch" / "eval.json")
    # the seeds' summary (benchmarks/summarize_transfer.py): a second "seed" that is the same run gives differences of 0
    spec = importlib.util.spec_from_file_location("summarize_transfer", SCRIPT.parent / "summarize_transfer.py")
    assert spec is not None and spec.loader is not None
    summ = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summ)
    text = summ.summarize([out, out])
    base = json.loads((out / "finetune" / "baseline" / "eval.json").read_text())["tr_top1"]
    assert f"| fine-tuned, no SSAL | 2 | {base:.2f} ± 0.00 | — | — |" in text
    assert (
        f"| fine-tuned, SSAL two-stage | {ev['tr_top1'] - base:.2f} ± 0.00 | {ev['jp_top1'] - base:.2f} ± 0.00 |"
        in text
    )
