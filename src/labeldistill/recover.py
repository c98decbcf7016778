"""Stage 3, recover: synthesise images by matching the teacher's BN statistics (SRe2L §3.2; LPLD §3).

Loss per batch (spec §4.1)::

    L = CE(teacher(aug(x)), y) + r_bn · Σ_l s_l · (‖μ_l(batch) − μ*_l‖₂ + ‖σ²_l(batch) − σ²*_l‖₂)

with μ_l, σ²_l the mean and biased variance of BN layer ``l``'s input over (N, H, W), plain (not squared)
L2 norms and ``s_1 = first_bn_multiplier``. Modes (spec §4.2):

* ``sre2l`` — each batch holds one image of every class (loop over IPC slots); targets are the teacher's
  global running statistics.
* ``lpld`` — each batch holds images of one class only; targets are that class's statistics from
  ``class-stats`` (LPLD's "+CS", class-wise supervision).

Images start as N(0, 1) in normalised space; Adam (0.5, 0.9); cosine lr to 0; per-iteration random resized
crop + flip + roll jitter; clipped to the valid pixel range after each step; the last iterate is saved as
lossless PNG with an explicit ``class_to_idx.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .augment import apply_crops_flips, random_roll, sample_flips, sample_resized_crops, step_generator
from .bnstats import load_class_stats
from .common import RunLayout, cosine_lr, denormalize, load_teacher
from .config import Config
from .data import ImageSet
from .data.imagefolder import load_imagefolder
from .errors import LabelDistillError
from .models import bn_layers
from .utils import MetricsLog, atomic_dir, atomic_write_json, is_rank0, pick_device, read_json, tensor_fingerprint

MODE_KEYS = {"sre2l": 1, "lpld": 2}


class BNInputHook:
    """Forward hook keeping the mean and biased variance over (N, H, W) of a BN layer's input."""

    def __init__(self) -> None:
        self.mean: torch.Tensor | None = None
        self.var: torch.Tensor | None = None

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        self.mean = x.mean(dim=(0, 2, 3))
        self.var = x.var(dim=(0, 2, 3), unbiased=False)


def plan_batches(mode: str, num_classes: int, ipc: int, batch_size: int) -> list[list[tuple[int, int]]]:
    """The optimisation batches as lists of ``(class, slot)`` pairs.

    ``sre2l``: for each IPC slot k, the classes ``0..C-1`` (chunked to ``batch_size``) at slot k.
    ``lpld``: for each class c, its slots ``0..IPC-1`` (chunked to ``batch_size``).
    """
    batches = []
    if mode == "sre2l":
        for k in range(ipc):
            for i in range(0, num_classes, batch_size):
                batches.append([(c, k) for c in range(i, min(i + batch_size, num_classes))])
    elif mode == "lpld":
        for c in range(num_classes):
            for i in range(0, ipc, batch_size):
                batches.append([(c, k) for k in range(i, min(i + batch_size, ipc))])
    else:
        raise LabelDistillError(f"unknown recover mode '{mode}'; known: lpld, sre2l")
    return batches


