"""What every artifact of a run was made from: settings fingerprints, the ledger ``stages.json``, machine and code.

Each unit of work of the main job (a :class:`StageRef`) is recorded in ``<run_dir>/stages.json`` with the
fingerprint of exactly the settings it depends on — its own config section and everything upstream of it (the
seed, the data, the teacher's training, the recover mode, ...), flattened to dotted keys. Which settings a stage
depends on, and the refusal and reuse built on them, are declared per stage (:mod:`labeldistill.main_stages`,
run by :mod:`labeldistill.runner`); this module holds the pieces they share: the settings helpers, the
fingerprint (with its :data:`FINGERPRINT_VERSION`), and the ledger, which :func:`write_record` alone writes.

Settings that cannot change a number are left out: ``data.workers``, ``data.lazy`` (decoding on the fly
gives the same images), ``threads``, ``device`` and ``checkpoint_seconds``. The data enters by identity, not by
folder (``data.files``: :func:`~labeldistill.data.registry.data_identity`): moving the files or naming their
default folder changes no fingerprint; changing the files does. Tiny-ImageNet's class order is always in
(:func:`class_order_settings`).

Fingerprint versions: 1 (no ``version`` in a ledger entry) held ``data.root`` as written in the config; 2 holds
``data.files`` instead. A version-1 entry is recognised and re-keyed when it equals what the current settings
give with its recorded ``data.root`` and that folder holds the same files as the current data
(:func:`recorded_changes`); otherwise it is refused as stale like any other.
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
from .config import STUDENT_RECIPE, Config, ModelConfig, student_specs, with_student
from .data import data_identity
from .errors import ConfigError
from .io import atomic_write_json, read_json, settings_key
from .layout import LabelVariant, RunLayout
from .models import check_model_spec

LEDGER = "stages.json"
FINGERPRINT_VERSION = 2
"""Version of the fingerprints this code writes (ledger entries and result rows carry it); see the module text."""
_DATA_KEYS = ("dataset", "train_subset", "test_subset", "image_size", "resize", "mean", "std")
AUTOCAST_DEFAULT = "bf16"
_NO_EFFECT = {"validate.checkpoint_seconds", "recover.modes", "recover.variants", "generator.checkpoint_seconds",
              "validate.students",  # each student's row is fingerprinted with that student as validate.model
              "validate.repeats",  # each repeat is its own unit; repeat r > 0 adds validate.repeat (its seed)
              "squeeze.force_teacher"}  # lets a checkpoint through the chance check; changes no weight


def model_tag(spec: ModelConfig) -> str:
    """A file-name-safe name of a model spec: ``convnet-depth3-normbatch-width32``; a ``validate.students`` entry
    with its own recipe (:class:`~labeldistill.config.StudentSpec`) adds it: ``convnet-width32-lr0.004-epochs50``."""
    recipe = [f"{k.replace('_', '')}{getattr(spec, k)}" for k in STUDENT_RECIPE if getattr(spec, k, None) is not None]
    parts = [spec.name] + [f"{k}{v}" for k, v in sorted(spec.args.items())] + recipe
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
    """One unit of work: a stage, for a recover mode, a label variant, a student and (validate) how the labels are
    fed when not straight from the store (a :func:`~labeldistill.layout.label_feed_tag` such as ``online``,
    ``generator`` or ``stored+lpqld``; ``None`` = stored) and (validate) which repeat of the student
    (``validate.repeats``; 0 = the first). Its :attr:`key` names its record in ``stages.json``."""

    stage: str
    mode: str | None = None
    variant: LabelVariant | None = None
    student: str | None = None
    labels: str | None = None
    repeat: int = 0

    @property
    def key(self) -> str:
        """``squeeze``, ``recover[cs]``, ``prune[cs x40]``, ``validate[cs x40 convnet-width32]``,
        ``generator[cs]``, ``validate[cs x1 convnet-width32 labels=online]``, ``hard-label[cs convnet-width32]``,
        ``validate[cs x40 convnet-width32 rep1]`` (a repeat after the first)."""
        tag = None if self.variant is None else self.variant.result_tag if self.stage == "validate" else self.variant.tag
        src = f"labels={self.labels}" if self.labels and self.labels != "stored" else None
        rep = f"rep{self.repeat}" if self.repeat else None
        inner = " ".join(p for p in (self.mode, tag, self.student, src, rep) if p)
        return f"{self.stage}[{inner}]" if inner else self.stage


def flat_settings(prefix: str, value: Any) -> dict[str, Any]:
    """A config section (dataclass or dict) as dotted keys (``squeeze.model.name``; ``*.args`` kept whole), less
    the settings that change no number."""
    if prefix in _NO_EFFECT:
        return {}
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict) and not prefix.endswith(".args"):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flat_settings(f"{prefix}.{k}", v))
        return out
    return {prefix: value}


def autocast_settings(cfg: Config) -> dict[str, Any]:
    """``{"autocast": value}`` when ``autocast`` is not the default ``bf16``, else ``{}``.

    bf16 autocast changes numbers only on CUDA, but the key is included on every device (a fingerprint must not
    depend on the machine that computes it), and only when it is not the default, so that run directories made
    before the key existed (all with bf16 behaviour) keep their fingerprints and stay valid.
    """
    return {} if cfg.autocast == AUTOCAST_DEFAULT else {"autocast": cfg.autocast}


def deterministic_settings(cfg: Config) -> dict[str, Any]:
    """``{"deterministic": True}`` when ``deterministic`` is on, else ``{}`` (the default ``false``).

    Deterministic CUDA kernels can change numbers on CUDA (other reduction orders); like
    :func:`autocast_settings`, the key is included on every device and only when not the default, so run
    directories made before the key existed keep their fingerprints.
    """
    return {"deterministic": True} if cfg.deterministic else {}


def numerics_settings(cfg: Config) -> dict[str, Any]:
    """The settings of how CUDA computes (not what): a non-default ``autocast`` and ``deterministic``."""
    return {**autocast_settings(cfg), **deterministic_settings(cfg)}


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


def data_settings(cfg: Config) -> dict[str, Any]:
    """The settings every stage depends on: the seed, the data (by identity: ``data.files``, see the module
    text), held-out images, Tiny-ImageNet's class order and a non-default ``autocast`` or ``deterministic``."""
    return {"seed": cfg.seed, **{f"data.{k}": getattr(cfg.data, k) for k in _DATA_KEYS},
            "data.files": data_identity(cfg.data.dataset, cfg.data.root),
            **holdout_settings(cfg), **class_order_settings(cfg), **numerics_settings(cfg)}


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
    ``test``, ``sync_bn`` only when true, ``weight_decay_1d`` only when false, ``schedule`` only when not
    ``cosine_step``, ``warmup_epochs`` only when not 0, ``eval_every`` only when set, ``protocol`` only when set,
    so that results made before these keys existed keep their fingerprints under the settings that reproduce them (the new defaults of
    ``weight_decay_1d`` and ``schedule`` are recorded: such results are stale under the defaults); never
    ``parallel`` (``students`` gives a one-process run's rows; ``data``'s world size is not recorded either)."""
    vc = cfg.validate
    out = flat_settings("validate", vc)
    drop = (["loss"] if vc.loss == "kl" else []) + (["gift_alpha", "gift_smoothing"] if vc.loss != "gift" else [])
    drop += ["label_source"] if vc.label_source == "stored" else []
    drop += ["calibration", *_LPQLD_KEYS] if vc.calibration == "none" else []
    drop += ["eval_split"] if vc.eval_split == "test" else []
    drop += ["parallel"] + (["sync_bn"] if not vc.sync_bn else [])  # students: rows equal one process's
    # the recipe keys at the behaviour before they existed (decay on every parameter, a cosine per step, no
    # warm-up, one evaluation): left out, so such rows keep their fingerprints; the new defaults are recorded,
    # so rows made before them are stale under the defaults
    drop += ["weight_decay_1d"] if vc.weight_decay_1d else []
    drop += ["schedule"] if vc.schedule == "cosine_step" else []
    drop += ["warmup_epochs"] if vc.warmup_epochs == 0 else []
    drop += ["eval_every"] if vc.eval_every is None else []
    drop += ["protocol"] if vc.protocol is None else []  # no preset: the settings as before the key existed
    for k in drop:
        out.pop(f"validate.{k}")
    if vc.label_source == "generator":
        out.update(flat_settings("generator", cfg.generator))
    return out


def fingerprint(settings: dict[str, Any]) -> str:
    """16 hex digits over the settings (order-independent)."""
    return settings_key(settings)


def read_ledger(layout: RunLayout) -> dict:
    """``stages.json`` of a run directory (``{}`` when there is none): stage key → record."""
    f = layout.root / LEDGER
    return read_json(f) if f.is_file() else {}


def write_record(layout: RunLayout, key: str, settings: dict[str, Any], seconds: float | None = None,
                 finished: str | None = None) -> None:
    """Record in ``stages.json`` that the output of stage ``key`` exists, made with ``settings`` (call on rank 0
    only). The only function that writes the ledger."""
    ledger = read_ledger(layout)
    ledger[key] = {"fingerprint": fingerprint(settings), "version": FINGERPRINT_VERSION, "settings": settings,
                   "seconds": None if seconds is None else round(seconds, 2),
                   "finished": finished or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(layout.root / LEDGER, _jsonable(ledger))


def recorded_changes(layout: RunLayout, key: str, now: dict[str, Any], write: bool = False) -> list[str] | None:
    """The settings keys that differ from those the recorded output of stage ``key`` was made with.

    A version-1 record (see the module text) that still holds is re-keyed to the current version when ``write``
    (rank 0 of a run; the dry run writes nothing).

    Returns:
        ``None`` when ``stages.json`` records no output of ``key``, ``[]`` when the record matches ``now``, else the
        changed keys (``key: old → new``).
    """
    rec = read_ledger(layout).get(key)
    if rec is None:
        return None
    if rec.get("version", 1) == FINGERPRINT_VERSION:
        if rec["fingerprint"] == fingerprint(now):
            return []
        return _diff(rec.get("settings", {}), now)
    old = dict(rec.get("settings", {}))
    root = old.pop("data.root", None)
    files = data_identity(now.get("data.dataset", old.get("data.dataset")), root)
    if rec["fingerprint"] == fingerprint(as_version1(now, root)) and files == now.get("data.files"):
        if write:
            write_record(layout, key, now, rec.get("seconds"), rec.get("finished"))
        return []
    return _diff({**old, "data.files": files}, now)


def as_version1(settings: dict[str, Any], root: str | None) -> dict[str, Any]:
    """``settings`` as fingerprint version 1 wrote them for data in ``root`` (``data.root`` as the config gave it,
    no ``data.files``)."""
    return {**{k: v for k, v in settings.items() if k != "data.files"}, "data.root": root}


def _diff(old: dict[str, Any], now: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(now))
    return [f"{k}: {old.get(k, '(unset)')!r} → {now.get(k, '(unset)')!r}" for k in keys
            if settings_key(old.get(k)) != settings_key(now.get(k))] or ["(settings format changed)"]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj if isinstance(obj, (str, int, float, bool)) or obj is None else str(obj)


def stage_seconds(layout: RunLayout) -> dict[str, float | None]:
    """Wall seconds each recorded stage took when it was computed."""
    return {k: v.get("seconds") for k, v in read_ledger(layout).items()}


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
