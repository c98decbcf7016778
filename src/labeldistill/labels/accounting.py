"""Storage accounting: where a label store's bytes go, next to the images and class statistics.

Also the LPLD-style estimate of the same store in the reference code's layout (spec §9): per entry
``2·C`` bytes of fp16 logits + 16 (crop as 4 float32) + 1 (flip flag) + 8 (int64 CutMix index, with CutMix);
per step 8 (λ as float64) + 16 (box as 4 int32) with CutMix; per-file serialisation overhead not included.
"""

from __future__ import annotations

from pathlib import Path

from ..data.synthetic import image_bytes
from ..io import human_bytes
from .store import MANIFEST, LabelStore

COMPONENT_ORDER = ("logits", "logits_index", "logits_scale", "sample_idx", "crop", "flip", "mix_index",
                   "mix_lambda", "mix_box", "step_index")


def reference_layout_estimate(manifest: dict) -> int:
    """Bytes the same kept steps would take in the reference (FKD/SRe2L/LPLD) layout, without file overhead."""
    entries, steps = manifest["num_entries"], manifest["num_steps"]
    c = manifest["num_classes"]
    cutmix = bool(manifest["cutmix"])
    per_entry = 2 * c + 16 + 1 + (8 if cutmix else 0)
    per_step = (8 + 16) if cutmix else 0
    return entries * per_entry + steps * per_step


def store_report(path: str | Path, images: str | Path | None = None, class_stats: str | Path | None = None) -> dict:
    """Bytes per component of a label store and of what ships with it.

    Args:
        path: label store directory.
        images: the image folder it labels; default: inferred from a run directory layout
            (``<run>/labels/<mode>/<tag>`` → ``<run>/images/<mode>``).
        class_stats: ``stats.safetensors``; default: ``<run>/class_stats/stats.safetensors`` if present.

    Returns:
        A dict with ``components`` (bytes per tensor component), ``metadata`` (manifest + safetensors
        headers), ``total_on_disk``, ``floor`` (sum of components), ``overhead_ratio`` (total ÷ floor),
        ``images_bytes`` and ``class_stats_bytes`` (None if not found), ``reference_layout_estimate``, and the
        store's steps, entries, epochs, batch size, logits format and pruning record.

    Raises:
        StoreError: not a label store.
    """
    store = LabelStore(path)
    m = store.manifest
    comps = {k: m["component_bytes"].get(k, 0) for k in COMPONENT_ORDER}
    floor = sum(comps.values())
    total = store.bytes_on_disk()
    p = Path(path).resolve()
    run = p.parent.parent.parent if p.parent.parent.name == "labels" else None
    if images is None and run is not None and (run / "images" / p.parent.name).is_dir():
        images = run / "images" / p.parent.name
    if class_stats is None and run is not None and (run / "class_stats" / "stats.safetensors").is_file():
        class_stats = run / "class_stats" / "stats.safetensors"
    return {
        "path": str(path),
        "steps": m["num_steps"],
        "entries": m["num_entries"],
        "epochs": m["epochs"],
        "batch_size": m["batch_size"],
        "logits_format": m.get("logits_format", "fp16"),
        "prune": m["prune"],
        "components": comps,
        "metadata": total - floor,
        "manifest": (Path(path) / MANIFEST).stat().st_size,
        "total_on_disk": total,
        "floor": floor,
        "overhead_ratio": total / floor if floor else None,
        "images_bytes": image_bytes(images) if images is not None else None,
        "class_stats_bytes": Path(class_stats).stat().st_size if class_stats is not None else None,
        "reference_layout_estimate": reference_layout_estimate(m),
    }


def format_report(r: dict) -> str:
    """Human-readable lines for :func:`store_report`'s dict."""
    lines = [f"label store {r['path']}: {r['steps']} steps, {r['entries']} entries "
             f"({r['epochs']} epochs × batch {r['batch_size']}), logits {r['logits_format']}, "
             f"prune {r['prune'].get('factor', 1):g}× {r['prune'].get('strategy')}"]
    for k, v in r["components"].items():
        if v:
            lines.append(f"  {k:<22}{v:>14,d} B  {human_bytes(v):>10}")
    lines.append(f"  {'metadata (headers+json)':<22}{r['metadata']:>14,d} B  {human_bytes(r['metadata']):>10}")
    lines.append(f"  {'total on disk':<22}{r['total_on_disk']:>14,d} B  {human_bytes(r['total_on_disk']):>10}"
                 f"   ({r['overhead_ratio']:.4f} × the floor of {r['floor']:,d} B)")
    if r["images_bytes"] is not None:
        lines.append(f"  {'images (files)':<22}{r['images_bytes']:>14,d} B  {human_bytes(r['images_bytes']):>10}"
                     f"   labels ÷ images = {r['total_on_disk'] / max(r['images_bytes'], 1):.2f}")
    if r["class_stats_bytes"] is not None:
        lines.append(f"  {'class statistics':<22}{r['class_stats_bytes']:>14,d} B")
    est = r["reference_layout_estimate"]
    lines.append(f"  reference-layout estimate (LPLD §9 formula, no file overhead): {est:,d} B ({human_bytes(est)})")
    return "\n".join(lines)
