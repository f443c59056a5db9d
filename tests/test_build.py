"""build: a run's parts made once from its config (build_run), and the loader factory the engine calls per rank."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from ssal.build import Loaders, build_run, load_data
from ssal.config import load_config
from ssal.errors import SSALError

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _cfg(*overrides: str):
    return load_config(DEMO, ["ssal.groupings=random", *overrides])


def test_build_run_makes_every_part_from_the_config() -> None:
    cfg = _cfg()
    data = load_data(cfg.data)
    parts = build_run(cfg, data)
    n = len(cfg.ssal.branches)
    assert n > 0 and len(parts.groupings) == len(parts.model.branches) == len(parts.eta) == n
    assert [g.k for g in parts.groupings] == [b["k"] for b in cfg.ssal.branches]
    assert parts.num_params == sum(p.numel() for p in parts.model.parameters())
    x, y = next(iter(parts.loaders("train", train=True)))
    loss = parts.loss(parts.model(x), y)
    assert torch.isfinite(loss.total) and len(loss.aux) == n
    assert parts.loaders.batch_size == cfg.data.batch_size == len(y)


def test_build_run_of_a_baseline_has_no_branch() -> None:
    cfg = _cfg("ssal.branches=[]")
    parts = build_run(cfg, load_data(cfg.data))
    assert parts.groupings == [] and parts.eta == [] and len(parts.model.branches) == 0


def test_build_run_refuses_a_k_the_classes_cannot_fill() -> None:
    cfg = _cfg("ssal.branches=[{at: g2, k: 9}]")  # digits: 10 classes, k at most C/2 where ssal makes the groups
    with pytest.raises(SSALError, match=r"k=9 is out of range: need 2 <= k <= C/2 = 5 for C=10"):
        build_run(cfg, load_data(cfg.data))


def test_loaders_shard_the_validation_split_over_ranks_without_loss_or_repeat() -> None:
    cfg = _cfg()
    data = load_data(cfg.data)
    loaders = Loaders(cfg, data)
    whole = Counter(int(v) for _, y in loaders("val", train=False) for v in y)
    ranks = [Counter(int(v) for _, y in loaders("val", train=False, rank=r, world_size=2) for v in y) for r in (0, 1)]
    assert sum(whole.values()) == len(data.val.labels)
    assert ranks[0] + ranks[1] == whole and min(sum(c.values()) for c in ranks) > 0
    shards = [len(loaders("train", train=True, rank=r, world_size=2)) for r in (0, 1)]
    assert shards[0] == shards[1] > 0 and sum(shards) <= len(loaders("train", train=True))
