"""Stage 2, class-stats: exact per-class and global BN-input statistics of the teacher (LPLD §3, spec §3).

One eval-mode pass over the augmented training set. For every BatchNorm2d layer ``l`` and class ``c`` we
accumulate, in float64, the sum and sum of squares of the layer's *input* over (N, H, W), and turn them into
the exact mean and biased variance. This is the "exact" mode the spec asks for; it avoids the reference
code's EMA (momentum 0.1) and its rank-0-only statistics. The teacher's own running statistics are saved
alongside as the SRe2L global targets.

File ``class_stats/stats.safetensors`` holds, per layer index ``l``:
``l{l}.class_mean`` / ``l{l}.class_var`` ``(C, ch)``, ``l{l}.global_mean`` / ``l{l}.global_var`` ``(ch,)``
(exact, over the pass), ``l{l}.running_mean`` / ``l{l}.running_var`` ``(ch,)`` (the teacher's buffers) and
``class_counts`` ``(C,)`` (images seen per class).

The augmentation is the squeeze one: padded random crop + flip, or RandomResizedCrop + flip when
``squeeze.crop_scale`` is set (LPLD's Tiny-ImageNet and ImageNet passes, spec §3). A lazy training set is
decoded by ``data.workers`` DataLoader processes; on CUDA the teacher runs under bf16 autocast and the hooks
accumulate its BN inputs in float32/float64.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .augment import (
    Stream,
    apply_crops_flips,
    sample_flips,
    sample_resized_crops,
    step_generator,
)
from .config import Config, check_squeeze_options
from .data import ImageSet, iter_batches, load_split, normalize
from .distributed import all_reduce_sum, barrier, shard
from .errors import LabelDistillError
from .io import MetricsLog, atomic_write_json, load_class_stats  # noqa: F401  (load_class_stats: old path)
from .layout import RunLayout
from .models import forward_hooks, require_bn_layers
from .models.checkpoint import load_teacher
from .provenance import StageRef, check_fresh, record_stage
from .runtime import autocast, is_rank0, pick_device


class _Accumulator:
    """Forward hook accumulating per-class channel sums of a BN layer's input."""

    def __init__(self, num_classes: int, channels: int):
        self.s = torch.zeros(num_classes, channels, dtype=torch.float64)
        self.sq = torch.zeros(num_classes, channels, dtype=torch.float64)
        self.count = torch.zeros(num_classes, dtype=torch.float64)  # elements per channel: n·H·W
        self.labels: torch.Tensor | None = None

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0].detach()
        if x.dtype in (torch.float16, torch.bfloat16):  # autocast: sum in float32, not in 8 mantissa bits
            x = x.float()
        y = self.labels.cpu()
        hw = x.shape[2] * x.shape[3]
        # Per-image sums over (H, W) in the input's precision (float32 at least), accumulated in float64.
        self.s.index_add_(0, y, x.sum((2, 3)).double().cpu())
        self.sq.index_add_(0, y, (x * x).sum((2, 3)).double().cpu())
        self.count.index_add_(0, y, torch.full((len(y),), float(hw), dtype=torch.float64))


def class_stats(cfg: Config, force: bool = False) -> Path:
    """Compute and save the class-wise BN statistics of the teacher.

    Returns:
        Path of ``stats.safetensors``.

    Raises:
        LabelDistillError: no teacher yet, the teacher has no BatchNorm2d layer, or the pass saw no data.
    """
    layout = RunLayout(cfg.run_path)
    out = layout.class_stats_dir / "stats.safetensors"
    ref = StageRef("class-stats")
    if out.is_file() and (layout.class_stats_dir / "class_stats.json").is_file() and not force:
        check_fresh(cfg, ref, layout)
        return out
    device = pick_device(cfg.device)
    teacher, info = load_teacher(layout.teacher_dir, device)
    bns = require_bn_layers(teacher, info["model"])
    check_squeeze_options(cfg.squeeze)
    train = load_split(cfg, "train")
    accs = [_Accumulator(train.num_classes, bn.num_features) for bn in bns]
    t0 = time.time()
    with forward_hooks(bns, accs):
        _accumulate(teacher, train, accs, cfg, info, device)
    for a in accs:  # exact statistics over all ranks' images
        for t in (a.s, a.sq, a.count):
            all_reduce_sum(t)
    tensors = _stats_tensors(bns, accs, train)
    if is_rank0():
        layout.class_stats_dir.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(".stats.safetensors.tmp")
        save_file(tensors, str(tmp))
        tmp.replace(out)
        atomic_write_json(layout.class_stats_dir / "class_stats.json", {
            "num_layers": len(bns), "num_classes": train.num_classes, "channels": [bn.num_features for bn in bns],
            "teacher_fingerprint": info["fingerprint"], "augment": cfg.class_stats.augment, "bytes": out.stat().st_size,
        })
        MetricsLog(layout.metrics).log(stage="class-stats", seconds=round(time.time() - t0, 2))
        record_stage(cfg, ref, time.time() - t0, layout)
    barrier()
    return out


