"""Speed measurements behind ``ssal bench`` (goals in docs/benchmarks.md).

Every number is measured in the same process on the machine it runs on: matmul peaks, the training throughput
of ssal's own training path and of a bare PyTorch loop, the cost of the SSAL branches (time and FLOPs), the
grouping time for C = 1000, k = 500, and the overhead of the joint prediction. Every ratio comes from
interleaved measurements (the two things alternate step by step, so both see the same background load), and
the load other processes put on the machine while the benchmark ran is recorded (``ssal.cpuload.ProcessLoad``).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .architecture import SSALModel
from .build import DataBundle, Loaders
from .config import Config
from .data import ImageArrays
from .grouping import group_from_confusion
from .hardware import cpu_has_fast_bf16, resolve_precision
from .loss import SSALLoss
from .models import create_model, model_input_size
from .prediction import joint_log_probs
from .runs import RunPaths
from .runtime import autocast, default_device

__all__ = [
    "BenchSettings",
    "interleaved_train_path",
    "branch_flop_share",
    "forward_flops",
    "grouping_seconds",
    "interleaved_step_cost",
    "joint_prediction_overhead",
    "machine_info",
    "matmul_peak",
    "matmul_peak_gflops",
    "synthetic_confusion",
    "train_step_fn",
    "train_step_flops",
]

log = logging.getLogger(__name__)


@dataclass
class BenchSettings:
    """What one throughput measurement trains: model, batch, precision, layout."""

    model: str = "fastnet_cifar"
    model_options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the model's builder
    num_classes: int = 100
    batch_size: int = 256
    precision: str = "auto"  # auto | 32 | bf16-mixed | 16-mixed
    channels_last: bool = True
    steps: int = 8
    warmup: int = 3
    input_size: tuple[int, int, int] | None = None  # (C, H, W) of the training images; None: the model's native size

    def image_size(self) -> tuple[int, int, int]:
        """(C, H, W) the model is measured at: ``input_size``, else the model's native size."""
        return tuple(self.input_size) if self.input_size else model_input_size(self.model, self.model_options)  # type: ignore[return-value]


def machine_info() -> dict[str, Any]:
    """Torch version, device, threads and CPU name, for the record."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "torch": torch.__version__,
        "device": dev,
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "fast_bf16": torch.cuda.is_available() or cpu_has_fast_bf16(),
        "precision_auto": resolve_precision("auto", dev if dev == "cpu" else "cuda"),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _seconds(step: Callable[[], None], device: torch.device) -> float:
    """Wall time of one call of ``step``, with the device synchronised before and after."""
    _sync(device)
    t = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - t


def matmul_peak(dtype: torch.dtype = torch.bfloat16, max_n: int = 2048, budget_s: float = 0.25) -> tuple[float, int]:
    """Best achieved GFLOP/s of square matmuls in ``dtype`` (the practical peak of this machine) and that size.

    Sizes grow from 256 up to ``max_n`` while one product takes under ``budget_s`` seconds, so a machine
    without fast bf16 (emulated, ~1 GFLOP/s) still finishes quickly.
    """
    device = default_device()
    best, best_n, n = 0.0, 256, 256
    while n <= max_n:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        a @ b
        times = [_seconds(lambda: a @ b, device) for _ in range(5)]  # noqa: B023 (called at once)
        if 2 * n**3 / min(times) / 1e9 > best:
            best, best_n = 2 * n**3 / min(times) / 1e9, n
        if min(times) * 8 > budget_s:  # the next size costs 8x more
            break
        n *= 2
    return best, best_n


def matmul_peak_gflops(dtype: torch.dtype = torch.bfloat16, max_n: int = 2048, budget_s: float = 0.25) -> float:
    """Best achieved GFLOP/s of square matmuls in ``dtype`` (see ``matmul_peak``)."""
    return matmul_peak(dtype, max_n, budget_s)[0]


def _matmul_step(dtype: torch.dtype, n: int) -> tuple[Callable[[], None], float]:
    """One n x n matmul in ``dtype`` as a callable, and its FLOPs."""
    device = default_device()
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return (lambda: a @ b), 2.0 * n**3


def _model_and_batch(s: BenchSettings, branches: Any) -> tuple[SSALModel, SSALLoss, torch.Tensor, torch.Tensor]:
    device = default_device()
    torch.manual_seed(0)
    size = s.image_size()
    model = create_model(s.model, s.num_classes, ssal=branches, input_size=size, **s.model_options).to(device)
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.rand(s.batch_size, *size, device=device)
    if s.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, s.num_classes, (s.batch_size,), device=device)
    return model, SSALLoss(model.gammas).to(device), x, y


def _timed_steps(step: Callable[[], None], steps: int, warmup: int) -> float:
    """Median seconds per call of ``step`` after ``warmup`` calls."""
    device = default_device()
    for _ in range(warmup):
        step()
    return float(np.median([_seconds(step, device) for _ in range(steps)]))


def train_step_fn(
    model: SSALModel,
    crit: SSALLoss,
    x: torch.Tensor,
    y: torch.Tensor,
    precision: str,
    forward: Callable[[torch.Tensor], Any] | None = None,
) -> Callable[[], None]:
    """One SGD training step of ``model`` on the batch ``(x, y)`` as a callable; ``forward`` replaces ``model``'s
    (e.g. a ``torch.compile`` of it)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    device, forward = x.device, forward or model

    def step() -> None:
        with autocast(device, precision):
            loss = crit(forward(x), y).total
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def interleaved_step_cost(s: BenchSettings, branches: Any) -> dict[str, float]:
    """Training-step time with the SSAL branches / without, from alternating steps of the two models.

    Alternating the two bare loops step by step exposes both to the same background load, so the ratio (median
    of per-pair ratios) stays meaningful on a shared machine where separate measurements drift.
    """
    steps = []
    for br in ((), branches):
        model, crit, x, y = _model_and_batch(s, list(br))
        model.train()
        steps.append(train_step_fn(model, crit, x, y, s.precision))
    device = default_device()
    for _ in range(s.warmup):
        for step in steps:
            step()
    pairs = [[_seconds(step, device) for step in steps] for _ in range(s.steps)]
    base, ssal = (float(np.median([p[i] for p in pairs])) for i in (0, 1))
    return {
        "ratio": float(np.median([p[1] / p[0] for p in pairs])),
        "base_sec_per_step": base,
        "ssal_sec_per_step": ssal,
        "base_img_per_s": s.batch_size / base,
        "ssal_img_per_s": s.batch_size / ssal,
    }


