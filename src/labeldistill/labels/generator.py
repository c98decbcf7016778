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

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..config import Config
from ..data.synthetic import load_synthetic
from ..errors import StoreError
from ..io import MetricsLog, read_json
from ..layout import RunLayout
from ..models import build_model
from ..main_stages import GENERATOR
from ..provenance import StageRef
from ..runner import run_unit
from ..resume import Throttle, fault_point, load_checkpoint, save_checkpoint
from ..runtime import is_rank0, pick_device
from ..training import cosine_lr, make_optimizer, optimizer_step
from .replay import build_batch
from .sources import GENERATOR_INFO, save_generator
from .store import LabelStore


def generator_loss(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² · KL(p ‖ softmax(g / T))`` averaged over the batch; ``logits`` ``(B, K)``, ``targets`` ``(B, K)``
    probabilities at ``T``."""
    kl = F.kl_div(F.log_softmax(logits / temperature, 1), targets, reduction="batchmean")
    return kl * temperature * temperature


def _epoch(model: nn.Module, opt: torch.optim.Optimizer, store: LabelStore, images: torch.Tensor, cfg: Config,
           step: int, total: int, device: torch.device) -> tuple[float, int]:
    """One pass over every stored step in stored order; returns (mean loss, global step after it)."""
    gc, m = cfg.generator, store.manifest
    out_hw, mean, std = tuple(m["input_size"]), m["normalization"]["mean"], m["normalization"]["std"]
    losses = []
    for g in store.step_ids:
        rec = store.get(g)
        x = build_batch(images, rec, out_hw, mean, std).to(device)
        t = rec.soft_targets(m["num_classes"], gc.temperature).to(device)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(gc.lr, step, total)
        loss = generator_loss(model(x).float(), t, gc.temperature)
        optimizer_step(opt, loss, "generator", f"step {step}", "generator.lr")
        losses.append(loss.item())
        step += 1
    return sum(losses) / len(losses), step


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
    device = pick_device(cfg.device)
    gc = cfg.generator
    torch.manual_seed(cfg.seed)
    model = build_model(gc.model, m["num_classes"], data.shape).to(device)
    opt = make_optimizer(gc.optimizer, model.parameters(), gc.lr, gc.momentum, gc.weight_decay)
    key = GENERATOR.resume_key(cfg, ref, m["shards"])
    resume = out.with_name(".generator.resume.pt")
    state = load_checkpoint(resume, key)
    start, step, losses = 0, 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start, step, losses = state["epoch"] + 1, state["step"], state["losses"]
    total, images, save_now, t0 = gc.epochs * len(store), data.uint8_images(), Throttle(gc.checkpoint_seconds), time.time()
    model.train()
    for epoch in tqdm(range(start, gc.epochs), desc=f"generator[{mode}]", unit="epoch", disable=not is_rank0(),
                      leave=False):
        loss, step = _epoch(model, opt, store, images, cfg, step, total, device)
        losses.append(loss)
        if epoch + 1 < gc.epochs and save_now():
            save_checkpoint(resume, key, {"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch,
                                          "step": step, "losses": losses})
            fault_point("generator-epoch")
    info = {"model": gc.model.name, "model_args": dict(gc.model.args), "num_classes": m["num_classes"],
            "shape": list(data.shape), "epochs": gc.epochs, "losses": losses, "steps": step,
            "store": str(path.relative_to(layout.root)), "teacher_fingerprint": m["teacher_fingerprint"],
            "seconds": round(time.time() - t0, 2)}
    save_generator(model, out, info)
    resume.unlink(missing_ok=True)
    MetricsLog(layout.metrics).log(stage="generator", mode=mode, loss_first=losses[0], loss_last=losses[-1],
                                   seconds=info["seconds"])
    return None, info["seconds"]
