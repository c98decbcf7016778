"""Stage 3, recover: synthesise images by matching the teacher's BN statistics (SRe2L §3.2; LPLD §3).

Loss per batch (spec §4.1)::

    L = CE(teacher(aug(x)), y) + r_bn · Σ_l s_l · (‖μ_l(batch) − μ*_l‖₂ + ‖σ²_l(batch) − σ²*_l‖₂)

with μ_l, σ²_l the mean and biased variance of BN layer ``l``'s input over (N, H, W), plain (not squared)
L2 norms and ``s_1 = first_bn_multiplier``. Modes (spec §4.2):

* batching ``cross_class`` — each batch holds one image of every class (loop over IPC slots), as SRe2L;
  ``class_wise`` — each batch holds images of one class only (LPLD's re-batching, "+C").
* BN targets ``global`` — the teacher's running statistics, as SRe2L; ``class`` — that class's statistics
  from ``class-stats`` (LPLD's class-wise supervision, "+CS"; needs class-wise batching).
* crop schedule ``fixed`` or ``cda`` — CDA's curriculum (Yin & Shen, TMLR 2024): the RandomResizedCrop lower
  scale bound is cosine-annealed from the upper bound down to the lower one, easy (large) crops first.

Built-in modes (:data:`~labeldistill.variants.BUILTIN_MODES`): ``sre2l`` = cross_class + global; ``c`` =
class_wise + global; ``cs`` (alias ``lpld``) = class_wise + class; ``cda`` = cross_class + global + cda schedule.
Two real-image sources go through the same relabel/prune/validate path as baselines: ``random_real`` (IPC random
training images per class, after DD-Ranking's fairness idea) and ``rded`` (RDED, Sun et al. CVPR 2024: random crops
of real images scored by the teacher, the most confident kept and stitched ``factor × factor`` into one image).

Images start as N(0, 1) in normalised space; Adam (0.5, 0.9); cosine lr to 0; per-iteration random resized
crop + flip + roll jitter; clipped to the valid pixel range after each step; the last iterate is saved as
lossless PNG with an explicit ``class_to_idx.json``.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .augment import (
    apply_crops_flips,
    mode_stream,
    random_roll,
    sample_flips,
    sample_resized_crops,
    step_generator,
)
from .config import Config, config_to_dict
from .data import ImageSet, denormalize, load_split, normalize, resolve_augmentation
from .data.imagefolder import load_imagefolder, notice
from .data.owned import SORTED_ORDER, copy_own_files, list_source, load_own_set, source_fingerprint, write_source_mapping
from .data.synthetic import (  # noqa: F401
    IMAGE_LOGITS,
    image_bytes,
    image_fingerprint,
    load_synthetic,
    save_image_logits,
    save_imagefolder,
)
from .distributed import barrier, shard
from .errors import DataError, LabelDistillError
from .io import (
    MetricsLog,
    atomic_dir,
    atomic_write_json,
    load_class_stats,
    read_json,
    settings_key,
)
from .layout import RunLayout
from .models import forward_hooks, require_bn_layers
from .models.checkpoint import CHANCE_FACTOR, load_teacher, near_chance
from .main_stages import RECOVER
from .provenance import StageRef, numerics_settings
from .runner import run_unit
from .resume import fault_point
from .runtime import autocast, is_rank0, pick_device
from .training import cosine_lr
from .variants import OWN_SOURCES, RecoverMode, plan_batches, resolve_mode


def min_crop_scale(schedule: str, t: int, iterations: int, low: float, high: float, milestone: float) -> float:
    """RandomResizedCrop lower scale bound at iteration ``t``.

    ``fixed``: ``low``. ``cda``: ``low + ½(high − low)(1 + cos(π t / (milestone · iterations)))`` until the
    milestone, ``low`` after it (CDA's easy-to-hard curriculum, spec §4.4).
    """
    if schedule != "cda":
        return low
    span = milestone * iterations
    if t >= span:
        return low
    return low + 0.5 * (high - low) * (1.0 + math.cos(math.pi * t / span))


class BNInputHook:
    """Forward hook keeping a BN layer's input, to take its statistics over (N, H, W) per segment of rows."""

    def __init__(self) -> None:
        self.x: torch.Tensor | None = None

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.x = inputs[0]

    def stats(self, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and biased variance per channel of rows ``a:b`` of the last input."""
        seg = self.x[a:b]
        return seg.mean(dim=(0, 2, 3)), seg.var(dim=(0, 2, 3), unbiased=False)


def bn_targets(targets: str, stats: dict[str, torch.Tensor], num_layers: int, cls: int | None,
               device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(μ*, σ²*) per BN layer: the teacher's running stats (``global``) or class ``cls``'s (``class``)."""
    out = []
    for li in range(num_layers):
        if targets == "class":
            m, v = stats[f"l{li}.class_mean"][cls], stats[f"l{li}.class_var"][cls]
        else:
            m, v = stats[f"l{li}.running_mean"], stats[f"l{li}.running_var"]
        out.append((m.to(device), v.to(device)))
    return out


def segment_stats(x: torch.Tensor, seg_id: torch.Tensor, num_segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance over (N, H, W) of each segment's rows of ``x`` ``(N, C, H, W)``.

    One scatter-add per moment instead of one slice per segment: the backward of S slices materialises S
    full-size gradients, which made many-segment (vectorised) recover quadratic in the number of segments.

    Returns:
        ``(S, C)`` means and ``(S, C)`` variances.
    """
    counts = torch.bincount(seg_id, minlength=num_segments).to(x.dtype)[:, None] * (x.shape[2] * x.shape[3])
    zeros = x.new_zeros((num_segments, x.shape[1]))
    mean = zeros.index_add(0, seg_id, x.sum((2, 3))) / counts
    d = x - mean[seg_id][:, :, None, None]
    return mean, zeros.index_add(0, seg_id, (d * d).sum((2, 3))) / counts


def segment_losses(logits: torch.Tensor, labels: torch.Tensor, hooks: list["BNInputHook"],
                   targets: list[tuple[torch.Tensor, torch.Tensor]], seg_id: torch.Tensor,
                   first_bn_multiplier: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per segment: cross-entropy (mean over its rows) and the BN-matching term (spec §4.1).

    ``bn_s = Σ_l s_l (‖μ_l(s) − μ*_l(s)‖₂ + ‖σ²_l(s) − σ²*_l(s)‖₂)`` with ``s_1 = first_bn_multiplier``.

    Args:
        logits: ``(N, K)`` teacher logits of every row; labels: ``(N,)``.
        hooks: one per BN layer, holding that layer's last input.
        targets: per BN layer, ``(S, C)`` target means and ``(S, C)`` target variances.
        seg_id: ``(N,)`` segment of every row (rows of a segment are contiguous).

    Returns:
        ``(S,)`` cross-entropy and ``(S,)`` BN terms.
    """
    num = len(targets[0][0]) if targets else int(seg_id.max()) + 1
    counts = torch.bincount(seg_id, minlength=num).to(logits.dtype)
    ce = logits.new_zeros(num).index_add(0, seg_id, F.cross_entropy(logits, labels, reduction="none")) / counts
    bn = logits.new_zeros(num)
    for li, (hk, (tm, tv)) in enumerate(zip(hooks, targets)):
        m_, v_ = segment_stats(hk.x.float(), seg_id, num)  # bf16 under autocast: statistics in float32
        scale = first_bn_multiplier if li == 0 else 1.0
        bn = bn + scale * (torch.linalg.vector_norm(m_ - tm, dim=1) + torch.linalg.vector_norm(v_ - tv, dim=1))
    return ce, bn


@dataclass
class Segment:
    """One optimisation batch inside a (possibly vectorised) recover step.

    Attributes:
        labels: int64 ``(n,)`` classes of the images.
        targets: (μ*, σ²*) per BN layer.
        gen: the batch's own generator (initial noise, crops, flips, jitter).
        init: float ``(n, C, H, W)`` start images in [0, 1] for ``init: real``, else None.
    """

    labels: torch.Tensor
    targets: list[tuple[torch.Tensor, torch.Tensor]]
    gen: torch.Generator
    init: torch.Tensor | None = None


def _segment_views(segments: list[Segment], xs: list[torch.Tensor], recover_cfg, low: float, h: int,
                   w: int) -> list[torch.Tensor]:
    """Each segment's augmented view (crop, flip, jitter roll), drawn from the segment's own generator."""
    views = []
    for seg, x in zip(segments, xs):
        n = len(seg.labels)
        k = n if recover_cfg.crops == "per_image" else 1
        box = sample_resized_crops(seg.gen, k, h, w, (low, recover_cfg.crop_scale[1])).expand(n, 4)
        flip = sample_flips(seg.gen, k).expand(n) if recover_cfg.flip else None
        views.append(random_roll(seg.gen, apply_crops_flips(x, box, flip, (h, w)), recover_cfg.jitter))
    return views


def recover_segments(teacher: nn.Module, hooks: list[BNInputHook], segments: list[Segment],
                     shape: tuple[int, int, int], mean: tuple[float, ...], std: tuple[float, ...], cfg: Config,
                     device: torch.device, crop_schedule: str = "fixed") -> tuple[list[torch.Tensor], list[dict]]:
    """Optimise several independent batches together (one teacher forward per iteration).

    The teacher is in eval mode, so rows do not interact in the forward pass: each segment's loss
    ``CE + r_bn · BN`` uses only its own rows (BN statistics are taken over the segment), the total loss is
    the sum over segments, and Adam is element-wise, so every segment follows the same trajectory as when
    optimised alone (up to floating-point summation order). Each segment draws its noise and augmentation
    from its own generator in the same order as a lone batch would.

    Returns:
        Per segment: images ``(n, C, H, W)`` in [0, 1] (the last iterate), and the final loss terms.

    Raises:
        LabelDistillError: a segment's loss became NaN or infinite (names its classes).
    """
    recover_cfg = cfg.recover
    c, h, w = shape
    xs = []
    for seg in segments:
        n = len(seg.labels)
        x0 = torch.randn((n, c, h, w), generator=seg.gen) if seg.init is None else normalize(seg.init.float(), mean, std)
        xs.append(x0.to(device).requires_grad_(True))
    lo_px = torch.tensor([(0 - m) / s for m, s in zip(mean, std)], device=device).view(1, -1, 1, 1)
    hi_px = torch.tensor([(1 - m) / s for m, s in zip(mean, std)], device=device).view(1, -1, 1, 1)
    opt = torch.optim.Adam(xs, lr=recover_cfg.lr, betas=(0.5, 0.9), eps=1e-8)
    labels = torch.cat([seg.labels for seg in segments]).to(device)
    sizes = torch.tensor([len(seg.labels) for seg in segments], device=device)
    seg_id = torch.repeat_interleave(torch.arange(len(segments), device=device), sizes)
    targets = [(torch.stack([seg.targets[li][0] for seg in segments]), torch.stack([seg.targets[li][1] for seg in segments]))
               for li in range(len(hooks))]
    terms = [{"ce": 0.0, "bn": 0.0} for _ in segments]
    for t in range(recover_cfg.iterations):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(recover_cfg.lr, t, recover_cfg.iterations)
        low = min_crop_scale(crop_schedule, t, recover_cfg.iterations, recover_cfg.crop_scale[0],
                             recover_cfg.crop_scale[1], recover_cfg.cda_milestone)
        views = _segment_views(segments, xs, recover_cfg, low, h, w)
        with autocast(device, cfg.autocast):
            logits = teacher(torch.cat(views).contiguous(memory_format=torch.channels_last))
        logits = logits.float()
        ce, bn = segment_losses(logits, labels, hooks, targets, seg_id, recover_cfg.first_bn_multiplier)
        losses = ce + recover_cfg.r_bn * bn
        if not bool(torch.isfinite(losses).all()):
            bad = int((~torch.isfinite(losses)).nonzero()[0])
            raise LabelDistillError(f"recover loss became {losses[bad].item()} at iteration {t} for classes "
                                    f"{sorted(set(segments[bad].labels.tolist()))}; lower recover.lr or recover.r_bn")
        total = losses.sum()
        if t == recover_cfg.iterations - 1:
            terms = [{"ce": c_, "bn": b_} for c_, b_ in zip(ce.tolist(), bn.tolist())]
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        with torch.no_grad():
            for x in xs:
                x.copy_(torch.maximum(torch.minimum(x, hi_px), lo_px))
    return [denormalize(x.detach(), mean, std).clamp(0, 1).cpu() for x in xs], terms


def recover_batch(teacher: nn.Module, hooks: list[BNInputHook], targets: list[tuple[torch.Tensor, torch.Tensor]],
                  labels: torch.Tensor, shape: tuple[int, int, int], mean: tuple[float, ...],
                  std: tuple[float, ...], cfg: Config, gen: torch.Generator, device: torch.device,
                  crop_schedule: str = "fixed", init: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Optimise one batch of images (:func:`recover_segments` with a single segment).

    Returns:
        Images ``(n, C, H, W)`` as float in [0, 1] (the last iterate) and the final loss terms.
    """
    imgs, terms = recover_segments(teacher, hooks, [Segment(labels, targets, gen, init)], shape, mean, std, cfg,
                                   device, crop_schedule)
    return imgs[0], terms[0]


def pick_real(data: ImageSet, ipc: int, gen: torch.Generator) -> torch.Tensor:
    """Indices of ``ipc`` random images of every class, class-major ``(C · ipc,)``.

    Raises:
        DataError: a class has fewer than ``ipc`` images.
    """
    out = []
    for c in range(data.num_classes):
        idx = torch.nonzero(data.labels == c).flatten()
        if len(idx) < ipc:
            raise DataError(f"recover.ipc={ipc} but class '{data.classes[c]}' has only {len(idx)} real "
                            "training images; lower recover.ipc")
        out.append(idx[torch.randperm(len(idx), generator=gen)[:ipc]])
    return torch.cat(out)


@torch.no_grad()
def rded_images(teacher: nn.Module, data: ImageSet, info: dict, cfg: Config, gen: torch.Generator,
                device: torch.device) -> torch.Tensor:
    """RDED (Sun et al., CVPR 2024, §3): realistic and diverse images from real crops, no optimisation.

    For each class, ``ipc · f² · candidates`` random resized crops of random real images of the class are
    scored by the teacher's log-probability of the class; the ``ipc · f²`` best are downsampled by ``f`` and
    stitched ``f × f`` into ``ipc`` images.

    Returns:
        float ``(C · ipc, C_in, H, W)`` in [0, 1], class-major.
    """
    recover_cfg = cfg.recover
    f = recover_cfg.rded_factor
    _, h, w = data.shape
    ph, pw = max(h // f, 1), max(w // f, 1)
    per_image = f * f
    out = []
    for c in range(data.num_classes):
        idx = torch.nonzero(data.labels == c).flatten()
        if len(idx) == 0:
            raise DataError(f"class '{data.classes[c]}' has no real training images for RDED")
        m = recover_cfg.ipc * per_image * recover_cfg.rded_candidates
        pick = idx[torch.randint(len(idx), (m,), generator=gen)]
        boxes = sample_resized_crops(gen, m, h, w, tuple(recover_cfg.crop_scale))
        crops = apply_crops_flips(data.images[pick].float() / 255, boxes, None, (h, w))
        with autocast(device, cfg.autocast):
            logp = torch.cat([
                F.log_softmax(teacher(normalize(crops[i:i + 512], info["mean"], info["std"]).to(device)
                                      .contiguous(memory_format=torch.channels_last)).float(), 1)[:, c].cpu()
                for i in range(0, m, 512)])
        best = crops[logp.argsort(descending=True)[:recover_cfg.ipc * per_image]]
        patches = F.interpolate(best, size=(ph, pw), mode="bilinear", antialias=True, align_corners=False)
        ipc = recover_cfg.ipc
        patches = patches.view(ipc, f, f, -1, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(ipc, -1, f * ph, f * pw)
        if (f * ph, f * pw) != (h, w):
            patches = F.interpolate(patches, size=(h, w), mode="bilinear", align_corners=False)
        out.append(patches.clamp(0, 1))
    return torch.cat(out)


def recover(cfg: Config, mode: str, force: bool = False) -> Path:
    """Produce ``recover.ipc`` images per class with the given mode into ``images/<mode>/``.

    Returns:
        The image folder (PNG ImageFolder + ``class_to_idx.json`` + ``images.json``).

    Raises:
        ConfigError: unknown mode; LabelDistillError: missing teacher or class statistics, a teacher without
        BatchNorm2d layers (synthesis), non-finite loss; DataError: too few real images for ``random_real`` /
        ``init: real``; DataError: a ``folder`` / ``tensor`` set that does not fit the teacher or on which the
        teacher is at chance (:func:`own_images`).
    """
    resolve_augmentation(cfg)
    layout = RunLayout(cfg.run_path)
    out = layout.images_dir(mode)
    run_unit(RECOVER, cfg, RECOVER.ref(mode), lambda: _recover(cfg, mode, layout, out), force=force, layout=layout)
    return out


@RECOVER.runs
def _recover_unit(cfg: Config, ref: StageRef, force: bool) -> Path:
    return recover(cfg, ref.mode, force=force)


def _recover(cfg: Config, mode: str, layout: RunLayout, out: Path) -> tuple[None, float]:
    """Make the images of ``mode`` and write the set on rank 0; returns ``(None, seconds)``."""
    recover_cfg = cfg.recover
    switches = resolve_mode(mode, recover_cfg.variants)
    device = pick_device(cfg.device, cfg.deterministic)
    teacher, info = load_teacher(layout.teacher_dir, device)
    gen = step_generator(cfg.seed, mode_stream(mode))
    t0 = time.time()
    needs_real = switches.source in ("random_real", "rded") or (switches.source == "synthesis"
                                                                and recover_cfg.init == "real")
    train = load_split(cfg, "train") if needs_real else None
    extra: dict = {}
    ipc, logits = recover_cfg.ipc, None
    if switches.source in OWN_SOURCES:
        images, extra, logits = own_images(mode, switches, teacher, info, device, cfg.autocast)
        ipc = extra["ipc"]
    elif switches.source == "random_real":
        sel = pick_real(train, recover_cfg.ipc, gen)
        images = train.images[sel].float() / 255
        extra["real_indices"] = sel.tolist()
    elif switches.source == "rded":
        images = rded_images(teacher, train, info, cfg, gen, device)
    else:
        real = recover_cfg.init == "real"
        init = train.images[pick_real(train, recover_cfg.ipc, gen)].float() / 255 if real else None
        images = synthesise(cfg, mode, switches, teacher, info, layout, init, device)
        extra.update(variant=switches.as_dict(), init=recover_cfg.init, iterations=recover_cfg.iterations,
                     crops=recover_cfg.crops)
    if is_rank0():
        _write_image_set(out, mode, switches, images, teacher, info, ipc, extra, device, cfg.autocast, logits=logits)
        MetricsLog(layout.metrics).log(stage="recover", mode=mode, seconds=round(time.time() - t0, 2))
    return None, time.time() - t0


def own_images(mode: str, switches: RecoverMode, teacher: nn.Module, info: dict, device: torch.device, amp: str
               ) -> tuple[torch.Tensor, dict, torch.Tensor | None]:
    """A ``folder`` / ``tensor`` set made elsewhere, checked against the teacher (:mod:`labeldistill.data.owned`).

    Float pixels off the 1/255 grid are rounded to uint8 (the image set is a PNG folder); the teacher's top-1 on
    the float pixels is then recorded beside the rounded ones' (``quantised.teacher_top1_before``) and one
    ``warning:`` line on stderr gives the largest rounding error. A folder set's class order (sorted folder names
    when it has no ``class_to_idx.json``), its converted files (another Pillow mode than the teacher's channels)
    and a resize each get one line on stderr.

    Returns:
        float images ``(C · IPC, C_in, H, W)`` in [0, 1] (exact uint8 values), class-major; the entries of
        ``images.json`` that describe the source (``path``, ``source_fingerprint``, ``ipc``, ``layout``,
        ``encoding``, ...); the set's per-image soft labels float32 ``(C · IPC, K)`` (logits) or None.

    Raises:
        DataError: the set does not fit the teacher, or the teacher's top-1 on it is at most
        :data:`CHANCE_FACTOR` × chance: the class mapping is most likely wrong.
    """
    path = switches.path
    own = load_own_set(switches.source, path, tuple(info["shape"]), info["classes"], switches.as_dict().get("mean"),
                       switches.as_dict().get("std"))
    u8, labels, notes = own.images, own.labels, own.notes
    top1 = teacher_top1(teacher, u8, labels, info, device, amp)
    c = info["num_classes"]
    if near_chance(top1, c):
        how = ("the class index is the folder number new{c:03d}: check that new000 holds the teacher's class 0 "
               f"('{info['classes'][0]}')" if notes["layout"] == "sre2l" else
               "the class index is the folder number {c:05d}: check that 00000 holds the teacher's class 0" if
               notes["layout"] == "rded" else
               f"the class order came from {notes.get('class_order')}: check it against the teacher's class order in "
               "teacher/teacher.json (a class_to_idx.json in the set fixes it)" if notes["layout"] == "imagefolder"
               else "check that labels.pt uses the teacher's class indices")
        raise DataError(f"recover[{mode}]: the teacher's top-1 on {path} is {100 * top1:.1f} % (chance "
                        f"{100 / c:.1f} %, refused at <= {100 * CHANCE_FACTOR / c:.1f} %): the set's class mapping "
                        f"is most likely not the teacher's (shifted class order or folder numbering); {how}")
    if own.float_images is not None:
        before = teacher_top1(teacher, own.float_images, labels, info, device, amp)
        notes["quantised"]["teacher_top1_before"] = before
        if is_rank0():
            print(f"warning: recover[{mode}]: {path} holds float pixels off the 1/255 grid; rounded to uint8 for the "
                  f"PNG set (largest error {notes['quantised']['max_error_grey_levels']:g} grey levels; teacher top-1 "
                  f"{100 * before:.1f} % before, {100 * top1:.1f} % after)", file=sys.stderr)
    extra = {"path": str(Path(path).expanduser().resolve()),
             "source_fingerprint": source_fingerprint(switches.source, path), **notes}
    if is_rank0():
        for line in _own_notices(mode, path, notes):
            notice(line)
    return u8.float() / 255, extra, own.logits


def _own_notices(mode: str, path: str, notes: dict) -> list[str]:
    """The lines recover prints about a set made elsewhere: sorted class order, converted files, a resize."""
    lines = []
    if notes.get("class_order") == SORTED_ORDER:
        lines.append(f"recover[{mode}]: {path} has no class_to_idx.json: class index = {SORTED_ORDER}; the mapping "
                     f"used is written to images/{mode}/source_class_to_idx.json")
    if notes.get("conversion"):
        lines.append(f"recover[{mode}]: {notes['conversion']}")
    if notes.get("resized") and "source_file_bytes" in notes:
        r = notes["resized"]
        lines.append(f"recover[{mode}]: images resized from {', '.join(f'{a}x{b}' for a, b in r['from'])} to "
                     f"{r['to'][0]}x{r['to'][1]} and written as PNG: the run's image bytes are those PNG files, not "
                     f"the {notes['source_file_bytes']:,} B of the source files")
    return lines


def teacher_top1(teacher: nn.Module, u8: torch.Tensor, labels: torch.Tensor, info: dict, device: torch.device,
                 amp: str = "bf16", chunk: int = 256) -> float:
    """The teacher's top-1 (fraction) on uint8 images ``(N, C, H, W)`` (or float ones in [0, 1]), ``chunk``
    images per forward (so the activations of one forward, not of the whole set, are in memory)."""
    preds = []
    scale = 255 if u8.dtype == torch.uint8 else 1
    with torch.no_grad(), autocast(device, amp):
        for i in range(0, len(u8), chunk):
            x = normalize(u8[i:i + chunk].float() / scale, info["mean"], info["std"]).to(device)
            preds.append(teacher(x.contiguous(memory_format=torch.channels_last)).argmax(1).cpu())
    return float((torch.cat(preds) == labels).float().mean())


def synthesise(cfg: Config, mode: str, switches: RecoverMode, teacher: nn.Module, info: dict, layout: RunLayout,
               init: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """BN-statistics synthesis of every image of a mode, batch group by batch group, resumable.

    Finished groups are kept in ``images/.<mode>.partial/`` under a settings key, so a killed run resumes
    where it stopped; under torchrun the groups are split across ranks.

    Args:
        init: float ``(C · IPC, C_in, H, W)`` start images in [0, 1] (``init: real``), or None for noise.

    Returns:
        float ``(C · IPC, C_in, H, W)`` images in [0, 1], class-major.

    Raises:
        LabelDistillError: missing class statistics, no BatchNorm2d layer, a non-finite loss, or groups missing
        after every rank finished.
    """
    recover_cfg = cfg.recover
    stats, _ = load_class_stats(layout.class_stats_dir)
    bns = require_bn_layers(teacher, info["model"])
    batches = plan_batches(switches.batching, info["num_classes"], recover_cfg.ipc, recover_cfg.batch_size)
    groups = [batches[i:i + recover_cfg.vectorize] for i in range(0, len(batches), recover_cfg.vectorize)]
    out = layout.images_dir(mode)
    partial = out.with_name(f".{out.name}.partial")
    key = settings_key("recover", mode, switches.as_dict(), config_to_dict(recover_cfg), info["fingerprint"],
                       cfg.seed, config_to_dict(cfg.data) if recover_cfg.init == "real" else None,
                       *numerics_settings(cfg).values())
    done = _load_partial(partial, key)
    barrier()
    todo = [gi for gi in shard(range(len(groups))) if gi not in done]
    log = MetricsLog(layout.metrics)
    hooks = [BNInputHook() for _ in bns]
    with forward_hooks(bns, hooks):
        for gi in tqdm(todo, desc=f"recover[{mode}]", disable=not is_rank0(), unit="group"):
            segs = [_make_segment(cfg, mode, switches, batch, stats, len(bns), init, device) for batch in groups[gi]]
            imgs, terms = recover_segments(teacher, hooks, segs, tuple(info["shape"]), info["mean"], info["std"],
                                           cfg, device, switches.crop_schedule)
            slots = torch.tensor([cls * recover_cfg.ipc + k for batch in groups[gi] for cls, k in batch])
            for batch, tm in zip(groups[gi], terms):  # before the save: a group saved is never redone
                log.log(stage="recover", mode=mode, classes=sorted({c for c, _ in batch}), **tm)
            _save_partial(partial, gi, slots, torch.cat(imgs))
            fault_point("recover-group")
    barrier()
    done = _load_partial(partial, key)
    if len(done) != len(groups):
        raise LabelDistillError(f"recover[{mode}]: {len(groups) - len(done)} batch groups missing from "
                                f"{partial}; re-run to finish them")
    images = torch.zeros((info["num_classes"] * recover_cfg.ipc, *info["shape"]))
    for slots, imgs in done.values():
        images[slots] = imgs
    return images


def _make_segment(cfg: Config, mode: str, switches: RecoverMode, batch: list[tuple[int, int]],
                  stats: dict[str, torch.Tensor], num_layers: int, init: torch.Tensor | None,
                  device: torch.device) -> Segment:
    """One optimisation batch of ``(class, slot)`` pairs with its BN targets, generator and start images."""
    slots = [cls * cfg.recover.ipc + k for cls, k in batch]
    return Segment(torch.tensor([cls for cls, _ in batch]),
                   bn_targets(switches.bn_targets, stats, num_layers, batch[0][0], device),
                   step_generator(cfg.seed, mode_stream(mode), batch[0][0], batch[0][1]),
                   None if init is None else init[slots])


def _write_image_set(out: Path, mode: str, switches: RecoverMode, images: torch.Tensor, teacher: nn.Module, info: dict,
                     ipc: int, extra: dict, device: torch.device, amp: str = "bf16", chunk: int = 256,
                     logits: torch.Tensor | None = None) -> None:
    """Quantise to uint8, measure the teacher's top-1 on the set (:func:`teacher_top1`), write PNGs (a folder
    set that needs no resize: its own files, :func:`_write_own_files`) + ``images.json`` (and the per-image
    ``logits`` ``(N, K)``, class-major, when given) atomically."""
    labels = torch.arange(info["num_classes"]).repeat_interleave(ipc)
    u8 = (images * 255).round().to(torch.uint8)
    top1 = teacher_top1(teacher, u8, labels, info, device, amp, chunk)
    if logits is not None:
        extra = {**extra, "soft_labels": {**extra.get("soft_labels", {}), "file": IMAGE_LOGITS}}
    with atomic_dir(out) as tmp:
        if switches.source == "folder":
            _write_own_files(tmp, switches.path, u8, labels, info["classes"], extra)
        else:
            save_imagefolder(u8, labels, info["classes"], tmp)
        if logits is not None:
            save_image_logits(logits, tmp, image_fingerprint(u8, labels))
        atomic_write_json(tmp / "images.json", {
            "mode": mode, "source": switches.source, "ipc": ipc, "num_images": len(labels),
            "classes": info["classes"], "fingerprint": image_fingerprint(u8, labels),
            "teacher_fingerprint": info["fingerprint"], "teacher_top1_on_images": top1, **extra,
        })
    shutil.rmtree(out.with_name(f".{out.name}.partial"), ignore_errors=True)


def _write_own_files(folder: Path, path: str, u8: torch.Tensor, labels: torch.Tensor, classes: list[str],
                     extra: dict) -> None:
    """A ``folder`` set into ``folder``: its files copied as they are (``encoding: copied``; read back and
    compared with the checked pixels ``u8``), or the resized images as PNG; plus the class mapping files.

    Raises:
        LabelDistillError: the copied files decode to other pixels than the ones checked (the set changed).
    """
    listing = list_source("folder", path)
    if extra.get("encoding") != "copied":
        save_imagefolder(u8, labels, classes, folder)
        write_source_mapping(listing, folder)
        return
    copy_own_files(listing, classes, folder)
    back = load_imagefolder(folder, mean=(0.0,) * u8.shape[1], std=(1.0,) * u8.shape[1], mode=extra["decode_mode"])
    if not (torch.equal(back.images, u8) and torch.equal(back.labels, labels)):
        raise LabelDistillError(f"the files copied from {path} decode to other pixels than the ones checked: the set "
                                "changed while recover read it; run recover again")


def _load_partial(partial: Path, key: str) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Finished batch groups of an interrupted recover: group index → (slots, float images).

    A partial folder written with other settings is discarded (by rank 0).
    """
    kf = partial / "key.json"
    if partial.is_dir() and kf.is_file() and read_json(kf).get("key") == key:
        out = {}
        for f in sorted(partial.glob("group_*.safetensors")):
            try:
                t = load_file(str(f))
            except Exception:  # noqa: BLE001 - a file cut off by a kill is redone
                continue
            out[int(f.stem.split("_")[1])] = (t["slots"].long(), t["images"])
        return out
    if is_rank0():
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        atomic_write_json(kf, {"key": key})
    return {}


def _save_partial(partial: Path, gi: int, slots: torch.Tensor, images: torch.Tensor) -> None:
    tmp = partial / f".group_{gi:05d}.tmp-{os.getpid()}"
    save_file({"slots": slots.to(torch.int64), "images": images.contiguous()}, str(tmp))
    os.replace(tmp, partial / f"group_{gi:05d}.safetensors")