def bn_targets(mode: str, stats: dict[str, torch.Tensor], num_layers: int, cls: int | None,
               device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(μ*, σ²*) per BN layer: running stats for ``sre2l``, class ``cls``'s stats for ``lpld``."""
    out = []
    for li in range(num_layers):
        if mode == "lpld":
            m, v = stats[f"l{li}.class_mean"][cls], stats[f"l{li}.class_var"][cls]
        else:
            m, v = stats[f"l{li}.running_mean"], stats[f"l{li}.running_var"]
        out.append((m.to(device), v.to(device)))
    return out


def recover_batch(teacher: nn.Module, hooks: list[BNInputHook], targets: list[tuple[torch.Tensor, torch.Tensor]],
                  labels: torch.Tensor, shape: tuple[int, int, int], mean: tuple[float, ...],
                  std: tuple[float, ...], cfg: Config, gen: torch.Generator,
                  device: torch.device) -> tuple[torch.Tensor, dict]:
    """Optimise one batch of images.

    Returns:
        Images ``(n, C, H, W)`` as float in [0, 1] (the last iterate) and the final loss terms.
    """
    rc = cfg.recover
    n = len(labels)
    c, h, w = shape
    x = torch.randn((n, c, h, w), generator=gen).to(device).requires_grad_(True)
    lo = torch.tensor([(0 - m) / s for m, s in zip(mean, std)], device=device).view(1, -1, 1, 1)
    hi = torch.tensor([(1 - m) / s for m, s in zip(mean, std)], device=device).view(1, -1, 1, 1)
    opt = torch.optim.Adam([x], lr=rc.lr, betas=(0.5, 0.9), eps=1e-8)
    y = labels.to(device)
    ce = bn = torch.zeros(())
    for t in range(rc.iterations):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(rc.lr, t, rc.iterations)
        box = sample_resized_crops(gen, 1, h, w, tuple(rc.crop_scale)).expand(n, 4)
        flip = sample_flips(gen, 1).expand(n) if rc.flip else None
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
            x.copy_(torch.maximum(torch.minimum(x, hi), lo))
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


def recover(cfg: Config, mode: str, force: bool = False) -> Path:
    """Synthesise ``recover.ipc`` images per class with the given mode into ``images/<mode>/``.

    Returns:
        The image folder.

    Raises:
        LabelDistillError: unknown mode, missing teacher or class statistics, non-finite loss.
    """
    layout = RunLayout(cfg.run_path)
    out = layout.images_dir(mode)
    if (out / "images.json").is_file() and not force:
        return out
    if mode not in MODE_KEYS:
        raise LabelDistillError(f"unknown recover mode '{mode}'; known: {', '.join(sorted(MODE_KEYS))}")
    device = pick_device(cfg.device)
    teacher, info = load_teacher(layout.teacher_dir, device)
    stats, _ = load_class_stats(layout.class_stats_dir)
    bns = bn_layers(teacher)
    hooks = [BNInputHook() for _ in bns]
    handles = [bn.register_forward_hook(hk) for bn, hk in zip(bns, hooks)]
    C, shape = info["num_classes"], tuple(info["shape"])
    rc = cfg.recover
    images = torch.zeros((C * rc.ipc, *shape))
    labels = torch.arange(C).repeat_interleave(rc.ipc)
    batches = plan_batches(mode, C, rc.ipc, rc.batch_size)
    log = MetricsLog(layout.metrics)
    t0 = time.time()
    try:
        for bi, batch in enumerate(tqdm(batches, desc=f"recover[{mode}]", disable=not is_rank0(), unit="batch")):
            y = torch.tensor([cls for cls, _ in batch])
            targets = bn_targets(mode, stats, len(bns), batch[0][0], device)
            gen = step_generator(cfg.seed, MODE_KEYS[mode], batch[0][0], batch[0][1])
            img, terms = recover_batch(teacher, hooks, targets, y, shape, info["mean"], info["std"], cfg, gen,
                                       device)
            for (cls, k), im in zip(batch, img):
                images[cls * rc.ipc + k] = im
            log.log(stage="recover", mode=mode, batch=bi, classes=sorted({c for c, _ in batch}), **terms)
    finally:
        for hd in handles:
            hd.remove()
    u8 = (images * 255).round().to(torch.uint8)
    with atomic_dir(out) as tmp:
        save_imagefolder(u8, labels, info["classes"], tmp)
        atomic_write_json(tmp / "images.json", {
            "mode": mode, "ipc": rc.ipc, "num_images": len(labels), "classes": info["classes"],
            "fingerprint": image_fingerprint(u8, labels), "teacher_fingerprint": info["fingerprint"],
            "iterations": rc.iterations, "seconds": round(time.time() - t0, 2),
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
