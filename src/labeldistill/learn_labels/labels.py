"""Label sets and the learned-label parameterisations (Bohdal et al. 2020, spec §3 and §14).

Every label set is an ``(N, C)`` float tensor whose rows are probability distributions over the C target
classes. :class:`LearnedLabels` holds the trainable parameters behind one and their Adam optimiser:

- ``prob`` (the paper): the parameters *are* the probabilities; after every Adam step they are clamped to
  [0, 1] and each row is renormalised to sum to 1 (:func:`project_rows`).
- ``logits``: labels = ``softmax(z / T)``; always on the simplex, no projection needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-Σ_c targets_c · log softmax(logits)_c`` (spec §3, inner loss).

    Args:
        logits: ``(B, C)``.
        targets: ``(B, C)`` label distributions.

    Returns:
        Scalar loss (nats).
    """
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def uniform_labels(n: int, num_classes: int) -> torch.Tensor:
    """``(n, C)`` rows equal to ``1 / C`` (the paper's initialisation)."""
    return torch.full((n, num_classes), 1.0 / num_classes)


def onehot_labels(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(n, C)`` one-hot rows of int64 ``classes`` ``(n,)``.

    Raises:
        ConfigError: a class index is outside ``0..C-1``.
    """
    if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= num_classes):
        raise ConfigError(f"class indices must lie in 0..{num_classes - 1} to build one-hot labels over the "
                          f"target classes, got {int(classes.min())}..{int(classes.max())}")
    return F.one_hot(classes, num_classes).float()


def smooth_labels(labels: torch.Tensor, amount: float) -> torch.Tensor:
    """Label smoothing: ``(1 - amount) · labels + amount / C`` for ``(n, C)`` distributions."""
    return (1.0 - amount) * labels + amount / labels.shape[1]


def project_rows(y: torch.Tensor) -> torch.Tensor:
    """The paper's crude simplex projection: clamp to [0, 1], then divide each row by its sum.

    A row that clamps to all zeros becomes uniform (the reference would divide by zero).

    Args:
        y: ``(N, C)``.

    Returns:
        ``(N, C)`` non-negative rows summing to 1.
    """
    y = y.clamp(0.0, 1.0)
    s = y.sum(dim=1, keepdim=True)
    uniform = torch.full_like(y, 1.0 / y.shape[1])
    return torch.where(s > 0, y / s.clamp_min(torch.finfo(y.dtype).tiny), uniform)


def param_state(raw: torch.Tensor, optimizer: torch.optim.Optimizer) -> dict:
    """A learned tensor and its optimiser as ``{"raw", "optimizer"}`` (references: copy before keeping them)."""
    return {"raw": raw.detach(), "optimizer": optimizer.state_dict()}


def load_param_state(raw: torch.Tensor, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Restore :func:`param_state`'s output into ``raw`` (in place, same shape) and ``optimizer``."""
    with torch.no_grad():
        raw.copy_(state["raw"])
    optimizer.load_state_dict(state["optimizer"])


class LearnedLabels:
    """Trainable soft labels for N base examples, with their Adam optimiser.

    Args:
        init: ``(N, C)`` initial label distributions.
        param: ``prob`` or ``logits``.
        lr: Adam learning rate.
        temperature: softmax temperature of the ``logits`` parameterisation.

    Raises:
        ConfigError: unknown ``param``, or ``logits`` with a zero initial probability.
    """

    def __init__(self, init: torch.Tensor, param: str = "prob", lr: float = 1e-3, temperature: float = 1.0):
        if param not in ("prob", "logits"):
            raise ConfigError(f"unknown labels.param '{param}'; known: logits, prob")
        self.param, self.temperature = param, temperature
        init = init.detach().float()
        if param == "prob":
            raw = project_rows(init.clone())
        else:
            if bool((init <= 0).any()):
                raise ConfigError("labels.param=logits needs strictly positive initial labels; "
                                  "set labels.init_smoothing > 0")
            raw = init.log() * temperature
        self.raw = raw.requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.raw], lr=lr)

    def probs(self) -> torch.Tensor:
        """The current labels ``(N, C)`` as a differentiable function of the parameters."""
        if self.param == "prob":
            return self.raw
        return torch.softmax(self.raw / self.temperature, dim=1)

    def step(self, grad: torch.Tensor) -> None:
        """One Adam step with gradient ``grad`` (same shape as the parameters), then project (``prob``)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.raw.grad = grad.detach()
        self.optimizer.step()
        if self.param == "prob":
            with torch.no_grad():
                self.raw.copy_(project_rows(self.raw))

    def snapshot(self) -> torch.Tensor:
        """A detached copy of the current label distributions ``(N, C)``."""
        with torch.no_grad():
            return self.probs().detach().clone()

    def state_dict(self) -> dict:
        """The parameters ``(N, C)`` and their Adam state (:func:`param_state`), for a mid-run resume file."""
        return param_state(self.raw, self.optimizer)

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output (same N, C and parameterisation)."""
        load_param_state(self.raw, self.optimizer, state)
