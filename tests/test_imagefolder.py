"""ImageFolder data: labels by class name from train/, splits checked against it, broken images named up front."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssal.build import load_data, make_loader
from ssal.config import DataConfig, load_config
from ssal.data.folder import build_folder_loader, check_images
from ssal.errors import SSALError

REPO = Path(__file__).resolve().parents[1]


def write_tree(root: Path, layout: dict[str, str], n: int = 3) -> None:
    """``layout`` maps a split to its class folder names (one letter each); class c's images are brighter."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, classes in layout.items():
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                px = rng.random((12, 12, 3)) * 30 + 50 * "abcd".index(c)
                Image.fromarray(px.astype(np.uint8)).save(d / f"{i}.png")


def _labels(loader) -> list[int]:
    return sorted(int(v) for _, y in loader for v in y)


def test_a_class_missing_from_val_keeps_the_labels_of_train(tmp_path: Path) -> None:
    write_tree(tmp_path, {"train": "abcd", "val": "acd"})
    data = load_data(DataConfig(name="folder", root=str(tmp_path), val_fraction=0.0, eval_batch_size=4, workers=0))
    assert data.class_names == ["a", "b", "c", "d"]
    cfg = load_config(REPO / "configs" / "demo.yaml", [f"data.root={tmp_path}", "data.name=folder", "data.workers=0"])
    loader = make_loader(cfg, data, data.test, train=False)
    assert _labels(loader) == [0] * 3 + [2] * 3 + [3] * 3  # c is 2 and d is 3, as in train/, not 1 and 2
    assert loader.class_names == ["a", "b", "c", "d"]
    # without the class names of train/, the folder's own classes are used (the old, shifted labels)
    alone = build_folder_loader(tmp_path, "val", 4, train=False, workers=0, image_size=8, resize=8)
    assert _labels(alone) == [0] * 3 + [1] * 3 + [2] * 3


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"train": "abc", "val": "abcd"}, "val has class folder(s) d that"),
        ({"train": "abc", "val": "abc", "test": "ad"}, "test has class folder(s) d that"),
        ({"train": "abcd"}, "needs"),
    ],
)
def test_a_split_that_does_not_fit_train_is_an_error(tmp_path: Path, layout: dict[str, str], message: str) -> None:
    write_tree(tmp_path, layout)
    with pytest.raises(SSALError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_data(DataConfig(name="folder", root=str(tmp_path)))


def test_broken_images_are_named_before_training(tmp_path: Path) -> None:
    write_tree(tmp_path, {"train": "ab"})
    check_images(tmp_path / "train")  # all good
    good = (tmp_path / "train" / "a" / "0.png").read_bytes()
    (tmp_path / "train" / "a" / "empty.png").write_bytes(b"")
    (tmp_path / "train" / "b" / "cut.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "train" / "b" / "text.jpg").write_text("hello")
    (tmp_path / "train" / "b" / "notes.txt").write_text("not an image file name: ignored")
    with pytest.raises(SSALError) as e:
        check_images(tmp_path / "train")
    msg = str(e.value)
    assert msg.startswith("3 of 9 images") and "\n" not in msg
    assert "empty.png (empty file)" in msg and "cut.png" in msg and "text.jpg (not an image)" in msg


def test_truncated_jpeg_is_found(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "a").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a/x.jpg")
    data = (tmp_path / "a" / "x.jpg").read_bytes()
    (tmp_path / "a" / "x.jpg").write_bytes(data[: len(data) * 2 // 3])  # header intact, scan data cut
    with pytest.raises(SSALError, match="x.jpg"):
        check_images(tmp_path)


def test_loader_refuses_a_class_folder_train_does_not_have(tmp_path: Path) -> None:
    write_tree(tmp_path, {"val": "abd"})
    with pytest.raises(SSALError, match="class folder.s. d that train/ does not have"):
        build_folder_loader(tmp_path, "val", 2, train=False, workers=0, class_names=["a", "b", "c"])