def train_step_flops(s: BenchSettings, branches: Any = ()) -> int:
    """FLOPs of one training step (forward + backward) counted by ``torch.utils.flop_counter``."""
    model, crit, x, y = _model_and_batch(s, list(branches))
    with FlopCounterMode(display=False) as counter:
        crit(model(x), y).total.backward()
    return int(counter.get_total_flops())


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def branch_flop_share(s: BenchSettings, branches: Any) -> float:
    """Extra forward FLOPs of the SSAL branches divided by the backbone's forward FLOPs."""
    model, _, x, _ = _model_and_batch(s, list(branches))
    model.eval()
    total = forward_flops(model, x[:2])
    base = forward_flops(model.backbone, x[:2])
    return (total - base) / base


def synthetic_confusion(C: int, seed: int = 0) -> np.ndarray:
    """A C x C confusion matrix with a strong diagonal and sparse, heavy-tailed off-diagonal counts."""
    rng = np.random.default_rng(seed)
    conf = rng.random((C, C))
    for _ in range(3):  # x ** 8 by squaring: several times faster than a float power at C = 10,000
        conf *= conf
    conf *= 10
    conf.round(out=conf)
    conf[np.arange(C), np.arange(C)] += 50
    return conf


def grouping_seconds(
    C: int = 1000, k: int = 500, repeats: int = 3, criterion: str = "join", refine: bool = False
) -> float:
    """Best wall time of ``group_from_confusion`` on a synthetic C x C confusion matrix."""
    conf = synthetic_confusion(C)
    best = float("inf")
    for r in range(repeats):
        t = time.perf_counter()
        group_from_confusion(conf, k, criterion, seed=r, refine=refine)  # type: ignore[arg-type]
        best = min(best, time.perf_counter() - t)
    return best


