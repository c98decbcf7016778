"""Resuming after a kill: training checkpoints and the run directory's version stamp.

A checkpoint is written atomically (temporary file + rename) and carries a *key* — a fingerprint of every
setting that determines the work — so a checkpoint left by a different configuration is never resumed
from. Restoring the model, optimiser, step counter and RNG states makes the resumed run produce the same
bytes as an uninterrupted one on CPU.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import time
from pathlib import Path

import torch

from . import __version__
from .errors import LabelDistillError, StoreError
from .io import atomic_write_json

RUN_LAYOUT_VERSION = 2  # 2: validate results keyed by student (validate/<student>/), stages.json


def save_checkpoint(path: Path, key: str, state: dict) -> None:
    """Atomically write ``state`` (tensors, dicts, RNG states) with its settings ``key``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"key": key, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, key: str) -> dict | None:
    """The checkpoint at ``path`` if it exists, is readable and was written with the same ``key``; else None.

    The file is read with ``torch.load(weights_only=True)``: tensors, numbers, strings and containers only, so a
    resume file in a run directory received from someone else can never run code. A damaged file (not a zip
    archive, cut off) is not used: its stage starts again from the beginning.

    Raises:
        StoreError: the file holds anything else (a pickled object that would call a function when loaded).
    """
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise StoreError(f"resume file {path} holds objects other than tensors, numbers and strings and was not "
                         "loaded (it could run code): delete it if you trust nothing in it, and the stage "
                         "restarts from the beginning") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError):
        return None
    return state if isinstance(state, dict) and state.get("key") == key else None


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL at the n-th call of ``name`` when ``LABELDISTILL_KILL_AT=name:n`` is set.

    A fault-injection hook for the test suite: it makes "killed right after the n-th unit of work of a
    stage" reproducible (units: ``squeeze-epoch``, ``recover-group``, ``relabel-shard``, ``generator-epoch``,
    ``validate-epoch``, ``meta-epoch``).
    Without the variable it does nothing.
    """
    spec = os.environ.get("LABELDISTILL_KILL_AT")
    if not spec or spec.rpartition(":")[0] != name:
        return
    _FAULT_COUNTS[name] = _FAULT_COUNTS.get(name, 0) + 1
    if _FAULT_COUNTS[name] >= int(spec.rpartition(":")[2]):
        os.kill(os.getpid(), signal.SIGKILL)


_FAULT_COUNTS: dict[str, int] = {}


class Throttle:
    """True at most once per ``seconds`` (for time-based checkpointing)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.last = time.monotonic()

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.seconds:
            self.last = now
            return True
        return False


def read_run_version(root: Path) -> dict | None:
    """The ``run.json`` stamp of a run directory (``None`` when the directory has none yet).

    Raises:
        LabelDistillError: ``run.json`` is unreadable, or names another layout version than this one.
    """
    f = Path(root) / "run.json"
    if not f.is_file():
        return None
    try:
        info = json.loads(f.read_text())
    except ValueError:
        raise LabelDistillError(f"{f} is not valid JSON; use a fresh run_dir") from None
    if info.get("layout_version") != RUN_LAYOUT_VERSION:
        raise LabelDistillError(
            f"run directory {root} was made by labeldistill {info.get('labeldistill_version', '?')} "
            f"(layout {info.get('layout_version')}), incompatible with this version {__version__} (layout "
            f"{RUN_LAYOUT_VERSION}): use a new run_dir")
    return info


def check_run_dir(root: Path, create: bool = True) -> None:
    """Refuse a run directory made by an incompatible version; stamp a new one (when ``create``).

    Raises:
        LabelDistillError: see :func:`read_run_version`.
    """
    if read_run_version(root) is not None or not create:
        return
    Path(root).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(root) / "run.json", {"labeldistill_version": __version__,
                                                "layout_version": RUN_LAYOUT_VERSION})
