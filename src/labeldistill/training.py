"""Training primitives every stage shares: the cosine learning-rate schedule, one optimiser factory, the guarded
gradient step, one resumable epoch loop (:func:`fit` with its :class:`Checkpointer`) and top-1 evaluation on a
real split.

:func:`fit` is the loop of squeeze, validate's students, the hard-label baselines and the label generator, in the
style of torchvision's ``references/classification/train.py`` (``train_one_epoch``: per step, set the learning
rate, forward, backward, step) and of timm's ``utils/checkpoint_saver.py`` (a resume file written at the end of an
epoch). Learn-labels' meta-test trains its fresh models with :func:`labeldistill.learn_labels.learners.train_learner`
instead: a fixed step count with no schedule and no resume file (its unit of resumption is a finished result row).
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .data import ImageSet, iter_batches, normalize
from .distributed import all_reduce_sum, rank_world
from .errors import ConfigError, LabelDistillError
from .io import MetricsLog
from .resume import Throttle, fault_point, load_checkpoint, save_checkpoint
from .runtime import is_rank0

OPTIMIZERS = ("sgd", "adam", "adamw")


def cosine_lr(base: float, step: int, total: int) -> float:
    """Cosine annealing from ``base`` (step 0) to 0 (step ``total``), no warm-up."""
    return 0.5 * base * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def warmup_cosine_lr(base: float, t: int, n: int, warm: int = 0, start: float = 0.01) -> float:
    """The learning rate at position ``t`` of ``n`` (epochs or steps): linear warm-up from ``start · base`` over
    the first ``warm`` positions, then :func:`cosine_lr` from ``base`` to 0 over the remaining ``n − warm``.

    The LPLD Tiny-ImageNet SGD student's schedule (``relabel_and_validate/train_FKD_label_pruning_batch.py``:
    ``LinearLR(start_factor=0.01, total_iters=5)`` then ``CosineAnnealingLR(T_max=epochs − 5)``, stepped per
    epoch); with ``warm = 0`` its ``LambdaLR`` cosine ``0.5 · (1 + cos(π t / n))``.
    """
    if t < warm:
        return base * (start + (1.0 - start) * t / warm)
    return cosine_lr(base, t - warm, n - warm)


def epoch_lr(base: float, epoch_lens: list[int], warmup_epochs: int = 0,
             per_epoch: bool = True) -> Callable[[int], float]:
    """``lr(global step)`` for :func:`fit` of a run whose epoch ``e`` has ``epoch_lens[e]`` steps:
    :func:`warmup_cosine_lr` over epochs (``per_epoch``: constant within an epoch, the reference's ``LambdaLR``
    stepped once per epoch) or over steps (warm-up over the steps of the first ``warmup_epochs`` epochs)."""
    starts = list(itertools.accumulate(epoch_lens, initial=0))
    epochs, total = len(epoch_lens), starts[-1]
    if per_epoch:
        return lambda step: warmup_cosine_lr(base, bisect.bisect_right(starts, step) - 1, epochs, warmup_epochs)
    return lambda step: warmup_cosine_lr(base, step, total, starts[min(warmup_epochs, epochs)])


def step_decay_epoch(epochs: int) -> int:
    """The first (0-based) epoch at ``0.1 · lr`` of the ``step`` schedule of an ``epochs``-epoch run: DC's
    ``evaluate_synset`` (``VICO-UoE/DatasetCondensation`` ``utils.py``) trains ``Epoch + 1`` passes and drops the
    learning rate after pass ``Epoch // 2 + 1``, so with ``epochs = Epoch + 1`` the drop is at ``ceil(epochs / 2) + 1``."""
    return math.ceil(epochs / 2) + 1


def schedule_lr(schedule: str, base: float, epoch_lens: list[int], warmup_epochs: int = 0) -> Callable[[int], float]:
    """``lr(global step)`` of ``validate.schedule``: ``cosine_epoch`` / ``cosine_step`` (:func:`epoch_lr`) or
    ``step`` (``base`` until :func:`step_decay_epoch`, then ``0.1 · base``; constant within an epoch)."""
    if schedule != "step":
        return epoch_lr(base, epoch_lens, warmup_epochs, schedule == "cosine_epoch")
    starts = list(itertools.accumulate(epoch_lens, initial=0))
    drop = starts[min(step_decay_epoch(len(epoch_lens)), len(epoch_lens))]
    return lambda step: base if step < drop else 0.1 * base


