"""Stage ``generator``: a small label model trained to reproduce the teacher's stored logits.

For ``validate.label_source: generator`` (issue #15: no stored logits at all; the idea of replacing stored labels
by a small label generator is HeLlO's, this is not a reproduction of it). The model ``generator.model`` (any
registry model; by default a convnet of width 8) is trained from scratch, for ``generator.epochs`` passes over every
step of the relabel store ``labels/<mode>/full`` in stored order, on exactly the replayed batches the teacher saw,
with the KD loss ``T² · KL(softmax(t / T) ‖ softmax(g / T))`` (Hinton et al. 2015; ``T = generator.temperature``,
``t`` the stored logits decoded, ``g`` the generator's) under a cosine learning rate. Validate then runs it in place
of the store; its cost is its weights file (:mod:`labeldistill.labels.sources`).

Outputs ``labels/<mode>/generator/model.safetensors`` and ``generator.json`` (model spec, per-epoch mean loss,
``weights_bytes``); recorded in ``stages.json`` as ``generator[<mode>]`` with every relabel and generator setting.
Resumable: a checkpoint (model, optimiser, epoch, losses) at the end of an epoch at most every
``generator.checkpoint_seconds``; an interrupted run ends with the same weights.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..data.synthetic import load_synthetic
from ..errors import StoreError
from ..io import MetricsLog, read_json
from ..layout import RunLayout
from ..models import build_model
from ..main_stages import GENERATOR
from ..provenance import StageRef
from ..runner import run_unit
from ..runtime import pick_device
from ..training import Checkpointer, StepGuard, cosine_lr, fit, make_optimizer
from .replay import build_batch
from .sources import GENERATOR_INFO, save_generator
from .store import LabelStore


def generator_loss(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² · KL(p ‖ softmax(g / T))`` averaged over the batch; ``logits`` ``(B, K)``, ``targets`` ``(B, K)``
    probabilities at ``T``."""
    kl = F.kl_div(F.log_softmax(logits / temperature, 1), targets, reduction="batchmean")
    return kl * temperature * temperature


def _stored_steps(store: LabelStore, images: torch.Tensor, cfg: Config, device: torch.device):
    """``batches(epoch)`` for :func:`~labeldistill.training.fit`: every stored step in stored order, as
    (replayed images ``(B, C, H, W)``, teacher probabilities at ``generator.temperature`` ``(B, K)``)."""
    m = store.manifest
    out_hw, mean, std = tuple(m["input_size"]), m["normalization"]["mean"], m["normalization"]["std"]

    def batch(g: int) -> tuple[torch.Tensor, torch.Tensor]:
        rec = store.get(g)
        return (build_batch(images, rec, out_hw, mean, std).to(device),
                rec.soft_targets(m["num_classes"], cfg.generator.temperature).to(device))

    return lambda epoch: (batch(g) for g in store.step_ids)


def _mean_loss_step(model: nn.Module, temperature: float, losses: list[float]) -> tuple[Callable, Callable]:
    """``loss(batch, epoch)`` (:func:`generator_loss` of ``model`` on one stored step) and ``end_epoch(epoch,
    loss)`` for :func:`~labeldistill.training.fit`; the latter appends the epoch's mean loss to ``losses``."""
    seen: list[torch.Tensor] = []

    def loss(batch, epoch: int) -> torch.Tensor:
        value = generator_loss(model(batch[0]).float(), batch[1], temperature)
        seen.append(value.detach())
        return value

    def end_epoch(epoch: int, last: torch.Tensor) -> None:
        losses.append(sum(v.item() for v in seen) / len(seen))
        seen.clear()

    return loss, end_epoch


def train_generator(cfg: Config, mode: str, force: bool = False) -> dict:
    """Train (or reuse) the label generator of ``mode``; returns its ``generator.json`` content.

    Returns:
        ``{"model", "model_args", "num_classes", "shape", "epochs", "losses" (mean loss per epoch), "steps",
        "store", "teacher_fingerprint", "seconds", "weights_bytes"}``.

    Raises:
        StoreError: no relabel store of ``mode``, or one made for other images.
        StaleStageError: a finished generator made with other settings (without ``force``).
        LabelDistillError: the loss became NaN or infinite.
    """
    layout = RunLayout(cfg.run_path)
    out = layout.generator_dir(mode)
    run_unit(GENERATOR, cfg, GENERATOR.ref(mode), lambda: _train_generator(cfg, mode, layout, out), force=force,
             layout=layout, sync=False)
    return read_json(out / GENERATOR_INFO)


@GENERATOR.runs
def _generator_unit(cfg: Config, ref: StageRef, force: bool) -> dict:
    return train_generator(cfg, ref.mode, force=force)


def _train_generator(cfg: Config, mode: str, layout: RunLayout, out: Path) -> tuple[None, float]:
    """Train the generator of ``mode`` from its full store, resumable; returns ``(None, seconds)``."""
    ref = GENERATOR.ref(mode)
    path = layout.full_store(mode)
    if not (path / "manifest.json").is_file():
        raise StoreError(f"no relabel store at {path}: run 'labeldistill relabel CONFIG' first (the generator "
                         "learns from every stored step, so relabel.only_kept cannot be used with it)")
    store = LabelStore(path)
    m = store.manifest
    data, img_meta = load_synthetic(layout.images_dir(mode), m["normalization"]["mean"], m["normalization"]["std"])
    if img_meta["fingerprint"] != m["image_fingerprint"]:
        raise StoreError(f"label store {path} belongs to other images than {layout.images_dir(mode)}: relabel them")
    device = pick_device(cfg.device, cfg.deterministic)
    gc = cfg.generator
    torch.manual_seed(cfg.seed)
    model = build_model(gc.model, m["num_classes"], data.shape).to(device)
    opt = make_optimizer(gc.optimizer, model.parameters(), gc.lr, gc.momentum, gc.weight_decay)
    key = GENERATOR.resume_key(cfg, ref, m["shards"])
    resume, losses = out.with_name(".generator.resume.pt"), []
    loss, end_epoch = _mean_loss_step(model, gc.temperature, losses)

    def load_losses(state: dict) -> None:
        losses[:] = state["losses"]

    total, t0 = gc.epochs * len(store), time.time()
    step = fit(model, opt, epochs=gc.epochs, total=total, lr=lambda step: cosine_lr(gc.lr, step, total),
               batches=_stored_steps(store, data.uint8_images(), cfg, device), loss=loss,
               guard=StepGuard("generator", "generator.lr"), end_epoch=end_epoch, desc=f"generator[{mode}]",
               checkpoint=Checkpointer(resume, key, "generator-epoch", gc.checkpoint_seconds,
                                       lambda: {"losses": losses}, load_losses), leave=False)
    info = {"model": gc.model.name, "model_args": dict(gc.model.args), "num_classes": m["num_classes"],
            "shape": list(data.shape), "epochs": gc.epochs, "losses": losses, "steps": step,
            "store": str(path.relative_to(layout.root)), "teacher_fingerprint": m["teacher_fingerprint"],
            "seconds": round(time.time() - t0, 2)}
    save_generator(model, out, info)
    resume.unlink(missing_ok=True)
    MetricsLog(layout.metrics).log(stage="generator", mode=mode, loss_first=losses[0], loss_last=losses[-1],
                                   seconds=info["seconds"])
    return None, info["seconds"]
