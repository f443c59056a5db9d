"""Any backbone by name: torchvision and timm models, feature layouts at attach points (maps, channels-last maps,
tokens), token heads, pretrained weights from a local file, lr scales, the state_dict export, and bad inputs."""

from __future__ import annotations

import importlib.util
import json
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from torch import nn

import ssal
from ssal.cli import main
from ssal.config import OptimConfig, ScheduleConfig
from ssal.engine import build_optimizer, lr_lambdas
from ssal.errors import SSALError
from ssal.features import AmbiguousLayoutError, Layout, infer_layout
from ssal.heads import TokenPool, ToMap, ToTokens
from ssal.models import create_model
from ssal.runs import load_run

HAS_TIMM = importlib.util.find_spec("timm") is not None
needs_timm = pytest.mark.skipif(not HAS_TIMM, reason="timm is not installed (pip install 'ssal[timm]')")

#: Tiny widths so that every model builds and runs in well under a second on a CPU.
TIMM_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
TIMM_SWIN = {"img_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2], "window_size": 4}


def _tv_vit(hidden: int = 32) -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=hidden, mlp_dim=2 * hidden, num_classes=10)


def _tv_swin(embed: int = 16) -> nn.Module:
    from torchvision.models.swin_transformer import SwinTransformer

    return SwinTransformer([4, 4], embed, [1, 1], [1, 2], [4, 4], num_classes=10)


