"""RR: first-order label distillation with a closed-form ridge-regression head (Bohdal et al. 2020, §3;
spec §6).

The network is a feature extractor ``f_θ`` (the learner's ``embed``) and a linear head ``H`` of shape
``(d + 1, C)`` (bias row included). On an inner batch with features ``Φ = [f_θ(x̃), 1]`` ``(n, d + 1)``, the
ridge-regression weights that map the features to the (soft) labels ``Ỹ`` ``(n, C)`` are, in dual form,

    W_l = Φᵀ (Φ Φᵀ + λ I_n)⁻¹ Ỹ,

differentiable in both Ỹ and Φ through :func:`torch.linalg.solve`. The global head is an exponential moving
average, ``H ← (1 − ε) · stopgrad(H) + ε · W_l`` (ε = 0.01), and logits are ``Φ · (s · H)`` with a learned
calibration scale ``s`` (initialised to 1, Adam lr 0.01). The outer cross-entropy on a target batch reaches
the labels only through ``ε · W_l``; the feature extractor and ``s`` are trained on the soft cross-entropy of
the base batch against the *detached* labels. Test predictions use ``Φ · H`` (argmax unchanged by ``s``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .labels import LearnedLabels, soft_cross_entropy
from .learners import OptimizerSpec


def with_bias(features: torch.Tensor) -> torch.Tensor:
    """Append a constant-1 column: ``(n, d)`` → ``(n, d + 1)``."""
    return torch.cat([features, features.new_ones(features.shape[0], 1)], dim=1)


def ridge_solve(phi: torch.Tensor, targets: torch.Tensor, lam: float) -> torch.Tensor:
    """Dual-form ridge regression ``W = Φᵀ (Φ Φᵀ + λ I)⁻¹ Y`` (spec §6, "inner problem, closed form").

    Equal to the primal ``(Φᵀ Φ + λ I)⁻¹ Φᵀ Y`` (push-through identity) but solves an ``n × n`` system, which is
    cheaper when the batch ``n`` is smaller than the feature size. Differentiable in ``phi`` and ``targets``.

    Args:
        phi: features ``(n, d)`` (usually with a bias column).
        targets: regression targets ``(n, C)``.
        lam: ridge penalty λ > 0.

    Returns:
        Weights ``(d, C)``.
    """
    n = phi.shape[0]
    gram = phi @ phi.T + lam * torch.eye(n, dtype=phi.dtype, device=phi.device)
    return phi.T @ torch.linalg.solve(gram, targets)


class RRLearner:
    """Feature extractor + EMA ridge head + scale, trained on (images, soft labels) (spec §6).

    This is the paper's evaluation learner for RR labels ("RR learner"); :class:`RRMetaLearner` extends it
    with the label update.

    Args:
        model: a registry network; its ``embed`` gives the features ``(n, d)``.
        num_classes: C.
        optimizer: optimiser of the feature extractor's parameters.
        lam: ridge penalty λ.
        ema: EMA rate ε of the head.
        scale_lr: Adam learning rate of the scale ``s``.
    """

    head = "rr"

    def __init__(self, model: nn.Module, num_classes: int, optimizer: OptimizerSpec, lam: float = 1.0,
                 ema: float = 0.01, scale_lr: float = 0.01):
        self.model, self.lam, self.ema = model, lam, ema
        p = next(model.parameters())
        self.H = torch.zeros(model.feature_dim + 1, num_classes, dtype=p.dtype, device=p.device)
        self.scale = torch.ones((), dtype=p.dtype, device=p.device, requires_grad=True)
        self.optimizer = optimizer.build(list(model.parameters()))
        self.scale_optimizer = torch.optim.Adam([self.scale], lr=scale_lr)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[f_θ(x), 1]`` ``(B, d + 1)``."""
        return with_bias(self.model.embed(x))

    def head_update(self, phi: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(1 − ε) · stopgrad(H) + ε · W_l`` for features ``phi`` and labels ``y`` (not yet stored)."""
        return (1.0 - self.ema) * self.H + self.ema * ridge_solve(phi, y, self.lam)

    def update_features(self, phi: torch.Tensor, head: torch.Tensor, y: torch.Tensor,
                        retain_graph: bool = False) -> float:
        """Optimiser step of θ and ``s`` on ``softCE(Φ · (s · head), stopgrad(y))``; then store ``H = head``."""
        loss = soft_cross_entropy(phi @ (self.scale * head), y.detach())
        params = list(self.model.parameters())
        # The network's own classifier layer is not part of embed(): its gradient is None and it never moves.
        grads = torch.autograd.grad(loss, params + [self.scale], retain_graph=retain_graph, allow_unused=True)
        self.optimizer.zero_grad(set_to_none=True)
        self.scale_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(params + [self.scale], grads):
            p.grad = g
        self.optimizer.step()
        self.scale_optimizer.step()
        self.H = head.detach()
        return float(loss.detach())

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One step on base images ``x`` ``(B, C, H, W)`` with label distributions ``y`` ``(B, K)``."""
        phi = self.features(x)
        return self.update_features(phi, self.head_update(phi, y), y)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``Φ · H`` ``(B, K)`` in eval mode (no scale: the argmax does not depend on it)."""
        self.model.eval()
        out = self.features(x) @ self.H
        self.model.train()
        return out


class RRMetaLearner:
    """The RR method's meta-learner (spec §6 and §11).

    Args:
        make_model: builds a freshly initialised network (train mode) on the right device.
        num_classes: C.
        model_lr: Adam learning rate of the feature extractor.
        lam: ridge penalty λ.
        ema: EMA rate ε of the head.
        scale_lr: Adam learning rate of the scale ``s``.
    """

    head = "rr"

    def __init__(self, make_model: Callable[[], nn.Module], num_classes: int, model_lr: float, lam: float,
                 ema: float, scale_lr: float):
        self.make_model, self.num_classes, self.model_lr = make_model, num_classes, model_lr
        self.lam, self.ema, self.scale_lr = lam, ema, scale_lr
        self.reset()

    def reset(self) -> None:
        """Re-initialise the feature extractor and its Adam optimiser, zero the head, ``s = 1`` (spec §5)."""
        self.learner = self.new_learner()

    def outer_step(self, labels: LearnedLabels, x_base: torch.Tensor, inner_idx: list[torch.Tensor],
                   x_target: torch.Tensor, y_target: torch.Tensor) -> float:
        """One outer step: label gradient through the ridge solve, then the first-order feature update.

        Args:
            labels: the learned labels (updated in place).
            x_base: normalised base images ``(N, C, H, W)``.
            inner_idx: index batches into the base examples; RR uses the first.
            x_target: normalised target batch ``(M, C, H, W)``.
            y_target: its int64 classes ``(M,)``.

        Returns:
            Top-1 error (fraction) of ``Φ_t · (s · H_new)`` on the target batch.
        """
        rr = self.learner
        idx = inner_idx[0]
        y_b = labels.probs()[idx]
        phi_b = rr.features(x_base[idx])
        head = rr.head_update(phi_b, y_b)
        with torch.no_grad():  # the outer loss needs no gradient with respect to θ
            phi_t = rr.features(x_target)
        logits = phi_t @ (rr.scale * head)
        loss = F.cross_entropy(logits, y_target)
        (g_labels,) = torch.autograd.grad(loss, labels.raw, retain_graph=True)
        rr.update_features(phi_b, head, y_b)
        labels.step(g_labels)
        return float((logits.detach().argmax(1) != y_target).float().mean())

    def base_images(self, x_base: torch.Tensor) -> torch.Tensor:
        """The images the labels belong to: the fixed base examples themselves."""
        return x_base

    def state_dict(self) -> dict:
        """The online RR learner: feature extractor weights, its Adam state, the head ``H`` ``(d + 1, C)``, the
        scale ``s`` and its Adam state (references: copy before keeping them)."""
        rr = self.learner
        return {"model": rr.model.state_dict(), "optimizer": rr.optimizer.state_dict(), "H": rr.H,
                "scale": rr.scale.detach(), "scale_optimizer": rr.scale_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output into the current learner (same architecture and classes)."""
        rr = self.learner
        rr.model.load_state_dict(state["model"])
        rr.optimizer.load_state_dict(state["optimizer"])
        rr.H = state["H"].to(rr.H.device, rr.H.dtype)
        with torch.no_grad():
            rr.scale.copy_(state["scale"])
        rr.scale_optimizer.load_state_dict(state["scale_optimizer"])

    def new_learner(self, optimizer: OptimizerSpec | None = None) -> RRLearner:
        """A fresh RR learner of the same architecture (Adam at the model lr unless given)."""
        return RRLearner(self.make_model(), self.num_classes, optimizer or OptimizerSpec("adam", self.model_lr),
                         self.lam, self.ema, self.scale_lr)
