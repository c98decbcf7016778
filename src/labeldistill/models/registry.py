"""The model registry (see the package docstring).

A model name is one of

* a registered name (``convnet``, ``resnet18`` …; :func:`list_models`);
* ``<family>:<name>`` for a model zoo registered with :func:`register_family` (``torchvision:<name>``,
  ``timm:<name>``, see :mod:`labeldistill.models.zoo`);
* ``<module>:<factory>`` for a user's own architecture: ``module`` is imported (it must be importable, e.g.
  on ``PYTHONPATH``) and ``factory(num_classes=…, in_channels=…, [image_size=…,] **args)`` is called.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Callable, Iterable

import torch.nn as nn

from ..errors import RegistryError

_MODELS: dict[str, Callable[..., nn.Module]] = {}
# family prefix -> (builder(name, num_classes, in_channels, image_size, **kw), names() for suggestions)
_FAMILIES: dict[str, tuple[Callable[..., nn.Module], Callable[[], list[str]]]] = {}
_SIZE_ARGS = ("num_classes", "in_channels", "image_size")


def register_model(name: str) -> Callable:
    """Decorator: register ``fn(num_classes, in_channels, image_size, **kw) -> nn.Module``."""

    def deco(fn: Callable) -> Callable:
        _MODELS[name] = fn
        return fn

    return deco


def register_family(prefix: str, names: Callable[[], list[str]]) -> Callable:
    """Decorator: register ``fn(name, num_classes, in_channels, image_size, **kw) -> nn.Module`` for every model
    name ``"<prefix>:<name>"``; ``names()`` lists the family's models (for "did you mean" suggestions)."""

    def deco(fn: Callable) -> Callable:
        _FAMILIES[prefix] = (fn, names)
        return fn

    return deco


def list_models() -> list[str]:
    """Registered model names, sorted (zoo models and users' factories are not listed)."""
    return sorted(_MODELS)


def close_matches(name: str, known: Iterable[str], n: int = 5) -> str:
    """``"; did you mean: a, b"`` for the names in ``known`` closest to ``name`` (difflib), or ``""``."""
    close = difflib.get_close_matches(name, list(known), n=n, cutoff=0.6)
    return f"; did you mean: {', '.join(close)}" if close else ""


def _zoo_hint(name: str) -> str:
    """``"; or the zoo model 'torchvision:<name>'"`` when a family knows ``name``."""
    for prefix, (_, names) in _FAMILIES.items():
        try:
            if name in names():
                return f"; or the zoo model '{prefix}:{name}'"
        except ImportError:  # the zoo package is not installed: no hint from it
            continue
    return ""


def _import_factory(name: str) -> Callable[..., nn.Module]:
    """The factory of a ``"<module>:<factory>"`` name.

    Raises:
        RegistryError: the module cannot be imported or has no such callable.
    """
    mod_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise RegistryError(f"model '{name}': cannot import module '{mod_name}' ({e}); known zoo prefixes: "
                            f"{', '.join(sorted(_FAMILIES))}; or put the module on PYTHONPATH") from None
    fn = getattr(module, attr, None) if attr else None
    if not callable(fn):
        raise RegistryError(f"model '{name}': module '{mod_name}' has no callable '{attr}'")
    return fn


