"""A stage, and the runner that skips, refuses, records and resumes every unit of work of every stage.

A :class:`Stage` declares its name, its units (one :class:`~labeldistill.provenance.StageRef` per mode / store
/ student / label source the config asks for), the settings it depends on (its own, on top of its
``upstream`` stage's), the file that marks a unit's output complete, and (bound by the stage's module with
:meth:`Stage.runs`) the function that runs one unit. The main job's stages are declared in
:mod:`labeldistill.main_stages`.

:func:`run_unit` is the outline every stage shares, written once: a unit whose marker exists is reused when
``stages.json`` records it with the current fingerprint, and refused with one line otherwise — made with other
settings, or not recorded at all (nothing is accepted without a record); ``force`` recomputes it. Work writes on
rank 0, the runner records the unit (:func:`~labeldistill.provenance.write_record`) and waits at a barrier.
:meth:`Stage.resume_key` derives a unit's resume-checkpoint key from the same fingerprint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .config import Config
from .data.presets import resolve_augmentation
from .distributed import all_gather_objects, barrier, rank_world, solo
from .errors import StaleStageError
from .io import settings_key
from .layout import RunLayout
from .provenance import LEDGER, StageRef, fingerprint, read_ledger, recorded_changes, write_record
from .runtime import in_solo, is_rank0, process_rank

Settings = Callable[[Config, StageRef], dict[str, Any]]


@dataclass(eq=False)
class Stage:
    """One stage of a job.

    Attributes:
        name: the stage's name (``squeeze``, ``validate``, ...), the first word of its units' keys.
        own: ``(cfg, ref) -> {dotted key: value}``: the settings the stage itself reads (its config section).
        marker: ``(cfg, ref, layout) -> Path``: the file whose existence means the unit's output is complete.
        units: ``cfg -> [StageRef, ...]``: the units the config asks for, in the order they run.
        upstream: the stage whose output this one reads; its settings are part of this one's.
        run: ``(cfg, ref, force) -> result``: runs one unit (bound by the stage's module with :meth:`runs`).
    """

    name: str
    own: Settings
    marker: Callable[[Config, StageRef, RunLayout], Path]
    units: Callable[[Config], list[StageRef]]
    upstream: "Stage | None" = None
    run: Callable[[Config, StageRef, bool], Any] | None = None

    def ref(self, mode: str | None = None, variant: Any = None, student: str | None = None,
            labels: str | None = None, repeat: int = 0) -> StageRef:
        """A unit of this stage."""
        return StageRef(self.name, mode, variant, student, labels, repeat)

    def settings(self, cfg: Config, ref: StageRef) -> dict[str, Any]:
        """Every setting (dotted key → value) the output of ``ref`` depends on, upstream stages' included
        (augmentation keys left unset are resolved from the dataset first:
        :func:`~labeldistill.data.presets.resolve_augmentation`)."""
        resolve_augmentation(cfg)
        return self._chained_settings(cfg, ref)

    def _chained_settings(self, cfg: Config, ref: StageRef) -> dict[str, Any]:
        up = self.upstream._chained_settings(cfg, ref) if self.upstream is not None else {}
        return {**up, **self.own(cfg, ref)}

    def resume_key(self, cfg: Config, ref: StageRef, *extra: Any) -> str:
        """The key of ``ref``'s resume checkpoint: its fingerprint, plus ``extra`` (e.g. the world size)."""
        return settings_key(self.name, fingerprint(self.settings(cfg, ref)), *extra)

    def runs(self, fn: Callable[[Config, StageRef, bool], Any]) -> Callable[[Config, StageRef, bool], Any]:
        """Decorator: bind ``fn(cfg, ref, force)`` as the function that runs one unit of this stage."""
        self.run = fn
        return fn


def _layout(cfg: Config, layout: RunLayout | None) -> RunLayout:
    return layout or RunLayout(cfg.run_path)


def changes(stage: Stage, cfg: Config, ref: StageRef, layout: RunLayout | None = None,
            write: bool = False) -> list[str] | None:
    """What differs between ``ref``'s record and the current settings: ``None`` when ``stages.json`` records no
    output of it, ``[]`` when it matches, else ``key: old → new`` lines
    (:func:`~labeldistill.provenance.recorded_changes`; ``write`` re-keys a matching old-version record)."""
    return recorded_changes(_layout(cfg, layout), ref.key, stage.settings(cfg, ref), write)


def unit_status(stage: Stage, cfg: Config, ref: StageRef, layout: RunLayout | None = None) -> str:
    """``done``, ``to do``, ``stale (key: old → new; ...)`` or ``stale (not recorded in stages.json)``."""
    layout = _layout(cfg, layout)
    if not stage.marker(cfg, ref, layout).is_file():
        return "to do"
    changed = changes(stage, cfg, ref, layout)
    if changed is None:
        return "stale (not recorded in stages.json)"
    return f"stale ({'; '.join(changed)})" if changed else "done"


def check_unit(stage: Stage, cfg: Config, ref: StageRef, layout: RunLayout | None = None) -> None:
    """Refuse to reuse ``ref``'s finished output unless ``stages.json`` records it with the current settings.

    Raises:
        StaleStageError: one line naming the unit, the changed keys (or the missing record) and the two ways out.
    """
    layout = _layout(cfg, layout)
    changed = changes(stage, cfg, ref, layout, write=process_rank() == 0)
    if changed == []:
        return
    if changed is None:
        why = f"has an output that {layout.root / LEDGER} does not record (its settings are unknown)"
    else:
        shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
        why = f"was made with other settings ({shown})"
    raise StaleStageError(f"{ref.key} in {layout.root} {why}; rerun with --force to recompute it (and what "
                          "depends on it), or set a new name=/run_dir= to keep both")


def run_unit(stage: Stage, cfg: Config, ref: StageRef, work: Callable[[], tuple[Any, float]], *,
             reuse: Callable[[], Any] | None = None, force: bool = False, layout: RunLayout | None = None,
             sync: bool = True) -> Any:
    """Run one unit: reuse its finished output, refuse it, or compute and record it.

    Args:
        work: computes the output and writes it on rank 0; returns ``(result, seconds)`` (the stage's own wall
            time, recorded in ``stages.json``).
        reuse: called instead of ``work`` when the output is finished and recorded with the current settings
            (checks of its own may raise); its value is returned. ``None`` returns ``None``.
        force: recompute even a finished output.
        sync: wait for every rank after recording (``False`` for stages only rank 0 runs).

    Raises:
        StaleStageError: a finished output made with other settings or not recorded (without ``force``).
    """
    layout = _layout(cfg, layout)
    if stage.marker(cfg, ref, layout).is_file() and not force:
        check_unit(stage, cfg, ref, layout)
        return reuse() if reuse is not None else None
    result, seconds = work()
    _record(layout, ref.key, stage.settings(cfg, ref), seconds)
    if sync:
        barrier()
    return result


_PENDING: list[tuple] = []  # records of units this rank ran inside solo(), for process rank 0 to write


def _record(layout: RunLayout, key: str, settings: dict, seconds: float) -> None:
    """Record a finished unit: process rank 0 writes it (the ledger's one writer); another rank running units of
    its own (:func:`run_spread`) keeps it for rank 0 to write."""
    if process_rank() == 0:
        write_record(layout, key, settings, seconds)
    elif in_solo():
        finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _PENDING.append((str(layout.root), key, settings, seconds, finished))


def run_spread(units: list[tuple[Stage, StageRef]], cfg: Config, stale: set[str]) -> dict[str, Any]:
    """Run ``units`` spread over the ranks (``validate.parallel: students``): unit ``i`` runs on rank
    ``i mod world`` as a single-process run (:func:`~labeldistill.distributed.solo`: no DDP, its own output files),
    then every rank gets every unit's result and process rank 0 writes the other ranks' ledger records. Collective:
    every rank calls it with the same units. Returns ``{unit key: result}``.

    Raises:
        StaleStageError: as :func:`run_unit` (the other ranks are then stopped by torchrun).
    """
    barrier()
    rank, world = rank_world()
    mine = {}
    with solo():
        for i, (stage, ref) in enumerate(units):
            if i % world == rank:
                mine[ref.key] = stage.run(cfg, ref, ref.key in stale)
    gathered = all_gather_objects((mine, list(_PENDING)))
    _PENDING.clear()
    if process_rank() == 0:
        for _, records in gathered[1:]:
            for root, key, settings, seconds, finished in records:
                write_record(RunLayout(Path(root)), key, settings, seconds, finished)
    barrier()
    return {k: v for results, _ in gathered for k, v in results.items()}


def stale_units(units: list[tuple[Stage, StageRef]], cfg: Config, force: bool) -> set[str]:
    """Keys of the finished units made with other settings or not recorded; refused (StaleStageError) before any
    work unless ``force``."""
    layout = _layout(cfg, None)
    stale = set()
    for stage, ref in units:
        if stage.marker(cfg, ref, layout).is_file() and changes(stage, cfg, ref, layout) != []:
            if not force:
                check_unit(stage, cfg, ref, layout)
            stale.add(ref.key)
    return stale


def adopt(units: list[tuple[Stage, StageRef]], cfg: Config, donor: Path) -> list[str]:
    """Record in ``cfg``'s run directory the units whose output was copied there from the run directory ``donor``,
    each only when ``donor``'s ledger records it with the settings ``cfg`` gives (an output made with other
    settings, or not recorded there, stays unrecorded and is refused). Returns the adopted keys."""
    layout, donor_layout = _layout(cfg, None), RunLayout(Path(donor))
    ours, adopted = read_ledger(layout), []
    for stage, ref in units:
        rec = read_ledger(donor_layout).get(ref.key)
        if ref.key in ours or rec is None or not stage.marker(cfg, ref, layout).is_file():
            continue
        now = stage.settings(cfg, ref)
        if recorded_changes(donor_layout, ref.key, now) == [] and is_rank0():
            write_record(layout, ref.key, now, rec.get("seconds"), rec.get("finished"))
            adopted.append(ref.key)
    return adopted
