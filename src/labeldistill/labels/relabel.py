"""Stage 4, relabel: FKD-style stored soft labels (Shen & Xing, ECCV 2022; SRe2L §3.3; spec §5).

For E epochs, the synthetic images are visited in a seeded random order in steps of B. Each image gets a
RandomResizedCrop box and a flip bit; each step optionally gets CutMix (one permutation, λ ~ Beta(α, α), one
box). The teacher's pre-softmax logits on the augmented (mixed) batch are stored in fp16 with the compact
parameters. Every step is a pure function of ``(seed, step id)``: the epoch's order comes from a generator
keyed by ``(seed, epoch)`` and the step's augmentation from one keyed by ``(seed, step id)``, so any subset of
steps can be generated alone (sharding, resuming, generating only the steps pruning will keep) and still match
a full run exactly.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Iterable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..augment import (
    Stream,
    sample_cutmix,
    sample_flips,
    sample_resized_crops,
    step_generator,
)
from ..config import Config, RelabelConfig
from ..data import ImageSet, resolve_augmentation
from ..data.synthetic import load_synthetic
from ..distributed import barrier, shard
from ..errors import ConfigError, StoreError
from ..io import MetricsLog
from ..layout import LabelVariant, RunLayout
from ..main_stages import RELABEL, relabel_ref
from ..models.checkpoint import load_teacher
from ..provenance import StageRef
from ..runner import run_unit
from ..resume import fault_point
from ..runtime import autocast, is_rank0, pick_device
from ..variants import label_variants
from .pool import kept_steps, recipe_mismatch
from .replay import build_batch
from .store import LabelStore, LabelStoreWriter, StepRecord


class StepPlan:
    """Deterministic description of every relabel step for ``num_images`` images.

    Args:
        num_images: N.
        batch_size: B.
        epochs: E.
        seed: relabel seed.
    """

    def __init__(self, num_images: int, batch_size: int, epochs: int, seed: int):
        self.n, self.b, self.epochs, self.seed = num_images, batch_size, epochs, seed
        self.steps_per_epoch = math.ceil(num_images / batch_size)
        self.total_steps = self.steps_per_epoch * epochs
        self._order_cache: dict[int, torch.Tensor] = {}

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The permutation of image indices visited in ``epoch``."""
        if epoch not in self._order_cache:
            if len(self._order_cache) > 4:
                self._order_cache.clear()
            self._order_cache[epoch] = torch.randperm(self.n, generator=step_generator(self.seed, Stream.RELABEL_ORDER, epoch))
        return self._order_cache[epoch]

    def sample_idx(self, step_id: int) -> torch.Tensor:
        """Image indices ``(B_g,)`` of global step ``step_id``."""
        e, j = divmod(step_id, self.steps_per_epoch)
        return self.epoch_order(e)[j * self.b:(j + 1) * self.b]


def sample_step(plan: StepPlan, step_id: int, relabel_cfg: RelabelConfig, hw: tuple[int, int],
                out_hw: tuple[int, int]) -> StepRecord:
    """Sample the augmentation of one step (logits left empty).

    Raises:
        ConfigError: ``relabel_cfg.flip`` or ``relabel_cfg.crop_scale`` unset (resolve them first:
            :func:`labeldistill.data.presets.resolve_augmentation`).
    """
    if relabel_cfg.flip is None or relabel_cfg.crop_scale is None:
        raise ConfigError("relabel.flip and relabel.crop_scale are unset: resolve them from the dataset first "
                          "(labeldistill.data.resolve_augmentation(cfg)) or set them")
    idx = plan.sample_idx(step_id)
    n = len(idx)
    g = step_generator(plan.seed, Stream.RELABEL_AUG, step_id)
    boxes = sample_resized_crops(g, n, hw[0], hw[1], tuple(relabel_cfg.crop_scale))
    flips = sample_flips(g, n) if relabel_cfg.flip else torch.zeros(n, dtype=torch.bool)
    mix = None
    if relabel_cfg.cutmix > 0 and float(torch.rand(1, generator=g)) < relabel_cfg.cutmix:
        mix = sample_cutmix(g, n, out_hw[0], out_hw[1], relabel_cfg.cutmix_alpha)
    return StepRecord(step_id, idx, boxes, flips, mix, torch.empty(0))


