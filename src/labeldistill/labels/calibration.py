"""LPQLD's temperature calibration of (compressed) soft labels (``validate.calibration: lpqld``).

Source, and how far it goes: LPQLD is Xiao & He, "Soft Label Pruning and Quantization for Large-Scale Dataset
Distillation" (TPAMI 2026, arXiv 2604.18135). The paper's full text (its Sec. III-C/D/E equations) was **not**
available to us, only its abstract ("Label Quantization with Calibrated Student-Teacher Alignment", "Dynamic
Knowledge Reuse"). The rule below is read from the authors' official code, ``he-y/soft-label-pruning-quantization-
for-dataset-distillation`` at commit ``107c7a5``: ``relabel_and_validate/train_FKD_LPQLD.py`` (whose help strings
name paper Sec. III-C label quantization, III-D dynamic knowledge reuse, III-E calibrated alignment) and the
settings of its IN-1K reproduction script ``scripts/reproduce/lpqld_in1k.sh`` (``MR-k``, ``T = 20``, ``step``
schedule with step 30 and factor 0.7, dynamic student temperature starting at 1.0). What is implemented:

1. **Missing logits** (label quantization ``MR-k``, "marginal re-normalisation", the recommended one): the
   teacher distribution is a softmax over the ``k`` stored logits only, and every class not stored gets
   probability 0. This is already how :meth:`~labeldistill.labels.store.StepRecord.soft_targets` decodes a
   top-k store; with all logits stored it is the ordinary softmax. (The code's ``MS-k`` uniform fill and
   ``MRS-k`` minimum-logit fill are not implemented.)
2. **Teacher temperature** (dynamic knowledge reuse, ``step`` scheduler): in training epoch ``e`` (1-based, as
   the code counts), ``T_t(e) = max(T · γ^⌊e / s⌋, T_min)`` with ``T = validate.temperature``,
   ``s = lpqld_step``, ``γ = lpqld_gamma`` and ``T_min = lpqld_min_temperature`` (the code hard-codes 2). The
   targets are ``softmax(logits / T_t(e))`` over the stored logits.
3. **Student temperature** (calibrated alignment, the code's ``temp_stu_dynamic``): the student's
   log-probabilities are ``log_softmax(s / T_s)``; ``T_s`` starts at ``lpqld_student_temperature`` and, after each
   epoch, becomes the ``t`` in ``{0.01, 0.02, ..., 1.00}`` that minimises ``KL(p ‖ softmax(s / t))`` on the
   student outputs and targets of the epoch's last batch (:func:`search_student_temperature`). With
   ``lpqld_student_search: false`` it stays fixed (the code's ``temp_stu``).
4. **Loss**: ``KL(p ‖ softmax(s / T_s))`` averaged over the batch, times ``T_t(e)²`` when ``validate.t2_scale``
   (the code scales by the current teacher temperature squared on Tiny-ImageNet and not on ImageNet).

Not reproduced: on Tiny-ImageNet the code hands ``log_softmax`` of the stored logits to ``KLDivLoss`` as its target
(which expects probabilities); here the target is always the probabilities. Under torchrun each rank searches the
student temperature on its own share of the last batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

STUDENT_GRID = tuple(round(0.01 * i, 2) for i in range(1, 101))  # the code's np.linspace(0.01, 1, 100)


def teacher_temperature(epoch: int, base: float, step: int, gamma: float, minimum: float) -> float:
    """``max(base · gamma^⌊epoch / step⌋, minimum)`` for 1-based training epoch ``epoch`` (rule 2 above)."""
    return max(base * gamma ** (epoch // step), minimum)


def calibrated_kl(student_logits: torch.Tensor, targets: torch.Tensor, student_temperature: float,
                  teacher_temperature: float, t2_scale: bool = True) -> torch.Tensor:
    """``KL(p ‖ softmax(s / T_s))`` averaged over the batch, times ``T_t²`` if ``t2_scale`` (rule 4 above).

    Args:
        student_logits: ``(B, K)``.
        targets: ``p``, the teacher's probabilities at ``T_t`` (zeros allowed), ``(B, K)``.
    """
    loss = F.kl_div(F.log_softmax(student_logits / student_temperature, 1), targets, reduction="batchmean")
    return loss * teacher_temperature ** 2 if t2_scale else loss


@torch.no_grad()
def search_student_temperature(student_logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The ``t`` of :data:`STUDENT_GRID` minimising ``KL(p ‖ softmax(s / t))`` on one batch (rule 3 above; the
    first one on ties).

    Args:
        student_logits: ``(B, K)``; targets: ``(B, K)`` probabilities.
    """
    s = student_logits.detach().float()
    losses = [float(F.kl_div(F.log_softmax(s / t, 1), targets, reduction="batchmean")) for t in STUDENT_GRID]
    return STUDENT_GRID[min(range(len(losses)), key=losses.__getitem__)]
