"""ssal predict / explain / attack / export on a tiny SSAL run trained here (digits, small_cnn, 2 epochs).

The run has two branches: g1 (``conv16-gap`` at g2: GAP + linear, so CAM) and g2 (``gap-fc16`` at g3: a hidden
FC layer, so Grad-CAM).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ssal.architecture import SSALModel
from ssal.attack import BaseNetwork, attack_batches, bim, evaluate_attack, fgsm, parse_eps
from ssal.cli import main
from ssal.errors import SSALError
from ssal.explain import OutputSelector, explain_batch, figure_pixels, output_heatmap
from ssal.export import export_run, max_difference, run_exported, ssal_outputs
from ssal.inference import predict_images, predict_tensor
from ssal.prediction import SSALMetrics, joint_probability
from ssal.runs import RunInfo, load_run
from ssal.runtime import image_transform, load_image


# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train the tiny run once per session with ``ssal.engine.fit`` (what ``ssal train`` calls)."""
    from ssal.cli.demo import DEMO_CONFIG
    from ssal.config import config_from_dict
    from ssal.engine import fit

    raw = copy.deepcopy(DEMO_CONFIG)
    out = tmp_path_factory.mktemp("interpret") / "run"
    raw.update(name="tiny", run_dir=str(out))
    raw["model"]["options"] = {"width": 8}
    raw["ssal"].update(
        branches=[{"at": "g2", "k": 4, "head": "conv16-gap"}, {"at": "g3", "k": 5, "head": "gap-fc16"}],
        groupings="random",
    )
    raw["trainer"].update(epochs=2, progress_bar=False)
    raw["schedule"]["peak_epoch"] = 1
    fit(config_from_dict(raw))
    return out


