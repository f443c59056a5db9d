"""ImageFolder data: labels by class name from train/, splits checked against it, broken images named up front."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssal.build import load_data, make_loader
from ssal.config import DataConfig, load_config
from ssal.data.folder import FolderSplit, build_folder_loader, check_images
from ssal.errors import SSALError

REPO = Path(__file__).resolve().parents[1]


def _labels(loader) -> list[int]:
    return sorted(int(v) for _, y in loader for v in y)


def test_a_class_missing_from_val_keeps_the_labels_of_train(tmp_path: Path, write_tree) -> None:
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
def test_a_split_that_does_not_fit_train_is_an_error(
    tmp_path: Path, layout: dict[str, str], message: str, write_tree
) -> None:
    write_tree(tmp_path, layout)
    with pytest.raises(SSALError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_data(DataConfig(name="folder", root=str(tmp_path)))


def test_a_held_out_part_counts_its_own_classes(tmp_path: Path, caplog: pytest.LogCaptureFixture, write_tree) -> None:
    write_tree(tmp_path, {"train": "abc"})
    for f in list((tmp_path / "train" / "c").iterdir())[1:]:
        f.unlink()  # c has one image: it stays in training, none is held out
    with caplog.at_level("INFO"):
        build_folder_loader(tmp_path, FolderSplit("train", "holdout", 0.3), 4, train=False, workers=0, image_size=8)
    assert "train[holdout 0.3]: 2 images in 2 classes" in caplog.text


def test_dry_run_names_the_folder_it_found_no_classes_in(tmp_path: Path) -> None:
    with pytest.raises(SSALError, match=f"no class folders in {tmp_path / 'typo' / 'train'}"):
        load_data(DataConfig(name="folder", root=str(tmp_path / "typo")), dry_run=True)


def test_dry_run_checks_the_class_folders_the_real_run_checks(tmp_path: Path, write_tree) -> None:
    write_tree(tmp_path, {"train": "ab", "val": "ab"})
    assert load_data(DataConfig(name="folder", root=str(tmp_path)), dry_run=True).num_classes == 2
    (tmp_path / "train" / "c").mkdir()  # an empty class folder: the real run refuses it, so does the dry run
    with pytest.raises(SSALError, match=r"train has class folder\(s\) without images: c; remove them"):
        load_data(DataConfig(name="folder", root=str(tmp_path)), dry_run=True)


def test_broken_images_are_named_before_training(tmp_path: Path, write_tree) -> None:
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


def test_loader_refuses_a_class_folder_train_does_not_have(tmp_path: Path, write_tree) -> None:
    write_tree(tmp_path, {"val": "abd"})
    with pytest.raises(SSALError, match="class folder.s. d that train/ does not have"):
        build_folder_loader(tmp_path, "val", 2, train=False, workers=0, class_names=["a", "b", "c"])


def _break(root: Path) -> list[str]:
    """Damage three images of ``root`` (train/a/0 empty, train/c/1 text, val/b/2 cut); their paths."""
    good = (root / "train" / "a" / "1.png").read_bytes()
    (root / "train" / "a" / "0.png").write_bytes(b"")
    (root / "train" / "c" / "1.png").write_text("not a picture")
    (root / "val" / "b" / "2.png").write_bytes(good[: len(good) // 2])
    return [str(root / p) for p in ("train/a/0.png", "train/c/1.png", "val/b/2.png")]


def _samples(loader) -> list[tuple[str, int]]:
    ds = loader.dataset
    folder = ds.dataset if hasattr(ds, "indices") else ds
    idx = ds.indices if hasattr(ds, "indices") else range(len(folder))
    return [(Path(folder.samples[i][0]).parent.name, folder.samples[i][1]) for i in idx]


def test_skip_broken_leaves_out_unreadable_images_and_keeps_the_labels(tmp_path: Path, caplog, write_tree) -> None:
    write_tree(tmp_path, {"train": "abc", "val": "abc"})
    broken = _break(tmp_path)
    with pytest.raises(SSALError, match="3 of 18 images .* data.skip_broken=true"):
        check_images([tmp_path / "train", tmp_path / "val"])
    assert check_images([tmp_path / "train", tmp_path / "val"], skip=True) == broken
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("skipping 3 of 18 images under ")
    assert all(p in warnings[0] for p in broken) and "\n" not in warnings[0]

    names = ["a", "b", "c"]
    kw = {"workers": 0, "image_size": 8, "resize": 8, "class_names": names, "skip_broken": True}
    train = build_folder_loader(tmp_path, "train", 1, train=False, **kw)
    val = build_folder_loader(tmp_path, "val", 1, train=False, **kw)
    assert len(train.dataset) == 7 and len(val.dataset) == 8
    for loader in (train, val):  # every remaining image keeps the label of its class folder
        assert all(label == names.index(c) for c, label in _samples(loader))
        assert sorted(int(y) for _, y in loader) == sorted(label for _, label in _samples(loader))
    assert _labels(train) == [0, 0, 1, 1, 1, 2, 2] and _labels(val) == [0, 0, 0, 1, 1, 2, 2, 2]


def test_skip_broken_trains_and_evaluates_without_the_broken_files(
    tmp_path: Path, monkeypatch, capsys, caplog, write_tree
) -> None:
    from ssal.cli import main

    write_tree(tmp_path / "data", {"train": "abc", "val": "abc"}, n=4)
    _break(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--config", str(REPO / "configs" / "demo.yaml"), "data.name=folder", "data.root=data"]
    argv += ["data.workers=0", "data.batch_size=4", "ssal.branches=[]", "trainer.epochs=1", "schedule.name=constant"]
    argv += ["data.val_fraction=0.25", "model.input_size=16", "run_dir=out"]
    assert main(argv) == 2
    assert "data.skip_broken=true" in capsys.readouterr().err
    caplog.clear()
    assert main([*argv, "data.skip_broken=true"]) == 0
    assert sum("skipping 3 of 24 images" in r.getMessage() for r in caplog.records) == 1
    assert main(["evaluate", "out"]) == 0
    assert "11 images" in capsys.readouterr().out  # val/ (the test split) without its broken file


def test_16_bit_grey_is_scaled_not_clipped_and_float_pixels_are_named(tmp_path: Path) -> None:
    from PIL import Image

    from ssal.data.folder import open_image

    ramp = np.linspace(0, 65535, 16 * 16).round().astype(np.uint16).reshape(16, 16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    rgb = np.asarray(open_image(tmp_path / "g16.png"))
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], np.round(ramp / 257).astype(np.uint8))  # PIL's convert: 17 levels, most 255
    Image.fromarray(np.random.default_rng(0).random((8, 8), dtype=np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(SSALError, match=r"f\.tiff: floating-point pixels of unknown range: save the image with 8 or"):
        open_image(tmp_path / "f.tiff")
    with pytest.raises(SSALError, match=r"1 of 2 images .*f\.tiff \(floating-point pixels of unknown range"):
        check_images(tmp_path)  # found before training, the 16-bit PNG passes
