"""Export a distilled set for other tools.

``ddranking``: DD-Ranking's tensor contract (Li et al. 2025, "DD-Ranking: Rethinking the Evaluation of Dataset
Distillation"): ``images.pt``, a float tensor ``(N, C, H, W)`` in class-major order, and ``labels.pt``, one soft
label ``(N, K)`` per image. A label store holds one teacher output per augmented view, so each image's soft label
is the mean of ``softmax(logits)`` over its stored views that were not mixed by CutMix (the teacher's
prediction on a random-resized view, averaged); an image with no such view gets the mean over all its views.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .data.synthetic import load_synthetic
from .errors import LabelDistillError
from .io import atomic_dir, atomic_write_json
from .labels.store import LabelStore


def image_soft_labels(store: LabelStore) -> torch.Tensor:
    """Per-image mean teacher probabilities over the store's views, float32 ``(N, K)``."""
    m = store.manifest
    n, k = m["num_images"], m["num_classes"]
    clean, clean_n = torch.zeros(n, k, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    mixed, mixed_n = torch.zeros(n, k, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for g in store.step_ids:
        rec = store.get(g)
        p = rec.soft_targets(k).double()
        acc, cnt = (clean, clean_n) if rec.mix is None else (mixed, mixed_n)
        acc.index_add_(0, rec.sample_idx, p)
        cnt.index_add_(0, rec.sample_idx, torch.ones(len(rec.sample_idx), dtype=torch.float64))
    out = torch.where(clean_n[:, None] > 0, clean / clean_n.clamp_min(1)[:, None],
                      mixed / mixed_n.clamp_min(1)[:, None])
    seen = (clean_n + mixed_n) > 0
    if not bool(seen.all()):
        missing = int((~seen).sum())
        raise LabelDistillError(f"{missing} images have no stored view in {store.path}; export the full store")
    return out.float()


def export_ddranking(run_dir: str | Path, mode: str, store_tag: str = "full", out: str | Path | None = None) -> Path:
    """Write ``images.pt``, ``labels.pt`` and ``meta.json`` for DD-Ranking.

    Args:
        run_dir: a run directory.
        mode: recover mode (``images/<mode>``).
        store_tag: which store under ``labels/<mode>/`` supplies the soft labels (``full``, ``x40`` …).
        out: output folder (default ``<run_dir>/export/ddranking/<mode>``).

    Returns:
        The output folder. Images are pixel values in [0, 1] (not normalised); ``meta.json`` gives the
        normalisation, class names and the source store.

    Raises:
        LabelDistillError / StoreError: missing images or store, or a store made for other images.
    """
    run_dir = Path(run_dir)
    store = LabelStore(run_dir / "labels" / mode / store_tag)
    norm = store.manifest["normalization"]
    data, meta = load_synthetic(run_dir / "images" / mode, tuple(norm["mean"]), tuple(norm["std"]))
    if store.manifest["image_fingerprint"] != meta["fingerprint"]:
        raise LabelDistillError(f"store {store.path} does not belong to {run_dir / 'images' / mode}")
    order = torch.argsort(data.labels, stable=True)  # class-major
    soft = image_soft_labels(store)
    dest = Path(out) if out else run_dir / "export" / "ddranking" / mode
    with atomic_dir(dest) as tmp:
        torch.save(data.float_images()[order].contiguous(), tmp / "images.pt")
        torch.save(soft[order].contiguous(), tmp / "labels.pt")
        atomic_write_json(tmp / "meta.json", {
            "format": "ddranking", "images": "float32 (N, C, H, W) in [0, 1], class-major",
            "labels": "float32 (N, K) soft labels (mean teacher probabilities over stored views)",
            "hard_labels": data.labels[order].tolist(), "classes": data.classes, "normalization": norm,
            "source_store": str(store.path), "ipc": meta["ipc"], "mode": mode,
        })
    return dest
