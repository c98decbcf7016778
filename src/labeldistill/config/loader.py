"""The config loader: a YAML file plus dotted ``key=value`` overrides into typed dataclasses, resolved, checked.

Generic over the schema: :func:`load_typed_config` fills any dataclass tree (the main job's
:class:`~labeldistill.config.schema.Config`, ``learn-labels``'
:class:`~labeldistill.learn_labels.config.LearnLabelsConfig`) from YAML, rejecting unknown keys and values of the
wrong type with a :class:`~labeldistill.errors.ConfigError` that lists the known keys, so a typo never silently falls back to a default.

The main job's :func:`load_config` runs three steps: build (:func:`load_typed_config`), **resolve**
(:func:`resolve_config`: the only normalisation of the values a user wrote, done once, before any check) and
**check** (:func:`labeldistill.config.checks.check_config`, which reads the config and never changes it). The
resolved config is dumped as ``config.yaml`` in the run directory (:func:`dump_config`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..protocols import apply_protocol
from .checks import check_config, unknown_key_message
from .schema import STUDENT_RECIPE, Config, ModelConfig, StudentSpec


def _type_ok(value: Any, annotation: Any) -> tuple[bool, Any]:
    """Check ``value`` against a (string-free) annotation; returns (ok, coerced value)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if annotation is type(None):
        return value is None, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if annotation is str:
        return isinstance(value, str), value
    if annotation in (list, dict):
        return isinstance(value, annotation), value
    return True, value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(unknown_key_message(unknown[0], where, fields))
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hint):
            if hint is ModelConfig and isinstance(value, str):
                value = {"name": value}
            kwargs[name] = _build(hint, value, key)
            continue
        ok, coerced = _type_ok(value, hint)
        if not ok:
            raise ConfigError(f"config key '{key}' must be {_hint_name(hint)}, got {value!r}")
        kwargs[name] = coerced
    return cls(**kwargs)


def _hint_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_hint_name(a) for a in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def config_to_dict(cfg: Any) -> dict:
    """The config as plain YAML-able data."""
    return dataclasses.asdict(cfg)


def load_typed_config(cls: type, path: str | Path | None = None, overrides: list[str] | None = None) -> Any:
    """Load a YAML file into dataclass ``cls`` and apply ``key=value`` overrides (values parsed as YAML).

    Unknown keys and wrong types are rejected; nested dataclass fields merge key by key, other dicts
    (e.g. model ``args``) are replaced by an override of the whole dict or updated by a dotted key. Values are
    neither resolved nor range-checked here (the schema's own loader does that: :func:`load_config`).

    Raises:
        ConfigError: missing/unparsable file, unknown key, wrong type, bad override syntax.
    """
    tree = config_to_dict(cls())
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse {p} as YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        _check_keys(loaded, "", cls)
        _merge(tree, loaded)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (e.g. seed=1)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        _check_keys(_nest(key, value), "", cls)
        _set_dotted(tree, key, value)
    return _build(cls, tree, "")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load the main-job :class:`~labeldistill.config.schema.Config`: build it (:func:`load_typed_config`),
    resolve it (:func:`resolve_config`) and check it (:func:`~labeldistill.config.checks.check_config`).

    Example overrides: ``["recover.ipc=5", "validate.model.args.width=16"]``.

    Raises:
        ConfigError: as :func:`load_typed_config`, a malformed ``validate.students`` entry, or a value out of range.
    """
    cfg = resolve_config(load_typed_config(Config, path, overrides))
    check_config(cfg)
    return cfg


def resolve_config(cfg: Config) -> Config:
    """The config with the values a user may write in several forms put in their one form (a new config; ``cfg``
    is left as it is). The only normalisation a loaded main-job config gets, before any check:

    - ``autocast``: YAML reads a bare ``on`` / ``off`` as the booleans ``True`` / ``False``: they become ``bf16`` /
      ``off``.
    - ``validate.protocol``: the preset's values fill the ``validate`` keys (:func:`~labeldistill.protocols.apply_protocol`;
      a key set to another value is refused).
    - ``validate.students``: each entry (a bare model name, or a ``{name, args, lr, optimizer, epochs,
      weight_decay}`` mapping) becomes a :class:`~labeldistill.config.schema.StudentSpec`.

    The augmentation keys that follow the dataset (``flip``, ``relabel.crop_scale``) are resolved later, by the
    data layer (:func:`labeldistill.data.presets.resolve_augmentation`), since they need the dataset registry.

    Raises:
        ConfigError: a ``validate.students`` entry that is neither a name nor such a mapping; a protocol preset
            contradicted by an explicit key (or by ``validate.students``).
    """
    autocast = ("bf16" if cfg.autocast else "off") if isinstance(cfg.autocast, bool) else cfg.autocast
    students = [_parse_student(s, f"validate.students[{i}]") for i, s in enumerate(cfg.validate.students)]
    out = dataclasses.replace(cfg, autocast=autocast, validate=dataclasses.replace(cfg.validate, students=students))
    apply_protocol(out)  # sets the new config's validate keys; ``cfg`` keeps its own section
    return out


def _parse_student(item: Any, where: str) -> StudentSpec:
    """A ``{name, args, lr, optimizer, epochs, weight_decay}`` mapping (or a bare name) as a :class:`StudentSpec`.

    Raises:
        ConfigError: not a name or a mapping with a string ``name``, a mapping ``args`` and only the recipe keys
            :data:`~labeldistill.config.schema.STUDENT_RECIPE` besides.
    """
    if isinstance(item, ModelConfig):
        item = dataclasses.asdict(item)
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
            or set(item) - {"name", "args", *STUDENT_RECIPE} or not isinstance(item.get("args") or {}, dict):
        raise ConfigError(f"{where} must be a model name or {{name: NAME, args: {{...}}, lr, optimizer, epochs, "
                          f"weight_decay}} (recipe keys optional), got {item!r}")
    return StudentSpec(item["name"], dict(item.get("args") or {}),
                       **{k: item[k] for k in STUDENT_RECIPE if item.get(k) is not None})


def _nest(dotted: str, value: Any) -> dict:
    out: dict = {}
    _set_dotted(out, dotted, value)
    return out


def _check_keys(data: dict, where: str, cls: type) -> None:
    """Reject unknown keys early (before merging into defaults), with the known names."""
    hints = typing.get_type_hints(cls)
    for k, v in data.items():
        if k not in hints:
            raise ConfigError(unknown_key_message(k, where, hints))
        h = hints[k]
        if dataclasses.is_dataclass(h) and isinstance(v, dict):
            _check_keys(v, f"{where}.{k}" if where else k, h)


def _merge(base: dict, new: dict) -> None:
    """Merge ``new`` into ``base`` key by key; a model mapping that names another model without ``args``
    starts from no args (the default model's options, e.g. convnet's width, do not fit another model)."""
    for k, v in new.items():
        old = base.get(k)
        if isinstance(v, dict) and isinstance(old, dict) and "args" in old and "name" in v and "args" not in v \
                and v["name"] != old.get("name"):
            base[k] = {**old, "args": {}}
            old = base[k]
        if isinstance(v, dict) and isinstance(old, dict) and k != "args":
            _merge(old, v)
        else:
            base[k] = v


def dump_config(cfg: Any, path: Path) -> None:
    """Write the resolved config as YAML."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
