"""The config checks: what types alone cannot express (ranges, choices, keys that must agree).

Each section of the main job's config has one function here (``check_<section>``), and :func:`check_config` calls
them all, then the rules that span sections (:func:`check_across`). A check only reads: it raises a
:class:`~labeldistill.errors.ConfigError` naming the key and the fix, and never changes the config (the few values
that are normalised are resolved by the loader first: :func:`labeldistill.config.loader.resolve_config`). Types
are checked while a config is built (:func:`labeldistill.config.loader.load_typed_config`).

The rule helpers at the top (:func:`one_of`, :func:`at_least`, ...) are shared by every schema (the main job's and
``learn-labels``'s), with one message shape per kind of rule, so a user sees the same wording whichever schema the
key belongs to. No torch: loading a config must stay cheap.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from ..errors import ConfigError
from ..variants import GRANULARITIES, POOLS, REPLAYS, parse_logits_format, parse_strategy, resolve_mode
from .schema import (AUTOCAST_MODES, CALIBRATIONS, EVAL_SPLITS, LABEL_SOURCES, SCHEDULES, STUDENT_RECIPE,
                     VALIDATE_LOSSES, ClassStatsConfig, Config, GeneratorConfig, HardLabelConfig, PruneConfig,
                     RecoverConfig, RelabelConfig, SqueezeConfig, StudentSpec, ValidateConfig)


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


def finite_positive(value: Any, key: str) -> None:
    """Refuse a learning rate (or any value) that is not a finite number ``> 0``.

    Raises:
        ConfigError: ``<key> must be a finite number > 0, got <value>``.
    """
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{key} must be a finite number > 0, got {value}")


def check_config(cfg: Config) -> None:
    """Every check of a resolved main-job config: section by section, then the rules across sections.

    Raises:
        ConfigError: on the first bad value, naming the key.
    """
    check_data(cfg.data)
    check_run(cfg)
    check_recover(cfg.recover)
    check_prune(cfg.prune)
    check_class_stats(cfg.class_stats)
    check_relabel(cfg.relabel)
    check_squeeze(cfg.squeeze)
    check_validate(cfg.validate)
    check_generator(cfg.generator)
    check_hard_label(cfg.hard_label)
    check_across(cfg)


def check_run(cfg: Config) -> None:
    """The top-level keys: ``seeds`` (distinct integers or null), ``autocast`` (resolved), ``deterministic``.

    Raises:
        ConfigError: naming the key.
    """
    if cfg.seeds is not None and (not cfg.seeds or len(set(map(str, cfg.seeds))) != len(cfg.seeds)
                                  or not all(isinstance(s, int) and not isinstance(s, bool) for s in cfg.seeds)):
        raise ConfigError(f"seeds must be a non-empty list of distinct integers (or null), got {cfg.seeds}")
    one_of(cfg.autocast, AUTOCAST_MODES, "autocast")
    if not isinstance(cfg.deterministic, bool):
        raise ConfigError(f"deterministic must be true or false, got {cfg.deterministic!r}")


def check_data(d: Any) -> None:
    """Range checks of the data keys a ``data`` section has (the main job's and ``learn-labels``' share them).

    Raises:
        ConfigError: naming the bad key and the fix.
    """
    for key in ("workers", "holdout", "test_holdout"):
        if hasattr(d, key):
            at_least(getattr(d, key), 0, f"data.{key}")
    if getattr(d, "class_order", None) is not None:
        one_of(d.class_order, ("sorted", "wnids"), "data.class_order")
    for key in ("train_subset", "test_subset", "image_size", "resize"):
        if hasattr(d, key):
            at_least(getattr(d, key), 1, f"data.{key}", nullable=True)
    if d.resize is not None:
        if d.image_size is None:
            raise ConfigError("data.resize needs data.image_size (the centre-crop size), e.g. image_size: 224")
        if d.resize < d.image_size:
            raise ConfigError(f"data.resize ({d.resize}) must be >= data.image_size ({d.image_size}): "
                              "the centre crop must fit in the resized image")
    if (d.mean is None) != (d.std is None):
        raise ConfigError("set both data.mean and data.std, or neither")
    if d.mean is not None:
        if len(d.mean) != len(d.std) or not d.mean:
            raise ConfigError(f"data.mean and data.std need one value per channel, got {d.mean} and {d.std}")
        for key in ("mean", "std"):
            if not all(is_number(v) and math.isfinite(v) for v in getattr(d, key)):
                raise ConfigError(f"data.{key} must be a list of numbers, got {getattr(d, key)}")
        if min(d.std) <= 0:
            raise ConfigError(f"data.std values must be > 0, got {d.std}")


def check_squeeze(squeeze_cfg: SqueezeConfig) -> None:
    """Range checks of the ``squeeze`` keys: ``lr``, ``warmup_epochs`` and ``crop_scale``.

    Raises:
        ConfigError: naming the key.
    """
    finite_positive(squeeze_cfg.lr, "squeeze.lr")
    if squeeze_cfg.warmup_epochs < 0 or (not squeeze_cfg.checkpoint
                                         and 0 < squeeze_cfg.epochs <= squeeze_cfg.warmup_epochs):
        raise ConfigError(f"squeeze.warmup_epochs must be >= 0 and < squeeze.epochs ({squeeze_cfg.epochs}), "
                          f"got {squeeze_cfg.warmup_epochs}")
    scale_range(squeeze_cfg.crop_scale, "squeeze.crop_scale", nullable=True)


def check_class_stats(class_stats_cfg: ClassStatsConfig) -> None:
    """``class_stats.mode``: ``exact`` or ``ema``.

    Raises:
        ConfigError: another mode.
    """
    one_of(class_stats_cfg.mode, ("exact", "ema"), "class_stats.mode")


def check_recover(recover_cfg: RecoverConfig) -> None:
    """The ``recover`` keys: every mode known (built in or under ``recover.variants``), the choices and ranges.

    Raises:
        ConfigError: naming the key.
    """
    at_least(recover_cfg.ipc, 1, "recover.ipc")
    for m in recover_cfg.modes:
        resolve_mode(m, recover_cfg.variants)
    if recover_cfg.crops not in ("per_batch", "per_image"):
        raise ConfigError(f"recover.crops must be per_batch or per_image, got '{recover_cfg.crops}'")
    if recover_cfg.init not in ("noise", "real"):
        raise ConfigError(f"recover.init must be noise or real, got '{recover_cfg.init}'")
    if min(recover_cfg.iterations, recover_cfg.batch_size, recover_cfg.rded_factor, recover_cfg.rded_candidates,
           recover_cfg.vectorize) < 1:
        raise ConfigError("recover.iterations, batch_size, rded_factor, rded_candidates and vectorize must be >= 1")
    in_interval(recover_cfg.cda_milestone, 0, 1, "recover.cda_milestone", closed="right")
    scale_range(recover_cfg.crop_scale, "recover.crop_scale")
    finite_positive(recover_cfg.lr, "recover.lr")


def _check_factor(f: Any) -> None:
    if not is_number(f) or f < 1:
        raise ConfigError(f"prune factors must be numbers >= 1, got {f!r}")


def check_relabel(relabel_cfg: RelabelConfig) -> None:
    """The ``relabel`` keys: ``only_kept`` (a pruning factor), ``logits``, ``epochs``, ``batch_size``, ``cutmix``,
    ``crop_scale``.

    Raises:
        ConfigError: naming the key.
    """
    if relabel_cfg.only_kept is not None:
        _check_factor(relabel_cfg.only_kept)
    parse_logits_format(relabel_cfg.logits)
    if relabel_cfg.epochs < 1 or relabel_cfg.batch_size < 1:
        raise ConfigError("relabel.epochs and relabel.batch_size must be >= 1")
    in_interval(relabel_cfg.cutmix, 0, 1, "relabel.cutmix", what="is a probability")
    scale_range(relabel_cfg.crop_scale, "relabel.crop_scale", nullable=True)


def check_prune(prune_cfg: PruneConfig) -> None:
    """The ``prune`` keys: factors >= 1, known strategies, logits formats, granularity, pool and replay.

    Raises:
        ConfigError: naming the key (an unknown strategy or format: the known ones).
    """
    for f in prune_cfg.factors:
        _check_factor(f)
    for st in prune_cfg.strategies:
        parse_strategy(st)
    for fmt in prune_cfg.logits:
        parse_logits_format(fmt)
    if prune_cfg.granularity not in GRANULARITIES:
        raise ConfigError(f"prune.granularity must be batch or epoch, got '{prune_cfg.granularity}'")
    one_of(prune_cfg.pool, POOLS, "prune.pool")
    if prune_cfg.replay is not None:
        one_of(prune_cfg.replay, REPLAYS, "prune.replay")


def check_validate(validate_cfg: ValidateConfig) -> None:
    """The ``validate`` keys: the student's recipe, loss, evaluation, label source and calibration, students.

    Raises:
        ConfigError: naming the key.
    """
    finite_positive(validate_cfg.lr, "validate.lr")
    if validate_cfg.optimizer not in ("adamw", "sgd"):
        raise ConfigError(f"unknown validate.optimizer '{validate_cfg.optimizer}'; known: adamw, sgd")
    positive(validate_cfg.temperature, "validate.temperature")
    one_of(validate_cfg.loss, VALIDATE_LOSSES, "validate.loss")
    one_of(validate_cfg.eval_split, EVAL_SPLITS, "validate.eval_split")
    one_of(validate_cfg.parallel, ("data", "students"), "validate.parallel")
    _check_student_recipe(validate_cfg)
    in_interval(validate_cfg.gift_alpha, 0, 1, "validate.gift_alpha")
    in_interval(validate_cfg.gift_smoothing, 0, 1, "validate.gift_smoothing")
    _check_calibration(validate_cfg)
    _check_students(validate_cfg)


def _check_student_recipe(validate_cfg: ValidateConfig) -> None:
    """Range-check the recipe keys (schedule, warm-up, evaluation interval, repeats).

    Raises:
        ConfigError: an unknown schedule, warm-up epochs below 0 (or not below ``epochs`` when set), an evaluation
            interval below 1, repeats below 1.
    """
    vc = validate_cfg
    one_of(vc.schedule, SCHEDULES, "validate.schedule")
    at_least(vc.warmup_epochs, 0, "validate.warmup_epochs")
    if vc.epochs is not None and vc.warmup_epochs >= vc.epochs:
        raise ConfigError(f"validate.warmup_epochs ({vc.warmup_epochs}) must be below validate.epochs ({vc.epochs})")
    at_least(vc.eval_every, 1, "validate.eval_every", nullable=True)
    at_least(vc.repeats, 1, "validate.repeats")
    if not isinstance(vc.weight_decay_1d, bool):
        raise ConfigError(f"validate.weight_decay_1d must be true or false, got {vc.weight_decay_1d!r}")


def _check_calibration(validate_cfg: ValidateConfig) -> None:
    """``validate.label_source``, ``validate.calibration`` and the ``lpqld_*`` keys.

    Raises:
        ConfigError: naming the key (``lpqld`` with a loss other than ``kl`` too).
    """
    vc = validate_cfg
    one_of(vc.label_source, LABEL_SOURCES, "validate.label_source")
    one_of(vc.calibration, CALIBRATIONS, "validate.calibration")
    if vc.calibration == "lpqld" and vc.loss != "kl":
        raise ConfigError(f"validate.calibration: lpqld needs validate.loss: kl, got '{vc.loss}'")
    at_least(vc.lpqld_step, 1, "validate.lpqld_step")
    in_interval(vc.lpqld_gamma, 0, 1, "validate.lpqld_gamma", closed="right")
    positive(vc.lpqld_min_temperature, "validate.lpqld_min_temperature")
    positive(vc.lpqld_student_temperature, "validate.lpqld_student_temperature")


def _check_recipe(spec: StudentSpec, where: str) -> None:
    """Range-check a student's own recipe keys.

    Raises:
        ConfigError: a learning rate that is not a finite number > 0, an unknown optimiser, epochs below 1 or a
            negative weight decay.
    """
    if spec.lr is not None and (not is_number(spec.lr) or not math.isfinite(spec.lr) or spec.lr <= 0):
        raise ConfigError(f"{where}.lr must be a finite number > 0, got {spec.lr!r}")
    if spec.optimizer is not None:
        one_of(spec.optimizer, ("adamw", "sgd"), f"{where}.optimizer")
    if spec.epochs is not None:
        at_least(spec.epochs, 1, f"{where}.epochs")
    if spec.weight_decay is not None:
        positive(spec.weight_decay, f"{where}.weight_decay", allow_zero=True)


def _check_students(validate_cfg: ValidateConfig) -> None:
    """Each ``validate.students`` entry (a resolved :class:`StudentSpec`): its recipe, and no student twice (their
    rows would collide).

    Raises:
        ConfigError: a recipe key out of range or the same student twice.
    """
    seen: dict[tuple, int] = {}
    for i, s in enumerate(validate_cfg.students):
        _check_recipe(s, f"validate.students[{i}]")
        key = (s.name, tuple(sorted((k, repr(v)) for k, v in s.args.items())),
               tuple(getattr(s, k) for k in STUDENT_RECIPE))
        if key in seen:
            raise ConfigError(f"validate.students[{i}] repeats validate.students[{seen[key]}] ({s.name} {s.args}); "
                              "their results would collide")
        seen[key] = i


def check_generator(generator_cfg: GeneratorConfig) -> None:
    """The label generator's keys: ``epochs``, ``temperature``, ``optimizer``, ``lr``.

    Raises:
        ConfigError: naming the key.
    """
    at_least(generator_cfg.epochs, 1, "generator.epochs")
    positive(generator_cfg.temperature, "generator.temperature")
    if generator_cfg.optimizer not in ("adamw", "sgd"):
        raise ConfigError(f"unknown generator.optimizer '{generator_cfg.optimizer}'; known: adamw, sgd")
    finite_positive(generator_cfg.lr, "generator.lr")


def check_hard_label(hard_label_cfg: HardLabelConfig) -> None:
    """``hard_label.real_epochs`` > 0.

    Raises:
        ConfigError: naming the key.
    """
    positive(hard_label_cfg.real_epochs, "hard_label.real_epochs")


def check_across(cfg: Config) -> None:
    """The rules that span sections: an ``eval_split: holdout`` needs ``data.holdout``; ``label_source: static``
    needs every recover mode to be a ``tensor`` set; ``label_source: generator`` needs every stored step.

    Raises:
        ConfigError: naming both keys.
    """
    vc = cfg.validate
    if vc.eval_split == "holdout" and not cfg.data.holdout:
        raise ConfigError("validate.eval_split: holdout needs data.holdout > 0 (the number of train images to hold "
                          "out, a multiple of the number of classes), e.g. data.holdout=5000")
    if vc.label_source == "static":
        other = [m for m in cfg.recover.modes if resolve_mode(m, cfg.recover.variants).source != "tensor"]
        if other:
            raise ConfigError(f"validate.label_source: static trains on the soft labels a set was imported with: "
                              f"recover mode '{other[0]}' is not a source: tensor set (drop it from recover.modes)")
    if vc.label_source == "generator" and cfg.relabel.only_kept is not None:
        raise ConfigError("validate.label_source: generator learns from every stored step: unset relabel.only_kept")
