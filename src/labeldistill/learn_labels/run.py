"""The ``learn-labels`` job: base examples → label sets (LD, RR, baselines) → meta-test → run directory.

Outputs in the run directory (written only when the whole job succeeded):

- ``labels.safetensors``: one ``(N, C)`` float32 tensor of label distributions per method (key = method name),
  ``base_indices`` (int64 ``(N,)``, into the source train split) and ``base_images`` (uint8 ``(N, C, H, W)``);
  ``dd`` adds ``dd_images`` (float32 ``(N, C, H, W)``, the learned images in the target's normalised units);
- ``labels.json``: the manifest (source and target datasets, base-example indices and selection, classes,
  methods with their settings and step counts, seeds);
- ``results.json``: one row per (method, learner, optimiser) with top-1 mean ± std on the real test split;
- ``report.md`` and ``labels.png`` (base images with their label bars); ``config.yaml``; ``metrics.jsonl``;
- ``teacher/`` when a teacher was trained.

Resuming: while the job runs, ``.learn_labels.resume.pt`` in the run directory holds every finished label set
(with its meta-training record), the whole loop state of the meta-training in progress (saved at the end of an
epoch, at most every ``meta.checkpoint_seconds``) and every finished meta-test row. Running the same command
again after a kill continues from there, mid-meta-training from the next epoch, and ends with the same label and
image tensors and meta-test rows as an uninterrupted run (CPU); the file carries a fingerprint of the settings
(:func:`settings_fingerprint`), so a file left by other settings is ignored. It is removed once the outputs are
written.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import yaml
from safetensors.torch import load_file, save_file

from ..config import ModelConfig, config_to_dict
from ..data import ImageSet, normalize
from ..data.loading import TEST_HOLDOUT_SEED, data_options, hold_out, load_at_size
from ..errors import ConfigError, DataError
from ..io import MetricsLog, atomic_write_bytes, atomic_write_json, settings_key
from ..resume import fault_point, load_checkpoint, save_checkpoint
from ..models import check_model_spec
from ..runtime import pick_device, set_threads
from .base_examples import candidate_pool, select_base_examples
from .config import LEARNED_METHODS, LearnLabelsConfig, parse_arch
from .labels import LearnedLabels, onehot_labels, smooth_labels, uniform_labels
from .dd import DDMetaLearner, LearnedImages, initial_images
from .ld import LDMetaLearner
from .learners import OptimizerSpec, build_network
from .meta import MetaCheckpoint, MetaResult, meta_train
from .metatest import EvalData, LearnerSpec, evaluate_label_set
from .report import plot_labels, write_report
from .rr import RRMetaLearner
from .teacher import TeacherSplit, check_checkpoint_form, get_teacher, soft_labels


@dataclass
class Task:
    """The prepared data of a run (all images normalised with the target's mean/std).

    Attributes:
        source: the split the base examples come from (uint8 images).
        base_indices: int64 ``(N,)`` into ``source``.
        x_base: normalised base images ``(N, C, H, W)``.
        x_target, y_target: outer-loss target images ``(M, C, H, W)`` and classes (the meta-train part).
        x_val, y_val: validation split held out of the target train split.
        x_test, y_test: the real test split.
        classes: target class names (the label space).
        val_indices: int64 indices of the validation images in the target train split.
        target_indices: int64 indices of the outer-loss (meta-train) images in the target train split: what a
            teacher trained by this run sees.
        train_size: number of images in the target train split.
        cross_dataset: True when the source is not the target.
    """

    source: ImageSet
    base_indices: torch.Tensor
    x_base: torch.Tensor
    x_target: torch.Tensor
    y_target: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val_indices: torch.Tensor
    target_indices: torch.Tensor
    train_size: int
    cross_dataset: bool

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x_base.shape[1:])  # type: ignore[return-value]

    @property
    def base_source_labels(self) -> torch.Tensor:
        """Source-dataset classes of the base examples ``(N,)``."""
        return self.source.labels[self.base_indices]


def _float(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
           device: torch.device) -> torch.Tensor:
    return normalize(images.float().div_(255.0), mean, std).to(device)


@dataclass
class TaskPlan:
    """The loaded splits of a run and the images it uses, as indices (nothing decoded or normalised yet).

    Attributes:
        train: the target train split (less ``data.test_holdout`` images when set).
        test: the test split, subset as configured.
        source: the split the base examples come from (``train`` within a dataset).
        base_indices, val_indices, target_indices: int64 indices of the base examples (into ``source``), the
            validation images and the outer-loss images (into ``train``).
        cross_dataset: True when the source is not the target.
    """

    train: ImageSet
    test: ImageSet
    source: ImageSet
    base_indices: torch.Tensor
    val_indices: torch.Tensor
    target_indices: torch.Tensor
    cross_dataset: bool


def _is_cross(cfg: LearnLabelsConfig) -> bool:
    d = cfg.data
    return d.source is not None and (d.source != d.target or (d.source_root or None) != (d.target_root or None))


def load_target(cfg: LearnLabelsConfig) -> tuple[ImageSet, ImageSet]:
    """The target's train and test splits at the configured size and normalisation (the main job's loaders).

    Raises:
        ConfigError / DataError / RegistryError: see :func:`~labeldistill.data.loading.load_at_size`; an
            ImageFolder without a test or val folder unless ``data.test_holdout`` is set.
    """
    d = cfg.data
    train = load_at_size(d.target, "train", d.target_root, **data_options(cfg))
    if d.test_holdout:
        train, test = hold_out(train, d.test_holdout, TEST_HOLDOUT_SEED, "data.test_holdout")
    else:
        test = load_at_size(d.target, "test", d.target_root, **data_options(cfg))
    return train, test.subset(d.test_subset, seed=d.split_seed)


def plan_task(cfg: LearnLabelsConfig, base_indices: torch.Tensor | None = None) -> TaskPlan:
    """Load the datasets, split validation off the target train split and choose the base examples.

    Raises:
        ConfigError: a validation split as large as the train split, N incompatible with the selection mode,
            given base examples outside the source.
        DataError / RegistryError: missing dataset files, unknown dataset, source and target image shapes differ.
    """
    d = cfg.data
    train, test = load_target(cfg)
    cross = _is_cross(cfg)
    source = load_at_size(d.source, "train", d.source_root, **{**data_options(cfg), "mean": None, "std": None}) \
        if cross else train
    if source.shape != train.shape:
        fix = ("set data.image_size to load both at one size" if source.shape[0] == train.shape[0] else
               "pick a source with as many channels")
        raise DataError(f"source images {source.shape} and target images {train.shape} (C, H, W) differ; {fix}")
    # Base examples first (they depend only on the source, N, the mode and base.seed), then the validation
    # split from the target train images that are not base examples.
    if base_indices is None:
        base_idx = select_base_examples(source.labels, cfg.base.n, cfg.base.mode, source.num_classes,
                                        cfg.base.seed)
    else:
        base_idx = base_indices
        if int(base_idx.max()) >= len(source) or int(base_idx.min()) < 0:
            raise ConfigError(f"the reused base examples do not index the {len(source)} {source.name} train images")
    candidates = candidate_pool(len(train), None if cross else base_idx)
    if d.val_size >= len(candidates):
        raise ConfigError(f"data.val_size={d.val_size} leaves no training images of {d.target} "
                          f"({len(candidates)} available for validation); lower it")
    perm = candidates[torch.randperm(len(candidates), generator=torch.Generator().manual_seed(d.split_seed))]
    val_idx = perm[:d.val_size].sort().values
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[val_idx] = False
    rest_idx = torch.nonzero(keep).flatten()
    target_idx = rest_idx[train.select(rest_idx).subset_indices(d.target_subset, seed=d.split_seed)]
    return TaskPlan(train, test, source, base_idx, val_idx, target_idx, cross)


def prepare_task(cfg: LearnLabelsConfig, device: torch.device, base_indices: torch.Tensor | None = None) -> Task:
    """:func:`plan_task`, then the images it uses as normalised float tensors on ``device``.

    Args:
        cfg: the run's config.
        device: where the image tensors go.
        base_indices: use these base examples (indices into the source train split) instead of selecting.

    Raises:
        ConfigError / DataError / RegistryError: see :func:`plan_task`.
    """
    p = plan_task(cfg, base_indices)
    train, m, s = p.train, p.train.mean, p.train.std
    return Task(source=p.source, base_indices=p.base_indices,
                x_base=_float(p.source.images[p.base_indices], m, s, device),
                x_target=_float(train.images[p.target_indices], m, s, device),
                y_target=train.labels[p.target_indices].to(device),
                x_val=_float(train.images[p.val_indices], m, s, device), y_val=train.labels[p.val_indices].to(device),
                x_test=_float(p.test.uint8_images(), m, s, device), y_test=p.test.labels.to(device),
                classes=list(train.classes), mean=m, std=s, val_indices=p.val_indices,
                target_indices=p.target_indices, train_size=len(train), cross_dataset=p.cross_dataset)


def validation_split_key(cfg: LearnLabelsConfig) -> str:
    """Fingerprint (16 hex digits) of the settings that decide a run's validation split and outer-loss images.

    Runs with equal keys hold out the same validation images, so a teacher trained by one of them passes the
    teacher split check (:func:`~labeldistill.learn_labels.teacher.check_teacher_split`) in the others. Within a
    dataset the split depends on the base examples (they are never validation images); across datasets it
    does not.
    """
    d = cfg.data
    base = None if _is_cross(cfg) else [cfg.base.n, cfg.base.mode, cfg.base.seed]
    held = [d.test_holdout] if d.test_holdout else []  # only when set: earlier keys stay valid
    return settings_key("ld-split", d.target, d.target_root, d.val_size, d.split_seed, d.target_subset, base, *held)


@dataclass
class PreviousLabels:
    """Label sets of an earlier run (``labels_from``)."""

    base_indices: torch.Tensor
    label_sets: dict[str, torch.Tensor]
    images: dict[str, torch.Tensor]
    steps: dict[str, int]
    teacher: dict | None
    path: Path


def load_previous_labels(cfg: LearnLabelsConfig) -> PreviousLabels:
    """Read ``labels.safetensors`` + ``labels.json`` of the run directory ``cfg.labels_from``.

    Raises:
        ConfigError: missing files, another source/target dataset, or a configured method the run lacks.
    """
    folder = Path(cfg.labels_from or "")
    manifest_f, labels_f = folder / "labels.json", folder / "labels.safetensors"
    if not (manifest_f.is_file() and labels_f.is_file()):
        raise ConfigError(f"labels_from={folder} has no labels.json + labels.safetensors; point it at the run "
                          "directory of a finished learn-labels run")
    manifest = json.loads(manifest_f.read_text())
    tensors = load_file(str(labels_f))
    source = cfg.data.source or cfg.data.target
    if manifest["source"]["dataset"] != source or manifest["target"]["dataset"] != cfg.data.target:
        raise ConfigError(f"labels_from={folder} holds labels for {manifest['source']['dataset']} → "
                          f"{manifest['target']['dataset']}, this config is {source} → {cfg.data.target}")
    missing = [m for m in cfg.methods if m not in manifest["methods"]]
    if missing:
        raise ConfigError(f"labels_from={folder} has no '{missing[0]}' labels; it has "
                          f"{', '.join(manifest['methods'])}: set methods to a subset of those")
    steps = {m: int(e["best_steps"]) for m, e in manifest["methods"].items() if "best_steps" in e}
    images = {m: tensors[f"{m}_images"] for m in cfg.methods if f"{m}_images" in tensors}
    return PreviousLabels(tensors["base_indices"], {m: tensors[m] for m in cfg.methods}, images, steps,
                          manifest["methods"].get("teacher", {}).get("teacher"), folder)


def _hard_labels(task: Task, purpose: str) -> torch.Tensor:
    """One-hot labels of the base examples over the target classes (source class i → target class i).

    Raises:
        ConfigError: the source has more classes than the target.
    """
    if task.source.num_classes > task.num_classes:
        raise ConfigError(f"{purpose} needs the base examples' own classes, but the source has "
                          f"{task.source.num_classes} classes and the target {task.num_classes}; drop {purpose} "
                          "from the config")
    return onehot_labels(task.base_source_labels, task.num_classes)


def initial_labels(cfg: LearnLabelsConfig, task: Task, teacher_labels: torch.Tensor | None) -> torch.Tensor:
    """The starting point of LD/RR labels ``(N, C)`` (``labels.init`` then ``labels.init_smoothing``)."""
    if cfg.labels.init == "uniform":
        init = uniform_labels(len(task.base_indices), task.num_classes)
    elif cfg.labels.init == "onehot":
        init = _hard_labels(task, "labels.init=onehot")
    else:
        assert teacher_labels is not None
        init = teacher_labels.cpu()
    return smooth_labels(init, cfg.labels.init_smoothing)


def _learner_spec(cfg: LearnLabelsConfig, arch: ModelConfig, head: str, optimizer: str) -> LearnerSpec:
    mt = cfg.metatest
    opt = OptimizerSpec(optimizer, float(mt.lrs[optimizer]), mt.momentum, mt.weight_decay)
    return LearnerSpec(arch, head, opt, cfg.rr.lam, cfg.rr.ema, cfg.rr.scale_lr)


def evaluation_plan(cfg: LearnLabelsConfig) -> list[tuple[str, LearnerSpec]]:
    """The (method, learner) rows of the meta-test.

    Every label set is tested with plain networks (the learner and ``metatest.archs``) under every optimiser,
    except RR labels when ``metatest.rr_plain`` is false. When ``rr`` is a method and ``metatest.rr_learner``
    is true, RR labels and the baselines are also tested with the RR learner (the learner's architecture).
    """
    archs: list[ModelConfig] = [cfg.learner]
    for i, a in enumerate(cfg.metatest.archs):
        spec = parse_arch(a, f"metatest.archs[{i}]")
        if all((spec.name, spec.args) != (b.name, b.args) for b in archs):
            archs.append(spec)
    plan = []
    for method in cfg.methods:
        if method != "rr" or cfg.metatest.rr_plain:
            for arch in archs:
                for opt in cfg.metatest.optimizers:
                    plan.append((method, _learner_spec(cfg, arch, "plain", opt)))
        if "rr" in cfg.methods and cfg.metatest.rr_learner and method not in ("ld", "dd"):
            for opt in cfg.metatest.optimizers:
                plan.append((method, _learner_spec(cfg, cfg.learner, "rr", opt)))
    return plan


def _own_learner(method: str, spec: LearnerSpec, cfg: LearnLabelsConfig) -> bool:
    """True for the row on which the paper reports a learned label set: its own learner with Adam."""
    own_head = {"ld": "plain", "rr": "rr", "dd": "plain"}.get(method)
    return (own_head == spec.head and spec.arch.name == cfg.learner.name and spec.arch.args == cfg.learner.args
            and spec.optimizer.name == "adam")


def _metatest_rows(cfg: LearnLabelsConfig, task: Task, label_sets: dict[str, torch.Tensor],
                   images: dict[str, torch.Tensor], steps: dict[str, int], progress: "Progress", metrics: MetricsLog,
                   device: torch.device) -> list[dict]:
    """Every row of :func:`evaluation_plan` (rows finished before a kill are taken from ``progress``).

    ``images`` holds the learned images of image-learning methods (``dd``); every other label set trains on the
    base examples.
    """
    data = EvalData(task.x_base, task.x_val, task.y_val, task.x_test, task.y_test, task.num_classes, task.shape,
                    device, cfg.meta.inner_batch, cfg.max_steps(), cfg.metatest.eval_batch)
    rows: list[dict] = []
    n = len(task.base_indices)
    for i, (method, spec) in enumerate(evaluation_plan(cfg)):
        if i < len(progress.rows):  # finished before a kill
            rows.append(progress.rows[i])
            continue
        fixed = None
        if cfg.metatest.step_rule == "paper" and method in steps and _own_learner(method, spec, cfg):
            fixed = steps[method]
        # Every row uses the same seeds: repeat r of every label set starts from the same initialisation.
        own = replace(data, x_base=images[method]) if method in images else data
        row = evaluate_label_set(spec, own, label_sets[method], cfg.metatest.repeats, cfg.seed * 100_000 + 1000,
                                 fixed, desc=f"{method} on {spec.name}/{spec.optimizer.name}")
        row = {"method": method, "n_base": n, "source": cfg.data.source or cfg.data.target,
               "target": cfg.data.target, **row}
        metrics.log(event="metatest", **{k: v for k, v in row.items() if k not in ("top1_all", "val_curve")})
        rows.append(row)
        progress.save_rows(rows)
        fault_point("metatest-row")
    return rows


# Keys (dotted) that change no result: left out of the settings fingerprint and of the "changed keys" list.
_NO_EFFECT = frozenset({"name", "run_dir", "threads", "device", "plot_examples", "meta.checkpoint_seconds"})


def settings_fingerprint(cfg: LearnLabelsConfig) -> str:
    """Fingerprint of every setting that can change a result (the config without ``name``, ``run_dir``,
    ``threads``, ``device``, ``plot_examples`` and ``meta.checkpoint_seconds``): the resume file's key, recorded
    in ``results.json``."""
    return settings_key("learn-labels", _settings(cfg))


def _without_no_effect(d: dict, prefix: str = "") -> dict:
    """``d`` (a config as nested dicts) without the :data:`_NO_EFFECT` keys, at any depth."""
    return {k: _without_no_effect(v, f"{prefix}{k}.") if isinstance(v, dict) else v
            for k, v in d.items() if f"{prefix}{k}" not in _NO_EFFECT}


def _settings(cfg: LearnLabelsConfig) -> dict:
    return _without_no_effect(config_to_dict(cfg))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def finished_state(cfg: LearnLabelsConfig) -> tuple[str, list[str]]:
    """Whether the run directory already holds this run: ``("done", [])`` (same settings), ``("stale", changed
    keys)`` (finished with other settings, or by a version that recorded none), or ``("todo", [])``."""
    res_f = cfg.run_path / "results.json"
    if not (res_f.is_file() and (cfg.run_path / "labels.json").is_file()):
        return "todo", []
    try:
        recorded = json.loads(res_f.read_text()).get("settings_key")
    except (ValueError, AttributeError):
        recorded = None
    if recorded == settings_fingerprint(cfg):
        return "done", []
    try:
        old = _flatten(_without_no_effect(yaml.safe_load((cfg.run_path / "config.yaml").read_text()) or {}))
    except (OSError, yaml.YAMLError, AttributeError):
        old = {}
    new = _flatten(_settings(cfg))
    changed = [f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return "stale", changed or ["(no settings fingerprint recorded)"]


def _check_finished(cfg: LearnLabelsConfig, force: bool) -> dict | None:
    """The finished results when the run directory already holds this run (and not ``force``), else None.

    Raises:
        ConfigError: the run directory holds a run finished with other settings and ``force`` is false.
    """
    if force:
        (cfg.run_path / ".learn_labels.resume.pt").unlink(missing_ok=True)
        return None
    state, changed = finished_state(cfg)
    if state == "stale":
        raise ConfigError(f"{cfg.run_path} holds a learn-labels run finished with other settings "
                          f"({'; '.join(changed[:3])}{' …' if len(changed) > 3 else ''}): rerun with --force to redo it, "
                          "or give another name= / run_dir=")
    return json.loads((cfg.run_path / "results.json").read_text()) if state == "done" else None


def learn_labels(cfg: LearnLabelsConfig, force: bool = False) -> dict:
    """Run the whole job and write the run directory (see the module docstring).

    A run directory that already holds this run (``results.json`` with the same settings fingerprint) is not
    recomputed: its results are returned.

    Args:
        cfg: a validated config (:func:`~labeldistill.learn_labels.config.load_ld_config`).
        force: redo the run: ignore finished outputs, the resume file and the run's own trained teacher
            (a ``teacher.checkpoint`` is still used).

    Returns:
        The ``results.json`` content (``done: true`` added when it was already there).

    Raises:
        ConfigError: the run directory holds a run finished with other settings (without ``force``).
        ConfigError / DataError / RegistryError: bad settings or data (nothing is written but the teacher).
    """
    t_start = time.perf_counter()
    for where, spec in [("learner", cfg.learner), ("teacher.model", cfg.teacher.model)] + \
            [(f"metatest.archs[{i}]", parse_arch(a, "metatest.archs")) for i, a in enumerate(cfg.metatest.archs)]:
        check_model_spec(spec, where)  # before the data is read: a typo fails at once
    if "teacher" in cfg.methods or cfg.labels.init == "teacher":
        check_checkpoint_form(cfg.teacher)
    finished = _check_finished(cfg, force)
    if finished is not None:
        return {**finished, "done": True}
    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    previous = load_previous_labels(cfg) if cfg.labels_from else None
    task = prepare_task(cfg, device, previous.base_indices if previous else None)
    for _, spec in evaluation_plan(cfg):  # fail on a bad architecture before any long computation
        build_network(spec.arch, task.num_classes, task.shape, torch.device("cpu"))
    metrics = MetricsLog(cfg.run_path / "metrics.jsonl")
    progress = Progress(cfg)
    progress.attach_metrics(metrics)
    torch.manual_seed(cfg.seed)
    if previous is None:
        label_sets, meta_results, teacher_info = make_label_sets(cfg, task, device, metrics.log, progress,
                                                                 retrain_teacher=force)
        steps = {m: r.steps for m, r in meta_results.items()}
    else:
        label_sets = {m: y.to(device) for m, y in previous.label_sets.items()}
        meta_results, teacher_info, steps = {}, previous.teacher, previous.steps

    images = {m: r.images for m, r in meta_results.items() if r.images is not None}
    if previous is not None:
        images = {m: x.to(device) for m, x in previous.images.items()}
    rows = _metatest_rows(cfg, task, label_sets, images, steps, progress, metrics, device)
    results = _results(cfg, task, previous, rows, meta_results, teacher_info, device,
                       round(time.perf_counter() - t_start, 2), progress.key)
    write_outputs(cfg, task, label_sets, _method_entries(cfg, label_sets, meta_results, steps, teacher_info),
                  results, images)
    progress.clear()
    return results


def _results(cfg: LearnLabelsConfig, task: Task, previous: PreviousLabels | None, rows: list, meta_results: dict,
             teacher_info: dict | None, device: torch.device, seconds: float, key: str) -> dict:
    """The ``results.json`` content of a finished run (``seconds``: its wall time)."""
    n = len(task.base_indices)
    return {
        "name": cfg.name,
        "source": cfg.data.source or cfg.data.target, "target": cfg.data.target, "cross_dataset": task.cross_dataset,
        "n_base": n, "base_mode": cfg.base.mode, "learner": {"name": cfg.learner.name, "args": cfg.learner.args},
        "label_param": cfg.labels.param, "label_init": cfg.labels.init,
        "labels_from": str(previous.path) if previous else None,
        "rows": rows,
        "meta": {m: {"best_steps": r.steps, "best_val_error": r.val_error, "outer_steps": r.outer_steps,
                     "resets": len(r.reset_lengths), "reset_lengths": r.reset_lengths, "history": r.history,
                     "seconds": round(r.seconds, 2), "seconds_per_outer_step": round(r.seconds_per_step, 4)}
                 for m, r in meta_results.items()},
        "teacher": teacher_info,
        "sizes": {"target_train": len(task.x_target), "val": len(task.x_val), "test": len(task.x_test)},
        "machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(), "device": str(device),
                    "torch": torch.__version__},
        "seconds": seconds,
        "settings_key": key,
    }


class Progress:
    """The resume file of a learn-labels run (``<run_dir>/.learn_labels.resume.pt``).

    Holds the meta-training record of every finished learned label set (its :class:`MetaResult` as a dict,
    ``(N, C)`` labels included), the loop state of a meta-training in progress (``meta_progress``, by method:
    :meth:`~.meta._MetaRun.state_dict`) and the finished meta-test rows, keyed by a fingerprint of the settings
    (:func:`settings_fingerprint`). Written atomically after each unit; read with ``weights_only=True``.

    Each save also records the length of ``metrics.jsonl`` (bytes) and the one-off events already logged
    (:meth:`log_once`), so a resumed run first drops the lines logged after the last save (:meth:`attach_metrics`)
    and its ``metrics.jsonl`` ends with the lines of an uninterrupted run, in the same order (``time`` aside).
    """

    def __init__(self, cfg: LearnLabelsConfig):
        self.key = settings_fingerprint(cfg)
        self.path = cfg.run_path / ".learn_labels.resume.pt"
        state = load_checkpoint(self.path, self.key) or {}
        self.meta: dict[str, dict] = state.get("meta", {})
        self.meta_progress: dict[str, dict] = state.get("meta_progress", {})
        self.rows: list[dict] = state.get("rows", [])
        self.metrics_bytes: int | None = state.get("metrics_bytes")
        self.logged: list[str] = list(state.get("logged", []))
        self.metrics: MetricsLog | None = None
        if self.meta or self.meta_progress or self.rows:
            busy = "".join(f"; {m} meta-training continues after epoch {s['epoch']} (outer step {s['step']})"
                           for m, s in self.meta_progress.items())
            print(f"resuming {cfg.run_path}: {len(self.meta)} label sets and {len(self.rows)} meta-test rows "
                  f"already done{busy}", flush=True)

    def _save(self) -> None:
        if self.metrics is not None:
            self.metrics_bytes = self.metrics.size()
        save_checkpoint(self.path, self.key, {"meta": self.meta, "meta_progress": self.meta_progress,
                                              "rows": self.rows, "metrics_bytes": self.metrics_bytes,
                                              "logged": self.logged})

    def attach_metrics(self, metrics: MetricsLog) -> None:
        """Record ``metrics``' length with every save from now on. A resumed run first drops the lines written
        after its last save (they are logged again as their work is redone); a new run (or a file saved before
        lengths were recorded) saves at once, so a kill before any other save is undone the same way and the lines
        of earlier runs in the file stay."""
        self.metrics = metrics
        if self.metrics_bytes is not None:
            metrics.rewind(self.metrics_bytes)
        else:
            self._save()

    def log_once(self, log: Callable[..., None], event: str, **kv) -> None:
        """``log(event=event, **kv)`` unless a saved state already holds it (an event of work a resumed run does
        not redo, such as the teacher line); then save."""
        if event in self.logged:
            return
        log(event=event, **kv)
        self.logged.append(event)
        self._save()

    def meta_checkpoint(self, method: str, seconds: float) -> MetaCheckpoint:
        """Saving (every ``seconds`` at most) and resuming of ``method``'s meta-training in this file."""
        return MetaCheckpoint(self.meta_progress.get(method), partial(self.save_meta_progress, method), seconds)

    def save_meta_progress(self, method: str, state: dict) -> None:
        """Keep ``state`` (CPU tensors, numbers, lists, dicts) as ``method``'s meta-training in progress; save."""
        self.meta_progress[method] = state
        self._save()

    def save_label_set(self, method: str, meta: MetaResult) -> None:
        """Keep ``method``'s finished meta-training record (and drop its state in progress); save."""
        self.meta[method] = {k: v.detach().cpu().clone() if torch.is_tensor(v) else v for k, v in asdict(meta).items()}
        self.meta_progress.pop(method, None)
        self._save()

    def meta_result(self, method: str, device: torch.device) -> MetaResult | None:
        if method not in self.meta:
            return None
        r = dict(self.meta[method])
        for k in ("labels", "final_labels", "images", "final_images"):
            if r.get(k) is not None:
                r[k] = r[k].to(device)
        return MetaResult(**r)

    def save_rows(self, rows: list[dict]) -> None:
        self.rows = list(rows)
        self._save()

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _meta_train_one(cfg: LearnLabelsConfig, task: Task, method: str, teacher_labels: torch.Tensor | None,
                    device: torch.device, log: Callable[..., None],
                    checkpoint: MetaCheckpoint | None = None) -> MetaResult:
    """Meta-train one learned set: LD or RR labels (from ``labels.init``), or DD images (one-hot labels).

    ``checkpoint``: saves the loop state mid-run and resumes from a saved one (:class:`~.meta.MetaCheckpoint`).
    """
    make_model = lambda: build_network(cfg.learner, task.num_classes, task.shape, device)  # noqa: E731
    meta_learner: LDMetaLearner | RRMetaLearner | DDMetaLearner
    if method == "dd":
        labels = LearnedLabels(_hard_labels(task, "methods: dd").to(device), "prob", cfg.labels.lr)
        images = LearnedImages(initial_images(task.x_base, cfg.dd.init, cfg.seed + 7), cfg.dd.lr)
    else:
        init = initial_labels(cfg, task, teacher_labels).to(device)
        labels = LearnedLabels(init, cfg.labels.param, cfg.labels.lr, cfg.labels.temperature)
    torch.manual_seed(cfg.seed)
    if method == "ld":
        meta_learner = LDMetaLearner(make_model, cfg.meta.model_lr, cfg.ld.inner_lr, cfg.ld.inner_steps)
    elif method == "dd":
        meta_learner = DDMetaLearner(make_model, images, cfg.meta.model_lr, cfg.ld.inner_lr, cfg.ld.inner_steps)
    else:
        meta_learner = RRMetaLearner(make_model, task.num_classes, cfg.meta.model_lr, cfg.rr.lam, cfg.rr.ema,
                                     cfg.rr.scale_lr)
    return meta_train(meta_learner, labels, task.x_base, task.x_target, task.y_target, task.x_val, task.y_val,
                      epochs=cfg.meta.epochs, outer_batch=cfg.meta.outer_batch, inner_batch=cfg.meta.inner_batch,
                      inner_steps=1 if method == "rr" else cfg.ld.inner_steps, window=cfg.reset_window(),
                      val_every=cfg.meta.val_every, max_steps=cfg.max_steps(), seed=cfg.seed,
                      eval_batch=cfg.metatest.eval_batch, desc=method, last_batch=cfg.meta.last_batch, log=log,
                      checkpoint=checkpoint)


def make_label_sets(cfg: LearnLabelsConfig, task: Task, device: torch.device, log: Callable[..., None],
                    progress: Progress | None = None, retrain_teacher: bool = False
                    ) -> tuple[dict[str, torch.Tensor], dict[str, MetaResult], dict | None]:
    """Teacher (if needed), meta-training of LD/RR/DD and the baseline label sets.

    Learned label sets already in ``progress`` (a run resumed after a kill) are taken from it; each newly
    learned set is saved there, and so is its meta-training's state during the run (``meta.checkpoint_seconds``),
    from which a killed meta-training continues. ``retrain_teacher``: train the teacher even if the run's own ``teacher/`` holds
    one (``--force``).

    Returns:
        ``(label sets by method (each (N, C); DD's are its fixed one-hot labels, its images are in the
        result's ``images``), meta-training results of ld/rr/dd, teacher info or None)``.
    """
    teacher_info = None
    teacher_labels = None
    if "teacher" in cfg.methods or cfg.labels.init == "teacher":
        split = TeacherSplit(cfg.data.target, task.train_size, task.target_indices, task.val_indices)
        teacher, teacher_info = get_teacher(cfg.teacher, cfg.run_path / "teacher", task.x_target, task.y_target,
                                            task.x_test, task.y_test, task.classes, split, task.mean,
                                            task.std, device, cfg.seed, reuse=not retrain_teacher)
        teacher_labels = soft_labels(teacher, task.x_base, cfg.teacher.temperature).to(device)
        teacher_info = {**teacher_info, "temperature": cfg.teacher.temperature}
        if progress is None:
            log(event="teacher", top1=teacher_info.get("top1"))
        else:
            progress.log_once(log, "teacher", top1=teacher_info.get("top1"))

    label_sets: dict[str, torch.Tensor] = {}
    meta_results: dict[str, MetaResult] = {}
    for method in cfg.methods:
        if method in LEARNED_METHODS:
            done = progress.meta_result(method, device) if progress is not None else None
            if done is not None:
                meta_results[method] = done
                label_sets[method] = done.labels
                continue
            ckpt = progress.meta_checkpoint(method, cfg.meta.checkpoint_seconds) if progress is not None else None
            res = _meta_train_one(cfg, task, method, teacher_labels, device, log, ckpt)
            meta_results[method] = res
            label_sets[method] = res.labels
            if progress is not None:
                progress.save_label_set(method, res)
            fault_point("meta-train")
        elif method == "onehot":
            label_sets[method] = _hard_labels(task, "the onehot baseline").to(device)
        elif method == "smooth":
            label_sets[method] = smooth_labels(_hard_labels(task, "the smooth baseline"), cfg.smoothing).to(device)
        else:
            assert teacher_labels is not None
            label_sets[method] = teacher_labels
    return label_sets, meta_results, teacher_info


def _method_entries(cfg: LearnLabelsConfig, label_sets: dict[str, torch.Tensor], meta_results: dict[str, MetaResult],
                    steps: dict[str, int], teacher_info: dict | None) -> dict[str, dict]:
    """The manifest's description of every label set."""
    methods = {}
    for m in label_sets:
        entry: dict = {"kind": "learned" if m in LEARNED_METHODS else "baseline"}
        if m in LEARNED_METHODS:
            entry["best_steps"] = steps[m]
            if cfg.labels_from:
                entry["labels_from"] = cfg.labels_from
        if m in meta_results:
            r = meta_results[m]
            inner = {"inner_lr": cfg.ld.inner_lr, "inner_steps": cfg.ld.inner_steps}
            if m == "dd":
                entry.update({"learns": "images", "labels": "onehot", "image_init": cfg.dd.init,
                              "image_lr": cfg.dd.lr, **inner})
            else:
                entry.update({"param": cfg.labels.param, "init": cfg.labels.init,
                              "init_smoothing": cfg.labels.init_smoothing, "label_lr": cfg.labels.lr,
                              **(inner if m == "ld" else {"lam": cfg.rr.lam, "ema": cfg.rr.ema,
                                                           "scale_lr": cfg.rr.scale_lr})})
            entry.update({"best_val_error": r.val_error, "outer_steps": r.outer_steps})
        elif m == "smooth":
            entry["smoothing"] = cfg.smoothing
        elif m == "teacher" and teacher_info is not None:
            entry["teacher"] = {k: teacher_info[k] for k in ("model", "model_args", "top1", "temperature", "split_checked",
                                                              "loaded_from") if k in teacher_info}
        methods[m] = entry
    return methods


def write_outputs(cfg: LearnLabelsConfig, task: Task, label_sets: dict[str, torch.Tensor], methods: dict[str, dict],
                  results: dict, images: dict[str, torch.Tensor] | None = None) -> None:
    """Write labels, manifest, results, report and plot into the run directory (each file atomically).

    ``images``: learned images by method (``dd``), saved as ``<method>_images`` float32 ``(N, C, H, W)`` in the
    target's normalised units.
    """
    run_dir = cfg.run_path
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {m: y.detach().float().cpu().contiguous() for m, y in label_sets.items()}
    tensors.update({f"{m}_images": x.detach().float().cpu().contiguous() for m, x in (images or {}).items()})
    tensors["base_indices"] = task.base_indices.clone().contiguous()
    tensors["base_images"] = task.source.images[task.base_indices].contiguous()
    tmp = run_dir / ".labels.safetensors.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(run_dir / "labels.safetensors")
    manifest = {
        "format": "labeldistill.learned-labels/1",
        "file": "labels.safetensors",
        "source": {"dataset": cfg.data.source or cfg.data.target, "split": "train",
                   "root": cfg.data.source_root if task.cross_dataset else cfg.data.target_root,
                   "classes": list(task.source.classes)},
        "target": {"dataset": cfg.data.target, "root": cfg.data.target_root, "classes": task.classes,
                   "mean": list(task.mean), "std": list(task.std), "val_size": cfg.data.val_size,
                   "split_seed": cfg.data.split_seed},
        "cross_dataset": task.cross_dataset,
        "base": {"n": len(task.base_indices), "mode": cfg.base.mode, "seed": cfg.base.seed,
                 "indices": task.base_indices.tolist(), "source_labels": task.base_source_labels.tolist()},
        "shape": [len(task.base_indices), task.num_classes],
        "learner": {"name": cfg.learner.name, "args": dict(cfg.learner.args)},
        "methods": methods,
        "seeds": {"seed": cfg.seed, "base_seed": cfg.base.seed, "split_seed": cfg.data.split_seed},
    }
    atomic_write_json(run_dir / "labels.json", manifest)
    atomic_write_json(run_dir / "results.json", results)
    atomic_write_bytes(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False).encode())
    if cfg.plot_examples:
        plot_labels(tensors["base_images"], task.base_source_labels, task.source.classes,
                    {m: tensors[m] for m in label_sets if m not in (images or {})}, task.classes, run_dir / "labels.png", cfg.plot_examples)
    write_report(run_dir, results, plot=bool(cfg.plot_examples))


def learn_labels_main(config_path: str, overrides: list[str], force: bool = False) -> int:
    """CLI entry of ``labeldistill learn-labels CONFIG [key=value ...] [--force]``; prints the results table
    (``--dry-run``: :func:`~labeldistill.learn_labels.plan.plan_learn_labels`).

    Returns:
        0 on success (errors are raised as project exceptions and turned into exit code 2 by the CLI).
    """
    from .config import load_ld_config
    from .report import results_table

    cfg = load_ld_config(config_path, overrides)
    results = learn_labels(cfg, force=force)
    print(results_table(results["rows"]))
    if results.get("done"):
        print(f"{cfg.run_path}/ already holds this run (same settings): nothing recomputed; --force redoes it")
    else:
        print(f"wrote {cfg.run_path}/ (labels.safetensors, labels.json, results.json, report.md) "
              f"in {results['seconds']:.0f} s")
    return 0
