"""Byte estimates of every artifact a run writes, before anything is written (the dry run's storage plan).

* **images**: ``C_in · H · W`` bytes of raw uint8 per image, and an upper bound of the PNG file recover writes.
* **labels**: per label store, this project's layout (:mod:`labeldistill.labels.store`), field by field, and
  the LPLD reference layout (:func:`labeldistill.labels.accounting.reference_layout_estimate`, spec §9).
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..labels.accounting import reference_layout_estimate
from ..labels.codecs import Codec
from ..labels.relabel import StepPlan
from ..labels.store import COMPONENTS


def step_size(plan: StepPlan, g: int) -> int:
    """Images in global step ``g`` (the last step of an epoch holds the remainder)."""
    if g % plan.steps_per_epoch == plan.steps_per_epoch - 1:
        return plan.n - (plan.steps_per_epoch - 1) * plan.b
    return plan.b


def int_bytes(limit: int) -> int:
    """Bytes of the narrowest store integer (uint8 / int16 / int32) holding values in ``[0, limit]``."""
    return 1 if limit <= 255 else 2 if limit <= 32767 else 4


def png_upper_bound(channels: int, height: int, width: int) -> int:
    """Upper bound in bytes of a PNG of one uint8 ``(C, H, W)`` image whose pixels do not compress.

    Raw ``C·H·W`` bytes + one filter byte per row; zlib framing (6 bytes) and block headers (5 bytes per
    4 KiB, more than zlib spends on incompressible data); IDAT chunk headers (12 bytes per 64 KiB chunk, as
    Pillow writes them); signature, IHDR and IEND (45 bytes).
    """
    raw = channels * height * width + height
    stream = raw + 6 + 5 * max(1, math.ceil(raw / 4096))
    return stream + 12 * max(1, math.ceil(stream / 65536)) + 45


def _safetensors_header(tensors: dict[str, tuple[str, list[int], int]]) -> int:
    """Bytes of a safetensors header (length prefix + JSON padded to 8) for ``name → (dtype, shape, nbytes)``."""
    off, entries = 0, {}
    for name, (dtype, shape, nbytes) in sorted(tensors.items()):
        entries[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + nbytes]}
        off += nbytes
    n = len(json.dumps(entries, separators=(",", ":")))
    return 8 + n + (-n) % 8


def estimate_store_bytes(step_ids: list[int], plan: StepPlan, num_classes: int, image_hw: tuple[int, int],
                         cutmix: bool, logits: str = "fp16", steps_per_shard: int | None = None,
                         class_names: list[str] | None = None, pruned: bool | None = None) -> dict[str, Any]:
    """Bytes a label store holding ``step_ids`` of ``plan`` takes in this project's layout.

    Args:
        step_ids: the stored global step ids.
        plan: the relabel plan (images, batch size, epochs) the steps belong to.
        num_classes: ``C``.
        image_hw: ``(H, W)`` of the images in pixels (crop and CutMix boxes are stored in these units).
        cutmix: whether the store has the CutMix tensors (``relabel.cutmix > 0``).
        logits: a logits format: ``fp16``, ``int8``, ``int4``, ``top<k>``, ``top<k>-int8``, ``top<k>-int4``
            (tensor layout of each: :meth:`labeldistill.labels.codecs.Codec.layout`).
        steps_per_shard: steps per shard (relabel's, which :func:`~labeldistill.labels.prune.prune_store` also
            uses for a pruned store); None = everything in one shard.
        class_names: names in ``class_to_idx`` (manifest size); default ``"class_<i>"``-like names.
        pruned: the manifest of a pruned store (its ``prune`` record is longer); default: ``steps_per_shard is
            None`` (the old convention, when pruned stores were written as one shard).

    Returns:
        ``{"entries", "steps", "shards", "components": {component: bytes}, "floor", "metadata", "total",
        "reference_layout"}``; ``floor`` is the sum of the components, ``metadata`` the estimated safetensors
        headers + manifest, ``total`` their sum (what ``bytes_on_disk`` would report, to within a few hundred
        bytes), ``reference_layout`` the LPLD reference-layout estimate of the same steps.

    Raises:
        ConfigError: unknown logits format.
    """
    codec = Codec.of(logits, num_classes)
    ids = sorted(step_ids)
    n = plan.n
    sps = len(ids) if steps_per_shard is None else steps_per_shard
    shards = [ids[i:i + sps] for i in range(0, len(ids), max(sps, 1))]
    ib_img, ib_box = int_bytes(n - 1), int_bytes(max(image_hw))
    comps = dict.fromkeys(("logits", "logits_index", "logits_scale", "sample_idx", "crop", "flip", "mix_index",
                           "mix_lambda", "mix_box", "step_index"), 0)
    header = 0
    shard_entries = []
    for sh in shards:
        m, k = sum(step_size(plan, g) for g in sh), len(sh)
        t = _estimated_shard_layout(plan, sh, m, codec, ib_img, ib_box, cutmix)
        for name, (_, _, nbytes) in t.items():
            comps[COMPONENTS[name]] += nbytes
        hb = _safetensors_header(t)
        header += hb
        shard_entries.append({"file": "shard_00000.safetensors", "num_steps": k, "num_entries": m,
                              "first_step": sh[0], "bytes": hb + sum(v[2] for v in t.values()), "sha256": "0" * 64})
    floor = sum(comps.values())
    names = class_names or [f"class_{i:04d}" for i in range(num_classes)]
    entries = sum(step_size(plan, g) for g in ids)
    manifest = _manifest_size(names, shard_entries, comps, n, image_hw, plan, entries, len(ids), logits,
                              steps_per_shard is None if pruned is None else pruned)
    return {
        "entries": entries, "steps": len(ids), "shards": len(shards), "components": comps, "floor": floor,
        "metadata": header + manifest, "total": floor + header + manifest,
        "reference_layout": reference_layout_estimate({"num_entries": entries, "num_steps": len(ids),
                                                       "num_classes": num_classes, "cutmix": cutmix}),
    }


def _estimated_shard_layout(plan: StepPlan, sh: list[int], m: int, codec: Codec, ib_img: int, ib_box: int,
                   cutmix: bool) -> dict[str, tuple[str, list[int], int]]:
    """``{name: (dtype, shape, bytes)}`` of one shard holding steps ``sh`` (``m`` entries in all)."""
    k = len(sh)
    t: dict[str, tuple[str, list[int], int]] = {
        "step_ids": ("I32", [k], 4 * k), "step_offsets": ("I32", [k + 1], 4 * (k + 1)),
        "sample_idx": (_dt(ib_img), [m], ib_img * m), "crop": (_dt(ib_box), [m, 4], 4 * ib_box * m),
        "flip": ("U8", [(m + 7) // 8], (m + 7) // 8),
    }
    t.update(codec.layout(m, k))
    if cutmix:
        ib_perm = int_bytes(max(step_size(plan, g) for g in sh) - 1)
        t["mix_perm"] = (_dt(ib_perm), [m], ib_perm * m)
        t["mix_lam"] = ("F16", [k], 2 * k)
        t["mix_box"] = (_dt(ib_box), [k, 4], 4 * ib_box * k)
    return t


def _dt(nbytes: int) -> str:
    return {1: "U8", 2: "I16", 4: "I32"}[nbytes]


def _manifest_size(names: list[str], shards: list[dict], comps: dict, n: int, hw: tuple[int, int], plan: StepPlan,
                   entries: int, steps: int, logits: str, pruned: bool) -> int:
    """Bytes of a manifest.json shaped like the one :class:`~labeldistill.labels.store.LabelStoreWriter` writes."""
    manifest = {
        "format": "labeldistill.label_store", "schema_version": 1, "num_images": n, "image_hw": list(hw),
        "input_size": list(hw), "channels": 3, "num_classes": len(names),
        "class_to_idx": {c: i for i, c in enumerate(names)}, "image_fingerprint": "0" * 16,
        "teacher_fingerprint": "0" * 16, "normalization": {"mean": [0.4567] * 3, "std": [0.2345] * 3},
        "augmentation": {"crop": "random_resized_crop", "crop_scale": [0.08, 1.0], "crop_ratio": [0.75, 4 / 3],
                         "flip": True, "cutmix": 0.0, "cutmix_alpha": 1.0, "interpolation": "bilinear"},
        "cutmix": False, "seed": 0, "batch_size": plan.b, "epochs": plan.epochs,
        "steps_per_epoch": plan.steps_per_epoch, "total_steps": plan.total_steps,
        "prune": ({"factor": 1.0, "strategy": "none"} if not pruned else
                  {"factor": 40.0, "strategy": "random", "granularity": "batch", "pool": "prefix", "seed": 0,
                   "source_steps": plan.total_steps, "kept_steps": steps}),
        "logits_format": logits, "num_steps": steps, "num_entries": entries,
        "component_bytes": {k: v for k, v in comps.items() if v}, "shards": shards,
    }
    return len((json.dumps(manifest, indent=2) + "\n").encode())
