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

Built-in variants: ``sre2l`` = cross_class + global; ``c`` = class_wise + global; ``cs`` (alias ``lpld``) =
class_wise + class; ``cda`` = cross_class + global + cda schedule. Two real-image sources go through the same
relabel/prune/validate path as baselines: ``random_real`` (IPC random training images per class, after
DD-Ranking's fairness idea) and ``rded`` (RDED, Sun et al. CVPR 2024: random crops of real images scored by
the teacher, the most confident kept and stitched ``factor × factor`` into one image).

Images start as N(0, 1) in normalised space; Adam (0.5, 0.9); cosine lr to 0; per-iteration random resized
crop + flip + roll jitter; clipped to the valid pixel range after each step; the last iterate is saved as
lossless PNG with an explicit ``class_to_idx.json``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .augment import apply_crops_flips, random_roll, sample_flips, sample_resized_crops, step_generator
from .bnstats import load_class_stats
from .common import RunLayout, cosine_lr, denormalize, load_split, load_teacher, normalize
from .config import Config
from .data import ImageSet
from .data.imagefolder import load_imagefolder
from .errors import ConfigError, DataError, LabelDistillError
from .models import bn_layers
from .utils import MetricsLog, atomic_dir, atomic_write_json, is_rank0, pick_device, read_json, tensor_fingerprint

BUILTIN_VARIANTS: dict[str, dict] = {
    "sre2l": {"batching": "cross_class", "bn_targets": "global", "crop_schedule": "fixed"},
    "c": {"batching": "class_wise", "bn_targets": "global", "crop_schedule": "fixed"},
    "cs": {"batching": "class_wise", "bn_targets": "class", "crop_schedule": "fixed"},
    "lpld": {"batching": "class_wise", "bn_targets": "class", "crop_schedule": "fixed"},
    "cda": {"batching": "cross_class", "bn_targets": "global", "crop_schedule": "cda"},
    "random_real": {"source": "random_real"},
    "rded": {"source": "rded"},
}
_VARIANT_KEYS = {"batching": ("cross_class", "class_wise"), "bn_targets": ("global", "class"),
                 "crop_schedule": ("fixed", "cda")}


def resolve_variant(mode: str, custom: dict | None = None) -> dict:
    """The switches of a recover mode: a built-in variant or one defined under ``recover.variants``.

    Returns:
        ``{"source": "synthesis" | "random_real" | "rded", "batching", "bn_targets", "crop_schedule"}``.

    Raises:
        ConfigError: unknown mode, unknown switch or value, class targets with cross-class batches.
    """
    custom = custom or {}
    if mode in custom:
        spec = custom[mode]
        if not isinstance(spec, dict):
            raise ConfigError(f"recover.variants.{mode} must be a mapping of switches")
        bad = [k for k in spec if k not in _VARIANT_KEYS]
        if bad:
            raise ConfigError(f"recover.variants.{mode}: unknown switch '{bad[0]}'; known: "
                              + ", ".join(_VARIANT_KEYS))
        v = {"source": "synthesis", "batching": "cross_class", "bn_targets": "global", "crop_schedule": "fixed",
             **spec}
    elif mode in BUILTIN_VARIANTS:
        v = {"source": "synthesis", **BUILTIN_VARIANTS[mode]}
    else:
        raise ConfigError(f"unknown recover mode '{mode}'; known: {', '.join(BUILTIN_VARIANTS)}"
                          + (f", {', '.join(custom)}" if custom else ""))
    if v["source"] == "synthesis":
        for k, allowed in _VARIANT_KEYS.items():
            if v[k] not in allowed:
                raise ConfigError(f"recover variant '{mode}': {k} must be one of {', '.join(allowed)}, got {v[k]!r}")
        if v["bn_targets"] == "class" and v["batching"] != "class_wise":
            raise ConfigError(f"recover variant '{mode}': class BN targets need class_wise batching")
    return v


