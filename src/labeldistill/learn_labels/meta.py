"""The meta-training loop shared by LD, RR and DD (Bohdal et al. 2020; spec §5, §7, §11).

Per outer step: one target batch, ``k`` random inner batches of base examples, the meta-learner's outer step
(label update + online model update), and the plateau tracker; on a plateau the model is re-initialised
and the training length at the moving-average minimum is recorded. Every ``val_every`` epochs (and after
the last), a fresh model is trained on (base examples, current labels) for the mean of the last three
recorded lengths (or the current length if no reset happened yet), its error on the held-out validation
split is measured, and the labels with the lowest validation error are kept together with that step count.
DD (:mod:`.dd`) runs the same loop with fixed one-hot labels and learned images: the meta-learner's
``base_images`` gives the images the validation model trains on, and the best images are kept with the labels.
With a :class:`MetaCheckpoint` the loop saves its whole state at the end of an epoch (at most every
``meta.checkpoint_seconds``) and a killed run continues from the last save with the same bytes (CPU).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Protocol

import torch
from tqdm.auto import tqdm

from ..resume import Throttle, fault_point
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

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


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


@dataclass
class MetaCheckpoint:
    """Mid-run saving and resuming of :func:`meta_train` (the run's resume file holds the state).

    At the end of an epoch (never after the last), at most every ``seconds``, the loop's whole state is handed
    to ``save`` and then the fault point ``fault`` (:func:`~labeldistill.resume.fault_point`) is passed; a run
    started with that state continues from the next epoch and ends with the same labels, images and history as
    one never stopped (CPU).

    Attributes:
        state: a state saved by an earlier, killed run (resume from it), or ``None`` (start afresh).
        save: writes a state: a dict of CPU tensors, numbers, strings, lists and dicts (what
            ``torch.load(weights_only=True)`` reads; RNG states are uint8 tensors).
        seconds: least time between two saves (seconds; 0: every epoch).
        fault: fault-point name passed after each save.
    """

    state: dict | None
    save: Callable[[dict], None]
    seconds: float = 60.0
    fault: str = "meta-epoch"
    _due: Throttle = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._due = Throttle(self.seconds)

    def maybe_save(self, make_state: Callable[[], dict]) -> None:
        """Save ``make_state()`` when due, then pass the fault point."""
        if self._due():
            self.save(make_state())
            fault_point(self.fault)


def meta_train(meta_learner: MetaLearner, labels: LearnedLabels, x_base: torch.Tensor, x_target: torch.Tensor,
               y_target: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, *, epochs: int,
               outer_batch: int, inner_batch: int, inner_steps: int, window: int, val_every: int, max_steps: int,
               seed: int, eval_batch: int = 1000, desc: str = "meta", last_batch: str = "keep",
               log: Callable[..., None] | None = None, checkpoint: MetaCheckpoint | None = None) -> MetaResult:
    """Learn labels for the base examples (spec §11, ``meta_train``).

    Args:
        meta_learner: an :class:`~labeldistill.learn_labels.ld.LDMetaLearner`,
            :class:`~labeldistill.learn_labels.rr.RRMetaLearner` or :class:`~labeldistill.learn_labels.dd.DDMetaLearner`.
        labels: the learned labels (updated in place).
        x_base: normalised base images ``(N, C, H, W)``.
        x_target, y_target: normalised outer-loss target images ``(M, C, H, W)`` and their int64 classes.
        x_val, y_val: normalised validation images ``(V, C, H, W)`` (held out of the target train split), classes.
        epochs: passes over the target images. outer_batch: target images per outer step.
        inner_batch: base examples per inner batch.
        inner_steps: inner batches per outer step (LD's unrolled steps; RR uses one).
        window: plateau window W. val_every: epochs between model-selection checks.
        max_steps: cap of the validation training length.
        seed: seed of the target and inner batch order and of the validation models' initialisation.
        eval_batch: batch size of the validation pass. desc: progress-bar label.
        last_batch: ``keep`` (the reference's: ``⌈M / outer_batch⌉`` label updates per epoch) or ``drop`` (``⌊…⌋``).
        log: optional callback receiving keyword metrics (e.g. :meth:`MetricsLog.log`).
        checkpoint: save the loop state during the run and resume from a saved one (:class:`MetaCheckpoint`);
            ``None``: neither. The progress bar starts at the resumed outer step.

    Returns:
        The best labels, their step count and the run's history.
    """
    sampler = MinibatchSampler(len(x_target), outer_batch, torch.Generator().manual_seed(seed + 1), last_batch == "drop")
    run = _MetaRun(meta_learner, labels, x_base, PlateauTracker(window), sampler,
                   torch.Generator().manual_seed(seed + 2), desc, log)
    first = run.load_state_dict(checkpoint.state) + 1 if checkpoint is not None and checkpoint.state else 1
    steps_per_epoch = sampler.batches_per_pass()  # = outer_steps_per_epoch(M, outer_batch, last_batch)
    bar = tqdm(total=epochs * steps_per_epoch, initial=run.step, desc=desc, unit="step")
    for epoch in range(first, epochs + 1):
        recent: list[float] = []
        for _ in range(steps_per_epoch):
            recent.append(run.outer_step(x_target, y_target, inner_batch, inner_steps))
            bar.update(1)
        best_val = f"{run.best[0]:.3f}" if run.best[0] < float("inf") else "-"
        bar.set_postfix(err=f"{sum(recent) / len(recent):.3f}", resets=len(run.lengths), best_val=best_val)
        if epoch % val_every == 0 or epoch == epochs:
            run.select(epoch, recent, max_steps, inner_batch, x_val, y_val, seed, eval_batch)
        if checkpoint is not None and epoch < epochs:
            checkpoint.maybe_save(partial(run.state_dict, epoch))
    bar.close()
    return run.result()


class _MetaRun:
    """Mutable state of one :func:`meta_train` run: the batch streams, step counts, reset lengths, history, the
    best labels and the time spent (also before a resume)."""

    def __init__(self, meta_learner: MetaLearner, labels: LearnedLabels, x_base: torch.Tensor, tracker: PlateauTracker,
                 sampler: MinibatchSampler, inner_gen: torch.Generator, desc: str,
                 log: Callable[..., None] | None) -> None:
        self.meta_learner, self.labels, self.x_base, self.tracker, self.desc, self.log = (
            meta_learner, labels, x_base, tracker, desc, log)
        self.sampler, self.inner_gen = sampler, inner_gen
        self.lengths: list[int] = []
        self.history: list[dict] = []
        self.best = (float("inf"), labels.snapshot(), 1, meta_learner.base_images(x_base))
        self.step_time, self.step = 0.0, 0
        self.seconds_before, self.t0 = 0.0, time.perf_counter()

    def outer_step(self, x_target: torch.Tensor, y_target: torch.Tensor, inner_batch: int, inner_steps: int) -> float:
        """One timed outer step on the next target batch; on a plateau, records the length and re-initialises the
        model. Returns the target error (fraction)."""
        t_idx = self.sampler.next().to(self.x_base.device)
        err, seconds = _timed_outer_step(self.meta_learner, self.labels, self.x_base, x_target[t_idx],
                                         y_target[t_idx], self.inner_gen, inner_batch, inner_steps)
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

    def state_dict(self, epoch: int) -> dict:
        """Everything the loop needs to continue after finished epoch ``epoch`` (CPU copies, see
        :class:`MetaCheckpoint`): labels and learner with their optimisers, tracker, batch streams, torch's global
        RNG (model re-initialisations draw from it), counters, history and the best snapshot (its images only
        when they are learned, DD)."""
        err, best_labels, steps, images = self.best
        return _cpu_copy({
            "epoch": epoch, "step": self.step, "step_time": self.step_time, "seconds": self.seconds(),
            "lengths": self.lengths, "history": self.history,
            "best": {"val_error": err, "labels": best_labels, "steps": steps,
                     "images": None if images is self.x_base else images},
            "labels": self.labels.state_dict(), "learner": self.meta_learner.state_dict(),
            "tracker": self.tracker.state_dict(), "sampler": self.sampler.state_dict(),
            "inner_rng": self.inner_gen.get_state(), "rng": _global_rng_state(self.x_base.device)})

    def load_state_dict(self, state: dict) -> int:
        """Restore :meth:`state_dict`'s output; returns the last finished epoch."""
        device = self.x_base.device
        self.step, self.step_time, self.seconds_before = int(state["step"]), state["step_time"], state["seconds"]
        self.lengths, self.history = list(state["lengths"]), list(state["history"])
        b = state["best"]
        images = self.x_base if b["images"] is None else b["images"].to(device)
        self.best = (b["val_error"], b["labels"].to(device), int(b["steps"]), images)
        self.labels.load_state_dict(state["labels"])
        self.meta_learner.load_state_dict(state["learner"])
        self.tracker.load_state_dict(state["tracker"])
        self.sampler.load_state_dict(state["sampler"])
        self.inner_gen.set_state(state["inner_rng"])
        _set_global_rng_state(state["rng"], device)
        return int(state["epoch"])

    def seconds(self) -> float:
        """Wall time of the loop so far (seconds), the runs before a resume included."""
        return self.seconds_before + time.perf_counter() - self.t0

    def result(self) -> MetaResult:
        """The run's :class:`MetaResult`."""
        val_error, best_labels, best_steps, best_images = self.best
        learned = best_images is not self.x_base  # DD: its images, LD/RR: the fixed base examples
        return MetaResult(labels=best_labels, steps=best_steps, val_error=val_error,
                          final_labels=self.labels.snapshot(), outer_steps=self.step, reset_lengths=self.lengths,
                          history=self.history, seconds=self.seconds(),
                          seconds_per_step=self.step_time / max(self.step, 1),
                          images=best_images if learned else None,
                          final_images=self.meta_learner.base_images(self.x_base) if learned else None)


def _cpu_copy(obj: object) -> object:
    """``obj`` with every tensor replaced by a detached CPU copy (dicts, lists and tuples walked)."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def _global_rng_state(device: torch.device) -> dict:
    """torch's global CPU RNG state (uint8 tensor) and, on CUDA, the device's."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_global_rng_state(state: dict, device: torch.device) -> None:
    """Restore :func:`_global_rng_state`'s output (the CUDA part only on CUDA)."""
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


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
