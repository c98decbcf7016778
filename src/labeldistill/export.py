"""Export a distilled set for other tools.

``ddranking``: DD-Ranking's tensor contract (Li et al. 2025, "DD-Ranking: Rethinking the Evaluation of Dataset
Distillation"; read from ddranking 0.2.0):

* ``images.pt``: float32 ``(N, C, H, W)``, class-major, **normalised** ``(x − mean) / std`` (``x`` the pixels in
  [0, 1]) with the run's dataset mean/std, as DD-Ranking's loaders normalise its real images
  (``utils/data.py``: ``ToTensor`` + ``Normalize``); DD-Ranking feeds ``image_tensor`` to the student as it is.
* ``labels.pt``: float32 ``(N, K)`` **teacher outputs (logits)**, one row per image. DD-Ranking softens them with
  ``softmax(· / T)`` in its losses (``loss/kl.py``, ``loss/sce.py``). ``labels: teacher`` (the default): the run's
  teacher (``teacher/model.safetensors``) on each un-augmented exported image, in float32, which is what
  DD-Ranking's ``_generate_soft_labels`` makes (``metrics/soft_label.py``: ``teacher_model(images)``).
  ``labels: store``: the mean of a label store's stored logits over each image's views that CutMix did not mix
  (over all its views when every one was mixed); full-logit stores only.
* ``meta.json``: the mean/std (``normalised: true``, ``normalization``), the class order (``classes`` by index, ``class_to_idx``, ``hard_labels`` per
  image), IPC, recover mode, how the labels were made, and the teacher (path, fingerprint, model, top-1).

``recover`` source ``tensor`` reads the folder back (:mod:`labeldistill.data.owned`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .data import normalize
from .data.synthetic import load_synthetic
from .errors import LabelDistillError
from .io import atomic_dir, atomic_write_json
from .labels.store import LabelStore
from .layout import RunLayout
from .models.checkpoint import load_teacher
from .runtime import pick_device

LABEL_KINDS = ("teacher", "store")


def teacher_logits(teacher: torch.nn.Module, x: torch.Tensor, device: torch.device, chunk: int = 256
                   ) -> torch.Tensor:
    """The teacher's float32 logits ``(N, K)`` on normalised images ``x`` ``(N, C, H, W)`` (no augmentation, no
    autocast), ``chunk`` images per forward."""
    with torch.no_grad():
        return torch.cat([teacher(x[i:i + chunk].to(device)).float().cpu() for i in range(0, len(x), chunk)])


def store_mean_logits(store: LabelStore) -> torch.Tensor:
    """Per-image mean of the stored logits float32 ``(N, K)``: over each image's views not mixed by CutMix, or
    over all its views when each was mixed.

    Raises:
        LabelDistillError: a top-k store (it keeps no full logits), or an image with no stored view (a pruned
        store; export the full one).
    """
    m = store.manifest
    n, k = m["num_images"], m["num_classes"]
    clean, clean_n = torch.zeros(n, k, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    mixed, mixed_n = torch.zeros(n, k, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for g in store.step_ids:
        rec = store.get(g)
        if rec.topk_indices is not None:
            raise LabelDistillError(f"{store.path} keeps only top-{rec.logits.shape[1]} logits: export labels from "
                                    "the teacher (--labels teacher) or from a full-logit store")
        acc, cnt = (clean, clean_n) if rec.mix is None else (mixed, mixed_n)
        acc.index_add_(0, rec.sample_idx, rec.logits.double())
        cnt.index_add_(0, rec.sample_idx, torch.ones(len(rec.sample_idx), dtype=torch.float64))
    out = torch.where(clean_n[:, None] > 0, clean / clean_n.clamp_min(1)[:, None],
                      mixed / mixed_n.clamp_min(1)[:, None])
    seen = (clean_n + mixed_n) > 0
    if not bool(seen.all()):
        missing = int((~seen).sum())
        raise LabelDistillError(f"{missing} images have no stored view in {store.path}; export the full store")
    return out.float()


def export_ddranking(run_dir: str | Path, mode: str, store_tag: str = "full", out: str | Path | None = None,
                     labels: str = "teacher", device: str = "auto") -> Path:
    """Write ``images.pt``, ``labels.pt`` and ``meta.json`` for DD-Ranking (see the module docstring).

    Args:
        run_dir: a run directory (with ``teacher/`` and ``images/<mode>/``).
        mode: recover mode (``images/<mode>``).
        store_tag: with ``labels="store"``: which store under ``labels/<mode>/`` (``full``, ``x40`` …).
        out: output folder (default ``<run_dir>/export/ddranking/<mode>``).
        labels: ``teacher`` (the teacher's logits on each exported image) or ``store`` (mean stored logits).
        device: where the teacher runs (``auto``: CUDA, then MPS, then CPU).

    Returns:
        The output folder.

    Raises:
        LabelDistillError: missing teacher or images, an unknown ``labels``, images made by another teacher;
        with ``labels="store"``: a missing store, one made for other images, a top-k store.
    """
    if labels not in LABEL_KINDS:
        raise LabelDistillError(f"unknown export labels '{labels}'; known: {', '.join(LABEL_KINDS)}")
    layout = RunLayout(Path(run_dir))
    dev = pick_device(device)
    teacher, info = load_teacher(layout.teacher_dir, dev)
    mean, std = tuple(info["mean"]), tuple(info["std"])
    data, meta = load_synthetic(layout.images_dir(mode), mean, std)
    if meta.get("teacher_fingerprint", info["fingerprint"]) != info["fingerprint"]:
        raise LabelDistillError(f"{layout.images_dir(mode)} was made with teacher {meta['teacher_fingerprint']}, "
                                f"not with {layout.teacher_dir} ({info['fingerprint']}): rerun recover")
    order = torch.argsort(data.labels, stable=True)  # class-major
    x = normalize(data.float_images()[order], mean, std).contiguous()
    how = {"labels_from": labels}
    if labels == "teacher":
        logits = teacher_logits(teacher, x, dev)
        how["labels"] = "float32 (N, K) teacher logits on each un-augmented image of images.pt (float32, no autocast)"
    else:
        store = LabelStore(layout.root / "labels" / mode / store_tag)
        if store.manifest["image_fingerprint"] != meta["fingerprint"]:
            raise LabelDistillError(f"store {store.path} does not belong to {layout.images_dir(mode)}")
        logits = store_mean_logits(store)[order]
        how.update(labels="float32 (N, K) mean stored teacher logits over each image's views not mixed by CutMix",
                   source_store=str(store.path))
    dest = Path(out) if out else layout.root / "export" / "ddranking" / mode
    with atomic_dir(dest) as tmp:
        torch.save(x, tmp / "images.pt")
        torch.save(logits.contiguous(), tmp / "labels.pt")
        atomic_write_json(tmp / "meta.json", {
            "format": "ddranking", "contract": "ddranking 0.2.0: images.pt is fed to the student as it is; "
            "labels.pt holds teacher outputs, softened with softmax(labels / T) in its losses",
            "images": "float32 (N, C, H, W), class-major, normalised: (x - mean) / std with x the pixels in [0, 1]",
            **how, "normalised": True, "normalization": {"mean": list(mean), "std": list(std)},
            "classes": list(data.classes), "class_to_idx": {c: i for i, c in enumerate(data.classes)},
            "hard_labels": data.labels[order].tolist(), "ipc": meta["ipc"], "mode": mode,
            "num_images": len(x), "num_classes": len(data.classes), "image_fingerprint": meta["fingerprint"],
            "teacher": {"path": str(layout.teacher_dir.resolve()), "fingerprint": info["fingerprint"],
                        "model": info["model"], "model_args": info.get("model_args", {}),
                        "top1": info.get("top1"), "dataset": info.get("dataset")},
        })
    return dest
