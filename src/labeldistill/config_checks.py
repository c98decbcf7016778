"""Range and choice checks shared by every config schema (the main job's and ``learn-labels``'s).

Types are checked while a config is built (:func:`labeldistill.config.load_typed_config`); what types cannot
express is checked here, with one message shape per kind of rule, so a user sees the same wording whichever
schema the key belongs to. No torch: loading a config must stay cheap.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from .errors import ConfigError


def is_number(value: Any) -> bool:
    """True for an int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def one_of(value: Any, allowed: Iterable[Any], key: str, what: str | None = None) -> None:
    """Refuse ``value`` unless it is in ``allowed``.

    Message: ``unknown <key> 'value'; known: a, b, c``, or with ``what`` (for list entries)
    ``unknown <what> 'value' in <key>; known: ...``.

    Raises:
        ConfigError: ``value`` not in ``allowed``.
    """
    allowed = list(allowed)
    if value not in allowed:
        where = f"{what} '{value}' in {key}" if what else f"{key} '{value}'"
        raise ConfigError(f"unknown {where}; known: {', '.join(map(str, allowed))}")


def at_least(value: Any, low: float, key: str, nullable: bool = False) -> None:
    """Refuse ``value < low`` (``None`` passes when ``nullable``).

    Message: ``<key> must be >= <low>, got <value>`` (``... (or null) ...`` when nullable).

    Raises:
        ConfigError: out of range.
    """
    if value is None and nullable:
        return
    if value is None or value < low:
        null = " (or null)" if nullable else ""
        raise ConfigError(f"{key} must be >= {low}{null}, got {value}")


def positive(value: float, key: str, allow_zero: bool = False) -> None:
    """Refuse a value that is not a finite number ``> 0`` (``>= 0`` with ``allow_zero``).

    Raises:
        ConfigError: ``<key> must be > 0, got <value>`` (a NaN or infinite value is refused too).
    """
    ok = is_number(value) and math.isfinite(value) and (value > 0 or (allow_zero and value == 0))
    if not ok:
        raise ConfigError(f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def in_interval(value: float, low: float, high: float, key: str, closed: str = "both",
                what: str = "") -> None:
    """Refuse ``value`` outside the interval from ``low`` to ``high``.

    Args:
        closed: which ends belong to the interval: ``both`` ([a, b]), ``right`` ((a, b]), ``left`` ([a, b)).
        what: words between the key and the interval (e.g. ``"is a probability"``); default ``"must be"``.

    Raises:
        ConfigError: ``<key> must be in [a, b], got <value>``.
    """
    lo_ok = value >= low if closed in ("both", "left") else value > low
    hi_ok = value <= high if closed in ("both", "right") else value < high
    if not (is_number(value) and lo_ok and hi_ok):
        left = "[" if closed in ("both", "left") else "("
        right = "]" if closed in ("both", "right") else ")"
        raise ConfigError(f"{key} {what or 'must be'} in {left}{low:g}, {high:g}{right}, got {value}")


def scale_range(value: Any, key: str, nullable: bool = False) -> None:
    """A RandomResizedCrop area range ``[low, high]`` with ``0 < low <= high <= 1``.

    Raises:
        ConfigError: wrong length, not numbers, or out of order.
    """
    if value is None and nullable:
        return
    ok = (isinstance(value, list) and len(value) == 2 and all(is_number(v) for v in value)
          and 0 < value[0] <= value[1] <= 1)
    if not ok:
        null = "null or " if nullable else ""
        raise ConfigError(f"{key} must be {null}[low, high] with 0 < low <= high <= 1, got {value}")


def unknown_key_message(key: str, where: str, known: Iterable[str]) -> str:
    """``unknown config key 'recover.ipcs'; known keys of recover: batch_size, ...``."""
    prefix = f"{where}." if where else ""
    return (f"unknown config key '{prefix}{key}'; known keys of {where or 'the top level'}: "
            + ", ".join(sorted(known)))
