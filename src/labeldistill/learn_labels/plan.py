"""``learn-labels --dry-run``: the planned work of a run, from the same code that runs it; nothing is written.

The plan loads the datasets and chooses the base examples and the splits exactly as the run would
(:func:`~labeldistill.learn_labels.run.plan_task`), checks a teacher checkpoint, and counts the steps: teacher
training, outer steps of every learned set, and the meta-test rows with their repeats.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.loading import TEST_HOLDOUT_SEED
from .config import LEARNED_METHODS, LearnLabelsConfig
from .learners import outer_steps_per_epoch
from .run import evaluation_plan, finished_state, plan_task
from .teacher import check_checkpoint_form, external_teacher

OUTPUTS = ("labels.safetensors", "labels.json", "results.json", "report.md", "config.yaml", "metrics.jsonl")


def _teacher_plan(cfg: LearnLabelsConfig, num_classes: int, shape: tuple[int, int, int], n_target: int,
                  force: bool) -> str:
    """What the run does for its teacher: load a checkpoint (checked here), reuse its own, train one, or none.

    Raises:
        ConfigError / DataError: a ``teacher.checkpoint`` that the run would refuse (see ``get_teacher``).
    """
    if "teacher" not in cfg.methods and cfg.labels.init != "teacher":
        return "none (no method needs one)"
    ck = Path(cfg.teacher.checkpoint) if cfg.teacher.checkpoint else None
    if ck is not None and ck.is_file():
        external_teacher(cfg.teacher, ck, num_classes, shape, torch.device("cpu"))  # refuses what the run would
        return f"load the state_dict {ck} into {cfg.teacher.model.name} (training split unknown: unknown_split)"
    own = cfg.run_path / "teacher"
    if ck is not None:
        check_checkpoint_form(cfg.teacher)
        return f"load {ck} (its split record is checked against this run's validation split)"
    if (own / "teacher.json").is_file() and not force:
        return f"reuse {own} (trained by an earlier try of this run)"
    steps = cfg.teacher.epochs * max(n_target // min(cfg.teacher.batch_size, n_target), 1)
    return f"train {cfg.teacher.model.name} for {cfg.teacher.epochs} epochs ({steps} Adam steps), save in {own}"


def plan_learn_labels(cfg: LearnLabelsConfig, force: bool = False) -> dict:
    """The planned work of ``learn-labels`` (a JSON-serialisable dict); reads data, writes nothing.

    Raises:
        ConfigError / DataError / RegistryError: whatever the run itself would refuse before training.
    """
    state, changed = finished_state(cfg)
    p = plan_task(cfg)
    d, n = cfg.data, len(p.base_indices)
    steps_per_epoch = outer_steps_per_epoch(len(p.target_indices), cfg.meta.outer_batch, cfg.meta.last_batch)
    learned = {m: {"epochs": cfg.meta.epochs, "outer_steps": cfg.meta.epochs * steps_per_epoch,
                   "inner_steps_per_outer": 1 if m == "rr" else cfg.ld.inner_steps}
               for m in cfg.methods if m in LEARNED_METHODS}
    rows = evaluation_plan(cfg)
    test_from = (f"{d.test_holdout} images held out of the {d.target} train split (seed {TEST_HOLDOUT_SEED})"
                 if d.test_holdout else f"the {d.target} test split")
    return {
        "run_dir": str(cfg.run_path),
        "status": {"done": "done (same settings): nothing to recompute" if not force else "done; --force redoes it",
                   "stale": f"finished with other settings ({'; '.join(changed)}): "
                            + ("--force redoes it" if force else "refused without --force"),
                   "todo": "to do"}[state],
        "base_examples": {"dataset": d.source or d.target, "split": "train", "n": n, "mode": cfg.base.mode,
                          "seed": cfg.base.seed, "source_images": len(p.source), "classes": p.source.num_classes,
                          "cross_dataset": p.cross_dataset},
        "target": {"dataset": d.target, "root": d.target_root, "shape": list(p.train.shape),
                   "classes": p.train.num_classes, "train_images": len(p.train), "validation": len(p.val_indices),
                   "outer_loss_images": len(p.target_indices), "test_images": len(p.test), "test_from": test_from,
                   "mean": list(p.train.mean), "std": list(p.train.std), "lazy": d.lazy},
        "teacher": _teacher_plan(cfg, p.train.num_classes, tuple(p.train.shape), len(p.target_indices), force),
        "meta_train": learned,
        "meta_test": {"rows": len(rows), "repeats": cfg.metatest.repeats, "max_steps_per_model": cfg.max_steps(),
                      "models": len(rows) * cfg.metatest.repeats},
        "writes": [str(cfg.run_path / f) for f in OUTPUTS] + ([str(cfg.run_path / "labels.png")]
                                                               if cfg.plot_examples else []),
    }


def format_ld_plan(plan: dict) -> str:
    """The plan as text, one line per item."""
    b, t, mt = plan["base_examples"], plan["target"], plan["meta_test"]
    lines = [f"learn-labels dry run: {plan['run_dir']} ({plan['status']}); nothing is written",
             f"base examples: {b['n']} {b['mode']} of {b['source_images']} {b['dataset']} train images "
             f"({b['classes']} classes, seed {b['seed']}{', cross-dataset' if b['cross_dataset'] else ''})",
             f"target: {t['dataset']} at {'x'.join(map(str, t['shape']))} (C x H x W), {t['classes']} classes; "
             f"{t['outer_loss_images']} outer-loss + {t['validation']} validation of {t['train_images']} train "
             f"images; test: {t['test_images']} from {t['test_from']}",
             f"teacher: {plan['teacher']}"]
    for m, e in plan["meta_train"].items():
        lines.append(f"meta-train {m}: {e['epochs']} epochs = {e['outer_steps']} outer steps "
                     f"({e['inner_steps_per_outer']} inner step(s) each)")
    lines.append(f"meta-test: {mt['rows']} rows x {mt['repeats']} repeats = {mt['models']} fresh models "
                 f"(up to {mt['max_steps_per_model']} steps each)")
    lines.append("would write: " + ", ".join(Path(f).name for f in plan["writes"]))
    return "\n".join(lines)