@pytest.fixture
def info(run_dir: Path) -> RunInfo:
    return load_run(run_dir)


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Digits as files of other sizes and formats: a 40x30 grey PNG, a 20x24 RGB JPEG, a 16x16 RGBA PNG."""
    from sklearn.datasets import load_digits

    d = load_digits().images[:3]  # (3, 8, 8) in [0, 16]
    root = tmp_path_factory.mktemp("images")
    arr = [(a * 15.9).astype(np.uint8) for a in d]
    paths = [root / "zero.png", root / "one.jpg", root / "two.png"]
    Image.fromarray(arr[0]).resize((40, 30)).save(paths[0])
    Image.fromarray(arr[1]).convert("RGB").resize((20, 24)).save(paths[1], quality=95)
    Image.fromarray(arr[2]).convert("RGBA").resize((16, 16)).save(paths[2])
    return paths


@pytest.fixture(scope="session")
def bad_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("bad") / "broken.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return p


def digits_batch(info: RunInfo, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    from ssal.data import load_arrays

    a = load_arrays("digits", "", "test")
    return a.images[:n].float() / 255, a.labels[:n]


def ssal_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssal", *args], capture_output=True, text=True, timeout=300)


# --- predict ----------------------------------------------------------------------------------------
def test_predict_topk_sorted_and_groups(info: RunInfo, images: list[Path]) -> None:
    preds, errors = predict_images(info, images, top=4)
    assert errors == [] and [p.file for p in preds] == [str(p) for p in images]
    tf = image_transform(info)
    x = torch.stack([load_image(p, tf) for p in images])
    assert x.shape == (3, 3, 16, 16) and float(x.min()) >= 0 and float(x.max()) <= 1
    with torch.no_grad():
        out = info.model(x)
    jp = joint_probability(out, info.gammas, info.eta)
    for b, p in enumerate(preds):
        assert len(p.jp) == len(p.tr) == 4
        for lst in (p.jp, p.tr):
            probs = [s.prob for s in lst]
            assert probs == sorted(probs, reverse=True)
        assert [s.index for s in p.jp] == jp[b].topk(4).indices.tolist()
        assert p.jp[0].prob == pytest.approx(float(jp[b].max()), abs=1e-6)
        assert p.tr[0].index == int(out.main[b].argmax())
        assert p.disagree == (p.jp[0].index != p.tr[0].index)
        for g, logits, br in zip(info.groupings, out.aux, p.branches, strict=True):
            assert br.group == int(logits[b].argmax())
            assert br.members == g.member_names(br.group)
            assert br.prob == pytest.approx(float(logits[b].softmax(-1).max()), abs=1e-6)


def test_predict_cli_json(run_dir: Path, images: list[Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", str(run_dir), str(images[0].parent), "--top", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["errors"] == [] and len(doc["predictions"]) == 3  # the folder expanded to its three images
    for p in doc["predictions"]:
        assert len(p["jp"]) == 3 and isinstance(p["disagree"], bool)
        assert [b["name"] for b in p["branches"]] == ["g1", "g2"]
        assert all(isinstance(m, str) for b in p["branches"] for m in b["members"])


def test_predict_cli_text_and_per_file_errors(
    run_dir: Path, images: list[Path], bad_image: Path, capsys: pytest.CaptureFixture
) -> None:
    rc = main(["predict", str(run_dir), str(images[0]), str(bad_image), "nope.png", str(images[1])])
    out, err = capsys.readouterr()
    assert rc == 2
    assert str(images[0]) in out and str(images[1]) in out and "+JP" in out and "g2: group" in out
    lines = [ln for ln in err.splitlines() if ln.startswith("ssal predict: error:")]
    assert len(lines) == 2 and "broken.png" in lines[0] and "nope.png" in lines[1]
    assert lines[0] == f"ssal predict: error: cannot decode image {bad_image}: not an image"


def test_predict_text_of_a_baseline_has_no_joint_line() -> None:
    from ssal.inference import BranchPrediction, ClassScore, ImagePrediction, format_prediction

    top = [ClassScore(3, "three", 0.9)]
    assert "+JP" not in format_prediction(ImagePrediction("a.png", top, top))  # no branch: +JP would be +TR again
    branch = BranchPrediction("g1", 0, 0.8, ["three", "eight"])
    assert "+JP" in format_prediction(ImagePrediction("a.png", top, top, [branch]))


def test_a_folder_of_runs_is_not_taken_for_a_run(
    run_dir: Path, images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "pipe"
    for name in ("baseline", "ssal"):
        (out / name / "checkpoints").mkdir(parents=True)
    assert main(["predict", str(out), str(images[0])]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"ssal predict: error: {out} is not a run directory but holds the runs baseline, ssal: give one of "
        f"them (e.g. {out / 'ssal'})"
    )


def test_imagenet_like_transform_resizes_and_crops(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from torchvision.transforms import functional as TF

    fake = SimpleNamespace(model=SimpleNamespace(input_size=(3, 224, 224)), config=None)  # ImageNet-sized
    fake.config = SimpleNamespace(data=SimpleNamespace(name="folder"))
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8))
    got = image_transform(fake)(img)
    assert got.shape == (3, 224, 224)
    assert torch.equal(got, TF.to_tensor(TF.center_crop(TF.resize(img, 256), [224, 224])))
    # a small-image data set: the data set's native size, even for a model registered with another size
    fake.config.data.name, fake.model.input_size = "cifar100", (3, 16, 16)
    assert image_transform(fake)(img).shape == (3, 32, 32)


# --- explain ----------------------------------------------------------------------------------------
def test_explain_cli_writes_figures(run_dir: Path, images: list[Path], bad_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "cams"
    args = ["explain", str(run_dir), *map(str, images[:2]), str(bad_image), "--out", str(out)]
    assert main([*args, "--baseline", str(run_dir)]) == 2  # the broken file fails, the others are written
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["one.png", "zero.png"]
    for p in pngs:
        with Image.open(p) as im:
            assert im.size == figure_pixels(1 + 2 + 1)  # g_f, g1, g2, org


def test_heatmaps_not_constant_and_methods(info: RunInfo, images: list[Path]) -> None:
    x = torch.stack([load_image(p, image_transform(info)) for p in images])
    methods = {}
    for index in (None, 0, 1):
        r = output_heatmap(info.model, x, index)
        methods[index] = r.method
        assert r.heatmap.shape == (3, 16, 16)
        assert float(r.heatmap.min()) >= 0 and float(r.heatmap.max()) <= 1
        assert all(float(h.std()) > 1e-3 for h in r.heatmap), f"constant heatmap for output {index}"
    assert methods == {None: "cam", 0: "cam", 1: "gradcam"}
    with pytest.raises(SSALError, match="GAP"):
        output_heatmap(info.model, x, 1, method="cam")


def test_cam_equals_direct_computation(info: RunInfo, images: list[Path]) -> None:
    m = info.model
    bb = m.backbone
    x = torch.stack([load_image(p, image_transform(info)) for p in images])
    with torch.no_grad():
        xn = (x - m.mean) / m.std
        h2 = bb.stage2(bb.stage1(xn))
        a_f = bb.stage3(h2)  # f: stage3 -> mean -> fc
        a_g1 = m.branches[0].head[0](h2)  # g1: conv16 -> gap -> linear
        t = torch.tensor([1, 2, 3])
        direct_f = torch.einsum("bk,bkhw->bhw", bb.fc.weight[t], a_f)
        grp = m.branches[0].head(h2).argmax(1)
        direct_g1 = torch.einsum("bk,bkhw->bhw", m.branches[0].head[-1].weight[grp], a_g1)
    r = output_heatmap(m, x, None, t)
    assert r.method == "cam" and r.layer == "stage3"
    torch.testing.assert_close(r.cam, direct_f, rtol=1e-4, atol=1e-5)
    r = output_heatmap(m, x, 0)
    assert r.method == "cam" and torch.equal(r.targets, grp)
    torch.testing.assert_close(r.cam, direct_g1, rtol=1e-4, atol=1e-5)
    # for GAP + linear, Grad-CAM is ReLU(CAM) / (h * w): the same map after scaling
    g = output_heatmap(m, x, None, t, method="gradcam")
    torch.testing.assert_close(g.cam * a_f.shape[-1] * a_f.shape[-2], direct_f.clamp_min(0), rtol=1e-4, atol=1e-5)


def test_cam_of_a_torchvision_resnet_uses_its_last_stage_not_avgpool() -> None:
    import torchvision

    torch.manual_seed(0)
    model = SSALModel(torchvision.models.resnet18(num_classes=4), [], input_size=(3, 64, 64)).eval()
    x = torch.rand(2, 3, 64, 64)
    r = output_heatmap(model, x)  # avgpool's (B, 512, 1, 1) output is the last 4-D one: no map to show
    assert r.method == "cam" and r.layer == "layer4" and r.cam.shape == (2, 2, 2)
    maps: list[torch.Tensor] = []
    hook = model.backbone.layer4.register_forward_hook(lambda m, i, o: maps.append(o))
    with torch.no_grad():
        model(x)
    hook.remove()
    direct = torch.einsum("bk,bkhw->bhw", model.backbone.fc.weight[r.targets], maps[0])
    torch.testing.assert_close(r.cam, direct, rtol=1e-4, atol=1e-5)


def test_gradcam_matches_pytorch_grad_cam(info: RunInfo, images: list[Path]) -> None:
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = torch.stack([load_image(p, image_transform(info)) for p in images])
    ours = output_heatmap(info.model, x, 1)  # g2: gap-fc16, Grad-CAM on backbone.stage3
    assert ours.method == "gradcam" and ours.layer == "backbone.stage3"
    model = load_run(info.paths.root).model  # GradCAM calls model.eval() and touches gradients: give it a copy
    cam = GradCAM(OutputSelector(model, 1), [model.backbone.stage3])
    try:
        lib = cam(x, targets=[ClassifierOutputTarget(int(t)) for t in ours.targets])
    finally:
        cam.activations_and_grads.release()
    # they min-max scale, resize bilinearly to the input size and min-max scale again: our ``heatmap``
    np.testing.assert_allclose(ours.heatmap.numpy(), lib, atol=1e-4)


def test_explain_keeps_caller_state(info: RunInfo, images: list[Path]) -> None:
    m = info.model.train()
    x = torch.stack([load_image(p, image_transform(info)) for p in images])
    stats = {k: v.clone() for k, v in m.state_dict().items()}
    output_heatmap(m, x, 1)
    assert m.training and all(mod.training for mod in m.modules())
    assert all(p.grad is None for p in m.parameters())
    assert all(torch.equal(stats[k], v) for k, v in m.state_dict().items())  # BN statistics untouched


# --- attack -----------------------------------------------------------------------------------------
class TwoClassLinear(nn.Module):
    """logits = W x: the CE gradient sign w.r.t. x is sign(w_1 - w_0) for y = 0, whatever the probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


