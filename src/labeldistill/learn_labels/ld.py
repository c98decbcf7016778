"""LD: second-order label distillation (Bohdal, Yang & Hospedales 2020, §3; spec §4).

One outer step, from the current weights θ of a persistent, online-trained model:

1. inner step(s) of SGD on the soft cross-entropy of base minibatches with their current labels,
   ``θ_{j+1} = θ_j − α ∇_θ L_in(θ_j; x̃_j, ỹ_j)``, keeping the graph (``create_graph=True``) so that
   ``∂θ_k/∂ỹ`` includes the second-order (Hessian-vector) terms;
2. outer loss: hard-label cross-entropy of ``f(x_t; θ_k)`` on a real target batch;
3. gradient of the outer loss with respect to the labels only; Adam step on the labels (and projection);
4. online training of θ: one Adam step on ``L_in(θ; x̃_1, ỹ_1)`` (the first inner loss).

Fast weights use :func:`torch.func.functional_call`; buffers (BatchNorm running statistics) are passed as
copies so the unrolled forwards never change the model's own statistics. In train mode BatchNorm normalises
with batch statistics, so LD works with any norm, but the default learners use instance norm or none.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from ..training import make_optimizer
from .labels import LearnedLabels, soft_cross_entropy
from .learners import OptimizerSpec, PlainLearner


def unrolled_outer_loss(model: nn.Module, inner: list[tuple[torch.Tensor, torch.Tensor]], x_target: torch.Tensor,
                        y_target: torch.Tensor, inner_lr: float,
                        params: dict[str, torch.Tensor] | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Outer loss after k unrolled inner SGD steps (spec §4 steps 2–4; k = ``len(inner)``).

    Args:
        model: the network; its parameters are θ (unless ``params`` is given), its buffers are copied.
        inner: k pairs ``(x̃_j (B, C, H, W), ỹ_j (B, K))``; ỹ_j may require grad (the learned labels).
        x_target: normalised target images ``(M, C, H, W)``.
        y_target: int64 target classes ``(M,)``.
        inner_lr: SGD step size α.
        params: starting weights by name (default: ``model.named_parameters()``).

    Returns:
        ``(loss, logits, grads)``: the outer cross-entropy (scalar, differentiable with respect to the labels
        through the unrolled steps), the target logits ``(M, K)`` and the detached gradient of the first inner
        loss at θ, one tensor per parameter (what the online model update uses).
    """
    fast = dict(model.named_parameters()) if params is None else dict(params)
    names = list(fast)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    first_grads: list[torch.Tensor] = []
    for j, (xb, yb) in enumerate(inner):
        loss_in = soft_cross_entropy(functional_call(model, {**fast, **buffers}, (xb,)), yb)
        grads = torch.autograd.grad(loss_in, [fast[n] for n in names], create_graph=True)
        if j == 0:
            first_grads = [g.detach() for g in grads]
        fast = {n: fast[n] - inner_lr * g for n, g in zip(names, grads)}
    logits = functional_call(model, {**fast, **buffers}, (x_target,))
    return F.cross_entropy(logits, y_target), logits, first_grads


