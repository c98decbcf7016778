"""Training primitives every stage shares: the cosine learning-rate schedule, one optimiser factory, and
top-1 evaluation on a real split."""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn as nn

from .data import ImageSet, iter_batches, normalize
from .errors import ConfigError, LabelDistillError

OPTIMIZERS = ("sgd", "adam", "adamw")


def cosine_lr(base: float, step: int, total: int) -> float:
    """Cosine annealing from ``base`` (step 0) to 0 (step ``total``), no warm-up."""
    return 0.5 * base * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


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
        params: parameters (or tensors) to optimise.
        lr: learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty (SGD) or decoupled weight decay (AdamW).
        nesterov: SGD with Nesterov momentum.

    Raises:
        ConfigError: unknown optimiser name.
    """
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer '{name}'; known: {', '.join(OPTIMIZERS)}")


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, mean: tuple[float, ...], std: tuple[float, ...],
             device: torch.device, batch_size: int = 1000, workers: int | None = None) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of ``model`` on ``data``, in eval mode, in float32.

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
    correct = 0
    batches = [slice(i, i + batch_size) for i in range(0, len(data), batch_size)]
    for images, labels in iter_batches(data, batches, workers, pin_memory=device.type == "cuda"):
        x = normalize(images.to(device, non_blocking=True).float() / 255, mean, std)
        y = labels.to(device)
        correct += int((model(x.contiguous(memory_format=torch.channels_last)).argmax(1) == y).sum())
    model.train(was_training)
    return correct / max(len(data), 1)