def joint_prediction_overhead(s: BenchSettings, branches: Any, eta: float = 0.5) -> float:
    """Time of the joint prediction (+JP on the outputs) as a fraction of the inference forward time.

    Forward passes and joint predictions alternate; the result is the median of the per-pair ratios.
    """
    model, _, x, _ = _model_and_batch(s, list(branches))
    model.eval()
    device = x.device
    with torch.no_grad(), autocast(device, s.precision):
        out = model(x)
        joint_log_probs(out, model.gammas, eta)
        pairs = [
            (_seconds(lambda: model(x), device), _seconds(lambda: joint_log_probs(out, model.gammas, eta), device))
            for _ in range(s.steps)
        ]
    return float(np.median([jp / fwd for fwd, jp in pairs]))


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    """Yields a list that holds the elapsed seconds once the block ends."""
    box: list[float] = []
    t = time.perf_counter()
    yield box
    box.append(time.perf_counter() - t)


def interleaved_train_path(
    s: BenchSettings, branches: Any = (), cfg: Any = None, data: Any = None, peak_dtypes: tuple = ()
) -> dict[str, float]:
    """Achieved FLOP/s of ssal's training path against a bare loop over the same data and against matmul peaks.

    The training path is what ``ssal train`` builds: the Lightning trainer of ``build_trainer``, ``SSALTask`` and
    the loader of ``make_loader`` (for arrays the on-device loader with the config's augmentation). ``cfg`` and
    ``data`` default to a synthetic uint8 data set. Inside one ``trainer.fit`` a callback, at every batch start,
    runs one step of a bare PyTorch loop (its own copy of the model and optimiser, its own loader over the same
    data, augmentation included) and one square matmul per dtype of ``peak_dtypes``, each timed; the training
    path's step is timed from the end of the callback to the next batch start (loading the batch included).
    Ratios are medians of the per-step ratios after ``s.warmup`` steps. With ``cfg.trainer.compile`` both loops
    run through ``torch.compile``.
    """
    from .engine import SSALTask, quiet_lightning

    quiet_lightning()
    device = default_device()
    cfg, n_batches = _train_path_config(s, cfg, device)
    compiled = bool(cfg.trainer.compile)
    if data is None:
        data = _synthetic_data(s, n_batches)
    flops = train_step_flops(s, branches)
    model, crit, _, _ = _model_and_batch(s, list(branches))
    task = SSALTask(model, crit, [1.0] * len(model.branches), optim=cfg.optim, schedule=cfg.schedule, epochs=1,
                    compile=compiled)  # fmt: skip
    bare = _BareLoop.create(s, branches, cfg, device=device, compiled=compiled)  # the same initial weights
    loaders = Loaders(cfg, data)
    bare.start(loaders("train", train=True, device=device))
    mms = [_matmul_step(dt, matmul_peak(dt)[1]) for dt in peak_dtypes]
    interleave = _Interleave(device, bare.step, [mm for mm, _ in mms])
    _fit_train_path(cfg, task, data, loaders, interleave)
    mm_flops = [n_flops for _, n_flops in mms]
    return _train_path_ratios(interleave.times, s=s, flops=flops, peak_dtypes=peak_dtypes, mm_flops=mm_flops)


def _train_path_config(s: BenchSettings, cfg: Any, device: torch.device) -> tuple[Any, int]:
    """A copy of ``cfg`` (default: a bench config) that trains one epoch of the measured batches, and their count."""
    if cfg is None:
        cfg = Config(name="bench")
        cfg.data.batch_size = s.batch_size
    cfg = copy.deepcopy(cfg)
    compiled = bool(cfg.trainer.compile)  # then both loops run compiled, after 3 warm-up steps at least
    n_batches = max(s.warmup, 3 if compiled else 0) + s.steps + 1
    cfg.trainer.channels_last = s.channels_last
    cfg.trainer.precision = resolve_precision(s.precision, device.type)
    cfg.trainer.epochs, cfg.trainer.progress_bar, cfg.trainer.devices = 1, False, 1
    cfg.trainer.limit_train_batches = n_batches  # a batch count: Lightning accepts an int
    return cfg, n_batches


def _synthetic_data(s: BenchSettings, n_batches: int) -> DataBundle:
    """A seeded data set of random uint8 images in ``s``'s image size: ``n_batches`` batches of ``s.batch_size``."""
    C, (c, h, w) = s.num_classes, s.image_size()
    n = s.batch_size * n_batches
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)
    arrays = ImageArrays(images, torch.arange(n) % C, [str(i) for i in range(C)], name="synthetic")
    return DataBundle("synthetic", C, arrays.class_names, train=arrays)


