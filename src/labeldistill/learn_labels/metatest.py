"""Meta-test: fresh models trained from scratch on the base examples and a label set only (Bohdal et al.
2020, spec §8).

A row of the results is one (label set, learner, optimiser): the training length is either the one found
during meta-training (LD/RR labels on their own learner with Adam, the paper's protocol) or searched on the
validation split (``find_best_num_steps``: one fresh model, validation error at fixed checkpoints, the first
minimum wins), then ``repeats`` fresh models with different initialisations are trained for that many steps
and their top-1 accuracy on the real test split gives mean ± std. The test split is never used to choose
anything.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..config import ModelConfig
from .learners import (
    Learner,
    OptimizerSpec,
    PlainLearner,
    build_network,
    error_rate,
    seeded,
    train_learner,
)
from .rr import RRLearner


@dataclass
class EvalData:
    """Everything a fresh-model evaluation needs.

    Attributes:
        x_base: normalised base images ``(N, C, H, W)``.
        x_val: normalised validation images ``(V, C, H, W)`` (held out of the target train split).
        y_val: their int64 classes ``(V,)``.
        x_test: normalised real test images ``(T, C, H, W)``.
        y_test: their int64 classes ``(T,)``.
        num_classes: number of target classes K.
        shape: ``(C, H, W)`` of one image.
        device: where models train.
        batch: minibatch size of fresh-model training (``n_i``).
        max_steps: longest training length considered.
        eval_batch: batch size of evaluation passes.
    """

    x_base: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    shape: tuple[int, int, int]
    device: torch.device
    batch: int
    max_steps: int
    eval_batch: int = 1000


@dataclass
class LearnerSpec:
    """How fresh models are built and trained.

    Attributes:
        arch: the network.
        head: ``plain`` (softmax classifier trained by the optimiser) or ``rr`` (feature extractor + EMA
            ridge head + scale, the paper's RR learner).
        optimizer: optimiser of the network's parameters.
        lam: ridge penalty (``rr``).
        ema: head EMA rate (``rr``).
        scale_lr: Adam learning rate of the scale (``rr``).
    """

    arch: ModelConfig
    head: str = "plain"
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    lam: float = 1.0
    ema: float = 0.01
    scale_lr: float = 0.01

    @property
    def name(self) -> str:
        """``convnet`` or ``rr+convnet`` (the head marks the RR learner)."""
        return self.arch.name if self.head == "plain" else f"rr+{self.arch.name}"

    def build(self, data: EvalData) -> Learner:
        """A freshly initialised learner (uses the global RNG: wrap in :func:`seeded`)."""
        model = build_network(self.arch, data.num_classes, data.shape, data.device)
        if self.head == "rr":
            return RRLearner(model, data.num_classes, self.optimizer, self.lam, self.ema, self.scale_lr)
        return PlainLearner(model, self.optimizer)


def step_checkpoints(max_steps: int, n_base: int) -> tuple[int, ...]:
    """Checkpoints of the step-count search (spec §8, ``find_best_num_steps``).

    N ≤ 100: 10, 25, 75 and every 50 up to ``max_steps``; N > 100: 10, 25, 75, 101, 201, … up to ``max_steps``.
    ``max_steps`` itself is always a checkpoint.
    """
    marks = {10, 25, 75}
    if n_base <= 100:
        marks |= set(range(50, max_steps + 1, 50))
    else:
        marks |= set(range(101, max_steps + 1, 100))
    marks.add(max_steps)
    return tuple(sorted(m for m in marks if m <= max_steps))


def search_steps(spec: LearnerSpec, data: EvalData, labels: torch.Tensor, seed: int) -> tuple[int, list[dict]]:
    """Choose the training length on the validation split.

    Args:
        spec: the learner.
        data: base examples, validation split, sizes.
        labels: label distributions of the base examples ``(N, K)``.
        seed: seed of the fresh model and its minibatch order.

    Returns:
        ``(steps, curve)``: the checkpoint with the lowest validation error (the earliest on ties) and the
        ``[{"steps", "val_error"}]`` curve.
    """
    curve: list[dict] = []
    learner = seeded(seed, lambda: spec.build(data))

    def check(step: int) -> None:
        curve.append({"steps": step, "val_error": error_rate(learner.predict, data.x_val, data.y_val, data.eval_batch)})

    marks = step_checkpoints(data.max_steps, len(data.x_base))
    train_learner(learner, data.x_base, labels, marks[-1], data.batch, torch.Generator().manual_seed(seed),
                  marks, check)
    best = min(curve, key=lambda c: (c["val_error"], c["steps"]))
    return int(best["steps"]), curve


def repeat_accuracies(spec: LearnerSpec, data: EvalData, labels: torch.Tensor, steps: int, repeats: int,
                    seed: int, desc: str = "meta-test") -> list[float]:
    """Top-1 accuracy on the test split of ``repeats`` fresh models trained for ``steps`` steps.

    Repeat ``r`` initialises its model with seed ``seed + r`` and draws its minibatches from a generator
    seeded the same way.

    Returns:
        One accuracy (fraction in [0, 1]) per repeat.
    """
    accs = []
    for r in tqdm(range(repeats), desc=desc, unit="model", leave=False):
        learner = seeded(seed + r, lambda: spec.build(data))
        train_learner(learner, data.x_base, labels, steps, data.batch, torch.Generator().manual_seed(seed + r))
        accs.append(1.0 - error_rate(learner.predict, data.x_test, data.y_test, data.eval_batch))
    return accs


def evaluate_label_set(spec: LearnerSpec, data: EvalData, labels: torch.Tensor, repeats: int, seed: int,
                       steps: int | None = None, desc: str = "meta-test") -> dict:
    """One result row: step count (given, or searched on validation), then ``repeats`` test accuracies.

    Args:
        spec: the learner.
        data: base examples, validation and test splits.
        labels: ``(N, K)`` label distributions.
        repeats: fresh models trained for the test.
        seed: base seed of this row's models.
        steps: training length; ``None`` searches it on the validation split.
        desc: progress-bar label.

    Returns:
        ``learner``, ``head``, ``arch``, ``arch_args``, ``optimizer``, ``lr``, ``steps``, ``step_rule``
        (``meta-train`` or ``val-search``), ``top1_mean``, ``top1_std`` (population std over repeats; 0 for
        one repeat), ``top1_all``, ``repeats``, ``seconds``.
    """
    t0 = time.perf_counter()
    rule = "meta-train"
    curve: list[dict] = []
    if steps is None:
        steps, curve = search_steps(spec, data, labels, seed + 50_000)
        rule = "val-search"
    accs = repeat_accuracies(spec, data, labels, steps, repeats, seed, desc)
    return {
        "learner": spec.name, "head": spec.head, "arch": spec.arch.name, "arch_args": dict(spec.arch.args),
        "optimizer": spec.optimizer.name, "lr": spec.optimizer.lr, "steps": steps, "step_rule": rule,
        "top1_mean": statistics.fmean(accs), "top1_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
        "top1_all": accs, "repeats": repeats, "val_curve": curve, "seconds": round(time.perf_counter() - t0, 2),
    }
