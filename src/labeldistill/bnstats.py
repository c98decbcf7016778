"""Stage 2, class-stats: per-class and global BN-input statistics of the teacher (LPLD §3, spec §3).

One eval-mode pass over the augmented training set. For every BatchNorm2d layer ``l`` and class ``c`` we
accumulate, in float64, the sum and sum of squares of the layer's *input* over (N, H, W). Two modes
(``class_stats.mode``):

* ``exact`` (default): the class statistics are the exact mean and biased variance over the whole pass (the
  spec's "exact" mode; batches in dataset order, which does not matter).
* ``ema``: the reference's ``ClassAwareBatchNorm2d`` (spec §3: ``recover/models/resnet_class.py:41-75``). The
  pass visits the images in a seeded random order (the reference's ``RandomSampler``; stream ``(seed,
  Stream.CLASS_STATS)``), and for each batch, for each class ``c`` present in it, ``buf_c ← 0.9·buf_c + 0.1·new``
  (BN's default momentum 0.1), with ``new`` the mean and the **biased** variance of the BN input over (N, H, W)
  of that class's sub-batch. Buffers start, as the reference's, at mean 0 and variance 1 (not at the first
  sub-batch's values), so a class present in ``K`` batches keeps ``0.9^K`` of the initial value. Computed as
  the equivalent weighted sum ``0.9^K·init + Σ_b 0.1·0.9^(batches after b holding c)·new_b``, whose terms
  each rank adds for its batches: summed over ranks it is exactly the single-process EMA over the global
  batch order (the reference keeps per-rank statistics and saves rank 0's).

The global statistics are exact in both modes, and the teacher's own running statistics are saved alongside as
the SRe2L global targets.

File ``class_stats/stats.safetensors`` holds, per layer index ``l``:
``l{l}.class_mean`` / ``l{l}.class_var`` ``(C, ch)``, ``l{l}.global_mean`` / ``l{l}.global_var`` ``(ch,)``
(exact, over the pass), ``l{l}.running_mean`` / ``l{l}.running_var`` ``(ch,)`` (the teacher's buffers) and
``class_counts`` ``(C,)`` (images seen per class). ``class_stats.json`` records the mode.

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
from .config import Config, check_squeeze
from .data import ImageSet, iter_batches, load_split, normalize, resolve_augmentation
from .distributed import all_reduce_sum, shard
from .errors import LabelDistillError
from .io import MetricsLog, atomic_write_json, read_json
from .layout import RunLayout
from .models import forward_hooks, require_bn_layers
from .models.checkpoint import load_teacher
from .main_stages import CLASS_STATS
from .provenance import StageRef
from .runner import run_unit
from .runtime import autocast, is_rank0, pick_device


class _Accumulator:
    """Forward hook accumulating per-class channel sums of a BN layer's input."""

    def __init__(self, num_classes: int, channels: int):
        self.s = torch.zeros(num_classes, channels, dtype=torch.float64)
        self.sq = torch.zeros(num_classes, channels, dtype=torch.float64)
        self.count = torch.zeros(num_classes, dtype=torch.float64)  # elements per channel: n·H·W
        self.labels: torch.Tensor | None = None
        # EMA mode: this batch's weight of each class's sub-batch statistics, and the weighted sums.
        self.weights: torch.Tensor | None = None
        self.ema_mean = torch.zeros(num_classes, channels, dtype=torch.float64)
        self.ema_var = torch.zeros(num_classes, channels, dtype=torch.float64)

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0].detach()
        if x.dtype in (torch.float16, torch.bfloat16):  # autocast: sum in float32, not in 8 mantissa bits
            x = x.float()
        y = self.labels.cpu()
        hw = x.shape[2] * x.shape[3]
        # Per-image sums over (H, W) in the input's precision (float32 at least), accumulated in float64.
        s, sq = x.sum((2, 3)).double().cpu(), (x * x).sum((2, 3)).double().cpu()
        self.s.index_add_(0, y, s)
        self.sq.index_add_(0, y, sq)
        self.count.index_add_(0, y, torch.full((len(y),), float(hw), dtype=torch.float64))
        if self.weights is not None:  # per-class sub-batch mean and biased variance, weighted into the EMA
            classes, inv = y.unique(return_inverse=True)
            n = torch.bincount(inv).double()[:, None] * hw
            mean = torch.zeros(len(classes), s.shape[1], dtype=torch.float64).index_add_(0, inv, s) / n
            msq = torch.zeros(len(classes), s.shape[1], dtype=torch.float64).index_add_(0, inv, sq) / n
            w = self.weights[classes][:, None]
            self.ema_mean.index_add_(0, classes, w * mean)
            self.ema_var.index_add_(0, classes, w * (msq - mean * mean).clamp_min(0))


