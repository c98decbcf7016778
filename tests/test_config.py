import pytest

from labeldistill.config import Config, load_config
from labeldistill.errors import ConfigError

from conftest import REPO

DEMO = REPO / "configs" / "fmnist_demo.yaml"


def test_demo_config_loads_with_dotted_overrides():
    cfg = load_config(DEMO, ["recover.ipc=5", "validate.model.args.width=16", "prune.factors=[1, 20]"])
    assert cfg.recover.ipc == 5
    assert cfg.validate.model.args["width"] == 16
    assert cfg.validate.model.args["depth"] == 3  # untouched sibling keys survive a dotted override
    assert cfg.prune.factors == [1, 20]
    assert cfg.run_path.name == "fmnist_demo"


def test_int_is_accepted_for_float_and_coerced():
    cfg = load_config(None, ["recover.lr=1"])
    assert isinstance(cfg.recover.lr, float) and cfg.recover.lr == 1.0


@pytest.mark.parametrize("override, message", [
    ("recover.ipcs=3", "unknown config key 'recover.ipcs'"),
    ("bogus=1", "unknown config key 'bogus'"),
    ("recover.ipc=ten", "must be int"),
    ("recover.ipc=0", "recover.ipc must be >= 1"),
    ("prune.factors=[0.5]", "prune factors must be numbers >= 1"),
    ("recover.modes=[dc]", "unknown recover mode 'dc'"),
    ("noequals", "must look like key=value"),
])
def test_bad_overrides_raise_config_error(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(DEMO, [override])


def test_unknown_key_message_lists_known_keys():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["recover.ipcs=3"])
    assert "ipc" in str(e.value) and "iterations" in str(e.value)


def test_unknown_key_in_yaml_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("recover:\n  ipc: 3\n  itterations: 5\n")
    with pytest.raises(ConfigError, match="recover.itterations"):
        load_config(p)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_defaults_are_valid():
    assert load_config(None).recover.modes == Config().recover.modes


def test_a_model_mapping_naming_another_model_drops_the_default_args(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("squeeze:\n  model: {name: 'torchvision:resnet18'}\nvalidate:\n  model: {name: convnet}\n")
    cfg = load_config(p)
    assert cfg.squeeze.model.name == "torchvision:resnet18" and cfg.squeeze.model.args == {}
    assert cfg.validate.model.args == {"width": 32}  # same model: its defaults stay
