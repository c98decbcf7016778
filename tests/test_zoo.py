"""Zoo models (torchvision:, timm:), users' own factories (module:factory) and the checkpoint forms a teacher
can come in. Every model here is built untrained: nothing is downloaded."""

from __future__ import annotations

import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from labeldistill.config import ModelConfig
from labeldistill.errors import DataError, LabelDistillError, RegistryError
from labeldistill.models import bn_layers, build_model, create_model, require_bn_layers
from labeldistill.models.checkpoint import load_checkpoint_into, load_state_dict_file

ZOO = [
    ("torchvision:resnet18", {"stem": "small"}),
    ("timm:mobilenetv3_small_050", {}),
    ("timm:vit_tiny_patch16_224", {"img_size": 28, "patch_size": 4, "depth": 2}),
]


@pytest.mark.parametrize("name, args", ZOO, ids=[n for n, _ in ZOO])
def test_zoo_model_forward_embed_and_build_model(name, args):
    torch.manual_seed(0)
    m = build_model(ModelConfig(name=name, args=dict(args)), num_classes=7, shape=(1, 28, 28)).eval()
    x = torch.randn(2, 1, 28, 28)
    assert m(x).shape == (2, 7)
    assert m.embed(x).shape == (2, m.feature_dim)


def test_torchvision_small_stem_and_in_channels():
    m = create_model("torchvision:resnet18", 10, 1, 28, stem="small")
    assert m.conv1.weight.shape == (64, 1, 3, 3) and m.conv1.stride == (1, 1) and m.conv1.padding == (1, 1)
    assert m.conv1.bias is None and isinstance(m.maxpool, nn.Identity)
    # The project's resnet18 is this network: same keys and shapes, and a state_dict moves between them.
    own = create_model("resnet18", 10, 1, 28)
    assert {k: v.shape for k, v in own.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
    own.load_state_dict(m.state_dict())
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(own.eval()(x), m.eval()(x))
    # Other torchvision models: only the first conv takes the new channel count.
    mb = create_model("torchvision:mobilenet_v3_small", 5, 2, 32)
    assert mb.features[0][0].weight.shape[1] == 2 and mb(torch.randn(2, 2, 32, 32)).shape == (2, 5)
    with pytest.raises(RegistryError, match="ResNets"):
        create_model("torchvision:mobilenet_v3_small", 5, 3, 32, stem="small")


def test_timm_gets_in_chans_and_refuses_downloads_and_unknown_args():
    m = create_model("timm:mobilenetv3_small_050", 4, 2, 32)
    assert next(mod for mod in m.modules() if isinstance(mod, nn.Conv2d)).in_channels == 2
    with pytest.raises(RegistryError, match="never downloads"):
        create_model("timm:mobilenetv3_small_050", 4, 3, 32, pretrained=True)
    with pytest.raises(RegistryError, match="never downloads"):
        create_model("torchvision:resnet18", 4, 3, 32, weights="IMAGENET1K_V1")
    with pytest.raises(RegistryError, match="widht"):
        create_model("timm:mobilenetv3_small_050", 4, 3, 32, widht=2)


def test_unknown_zoo_and_plain_names_list_close_matches():
    with pytest.raises(RegistryError, match=r"unknown torchvision model 'resnet19'; did you mean: .*resnet18"):
        create_model("torchvision:resnet19", 10, 3, 32)
    with pytest.raises(RegistryError, match=r"unknown timm model 'mobilenetv3_smal_050'; did you mean: "
                                            r"mobilenetv3_small_050"):
        create_model("timm:mobilenetv3_smal_050", 10, 3, 32)
    with pytest.raises(RegistryError, match=r"did you mean: convnet"):
        create_model("convnett", 10, 1, 28)
    with pytest.raises(RegistryError, match=r"torchvision:vgg11"):
        create_model("vgg11", 10, 1, 28)


def test_users_own_factory_from_an_importable_module(tmp_path, monkeypatch):
    (tmp_path / "my_arch.py").write_text(
        "import torch.nn as nn\n"
        "def tiny(num_classes, in_channels, hidden=8):\n"
        "    return nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.BatchNorm2d(hidden),\n"
        "                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden, num_classes))\n"
        "def sized(num_classes, in_channels, image_size):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, num_classes))\n"
        "not_a_model = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    m = build_model(ModelConfig(name="my_arch:tiny", args={"hidden": 4}), 6, (1, 28, 28))
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 6) and len(bn_layers(m)) == 1
    assert create_model("my_arch:sized", 3, 1, 10)(torch.randn(2, 1, 10, 10)).shape == (2, 3)
    with pytest.raises(RegistryError, match="no callable 'nope'"):
        create_model("my_arch:nope", 3, 1, 10)
    with pytest.raises(RegistryError, match="cannot import module 'no_such_module_xyz'"):
        create_model("no_such_module_xyz:f", 3, 1, 10)
    with pytest.raises(RegistryError, match="depth"):
        create_model("my_arch:tiny", 3, 1, 10, depth=2)
    sys.modules.pop("my_arch", None)


def test_models_without_batchnorm_are_refused_by_recover_in_one_line():
    vit = create_model("timm:vit_tiny_patch16_224", 10, 1, 28, patch_size=4, depth=1)
    assert not bn_layers(vit)
    with pytest.raises(LabelDistillError) as e:
        require_bn_layers(vit, "timm:vit_tiny_patch16_224")
    msg = str(e.value)
    assert "\n" not in msg and "'timm:vit_tiny_patch16_224' has no BatchNorm2d layer" in msg
    assert "BN-statistics recovery needs one" in msg


def test_a_zoo_teacher_round_trips_through_save_and_load_teacher(tmp_path):
    """The relabel stage loads its teacher from teacher.json: a timm name with args rebuilds the same model."""
    from labeldistill.models.checkpoint import load_teacher, save_teacher

    args = {"patch_size": 4, "depth": 1}
    m = create_model("timm:vit_tiny_patch16_224", 5, 1, 28, **args).eval()
    save_teacher(m, tmp_path, {"model": "timm:vit_tiny_patch16_224", "model_args": args, "num_classes": 5,
                               "shape": [1, 28, 28]})
    back, _ = load_teacher(tmp_path, torch.device("cpu"))
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(back(x), m(x))


# ---- checkpoint forms ------------------------------------------------------------------------------------

def _small():
    torch.manual_seed(1)
    return create_model("convnet", 3, 1, 8, width=4, depth=1)


FORMS = {
    "plain": lambda sd: sd,
    "state_dict": lambda sd: {"state_dict": sd, "epoch": 3, "optimizer": {"lr": 0.1}},
    "model": lambda sd: {"model": sd, "args": {"arch": "x"}},
    "state_dict_ema": lambda sd: {"state_dict_ema": sd, "epoch": 1},
    "module": lambda sd: {"module": sd},
    "ddp prefix": lambda sd: OrderedDict((f"module.{k}", v) for k, v in sd.items()),
    "nested ddp": lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
    "compiled ddp": lambda sd: {f"module._orig_mod.{k}": v for k, v in sd.items()},
}


@pytest.mark.parametrize("form", list(FORMS))
def test_checkpoint_forms_load(tmp_path, form):
    src, dst = _small(), create_model("convnet", 3, 1, 8, width=4, depth=1)
    torch.save(FORMS[form](src.state_dict()), tmp_path / "ck.pth")
    sd = load_state_dict_file(tmp_path / "ck.pth")
    assert set(sd) == set(src.state_dict())
    load_checkpoint_into(dst, tmp_path / "ck.pth", ModelConfig("convnet", {"width": 4, "depth": 1}), 3)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_checkpoint_state_dict_is_preferred_over_ema_and_timm_args_are_accepted(tmp_path):
    import argparse

    sd = _small().state_dict()
    ema = {k: torch.zeros_like(v) for k, v in sd.items()}
    torch.save({"state_dict": sd, "state_dict_ema": ema, "args": argparse.Namespace(lr=0.1)}, tmp_path / "t.pth")
    got = load_state_dict_file(tmp_path / "t.pth")
    assert all(torch.equal(got[k], sd[k]) for k in sd)


def test_safetensors_checkpoint(tmp_path):
    src = _small()
    save_file({f"module.{k}": v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    assert set(load_state_dict_file(tmp_path / "w.safetensors")) == set(src.state_dict())


def test_checkpoint_mismatch_names_missing_unexpected_and_shapes(tmp_path):
    sd = _small().state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["classifier.bias"]
    sd["features.0.weight"] = torch.zeros(5, 1, 3, 3)
    torch.save(sd, tmp_path / "bad.pth")
    spec = ModelConfig("convnet", {"width": 4, "depth": 1})
    with pytest.raises(DataError) as e:
        load_checkpoint_into(_small(), tmp_path / "bad.pth", spec, 3)
    msg = str(e.value)
    assert "\n" not in msg and "model 'convnet'" in msg
    assert "missing keys: classifier.bias" in msg and "unexpected keys: extra.weight" in msg
    assert "features.0.weight (5, 1, 3, 3) vs (4, 1, 3, 3)" in msg


def test_unreadable_and_pickled_object_checkpoints(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read teacher checkpoint"):
        load_state_dict_file(tmp_path / "junk.pth")
    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "obj.pth")
    with pytest.raises(DataError, match="pickled torch.nn.modules.linear.Linear object"):
        load_state_dict_file(tmp_path / "obj.pth")
    torch.save({"epoch": 3, "best": 0.5}, tmp_path / "none.pth")
    with pytest.raises(DataError, match="holds no state_dict"):
        load_state_dict_file(tmp_path / "none.pth")
    with pytest.raises(DataError, match="not found"):
        load_state_dict_file(tmp_path / "missing.pth")
