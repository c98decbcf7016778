"""Where every artifact of a run lives, and the name of a label variant. No torch.

A run directory ``runs/<name>/`` holds ``teacher/``, ``class_stats/``, ``images/<mode>/``,
``labels/<mode>/full`` + ``labels/<mode>/<tag>`` and ``validate/<mode>_<tag>.json``; :class:`RunLayout` is the
only place these paths are spelled. A :class:`LabelVariant` is one pruned store's recipe — pruning factor,
strategy, logits format, pool granularity, pool and replay — and its :attr:`LabelVariant.tag` names the store
on disk (:attr:`LabelVariant.result_tag` its validate result).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple


def format_factor(f: float) -> str:
    """``40.0`` → ``"40"``, ``2.5`` → ``"2.5"``."""
    return str(int(f)) if float(f).is_integer() else str(f)


class LabelVariant(NamedTuple):
    """One pruned label store's recipe and how validate replays it (immutable; unpacks as ``factor, strategy,
    logits, granularity, pool, replay``).

    Attributes:
        factor: pruning factor ``f >= 1`` (1 keeps every stored step; LPLD §4).
        strategy: ``random`` or ``<metric>-easy|hard`` (:mod:`labeldistill.labels.prune`).
        logits: label format of the store: ``fp16`` or ``top<k>``.
        granularity: ``batch`` (keep single steps) or ``epoch`` (keep whole stored epochs).
        pool: ``prefix`` (the reference's first steps in generation order) or ``subset`` (a seeded random
            subset); see :mod:`labeldistill.labels.pool`.
        replay: ``ordered`` (training epoch e replays kept stored epoch e) or ``pool`` (draws from the kept
            pool); ``None`` = the factor's default (:meth:`default_replay`). Not part of the store: only of the
            validate result.
    """

    factor: float
    strategy: str = "random"
    logits: str = "fp16"
    granularity: str = "batch"
    pool: str = "prefix"
    replay: str | None = None

    @staticmethod
    def default_replay(factor: float) -> str:
        """``ordered`` at factor 1 (the reference's unpruned baseline replays stored epochs in order), else
        ``pool`` (the reference draws from the pruned pool)."""
        return "ordered" if float(factor) == 1.0 else "pool"

    @property
    def replay_mode(self) -> str:
        """The replay validate uses: :attr:`replay`, or the factor's default."""
        return self.replay or self.default_replay(self.factor)

    @classmethod
    def of(cls, variant: "LabelVariant | float", *rest: str, **parts: str) -> "LabelVariant":
        """A variant from a variant (fields in ``parts`` replaced), or from a factor plus the other fields."""
        if isinstance(variant, LabelVariant):
            return variant._replace(**dict(zip(cls._fields[1:], rest)), **parts)
        return cls(float(variant), *rest, **parts)

    @property
    def tag(self) -> str:
        """A self-describing store name: ``x40``, ``x40-confidence-easy``, ``x10-top2``, ``x20-epoch``,
        ``x40-subset``. Settings at their defaults add nothing, so default stores keep their names; the pool
        is left out at factor 1, where every pool keeps every step."""
        tag = f"x{format_factor(self.factor)}"
        if self.strategy != "random":
            tag += f"-{self.strategy}"
        if self.logits != "fp16":
            tag += f"-{self.logits}"
        if self.granularity != "batch":
            tag += f"-{self.granularity}"
        if self.pool != "prefix" and float(self.factor) != 1.0:
            tag += f"-{self.pool}"
        return tag

    @property
    def result_tag(self) -> str:
        """The validate result's name: :attr:`tag`, plus ``-replay_<mode>`` when the replay is not the factor's
        default (``x1-replay_pool``, ``x40-replay_ordered``)."""
        if self.replay_mode != self.default_replay(self.factor):
            return f"{self.tag}-replay_{self.replay_mode}"
        return self.tag


def label_feed_tag(source: str = "stored", calibration: str = "none") -> str:
    """How validate feeds the labels: ``validate.label_source`` (``stored``, ``online``, ``generator``), plus
    ``+<calibration>`` when ``validate.calibration`` is not ``none`` (``stored+lpqld``, ``online``)."""
    return source if calibration == "none" else f"{source}+{calibration}"


REAL_TRAIN = "real-train"
"""The ``images`` name of the hard-label baseline trained on the whole real train split."""


@dataclass
class RunLayout:
    """Where each stage reads and writes inside a run directory.

    Methods that name a label store take a :class:`LabelVariant`, or a factor followed by the variant's
    other fields (their defaults are :class:`LabelVariant`'s).
    """

    root: Path

    @property
    def teacher_dir(self) -> Path:
        return self.root / "teacher"

    @property
    def class_stats_dir(self) -> Path:
        return self.root / "class_stats"

    def images_dir(self, mode: str) -> Path:
        return self.root / "images" / mode

    @property
    def image_cache(self) -> Path:
        """``.cache/images``: decoded image sets shared by the ranks of a torchrun validate (never hashed or
        counted as image bytes; safe to delete)."""
        return self.root / ".cache" / "images"

    def full_store(self, mode: str) -> Path:
        return self.root / "labels" / mode / "full"

    def generator_dir(self, mode: str) -> Path:
        """``labels/<mode>/generator``: the label generator's weights (``model.safetensors``) and ``generator.json``."""
        return self.root / "labels" / mode / "generator"

    def pruned_store(self, mode: str, variant: LabelVariant | float, *rest: str, **parts: str) -> Path:
        return self.root / "labels" / mode / LabelVariant.of(variant, *rest, **parts).tag

    def validate_file(self, mode: str, variant: LabelVariant | float, *rest: str, student: str,
                      labels: str = "stored", repeat: int = 0, **parts: str) -> Path:
        """``validate/<student>/<mode>_<result tag>.json``: one result per images × labels × replay × student;
        ``..._<result tag>-labels_<labels>.json`` when ``labels`` (a :func:`label_feed_tag`) is not ``stored``: the
        labels come from a label model, or are calibrated; ``...-rep<r>.json`` for repeat ``r > 0``
        (``validate.repeats``). The trained student's weights lie beside it: :meth:`student_weights`."""
        suffix = ("" if labels == "stored" else f"-labels_{labels}") + (f"-rep{repeat}" if repeat else "")
        return self.root / "validate" / student / \
            f"{mode}_{LabelVariant.of(variant, *rest, **parts).result_tag}{suffix}.json"

    @staticmethod
    def student_weights(result: Path) -> Path:
        """The trained student's weights beside its result row: ``<row stem>.model.safetensors``
        (``validate/<student>/<mode>_<tag>.json`` → ``validate/<student>/<mode>_<tag>.model.safetensors``)."""
        return result.with_name(f"{result.stem}.model.safetensors")

    def hard_label_file(self, images: str, student: str) -> Path:
        """``hard_label/<student>/<images>.json``: a hard-label baseline (``images``: a recover mode, or
        :data:`REAL_TRAIN` for the real train split)."""
        return self.root / "hard_label" / student / f"{images}.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"
