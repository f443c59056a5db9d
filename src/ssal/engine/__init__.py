"""The training engine: a LightningModule around ``SSALModel`` + ``SSALLoss`` + ``SSALMetrics``, and the Trainer.

One code path serves 1 CPU core to N GPUs on M nodes (Lightning: DDP, gloo on CPU, SLURM, precision). The engine
adds no model logic: the loss is paper Eq. 3 (``ssal.loss``), the joint prediction Sec. 3.4 (``ssal.prediction``).
Batch iterables are passed to Lightning as they are (``use_distributed_sampler=False``): every rank takes its own
shard through ``rank``/``world_size`` (``DeviceLoader``) or a DistributedSampler (ImageFolder).

``task``: the LightningModule (with its optimiser and schedule) and the LightningDataModule; ``trainer``: the
Trainer, metrics.csv and the best/last checkpoints; ``fit``: config -> objects -> ``Trainer.fit`` (and resume).
"""

from .fit import FitResult, check_config, fit
from .task import (
    SSALDataModule,
    SSALTask,
    TrainingDivergedError,
    build_optimizer,
    compiled_gradient_problem,
    lr_factor,
    lr_lambdas,
)
from .trainer import RunWriter, build_trainer, quiet_lightning

__all__ = [
    "FitResult",
    "RunWriter",
    "SSALDataModule",
    "SSALTask",
    "TrainingDivergedError",
    "build_optimizer",
    "build_trainer",
    "check_config",
    "compiled_gradient_problem",
    "fit",
    "lr_factor",
    "lr_lambdas",
    "quiet_lightning",
]
