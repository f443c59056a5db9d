"""Fuzzing the file readers: any bytes given as a data array file, a grouping, a config, a checkpoint, a confusion
matrix or an image give a result or one ``SSALError`` (one line), never another exception; through the CLI, exit
code 2 and one line, never an internal error.

Deterministic (``derandomize``) and small, so CI sees the same inputs every time; SSAL_FUZZ_EXAMPLES=2000 runs a
longer search.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ssal.cli import main
from ssal.config import load_config, save_config
from ssal.errors import SSALError
from ssal.grouping import Grouping, group_from_confusion, load_confusion

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "configs" / "demo.yaml")

FUZZ = settings(
    max_examples=int(os.environ.get("SSAL_FUZZ_EXAMPLES", "60")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
MODEL = settings(FUZZ, max_examples=max(FUZZ.max_examples // 2, 10))  # each example builds a model
FEW = settings(FUZZ, max_examples=max(FUZZ.max_examples // 6, 10))  # each example runs the CLI


def result_or_clear_error(fn: Callable[[], Any]) -> Any:
    """``fn()``'s result, or None when it raised an ``SSALError`` of one line; any other exception propagates."""
    try:
        return fn()
    except SSALError as e:
        assert str(e).strip() and "\n" not in str(e), repr(str(e))
        return None


def in_tmp(write: Callable[[Path], Any], read: Callable[[Path], Any]) -> Any:
    with tempfile.TemporaryDirectory() as d:
        write(Path(d))
        return result_or_clear_error(lambda: read(Path(d)))


def cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def assert_one_line_error(code: int, err: list[str], command: str) -> None:
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith(f"ssal {command}: error: "), err
    assert "internal error" not in err[0] and "Traceback" not in err[0]


# --- value strategies ---------------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
DTYPES = ["uint8", "int8", "int32", "int64", "uint64", "float16", "float32", "float64", "bool", "complex64", "U2"]


@st.composite
def arrays(draw: st.DrawFn, shapes: st.SearchStrategy | None = None) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(shapes if shapes is not None else st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple))
    n = int(np.prod(shape)) if shape else 1
    raw = draw(st.lists(st.integers(-300, 300) | st.sampled_from([math.nan, math.inf]), min_size=n, max_size=n))
    if dtype.kind in "iub":
        raw = [0 if not math.isfinite(v) else v for v in raw]
    with np.errstate(all="ignore"):
        return np.array(raw, dtype=np.float64).astype(dtype).reshape(shape)


def truncations(data: bytes) -> st.SearchStrategy[bytes]:
    return st.integers(0, len(data) - 1).map(lambda n: data[:n])


