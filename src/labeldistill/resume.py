"""Resuming after a kill: training checkpoints and the run directory's version stamp.

A checkpoint is written atomically (temporary file + rename) and carries a *key* — a fingerprint of every
setting that determines the work — so a checkpoint left by a different configuration is never resumed
from. Restoring the model, optimiser, step counter and RNG states makes the resumed run produce the same
bytes as an uninterrupted one on CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import LabelDistillError
from .utils import atomic_write_json

RUN_LAYOUT_VERSION = 1


def settings_key(*parts: Any) -> str:
    """Stable fingerprint (16 hex digits) of JSON-serialisable settings."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save_checkpoint(path: Path, key: str, state: dict) -> None:
    """Atomically write ``state`` (tensors, dicts, RNG states) with its settings ``key``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"key": key, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, key: str) -> dict | None:
    """The checkpoint at ``path`` if it exists, is readable and was written with the same ``key``; else None."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a checkpoint cut off mid-write by a crash is simply not used
        return None
    return state if state.get("key") == key else None


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL at the n-th call of ``name`` when ``LABELDISTILL_KILL_AT=name:n`` is set.

    A fault-injection hook for the test suite: it makes "killed right after the n-th unit of work of a
    stage" reproducible (units: ``squeeze-epoch``, ``recover-group``, ``relabel-shard``, ``validate-epoch``).
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


def check_run_dir(root: Path) -> None:
    """Stamp a new run directory with the layout version, or refuse one made by an incompatible version.

    Raises:
        LabelDistillError: ``run.json`` names another layout version, or is unreadable.
    """
    f = Path(root) / "run.json"
    if f.is_file():
        try:
            info = json.loads(f.read_text())
        except ValueError:
            raise LabelDistillError(f"{f} is not valid JSON; use a fresh run_dir") from None
        if info.get("layout_version") != RUN_LAYOUT_VERSION:
            raise LabelDistillError(
                f"run directory {root} was made by labeldistill {info.get('labeldistill_version', '?')} "
                f"(layout {info.get('layout_version')}); this version {__version__} uses layout "
                f"{RUN_LAYOUT_VERSION}: use a new run_dir")
        return
    Path(root).mkdir(parents=True, exist_ok=True)
    atomic_write_json(f, {"labeldistill_version": __version__, "layout_version": RUN_LAYOUT_VERSION})