def ema_weights(batch_labels: list[torch.Tensor], num_classes: int,
                momentum: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights that turn per-batch class statistics into the sequential EMA over ``batch_labels``' order.

    With ``K_c`` the batches holding class ``c`` and ``a_bc`` those after batch ``b`` that hold it, the EMA
    ``buf ← (1 − m)·buf + m·new`` from ``init`` ends at ``(1 − m)^K_c·init + Σ_b m·(1 − m)^a_bc·new_bc``.

    Returns:
        ``(weights (B, C), keep (C,))``: ``m·(1 − m)^a_bc`` (0 where ``c`` is absent from ``b``) and
        ``(1 − m)^K_c``, float64.
    """
    present = torch.zeros(len(batch_labels), num_classes, dtype=torch.float64)
    for b, y in enumerate(batch_labels):
        present[b, y.unique()] = 1.0
    after = present.flip(0).cumsum(0).flip(0) - present
    weights = momentum * (1 - momentum) ** after * present
    return weights, (1 - momentum) ** present.sum(0)


def class_stats(cfg: Config, force: bool = False) -> Path:
    """Compute and save the class-wise BN statistics of the teacher.

    Returns:
        Path of ``stats.safetensors``.

    Raises:
        LabelDistillError: no teacher yet, the teacher has no BatchNorm2d layer, the pass saw no data, or existing
        statistics of another ``class_stats.mode``.
    """
    resolve_augmentation(cfg)
    layout = RunLayout(cfg.run_path)
    out = layout.class_stats_dir / "stats.safetensors"

    def reuse() -> None:
        made = read_json(layout.class_stats_dir / "class_stats.json").get("mode", "exact")
        if not out.is_file() or made != cfg.class_stats.mode:
            raise LabelDistillError(f"{out} holds class_stats.mode '{made}' statistics, not "
                                    f"'{cfg.class_stats.mode}': rerun class-stats with --force")

    run_unit(CLASS_STATS, cfg, CLASS_STATS.ref(), lambda: _class_stats(cfg, layout, out), reuse=reuse, force=force,
             layout=layout)
    return out


@CLASS_STATS.runs
def _class_stats_unit(cfg: Config, ref: StageRef, force: bool) -> Path:
    return class_stats(cfg, force=force)


def _class_stats(cfg: Config, layout: RunLayout, out: Path) -> tuple[None, float]:
    """One pass over the train split; writes the statistics on rank 0; returns ``(None, seconds)``."""
    device = pick_device(cfg.device, cfg.deterministic)
    teacher, info = load_teacher(layout.teacher_dir, device)
    bns = require_bn_layers(teacher, info["model"])
    check_squeeze(cfg.squeeze)
    train = load_split(cfg, "train")
    accs = [_Accumulator(train.num_classes, bn.num_features) for bn in bns]
    t0 = time.time()
    with forward_hooks(bns, accs):
        keep = _accumulate(teacher, train, accs, cfg, info, device)
    for a in accs:  # exact statistics (and EMA terms) over all ranks' images
        for t in (a.s, a.sq, a.count, a.ema_mean, a.ema_var):
            all_reduce_sum(t)
    tensors = _stats_tensors(bns, accs, train, keep)
    if is_rank0():
        layout.class_stats_dir.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(".stats.safetensors.tmp")
        save_file(tensors, str(tmp))
        tmp.replace(out)
        atomic_write_json(layout.class_stats_dir / "class_stats.json", {
            "num_layers": len(bns), "num_classes": train.num_classes, "channels": [bn.num_features for bn in bns],
            "teacher_fingerprint": info["fingerprint"], "augment": cfg.class_stats.augment, "bytes": out.stat().st_size,
            "mode": cfg.class_stats.mode,
        })
        MetricsLog(layout.metrics).log(stage="class-stats", seconds=round(time.time() - t0, 2))
    return None, time.time() - t0


@torch.no_grad()
def _accumulate(teacher: nn.Module, train: ImageSet, accs: list[_Accumulator], cfg: Config, info: dict,
                device: torch.device) -> torch.Tensor | None:
    """One eval-mode pass over this rank's share of the (augmented) training set, feeding the hooks.

    Returns:
        EMA mode: ``(1 − m)^K_c`` per class (:func:`ema_weights`), the weight of the buffers' initial values;
        exact mode: ``None``.
    """
    pad, scale = cfg.squeeze.crop_padding, cfg.squeeze.crop_scale
    bs = cfg.class_stats.batch_size
    starts = shard(range(0, len(train), bs))
    batches: list = [slice(i, i + bs) for i in starts]
    weights = keep = None
    if cfg.class_stats.mode == "ema":  # the reference's shuffled pass; EMA weights from the global batch order
        order = torch.randperm(len(train), generator=step_generator(cfg.seed, Stream.CLASS_STATS))
        weights, keep = ema_weights([train.labels[order[i:i + bs]] for i in range(0, len(train), bs)],
                                    train.num_classes)
        batches = [order[i:i + bs] for i in starts]
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
            a.weights = None if weights is None else weights[i // bs]
        x = normalize(x.to(device), info["mean"], info["std"]).contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg.autocast):
            teacher(x)
    return keep


def _stats_tensors(bns: list[nn.BatchNorm2d], accs: list[_Accumulator], train: ImageSet,
                   keep: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The file's tensors: class (exact, or EMA when ``keep`` is given) and exact global mean / biased variance
    per layer, running stats, counts. ``keep``: the EMA's weight of the initial buffers (mean 0, variance 1).

    Raises:
        LabelDistillError: a layer whose statistics were never updated (the pass saw no data).
    """
    tensors: dict[str, torch.Tensor] = {}
    untouched = []
    for li, (bn, a) in enumerate(zip(bns, accs)):
        n = a.count.clamp_min(1)[:, None]
        mean = a.s / n
        var = (a.sq / n - mean * mean).clamp_min(0)
        tot = a.count.sum()
        gmean = a.s.sum(0) / tot
        gvar = (a.sq.sum(0) / tot - gmean * gmean).clamp_min(0)
        if bool((var == 0).all()):
            untouched.append(li)
        tensors[f"l{li}.class_mean"] = (mean if keep is None else a.ema_mean).float()
        tensors[f"l{li}.class_var"] = (var if keep is None else keep[:, None] + a.ema_var).float()
        tensors[f"l{li}.global_mean"] = gmean.float()
        tensors[f"l{li}.global_var"] = gvar.float()
        tensors[f"l{li}.running_mean"] = bn.running_mean.detach().cpu().float()
        tensors[f"l{li}.running_var"] = bn.running_var.detach().cpu().float()
    tensors["class_counts"] = torch.bincount(train.labels, minlength=train.num_classes).float()
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