def decay_groups(model: nn.Module, weight_decay: float, decay_1d: bool = False) -> list[dict]:
    """Parameter groups for :func:`make_optimizer`: ``weight_decay`` on parameters of two or more dimensions and
    none on 1-D ones (BatchNorm weights and biases, every bias) unless ``decay_1d``.

    The split of the SRe2L / LPLD reference students (LPLD ``relabel_and_validate/utils.py``, ``get_parameters``:
    decay on ``weight`` tensors with more than one dimension, ``weight_decay=0.`` on the rest).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_1d:
        return [{"params": params, "weight_decay": weight_decay}]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, who: str, where: str, lr_key: str) -> None:
    """One gradient step on ``loss`` (zero grads, backward, step), refused when the loss is not finite.

    Args:
        who / where / lr_key: the error message's words, e.g. ``"student"``, ``"step 12 (validate[cs x1])"``,
            ``"validate.lr"``.

    Raises:
        LabelDistillError: the loss is nan or inf (names who, where and the learning-rate key to lower); no step
            is taken, so finished work and checkpoints stay as they were.
    """
    if not torch.isfinite(loss):
        raise LabelDistillError(f"{who} loss became {loss.item()} at {where}; lower {lr_key}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def make_optimizer(name: str, params: Iterable[torch.Tensor], lr: float, momentum: float = 0.0,
                   weight_decay: float = 0.0, nesterov: bool = False) -> torch.optim.Optimizer:
    """The optimiser ``name`` over ``params``: the one place squeeze, validate and learn-labels build one.

    Args:
        name: ``sgd`` (momentum and Nesterov as given), ``adam`` (no weight decay) or ``adamw``.
        params: parameters (or tensors) to optimise, or parameter groups (:func:`decay_groups`: a group's own
            ``weight_decay`` overrides ``weight_decay``).
        lr: learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty (SGD) or decoupled weight decay (AdamW).
        nesterov: SGD with Nesterov momentum.

    Raises:
        ConfigError: unknown optimiser name.
    """
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "adam":  # no weight decay, not even a group's own
        params = [{k: v for k, v in g.items() if k != "weight_decay"} if isinstance(g, dict) else g for g in params]
        return torch.optim.Adam(params, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer '{name}'; known: {', '.join(OPTIMIZERS)}")


def _global_step(epoch: int, i: int, step: int) -> str:
    return f"step {step}"


@dataclass
class StepGuard:
    """The words of the error :func:`optimizer_step` raises on a non-finite loss.

    Attributes:
        who: whose loss, e.g. ``"student"``.
        lr_key: the config key to lower, e.g. ``"validate.lr"``.
        where: ``(epoch, index of the step in its epoch, global step) -> str``, e.g. ``"step 12 (validate[cs x1])"``
            (default: ``"step <global step>"``).
    """

    who: str
    lr_key: str
    where: Callable[[int, int, int], str] = _global_step


_RESUME_FIELDS = ("model", "opt", "epoch", "step")


@dataclass
class Checkpointer:
    """The resume file of one :func:`fit` run, in the style of timm's ``CheckpointSaver`` (0.9,
    ``timm/utils/checkpoint_saver.py``): model, optimiser, last finished epoch, global step and ``save_extra()``'s
    entries, written atomically (:func:`labeldistill.resume.save_checkpoint`) by rank 0 at the end of an epoch
    (never after the last), at most every ``seconds``, each save followed by the fault point ``fault``.

    With ``metrics``, each save records the metrics log's length and a resumed run first drops the lines matching
    ``metrics_match`` logged after it (:meth:`labeldistill.io.MetricsLog.rewind`): the epochs it redoes log them
    again, so the log ends as an uninterrupted run's.

    Attributes:
        path: the resume file; ``None``: nothing is saved or loaded.
        key: the settings key the file must carry to be resumed from (given by the caller).
        fault: fault-point name (:func:`labeldistill.resume.fault_point`), e.g. ``"validate-epoch"``.
        seconds: least time between two saves (0: every epoch).
        save_extra: more entries to save (RNG states, per-epoch losses …), or ``None``.
        load_extra: restores them from a loaded file, after the model and optimiser; or ``None``.
        metrics: the log the loop's ``end_epoch`` writes to, or ``None``.
        metrics_match: the fields of this run's lines in ``metrics`` (e.g. ``{"stage": "squeeze"}``).
    """

    path: Path | None
    key: str
    fault: str
    seconds: float = 0.0
    save_extra: Callable[[], dict] | None = None
    load_extra: Callable[[dict], None] | None = None
    metrics: MetricsLog | None = None
    metrics_match: dict = field(default_factory=dict)
    _due: Throttle = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._due = Throttle(self.seconds)

    def restore(self, model: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, int]:
        """Load the resume file (same key, every field present) into ``model`` and ``opt``; returns (first epoch
        to train, global step), ``(0, 0)`` without a usable file.

        Raises:
            StoreError: the file holds objects that could run code (:func:`labeldistill.resume.load_checkpoint`).
        """
        state = load_checkpoint(self.path, self.key) if self.path is not None else None
        if state is None or any(k not in state for k in _RESUME_FIELDS):
            return 0, 0
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        if self.load_extra is not None:
            self.load_extra(state)
        if self.metrics is not None and "metrics_bytes" in state and is_rank0():
            self.metrics.rewind(state["metrics_bytes"], **self.metrics_match)
        return state["epoch"] + 1, state["step"]

    def save(self, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, step: int) -> None:
        """Save after finished epoch ``epoch`` (global step ``step``) when on rank 0 and due; then the fault point."""
        if self.path is None or not is_rank0() or not self._due():
            return
        extra = self.save_extra() if self.save_extra is not None else {}
        if self.metrics is not None:
            extra["metrics_bytes"] = self.metrics.size()
        save_checkpoint(self.path, self.key, {"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch,
                                              "step": step, **extra})
        fault_point(self.fault)


def fit(model: nn.Module, opt: torch.optim.Optimizer, *, epochs: int, total: int, lr: Callable[[int], float],
        batches: Callable[[int], Iterable[Any]], loss: Callable[[Any, int], torch.Tensor], guard: StepGuard,
        checkpoint: Checkpointer | None = None, end_epoch: Callable[[int, torch.Tensor], None] | None = None,
        desc: str = "train", leave: bool = True) -> int:
    """Train ``model`` for ``epochs`` epochs, resuming from ``checkpoint``'s file when it holds a usable one.

    Per step (torchvision's ``train_one_epoch`` order): every parameter group's learning rate is set to
    ``lr(global step)``, ``loss(batch, epoch)`` runs the forward pass (the caller's own DDP wrapper, augmentation
    and rank slicing go there), then :func:`optimizer_step` (refused on a non-finite loss, in ``guard``'s words).
    Per epoch: ``batches(epoch)`` gives its batches (called at the epoch's start); after its last step
    ``end_epoch(epoch, last loss)`` runs, then ``checkpoint.save``. Nothing here draws random numbers, so a
    resumed run (RNG states restored through ``load_extra``) gives the bytes of an uninterrupted one.

    Args:
        model: the module whose ``state_dict`` is saved (not a DDP wrapper); set to train mode.
        opt: its optimiser.
        epochs: training epochs in all.
        total: steps in all (the progress bar's length).
        desc, leave: progress bar label, and whether it stays on screen.

    Returns:
        The global step count after the last epoch.

    Raises:
        LabelDistillError: the loss became NaN or infinite (no step taken; the last checkpoint stays).
    """
    start, step = checkpoint.restore(model, opt) if checkpoint is not None else (0, 0)
    model.train()
    bar = tqdm(total=total, initial=step, desc=desc, unit="step", disable=not is_rank0(), leave=leave)
    for epoch in range(start, epochs):
        last = None
        for i, batch in enumerate(batches(epoch)):
            for group in opt.param_groups:
                group["lr"] = lr(step)
            last = loss(batch, epoch)
            optimizer_step(opt, last, guard.who, guard.where(epoch, i, step), guard.lr_key)
            step += 1
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{last.item():.3f}")
        if end_epoch is not None:
            end_epoch(epoch, last)
        if checkpoint is not None and epoch + 1 < epochs:
            checkpoint.save(model, opt, epoch, step)
    bar.close()
    return step


def evaluate(model: nn.Module, data: ImageSet, mean: tuple[float, ...], std: tuple[float, ...],
             device: torch.device, batch_size: int = 1000, workers: int | None = None,
             sharded: bool = False) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of ``model`` on ``data`` (:func:`evaluate_topk`)."""
    return evaluate_topk(model, data, mean, std, device, batch_size, workers, sharded)["top1"]


@torch.no_grad()
def evaluate_topk(model: nn.Module, data: ImageSet, mean: tuple[float, ...], std: tuple[float, ...],
                  device: torch.device, batch_size: int = 1000, workers: int | None = None,
                  sharded: bool = False) -> dict[str, float]:
    """Top-1 and top-5 accuracy (fractions in [0, 1]; top-5 over ``min(5, K)`` classes) of ``model`` on ``data``,
    in eval mode, in float32: ``{"top1", "top5"}``.

    With ``sharded`` under a process group, rank ``r`` evaluates batches ``r::world`` (a lazy split decodes only
    those) and the correct counts are all-reduced: the same top-1 as one process when every rank holds the same
    weights and buffers.

    Args:
        model: classifier taking normalised ``(N, C, H, W)`` images.
        data: the split (in memory, or lazy: decoded by ``workers`` DataLoader processes).
        mean, std: normalisation in [0, 1] units.
        device: where the model runs.
        batch_size: images per forward pass.
        workers: see :func:`labeldistill.data.iter_batches`.
    """
    was_training = model.training
    model.eval()
    correct1 = correct5 = 0
    batches = [slice(i, i + batch_size) for i in range(0, len(data), batch_size)]
    if sharded:
        rank, world = rank_world()
        batches = batches[rank::world]
    for images, labels in iter_batches(data, batches, workers, pin_memory=device.type == "cuda"):
        x = normalize(images.to(device, non_blocking=True).float() / 255, mean, std)
        y = labels.to(device)
        out = model(x.contiguous(memory_format=torch.channels_last))
        correct1 += int((out.argmax(1) == y).sum())
        correct5 += int((out.topk(min(5, out.shape[1]), 1).indices == y[:, None]).any(1).sum())
    model.train(was_training)
    if sharded:
        counts = all_reduce_sum(torch.tensor([correct1, correct5], dtype=torch.int64, device=device))
        correct1, correct5 = int(counts[0]), int(counts[1])
    n = max(len(data), 1)
    return {"top1": correct1 / n, "top5": correct5 / n}