def mode_key(mode: str) -> int:
    """A stable integer for a mode name (seeds per-mode generators)."""
    return int.from_bytes(mode.encode()[:7].ljust(7, b"\0"), "little")


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
    """Forward hook keeping the mean and biased variance over (N, H, W) of a BN layer's input."""

    def __init__(self) -> None:
        self.mean: torch.Tensor | None = None
        self.var: torch.Tensor | None = None

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        self.mean = x.mean(dim=(0, 2, 3))
        self.var = x.var(dim=(0, 2, 3), unbiased=False)


def plan_batches(batching: str, num_classes: int, ipc: int, batch_size: int) -> list[list[tuple[int, int]]]:
    """The optimisation batches as lists of ``(class, slot)`` pairs.

    ``cross_class``: for each IPC slot k, the classes ``0..C-1`` (chunked to ``batch_size``) at slot k.
    ``class_wise``: for each class c, its slots ``0..IPC-1`` (chunked to ``batch_size``).
    """
    batches = []
    if batching == "cross_class":
        for k in range(ipc):
            for i in range(0, num_classes, batch_size):
                batches.append([(c, k) for c in range(i, min(i + batch_size, num_classes))])
    elif batching == "class_wise":
        for c in range(num_classes):
            for i in range(0, ipc, batch_size):
                batches.append([(c, k) for k in range(i, min(i + batch_size, ipc))])
    else:
        raise ConfigError(f"unknown batching '{batching}'; known: class_wise, cross_class")
    return batches


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