@dataclass
class _BareLoop:
    """A bare PyTorch training loop: its own model, loss and optimiser, stepping through its own loader."""

    forward: Callable[[torch.Tensor], Any]
    crit: SSALLoss
    opt: torch.optim.Optimizer
    device: torch.device
    precision: str
    loader: Any = None
    batches: Iterator[Any] = field(default_factory=lambda: iter(()))

    @classmethod
    def create(cls, s: BenchSettings, branches: Any, cfg: Any, *, device: torch.device, compiled: bool) -> _BareLoop:
        """The bare loop of ``s``'s model with ``branches`` and the optimiser of ``cfg``; call ``start`` next."""
        from .engine import build_optimizer

        bare, crit, _, _ = _model_and_batch(s, list(branches))
        bare.train()
        forward = torch.compile(bare.forward) if compiled else bare.forward
        return cls(forward, crit, build_optimizer(bare, cfg.optim), device, s.precision)

    def start(self, loader: Any) -> None:
        """Take the batches from ``loader``, from its start again whenever it ends."""
        self.loader, self.batches = loader, iter(loader)

    def step(self) -> None:
        """One training step on the next batch."""
        try:
            x, y = next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            x, y = next(self.batches)
        with autocast(self.device, self.precision):
            loss = self.crit(self.forward(x), y).total
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


class _Interleave(L.Callback):
    """At every batch start: the training path's last step time, then one timed bare step and each timed matmul."""

    def __init__(self, device: torch.device, bare_step: Callable[[], None], matmuls: list[Callable[[], None]]) -> None:
        self.device, self.bare_step, self.matmuls = device, bare_step, matmuls
        self.times: dict[str, list[float]] = {"engine": [], "bare": [], **{f"mm{i}": [] for i in range(len(matmuls))}}
        self.last_start: float | None = None

    def on_train_batch_start(self, *args: Any) -> None:
        _sync(self.device)
        if self.last_start is not None:
            self.times["engine"].append(time.perf_counter() - self.last_start)
        self.times["bare"].append(_seconds(self.bare_step, self.device))
        for i, mm in enumerate(self.matmuls):
            self.times[f"mm{i}"].append(_seconds(mm, self.device))
        _sync(self.device)
        self.last_start = time.perf_counter()


def _fit_train_path(cfg: Any, task: Any, data: DataBundle, loaders: Loaders, callback: L.Callback) -> None:
    """Train ``task`` for one epoch as ``ssal train`` would, with ``callback``, in a temporary run directory."""
    from .engine import RunWriter, SSALDataModule, build_trainer

    with tempfile.TemporaryDirectory() as tmp:
        paths = RunPaths(Path(tmp))
        trainer = build_trainer(cfg, paths, RunWriter(paths, "f_top1"), has_val=False, callbacks=[callback])
        trainer.fit(task, datamodule=SSALDataModule(data, loaders))


def _train_path_ratios(
    times: dict[str, list[float]], *, s: BenchSettings, flops: int, peak_dtypes: tuple, mm_flops: list[float]
) -> dict[str, float]:
    """Throughputs and ratios of the training path, the bare loop and the matmuls from their interleaved times."""
    k = min(len(times["engine"]), s.steps)
    if k < 1:
        raise RuntimeError(f"the training path ran {len(times['engine']) + 1} batches; need warmup + steps + 1")
    eng = np.array(times["engine"][-k:])
    bar = np.array(times["bare"][-k - 1 : -1])  # the bare step measured right before each timed engine step
    out = {
        "rounds": float(k),
        "train_step_gflop": flops / 1e9,
        "engine_img_per_s": s.batch_size / float(np.median(eng)),
        "bare_loader_img_per_s": s.batch_size / float(np.median(bar)),
        "engine_vs_bare": float(np.median(bar / eng)),
        "engine_gflops": flops / float(np.median(eng)) / 1e9,
        "bare_loader_gflops": flops / float(np.median(bar)) / 1e9,
    }
    for i, (dt, dt_flops) in enumerate(zip(peak_dtypes, mm_flops, strict=True)):
        mm = np.array(times[f"mm{i}"][-k - 1 : -1])
        name = str(dt).replace("torch.", "")
        out[f"{name}_matmul_peak_gflops"] = dt_flops / float(np.median(mm)) / 1e9
        out[f"engine_fraction_of_{name}_peak"] = float(np.median((flops / eng) / (dt_flops / mm)))
    return out
