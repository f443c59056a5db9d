"""ssal.data: array loaders, official formats, stratified split, the on-device loader and its augmentation."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ssal.config import load_config
from ssal.data import (
    DATASETS,
    DeviceLoader,
    ImageArrays,
    augment_batch,
    build_folder_loader,
    load_arrays,
    split_train_val,
)
from ssal.data.arrays import per_class_indices, per_class_subset
from ssal.errors import SSALError


def _ids(n: int, size: int = 8, num_classes: int | None = None) -> ImageArrays:
    """n images whose pixels encode the sample id; labels = id (or id % num_classes)."""
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)
    labels = torch.arange(n) if num_classes is None else torch.arange(n) % num_classes
    return ImageArrays(images, labels)


def _collect(loader: DeviceLoader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*list(loader), strict=True)
    return torch.cat(xs), torch.cat(ys)


# --------------------------------------------------------------------------------------------- digits, CIFAR arrays


def test_digits_shapes_split_and_determinism() -> None:
    train, test = load_arrays("digits", None, "train"), load_arrays("digits", "/ignored", "test")
    assert (len(train), len(test)) == (1438, 359)
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (3, 16, 16)
    assert train.labels.dtype == torch.int64 and train.num_classes == 10 and train.image_size == (3, 16, 16)
    assert torch.equal(train.images[:, 0], train.images[:, 2])  # grey replicated
    assert torch.equal(train.images[:, :, 0::2], train.images[:, :, 1::2])  # 2x nearest upsampling
    assert int(train.images.max()) == 255
    frac = torch.bincount(test.labels, minlength=10) / torch.bincount(torch.cat([train.labels, test.labels]))
    assert torch.all((frac - 0.2).abs() < 0.01)  # stratified 80/20
    assert torch.equal(load_arrays("digits", None, "test").images, test.images)


def test_digits_normalization_matches_data() -> None:
    both = torch.cat([load_arrays("digits", None, s).images for s in ("train", "test")]).double() / 255
    mean, std = DATASETS["digits"].mean, DATASETS["digits"].std
    assert torch.allclose(both.mean(dim=(0, 2, 3)), torch.tensor(mean, dtype=torch.double), atol=1e-3)
    assert torch.allclose(both.std(dim=(0, 2, 3)), torch.tensor(std, dtype=torch.double), atol=1e-3)


def test_cifar100_mini(cifar100_dir: Path) -> None:
    data = load_arrays("cifar100_mini", cifar100_dir, "train")
    assert data.images.shape == (2000, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.num_classes == 100 and len(data.class_names) == 100 and data.name == "cifar100_mini"
    assert torch.equal(torch.bincount(data.labels), torch.full((100,), 20))
    f2c = torch.tensor(data.fine_to_coarse)
    assert torch.equal(f2c[data.labels], data.coarse_labels) and len(data.coarse_class_names) == 20
    raw = np.load(cifar100_dir / "mini_train.npz")["images"]
    assert torch.equal(data.images[7].permute(1, 2, 0), torch.from_numpy(raw[7]))  # HWC -> CHW, same pixels
    assert len(load_arrays("cifar100_mini", cifar100_dir, "test")) == 500


def test_cifar100_normalization_matches_train_npz(cifar100_dir: Path) -> None:
    data = load_arrays("cifar100", cifar100_dir, "train")
    assert data.images.shape == (50000, 3, 32, 32) and data.num_classes == 100
    s1, s2, n = torch.zeros(3, dtype=torch.double), torch.zeros(3, dtype=torch.double), 0
    for chunk in data.images.split(5000):
        x = chunk.double() / 255
        s1, s2, n = s1 + x.sum(dim=(0, 2, 3)), s2 + (x * x).sum(dim=(0, 2, 3)), n + x[:, 0].numel()
    mean, std = s1 / n, (s2 / n - (s1 / n) ** 2).sqrt()
    ref_mean, ref_std = DATASETS["cifar100"].mean, DATASETS["cifar100"].std
    assert torch.allclose(mean, torch.tensor(ref_mean, dtype=torch.double), atol=1e-3), mean
    assert torch.allclose(std, torch.tensor(ref_std, dtype=torch.double), atol=1e-3), std


# --------------------------------------------------------------------------------------------- split


def test_split_train_val_stratified_disjoint_deterministic() -> None:
    data = _ids(600, num_classes=6)
    train, val = split_train_val(data, 0.1, seed=3)
    ids_t = (train.images.flatten(1)[:, :8]).tolist()
    assert len(train) + len(val) == 600 and len(val) == 60
    assert torch.equal(torch.bincount(val.labels), torch.full((6,), 10))
    full = {tuple(r) for r in data.images.flatten(1)[:, :16].tolist()}
    tv = [tuple(r) for r in torch.cat([train.images, val.images]).flatten(1)[:, :16].tolist()]
    assert set(tv) == full and len(set(tv)) == 600  # disjoint, covering
    again = split_train_val(data, 0.1, seed=3)[0]
    assert ids_t == again.images.flatten(1)[:, :8].tolist()
    assert not torch.equal(split_train_val(data, 0.1, seed=4)[1].images, val.images)
    tiny = ImageArrays(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 0, 1, 2]))
    tr, va = split_train_val(tiny, 0.01, seed=0)
    assert va.labels.tolist() == [0] and sorted(tr.labels.tolist()) == [0, 1, 2]  # >= 1 per class, never all
    for bad in (-0.1, 1.0):
        with pytest.raises(SSALError, match="val_fraction"):
            split_train_val(data, bad)


# --------------------------------------------------------------------------------------------- DeviceLoader


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_train_shards_disjoint_equal_and_cover_epoch(world_size: int) -> None:
    data, n = _ids(101), 101
    shards = []
    for rank in range(world_size):
        loader = DeviceLoader(data, 8, train=True, rank=rank, world_size=world_size, drop_last=False)
        loader.set_epoch(5)
        y = _collect(loader)[1]
        assert len(loader) == sum(1 for _ in loader) and y.numel() == loader.num_samples
        shards.append(y)
    assert len({s.numel() for s in shards}) == 1  # equal shards -> equal batch counts on every rank
    all_ids = torch.cat(shards)
    assert all_ids.unique().numel() == all_ids.numel() == n - n % world_size


def test_train_shards_are_slices_of_one_permutation() -> None:
    data = _ids(64)
    one = DeviceLoader(data, 64, train=True, augment="cifar", max_shift=2, seed=9)
    x1, y1 = _collect(one)
    for rank in range(2):
        loader = DeviceLoader(data, 4, train=True, augment="cifar", max_shift=2, seed=9, rank=rank, world_size=2)
        x, y = _collect(loader)
        assert torch.equal(y, y1[rank::2]) and torch.equal(x, x1[rank::2])  # same augmentation per position


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_eval_sees_every_sample_once_with_equal_batch_counts(world_size: int) -> None:
    data = _ids(50)
    counts, ids = set(), []
    for rank in range(world_size):
        loader = DeviceLoader(data, 4, train=False, rank=rank, world_size=world_size)
        x, y = _collect(loader)
        counts.add(len(loader))
        assert sum(1 for _ in loader) == len(loader) and y.numel() == loader.num_samples
        assert torch.equal(x, data.images[y].float() / 255)  # no augmentation in evaluation
        ids.append(y)
    assert len(counts) == 1 and torch.equal(torch.cat(ids).sort().values, torch.arange(50))


def test_determinism_epochs_and_resume() -> None:
    data = _ids(40)

    def run(seed: int, epoch: int, start: int = 0) -> torch.Tensor:
        loader = DeviceLoader(data, 8, train=True, seed=seed, max_shift=3)
        loader.set_epoch(epoch, start_batch=start)
        return torch.cat([x.flatten() for x, _ in loader])

    assert torch.equal(run(0, 2), run(0, 2))
    assert not torch.equal(run(0, 2), run(1, 2)) and not torch.equal(run(0, 2), run(0, 3))
    assert torch.equal(run(0, 2, start=3), run(0, 2)[-(2 * 8 * 3 * 8 * 8) :])  # resume at batch 3 of 5
    auto = DeviceLoader(data, 8, train=True, seed=0, max_shift=3)
    epochs = [torch.cat([x.flatten() for x, _ in auto]) for _ in range(2)]  # no set_epoch: epochs 0, 1
    assert torch.equal(epochs[0], run(0, 0)) and torch.equal(epochs[1], run(0, 1))


def _reference_shift(x: torch.Tensor, dy: int, dx: int, p: int) -> torch.Tensor:
    padded = F.pad(x.float()[None], (p, p, p, p), mode="reflect")[0]
    h, w = x.shape[-2:]
    return padded[:, p + dy : p + dy + h, p + dx : p + dx + w]


def test_augment_batch_matches_reflect_pad_crop_and_flip() -> None:
    x = torch.randint(0, 256, (6, 3, 9, 7), dtype=torch.uint8)
    shifts = torch.tensor([[0, 0], [2, -3], [-5, 4], [3, 3], [-1, 0], [0, 5]])
    flips = torch.tensor([False, True, False, True, True, False])
    out = augment_batch(x, shifts, flips)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    for i in range(6):
        ref = _reference_shift(x[i].flip(-1) if flips[i] else x[i], int(shifts[i, 0]), int(shifts[i, 1]), 5)
        assert torch.equal(out[i].float(), ref)
    assert torch.equal(augment_batch(x, None, torch.ones(6, dtype=torch.bool)), x.flip(-1))
    assert torch.equal(augment_batch(x, torch.zeros(6, 2, dtype=torch.long), None), x)


def test_loader_flip_is_a_flip_and_shift_keeps_content() -> None:
    data = _ids(200, size=12)
    x, y = _collect(DeviceLoader(data, 50, train=True, augment="cifar", max_shift=0))
    src = data.images[y].float() / 255
    same, flipped = (x == src).flatten(1).all(1), (x == src.flip(-1)).flatten(1).all(1)
    assert torch.all(same | flipped) and 60 < int(flipped.sum()) < 140
    p = 3
    x, y = _collect(DeviceLoader(data, 50, train=True, augment="shift", max_shift=p))
    assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    offsets = set()
    for i in range(0, 200, 7):
        padded = F.pad(data.images[y[i]].float()[None], (p, p, p, p), mode="reflect")[0]
        windows = padded.unfold(1, 12, 1).unfold(2, 12, 1)  # (3, 2p+1, 2p+1, 12, 12): every crop
        match = (windows == (x[i] * 255).round()[:, None, None]).all(-1).all(-1).all(0)
        assert match.any(), "every shifted image is a reflect-padded crop of its source"
        offsets.add(tuple(torch.nonzero(match)[0].tolist()))
    assert len(offsets) > 3


def test_loader_options_pixels_layout_drop_last() -> None:
    data = _ids(30, size=8)
    x, y = next(iter(DeviceLoader(data, 8, train=False, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last) and y.dtype == torch.int64
    assert x.dtype == torch.float32 and torch.equal(x, data.images[:8].float() / 255)  # pixels in [0, 1]
    assert next(iter(DeviceLoader(data, 8, train=False)))[0].is_contiguous()
    for aug in ("cifar", "none"):  # the layout changes strides only, never values
        a, b = (_collect(DeviceLoader(data, 8, train=True, augment=aug, channels_last=cl))[0] for cl in (False, True))
        assert torch.equal(a, b) and b.is_contiguous(memory_format=torch.channels_last) and a.is_contiguous()
    train = DeviceLoader(data, 8, train=True)
    assert len(train) == 3 and train.num_samples == 24 and all(len(b[1]) == 8 for b in train)
    assert len(DeviceLoader(data, 8, train=True, drop_last=False)) == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"augment": "mixup"}, "unknown augmentation"),
        ({"max_shift": 8}, "max_shift"),
        ({"rank": 2, "world_size": 2}, "rank"),
    ],
)
def test_loader_rejects_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(SSALError, match=match):
        DeviceLoader(_ids(10), 4, train=True, **kwargs)
    with pytest.raises(SSALError, match="batch_size"):
        DeviceLoader(_ids(10), 0, train=True)


# --------------------------------------------------------------------------------------------- official CIFAR-100


class _Py2Array:
    """Pickles an array as Python 2 + NumPy 1 did (the real files): numpy.core names, raw data as a latin1 str."""

    def __init__(self, a: np.ndarray) -> None:
        self.a = a

    def __reduce__(self):
        fn, (cls, shape, code), state = self.a.__reduce__()
        return fn, (cls, shape, code.decode("latin1")), (*state[:4], state[4].decode("latin1"))


def _dumps(obj: object, protocol: int) -> bytes:
    if protocol != "py2":
        return pickle.dumps(obj, protocol=protocol)
    if isinstance(obj, dict) and isinstance(obj.get("data"), np.ndarray):
        obj = {**obj, "data": _Py2Array(obj["data"])}
    return pickle.dumps(obj, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def _write_official(folder: Path, n: int = 12, protocol: int | str = 2) -> np.ndarray:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    fine = [i % 100 for i in range(n)]
    coarse = [(i % 100) // 5 for i in range(n)]
    meta = {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
    (folder / "meta").write_bytes(_dumps(meta, protocol))
    for split in ("train", "test"):
        batch = {
            "filenames": [f"{i}.png" for i in range(n)],
            "batch_label": split,
            "fine_labels": fine,
            "coarse_labels": coarse,
            "data": data,
        }
        (folder / split).write_bytes(_dumps(batch, protocol))
    return data


@pytest.mark.parametrize("protocol", ["py2", 2, 5])
def test_official_cifar100_pickles(tmp_path: Path, protocol: int | str) -> None:
    raw = _write_official(tmp_path / "cifar-100-python", protocol=protocol)
    for root in (tmp_path, tmp_path / "cifar-100-python"):
        data = load_arrays("cifar100", root, "train")
        assert data.images.shape == (12, 3, 32, 32) and data.images.dtype == torch.uint8
        assert torch.equal(data.images.flatten(1), torch.from_numpy(raw))  # rows are CHW planes
        assert data.labels.tolist() == list(range(12)) and data.class_names[3] == "f3"
        assert data.fine_to_coarse[10] == 2 and data.coarse_class_names[19] == "c19"


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_official_pickle_refuses_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_official(tmp_path / "cifar-100-python")
    (tmp_path / "cifar-100-python" / "train").write_bytes(pickle.dumps({"data": _Evil()}, protocol=2))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SSALError, match="not allowed"):
        load_arrays("cifar100", tmp_path, "train")
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"\x80\x02garbage")
    with pytest.raises(SSALError, match="corrupt"):
        load_arrays("cifar100", tmp_path, "train")


# --------------------------------------------------------------------------------------------- Tiny ImageNet, folders


def _write_tiny(root: Path) -> None:
    from PIL import Image

    wnids = ["n02", "n01", "n03"]
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tcat\nn03\tdog\nn99\tother\n")
    colors = {"n01": (250, 0, 0), "n02": (0, 250, 0), "n03": (0, 0, 250)}
    for w in wnids:
        (root / "train" / w / "images").mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (64, 64), colors[w]).save(root / "train" / w / "images" / f"{w}_{j}.JPEG")
    (root / "val" / "images").mkdir(parents=True)
    Image.new("L", (64, 64), 128).save(root / "val" / "images" / "val_0.JPEG")  # greyscale file
    Image.new("RGB", (32, 32), colors["n03"]).save(root / "val" / "images" / "val_1.JPEG")  # wrong size
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t10\t10\nval_1.JPEG\tn03\t1\t2\t3\t4\n")


def test_tinyimagenet_official_layout(tmp_path: Path) -> None:
    _write_tiny(tmp_path / "tiny-imagenet-200")
    train = load_arrays("tinyimagenet", tmp_path, "train")
    assert train.images.shape == (6, 3, 64, 64) and train.class_names == ["goldfish", "cat", "dog"]
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]  # wnids sorted: n01, n02, n03
    means = train.images.float().mean(dim=(2, 3))
    assert torch.all(means.argmax(1) == train.labels)  # red goldfish, green cat, blue dog
    test = load_arrays("tinyimagenet", tmp_path / "tiny-imagenet-200", "test")
    assert test.images.shape == (2, 3, 64, 64) and test.labels.tolist() == [1, 2]
    assert torch.equal(test.images[0, 0], test.images[0, 1])
    (tmp_path / "tiny-imagenet-200" / "val" / "images" / "val_1.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(SSALError, match="val_1.JPEG"):
        load_arrays("tinyimagenet", tmp_path, "test")


def test_build_folder_loader(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "val"):
        for c, color in (("ant", (200, 10, 10)), ("bee", (10, 10, 200))):
            (tmp_path / split / c).mkdir(parents=True)
            for j in range(3):
                Image.new("RGB", (40, 30), color).save(tmp_path / split / c / f"{j}.png")
    loader = build_folder_loader(tmp_path, "train", 2, train=True, workers=0, image_size=16, resize=20)
    assert loader.class_names == ["ant", "bee"] and len(loader) == 3
    x, y = next(iter(loader))
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    ev = build_folder_loader(tmp_path, "val", 4, train=False, workers=0, image_size=16, resize=20)
    assert sum(len(b[1]) for b in ev) == 6
    shards = [
        build_folder_loader(
            tmp_path, "val", 1, train=False, workers=0, image_size=16, resize=20, distributed=True, rank=r, world_size=2
        )
        for r in range(2)
    ]
    assert [len(s) for s in shards] == [3, 3] and list(shards[0].sampler)[0] != list(shards[1].sampler)[0]
    with pytest.raises(SSALError, match="does not exist"):
        build_folder_loader(tmp_path, "test", 2, train=False, workers=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SSALError, match="ImageFolder"):
        build_folder_loader(tmp_path, "empty", 2, train=False, workers=0)


def test_folder_holdout_split_and_bundle(tmp_path: Path) -> None:
    from PIL import Image

    from ssal.build import load_data
    from ssal.config import DataConfig
    from ssal.data import FolderSplit

    for split, n in (("train", 10), ("val", 2)):
        for c in ("ant", "bee", "cat"):
            (tmp_path / split / c).mkdir(parents=True)
            for j in range(n):
                Image.new("RGB", (20, 20), (10 * j, 0, 0)).save(tmp_path / split / c / f"{j}.png")
    kw = {"train": False, "workers": 0, "image_size": 16, "resize": 16}
    parts = {
        p: build_folder_loader(tmp_path, FolderSplit("train", p, 0.2, seed=3), 4, **kw).dataset
        for p in ("holdout", "rest")
    }
    held, rest = (set(parts[p].indices) for p in ("holdout", "rest"))
    assert not held & rest and held | rest == set(range(30))
    folder = parts["holdout"].dataset
    assert sorted(folder.targets[i] for i in held) == [0, 0, 1, 1, 2, 2]  # stratified: 20 % of each class
    again = build_folder_loader(tmp_path, FolderSplit("train", "holdout", 0.2, seed=3), 4, **kw).dataset
    assert set(again.indices) == held
    # only val/: it is the test set, validation is held out of train/; with test/ too, val/ validates
    data = load_data(DataConfig(name="folder", root=str(tmp_path), val_fraction=0.2))
    assert data.test == FolderSplit("val") and data.val == FolderSplit("train", "holdout", 0.2, 0)
    assert data.train == FolderSplit("train", "rest", 0.2, 0)
    data = load_data(DataConfig(name="folder", root=str(tmp_path), val_fraction=0.0))
    assert data.val == data.test == FolderSplit("val") and data.train == FolderSplit("train")
    shutil.copytree(tmp_path / "val", tmp_path / "test")
    data = load_data(DataConfig(name="folder", root=str(tmp_path), val_fraction=0.2))
    assert (data.train, data.val, data.test) == (FolderSplit("train"), FolderSplit("val"), FolderSplit("test"))


# --------------------------------------------------------------------------------------------- bad inputs


def _write_npz(root: Path, images: np.ndarray, fine: np.ndarray, meta: bool = True) -> None:
    root.mkdir(exist_ok=True)
    np.savez(root / "train.npz", images=images, fine_labels=fine, coarse_labels=fine // 5)
    if meta:
        names = {
            "fine_label_names": [str(i) for i in range(100)],
            "coarse_label_names": [str(i) for i in range(20)],
            "fine_to_coarse": [i // 5 for i in range(100)],
        }
        (root / "meta.json").write_text(json.dumps(names))


def test_bad_inputs_give_clear_errors(tmp_path: Path) -> None:
    good = np.zeros((4, 32, 32, 3), np.uint8)
    labels = np.arange(4, dtype=np.int64)
    with pytest.raises(SSALError, match="unknown data set 'cifar10'.*cifar100"):
        load_arrays("cifar10", tmp_path, "train")
    assert set(DATASETS) == {"cifar100", "cifar100_mini", "digits", "tinyimagenet", "folder"}
    with pytest.raises(SSALError, match="read from its folder by a DataLoader"):
        load_arrays("folder", tmp_path, "train")
    with pytest.raises(SSALError, match="unknown split"):
        load_arrays("digits", None, "val")
    with pytest.raises(SSALError, match="does not exist"):
        load_arrays("cifar100", tmp_path / "nowhere", "train")
    with pytest.raises(SSALError, match="needs a data folder"):
        load_arrays("cifar100_mini", None, "train")
    with pytest.raises(SSALError, match="no CIFAR-100"):
        load_arrays("cifar100", tmp_path, "train")
    cases = {
        "shape": (np.zeros((4, 32, 32), np.uint8), labels, "uint8 \\(N, 32, 32, 3\\)"),
        "dtype": (good.astype(np.float32), labels, "uint8"),
        "range": (good, np.array([0, 1, 2, 100]), "out of range"),
        "labels": (good, np.zeros((4, 2), np.int64), "1-D integer"),
        "count": (good, labels[:3], "4 images but 3 labels"),
    }
    for name, (images, fine, match) in cases.items():
        _write_npz(tmp_path / name, images, fine)
        with pytest.raises(SSALError, match=match):
            load_arrays("cifar100", tmp_path / name, "train")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "train.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(SSALError, match="corrupt or unreadable"):
        load_arrays("cifar100", tmp_path / "corrupt", "train")
    _write_npz(tmp_path / "nometa", good, labels, meta=False)
    with pytest.raises(SSALError, match="missing metadata"):
        load_arrays("cifar100", tmp_path / "nometa", "train")
    with pytest.raises(SSALError, match="missing data file"):
        load_arrays("cifar100_mini", tmp_path / "nometa", "test")


def test_image_arrays_validation_and_subset() -> None:
    with pytest.raises(SSALError, match="uint8 tensor of shape"):
        ImageArrays(torch.zeros(2, 32, 32, 3, dtype=torch.uint8), torch.zeros(2, dtype=torch.long))
    with pytest.raises(SSALError, match="int64"):
        ImageArrays(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32))
    with pytest.raises(SSALError, match="out of range"):
        ImageArrays(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 2]), class_names=["a", "b"])
    data = ImageArrays(
        torch.arange(48, dtype=torch.uint8).view(4, 3, 2, 2),
        torch.tensor([0, 1, 0, 1]),
        class_names=["a", "b"],
        coarse_labels=torch.tensor([5, 6, 7, 8]),
        name="x",
    )
    sub = data.subset([3, 1])
    assert len(sub) == 2 and sub.labels.tolist() == [1, 1] and sub.coarse_labels.tolist() == [8, 6]
    assert torch.equal(sub.images[0], data.images[3]) and sub.num_classes == 2 and sub.name == "x"


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    world_size=st.integers(1, 5),
    batch=st.integers(1, 9),
    train=st.booleans(),
    drop_last=st.booleans(),
)
def test_sharding_properties(n: int, world_size: int, batch: int, train: bool, drop_last: bool) -> None:
    data = _ids(n, size=2)
    loaders = [
        DeviceLoader(data, batch, train=train, rank=r, world_size=world_size, drop_last=drop_last, augment="none")
        for r in range(world_size)
    ]
    assert len({len(ld) for ld in loaders}) == 1  # every rank runs the same number of steps
    seen = []
    for ld in loaders:
        ys = [y for _, y in ld]
        assert len(ys) == len(ld) and sum(y.numel() for y in ys) == ld.num_samples
        if drop_last:
            assert all(y.numel() == batch for y in ys)
        seen.append(torch.cat(ys) if ys else torch.zeros(0, dtype=torch.long))
    ids = torch.cat(seen)
    assert ids.unique().numel() == ids.numel()  # disjoint shards
    if not train and not drop_last:
        assert ids.numel() == n  # evaluation sees every sample exactly once
    elif not drop_last:
        assert ids.numel() == n - n % world_size


_DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


# --- data.per_class ---------------------------------------------------------------------------------------------
def test_per_class_is_stratified_seeded_and_nested() -> None:
    labels = torch.arange(5).repeat_interleave(20)[torch.randperm(100)]
    a, b = per_class_indices(labels, 4, seed=3), per_class_indices(labels, 4, seed=3)
    assert torch.equal(a, b)
    assert torch.bincount(labels[a]).tolist() == [4] * 5
    bigger = per_class_indices(labels, 10, seed=3)
    assert set(a.tolist()) <= set(bigger.tolist())  # smaller sizes are subsets of larger ones
    assert not torch.equal(a, per_class_indices(labels, 4, seed=4))
    assert per_class_indices(labels, 50, seed=0).numel() == 100  # a class with fewer keeps all of them


def test_per_class_zero_keeps_everything_and_negative_is_refused() -> None:
    data = ImageArrays(torch.zeros(6, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 0, 0, 1, 1, 1]), name="t")
    assert per_class_subset(data, 0) is data
    assert per_class_subset(data, 2).labels.tolist() == [0, 0, 1, 1]
    with pytest.raises(SSALError, match="data.per_class"):
        load_config(_DEMO, ["data.per_class=-1"])


def test_per_class_subsets_train_after_the_validation_split() -> None:
    from ssal.build import load_data

    full = load_data(load_config(_DEMO).data)
    small = load_data(load_config(_DEMO, ["data.per_class=5"]).data)
    assert torch.equal(full.val.labels, small.val.labels)  # one validation split for every size
    assert torch.bincount(small.train.labels).tolist() == [5] * 10
    assert len(full.train) > len(small.train)


def test_per_class_on_an_image_folder(tmp_path: Path, write_tree) -> None:

    from ssal.build import load_data, make_loader

    write_tree(tmp_path, {"train": "abc", "val": "abc"}, n=6)
    cfg = load_config(_DEMO, ["data.name=folder", f"data.root={tmp_path}", "data.per_class=2", "data.workers=0",
                             "data.val_fraction=0", "model.input_size=12"])  # fmt: skip
    bundle = load_data(cfg.data)
    loader = make_loader(cfg, bundle, bundle.train, train=False)
    ys = sorted(int(v) for _, y in loader for v in y)
    assert ys == [0, 0, 1, 1, 2, 2]