def flips(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` with a few bytes overwritten."""

    def apply(edits: list[tuple[int, int]]) -> bytes:
        b = bytearray(data)
        for i, v in edits:
            b[i % len(b)] = v
        return bytes(b)

    return st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), min_size=1, max_size=6).map(apply)


def npz_bytes(members: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **members)
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


# --- NumPy data arrays (train.npz / test.npz / meta.json) ------------------------------------------------------------
def _meta() -> dict[str, Any]:
    return {
        "fine_label_names": [f"c{i}" for i in range(100)],
        "coarse_label_names": [f"s{i}" for i in range(20)],
        "fine_to_coarse": [i // 5 for i in range(100)],
    }


def _good_npz(n: int = 4) -> dict[str, np.ndarray]:
    return {
        "images": np.zeros((n, 32, 32, 3), np.uint8),
        "fine_labels": np.arange(n, dtype=np.int64),
        "coarse_labels": np.arange(n, dtype=np.int64) // 5,
    }


@st.composite
def npz_files(draw: st.DrawFn) -> bytes:
    good = _good_npz()
    kind = draw(st.sampled_from(["bytes", "truncated", "flipped", "members", "zip"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300) | st.binary(max_size=100).map(lambda b: b"PK\x03\x04" + b))
    if kind == "truncated":
        return draw(truncations(npz_bytes(good)))
    if kind == "flipped":
        return draw(flips(npz_bytes(good)))
    if kind == "zip":  # a zip whose members are not .npy arrays
        names = st.sampled_from(["images.npy", "fine_labels.npy", "coarse_labels.npy", "x", "images"])
        return zip_bytes(draw(st.dictionaries(names, st.binary(max_size=60), max_size=4)))
    members = dict(good)
    for key in draw(st.lists(st.sampled_from(sorted(good)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del members[key]
        else:
            members[key] = draw(arrays())
    if draw(st.booleans()):
        members["images"] = np.zeros((4, 32, 32, 3), np.uint8)
    if draw(st.booleans()):
        members["extra"] = np.array([None, 1], dtype=object)
    return npz_bytes(members)


@st.composite
def meta_files(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["good", "json", "field", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=80))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    meta = _meta()
    if kind == "field":
        key = draw(st.sampled_from(sorted(meta)))
        meta[key] = draw(
            json_values
            | st.lists(st.integers(-3, 200) | st.text(max_size=2), min_size=100, max_size=100)
            | st.lists(st.lists(st.integers(), max_size=1), min_size=100, max_size=100)
        )
    return json.dumps(meta).encode()


@FUZZ
@given(npz=npz_files(), meta=meta_files())
def test_npz_data_arrays(npz: bytes, meta: bytes) -> None:
    from ssal.data import load_arrays

    def write(d: Path) -> None:
        (d / "train.npz").write_bytes(npz)
        (d / "meta.json").write_bytes(meta)

    data = in_tmp(write, lambda d: load_arrays("cifar100", d, "train"))
    if data is not None:
        assert data.images.dtype == torch.uint8 and data.labels.dtype == torch.int64
        assert len(data.class_names) == 100 and all(isinstance(c, str) for c in data.class_names)
        assert data.labels.numel() == 0 or 0 <= int(data.labels.min()) <= int(data.labels.max()) < 100
        assert len(data.fine_to_coarse) == 100 and all(
            0 <= c < len(data.coarse_class_names) for c in data.fine_to_coarse
        )


# --- JSON groupings --------------------------------------------------------------------------------------------------
@st.composite
def grouping_files(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "text", "json", "fields", "labels"]))
    if kind == "bytes":
        return draw(st.binary(max_size=60))
    if kind == "text":
        return draw(st.text(max_size=60)).encode("utf-8", "surrogatepass")
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "labels":
        return "\n".join(str(v) for v in draw(st.lists(st.integers(-2, 12), max_size=12))).encode()
    d: dict[str, Any] = {"assignment": [0, 1, 0, 1, 2, 2], "k": 3, "num_classes": 6}
    d["class_names"] = ["a", "b", "c", "d", "e", "f"]
    for key in draw(st.lists(st.sampled_from([*d, "criterion", "seed", "source"]), max_size=3, unique=True)):
        d[key] = draw(json_values | st.lists(st.integers(-1, 7), max_size=8))
    return json.dumps(d).encode()


@FUZZ
@given(text=grouping_files(), suffix=st.sampled_from([".json", ".txt"]))
def test_grouping_files(text: bytes, suffix: str) -> None:
    g = in_tmp(lambda d: (d / f"g{suffix}").write_bytes(text), lambda d: Grouping.load(d / f"g{suffix}"))
    if g is not None:
        assert g.k >= 1 and all(0 <= a < g.k for a in g.assignment) and g.num_classes >= 2
        assert len(set(g.assignment)) == g.k
        assert g.class_names is None or (len(g.class_names) == g.num_classes)
        assert Grouping.from_dict(json.loads(json.dumps(g.to_dict()))) == g


# --- YAML configs and overrides ---------------------------------------------------------------------------------------
CONFIG_KEYS = [
    f"{section}.{key}"
    for section, fields in load_config(DEMO).to_dict().items()
    if isinstance(fields, dict)
    for key in fields
] + ["name", "run_dir", "seed", "base", "variants", "data", "nonsense.key", "data.nonsense"]
yaml_values = st.sampled_from(
    ["-1", "0", "1", "2.5", ".nan", ".inf", "-.inf", "1e400", "9" * 30, "abc", "[]", "[1, x]", "{}", "{a: 1}", "null"]
    + ["true", "''", "'", "[", "&a [*a]", "!!python/object:os.system x", "paper", "'32'", "auto", "1/2"]
)


@st.composite
def config_files(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "text", "keys", "keys", "keys"]))
    if kind == "bytes":
        return draw(st.binary(max_size=80))
    if kind == "text":
        return draw(st.text(st.sampled_from("abc:{}[]-,.'\"\n !&*#|>0123456789 \t"), max_size=60)).encode()
    lines = ["base: " + DEMO] if draw(st.integers(0, 3)) else []
    if draw(st.booleans()):
        key = draw(st.sampled_from([*CONFIG_KEYS, "1", "null", "[x]", "a..b", "''"]))
        lines.append(f"variants: {{a: {{{key}: {draw(yaml_values)}}}, b: {draw(yaml_values)}}}")
    for key in draw(st.lists(st.sampled_from(CONFIG_KEYS), max_size=2, unique=True)):
        value = draw(yaml_values)
        node = key.split(".")
        lines.append(f"{node[0]}: " + (f"{{{node[1]}: {value}}}" if len(node) > 1 else value))
    return "\n".join(lines).encode()


overrides = st.lists(
    st.tuples(st.sampled_from([*CONFIG_KEYS, "", ".", "data..root", "a.b.c"]), yaml_values).map("=".join)
    | st.text(max_size=10),
    max_size=2,
)


@FUZZ
@given(text=config_files(), items=st.just([]) | overrides, variant=st.none() | st.sampled_from(["a", "b"]))
def test_config_files(text: bytes, items: list[str], variant: str | None) -> None:
    def read(d: Path) -> None:
        cfg = load_config(d / "c.yaml", items, variant)
        save_config(cfg, d / "again.yaml")
        assert load_config(d / "again.yaml").to_dict() == {**cfg.to_dict(), "variant": None}
        event("loaded")

    in_tmp(lambda d: (d / "c.yaml").write_bytes(text), read)


@FEW
@given(key=st.sampled_from(CONFIG_KEYS), value=yaml_values)
def test_config_overrides_through_the_cli(key: str, value: str, capsys: pytest.CaptureFixture) -> None:
    with tempfile.TemporaryDirectory() as d:
        code, err = cli(
            ["train", "--config", DEMO, "ssal.groupings=random", f"run_dir={d}/r", f"{key}={value}"] + ["--dry-run"],
            capsys,
        )
    if code != 0:
        assert_one_line_error(code, err, "train")


# --- checkpoints ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with an (untrained) demo model's checkpoint: what ``load_run`` reads."""
    from ssal.build import DataBundle, build_model
    from ssal.grouping import random_grouping
    from ssal.runs import RunPaths, save_checkpoint

    root = tmp_path_factory.mktemp("fuzz") / "run"
    cfg = load_config(DEMO, ["ssal.groupings=random", f"run_dir={root}"])
    groupings = [random_grouping(10, 4, 0), random_grouping(10, 5, 1)]
    data = DataBundle("digits", 10, [str(i) for i in range(10)], mean=(0.3, 0.3, 0.3), std=(0.4, 0.4, 0.4))
    model = build_model(cfg, 10, groupings, data)
    paths = RunPaths(root)
    save_config(cfg, paths.config)
    meta = {
        "config": {k: v for k, v in cfg.to_dict().items() if k != "variant"},
        "groupings": [g.to_dict() for g in groupings],
        "class_names": data.class_names,
        "num_classes": 10,
        "mean": list(data.mean),
        "std": list(data.std),
        "epochs_done": 1,
    }
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    save_checkpoint({"state_dict": state, "ssal": meta, "epoch": 0}, paths.best)
    return root


def _set(d: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for k in path[:-1]:
        d = d[k] if isinstance(d, dict) else None
    if not isinstance(d, dict):
        return
    if value is _DELETE:
        d.pop(path[-1], None)
    else:
        d[path[-1]] = value


_DELETE = object()
CKPT_FIELDS = [
    ("state_dict",),
    ("ssal",),
    ("ssal", "config"),
    ("ssal", "groupings"),
    ("ssal", "class_names"),
    ("ssal", "num_classes"),
    ("ssal", "mean"),
    ("ssal", "std"),
    ("ssal", "epochs_done"),
    ("ssal", "groupings_pending"),
    ("ssal", "config", "model"),
    ("ssal", "config", "ssal", "branches"),
]
ckpt_values = (
    json_values
    | st.just(_DELETE)
    | arrays().map(lambda a: torch.from_numpy(a) if a.dtype.kind != "U" else a.tolist())
    | st.lists(st.floats(allow_nan=True) | st.integers(-2, 2), max_size=4)
)


@st.composite
def checkpoint_edits(draw: st.DrawFn) -> Callable[[dict[str, Any]], None]:
    edits = draw(st.lists(st.tuples(st.sampled_from(CKPT_FIELDS), ckpt_values), min_size=1, max_size=2))
    tensor_edit = draw(st.none() | st.tuples(st.integers(0, 100), arrays(), st.sampled_from(["replace", "nan", "del"])))

    def apply(ckpt: dict[str, Any]) -> None:
        if tensor_edit is not None:
            state = ckpt["state_dict"]
            i, value, how = tensor_edit
            key = sorted(state)[i % len(state)]
            if how == "del":
                del state[key]
            elif how == "nan" and state[key].is_floating_point():
                state[key] = torch.full_like(state[key], math.nan)
            elif value.dtype.kind != "U":
                state[key] = torch.from_numpy(value)
        for path, value in edits:
            with contextlib.suppress(KeyError, TypeError, IndexError):
                _set(ckpt, path, value)

    return apply


@st.composite
def checkpoint_bytes(draw: st.DrawFn, original: bytes) -> bytes:
    kind = draw(st.sampled_from(["bytes", "truncated", "flipped", "members"]))
    if kind == "bytes":
        return draw(st.binary(min_size=1, max_size=200) | st.binary(max_size=100).map(lambda b: b"PK\x03\x04" + b))
    if kind == "truncated":
        return draw(truncations(original).filter(bool))
    if kind == "flipped":
        return draw(flips(original))
    with zipfile.ZipFile(io.BytesIO(original)) as z:  # the same zip with members dropped or replaced
        members = {n: z.read(n) for n in z.namelist()}
    names = sorted(members)
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)):
        if draw(st.booleans()):
            del members[name]
        else:
            members[name] = draw(st.binary(max_size=40))
    return zip_bytes(members)


@MODEL
@given(data=st.data())
def test_checkpoint_files(run_dir: Path, data: st.DataObject) -> None:
    from ssal.runs import load_run

    original = (run_dir / "checkpoints" / "best.ckpt").read_bytes()
    blob = data.draw(checkpoint_bytes(original))

    info = in_tmp(lambda d: (d / "x.ckpt").write_bytes(blob), lambda d: load_run(run_dir, str(d / "x.ckpt")))
    if info is not None:
        assert info.num_classes == 10


@MODEL
@given(edit=checkpoint_edits())
def test_checkpoint_contents(run_dir: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    from ssal.runs import load_checkpoint, load_run, save_checkpoint

    def write(d: Path) -> None:
        ckpt = load_checkpoint(run_dir / "checkpoints" / "best.ckpt")
        edit(ckpt)
        save_checkpoint(ckpt, d / "x.ckpt")

    info = in_tmp(write, lambda d: load_run(run_dir, str(d / "x.ckpt")))
    if info is not None:
        x = torch.rand(2, 3, 16, 16)
        out = info.model(x)
        assert torch.isfinite(out.main).all()
        assert out.main.shape == (2, info.num_classes)
        assert info.class_names is None or len(info.class_names) == info.num_classes


def test_the_untouched_checkpoint_loads(run_dir: Path) -> None:
    from ssal.runs import load_run

    assert load_run(run_dir).num_classes == 10


# --- confusion matrices -----------------------------------------------------------------------------------------------
def npy_bytes(a: np.ndarray, fortran: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asfortranarray(a) if fortran else a, allow_pickle=True)
    return buf.getvalue()


@st.composite
def confusion_files(draw: st.DrawFn) -> tuple[str, bytes]:
    good = np.eye(8) * 10 + 1
    kind = draw(st.sampled_from(["bytes", "array", "truncated", "flipped", "text", "object"]))
    if kind == "bytes":
        return draw(st.sampled_from([".npy", ".csv", ".txt"])), draw(st.binary(max_size=120))
    if kind == "truncated":
        return ".npy", draw(truncations(npy_bytes(good)))
    if kind == "flipped":
        return ".npy", draw(flips(npy_bytes(good)))
    if kind == "object":
        return ".npy", npy_bytes(np.array([[1, None]] * 2, dtype=object))
    shape = st.sampled_from([(8, 8), (4, 4), (3, 3), (8, 4), (8,), (2, 8, 8), (0, 0), (8, 8)])
    a = draw(arrays(shape))
    if kind == "text":
        sep = draw(st.sampled_from([",", " ", ";"]))
        rows = np.atleast_2d(a).reshape(a.shape[0] if a.ndim else 1, -1) if a.size else []
        text = "\n".join(sep.join(str(v) for v in row) for row in rows)
        return draw(st.sampled_from([".csv", ".txt"])), text.encode()
    return ".npy", npy_bytes(a, draw(st.booleans()))


@FUZZ
@given(file=confusion_files(), k=st.integers(-1, 5), criterion=st.sampled_from(["join", "split"]))
def test_confusion_matrices(file: tuple[str, bytes], k: int, criterion: str) -> None:
    suffix, blob = file

    def read(d: Path) -> Grouping:
        m = load_confusion(d / f"m{suffix}")
        return group_from_confusion(m, k, criterion, seed=0)

    g = in_tmp(lambda d: (d / f"m{suffix}").write_bytes(blob), read)
    if g is not None:
        assert g.k == k and len(set(g.assignment)) == k


# --- images --------------------------------------------------------------------------------------------------------
MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "I;16", "F", "YCbCr", "PA"]
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


def image_bytes(mode: str, fmt: str, size: tuple[int, int] = (9, 7)) -> bytes | None:
    from PIL import Image

    img = Image.new(mode, size)
    buf = io.BytesIO()
    try:
        img.save(buf, fmt)
    except (OSError, ValueError, KeyError):
        return None  # this format cannot store this mode
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB pixels, with one tiny data chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@st.composite
def image_files(draw: st.DrawFn) -> tuple[str, bytes]:
    return draw(kinded_image_files())[1:]


@st.composite
def kinded_image_files(draw: st.DrawFn) -> tuple[str, str, bytes]:
    kind = draw(st.sampled_from(["mode", "truncated", "flipped", "bytes", "huge", "empty"]))
    return (kind, *draw(_image_file(kind)))


@st.composite
def _image_file(draw: st.DrawFn, kind: str) -> tuple[str, bytes]:
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    if kind == "empty":
        return FORMATS[fmt], b""
    if kind == "huge":
        side = st.integers(1, 2**31 - 1)
        return ".png", png_declaring(draw(side), draw(side))
    if kind == "bytes":
        magic = draw(st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\0"]))
        return FORMATS[fmt], magic + draw(st.binary(max_size=120))
    good = None
    while good is None:
        good = image_bytes(draw(st.sampled_from(MODES)), fmt)
    if kind == "truncated":
        return FORMATS[fmt], draw(truncations(good))
    if kind == "flipped":
        return FORMATS[fmt], draw(flips(good))
    return FORMATS[fmt], good


@FUZZ
@given(file=kinded_image_files())
def test_image_files(file: tuple[str, str, bytes]) -> None:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from ssal.data.folder import _decode, _image_problem, check_images
    from ssal.inference import load_image

    kind, suffix, blob = file
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c" / f"x{suffix}"
        path.parent.mkdir()
        path.write_bytes(blob)
        problem = _image_problem(str(path))
        assert problem is None or (isinstance(problem, str) and problem and "\n" not in problem)
        if problem is not None and suffix in IMG_EXTENSIONS:  # ImageFolder's extensions: others are not images
            with pytest.raises(SSALError, match=r"1 of 1 images"):
                check_images(d)
        img = result_or_clear_error(lambda: _decode(str(path)))
        # what the check lets through decodes (damage inside JPEG data, or PNG data that stops early under a valid
        # CRC, is only found by decoding, and then named)
        if problem is None and kind not in ("flipped", "huge"):
            assert img is not None and img.mode == "RGB"
        x = result_or_clear_error(lambda: load_image(path, lambda im: torch.as_tensor(np.array(im.convert("RGB")))))
        assert x is None or x.dtype == torch.uint8


# --- through the CLI ------------------------------------------------------------------------------------------------
@FEW
@given(blob=st.binary(max_size=100), suffix=st.sampled_from([".npy", ".csv", ".txt"]))
def test_group_cli_with_a_broken_matrix(blob: bytes, suffix: str, capsys: pytest.CaptureFixture) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / f"m{suffix}").write_bytes(blob)
        code, err = cli(["group", "--confusion", f"{d}/m{suffix}", "--k", "2", "--out", f"{d}/g.json"], capsys)
        assert not (Path(d) / "g.json").exists() or code == 0
    if code != 0:
        assert_one_line_error(code, err, "group")


@FEW
@given(blob=st.binary(max_size=100))
def test_train_cli_with_a_broken_config(blob: bytes, capsys: pytest.CaptureFixture) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "c.yaml").write_bytes(blob)
        code, err = cli(["train", "--config", f"{d}/c.yaml", f"run_dir={d}/r", "--dry-run"], capsys)
    if code != 0:
        assert_one_line_error(code, err, "train")


@FEW
@given(data=st.data())
def test_evaluate_and_predict_cli_with_broken_files(
    run_dir: Path, data: st.DataObject, capsys: pytest.CaptureFixture
) -> None:
    original = (run_dir / "checkpoints" / "best.ckpt").read_bytes()
    blob = data.draw(checkpoint_bytes(original))
    suffix, image = data.draw(image_files())
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "x.ckpt").write_bytes(blob)
        (Path(d) / f"x{suffix}").write_bytes(image)
        code, err = cli(["evaluate", str(run_dir), "--checkpoint", f"{d}/x.ckpt"], capsys)
        assert_one_line_error(code, err, "evaluate") if code != 0 else None
        code, err = cli(["predict", str(run_dir), f"{d}/x{suffix}"], capsys)
    if code != 0:
        assert_one_line_error(code, err, "predict")
