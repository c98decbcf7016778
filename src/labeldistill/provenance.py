"""What every artifact of a run was made from: per-stage settings fingerprints, and the machine and code.

Each stage's output is recorded in ``<run_dir>/stages.json`` with the fingerprint of exactly the settings it
depends on — its own config section and everything upstream of it (the seed, the data, the teacher's
training, the recover mode, ...), flattened to dotted keys. A stage whose output exists is skipped only when
its recorded fingerprint equals the one the current config gives; otherwise it is **refused** with one line
that names the changed keys and the two ways out (``--force`` recomputes it, a new ``name``/``run_dir``
keeps both). Nothing is ever silently reused for other settings.

Settings that cannot change a number are left out: ``data.workers``, ``data.lazy`` (decoding on the fly
gives the same images), ``threads``, ``device`` and ``checkpoint_seconds``. Tiny-ImageNet's class order is
always in (:func:`class_order_settings`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .config import Config, ModelConfig, student_specs, with_student
from .data.owned import source_fingerprint
from .data.presets import resolve_augmentation
from .errors import ConfigError, StaleStageError
from .io import atomic_write_json, read_json, settings_key
from .layout import REAL_TRAIN, LabelVariant, RunLayout
from .models import check_model_spec
from .variants import OWN_SOURCES, label_variants, resolve_variant

LEDGER = "stages.json"
_DATA_KEYS = ("dataset", "root", "train_subset", "test_subset", "image_size", "resize", "mean", "std")
AUTOCAST_DEFAULT = "bf16"
_NO_EFFECT = {"validate.checkpoint_seconds", "recover.modes", "recover.variants", "generator.checkpoint_seconds",
              "validate.students",  # each student's row is fingerprinted with that student as validate.model
              "squeeze.force_teacher"}  # lets a checkpoint through the chance check; changes no weight


def model_tag(spec: ModelConfig) -> str:
    """A file-name-safe name of a model spec: ``convnet-depth3-normbatch-width32``."""
    parts = [spec.name] + [f"{k}{v}" for k, v in sorted(spec.args.items())]
    tag = "".join(c if c.isalnum() or c in "._=-" else "-" for c in "-".join(parts))
    return tag if len(tag) <= 64 else f"{tag[:48]}-{settings_key(spec.name, spec.args)[:8]}"


def check_students(cfg: Config) -> None:
    """Check every student's model name before any work, and that no two students share a result folder.

    Raises:
        RegistryError: an unknown model name (with close matches) or option.
        ConfigError: two students with the same tag (:func:`~labeldistill.provenance.model_tag`).
    """
    if not cfg.validate.students:
        check_model_spec(cfg.validate.model, "validate.model")
        return
    tags: dict[str, int] = {}
    for i, spec in enumerate(cfg.validate.students):
        check_model_spec(spec, f"validate.students[{i}]")
        tag = model_tag(spec)
        if tag in tags:
            raise ConfigError(f"validate.students[{i}] and [{tags[tag]}] share the result folder "
                              f"validate/{tag}/: give them different args")
        tags[tag] = i


@dataclass(frozen=True)
class StageRef:
    """One unit of work of the main job: a stage, for a recover mode, a label variant, a student and (validate) how
    the labels are fed when not straight from the store (a :func:`~labeldistill.layout.labels_tag` such as
    ``online``, ``generator`` or ``stored+lpqld``; ``None`` = stored)."""

    stage: str
    mode: str | None = None
    variant: LabelVariant | None = None
    student: str | None = None
    labels: str | None = None

    @property
    def key(self) -> str:
        """``squeeze``, ``recover[cs]``, ``prune[cs x40]``, ``validate[cs x40 convnet-width32]``,
        ``generator[cs]``, ``validate[cs x1 convnet-width32 labels=online]``, ``... labels=stored+lpqld]``."""
        tag = None if self.variant is None else self.variant.result_tag if self.stage == "validate" else self.variant.tag
        src = f"labels={self.labels}" if self.labels and self.labels != "stored" else None
        inner = " ".join(p for p in (self.mode, tag, self.student, src) if p)
        return f"{self.stage}[{inner}]" if inner else self.stage


def relabel_ref(cfg: Config, mode: str) -> StageRef:
    """The relabel unit of a mode: the full store, or with ``relabel.only_kept`` the one pruned store it writes
    (a different output, so a different record: ``relabel[cs x40]``)."""
    variants = label_variants(cfg) if cfg.relabel.only_kept is not None else [None]
    return StageRef("relabel", mode, variants[0])


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if prefix in _NO_EFFECT:
        return {}
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict) and not prefix.endswith(".args"):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(f"{prefix}.{k}", v))
        return out
    return {prefix: value}


def autocast_settings(cfg: Config) -> dict[str, Any]:
    """``{"autocast": value}`` when ``autocast`` is not the default ``bf16``, else ``{}``.

    bf16 autocast changes numbers only on CUDA, but the key is included on every device (a fingerprint must not
    depend on the machine that computes it), and only when it is not the default, so that run directories made
    before the key existed (all with bf16 behaviour) keep their fingerprints and stay valid.
    """
    return {} if cfg.autocast == AUTOCAST_DEFAULT else {"autocast": cfg.autocast}


def holdout_settings(cfg: Config) -> dict[str, Any]:
    """``{"data.holdout": n, "data.test_holdout": t}``, each only when it holds images out of the train split.

    Every stage depends on them (squeeze, class-stats and real-image sources read the train split less the
    held-out images); left out at 0 so that run directories made before the keys existed keep their fingerprints.
    """
    return {f"data.{k}": getattr(cfg.data, k) for k in ("holdout", "test_holdout") if getattr(cfg.data, k)}


def class_order_settings(cfg: Config) -> dict[str, Any]:
    """``{"data.class_order": "sorted"}`` for Tiny-ImageNet in sorted-wnid order (the default), else ``{}``.

    The class index of every output depends on it. Tiny-ImageNet runs made while ``wnids.txt``'s order was the
    only one (before the key existed) lack the key: under the sorted default they are refused as stale rather
    than reused, and with ``data.class_order: wnids`` (no key, as then) they keep their fingerprints.
    """
    if cfg.data.dataset == "tiny-imagenet" and (cfg.data.class_order or "sorted") == "sorted":
        return {"data.class_order": "sorted"}
    return {}


def stage_settings(cfg: Config, ref: StageRef) -> dict[str, Any]:
    """Every setting (dotted key → value) the output of ``ref`` depends on, upstream stages included
    (``autocast`` only when not the default: :func:`autocast_settings`; augmentation keys left unset resolved from
    the dataset first: :func:`~labeldistill.data.presets.resolve_augmentation`)."""
    resolve_augmentation(cfg)
    out: dict[str, Any] = {"seed": cfg.seed, **{f"data.{k}": getattr(cfg.data, k) for k in _DATA_KEYS},
                           **holdout_settings(cfg), **class_order_settings(cfg), **autocast_settings(cfg),
                           **_flat("squeeze", cfg.squeeze)}
    if ref.stage == "squeeze":
        return out
    stats = _flat("class_stats", cfg.class_stats)
    if ref.stage == "class-stats":
        return {**out, **stats}
    variant = resolve_variant(ref.mode, cfg.recover.variants)
    recover = _flat("recover", cfg.recover)
    if variant["source"] == "synthesis":
        out.update(stats)
    else:  # real-image sources read only these recover settings; a set made elsewhere none of them
        used = () if variant["source"] in OWN_SOURCES else ("recover.ipc",) + (
            ("recover.rded_factor", "recover.rded_candidates", "recover.crop_scale")
            if variant["source"] == "rded" else ())
        recover = {k: v for k, v in recover.items() if k in used}
    if variant["source"] in OWN_SOURCES:  # the set's files: an edited folder makes recover (and all after) stale
        recover["recover.source_fingerprint"] = source_fingerprint(variant["source"], variant["path"])
    out.update({"recover.mode": ref.mode, "recover.variant": variant, **recover})
    if ref.stage == "recover":
        return out
    out.update(_flat("relabel", cfg.relabel))
    if ref.stage == "relabel":
        return out
    if ref.stage == "generator":
        return {**out, **_flat("generator", cfg.generator)}
    out["prune.variant"] = ref.variant.tag
    if ref.stage == "prune":
        return out
    return {**out, **validate_settings(student_config(cfg, ref.student)), "validate.replay": ref.variant.replay_mode}


def student_config(cfg: Config, student: str | None) -> Config:
    """``cfg`` with the student whose :func:`model_tag` is ``student`` as its only one
    (:func:`~labeldistill.config.with_student`); ``cfg`` itself when no listed student has that tag."""
    for spec in student_specs(cfg.validate):
        if model_tag(spec) == student:
            return with_student(cfg, spec)
    return cfg


_LPQLD_KEYS = ("lpqld_step", "lpqld_gamma", "lpqld_min_temperature", "lpqld_student_temperature",
               "lpqld_student_search")


def validate_settings(cfg: Config) -> dict[str, Any]:
    """The ``validate`` section's settings; ``loss`` only when not ``kl``, the ``gift_*`` keys only with
    ``loss: gift``, ``label_source`` only when not ``stored`` (with ``generator``: the ``generator`` section too),
    ``calibration`` and the ``lpqld_*`` keys only with ``calibration: lpqld``, ``eval_split`` only when not
    ``test``, so that results made before these keys existed keep their fingerprints."""
    vc = cfg.validate
    out = _flat("validate", vc)
    drop = (["loss"] if vc.loss == "kl" else []) + (["gift_alpha", "gift_smoothing"] if vc.loss != "gift" else [])
    drop += ["label_source"] if vc.label_source == "stored" else []
    drop += ["calibration", *_LPQLD_KEYS] if vc.calibration == "none" else []
    drop += ["eval_split"] if vc.eval_split == "test" else []
    for k in drop:
        out.pop(f"validate.{k}")
    if vc.label_source == "generator":
        out.update(_flat("generator", cfg.generator))
    return out


_HARD_PROTOCOL = ("relabel.batch_size", "relabel.crop_scale", "relabel.flip")


def hard_label_settings(cfg: Config, images: str) -> dict[str, Any]:
    """Every setting a hard-label baseline depends on (:func:`labeldistill.validate.hard_label`): for a mode,
    its images' settings (the recover stage's) and the training protocol; for ``real-train`` (:data:`REAL_TRAIN`)
    the seed, data and protocol."""
    resolve_augmentation(cfg)
    if images == REAL_TRAIN:
        out: dict[str, Any] = {"seed": cfg.seed, **{f"data.{k}": getattr(cfg.data, k) for k in _DATA_KEYS},
                               **holdout_settings(cfg), **class_order_settings(cfg), **autocast_settings(cfg),
                               "hard_label.real_epochs": cfg.hard_label.real_epochs}
    else:
        out = {**stage_settings(cfg, StageRef("recover", images)), "validate.epochs": cfg.validate.epochs,
               "relabel.epochs": cfg.relabel.epochs}
    relabel = _flat("relabel", cfg.relabel)
    out.update({k: relabel[k] for k in _HARD_PROTOCOL})
    vc = _flat("validate", cfg.validate)
    out.update({k: vc[k] for k in ("validate.model.name", "validate.model.args", "validate.optimizer",
                                   "validate.lr", "validate.weight_decay", "validate.momentum")})
    return out


def fingerprint(settings: dict[str, Any]) -> str:
    """16 hex digits over the settings (order-independent)."""
    return settings_key(settings)


def _ledger(layout: RunLayout) -> dict:
    f = layout.root / LEDGER
    return read_json(f) if f.is_file() else {}


def stale_keys(cfg: Config, ref: StageRef, layout: RunLayout | None = None) -> list[str] | None:
    """The settings keys that differ from those the stage's recorded output was made with.

    Returns:
        ``None`` when no output of ``ref`` is recorded (not run yet, or made before this record existed),
        ``[]`` when the record matches, else the changed keys (``key: old → new``).
    """
    layout = layout or RunLayout(cfg.run_path)
    rec = _ledger(layout).get(ref.key)
    if rec is None:
        return None
    now = stage_settings(cfg, ref)
    if rec["fingerprint"] == fingerprint(now):
        return []
    old = rec.get("settings", {})
    keys = sorted(set(old) | set(now))
    return [f"{k}: {old.get(k, '(unset)')!r} → {now.get(k, '(unset)')!r}" for k in keys
            if _canon(old.get(k)) != _canon(now.get(k))] or ["(settings format changed)"]


def _canon(v: Any) -> str:
    return settings_key(v)


def check_fresh(cfg: Config, ref: StageRef, layout: RunLayout | None = None) -> None:
    """Refuse to reuse an output made with other settings.

    Raises:
        StaleStageError: one line naming the stage, the changed keys and the two ways out.
    """
    changed = stale_keys(cfg, ref, layout)
    if changed:
        shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
        root = (layout or RunLayout(cfg.run_path)).root
        raise StaleStageError(f"{ref.key} in {root} was made with other settings ({shown}); rerun with --force "
                              "to recompute it (and what depends on it), or set a new name=/run_dir= to keep both")


def record_stage(cfg: Config, ref: StageRef, seconds: float | None = None, layout: RunLayout | None = None) -> None:
    """Record that ``ref``'s output now exists, made with the current settings (call on rank 0 only)."""
    layout = layout or RunLayout(cfg.run_path)
    ledger = _ledger(layout)
    settings = stage_settings(cfg, ref)
    ledger[ref.key] = {"fingerprint": fingerprint(settings), "settings": settings,
                       "seconds": None if seconds is None else round(seconds, 2),
                       "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(layout.root / LEDGER, _jsonable(ledger))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj if isinstance(obj, (str, int, float, bool)) or obj is None else str(obj)


def done_marker(cfg: Config, ref: StageRef, layout: RunLayout | None = None) -> Path:
    """The file whose existence means the output of ``ref`` is complete."""
    layout = layout or RunLayout(cfg.run_path)
    if ref.stage == "squeeze":
        return layout.teacher_dir / "teacher.json"
    if ref.stage == "class-stats":
        return layout.class_stats_dir / "class_stats.json"
    if ref.stage == "recover":
        return layout.images_dir(ref.mode) / "images.json"
    if ref.stage == "relabel":
        only = cfg.relabel.only_kept
        store = layout.full_store(ref.mode) if only is None else \
            layout.pruned_store(ref.mode, LabelVariant(float(only), logits=cfg.relabel.logits))
        return store / "manifest.json"
    if ref.stage == "prune":
        return layout.pruned_store(ref.mode, ref.variant) / "manifest.json"
    if ref.stage == "generator":
        return layout.generator_dir(ref.mode) / "generator.json"
    return layout.validate_file(ref.mode, ref.variant, student=ref.student, labels=ref.labels or "stored")


def stage_status(cfg: Config, ref: StageRef, layout: RunLayout | None = None) -> str:
    """``done``, ``to do``, or ``stale (key: old → new; ...)`` for the dry run."""
    if not done_marker(cfg, ref, layout).is_file():
        return "to do"
    changed = stale_keys(cfg, ref, layout)
    return f"stale ({'; '.join(changed)})" if changed else "done"


def stage_seconds(layout: RunLayout) -> dict[str, float | None]:
    """Wall seconds each recorded stage took when it was computed."""
    return {k: v.get("seconds") for k, v in _ledger(layout).items()}


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the checkout the package runs from (``+dirty`` with local changes), or a note why not.

    Read once per process: the code a process runs is what it imported at its start, even if the checkout moves
    on while it runs."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10)
        if sha.returncode != 0:
            return "not a git checkout"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"


def machine(device: Any) -> dict[str, Any]:
    """Code and machine of a run: package and torch versions, commit, device name, threads, CPU count."""
    import torch

    name = torch.cuda.get_device_name(device) if getattr(device, "type", "") == "cuda" else platform.processor() \
        or platform.machine()
    return {"labeldistill": __version__, "commit": git_commit(), "torch": torch.__version__,
            "python": platform.python_version(), "device": str(device), "device_name": name,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "platform": platform.platform()}
