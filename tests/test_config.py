import copy
import dataclasses
import typing

import pytest

from labeldistill.config import Config, check_config, load_config, load_typed_config, resolve_config
from labeldistill.config import checks
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


def test_resolve_is_the_one_normalisation_and_checks_never_change_the_config():
    raw = load_typed_config(Config, REPO / "configs" / "fmnist_demo.yaml",
                            ["autocast=off", "validate.students=[convnet, {name: mlp, lr: 0.01}]"])
    before = copy.deepcopy(raw)
    cfg = resolve_config(raw)
    assert raw == before  # resolve builds a new config
    assert raw.autocast is False and cfg.autocast == "off"
    assert [(type(s).__name__, s.name, s.lr) for s in cfg.validate.students] == [("StudentSpec", "convnet", None),
                                                                                 ("StudentSpec", "mlp", 0.01)]
    snapshot = copy.deepcopy(cfg)
    check_config(cfg)
    assert cfg == snapshot
    with pytest.raises(ConfigError, match="unknown autocast 'False'"):
        check_config(raw)  # a check does not fix an unresolved value
    assert load_config(REPO / "configs" / "fmnist_demo.yaml", ["autocast=off"]).autocast == "off"


def test_every_config_section_has_its_check():
    sections = [k for k, h in typing.get_type_hints(Config).items() if dataclasses.is_dataclass(h)]
    assert len(sections) == 9
    missing = [k for k in sections if not callable(getattr(checks, f"check_{k}", None))]
    assert not missing, f"sections without a check_<section> in labeldistill.config.checks: {missing}"
