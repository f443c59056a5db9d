"""Augmentation: mixup / cutmix with SSAL's group targets, auto_augment and random erasing, on both data paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ssal
from ssal.architecture import SSALOutput
from ssal.config import load_config
from ssal.data import DeviceLoader, ImageArrays
from ssal.data.mixing import BatchAutoAugment, BatchMixer, MixCollate, MixSettings, auto_augment_transform, erase_batch
from ssal.errors import SSALError
from ssal.loss import group_targets, membership
from ssal.runs import RunPaths, read_metrics

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"
GAMMA = torch.tensor([0, 1, 0, 2, 1, 2, 2])  # 7 classes in 3 groups


def _arrays(n: int = 56, c: int = 7, side: int = 8) -> ImageArrays:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)
    return ImageArrays(images, torch.arange(n) % c, [str(i) for i in range(c)], name="t")


def _epoch(loader: DeviceLoader, epoch: int, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch, start_batch=start)
    return list(loader)


# --- group targets of mixed batches ------------------------------------------------------------------------------
def test_group_targets_of_a_mixed_batch_sum_to_one_and_sum_members() -> None:
    mix = MixSettings(mixup=0.8, cutmix=1.0, prob=1.0, switch_prob=0.5)
    loader = DeviceLoader(_arrays(), 8, train=True, mix=mix, max_shift=1, seed=3)
    batches = _epoch(loader, 0)
    assert all(y.shape == (8, 7) and y.dtype == torch.float32 for _, y in batches)
    mixed = [y for _, y in batches if (y > 0).sum(1).max() == 2]
    assert mixed, "no batch mixed two classes"
    for y in mixed:
        assert torch.allclose(y.sum(1), torch.ones(8))
        t = group_targets(y, GAMMA)
        assert t.shape == (8, 3)
        assert torch.allclose(t.sum(1), torch.ones(8))
        for b in range(8):
            for k in range(3):
                assert torch.isclose(t[b, k], y[b, torch.eq(GAMMA, k)].sum())
    assert torch.equal(membership(GAMMA), F.one_hot(GAMMA, 3).float())
    hard = torch.tensor([0, 3, 6])
    assert torch.equal(group_targets(hard, GAMMA), F.one_hot(GAMMA[hard], 3).float())


def _out(b: int = 4, seed: int = 0) -> SSALOutput:
    g = torch.Generator().manual_seed(seed)
    return SSALOutput(torch.randn(b, 7, generator=g), [torch.randn(b, 3, generator=g)])


@pytest.mark.parametrize("smoothing", [(0.0, False), (0.2, False), (0.2, True)])
def test_soft_targets_compose_with_label_and_group_smoothing(smoothing: tuple[float, bool]) -> None:
    ls, group = smoothing
    loss = ssal.SSALLoss([GAMMA], aux_weights=0.5, label_smoothing=ls, group_smoothing=group)
    out, y = _out(), torch.tensor([0, 3, 5, 6])
    hard = loss(out, y)
    one_hot = loss(out, F.one_hot(y, 7).float())  # a batch that did not mix: the same loss as class indices
    for a, b in zip(hard, one_hot, strict=True):
        assert torch.allclose(torch.as_tensor(a), torch.as_tensor(b), atol=1e-6)
    # cross-entropy is linear in the target: the loss of a mixed target is the mixture of the two losses, i.e. the
    # smoothing is applied to each one-hot before mixing (timm's order), for f and for the branch
    lam, y2 = 0.3, torch.tensor([2, 2, 1, 4])
    mixed = loss(out, lam * F.one_hot(y, 7).float() + (1 - lam) * F.one_hot(y2, 7).float())
    a, b = loss(out, y), loss(out, y2)
    assert torch.allclose(mixed.main, lam * a.main + (1 - lam) * b.main, atol=1e-5)
    assert torch.allclose(mixed.aux[0], lam * a.aux[0] + (1 - lam) * b.aux[0], atol=1e-5)
    assert torch.allclose(mixed.total, lam * a.total + (1 - lam) * b.total, atol=1e-5)


def test_loss_refuses_targets_of_the_wrong_shape() -> None:
    loss = ssal.SSALLoss([GAMMA])
    with pytest.raises(SSALError, match=r"soft targets of shape \(4, 7\)"):
        loss(_out(), torch.rand(4, 6))
    with pytest.raises(SSALError, match="class indices"):
        loss(_out(), torch.zeros(4, 7, dtype=torch.long))


# --- the array loader ------------------------------------------------------------------------------------------
def test_mixup_and_cutmix_on_the_device_are_what_they_say() -> None:
    data = _arrays()
    plain = DeviceLoader(data, 8, train=True, max_shift=2, seed=5)
    for mode in ("mixup", "cutmix"):
        mix = MixSettings(**{mode: 1.0})
        loader = DeviceLoader(data, 8, train=True, max_shift=2, seed=5, mix=mix)
        for (x0, y0), (x, y) in zip(_epoch(plain, 1), _epoch(loader, 1), strict=True):
            onehot = F.one_hot(y0, 7).float()
            i = int(torch.nonzero(y0 != y0.roll(1)).flatten()[0])  # a sample whose partner is of another class
            lam = float(y[i, y0[i]])  # the weight of its own class
            assert torch.allclose(y, lam * onehot + (1 - lam) * onehot.roll(1, 0), atol=1e-6)
            if mode == "mixup":
                assert torch.allclose(x, lam * x0 + (1 - lam) * x0.roll(1, 0), atol=1e-5)
            else:  # the partner's box covers 1 - lam of each image, the rest is the image's own
                own = (x == x0).all(1).float().mean((1, 2))
                box = (x == x0.roll(1, 0)).all(1).float().mean((1, 2))
                assert torch.allclose(own, torch.full((8,), lam), atol=1e-6)
                assert torch.allclose(box, torch.full((8,), 1 - lam), atol=1e-6)


def test_mixing_is_seeded_resumable_and_leaves_the_permutation_alone() -> None:
    data = _arrays()
    mix = MixSettings(mixup=0.8, cutmix=1.0)

    def run(seed: int, epoch: int, start: int = 0, **kw) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return _epoch(DeviceLoader(data, 8, train=True, seed=seed, max_shift=1, mix=mix, **kw), epoch, start)

    def same(a, b) -> bool:
        pairs = zip(a, b, strict=True)
        return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in pairs)

    assert same(run(0, 2), run(0, 2))
    assert not same(run(0, 2), run(0, 3)) and not same(run(0, 2), run(1, 2))
    assert same(run(0, 2, start=4), run(0, 2)[4:])  # resume mid-epoch: the same mixing
    # the labels argmax-ed back are the unmixed batch's own classes when lam > 0.5, or its partner's
    plain = _epoch(DeviceLoader(data, 8, train=True, seed=0, max_shift=1), 2)
    for (_, y0), (_, y) in zip(plain, run(0, 2), strict=True):
        assert set(y.argmax(1).tolist()) <= set(y0.tolist())
    extras = run(0, 2, auto_augment="randaugment", random_erasing=0.5)
    assert same(extras, run(0, 2, auto_augment="randaugment", random_erasing=0.5))
    assert same(run(0, 2, start=3, auto_augment="randaugment", random_erasing=0.5), extras[3:])  # resume mid-epoch
    half = MixSettings(mixup=0.8, prob=0.5)  # batches that do not mix: one-hot soft targets
    sometimes = _epoch(DeviceLoader(data, 8, train=True, seed=0, max_shift=1, mix=half), 2)
    kinds = {int((y > 0).sum(1).max()) for _, y in sometimes}
    assert kinds == {1, 2} and all(y.dtype == torch.float32 and torch.allclose(y.sum(1), torch.ones(8))
                                   for _, y in sometimes)  # fmt: skip


def test_per_batch_seeding_leaves_the_gpu_generators_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def reseed(seed: int) -> None:
        raise AssertionError("a GPU generator was reseeded")

    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseed)
    mix = MixSettings(mixup=0.8, cutmix=1.0)
    loader = DeviceLoader(_arrays(), 8, train=True, seed=0, mix=mix, auto_augment="randaugment", random_erasing=0.5)
    assert len(_epoch(loader, 0)) > 1


def test_no_mixing_when_off_unlikely_or_evaluating() -> None:
    data = _arrays()
    base = _epoch(DeviceLoader(data, 8, train=True, seed=1, max_shift=1), 0)
    never = _epoch(DeviceLoader(data, 8, train=True, seed=1, max_shift=1, mix=MixSettings(mixup=1.0, prob=0.0)), 0)
    for (x0, y0), (x, y) in zip(base, never, strict=True):
        assert torch.equal(x, x0) and torch.equal(y, y0)  # mix_prob 0: mixing is off, class indices
    evaluation = DeviceLoader(data, 8, train=False, mix=MixSettings(mixup=1.0, cutmix=1.0), random_erasing=1.0)
    xs, ys = zip(*evaluation, strict=True)
    assert torch.equal(torch.cat(xs), data.images.float() / 255) and torch.equal(torch.cat(ys), data.labels)


def test_random_erasing_and_auto_augment_on_the_device() -> None:
    x = torch.rand(64, 3, 16, 16) + 0.5  # no zero pixel before erasing
    erased = erase_batch(x.clone(), 0.5, torch.Generator().manual_seed(0))
    hit = (erased == 0).all(1).flatten(1).any(1)
    assert 16 < int(hit.sum()) < 48  # about half the images
    for i in torch.nonzero(hit).flatten().tolist():  # one box, zero in every channel, the rest untouched
        rows, cols = torch.nonzero((erased[i] == 0).all(0), as_tuple=True)
        box = erased[i, :, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert bool((box == 0).all())
        assert int((erased[i] != x[i]).any(0).sum()) == box.shape[1] * box.shape[2]
    assert torch.equal(erased[~hit], x[~hit])
    data = _arrays(side=16)
    for policy in ("randaugment", "trivialaugment"):
        plain = _epoch(DeviceLoader(data, 8, train=True, augment="none", seed=2), 0)
        aug = _epoch(DeviceLoader(data, 8, train=True, augment="none", seed=2, auto_augment=policy), 0)
        assert all(torch.equal(y0, y) for (_, y0), (_, y) in zip(plain, aug, strict=True))
        assert any(not torch.equal(x0, x) for (x0, _), (x, _) in zip(plain, aug, strict=True))
        assert all(x.shape == (8, 3, 16, 16) and x.min() >= 0 and x.max() <= 1 for x, _ in aug)


@pytest.mark.parametrize("name", ["randaugment", "trivialaugment"])
def test_batched_auto_augment_equals_the_policy_per_image(name: str) -> None:
    """Each image gets what torchvision's policy makes of it with that image's draw; draws follow the policy."""
    policy = auto_augment_transform(name)
    batched = BatchAutoAugment(policy)
    x = (torch.rand(48, 3, 12, 16) * 255).to(torch.uint8)  # not square: height and width stay apart
    torch.manual_seed(0)
    draws = batched.draws(48, 12, 16)
    torch.manual_seed(0)
    out = batched(x.clone())
    expected = x.clone()
    for slot in draws:
        for i, (op, magnitude) in enumerate(slot):
            expected[i] = policy._apply_image_or_video_transform(
                expected[i], op, magnitude, policy.interpolation, policy._fill
            )
    assert torch.equal(out, expected)
    assert len(draws) == (2 if name == "randaugment" else 1)
    torch.manual_seed(1)
    many = [d for slot in batched.draws(4000, 12, 12) for d in slot]
    counts = {op: sum(o == op for o, _ in many) for op in policy._AUGMENTATION_SPACE}
    assert all(abs(c / len(many) - 1 / 14) < 0.02 for c in counts.values()), counts  # uniform over the 14 ops
    rotations = [m for o, m in many if o == "Rotate"]
    if name == "randaugment":  # the fixed magnitude 9 of 31 bins (30 degrees at most): +-9 degrees, either sign
        assert set(rotations) == {9.0, -9.0}
    else:  # a magnitude bin drawn per image, either sign
        assert len(set(rotations)) > 20 and min(rotations) < 0 < max(rotations)


def test_batch_mixer_is_torchvisions_seeded_and_leaves_the_global_generator() -> None:
    x, y = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    mixer = BatchMixer(MixSettings(mixup=0.8, cutmix=1.0), 5)
    state = torch.random.get_rng_state()
    a, b = mixer(x.clone(), y, seed=7), mixer(x.clone(), y, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global CPU generator is untouched
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    draws = [mixer(x.clone(), y, seed=s)[1] for s in range(40)]
    assert len({round(float(t[1, 1]), 6) for t in draws}) > 30  # lambda varies with the seed
    for t in draws:  # torchvision's pairing: each image with the one before it (roll by one)
        lam = t[1, 1]
        onehot = F.one_hot(y, 5).float()
        assert torch.allclose(t, lam * onehot + (1 - lam) * onehot.roll(1, 0), atol=1e-6)
    cut = BatchMixer(MixSettings(cutmix=1.0), 5)
    mx, my = cut(x.clone(), y, seed=3)
    own = (mx == x).all(1).float().mean((1, 2))  # the kept area is the label weight of the image's own class
    assert torch.allclose(own, torch.full((6,), float(my[1, 1])), atol=1e-6)


# --- ImageFolder data: torchvision transforms.v2 -------------------------------------------------------------------
def test_folder_mix_collate_and_transforms() -> None:
    from torchvision.transforms import v2

    from ssal.data.folder import folder_transforms

    batch = [(torch.rand(3, 8, 8), i % 5) for i in range(6)]
    torch.manual_seed(0)
    x, y = MixCollate(MixSettings(mixup=0.8, cutmix=1.0), 5)(batch)
    assert x.shape == (6, 3, 8, 8) and y.shape == (6, 5) and torch.allclose(y.sum(1), torch.ones(6))
    assert int((y > 0).sum(1).max()) == 2
    t = group_targets(y, torch.tensor([0, 0, 1, 1, 1]))
    assert torch.allclose(t, torch.stack([y[:, :2].sum(1), y[:, 2:].sum(1)], 1))
    x, y = MixCollate(MixSettings(mixup=0.8, prob=0.0), 5)(batch)
    assert torch.equal(y, F.one_hot(torch.tensor([0, 1, 2, 3, 4, 0]), 5).float())
    assert torch.equal(x, torch.stack([b[0] for b in batch]))
    tf = folder_transforms(True, 16, 20, auto_augment="trivialaugment", random_erasing=0.5)
    kinds = [type(s) for s in tf.transforms]
    assert v2.TrivialAugmentWide in kinds and v2.RandomErasing in kinds
    assert v2.RandAugment in [type(s) for s in folder_transforms(True, 16, 20, "randaugment").transforms]
    plain = [type(s) for s in folder_transforms(False, 16, 20, "randaugment", 0.5).transforms]
    assert v2.RandAugment not in plain and v2.RandomErasing not in plain  # evaluation is never augmented


def test_folder_training_with_mixing_and_augmentation(tmp_path: Path, write_tree) -> None:
    from ssal.cli import main

    write_tree(tmp_path / "data", {"train": "abcd", "val": "abcd"}, n=4)
    run = tmp_path / "run"
    args = ["train", "--config", str(DEMO), f"run_dir={run}", "data.name=folder", f"data.root={tmp_path / 'data'}"]
    args += ["data.workers=0", "model.input_size=16", "ssal.groupings=random", "trainer.epochs=1",
             "ssal.branches=[{at: g3, k: 2, head: conv32-gap}]", "schedule.name=constant", "data.batch_size=4",
             "data.mixup=0.8", "data.cutmix=1.0", "data.auto_augment=randaugment", "data.random_erasing=0.5",
             "optim.label_smoothing=0.1"]  # fmt: skip
    assert main(args) == 0
    rows = read_metrics(RunPaths(run).metrics)
    assert len(rows) == 1 and float(rows[0]["train_loss"]) > 0


# --- end to end on digits --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        ["data.mixup=0.8", "optim.label_smoothing=0.1", "optim.group_smoothing=true"],
        ["data.cutmix=1.0", "data.mix_prob=0.5"],
        ["data.mixup=0.8", "data.cutmix=1.0", "data.mix_switch_prob=0.5", "data.auto_augment=randaugment"],
        ["data.auto_augment=trivialaugment", "data.random_erasing=0.25"],
    ],
)
def test_digits_trains_with_each_option(tmp_path: Path, options: list[str]) -> None:
    from ssal.cli import main

    run = tmp_path / "run"
    args = ["train", "--config", str(DEMO), f"run_dir={run}", "ssal.groupings=random", "trainer.epochs=2"]
    assert main([*args, "schedule.peak_epoch=1", "trainer.limit_train_batches=0.5", *options]) == 0
    rows = read_metrics(RunPaths(run).metrics)
    assert len(rows) == 2
    assert all(float(r["train_loss"]) > 0 and float(r["train_loss_g1"]) > 0 for r in rows)
    assert float(rows[-1]["f_top1"]) > 10.0  # better than chance on 10 classes


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.mixup=-1", "data.mixup"),
        ("data.cutmix=.inf", "data.cutmix"),
        ("data.mix_prob=1.5", "data.mix_prob"),
        ("data.mix_switch_prob=-0.1", "data.mix_switch_prob"),
        ("data.auto_augment=autoaugment", "data.auto_augment"),
        ("data.random_erasing=2", "data.random_erasing"),
    ],
)
def test_bad_augmentation_settings_name_their_key(override: str, key: str, capsys) -> None:
    from ssal.cli import main

    with pytest.raises(SSALError, match=f"config key {key}"):
        load_config(DEMO, [override])
    assert main(["train", "--config", str(DEMO), override, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0]


def test_mixing_settings_without_mixing_are_named_as_ignored() -> None:
    from ssal.config import ignored_settings

    assert any("data.mix_prob" in line for line in ignored_settings(load_config(DEMO, ["data.mix_prob=0.5"])))
    lines = ignored_settings(load_config(DEMO, ["data.mixup=0.8", "data.mix_switch_prob=0.2"]))
    assert any("data.mix_switch_prob" in line for line in lines)
    assert ignored_settings(load_config(DEMO, ["data.mixup=0.8", "data.cutmix=1", "data.mix_switch_prob=0.2"])) == []