class LDMetaLearner:
    """The LD method's meta-learner: a persistent model trained online, reset on plateau.

    Args:
        make_model: builds a freshly initialised network (train mode) on the right device.
        model_lr: Adam learning rate of the online model.
        inner_lr: SGD step size α of the unrolled steps.
        inner_steps: number k of unrolled steps per outer step.
    """

    head = "plain"

    def __init__(self, make_model: Callable[[], nn.Module], model_lr: float, inner_lr: float, inner_steps: int):
        self.make_model, self.model_lr = make_model, model_lr
        self.inner_lr, self.inner_steps = inner_lr, inner_steps
        self.reset()

    def reset(self) -> None:
        """Re-initialise the model and its Adam optimiser (spec §5)."""
        self.model = self.make_model()
        self.optimizer = make_optimizer("adam", self.model.parameters(), self.model_lr)

    def outer_step(self, labels: LearnedLabels, x_base: torch.Tensor, inner_idx: list[torch.Tensor],
                   x_target: torch.Tensor, y_target: torch.Tensor) -> float:
        """One outer step: label update through the unroll, then one online Adam step of the model.

        Args:
            labels: the learned labels (updated in place).
            x_base: normalised base images ``(N, C, H, W)``.
            inner_idx: k index batches into the base examples, one per unrolled step.
            x_target: normalised target batch ``(M, C, H, W)``.
            y_target: its int64 classes ``(M,)``.

        Returns:
            Top-1 error (fraction) of the unrolled model on the target batch (for the plateau tracker).
        """
        y_all = labels.probs()
        inner = [(x_base[idx], y_all[idx]) for idx in inner_idx]
        loss, logits, grads = unrolled_outer_loss(self.model, inner, x_target, y_target, self.inner_lr)
        (g_labels,) = torch.autograd.grad(loss, labels.raw)
        labels.step(g_labels)
        self.optimizer.zero_grad(set_to_none=True)
        for p, g in zip(self.model.parameters(), grads):
            p.grad = g
        self.optimizer.step()
        return float((logits.detach().argmax(1) != y_target).float().mean())

    def base_images(self, x_base: torch.Tensor) -> torch.Tensor:
        """The images the labels belong to: the fixed base examples themselves."""
        return x_base

    def state_dict(self) -> dict:
        """The online model's weights and its Adam state (references: copy before keeping them)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output into the current model and optimiser (same architecture)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def new_learner(self, optimizer: OptimizerSpec | None = None) -> PlainLearner:
        """A fresh plain learner of the same architecture (Adam at the model lr unless given)."""
        return PlainLearner(self.make_model(), optimizer or OptimizerSpec("adam", self.model_lr))


def saved_tensor_bytes(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Run ``fn`` and count the bytes of the tensors autograd saves for the backward pass.

    This is the graph memory of an unrolled step: it grows linearly with the number of inner steps k. Storage
    shared by several saved tensors is counted once.

    Returns:
        ``(fn's result, bytes)``.
    """
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            seen[(storage.data_ptr(), t.device.index or 0)] = storage.nbytes()
        except (RuntimeError, NotImplementedError):
            seen[(id(t), -1)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, int(sum(seen.values()))


def profile_outer_step(make_model: Callable[[], nn.Module], x_base: torch.Tensor, labels: torch.Tensor,
                       x_target: torch.Tensor, y_target: torch.Tensor, inner_steps: int, inner_batch: int,
                       inner_lr: float = 0.01, repeats: int = 5, seed: int = 0) -> dict:
    """Time and graph memory of one LD outer step (label gradient included) with k unrolled steps.

    Args:
        make_model: network factory.
        x_base: normalised base images ``(N, C, H, W)``.
        labels: initial label distributions ``(N, K)``.
        x_target: normalised target batch ``(M, C, H, W)``.
        y_target: its int64 classes ``(M,)``.
        inner_steps: k.
        inner_batch: base examples per inner step.
        inner_lr: α.
        repeats: timed outer steps (after one warm-up step).
        seed: seed of the model initialisation and the inner batches.

    Returns:
        ``{"inner_steps", "seconds_per_step"`` (wall), ``"cpu_seconds_per_step"`` (this process's CPU time, less
        sensitive to other jobs on shared cores), ``"saved_tensor_bytes", "cuda_peak_bytes"}``; the last is
        ``None`` off CUDA.
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    learner = LDMetaLearner(make_model, 1e-3, inner_lr, inner_steps)
    lab = LearnedLabels(labels, "prob", 1e-3)
    device = x_base.device

    def batches() -> list[torch.Tensor]:
        return [torch.randperm(len(x_base), generator=g)[:inner_batch].to(device) for _ in range(inner_steps)]

    def one_step() -> torch.Tensor:
        y_all = lab.probs()
        inner = [(x_base[i], y_all[i]) for i in batches()]
        loss, _, _ = unrolled_outer_loss(learner.model, inner, x_target, y_target, inner_lr)
        return loss

    learner.outer_step(lab, x_base, batches(), x_target, y_target)
    loss, nbytes = saved_tensor_bytes(one_step)
    torch.autograd.grad(loss, lab.raw)
    del loss
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        learner.outer_step(lab, x_base, batches(), x_target, y_target)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / repeats
    cpu_seconds = (time.process_time() - c0) / repeats
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    return {"inner_steps": inner_steps, "seconds_per_step": seconds, "cpu_seconds_per_step": cpu_seconds,
            "saved_tensor_bytes": nbytes, "cuda_peak_bytes": peak}
