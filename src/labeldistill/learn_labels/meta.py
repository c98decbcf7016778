"""The meta-training loop shared by LD, RR and DD (Bohdal et al. 2020; spec §5, §7, §11).

Per outer step: one target batch, ``k`` random inner batches of base examples, the meta-learner's outer step
(label update + online model update), and the plateau tracker; on a plateau the model is re-initialised
and the training length at the moving-average minimum is recorded. Every ``val_every`` epochs (and after
the last), a fresh model is trained on (base examples, current labels) for the mean of the last three
recorded lengths (or the current length if no reset happened yet), its error on the held-out validation
split is measured, and the labels with the lowest validation error are kept together with that step count.
DD (:mod:`.dd`) runs the same loop with fixed one-hot labels and learned images: the meta-learner's
``base_images`` gives the images the validation model trains on, and the best images are kept with the labels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from tqdm.auto import tqdm

from .labels import LearnedLabels
from .learners import (
    Learner,
    MinibatchSampler,
    PlateauTracker,
    error_rate,
    seeded,
    train_learner,
)


class MetaLearner(Protocol):
    """LD, RR or DD (:class:`~labeldistill.learn_labels.ld.LDMetaLearner`, ...): what the loop needs from a
    method's meta-learner."""

    head: str

    def reset(self) -> None: ...

    def base_images(self, x_base: torch.Tensor) -> torch.Tensor: ...

    def outer_step(self, labels: LearnedLabels, x_base: torch.Tensor, inner_idx: list[torch.Tensor],
                   x_target: torch.Tensor, y_target: torch.Tensor) -> float: ...

    def new_learner(self) -> Learner: ...


@dataclass
class MetaResult:
    """Outcome of meta-training.

    Attributes:
        labels: the best labels ``(N, C)`` (lowest validation error).
        steps: their training length (``best_num_steps``).
        val_error: their validation error (fraction).
        final_labels: the labels after the last outer step ``(N, C)``.
        outer_steps: outer steps taken.
        reset_lengths: recorded training lengths, one per plateau reset.
        history: one dict per model-selection check (epoch, outer step, steps, val_error, target_error).
        seconds: wall time of the loop (validation included).
        seconds_per_step: mean wall time of one outer step (validation excluded).
        images: DD only: the best learned images ``(N, C, H, W)`` (normalised units), else ``None``.
        final_images: DD only: the images after the last outer step.
    """

    labels: torch.Tensor
    steps: int
    val_error: float
    final_labels: torch.Tensor
    outer_steps: int
    reset_lengths: list[int] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    seconds_per_step: float = 0.0
    images: torch.Tensor | None = None
    final_images: torch.Tensor | None = None


def validation_steps(reset_lengths: list[int], current: int, max_steps: int) -> int:
    """Training length for a validation model (spec §7): mean of the last 3 reset lengths, else ``current``.

    Clamped to ``[1, max_steps]``.
    """
    n = round(sum(reset_lengths[-3:]) / len(reset_lengths[-3:])) if reset_lengths else current
    return int(min(max(n, 1), max_steps))


def meta_train(meta_learner: MetaLearner, labels: LearnedLabels, x_base: torch.Tensor, x_target: torch.Tensor,
               y_target: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, *, epochs: int,
               outer_batch: int, inner_batch: int, inner_steps: int, window: int, val_every: int, max_steps: int,
               seed: int, eval_batch: int = 1000, desc: str = "meta", last_batch: str = "keep",
               log: Callable[..., None] | None = None) -> MetaResult:
    """Learn labels for the base examples (spec §11, ``meta_train``).

    Args:
        meta_learner: an :class:`~labeldistill.learn_labels.ld.LDMetaLearner`,
            :class:`~labeldistill.learn_labels.rr.RRMetaLearner` or :class:`~labeldistill.learn_labels.dd.DDMetaLearner`.
        labels: the learned labels (updated in place).
        x_base: normalised base images ``(N, C, H, W)``.
        x_target, y_target: normalised outer-loss target images ``(M, C, H, W)`` and their int64 classes.
        x_val, y_val: normalised validation images ``(V, C, H, W)`` (held out of the target train split), classes.
        epochs: passes over the target images.
        outer_batch: target images per outer step.
        inner_batch: base examples per inner batch.
        inner_steps: inner batches per outer step (LD's unrolled steps; RR uses one).
        window: plateau window W.
        val_every: epochs between model-selection checks.
        max_steps: cap of the validation training length.
        seed: seed of the target and inner batch order and of the validation models' initialisation.
        eval_batch: batch size of the validation pass. desc: progress-bar label.
        last_batch: ``keep`` (the reference's: ``⌈M / outer_batch⌉`` label updates per epoch) or ``drop`` (``⌊…⌋``).
        log: optional callback receiving keyword metrics (e.g. :meth:`MetricsLog.log`).

    Returns:
        The best labels, their step count and the run's history.
    """
    target_sampler = MinibatchSampler(len(x_target), outer_batch, torch.Generator().manual_seed(seed + 1), last_batch == "drop")
    inner_gen = torch.Generator().manual_seed(seed + 2)
    steps_per_epoch = target_sampler.batches_per_pass()  # = outer_steps_per_epoch(M, outer_batch, last_batch)
    run = _MetaRun(meta_learner, labels, x_base, PlateauTracker(window), desc, log)
    device = x_base.device
    t0 = time.perf_counter()
    recent: list[float] = []
    bar = tqdm(total=epochs * steps_per_epoch, desc=desc, unit="step")
    for epoch in range(1, epochs + 1):
        recent = []
        for _ in range(steps_per_epoch):
            t_idx = target_sampler.next().to(device)
            recent.append(run.outer_step(x_target[t_idx], y_target[t_idx], inner_gen, inner_batch, inner_steps))
            bar.update(1)
        best_val = f"{run.best[0]:.3f}" if run.best[0] < float("inf") else "-"
        bar.set_postfix(err=f"{sum(recent) / len(recent):.3f}", resets=len(run.lengths), best_val=best_val)
        if epoch % val_every == 0 or epoch == epochs:
            run.select(epoch, recent, max_steps, inner_batch, x_val, y_val, seed, eval_batch)
    bar.close()
    return run.result(time.perf_counter() - t0)


