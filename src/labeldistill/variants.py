"""Recover modes and label variants as data: what each mode switches on, how its batches are planned, and
which pruned stores a config asks for. No torch, so loading and checking a config stays cheap.

Recover modes (LPLD §3, spec §4.2):

* batching ``cross_class`` — each batch holds one image of every class (loop over IPC slots), as SRe2L;
  ``class_wise`` — each batch holds images of one class only (LPLD's re-batching, "+C").
* BN targets ``global`` — the teacher's running statistics, as SRe2L; ``class`` — that class's statistics
  from ``class-stats`` (LPLD's class-wise supervision, "+CS"; needs class-wise batching).
* crop schedule ``fixed`` or ``cda`` — CDA's easy-to-hard RandomResizedCrop curriculum (Yin & Shen, TMLR 2024).
* source ``synthesis`` (the above), ``random_real`` (real images, DD-Ranking's fairness baseline), ``rded``
  (RDED, Sun et al. CVPR 2024), or a set made elsewhere: ``folder`` (an ImageFolder with ``class_to_idx.json``,
  or SRe2L's ``new{c:03d}/`` layout) or ``tensor`` (DD-Ranking's ``images.pt`` + ``labels.pt``, optionally
  ``mean``/``std``), both with ``path`` (:mod:`labeldistill.data.owned`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigError
from .layout import LabelVariant


@dataclass(frozen=True)
class RecoverMode:
    """What one recover mode switches on (a built-in mode, or one a config defines under ``recover.variants``;
    immutable). Synthesis fields are ``None`` for a real-image or own source, ``path`` / ``mean`` / ``std`` for
    any source but ``folder`` / ``tensor``.

    Attributes:
        source: ``synthesis`` (BN-statistics matching), ``random_real``, ``rded``, or a set made elsewhere:
            ``folder`` or ``tensor`` (:mod:`labeldistill.data.owned`).
        batching: synthesis only: ``cross_class`` (SRe2L) or ``class_wise`` (LPLD's "+C").
        bn_targets: synthesis only: ``global`` (the teacher's running statistics) or ``class`` (LPLD's "+CS").
        crop_schedule: synthesis only: ``fixed`` or ``cda`` (CDA's crop curriculum).
        path: ``folder`` / ``tensor`` only: the folder holding the set.
        mean: ``tensor`` only, optional: the per-channel normalisation mean of its ``images.pt`` ([0, 1] units).
        std: ``tensor`` only, optional: the per-channel std (> 0), with ``mean``.
    """

    source: str = "synthesis"
    batching: str | None = None
    bn_targets: str | None = None
    crop_schedule: str | None = None
    path: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields that are set, in field order (``mean`` / ``std`` as lists): what fingerprints
        (``recover.variant``), resume keys and ``images.json`` (``variant``) record, unchanged since these switches
        were a plain mapping."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


BUILTIN_MODES: dict[str, RecoverMode] = {
    "sre2l": RecoverMode("synthesis", "cross_class", "global", "fixed"),
    "c": RecoverMode("synthesis", "class_wise", "global", "fixed"),
    "cs": RecoverMode("synthesis", "class_wise", "class", "fixed"),
    "lpld": RecoverMode("synthesis", "class_wise", "class", "fixed"),
    "cda": RecoverMode("synthesis", "cross_class", "global", "cda"),
    "random_real": RecoverMode("random_real"),
    "rded": RecoverMode("rded"),
}
"""The recover modes every config knows, by name."""
MODE_SWITCHES = {"batching": ("cross_class", "class_wise"), "bn_targets": ("global", "class"),
                 "crop_schedule": ("fixed", "cda")}
"""A synthesis mode's switches and their values; the first value of each is a custom mode's default."""
SOURCES = ("synthesis", "random_real", "rded", "folder", "tensor")
OWN_SOURCES = ("folder", "tensor")  # sets made elsewhere, read from ``path``
NORM_KEYS = ("mean", "std")  # a ``tensor`` source's normalisation of images.pt
PRUNE_METRICS = ("confidence", "diff", "diff_signed", "correct", "cut_ratio")
GRANULARITIES = ("batch", "epoch")
POOLS = ("prefix", "subset")  # which stored steps a pruned store keeps (labels/pool.py); the first is the default
REPLAYS = ("ordered", "pool")  # how validate walks a store's steps (validate.PoolSampler)


def resolve_mode(mode: str, custom: dict | None = None) -> RecoverMode:
    """The switches of a recover mode: a built-in one (:data:`BUILTIN_MODES`) or one defined under
    ``recover.variants`` (the YAML key keeps its name).

    A custom mode is either synthesis switches (``batching``, ``bn_targets``, ``crop_schedule``; unset ones take
    the first value of :data:`MODE_SWITCHES`) or a source: ``{source: random_real | rded}``, or ``{source: folder
    | tensor, path: DIR}`` for a set made elsewhere (a ``tensor`` one may add ``mean`` and ``std``, one value per
    channel: the normalisation of its ``images.pt``).

    Raises:
        ConfigError: unknown mode, unknown switch or value, class targets with cross-class batches, a
        ``folder`` / ``tensor`` source without ``path`` (or a ``path`` or synthesis switch with another source),
        ``mean`` / ``std`` that are not one number per channel each (std > 0), or given for another source.
    """
    custom = custom or {}
    if mode in custom:
        switches = _custom_mode(mode, custom[mode])
        if switches.source != "synthesis":
            return switches
    elif mode in BUILTIN_MODES:
        switches = BUILTIN_MODES[mode]
    else:
        raise ConfigError(f"unknown recover mode '{mode}'; known: {', '.join(BUILTIN_MODES)}"
                          + (f", {', '.join(custom)}" if custom else ""))
    if switches.source == "synthesis":
        for k, allowed in MODE_SWITCHES.items():
            if getattr(switches, k) not in allowed:
                raise ConfigError(f"recover mode '{mode}': {k} must be one of {', '.join(allowed)}, "
                                  f"got {getattr(switches, k)!r}")
        if switches.bn_targets == "class" and switches.batching != "class_wise":
            raise ConfigError(f"recover mode '{mode}': class BN targets need class_wise batching")
    return switches


def _custom_mode(mode: str, spec: Any) -> RecoverMode:
    """A mode defined under ``recover.variants.<mode>`` (synthesis switches not yet checked)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"recover.variants.{mode} must be a mapping of switches")
    known = (*MODE_SWITCHES, "source", "path", *NORM_KEYS)
    bad = [k for k in spec if k not in known]
    if bad:
        raise ConfigError(f"recover.variants.{mode}: unknown switch '{bad[0]}'; known: " + ", ".join(known))
    source = spec.get("source", "synthesis")
    if source not in SOURCES:
        raise ConfigError(f"recover.variants.{mode}.source must be one of {', '.join(SOURCES)}, got {source!r}")
    if source != "tensor" and any(k in spec for k in NORM_KEYS):
        raise ConfigError(f"recover.variants.{mode}: mean/std apply to source: tensor only, not {source}")
    if source == "synthesis":
        if "path" in spec:
            raise ConfigError(f"recover.variants.{mode}: 'path' needs source: folder or tensor")
        return RecoverMode("synthesis", **{k: spec.get(k, allowed[0]) for k, allowed in MODE_SWITCHES.items()})
    extra = [k for k in spec if k in MODE_SWITCHES]
    if extra:
        raise ConfigError(f"recover.variants.{mode}: '{extra[0]}' applies to source: synthesis only, not {source}")
    if source in OWN_SOURCES:
        path = spec.get("path")
        if not isinstance(path, str) or not path:
            raise ConfigError(f"recover.variants.{mode}: source: {source} needs path: DIR (the folder holding "
                              + ("the images" if source == "folder" else "images.pt and labels.pt") + ")")
        return RecoverMode(source, path=path, **_norm_keys(mode, spec))
    if "path" in spec:
        raise ConfigError(f"recover.variants.{mode}: 'path' needs source: folder or tensor")
    return RecoverMode(source)


def _norm_keys(mode: str, spec: dict) -> dict:
    """``mean`` and ``std`` of a ``tensor`` source (both or neither; lists of numbers of equal length, std > 0)."""
    given = [k for k in NORM_KEYS if k in spec]
    if not given:
        return {}
    if len(given) == 1:
        raise ConfigError(f"recover.variants.{mode}: give both mean and std (the normalisation of images.pt)")
    vals = [spec[k] for k in NORM_KEYS]
    ok = all(isinstance(v, list) and v and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in v)
             for v in vals)
    if not ok or len(vals[0]) != len(vals[1]) or min(vals[1]) <= 0:
        raise ConfigError(f"recover.variants.{mode}: mean and std must be lists of numbers of the same length, one "
                          f"per channel, std > 0; got mean={spec['mean']!r}, std={spec['std']!r}")
    return {"mean": tuple(float(a) for a in vals[0]), "std": tuple(float(a) for a in vals[1])}


