import pytest
import torch

from labeldistill.errors import RegistryError
from labeldistill.models import bn_layers, create_model, list_models


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("size, ch", [(28, 1), (32, 3)])
def test_every_model_builds_and_runs(name, size, ch):
    m = create_model(name, num_classes=7, in_channels=ch, image_size=size)
    out = m(torch.randn(2, ch, size, size))
    assert out.shape == (2, 7)
    assert m.embed(torch.randn(2, ch, size, size)).shape == (2, m.feature_dim)


def test_convnet_options():
    m = create_model("convnet", 10, 1, 28, width=8, depth=2, norm="instance")
    assert not bn_layers(m)
    assert len(bn_layers(create_model("convnet", 10, 1, 28, width=8, depth=3))) == 3
    with pytest.raises(RegistryError, match="norm"):
        create_model("convnet", 10, 1, 28, norm="layer")


def test_unknown_model_and_option():
    with pytest.raises(RegistryError, match="convnet"):
        create_model("vgg11", 10, 1, 28)
    with pytest.raises(RegistryError, match="width"):
        create_model("convnet", 10, 1, 28, widht=3)


def test_resnet18_has_torchvision_state_dict_layout():
    sd = create_model("resnet18", 1000, 3, 224, stem="imagenet").state_dict()
    # torchvision.models.resnet18().state_dict() has 122 entries with these names and shapes.
    assert len(sd) == 122
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert sd["layer4.1.bn2.running_var"].shape == (512,)
    assert sd["fc.weight"].shape == (1000, 512)
    small = create_model("resnet18", 10, 3, 32).state_dict()
    assert small["conv1.weight"].shape == (64, 3, 3, 3)
    assert set(small) == set(sd)  # same keys: the small stem only changes conv1's kernel


def test_resnet18_loads_a_saved_torchvision_format_checkpoint(tmp_path):
    src = create_model("resnet18", 10, 3, 32, stem="imagenet")
    torch.save(src.state_dict(), tmp_path / "rn18.pth")
    dst = create_model("resnet18", 10, 3, 32, stem="imagenet")
    dst.load_state_dict(torch.load(tmp_path / "rn18.pth"))
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(src.eval()(x), dst.eval()(x))