def _branch_io(model: ssal.SSALModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The feature the first branch receives and the branch's logits."""
    seen = {}
    mod = dict(model.backbone.named_modules())[model.branches[0].at]
    h = mod.register_forward_hook(lambda m, i, o: seen.__setitem__("h", o))
    model.eval()
    with torch.no_grad():
        out = model(x)
    h.remove()
    return seen["h"], out.aux[0]


G = ssal.random_grouping(10, 3, seed=0)


# --- layouts -------------------------------------------------------------------------------------------------
def test_layout_rules() -> None:
    assert infer_layout((2, 64, 8, 8), "a") == (Layout("nchw"), "probe")
    assert infer_layout((2, 8, 8, 64), "a") == (Layout("nhwc"), "probe")
    assert infer_layout((2, 197, 768), "a")[0] == Layout("tokens", 1)
    assert infer_layout((2, 196, 768), "a")[0] == Layout("tokens", 0)
    assert infer_layout((2, 17, 32), "a", prefix_hint=1)[0] == Layout("tokens", 1)
    assert infer_layout((2, 10), "a")[0] == Layout("vector")
    assert infer_layout((2, 8, 8, 8), "a", stated="nhwc") == (Layout("nhwc"), "stated")
    assert infer_layout((2, 8, 8, 8), "a", shape_alt=(2, 8, 16, 16))[0] == Layout("nchw")  # spatial axes moved
    assert infer_layout((2, 8, 8, 8), "a", shape_alt=(2, 16, 16, 8))[0] == Layout("nhwc")
    assert infer_layout((2, 17, 32), "a", shape_alt=(2, 65, 32))[0] == Layout("tokens", 1)  # 4x the patches
    assert infer_layout((2, 16, 384), "a", prefix_hint=0)[0] == Layout("tokens", 0)
    with pytest.raises(SSALError, match=r"\(B, D, N\)"):
        infer_layout((2, 16, 16), "a", shape_alt=(2, 16, 64))
    with pytest.raises(AmbiguousLayoutError, match="layout: nchw.*layout: nhwc"):
        infer_layout((2, 8, 8, 8), "blk")
    with pytest.raises(AmbiguousLayoutError, match="tokens_cls"):
        infer_layout((2, 17, 32), "blk")  # 16 + 1 class token or 9 + 8 prefix tokens
    with pytest.raises(SSALError, match="needs a 4-D output"):
        infer_layout((2, 197, 768), "blk", stated="nhwc")
    with pytest.raises(SSALError, match="declares nhwc"):
        infer_layout((2, 64, 8, 8), "blk", declared=Layout("nhwc"))
    assert str(Layout.parse("tokens_p5")) == "tokens_p5" and Layout.parse("tokens_cls").prefix == 1
    with pytest.raises(SSALError, match="unknown layout"):
        Layout.parse("hwc")


@pytest.mark.parametrize("maker", ["torchvision", "timm"])
def test_swin_style_branch_sees_the_channel_axis(maker: str) -> None:
    """Channels-last stage outputs (B, H, W, C): heads must treat the last axis as channels."""
    if maker == "timm":
        if not HAS_TIMM:
            pytest.skip("timm is not installed")
        import timm

        backbone, at = timm.create_model("swin_tiny_patch4_window7_224", num_classes=10, **TIMM_SWIN), "layers.1"
    else:
        backbone, at = _tv_swin(), "features.3"
    x = torch.rand(2, 3, 32, 32)
    m = ssal.SSALModel(backbone, [ssal.Branch(at, G, "gap")], input_size=(3, 32, 32))
    h, logits = _branch_io(m, x)
    assert h.shape == (2, 4, 4, 32) and m.branches[0].layout == "nhwc"
    head = m.branches[0].head
    assert isinstance(head[-1], nn.Linear) and head[-1].in_features == 32
    torch.testing.assert_close(logits, head[-1](h.mean((1, 2))))  # pooled over H and W, not over W and C
    conv = ssal.SSALModel(backbone, [ssal.Branch(at, G, "conv8-gap")], input_size=(3, 32, 32))
    h, logits = _branch_io(conv, x)
    head = conv.branches[0].head
    assert isinstance(head[0], ToMap) and head[1][0].in_channels == 32
    torch.testing.assert_close(logits, head[1:](h.permute(0, 3, 1, 2)))


@pytest.mark.parametrize("maker", ["torchvision", "timm"])
def test_vit_style_branch_pools_patch_tokens(maker: str) -> None:
    """Token outputs (B, 1 + 16, D): the default head normalises, averages the 16 patch tokens, classifies."""
    if maker == "timm":
        if not HAS_TIMM:
            pytest.skip("timm is not installed")
        import timm

        backbone, at = timm.create_model("vit_tiny_patch16_224", num_classes=10, **TIMM_VIT), "g1"
    else:
        backbone, at = _tv_vit(), "g1"
    x = torch.rand(2, 3, 32, 32)
    m = ssal.SSALModel(backbone, [ssal.Branch(at, G)], input_size=(3, 32, 32))
    h, logits = _branch_io(m, x)
    assert h.shape == (2, 17, 32) and m.branches[0].layout == "tokens_cls"
    ln, pool, fc = m.branches[0].head
    assert isinstance(ln, nn.LayerNorm) and isinstance(pool, TokenPool) and fc.in_features == 32
    torch.testing.assert_close(logits, fc(ln(h)[:, 1:].mean(1)))  # the class token is not averaged in
    cls = ssal.SSALModel(backbone, [ssal.Branch(at, G, "tfm-ln-cls")], input_size=(3, 32, 32))
    h, logits = _branch_io(cls, x)
    tfm, ln, pool, fc = cls.branches[0].head
    torch.testing.assert_close(logits, fc(ln(tfm(h))[:, 0]))
    conv = ssal.SSALModel(backbone, [ssal.Branch(at, G, "conv8-gap")], input_size=(3, 32, 32))
    h, logits = _branch_io(conv, x)
    head = conv.branches[0].head
    assert head[0].grid == (4, 4) and head[1][0].in_channels == 32
    grid = h[:, 1:].transpose(1, 2).reshape(2, 32, 4, 4)
    torch.testing.assert_close(logits, head[1:](grid))


def test_maps_and_tokens_convert_both_ways() -> None:
    x = torch.randn(2, 5, 3, 3)
    nhwc = x.permute(0, 2, 3, 1)
    torch.testing.assert_close(ToMap(Layout("nhwc"))(nhwc), x)
    torch.testing.assert_close(ToTokens(Layout("nchw"))(x), ToTokens(Layout("nhwc"))(nhwc))
    tokens = torch.cat([torch.zeros(2, 1, 5), ToTokens(Layout("nchw"))(x)], 1)
    torch.testing.assert_close(ToMap(Layout("tokens", 1), (3, 3))(tokens), x)
    with pytest.raises(SSALError, match="class token"):
        ssal.build_head("ln-cls", 5, 3, "tokens")
    with pytest.raises(SSALError, match="mixes"):
        ssal.build_head("conv8-ln", 5, 3, "nchw")


def test_ambiguous_layout_is_settled_or_reported() -> None:
    # a conv output with as many channels as pixels per side: the second probe shows which axes are spatial
    m = ssal.SSALModel(_tv_swin(embed=8), [ssal.Branch("features.0.0", G, "gap")], input_size=(3, 32, 32))
    assert m.branches[0].layout == "nchw"
    m = ssal.SSALModel(_tv_swin(embed=8), [ssal.Branch("features.0", G, "gap")], input_size=(3, 32, 32))
    assert m.branches[0].layout == "nhwc"  # (B, 8, 8, 8), declared by the model family
    # a ViT takes one input size only: (B, 4, 4, 4) after its patch projection cannot be told apart
    with pytest.raises(SSALError, match="set the branch's layout"):
        ssal.SSALModel(_tv_vit(hidden=4), [ssal.Branch("conv_proj", G, "gap")], input_size=(3, 32, 32))
    m = ssal.SSALModel(_tv_vit(hidden=4), [ssal.Branch("conv_proj", G, "gap", layout="nchw")], input_size=(3, 32, 32))
    assert m.branches[0].layout == "nchw"


# --- optimisation ------------------------------------------------------------------------------------------------
def test_lr_scales_and_backbone_freezing() -> None:
    m = create_model("torchvision:resnet18", 10, ssal=[{"at": "g2", "k": 3, "head": "gap"}])
    opt = build_optimizer(m, OptimConfig(lr=0.1, backbone_lr_scale=0.1, branch_lr_scale=2.0))
    lrs = {(g["role"], g["weight_decay"] > 0): g["lr"] for g in opt.param_groups}
    assert lrs[("classifier", True)] == pytest.approx(0.1) and lrs[("backbone", True)] == pytest.approx(0.01)
    assert lrs[("branches", True)] == pytest.approx(0.2)
    by_role: dict[str, set[int]] = {}
    for g in opt.param_groups:
        by_role.setdefault(g["role"], set()).update(id(p) for p in g["params"])
    assert id(m.backbone.fc.weight) in by_role["classifier"] and id(m.backbone.conv1.weight) in by_role["backbone"]
    lambdas = lr_lambdas(opt, ScheduleConfig(name="constant"), epochs=3, steps_per_epoch=10, freeze_epochs=1)
    roles = [g["role"] for g in opt.param_groups]
    for role, f in zip(roles, lambdas, strict=True):
        assert [f(s) for s in (0, 9, 10)] == ([0.0, 0.0, 1.0] if role == "backbone" else [1.0, 1.0, 1.0])


# --- end to end: ImageFolder, pipeline, export, fine-tuning --------------------------------------------------------
def _image_folder(root: Path, classes: int, seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", 8), ("val", 3)):
        for c in range(classes):
            d = root / split / f"c{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = (rng.random((36, 36, 3)) * 80).astype(np.uint8)
                img[..., c % 3] += 100 + 50 * (c // 3)
                Image.fromarray(img).save(d / f"{i}.png")
    return root


def _config(tmp: Path, name: str, model: dict, data: Path, **extra: object) -> Path:
    cfg = {
        "name": name,
        "data": {"name": "folder", "root": str(data), "batch_size": 8, "eval_batch_size": 16, "workers": 0},
        "model": model,
        "ssal": {"branches": [{"at": "g2", "k": 2}], "eta": 0.5},
        "optim": {"lr": 0.01},
        "schedule": {"name": "constant"},
        "trainer": {"epochs": 1, "accelerator": "cpu", "progress_bar": False, "threads": 1},
    }
    for k, v in extra.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v  # type: ignore[dict-item]
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("folders")
    return _image_folder(base / "four", 4, 0), _image_folder(base / "five", 5, 1)


def _plain_logits(model: nn.Module, meta: dict, x: torch.Tensor) -> torch.Tensor:
    mean, std = (torch.tensor(meta[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        return model.eval()((x - mean) / std)


def test_torchvision_pipeline_export_and_finetune(folders, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    four, five = folders
    cfg = _config(tmp_path, "tv", {"name": "torchvision:resnet18", "input_size": 32}, four)
    assert main(["pipeline", "--config", str(cfg), "--out", str(tmp_path / "tv")]) == 0
    report = (tmp_path / "tv" / "report.md").read_text()
    assert "torchvision:resnet18" in report and "| ssal |" in report
    ev = json.loads((tmp_path / "tv" / "ssal" / "eval.json").read_text())
    assert set(ev["group_acc"]) == {"g1"} and ev["num_samples"] == 12
    # f alone, loaded by plain torchvision code
    out = tmp_path / "f.pt"
    assert main(["export", str(tmp_path / "tv" / "ssal"), "--format", "state_dict", "--out", str(out)]) == 0
    assert "max abs logit difference" in capsys.readouterr().out
    meta = json.loads(out.with_name("f.pt.json").read_text())
    assert meta["model"] == "torchvision:resnet18" and meta["num_classes"] == 4 and meta["input_size"] == [3, 32, 32]
    plain = torchvision.models.get_model("resnet18", num_classes=4)
    state = torch.load(out, weights_only=True)
    assert not any(k.startswith(("branches", "backbone", "mean")) for k in state)
    plain.load_state_dict(state)
    info = load_run(tmp_path / "tv" / "ssal")
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        ref = info.model(x, with_branches=False).main
    torch.testing.assert_close(_plain_logits(plain, meta, x), ref, atol=1e-5, rtol=1e-5)
    # fine-tune those weights on another data set (5 classes): new classifier, backbone learning rate 0
    cfg = _config(
        tmp_path,
        "ft",
        {"name": "torchvision:resnet18", "input_size": 32, "pretrained": str(out)},
        five,
        ssal={"branches": [{"at": "g3", "k": 2, "head": "conv16-gap"}], "groupings": "random"},
        optim={"lr": 0.05, "backbone_lr_scale": 0.0},
        run_dir=str(tmp_path / "ft"),
    )
    assert main(["train", "--config", str(cfg)]) == 0
    ft = load_run(tmp_path / "ft", "last")
    assert ft.model.backbone.fc.out_features == 5
    torch.testing.assert_close(ft.model.backbone.conv1.weight, plain.conv1.weight)  # frozen: lr scale 0
    torch.testing.assert_close(ft.model.backbone.layer3[0].conv1.weight, plain.layer3[0].conv1.weight)
    assert not torch.equal(ft.model.backbone.fc.weight[:4], plain.fc.weight)
    assert ft.model.mean.flatten().tolist() == pytest.approx(meta["mean"])  # the pretrained weights' statistics


@needs_timm
def test_timm_pipeline_export_and_finetune(folders, tmp_path: Path) -> None:
    import timm

    four, five = folders
    model = {"name": "timm:vit_tiny_patch16_224", "options": TIMM_VIT}
    cfg = _config(tmp_path, "vit", model, four, ssal={"branches": [{"at": "g1", "k": 2}]})
    assert main(["pipeline", "--config", str(cfg), "--out", str(tmp_path / "vit")]) == 0
    assert "timm:vit_tiny_patch16_224" in (tmp_path / "vit" / "report.md").read_text()
    info = load_run(tmp_path / "vit" / "ssal")
    assert info.model.branches[0].layout == "tokens_cls" and isinstance(info.model.branches[0].head[0], nn.LayerNorm)
    out = tmp_path / "vit.pt"
    assert main(["export", str(tmp_path / "vit" / "ssal"), "--format", "state_dict", "--out", str(out)]) == 0
    meta = json.loads(out.with_name("vit.pt.json").read_text())
    plain = timm.create_model("vit_tiny_patch16_224", num_classes=4, **meta["options"])
    plain.load_state_dict(torch.load(out, weights_only=True))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = info.model(x, with_branches=False).main
    torch.testing.assert_close(_plain_logits(plain, meta, x), ref, atol=1e-5, rtol=1e-5)
    # fine-tune from the ssal checkpoint of the baseline (its branches, none here, and classifier are left out)
    ckpt = tmp_path / "vit" / "baseline" / "checkpoints" / "best.ckpt"
    cfg = _config(
        tmp_path,
        "vft",
        {**model, "pretrained": str(ckpt)},
        five,
        ssal={"branches": [{"at": "blocks.0", "k": 2, "head": "tfm-ln-cls"}], "groupings": "random"},
        optim={"freeze_backbone_epochs": 1.0},
        trainer={"epochs": 2},
        run_dir=str(tmp_path / "vft"),
    )
    assert main(["train", "--config", str(cfg)]) == 0
    ft = load_run(tmp_path / "vft", "last")
    assert ft.model.backbone.head.out_features == 5 and ft.epoch == 2


def test_models_command(capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "torchvision:resnet1*"]) == 0
    out = capsys.readouterr().out
    assert "torchvision:resnet18" in out and "torchvision:resnet152" in out and "resnet50" not in out
    assert main(["models", "torchvision:resnet18", "--input-size", "64"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if " layer3 " in line)
    assert row.split()[:2] == ["g3", "layer3"] and "(B, 256, 4, 4)" in row and "nchw" in row and "/16" in row
    if HAS_TIMM:
        args = ["models", "timm:swin_tiny_patch4_window7_224", "--depth", "1"]
        assert main([*args, *(f"{k}={json.dumps(v)}" for k, v in TIMM_SWIN.items())]) == 0
        out = capsys.readouterr().out
        row = next(line for line in out.splitlines() if " layers.1 " in line)
        assert row.split()[:2] == ["g2", "layers.1"] and "(B, 4, 4, 32)" in row and "nhwc" in row


# --- bad input: one line, exit 2 ---------------------------------------------------------------------------------
DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _fails(args: list[str], capsys: pytest.CaptureFixture, *needles: str) -> None:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def test_bad_backbones_fail_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    dry = ["train", "--config", str(DEMO), "--dry-run", "model.options={}"]
    _fails([*dry, "model.name=torchvision:resnet19"], capsys, "unknown torchvision model 'resnet19'", "resnet18")
    _fails([*dry, "model.name=keras:resnet50"], capsys, "unknown model source 'keras'")
    _fails([*dry, "model.name=resnet_nope"], capsys, "unknown model 'resnet_nope'", "torchvision:<name>")
    tv = [*dry, "model.name=torchvision:resnet18"]
    _fails([*tv, "ssal.branches=[{at: layer9, k: 2}]"], capsys, "unknown attach point 'layer9'", "layer1")
    _fails([*tv, "ssal.branches=[{at: layer2, k: 2, layout: hwc}]"], capsys, "unknown layout 'hwc'")
    _fails([*tv, "model.options={depth: 3}"], capsys, "bad model.options")
    _fails([*tv, f"model.pretrained={tmp_path / 'none.pt'}"], capsys, "weights file not found")
    torch.save(torchvision.models.resnet34(num_classes=10).state_dict(), tmp_path / "r34.pt")
    _fails([*tv, f"model.pretrained={tmp_path / 'r34.pt'}"], capsys, "does not fit torchvision:resnet18", "unexpected")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    _fails([*tv, f"model.pretrained={tmp_path / 'junk.pt'}"], capsys, "cannot load")
    _fails([*dry, "model.pretrained=true"], capsys, "no downloadable weights", "model.pretrained=PATH")

    def offline(*a: object, **k: object) -> None:
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    _fails([*tv, "model.pretrained=true"], capsys, "cannot fetch the pretrained weights", "model.pretrained=PATH")
    if HAS_TIMM:

        def hub_offline(*a: object, **k: object) -> None:
            raise FileNotFoundError("cannot find the requested files in the local cache")

        monkeypatch.setattr("timm.models._builder.load_state_dict_from_hf", hub_offline)
        monkeypatch.setattr("timm.models._builder.download_cached_file", hub_offline)
        tm = [*dry, "model.name=timm:resnet18"]
        _fails([*tm, "model.pretrained=true"], capsys, "cannot fetch the pretrained weights", "model.pretrained=PATH")
        tiny = "model.options={img_size: 16, patch_size: 4, embed_dim: 4, num_heads: 1, depth: 1}"
        vit = [*dry, "model.name=timm:vit_tiny_patch16_224", tiny]
        _fails([*vit, "ssal.branches=[{at: patch_embed.proj, k: 2}]"], capsys, "layout: nchw", "patch_embed.proj")
        assert main([*vit, "ssal.branches=[{at: patch_embed.proj, k: 2, layout: nchw, head: gap}]"]) == 0
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    _fails([*dry, "model.name=timm:resnet18"], capsys, "pip install 'ssal[timm]'")


def test_an_unpretrained_torchvision_vit_is_built_at_the_input_size_it_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    # vit_h_14's default weights are 518 px: with or without them, the model and its data use that size
    from ssal.models import model_input_size
    from ssal.models.zoo import create_zoo_backbone

    seen: dict = {}

    def get_model(name: str, **kwargs: object) -> nn.Module:
        seen.update(kwargs, name=name)
        return _tv_vit()

    monkeypatch.setattr(torchvision.models, "get_model", get_model)
    create_zoo_backbone("torchvision:vit_h_14", 10)
    assert seen["image_size"] == model_input_size("torchvision:vit_h_14")[1] == 518 and seen["weights"] is None
    create_zoo_backbone("torchvision:vit_h_14", 10, options={"image_size": 224})
    assert seen["image_size"] == model_input_size("torchvision:vit_h_14", {"image_size": 224})[1] == 224
    seen.clear()
    create_zoo_backbone("torchvision:resnet18", 10)
    assert seen["name"] == "resnet18" and "image_size" not in seen


def test_offline_torchvision_weights_error_is_not_about_options(capsys: pytest.CaptureFixture, monkeypatch) -> None:
    def offline(*a: object, **k: object) -> None:
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    tv = ["train", "--config", str(DEMO), "--dry-run", "model.options={}", "model.name=torchvision:resnet18"]
    _fails([*tv, "model.pretrained=true"], capsys, "error: cannot fetch the pretrained weights of torchvision:resnet18")