def _call_factory(name: str, fn: Callable, num_classes: int, in_channels: int, image_size: int,
                  kwargs: dict) -> nn.Module:
    """Call a user's factory with the sizes it accepts (``num_classes``, ``in_channels``, ``image_size``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    sizes = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    sizes = {k: v for k, v in sizes.items() if k in params or var_kw or k != "image_size"}
    clash = [k for k in kwargs if k in sizes]
    if clash:
        raise RegistryError(f"model '{name}': '{clash[0]}' comes from the data; remove it from the model args")
    try:
        model = fn(**sizes, **kwargs)
    except TypeError as e:
        raise RegistryError(f"model '{name}' cannot be called with num_classes, in_channels and "
                            f"{', '.join(kwargs) or 'no options'}: {e}") from None
    if not isinstance(model, nn.Module):
        raise RegistryError(f"model '{name}': the factory returned {type(model).__name__}, not a torch.nn.Module")
    return model


def create_model(name: str, num_classes: int, in_channels: int, image_size: int, **kwargs) -> nn.Module:
    """Build a model by name (registered, ``<zoo>:<name>`` or ``<module>:<factory>``; see the module docstring).

    Args:
        name: registry name (see :func:`list_models`), ``torchvision:<name>``, ``timm:<name>`` or
            ``<module>:<factory>``.
        num_classes: output logits ``C``.
        in_channels: input channels of ``(N, C_in, H, W)`` images.
        image_size: input height = width in pixels.
        **kwargs: builder-specific options (e.g. ``width``, ``depth``, ``norm`` for ``convnet``; ``stem`` for
            ResNets; the zoo model's own keyword arguments).

    Raises:
        RegistryError: unknown model name (with close matches) or keyword argument.
    """
    if name in _MODELS:
        fn = _MODELS[name]
        allowed = [p for p in inspect.signature(fn).parameters if p not in _SIZE_ARGS]
        bad = [k for k in kwargs if k not in allowed]
        if bad:
            raise RegistryError(f"model '{name}' has no option '{bad[0]}'; its options: {', '.join(allowed)}")
        return fn(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _FAMILIES:
        return _FAMILIES[prefix][0](rest, num_classes=num_classes, in_channels=in_channels,
                                    image_size=image_size, **kwargs)
    if sep:
        return _call_factory(name, _import_factory(name), num_classes, in_channels, image_size, kwargs)
    raise RegistryError(f"unknown model '{name}'; known models: {', '.join(list_models())}"
                        f"{close_matches(name, _MODELS) or _zoo_hint(name)}; or '<zoo>:<name>' with zoo "
                        f"{' / '.join(sorted(_FAMILIES))}, or '<module>:<factory>' for your own")


def check_model_spec(spec: Any, where: str = "") -> None:
    """Check a model spec's name (and a registered model's option names) without building it: cheap, so it runs
    before any work (a typo in ``validate.model`` must not surface after hours of squeeze and recover).

    Args:
        spec: a :class:`~labeldistill.config.ModelConfig` (``name`` + ``args``).
        where: the config key, named in the message (e.g. ``validate.model``).

    Raises:
        RegistryError: unknown registered or zoo name (with close matches), an option a registered model does not
            take, or a ``<module>:<factory>`` that cannot be imported.
    """
    name, at = spec.name, f"{where}: " if where else ""
    if name in _MODELS:
        allowed = [p for p in inspect.signature(_MODELS[name]).parameters if p not in _SIZE_ARGS]
        bad = [k for k in spec.args if k not in allowed]
        if bad:
            raise RegistryError(f"{at}model '{name}' has no option '{bad[0]}'; its options: {', '.join(allowed)}")
        return
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _FAMILIES:
        try:
            names = _FAMILIES[prefix][1]()
        except ImportError as e:
            raise RegistryError(f"{at}model '{name}' needs the '{prefix}' package ({e})") from None
        if rest not in names:
            raise RegistryError(f"{at}unknown {prefix} model '{rest}'{close_matches(rest, names)}")
        return
    if sep:
        _import_factory(name)
        return
    raise RegistryError(f"{at}unknown model '{name}'{close_matches(name, _MODELS) or _zoo_hint(name)}; known "
                        f"models: {', '.join(list_models())}, or '<zoo>:<name>' ({' / '.join(sorted(_FAMILIES))}), "
                        "or '<module>:<factory>'")


def build_model(spec: Any, num_classes: int, shape: tuple[int, int, int]) -> nn.Module:
    """Instantiate a model spec (a :class:`~labeldistill.config.ModelConfig`: ``name`` + ``args``) for images
    of ``shape`` = ``(C, H, W)`` with ``num_classes`` outputs. The one way every stage builds a model.

    Raises:
        RegistryError: unknown model name or keyword argument.
    """
    return create_model(spec.name, num_classes=num_classes, in_channels=shape[0], image_size=shape[1],
                        **spec.args)