CHUNK_IMAGES, CHUNK_PIXELS = 1024, 1024 * 32 * 32


def chunk_images_for(hw: tuple[int, int]) -> int:
    """Images per relabel teacher forward: 1,024 up to 32 × 32 px, fewer above so that about as many pixels
    (1,024 · 32²) are in flight at any size (44 at 160 px, 20 at 224 px); at least 1 (a step always goes whole).

    Capped at 1,024 so that stores of small images batch (and round) exactly as before.
    """
    return max(1, min(CHUNK_IMAGES, CHUNK_PIXELS // (hw[0] * hw[1])))


@torch.no_grad()
def generate_steps(teacher: nn.Module, images: torch.Tensor, plan: StepPlan, step_ids: Iterable[int],
                   relabel_cfg: RelabelConfig, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
                   chunk_images: int | None = None, progress: bool = True, amp: str = "bf16") -> Iterable[StepRecord]:
    """Yield the records of ``step_ids`` (in the given order) with the teacher's fp16 logits.

    Steps are batched into one teacher forward of about ``chunk_images`` images (the teacher is in eval
    mode, so samples do not interact); ``None`` = :func:`chunk_images_for` the image size, at least one step.
    ``images``: uint8 ``(N, C, H, W)`` (or float in [0, 1]). ``amp``: the config's ``autocast`` (``bf16`` runs the
    teacher under bf16 autocast on CUDA; a no-op elsewhere).
    """
    hw = tuple(images.shape[2:])
    chunk_images = chunk_images or chunk_images_for(hw)
    ids = list(step_ids)
    bar = tqdm(total=len(ids), desc="relabel", unit="step", disable=not progress)
    i = 0
    while i < len(ids):
        recs, xs, count = [], [], 0
        while i < len(ids) and (count == 0 or count + plan.b <= chunk_images):
            r = sample_step(plan, ids[i], relabel_cfg, hw, hw)
            xs.append(build_batch(images, r, hw, mean, std))
            recs.append(r)
            count += len(r.sample_idx)
            i += 1
        x = torch.cat(xs).to(device).contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = teacher(x)
        logits = logits.float().to(torch.float16).cpu()
        off = 0
        for r in recs:
            n = len(r.sample_idx)
            r.logits = logits[off:off + n]
            off += n
            yield r
        bar.update(len(recs))
    bar.close()


def store_meta(data: ImageSet, info: dict, image_fp: str, relabel_cfg: RelabelConfig, seed: int,
               plan: StepPlan) -> dict:
    """Manifest fields shared by a full store and its pruned children."""
    return {
        "num_images": len(data),
        "image_hw": list(data.shape[1:]),
        "input_size": list(data.shape[1:]),
        "channels": data.shape[0],
        "num_classes": data.num_classes,
        "class_to_idx": data.class_to_idx,
        "image_fingerprint": image_fp,
        "teacher_fingerprint": info["fingerprint"],
        "normalization": {"mean": list(info["mean"]), "std": list(info["std"])},
        "augmentation": {"crop": "random_resized_crop", "crop_scale": list(relabel_cfg.crop_scale),
                         "crop_ratio": [3 / 4, 4 / 3], "flip": relabel_cfg.flip, "cutmix": relabel_cfg.cutmix,
                         "cutmix_alpha": relabel_cfg.cutmix_alpha, "interpolation": "bilinear"},
        "cutmix": relabel_cfg.cutmix > 0,
        "seed": seed,
        "batch_size": plan.b,
        "epochs": plan.epochs,
        "steps_per_epoch": plan.steps_per_epoch,
        "total_steps": plan.total_steps,
        "prune": {"factor": 1.0, "strategy": "none"},
    }


def relabel(cfg: Config, mode: str, force: bool = False) -> LabelStore:
    """Generate the label store of ``images/<mode>``.

    Normally writes the full store ``labels/<mode>/full``. With ``relabel.only_kept = f`` it generates only
    the steps that random pruning at factor ``f`` (same seed, pool ``prune.pool``) keeps and writes them straight
    to the pruned store ``labels/<mode>/x<f>``: the LPLD "generate only the prefix" route (spec §6.2). Under pool
    ``prefix`` that is exactly the first ``max(1, int((1 − r)·S))`` steps; under ``subset`` the same random
    subset that pruning the full store would keep.

    Raises:
        LabelDistillError: missing teacher or images; StoreError: an existing ``only_kept`` store made with
        another pool.
    """
    layout = RunLayout(cfg.run_path)
    relabel_cfg = resolve_augmentation(cfg).relabel
    variant = label_variants(cfg)[0] if relabel_cfg.only_kept is not None else None
    ref = relabel_ref(cfg, mode)
    out = RELABEL.marker(cfg, ref, layout).parent

    def reuse() -> None:
        diff = variant and recipe_mismatch(LabelStore(out).manifest["prune"], variant)
        if diff:
            raise StoreError(f"label store {out} was made with {diff}: rebuild it with --force")

    run_unit(RELABEL, cfg, ref, lambda: _relabel(cfg, mode, variant, layout, out), reuse=reuse, force=force,
             layout=layout)
    return LabelStore(out)


@RELABEL.runs
def _relabel_unit(cfg: Config, ref: StageRef, force: bool) -> LabelStore:
    return relabel(cfg, ref.mode, force=force)


def _relabel(cfg: Config, mode: str, variant: LabelVariant | None, layout: RunLayout, out: Path
             ) -> tuple[None, float]:
    """Generate the steps (only the kept ones with a ``variant``) shard by shard, resumable; returns
    ``(None, seconds)``."""
    relabel_cfg, only = cfg.relabel, cfg.relabel.only_kept
    device = pick_device(cfg.device, cfg.deterministic)
    teacher, info = load_teacher(layout.teacher_dir, device)
    data, img_meta = load_synthetic(layout.images_dir(mode), info["mean"], info["std"])
    plan = StepPlan(len(data), relabel_cfg.batch_size, relabel_cfg.epochs, cfg.seed)
    images = data.uint8_images()  # converted per step by build_batch: no float copy of the set
    meta = store_meta(data, info, img_meta["fingerprint"], relabel_cfg, cfg.seed, plan)
    meta["logits_format"] = relabel_cfg.logits
    steps = list(range(plan.total_steps))
    if variant is not None:
        steps = kept_steps(steps, variant, cfg.seed, plan.steps_per_epoch, plan.epochs)
        meta["prune"] = {"factor": float(only), "strategy": "random", "granularity": "batch", "pool": variant.pool,
                         "seed": cfg.seed, "source_steps": plan.total_steps, "kept_steps": len(steps),
                         "generated_only_kept": True}
    t0 = time.time()
    key = RELABEL.resume_key(cfg, relabel_ref(cfg, mode), meta, steps, info["fingerprint"])
    if is_rank0():
        writer = LabelStoreWriter(out, meta, relabel_cfg.steps_per_shard, overwrite=True, resume_key=key)
    barrier()
    if not is_rank0():
        writer = LabelStoreWriter(out, meta, relabel_cfg.steps_per_shard, overwrite=True, resume_key=key, prepare=False)
    shards = [steps[i:i + relabel_cfg.steps_per_shard] for i in range(0, len(steps), relabel_cfg.steps_per_shard)]
    todo = [i for i in shard(range(len(shards))) if not writer.shard_done(i)]
    bar = tqdm(total=sum(len(shards[i]) for i in todo), desc=f"relabel[{mode}]", unit="step", disable=not is_rank0())
    for i in todo:
        # One teacher pass per shard, so a resumed run batches (and rounds) exactly as an uninterrupted one.
        writer.write_shard(i, list(generate_steps(teacher, images, plan, shards[i], relabel_cfg, info["mean"],
                                                  info["std"], device, progress=False, amp=cfg.autocast)))
        bar.update(len(shards[i]))
        fault_point("relabel-shard")
    bar.close()
    barrier()
    if is_rank0():
        writer.close(num_shards=len(shards))
        MetricsLog(layout.metrics).log(stage="relabel", mode=mode, steps=len(steps),
                                       seconds=round(time.time() - t0, 2))
    return None, time.time() - t0
