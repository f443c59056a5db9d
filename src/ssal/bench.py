"""Speed measurements behind ``ssal bench`` (issue goals in docs/benchmarks.md).

Every number is measured in the same process on the machine it runs on: a bf16 matmul peak, the training
throughput of a bare PyTorch loop and of ssal's own engine path, the cost of the SSAL branches (time and FLOPs),
the grouping time for C = 1000, k = 500, and the overhead of the joint prediction.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .architecture import SSALModel
from .grouping import group_from_confusion
from .hardware import cpu_has_fast_bf16, resolve_precision
from .loss import SSALLoss
from .models import create_model, model_input_size
from .prediction import joint_log_probs

__all__ = [
    "BenchSettings",
    "branch_flop_share",
    "engine_train_throughput",
    "forward_flops",
    "grouping_seconds",
    "interleaved_step_cost",
    "joint_prediction_overhead",
    "machine_info",
    "matmul_peak_gflops",
    "synthetic_confusion",
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


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for a Lightning-style precision string (``auto`` resolved for this machine)."""
    precision = resolve_precision(precision, device.type)
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def matmul_peak_gflops(dtype: torch.dtype = torch.bfloat16, max_n: int = 2048, budget_s: float = 0.25) -> float:
    """Best achieved GFLOP/s of square matmuls in ``dtype`` (the practical peak of this machine).

    Sizes grow from 256 up to ``max_n`` while one product takes under ``budget_s`` seconds, so a machine
    without fast bf16 (emulated, ~1 GFLOP/s) still finishes quickly.
    """
    device = _device()
    best, n = 0.0, 256
    while n <= max_n:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        a @ b
        times = []
        for _ in range(5):
            _sync(device)
            t = time.perf_counter()
            a @ b
            _sync(device)
            times.append(time.perf_counter() - t)
        best = max(best, 2 * n**3 / min(times) / 1e9)
        if min(times) * 8 > budget_s:  # the next size costs 8x more
            break
        n *= 2
    return best


def _model_and_batch(s: BenchSettings, branches: Any) -> tuple[SSALModel, SSALLoss, torch.Tensor, torch.Tensor]:
    device = _device()
    torch.manual_seed(0)
    model = create_model(s.model, s.num_classes, ssal=branches, **s.model_options).to(device)
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.rand(s.batch_size, *model_input_size(s.model), device=device)
    if s.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, s.num_classes, (s.batch_size,), device=device)
    return model, SSALLoss(model.gammas).to(device), x, y


def _seconds(step: Callable[[], None], device: torch.device) -> float:
    """Wall time of one call of ``step``, with the device synchronised before and after."""
    _sync(device)
    t = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - t


def _timed_steps(step: Callable[[], None], steps: int, warmup: int) -> float:
    """Median seconds per call of ``step`` after ``warmup`` calls."""
    device = _device()
    for _ in range(warmup):
        step()
    return float(np.median([_seconds(step, device) for _ in range(steps)]))


def _train_step_fn(model: SSALModel, crit: SSALLoss, x: torch.Tensor, y: torch.Tensor, precision: str) -> Callable:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    device = x.device

    def step() -> None:
        with autocast(precision, device):
            loss = crit(model(x), y).total
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
        steps.append(_train_step_fn(model, crit, x, y, s.precision))
    device = _device()
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
    """Time of the joint prediction (+JP on the outputs) as a fraction of the inference forward time."""
    model, _, x, _ = _model_and_batch(s, list(branches))
    model.eval()
    device = x.device
    with torch.no_grad(), autocast(s.precision, device):
        out = model(x)
        fwd = _timed_steps(lambda: model(x), s.steps, 1)
        jp = _timed_steps(lambda: joint_log_probs(out, model.gammas, eta), s.steps * 4, 2)
    return jp / fwd


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    """Yields a list that holds the elapsed seconds once the block ends."""
    box: list[float] = []
    t = time.perf_counter()
    yield box
    box.append(time.perf_counter() - t)


def engine_train_throughput(s: BenchSettings, branches: Any = (), num_batches: int = 12) -> dict[str, float]:
    """img/s of ssal's own training path: the Lightning engine, ``SSALTask`` and the on-device ``DeviceLoader``.

    The same objects ``ssal train`` builds, on a synthetic uint8 data set of ``num_batches`` batches; steady-state
    throughput is timed between training-batch starts after ``s.warmup`` batches (epoch-end work excluded).
    """
    import tempfile

    import lightning as L

    from .build import DataBundle
    from .config import Config
    from .data import ImageArrays
    from .engine import RunWriter, SSALDataModule, SSALTask, build_trainer, quiet_lightning
    from .runs import RunPaths

    quiet_lightning()
    C, (c, h, w) = s.num_classes, model_input_size(s.model)
    n = s.batch_size * num_batches
    g = torch.Generator().manual_seed(0)
    arrays = ImageArrays(
        torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g),
        torch.arange(n) % C,
        [str(i) for i in range(C)],
        name="synthetic",
    )
    cfg = Config(name="bench")
    cfg.data.batch_size, cfg.trainer.channels_last = s.batch_size, s.channels_last
    cfg.trainer.precision = resolve_precision(s.precision, _device().type)
    cfg.trainer.epochs, cfg.trainer.progress_bar, cfg.trainer.devices = 1, False, 1
    data = DataBundle("synthetic", C, arrays.class_names, train=arrays)
    model, crit, _, _ = _model_and_batch(s, list(branches))
    task = SSALTask(model, crit, [1.0] * len(model.branches), cfg.optim, cfg.schedule, 1)
    stamps: list[float] = []

    class Stamp(L.Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            _sync(_device())
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        paths = RunPaths(Path(tmp))
        trainer = build_trainer(cfg, paths, RunWriter(paths, "f_top1"), has_val=False)
        trainer.callbacks.append(Stamp())
        trainer.fit(task, datamodule=SSALDataModule(cfg, data))
    steady = np.diff(stamps[s.warmup :])
    sec = float(np.median(steady))
    return {"img_per_s": s.batch_size / sec, "sec_per_step": sec}
