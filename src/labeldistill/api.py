"""One call per thing a script does with the main job: run one stage, and read a finished run's rows.

Re-exported by the package root (``from labeldistill import run_stage, read_results``). The stage functions
themselves live in their stage modules; :func:`run_stage` names them as the command line does, so a script does
not need to know which module owns which stage (``labeldistill.recover`` is a module, ``recover`` its function).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import Config
from .errors import ConfigError, LabelDistillError
from .io import read_json

STAGES = ("squeeze", "class-stats", "recover", "relabel", "prune", "validate")


def run_stage(cfg: Config, stage: str, mode: str | None = None, force: bool = False) -> Any:
    """Run one stage of the main job as ``labeldistill <stage> CONFIG`` does, for one recover mode.

    Args:
        cfg: the job (``load_config``).
        stage: one of :data:`STAGES`.
        mode: the recover mode (``recover``, ``relabel``, ``prune``, ``validate``); default every configured one.
        force: recompute an output made with other settings (default: refuse it).

    Returns:
        What the stage function returns, per mode for the per-mode stages (``{mode: value}``): ``squeeze`` the
        teacher's info (dict, ``top1`` a fraction), ``class-stats`` the statistics file's path, ``recover`` the
        image folder, ``relabel`` the :class:`~labeldistill.labels.store.LabelStore`, ``prune`` the pruned stores'
        paths, ``validate`` the result rows (every configured student × label variant).

    Raises:
        ConfigError: an unknown stage.
        StaleStageError: a finished output made with other settings (without ``force``).
    """
    if stage == "squeeze":
        from .squeeze import squeeze

        return squeeze(cfg, force=force)
    if stage == "class-stats":
        from .bnstats import class_stats

        return class_stats(cfg, force=force)
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}: one of {', '.join(STAGES)}")
    return {m: _per_mode(cfg, stage, m, force) for m in ([mode] if mode else cfg.recover.modes)}


def _per_mode(cfg: Config, stage: str, mode: str, force: bool) -> Any:
    if stage == "recover":
        from .recover import recover

        return recover(cfg, mode, force=force)
    if stage == "relabel":
        from .labels.relabel import relabel

        return relabel(cfg, mode, force=force)
    if stage == "prune":
        from .labels.prune import prune_all

        return prune_all(cfg, mode, force=force)
    from .config import student_specs, with_student
    from .validate import validate
    from .variants import label_variants

    return [validate(with_student(cfg, s), mode, v, force=force) for s in student_specs(cfg.validate)
            for v in label_variants(cfg)]


def read_results(run_dir: str | Path) -> dict:
    """The ``results.json`` of a finished run (``labeldistill run`` / ``report``): ``rows`` (one dict per
    validate result: ``recover``, ``prune_factor``, ``logits``, ``student``, ``top1`` a fraction,
    ``label_bytes``, ...), ``teacher``, ``provenance`` and, when enabled, ``hard_label`` rows.

    Raises:
        LabelDistillError: ``run_dir`` has no ``results.json`` (not finished, or not a run directory).
    """
    f = Path(run_dir) / "results.json"
    if not f.is_file():
        raise LabelDistillError(f"no results.json in {run_dir}: the run has not finished ('labeldistill run "
                                "CONFIG' writes it)")
    return read_json(f)