def needs_class_stats(modes: list[str], custom: dict | None = None) -> bool:
    """Whether any recover mode optimises images (source ``synthesis``): only those read the class statistics
    and need a teacher with BatchNorm layers."""
    return any(resolve_mode(m, custom).source == "synthesis" for m in modes)


def plan_batches(batching: str, num_classes: int, ipc: int, batch_size: int) -> list[list[tuple[int, int]]]:
    """The optimisation batches as lists of ``(class, slot)`` pairs.

    ``cross_class``: for each IPC slot k, the classes ``0..C-1`` (chunked to ``batch_size``).
    ``class_wise``: for each class c, its slots ``0..IPC-1`` (chunked to ``batch_size``).

    Raises:
        ConfigError: unknown batching.
    """
    batches = []
    if batching == "cross_class":
        for k in range(ipc):
            for i in range(0, num_classes, batch_size):
                batches.append([(c, k) for c in range(i, min(i + batch_size, num_classes))])
    elif batching == "class_wise":
        for c in range(num_classes):
            for i in range(0, ipc, batch_size):
                batches.append([(c, k) for k in range(i, min(i + batch_size, ipc))])
    else:
        raise ConfigError(f"unknown batching '{batching}'; known: class_wise, cross_class")
    return batches


def parse_strategy(name: str) -> tuple[str, str | None]:
    """``"random"`` → ("random", None); ``"confidence-easy"`` → ("confidence", "easy").

    Raises:
        ConfigError: unknown metric or keep direction.
    """
    if name == "random":
        return "random", None
    metric, _, keep = name.rpartition("-")
    if metric not in PRUNE_METRICS or keep not in ("easy", "hard"):
        raise ConfigError(f"unknown prune strategy '{name}'; known: random, or <metric>-easy|hard with metric "
                          f"in {', '.join(PRUNE_METRICS)}")
    return metric, keep