@torch.no_grad()
def _accumulate(teacher: nn.Module, train: ImageSet, accs: list[_Accumulator], cfg: Config, info: dict,
                device: torch.device) -> None:
    """One eval-mode pass over this rank's share of the (augmented) training set, feeding the hooks."""
    pad, scale = cfg.squeeze.crop_padding, cfg.squeeze.crop_scale
    bs = cfg.class_stats.batch_size
    starts = shard(range(0, len(train), bs))
    batches = [slice(i, i + bs) for i in starts]
    stream = iter_batches(train, batches, cfg.data.workers, pin_memory=device.type == "cuda")
    for i, (images, y) in zip(tqdm(starts, desc="class-stats", disable=not is_rank0(), unit="batch"), stream):
        x = images.float().div_(255)
        if cfg.class_stats.augment:
            gen = step_generator(cfg.seed, Stream.CLASS_STATS, i)
            if scale is not None:
                x = resized_crop_flip(x, tuple(scale), cfg.squeeze.flip, gen)
            else:
                x = pad_crop_flip(x, pad, cfg.squeeze.flip, gen)
        for a in accs:
            a.labels = y
        x = normalize(x.to(device), info["mean"], info["std"]).contiguous(memory_format=torch.channels_last)
        with autocast(device):
            teacher(x)


def _stats_tensors(bns: list[nn.BatchNorm2d], accs: list[_Accumulator], train: ImageSet) -> dict[str, torch.Tensor]:
    """The file's tensors: exact class and global mean / biased variance per layer, running stats, counts.

    Raises:
        LabelDistillError: a layer whose statistics were never updated (the pass saw no data).
    """
    tensors: dict[str, torch.Tensor] = {}
    for li, (bn, a) in enumerate(zip(bns, accs)):
        n = a.count.clamp_min(1)[:, None]
        mean = a.s / n
        var = (a.sq / n - mean * mean).clamp_min(0)
        tot = a.count.sum()
        gmean = a.s.sum(0) / tot
        gvar = (a.sq.sum(0) / tot - gmean * gmean).clamp_min(0)
        tensors[f"l{li}.class_mean"] = mean.float()
        tensors[f"l{li}.class_var"] = var.float()
        tensors[f"l{li}.global_mean"] = gmean.float()
        tensors[f"l{li}.global_var"] = gvar.float()
        tensors[f"l{li}.running_mean"] = bn.running_mean.detach().cpu().float()
        tensors[f"l{li}.running_var"] = bn.running_var.detach().cpu().float()
    tensors["class_counts"] = torch.bincount(train.labels, minlength=train.num_classes).float()
    untouched = [li for li in range(len(bns)) if bool((tensors[f"l{li}.class_var"] == 0).all())]
    if untouched:
        raise LabelDistillError(f"class statistics of BN layer(s) {untouched} were never updated: the pass saw "
                                "no data (check data.train_subset)")
    return tensors


def pad_crop_flip(x: torch.Tensor, pad: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` pixels, then random horizontal flip, per image.

    Parameters come from ``gen`` (so each batch's augmentation is independent of which rank runs it);
    the crop is applied with kornia as an unscaled box on the padded image. ``x``: float ``(N, C, H, W)``.
    """
    n, _, h, w = x.shape
    if pad > 0:
        x = F.pad(x, (pad, pad, pad, pad))
        off = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
        boxes = torch.stack([off[:, 0], off[:, 1], torch.full((n,), w), torch.full((n,), h)], 1)
    else:
        boxes = torch.tensor([[0, 0, w, h]]).expand(n, 4)
    return apply_crops_flips(x, boxes, sample_flips(gen, n) if flip else None, (h, w))


def resized_crop_flip(x: torch.Tensor, scale: tuple[float, float], flip: bool, gen: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop (area ``scale``, aspect 3/4..4/3) back to the input size, then random flip, per image.

    Parameters come from ``gen``, as in :func:`pad_crop_flip`. ``x``: float ``(N, C, H, W)``.
    """
    n, _, h, w = x.shape
    boxes = sample_resized_crops(gen, n, h, w, scale)
    return apply_crops_flips(x, boxes, sample_flips(gen, n) if flip else None, (h, w))
