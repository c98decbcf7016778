"""DD: dataset distillation of the base images (Wang, Zhu, Torralba & Efros 2018, arXiv 1811.10959), run with
the same second-order machinery as LD so that the two can be compared on an equal footing (issue #13 item 7).

Where LD learns the labels ỹ of N fixed real images, DD learns the N images x̃ themselves and keeps their labels
fixed one-hot. One outer step, from the current weights θ of the same persistent, online-trained model as LD:

1. k unrolled inner SGD steps on the soft cross-entropy of base minibatches (learned images, one-hot labels),
   ``θ_{j+1} = θ_j − α ∇_θ L_in(θ_j; x̃_j, y_j)``, graph kept (:func:`~labeldistill.learn_labels.ld.unrolled_outer_loss`);
2. outer loss: hard-label cross-entropy of ``f(x_t; θ_k)`` on a real target batch;
3. gradient of the outer loss with respect to the pixels x̃ (Hessian-vector terms included); Adam step on x̃;
4. online training of θ: one Adam step on the first inner loss, plateau resets, validation-based selection of the
   best snapshot and of the training length: all exactly as LD (:mod:`.meta`).

Follows Wang et al.: pixels are free parameters (normalised space, no clamping), initialised from real images
or from noise (their "random init", N(0, 1) in normalised units); labels are fixed one-hot; the meta-gradient
is second order through unrolled SGD steps; Adam on the pixels.

Departs from Wang et al.:

- the inner step size α is fixed (``ld.inner_lr``), not learned per step;
- the unroll starts from the online model θ (reset on plateau, as LD), not from a fresh random initialisation
  drawn every outer step, and k = ``ld.inner_steps`` (1 by default) instead of their 10 steps × 3 epochs;
- inner batches are random subsets of the N images, not a fixed ordered sequence; the distilled images are
  meta-tested like label sets, by fresh models trained with off-the-shelf optimisers and a validated
  training length, not by replaying the learned step sizes in the learned order.

These departures make the comparison with LD a comparison of *what* is learned (pixels vs labels) under one
budget (same outer steps, inner batch, unroll, online model, resets and meta-test).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .config import DD_INITS
from .labels import LearnedLabels, load_param_state, param_state
from .ld import LDMetaLearner, unrolled_outer_loss


def initial_images(x_base: torch.Tensor, init: str, seed: int) -> torch.Tensor:
    """Starting pixels of DD ``(N, C, H, W)`` in normalised units.

    Args:
        x_base: the normalised real base examples ``(N, C, H, W)``.
        init: ``real`` (a copy of ``x_base``) or ``noise`` (standard normal, seeded).
        seed: seed of the noise.

    Raises:
        ValueError: unknown ``init`` (the config check names the accepted values first).
    """
    if init == "real":
        return x_base.detach().clone()
    if init == "noise":
        g = torch.Generator().manual_seed(seed)
        return torch.randn(x_base.shape, generator=g).to(x_base.device, x_base.dtype)
    raise ValueError(f"unknown dd.init '{init}'; known: {', '.join(DD_INITS)}")


class LearnedImages:
    """Trainable pixels of N distilled images with their Adam optimiser.

    Args:
        init: ``(N, C, H, W)`` starting images (normalised units).
        lr: Adam learning rate of the pixels.
    """

    def __init__(self, init: torch.Tensor, lr: float):
        self.raw = init.detach().clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.raw], lr=lr)

    def step(self, grad: torch.Tensor) -> None:
        """One Adam step with gradient ``grad`` ``(N, C, H, W)``."""
        self.optimizer.zero_grad(set_to_none=True)
        self.raw.grad = grad.detach()
        self.optimizer.step()

    def snapshot(self) -> torch.Tensor:
        """A detached copy of the current images ``(N, C, H, W)``."""
        return self.raw.detach().clone()

    def state_dict(self) -> dict:
        """The pixels ``(N, C, H, W)`` and their Adam state (:func:`~.labels.param_state`)."""
        return param_state(self.raw, self.optimizer)

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output (same N, C, H, W)."""
        load_param_state(self.raw, self.optimizer, state)


class DDMetaLearner(LDMetaLearner):
    """The DD method's meta-learner: LD's online model and unroll, gradient to the pixels.

    Args:
        make_model: builds a freshly initialised network (train mode) on the right device.
        images: the learned images (updated in place).
        model_lr: Adam learning rate of the online model.
        inner_lr: SGD step size α of the unrolled steps (fixed).
        inner_steps: number k of unrolled steps per outer step.
    """

    def __init__(self, make_model: Callable[[], nn.Module], images: LearnedImages, model_lr: float, inner_lr: float,
                 inner_steps: int):
        self.images = images
        super().__init__(make_model, model_lr, inner_lr, inner_steps)

    def base_images(self, x_base: torch.Tensor) -> torch.Tensor:
        """The current learned images ``(N, C, H, W)`` (detached); ``x_base`` is ignored."""
        return self.images.snapshot()

    def state_dict(self) -> dict:
        """LD's online model and optimiser (:meth:`LDMetaLearner.state_dict`) plus the images and their Adam state."""
        return {**super().state_dict(), "images": self.images.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output."""
        super().load_state_dict(state)
        self.images.load_state_dict(state["images"])

    def outer_step(self, labels: LearnedLabels, x_base: torch.Tensor, inner_idx: list[torch.Tensor],
                   x_target: torch.Tensor, y_target: torch.Tensor) -> float:
        """One outer step: pixel update through the unroll, then one online Adam step of the model.

        Args:
            labels: the fixed one-hot labels ``(N, K)`` (read, never stepped).
            x_base: unused (the images are :attr:`images`); kept for the loop's interface.
            inner_idx: k index batches into the N images, one per unrolled step.
            x_target: normalised target batch ``(M, C, H, W)``.
            y_target: its int64 classes ``(M,)``.

        Returns:
            Top-1 error (fraction) of the unrolled model on the target batch (for the plateau tracker).
        """
        y_all = labels.probs().detach()
        x_all = self.images.raw
        inner = [(x_all[idx], y_all[idx]) for idx in inner_idx]
        loss, logits, grads = unrolled_outer_loss(self.model, inner, x_target, y_target, self.inner_lr)
        (g_images,) = torch.autograd.grad(loss, x_all)
        self.images.step(g_images)
        self.optimizer.zero_grad(set_to_none=True)
        for p, g in zip(self.model.parameters(), grads):
            p.grad = g
        self.optimizer.step()
        return float((logits.detach().argmax(1) != y_target).float().mean())