LOGITS_VALUES = ("fp16", "int8", "int4")


def parse_logits_codec(fmt: str) -> tuple[int | None, str]:
    """A logits format as ``(k, values)``: which logits a store keeps and how their values are encoded.

    ``fp16`` → (None, "fp16"); ``int8`` / ``int4`` → (None, "int8" / "int4"): all ``C`` logits, quantised;
    ``top<k>`` → (k, "fp16"); ``top<k>-int8`` / ``top<k>-int4`` → (k, "int8" / "int4"): the k largest logits
    quantised, with their class indices. The byte layout of each is in :mod:`labeldistill.labels.codecs`.

    Raises:
        ConfigError: any other string.
    """
    base, dash, values = fmt.partition("-")
    if not dash and base in LOGITS_VALUES:
        return None, base
    values = values if dash else "fp16"
    is_topk = base.startswith("top") and base[3:].isdigit() and int(base[3:]) >= 1
    if is_topk and (values in LOGITS_VALUES[1:] or not dash):
        return int(base[3:]), values
    raise ConfigError(f"unknown logits format '{fmt}'; known: fp16, int8, int4, top<k>, top<k>-int8, top<k>-int4 "
                      "(e.g. top5, top5-int8)")


def parse_logits_format(fmt: str) -> int | None:
    """How many logits per entry a format keeps: ``top<k>[-int8|-int4]`` → k; ``fp16``, ``int8``, ``int4`` → None
    (all of them). The value encoding is :func:`parse_logits_codec`'s second item.

    Raises:
        ConfigError: an unknown format.
    """
    return parse_logits_codec(fmt)[0]


def label_variants(cfg: Any) -> list[LabelVariant]:
    """Every :class:`~labeldistill.layout.LabelVariant` a main-job config asks for, in config order.

    At factor 1 every strategy and every pool keeps every step, so only ``random`` with the default pool is
    listed there. With ``relabel.only_kept = f`` only factor ``f`` (random, batch granularity, ``prune.pool``)
    exists. ``prune.replay`` is kept only where it differs from the factor's default
    (:meth:`~labeldistill.layout.LabelVariant.default_replay`), so default variants keep their old tags.

    Args:
        cfg: a :class:`labeldistill.config.Config` (its ``prune`` and ``relabel`` sections are read).
    """
    pc = cfg.prune

    def variant(f: float, st: str, lg: str, gr: str) -> LabelVariant:
        pool = pc.pool if f != 1.0 else POOLS[0]
        replay = pc.replay if pc.replay != LabelVariant.default_replay(f) else None
        return LabelVariant(f, st, lg, gr, pool, replay)

    if cfg.relabel.only_kept is not None:
        return [variant(float(cfg.relabel.only_kept), "random", cfg.relabel.logits, "batch")]
    out: list[LabelVariant] = []
    for f in pc.factors:
        for st in pc.strategies:
            if float(f) == 1.0 and st != "random":
                continue
            for lg in pc.logits:
                v = variant(float(f), st, lg, pc.granularity)
                if v not in out:
                    out.append(v)
    return out