def recover_batch(teacher: nn.Module, hooks: list[BNInputHook], targets: list[tuple[torch.Tensor, torch.Tensor]],
                  labels: torch.Tensor, shape: tuple[int, int, int], mean: tuple[float, ...],
                  std: tuple[float, ...], cfg: Config, gen: torch.Generator, device: torch.device,
                  crop_schedule: str = "fixed", init: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Optimise one batch of images.

    Args:
        init: float ``(n, C, H, W)`` start images in [0, 1] (``init: real``); None starts from N(0, 1) in
            normalised space.

    Returns:
        Images ``(n, C, H, W)`` as float in [0, 1] (the last iterate) and the final loss terms.

    Raises:
        LabelDistillError: the loss became NaN or infinite (names the classes).
    """
    rc = cfg.recover
    n = len(labels)
    c, h, w = shape
    if init is None:
        x0 = torch.randn((n, c, h, w), generator=gen)
    else:
        x0 = normalize(init.float(), mean, std)
    x = x0.to(device).requires_grad_(True)
    lo_px = torch.tensor([(0 - m) / s for m, s in zip(mean, std)], device=device).view(1, -1, 1, 1)
    hi_px = torch.tensor([(1 - m) / s for m, s in zip(mean, std)], device=device).view(1, -1, 1, 1)
    opt = torch.optim.Adam([x], lr=rc.lr, betas=(0.5, 0.9), eps=1e-8)
    y = labels.to(device)
    ce = bn = torch.zeros(())
    for t in range(rc.iterations):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(rc.lr, t, rc.iterations)
        lo = min_crop_scale(crop_schedule, t, rc.iterations, rc.crop_scale[0], rc.crop_scale[1], rc.cda_milestone)
        k = n if rc.crops == "per_image" else 1
        box = sample_resized_crops(gen, k, h, w, (lo, rc.crop_scale[1])).expand(n, 4)
        flip = sample_flips(gen, k).expand(n) if rc.flip else None
        xa = apply_crops_flips(x, box, flip, (h, w))
        xa = random_roll(gen, xa, rc.jitter)
        logits = teacher(xa.contiguous(memory_format=torch.channels_last))
        ce = F.cross_entropy(logits, y)
        bn = torch.zeros((), device=device)
        for li, (hk, (tm, tv)) in enumerate(zip(hooks, targets)):
            s = rc.first_bn_multiplier if li == 0 else 1.0
            bn = bn + s * (torch.linalg.vector_norm(hk.mean - tm) + torch.linalg.vector_norm(hk.var - tv))
        loss = ce + rc.r_bn * bn
        if not torch.isfinite(loss):
            raise LabelDistillError(f"recover loss became {loss.item()} at iteration {t} for classes "
                                    f"{sorted(set(labels.tolist()))}; lower recover.lr or recover.r_bn")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.copy_(torch.maximum(torch.minimum(x, hi_px), lo_px))
    img = denormalize(x.detach(), mean, std).clamp(0, 1).cpu()
    return img, {"ce": ce.item(), "bn": bn.item()}


def save_imagefolder(images: torch.Tensor, labels: torch.Tensor, classes: list[str], folder: Path) -> None:
    """Write uint8 ``(N, C, H, W)`` images as PNG into ``folder/<class>/<index>.png`` + ``class_to_idx.json``."""
    for i, (im, y) in enumerate(zip(images, labels)):
        d = folder / classes[int(y)]
        d.mkdir(parents=True, exist_ok=True)
        a = im.permute(1, 2, 0).numpy()
        Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).save(d / f"{i:06d}.png", optimize=True)
    atomic_write_json(folder / "class_to_idx.json", {c: i for i, c in enumerate(classes)})


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
    rc = cfg.recover
    f = rc.rded_factor
    _, h, w = data.shape
    ph, pw = max(h // f, 1), max(w // f, 1)
    per_image = f * f
    out = []
    for c in range(data.num_classes):
        idx = torch.nonzero(data.labels == c).flatten()
        if len(idx) == 0:
            raise DataError(f"class '{data.classes[c]}' has no real training images for RDED")
        m = rc.ipc * per_image * rc.rded_candidates
        pick = idx[torch.randint(len(idx), (m,), generator=gen)]
        boxes = sample_resized_crops(gen, m, h, w, tuple(rc.crop_scale))
        crops = apply_crops_flips(data.images[pick].float() / 255, boxes, None, (h, w))
        logp = torch.cat([
            F.log_softmax(teacher(normalize(crops[i:i + 512], info["mean"], info["std"]).to(device)
                                  .contiguous(memory_format=torch.channels_last)), 1)[:, c].cpu()
            for i in range(0, m, 512)])
        best = crops[logp.argsort(descending=True)[:rc.ipc * per_image]]
        patches = F.interpolate(best, size=(ph, pw), mode="bilinear", antialias=True, align_corners=False)
        patches = patches.view(rc.ipc, f, f, -1, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(rc.ipc, -1, f * ph, f * pw)
        if (f * ph, f * pw) != (h, w):
            patches = F.interpolate(patches, size=(h, w), mode="bilinear", align_corners=False)
        out.append(patches.clamp(0, 1))
    return torch.cat(out)


def recover(cfg: Config, mode: str, force: bool = False) -> Path:
    """Produce ``recover.ipc`` images per class with the given mode into ``images/<mode>/``.

    Returns:
        The image folder (PNG ImageFolder + ``class_to_idx.json`` + ``images.json``).

    Raises:
        ConfigError: unknown mode; LabelDistillError: missing teacher or class statistics, non-finite loss;
        DataError: too few real images for ``random_real`` / ``init: real``.
    """
    layout = RunLayout(cfg.run_path)
    out = layout.images_dir(mode)
    if (out / "images.json").is_file() and not force:
        return out
    rc = cfg.recover
    variant = resolve_variant(mode, rc.variants)
    device = pick_device(cfg.device)
    teacher, info = load_teacher(layout.teacher_dir, device)
    C, shape = info["num_classes"], tuple(info["shape"])
    labels = torch.arange(C).repeat_interleave(rc.ipc)
    gen = step_generator(cfg.seed, mode_key(mode))
    log = MetricsLog(layout.metrics)
    t0 = time.time()
    needs_real = variant["source"] != "synthesis" or rc.init == "real"
    train = load_split(cfg, "train") if needs_real else None
    extra: dict = {}
    if variant["source"] == "random_real":
        sel = pick_real(train, rc.ipc, gen)
        images = train.images[sel].float() / 255
        extra["real_indices"] = sel.tolist()
    elif variant["source"] == "rded":
        images = rded_images(teacher, train, info, cfg, gen, device)
    else:
        stats, _ = load_class_stats(layout.class_stats_dir)
        init_imgs = train.images[pick_real(train, rc.ipc, gen)].float() / 255 if rc.init == "real" else None
        bns = bn_layers(teacher)
        hooks = [BNInputHook() for _ in bns]
        handles = [bn.register_forward_hook(hk) for bn, hk in zip(bns, hooks)]
        images = torch.zeros((C * rc.ipc, *shape))
        batches = plan_batches(variant["batching"], C, rc.ipc, rc.batch_size)
        try:
            for bi, batch in enumerate(tqdm(batches, desc=f"recover[{mode}]", disable=not is_rank0(), unit="batch")):
                y = torch.tensor([cls for cls, _ in batch])
                slots = [cls * rc.ipc + k for cls, k in batch]
                targets = bn_targets(variant["bn_targets"], stats, len(bns), batch[0][0], device)
                bgen = step_generator(cfg.seed, mode_key(mode), batch[0][0], batch[0][1])
                img, terms = recover_batch(teacher, hooks, targets, y, shape, info["mean"], info["std"], cfg, bgen,
                                           device, variant["crop_schedule"],
                                           None if init_imgs is None else init_imgs[slots])
                images[slots] = img
                log.log(stage="recover", mode=mode, batch=bi, classes=sorted({c for c, _ in batch}), **terms)
        finally:
            for hd in handles:
                hd.remove()
        extra.update(variant=variant, init=rc.init, iterations=rc.iterations, crops=rc.crops)
    u8 = (images * 255).round().to(torch.uint8)
    with torch.no_grad():
        x = normalize(u8.float() / 255, info["mean"], info["std"]).to(device)
        teacher_top1 = float((teacher(x.contiguous(memory_format=torch.channels_last)).argmax(1).cpu()
                              == labels).float().mean())
    with atomic_dir(out) as tmp:
        save_imagefolder(u8, labels, info["classes"], tmp)
        atomic_write_json(tmp / "images.json", {
            "mode": mode, "source": variant["source"], "ipc": rc.ipc, "num_images": len(labels),
            "classes": info["classes"], "fingerprint": image_fingerprint(u8, labels),
            "teacher_fingerprint": info["fingerprint"], "teacher_top1_on_images": teacher_top1,
            "seconds": round(time.time() - t0, 2), **extra,
        })
    return out


def image_fingerprint(images_u8: torch.Tensor, labels: torch.Tensor) -> str:
    """Fingerprint of an image set: its uint8 pixels and labels (independent of the PNG encoding)."""
    return tensor_fingerprint(images_u8, labels)


def load_synthetic(folder: Path, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[ImageSet, dict]:
    """Load an ``images/<mode>/`` folder (PNG + class_to_idx.json) and its ``images.json``.

    Raises:
        LabelDistillError: the folder was not written by ``recover`` (run it first).
    """
    meta_f = Path(folder) / "images.json"
    if not meta_f.is_file():
        raise LabelDistillError(f"no synthetic images in {folder}: run 'labeldistill recover CONFIG' first")
    c2i = read_json(Path(folder) / "class_to_idx.json")
    data = load_imagefolder(folder, class_to_idx=c2i, mean=tuple(mean), std=tuple(std))
    return data, read_json(meta_f)


def image_bytes(folder: Path) -> int:
    """Bytes on disk of the PNG files of an image folder."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*.png"))