def test_fgsm_linf_and_clipping() -> None:
    f = TwoClassLinear()
    x = torch.rand(8, 3, 2, 2)
    x[0] = 0.0
    x[1] = 1.0  # pixels at the bounds must be clipped, not pushed outside
    y = torch.zeros(8, dtype=torch.long)
    eps = 0.1
    adv = fgsm(f, x, y, eps)
    assert float((adv - x).abs().max()) <= eps + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    sign = (f.lin.weight[1] - f.lin.weight[0]).sign().view(3, 2, 2)
    free = (x + eps * sign >= 0) & (x + eps * sign <= 1)
    torch.testing.assert_close((adv - x)[free], (eps * sign.expand_as(x))[free])
    assert torch.equal(fgsm(f, x, y, 0.0), x)


def test_bim_step_size_and_projection() -> None:
    f = TwoClassLinear()
    x = torch.full((4, 3, 2, 2), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    sign = (f.lin.weight[1] - f.lin.weight[0]).sign().view(3, 2, 2)
    for steps, alpha in [(1, 0.01), (3, 0.01), (5, 0.05)]:
        adv = bim(f, x, y, eps=0.08, steps=steps, alpha=alpha)
        expect = min(steps * alpha, 0.08)  # each step moves alpha, the projection stops at eps
        torch.testing.assert_close(adv - x, expect * sign.expand_as(x))
    x = torch.rand(16, 3, 2, 2)
    adv = bim(f, x, torch.zeros(16, dtype=torch.long), eps=0.2, steps=7, alpha=0.1)
    assert float((adv - x).abs().max()) <= 0.2 + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1


def test_fgsm_raises_loss_of_trained_model(info: RunInfo) -> None:
    x, y = digits_batch(info)
    f = BaseNetwork(info.model)
    with torch.no_grad():
        clean = F.cross_entropy(f(x), y)
    for adv in (fgsm(f, x, y, 8 / 255), bim(f, x, y, 8 / 255, steps=5)):
        with torch.no_grad():
            assert float(F.cross_entropy(f(adv), y)) > float(clean) + 0.05
    assert all(p.grad is None for p in info.model.parameters())


def test_attacker_does_not_see_branches(info: RunInfo) -> None:
    x, y = digits_batch(info, 16)
    a = fgsm(BaseNetwork(info.model), x, y, 4 / 255)
    with torch.no_grad():
        for p in info.model.branches.parameters():
            p.normal_()
    assert torch.equal(fgsm(BaseNetwork(info.model), x, y, 4 / 255), a)


def test_evaluate_attack_clean_row_matches_metrics(info: RunInfo) -> None:
    x, y = digits_batch(info, 96)
    batches = [(x[:40], y[:40]), (x[40:], y[40:])]
    rows = evaluate_attack(info, batches, "fgsm", [0.0, 16 / 255], limit=90)
    m = SSALMetrics(info.gammas, info.eta)
    with torch.no_grad():
        m.update(info.model(x[:90]), y[:90])
    r = m.compute()
    assert rows[0]["images"] == 90
    assert rows[0]["f_err"] == pytest.approx(100 - r["f_top1"])
    assert rows[0]["jp_err"] == pytest.approx(100 - r["jp_top1"])
    assert rows[0]["g2_group_err"] == pytest.approx(100 - r["g2_acc"])
    assert rows[1]["f_err"] > rows[0]["f_err"]


def test_attack_cli_writes_csv_and_plot(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["attack", str(run_dir), "--method", "bim", "--eps", "0,2/255,8/255", "--steps", "3"]
    assert main([*args, "--limit", "50", "--out", str(tmp_path)]) == 0
    assert "| eps (x 1/255) | f error |" in capsys.readouterr().out
    with (tmp_path / "attack_bim.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["eps_255"]) for r in rows] == pytest.approx([0, 2, 8])
    assert {"f_err", "g1_group_err", "g2_group_err", "jp_err", "alpha"} <= set(rows[0])
    assert all(r["images"] == "50" for r in rows)
    with Image.open(tmp_path / "attack_bim.png") as im:
        assert im.size[0] > 300 and im.size[1] > 200


def test_attack_batches_random_subset(info: RunInfo) -> None:
    def collect() -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*attack_batches(info, "test", limit=30, seed=3, batch_size=7), strict=True)
        return torch.cat(xs), torch.cat(ys)

    x, y = collect()
    first, _ = digits_batch(info, 30)
    assert x.shape == (30, 3, 16, 16) and torch.equal(x, collect()[0])  # seeded
    assert not torch.equal(x, first)  # a random subset, not the first images of a possibly sorted split


def test_parse_eps() -> None:
    assert parse_eps("0, 1/255,0.5") == [0.0, 1 / 255, 0.5]
    assert parse_eps(["0,2/255", "4/255"]) == [0.0, 2 / 255, 4 / 255]
    for bad in ("abc", "2", "-1/255", "1/0", ""):
        with pytest.raises(SSALError):
            parse_eps(bad)


# --- export -----------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("error::torch.jit.TracerWarning")  # an export that warns about its trace is suspect
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("mode", ["jp", "tr"])
def test_export_matches_ssal(info: RunInfo, tmp_path: Path, fmt: str, mode: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    info.model.train()
    path = export_run(info, tmp_path / f"m.{fmt}", fmt, mode)
    assert info.model.training and info.model.backbone.stage1[1].training  # the caller's modes are restored
    x = torch.rand(5, *info.model.input_size)  # not the batch size of the export
    ref = ssal_outputs(info, x, mode)
    got = run_exported(path, x, fmt)
    assert len(got) == 3 and [t.shape for t in got] == [(5, 10), (5, 4), (5, 5)]
    assert max_difference(ref, got) <= 1e-4
    torch.testing.assert_close(got[0].sum(1), torch.ones(5), atol=1e-5, rtol=0)
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    assert meta["outputs"] == ["probs", "g1", "g2"] and meta["mode"] == mode and len(meta["class_names"]) == 10
    if mode == "tr":
        torch.testing.assert_close(got[0], info.model.eval()(x).main.softmax(1).detach(), atol=1e-5, rtol=1e-4)


def test_export_cli(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", str(run_dir), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 0
    assert "max abs difference" in capsys.readouterr().out and (tmp_path / "m.pt").is_file()


# --- bad inputs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["predict", "{missing}", "x.png"],
        ["explain", "{missing}", "x.png", "--out", "{tmp}"],
        ["attack", "{missing}", "--method", "fgsm", "--eps", "0", "--out", "{tmp}"],
        ["export", "{missing}", "--format", "onnx", "--out", "{tmp}/m.onnx"],
        ["attack", "{run}", "--method", "fgsm", "--eps", "1/0", "--out", "{tmp}"],
    ],
)
def test_bad_inputs_one_line_exit_2(args: list[str], run_dir: Path, tmp_path: Path) -> None:
    fill = {"missing": str(tmp_path / "no_such_run"), "tmp": str(tmp_path), "run": str(run_dir)}
    r = ssal_cli(*[a.format(**fill) for a in args])
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith(f"ssal {args[0]}: error:")


# --- a run without branches (a baseline) ----------------------------------------------------------------
@pytest.fixture
def baseline(info: RunInfo) -> RunInfo:
    """The trained backbone as a branch-less SSAL model, like the baseline run of ``ssal pipeline``."""
    m = info.model
    mean, std = m.mean.flatten().tolist(), m.std.flatten().tolist()
    model = SSALModel(m.backbone, [], input_size=m.input_size, mean=mean, std=std).eval()
    return dataclasses.replace(info, model=model, groupings=[], eta=[])


def test_commands_on_a_baseline(info: RunInfo, baseline: RunInfo, tmp_path: Path) -> None:
    x, y = digits_batch(info, 20)
    rows = predict_tensor(baseline, x, top=3)
    assert all(r["branches"] == [] and r["jp"] == r["tr"] for r in rows)
    res = evaluate_attack(baseline, [(x, y)], "fgsm", [0.0, 4 / 255])
    assert "jp_err" not in res[0] and not any(k.endswith("_group_err") for k in res[0])
    path = export_run(baseline, tmp_path / "b.pt", "torchscript", "jp")
    got = run_exported(path, x)
    assert len(got) == 1 and max_difference(ssal_outputs(baseline, x), got) <= 1e-4
    assert json.loads(path.with_name("b.pt.json").read_text())["mode"] == "tr"  # no +JP without branches
    panels = explain_batch(info, x[:2], baseline=baseline)
    assert [p.output for p in panels[0]] == ["g_f", "g1", "g2", "org"]


def test_explain_baseline_checkpoint(run_dir: Path, images: list[Path], tmp_path: Path, monkeypatch) -> None:
    import ssal.runs

    real, seen = ssal.runs.load_run, []

    def spy(path: Path, which: str = "best", *a: object, **k: object) -> RunInfo:
        seen.append(which)
        return real(path, which, *a, **k)

    monkeypatch.setattr(ssal.runs, "load_run", spy)
    args = ["explain", str(run_dir), str(images[0]), "--out", str(tmp_path / "c"), "--baseline", str(run_dir)]
    assert main([*args, "--checkpoint", "last"]) == 0 and seen == ["last", "last"]  # the baseline follows
    seen.clear()
    assert main([*args, "--checkpoint", "last", "--baseline-checkpoint", "best"]) == 0 and seen == ["last", "best"]
    assert main(["explain", str(run_dir), str(images[0]), "--out", str(tmp_path / "d"), "--baseline-checkpoint",
                 "last"]) == 2  # fmt: skip
