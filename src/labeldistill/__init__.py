"""labeldistill: the label side of dataset distillation (SRe2L/LPLD soft-label pruning, learned labels).

The names in ``__all__`` are the public API, what a script needs: load a config (``load_config``,
``load_ld_config``), run the whole job (``run``, and its hard-label baselines ``hard_label_rows``) or one stage
(``run_stage``, as the command line names it), read a finished run's rows (``read_results``), and use a run's
soft labels in your own training loop (:mod:`labeldistill.labels.loader`). They are loaded on first use (PEP 562
module ``__getattr__``), so ``import labeldistill`` and loading a config import no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("labeldistill")  # the installed distribution's version (pyproject.toml)
except PackageNotFoundError:  # a source tree on PYTHONPATH without an install
    __version__ = "0+unknown"

# public name -> module that defines it (imported on first access)
_PUBLIC = {
    "load_config": "labeldistill.config",
    "Config": "labeldistill.config",
    "run": "labeldistill.pipeline",
    "hard_label_rows": "labeldistill.pipeline",
    "run_stage": "labeldistill.api",
    "STAGES": "labeldistill.api",
    "read_results": "labeldistill.api",
    "load_ld_config": "labeldistill.learn_labels.config",
    "SoftLabelBatches": "labeldistill.labels.loader",
    "StoredStepDataset": "labeldistill.labels.loader",
    "PoolSampler": "labeldistill.labels.loader",
    "load_soft_label_batches": "labeldistill.labels.loader",
    "load_eval_split": "labeldistill.labels.loader",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'labeldistill' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
