"""Training primitives shared by meta-training and meta-test: optimisers, minibatch sampling, the plateau
tracker, the plain-network learner and the fresh-model training loop (Bohdal et al. 2020, spec §5, §7, §8).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol, TypeVar

import torch
import torch.nn as nn

from ..config import ModelConfig
from ..errors import ConfigError
from ..models import build_model
from ..training import make_optimizer
from .labels import soft_cross_entropy

T = TypeVar("T")


@dataclass
class OptimizerSpec:
    """An optimiser for fresh models: ``sgd``, ``sgd_momentum``, ``adam`` or ``adamw`` with its settings."""

    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.01

    def build(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        """The optimiser over ``params``.

        Raises:
            ConfigError: unknown optimiser name.
        """
        if self.name == "sgd":
            return make_optimizer("sgd", params, self.lr)
        if self.name == "sgd_momentum":
            return make_optimizer("sgd", params, self.lr, momentum=self.momentum)
        if self.name in ("adam", "adamw"):
            return make_optimizer(self.name, params, self.lr, weight_decay=self.weight_decay)
        raise ConfigError(f"unknown optimizer '{self.name}'; known: adam, adamw, sgd, sgd_momentum")


def build_network(spec: ModelConfig, num_classes: int, shape: tuple[int, int, int],
                  device: torch.device) -> nn.Module:
    """A freshly initialised registry model for images of ``shape`` = ``(C, H, W)``, in train mode.

    Raises:
        RegistryError: unknown model name or option.
    """
    return build_model(spec, num_classes, shape).to(device).train()


class MinibatchSampler:
    """Cycles through seeded random permutations of ``range(n)``, yielding index batches of size ``batch``.

    ``drop_last=True`` drops a permutation's tail shorter than ``batch``, so every batch has exactly
    ``min(batch, n)`` items; ``drop_last=False`` yields the tail as a last, shorter batch of the pass, as a
    ``DataLoader`` with its default ``drop_last=False`` does (the label-distillation reference's target loader).
    """

    def __init__(self, n: int, batch: int, generator: torch.Generator, drop_last: bool = True):
        self.n, self.batch, self.generator, self.drop_last = n, min(batch, n), generator, drop_last
        self._order = torch.empty(0, dtype=torch.long)
        self._pos = 0

    def next(self) -> torch.Tensor:
        """The next int64 index batch ``(batch,)`` (the last of a pass shorter when ``drop_last`` is False)."""
        left = len(self._order) - self._pos
        if left <= 0 or (self.drop_last and left < self.batch):
            self._order = torch.randperm(self.n, generator=self.generator)
            self._pos = 0
        idx = self._order[self._pos:self._pos + self.batch]
        self._pos += len(idx)
        return idx

    def state_dict(self) -> dict:
        """The generator's state (uint8 tensor), the current permutation (int64) and the position in it."""
        return {"rng": self.generator.get_state(), "order": self._order.clone(), "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output: the next batches are those the saved sampler would have drawn."""
        self.generator.set_state(state["rng"])
        self._order, self._pos = state["order"].clone(), int(state["pos"])

    def batches_per_pass(self) -> int:
        """Batches in one pass over the ``n`` items: ``⌊n / batch⌋`` with ``drop_last``, else ``⌈n / batch⌉``."""
        return self.n // self.batch if self.drop_last else -(-self.n // self.batch)


def outer_steps_per_epoch(n: int, batch: int, last_batch: str = "keep") -> int:
    """Label updates in one pass over ``n`` target images at ``batch`` (``meta.last_batch``: ``keep`` → ``⌈n / b⌉``,
    ``drop`` → ``⌊n / b⌋``, ``b = min(batch, n)``), as :class:`MinibatchSampler` yields them."""
    return MinibatchSampler(n, batch, torch.Generator(), drop_last=last_batch == "drop").batches_per_pass()


class PlateauTracker:
    """Moving average of the target error over a window W; reports a plateau (spec §5).

    After each update with the current step's error, the average of the last W errors is compared with its
    best value so far. When it has not reached a new minimum for W steps, :meth:`update` returns True and
    :attr:`best_step` is the training length (steps since the model's initialisation) at the minimum.
    """

    def __init__(self, window: int):
        self.window = window
        self.reset()

    def reset(self) -> None:
        """Forget everything (call after re-initialising the model)."""
        self.errors: deque[float] = deque(maxlen=self.window)
        self.step = 0
        self.best = float("inf")
        self.best_step = 0

    def update(self, error: float) -> bool:
        """Record one step's error (fraction); True when the moving average has plateaued."""
        self.step += 1
        self.errors.append(float(error))
        if len(self.errors) < self.window:
            return False
        avg = sum(self.errors) / self.window
        if avg < self.best:
            self.best, self.best_step = avg, self.step
            return False
        return self.step - self.best_step >= self.window

    def state_dict(self) -> dict:
        """The window's errors (list of floats), the step count, the best average and its step."""
        return {"errors": list(self.errors), "step": self.step, "best": self.best, "best_step": self.best_step}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.reset()
        self.errors.extend(float(e) for e in state["errors"])
        self.step, self.best, self.best_step = int(state["step"]), float(state["best"]), int(state["best_step"])


class Learner(Protocol):
    """Something that trains on (images, soft labels) batches and predicts logits."""

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float: ...

    def predict(self, x: torch.Tensor) -> torch.Tensor: ...


class PlainLearner:
    """A network trained with soft cross-entropy by an off-the-shelf optimiser (spec §8, meta-test).

    Args:
        model: the network (train mode).
        optimizer: an optimiser spec for the network's parameters.
    """

    def __init__(self, model: nn.Module, optimizer: OptimizerSpec):
        self.model = model
        self.optimizer = optimizer.build(list(model.parameters()))

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One optimiser step on ``x`` ``(B, C, H, W)`` (normalised) with label distributions ``y`` ``(B, K)``."""
        loss = soft_cross_entropy(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)`` in eval mode."""
        self.model.eval()
        out = self.model(x)
        self.model.train()
        return out


@torch.no_grad()
def error_rate(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
               batch: int = 1000) -> float:
    """Top-1 error (fraction in [0, 1]) of ``predict`` (images → logits) on normalised ``x`` ``(M, C, H, W)``.

    Args:
        predict: e.g. :meth:`PlainLearner.predict` or an eval-mode network.
        x: images.
        y: int64 classes ``(M,)``.
        batch: evaluation batch size.
    """
    wrong = 0
    for i in range(0, len(x), batch):
        wrong += int((predict(x[i:i + batch]).argmax(1) != y[i:i + batch]).sum())
    return wrong / max(len(x), 1)


def train_learner(learner: Learner, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int,
                  generator: torch.Generator, checkpoints: tuple[int, ...] = (),
                  on_checkpoint: Callable[[int], None] | None = None) -> Learner:
    """Train ``learner`` on the base examples for ``steps`` steps of random minibatches (spec §7, §8).

    Args:
        learner: a fresh learner.
        x: normalised base images ``(N, C, H, W)``.
        y: their label distributions ``(N, K)``.
        steps: number of optimiser steps.
        batch: minibatch size (``n_i``).
        generator: seeded generator of the minibatch order.
        checkpoints: step counts after which ``on_checkpoint(step)`` is called.
        on_checkpoint: callback, e.g. a validation pass.

    Returns:
        The trained learner.
    """
    sampler = MinibatchSampler(len(x), batch, generator)
    marks = set(checkpoints)
    for step in range(1, steps + 1):
        idx = sampler.next()
        learner.train_step(x[idx], y[idx])
        if on_checkpoint is not None and step in marks:
            on_checkpoint(step)
    return learner


def seeded(seed: int, fn: Callable[[], T]) -> T:
    """Call ``fn`` (e.g. a model constructor) with the global RNGs seeded to ``seed``, then restore them.

    Module initialisers draw from the global RNG; forking it keeps every other random stream of the run
    unchanged, so a fresh model for validation does not shift the meta-training's own initialisations.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()