class _MetaRun:
    """Mutable state of one :func:`meta_train` run: step counts, reset lengths, history and the best labels."""

    def __init__(self, meta_learner: MetaLearner, labels: LearnedLabels, x_base: torch.Tensor, tracker: PlateauTracker,
                 desc: str, log: Callable[..., None] | None) -> None:
        self.meta_learner, self.labels, self.x_base, self.tracker, self.desc, self.log = (
            meta_learner, labels, x_base, tracker, desc, log)
        self.lengths: list[int] = []
        self.history: list[dict] = []
        self.best = (float("inf"), labels.snapshot(), 1, meta_learner.base_images(x_base))
        self.step_time, self.step = 0.0, 0

    def outer_step(self, x_target: torch.Tensor, y_target: torch.Tensor, inner_gen: torch.Generator,
                   inner_batch: int, inner_steps: int) -> float:
        """One timed outer step; on a plateau, records the length and re-initialises the model. Returns the error."""
        err, seconds = _timed_outer_step(self.meta_learner, self.labels, self.x_base, x_target, y_target, inner_gen,
                                         inner_batch, inner_steps)
        self.step_time += seconds
        self.step += 1
        if self.tracker.update(err):
            self.lengths.append(self.tracker.best_step)
            if self.log is not None:
                self.log(event="reset", method=self.desc, outer_step=self.step, length=self.tracker.best_step)
            self.meta_learner.reset()
            self.tracker.reset()
        return err

    def select(self, epoch: int, recent: list[float], max_steps: int, inner_batch: int, x_val: torch.Tensor,
               y_val: torch.Tensor, seed: int, eval_batch: int) -> None:
        """Model selection: validation error of the current labels; keeps them if it is the lowest so far."""
        n = validation_steps(self.lengths, self.tracker.step, max_steps)
        current, images = self.labels.snapshot(), self.meta_learner.base_images(self.x_base)
        err = _validation_error(self.meta_learner, images, current, n, inner_batch, x_val, y_val, seed, eval_batch)
        entry = {"epoch": epoch, "outer_step": self.step, "steps": n, "val_error": err,
                 "target_error": sum(recent) / max(len(recent), 1)}
        self.history.append(entry)
        if self.log is not None:
            self.log(event="select", method=self.desc, **entry)
        if err < self.best[0]:
            self.best = (err, current, n, images)

    def result(self, seconds: float) -> MetaResult:
        """The run's :class:`MetaResult` (``seconds``: wall time of the run)."""
        val_error, best_labels, best_steps, best_images = self.best
        learned = best_images is not self.x_base  # DD: its images, LD/RR: the fixed base examples
        return MetaResult(labels=best_labels, steps=best_steps, val_error=val_error,
                          final_labels=self.labels.snapshot(), outer_steps=self.step, reset_lengths=self.lengths,
                          history=self.history, seconds=seconds, seconds_per_step=self.step_time / max(self.step, 1),
                          images=best_images if learned else None,
                          final_images=self.meta_learner.base_images(self.x_base) if learned else None)


def _timed_outer_step(meta_learner: MetaLearner, labels: LearnedLabels, x_base: torch.Tensor, x_target: torch.Tensor,
                      y_target: torch.Tensor, inner_gen: torch.Generator, inner_batch: int,
                      inner_steps: int) -> tuple[float, float]:
    """Draw the inner batches, run one outer step; returns (target error, seconds of the step itself)."""
    inner_idx = [torch.randperm(len(x_base), generator=inner_gen)[:inner_batch].to(x_base.device)
                 for _ in range(inner_steps)]
    ts = time.perf_counter()
    err = meta_learner.outer_step(labels, x_base, inner_idx, x_target, y_target)
    return err, time.perf_counter() - ts


def _validation_error(meta_learner: MetaLearner, x_base: torch.Tensor, labels: torch.Tensor, steps: int,
                      inner_batch: int, x_val: torch.Tensor, y_val: torch.Tensor, seed: int, eval_batch: int) -> float:
    """Error on the validation split of a fresh learner trained ``steps`` steps on the base examples + labels."""
    learner = seeded(seed + 10_000, meta_learner.new_learner)
    train_learner(learner, x_base, labels, steps, inner_batch, torch.Generator().manual_seed(seed + 3))
    return error_rate(learner.predict, x_val, y_val, eval_batch)
