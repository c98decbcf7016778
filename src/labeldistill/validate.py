"""Stage 6, validate: train a fresh student on synthetic images + stored (pruned) soft labels.

Each stored step is replayed exactly: its images are cropped, flipped and mixed with the stored parameters
(the same code path relabel used), and the student is trained towards the stored teacher logits with
``T² · KL(softmax(t / T) ‖ softmax(s / T))`` (Hinton et al. 2015; ``validate.loss: kl``, the default; ``soft_ce``
and a GIFT-style cosine loss are the alternatives, see :func:`student_loss`). Each training epoch draws
``steps_per_epoch`` step ids uniformly **with replacement** from the kept pool (granularity ``batch``: LPLD's
improved label pool, spec §6.3), or replays one whole kept stored epoch drawn with replacement (granularity
``epoch``); with replay ``ordered`` (the default at factor 1, the reference's ``order``) training epoch e replays
kept stored epoch e (mod their number) in stored order instead. Top-k stores are turned back into distributions: softmax over the kept logits, 0 elsewhere. The student trains on
:class:`~labeldistill.labels.loader.SoftLabelBatches` (stock ``torch.utils.data``: a map-style dataset indexed by
step id and a sampler that yields step ids; labels read lazily from the memory-mapped shards), the object users
get for their own training loop.

``validate.label_source: online | generator`` replaces the stored logits by those of a frozen label model (the
teacher, or the small generator of :mod:`labeldistill.labels.generator`) run on each replayed batch; the store
then only supplies the augmentations (:class:`LabelFeed`). ``validate.label_source: static`` replaces them by the
per-image logits a set brought with it (``images/<mode>/image_logits.safetensors``, a DD-Ranking set's
``labels.pt``): each entry's target is ``softmax(z_i / T)`` of its own image ``i``, the replayed crops, flips and
CutMix changing the pixels only, as DD-Ranking 0.2.0's mode ``S`` does (``utils/train_and_eval.py``:
``aug_func(images)`` leaves the targets alone; ``loss/kl.py``: ``softmax(tea_outputs / T)``). ``validate.calibration: lpqld`` applies LPQLD's
temperature calibration (:mod:`labeldistill.labels.calibration`).
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from safetensors.torch import save as save_safetensors
from torch import nn

from .config import Config, config_to_dict
from .data import ImageSet, iter_batches, load_split, normalize, resolve_augmentation
from .data.synthetic import image_bytes, load_image_logits, load_synthetic
from .distributed import broadcast_buffers, rank_world, sync_batchnorm, wrap_ddp
from .errors import LabelDistillError, StoreError
from .io import MetricsLog, atomic_write_bytes, atomic_write_json, read_json, settings_key
from .labels.calibration import calibrated_kl, search_student_temperature, teacher_temperature
from .labels.loader import (
    PoolSampler,
    SoftLabelBatches,
    open_store,
)
from .labels.pool import recipe_mismatch
from .labels.sources import label_model_bytes, load_label_model, static_labels_file
from .labels.store import LabelStore
from .layout import REAL_TRAIN, LabelVariant, RunLayout
from .hard_augment import hard_augmentation
from .models import build_model
from .main_stages import GENERATOR, HARD_LABEL, VALIDATE, label_feed_of
from .provenance import (
    FINGERPRINT_VERSION,
    StageRef,
    numerics_settings,
    fingerprint,
    model_tag,
    student_config,
)
from .protocols import hard_recipe
from .runner import Stage, check_unit, run_unit
from .runtime import autocast, is_rank0, pick_device
from .training import (Checkpointer, StepGuard, cosine_lr, decay_groups, evaluate, evaluate_topk, fit,
                       make_optimizer, schedule_lr)


def kd_loss(student_logits: torch.Tensor, targets: torch.Tensor, temperature: float,
            t2_scale: bool = True) -> torch.Tensor:
    """``KL(p ‖ softmax(s / T))`` averaged over the batch, times ``T²`` if ``t2_scale`` (Hinton et al. 2015).

    Args:
        student_logits: ``(B, K)``.
        targets: teacher probabilities ``p`` at temperature ``T``, ``(B, K)``, rows summing to 1 (zeros allowed).
    """
    loss = F.kl_div(F.log_softmax(student_logits / temperature, 1), targets, reduction="batchmean")
    return loss * (temperature * temperature) if t2_scale else loss


def soft_ce_loss(student_logits: torch.Tensor, targets: torch.Tensor, temperature: float,
                 t2_scale: bool = True) -> torch.Tensor:
    """Soft cross-entropy ``−Σ_k p_k log softmax(s / T)_k`` averaged over the batch, times ``T²`` if ``t2_scale``.

    Same gradient as :func:`kd_loss` (they differ by the teacher's entropy, a constant), different value.
    """
    loss = -(targets * F.log_softmax(student_logits / temperature, 1)).sum(1).mean()
    return loss * (temperature * temperature) if t2_scale else loss


def gift_loss(student_logits: torch.Tensor, targets: torch.Tensor, hard: torch.Tensor, temperature: float,
              alpha: float = 0.5, smoothing: float = 0.1) -> torch.Tensor:
    """GIFT-style loss (after Shao et al. 2024, "GIFT: Unlocking full potential of labels in distilled dataset at
    near-zero cost"; not a verified reproduction of their code).

    What is implemented: the hard label is smoothed, ``h = (1 − ε)·onehot(y) + ε / K``; the target is
    ``q = normalize(α·p + (1 − α)·h)`` (L2 normalisation; the cosine ignores the scale anyway); the loss is
    ``1 − cos(softmax(s / T), q)`` averaged over the batch. No ``T²`` factor.

    Scale: the cosine is bounded and ``softmax(s / T)`` flattens as ``T`` grows, so the gradient is far smaller
    than :func:`kd_loss`'s (``T²``-scaled): about 1/100 of it at ``T = 20``, 1/25 at 4, 1/5 at 1 (random
    logits, ``tests/test_validate_losses.py``). Under plain SGD at a KD learning rate (e.g. ``validate.protocol:
    dc``'s 0.01) the student barely trains at ``T = 20``; use a low ``T``, a larger learning rate or an adaptive
    optimiser (AdamW), as GIFT's paper plugs it into AdamW-trained students.

    Args:
        student_logits: ``(B, K)``.
        targets: the soft labels ``p`` at temperature ``T``, ``(B, K)``.
        hard: int64 ``(B,)`` hard labels (the class of each entry's own image, before CutMix).
        alpha: ``α``, the weight of the soft label.
        smoothing: ``ε``.
    """
    k = targets.shape[1]
    h = F.one_hot(hard.long(), k).to(targets.dtype) * (1 - smoothing) + smoothing / k
    q = F.normalize(alpha * targets + (1 - alpha) * h, dim=1)
    return (1 - F.cosine_similarity(F.softmax(student_logits / temperature, 1), q, dim=1)).mean()


def student_loss(vc, student_logits: torch.Tensor, targets: torch.Tensor,
                 hard: torch.Tensor | None = None) -> torch.Tensor:
    """The loss ``validate.loss`` names (``kl``: :func:`kd_loss`, ``soft_ce``, ``gift``) with ``vc``'s settings."""
    if vc.loss == "kl":
        return kd_loss(student_logits, targets, vc.temperature, vc.t2_scale)
    if vc.loss == "soft_ce":
        return soft_ce_loss(student_logits, targets, vc.temperature, vc.t2_scale)
    if vc.loss == "gift":
        return gift_loss(student_logits, targets, hard, vc.temperature, vc.gift_alpha, vc.gift_smoothing)
    raise LabelDistillError(f"unknown validate.loss '{vc.loss}'")


class LabelFeed:
    """The soft targets and the loss of one student run: the store's targets, a label model's or the images' own
    (``static``), and ``validate.calibration`` (``none``: :func:`student_loss` at ``validate.temperature``;
    ``lpqld``: :mod:`labeldistill.labels.calibration`'s teacher temperature schedule, searched student temperature
    and loss).

    Args:
        vc: the ``validate`` settings.
        label_model: frozen eval-mode model run on each replayed batch (``online`` / ``generator``), or ``None``
            (the stored labels).
        image_logits: float ``(N, K)`` per-image logits (``static``), turned into targets by the dataset
            (:class:`StoredStepDataset`), or ``None``.
    """

    def __init__(self, vc, label_model: torch.nn.Module | None = None, image_logits: torch.Tensor | None = None):
        self.vc, self.model, self.image_logits = vc, label_model, image_logits
        self.student_temperature = vc.lpqld_student_temperature

    def temperature(self, epoch: int | None) -> float:
        """The teacher temperature of 0-based training epoch ``epoch`` (``validate.temperature`` without
        calibration)."""
        vc = self.vc
        if vc.calibration == "none" or epoch is None:
            return vc.temperature
        return teacher_temperature(epoch + 1, vc.temperature, vc.lpqld_step, vc.lpqld_gamma, vc.lpqld_min_temperature)

    def targets(self, x: torch.Tensor, stored: torch.Tensor, epoch: int) -> torch.Tensor:
        """``(B, K)`` probabilities: ``stored`` (decoded by the dataset), or the label model's on ``x``."""
        if self.model is None:
            return stored
        with torch.no_grad():
            return torch.softmax(self.model(x).float() / self.temperature(epoch), 1)

    def loss(self, out: torch.Tensor, t: torch.Tensor, hard: torch.Tensor | None, epoch: int) -> torch.Tensor:
        """The student's loss on one batch."""
        if self.vc.calibration == "lpqld":
            return calibrated_kl(out, t, self.student_temperature, self.temperature(epoch), self.vc.t2_scale)
        return student_loss(self.vc, out, t, hard)

    def load_state(self, state: dict) -> None:
        """Restore the student temperature from a resume file (:class:`~labeldistill.training.Checkpointer`)."""
        self.student_temperature = state.get("student_temperature", self.student_temperature)

    def end_epoch(self, out: torch.Tensor, t: torch.Tensor) -> None:
        """After a training epoch (``out``, ``t``: its last batch): LPQLD's student temperature search."""
        if self.vc.calibration == "lpqld" and self.vc.lpqld_student_search:
            self.student_temperature = search_student_temperature(out, t)


def _resume_settings(vc) -> dict:
    """The validate settings a resume checkpoint is keyed by (keys at their no-effect defaults left out, so
    checkpoints written before they existed stay usable)."""
    d = config_to_dict(vc)
    d.pop("parallel")
    if vc.protocol is None:
        d.pop("protocol")
    if not vc.sync_bn:
        d.pop("sync_bn")
    if vc.label_source == "stored":
        d.pop("label_source")
    if vc.calibration == "none":
        for k in [k for k in d if k == "calibration" or k.startswith("lpqld_")]:
            d.pop(k)
    return d


def _batches(cfg: Config, store: LabelStore, data: ImageSet, feed: LabelFeed, epochs: int, replay: str,
             start: int, seed: int) -> SoftLabelBatches:
    """The training batches of a student run (this rank's rows of every replayed step); images kept as uint8
    (a quarter of a float copy)."""
    vc = cfg.validate
    return SoftLabelBatches(store, data.uint8_images(), feed.temperature if vc.calibration != "none" else
                            vc.temperature, epochs=epochs, seed=seed, replay=replay,
                            num_workers=cfg.data.workers, hard_labels=data.labels if vc.loss == "gift" else None,
                            start_epoch=start, image_logits=feed.image_logits)


def train_student(cfg: Config, store: LabelStore, data: ImageSet, test: ImageSet, desc: str = "validate",
                  log: MetricsLog | None = None, resume_path: Path | None = None, replay: str | None = None,
                  label_model: torch.nn.Module | None = None, image_logits: torch.Tensor | None = None,
                  seed: int | None = None, weights_path: Path | None = None) -> dict:
    """Train a student from ``store`` on ``data``'s images and evaluate it on ``test``.

    ``replay``: ``ordered`` or ``pool`` (:class:`PoolSampler`); ``None`` = ``ordered`` for an unpruned store
    (factor 1), ``pool`` otherwise. ``label_model``: take the targets from this frozen model run on each replayed
    batch instead of the stored logits (``validate.label_source`` ``online`` / ``generator``; :class:`LabelFeed`).
    ``image_logits``: float ``(N, K)`` per-image logits in ``data``'s order used instead (``static``).
    ``seed``: the student's seed (initialisation and pool draws; ``None`` = ``cfg.seed``; a repeat passes
    ``seed + repeat``). ``weights_path``: rank 0 writes the trained student's ``state_dict`` there (safetensors).

    The recipe (:class:`~labeldistill.config.ValidateConfig`): weight decay on parameters of two or more dimensions
    only unless ``weight_decay_1d`` (:func:`~labeldistill.training.decay_groups`), a cosine over epochs
    (``schedule: cosine_epoch``) or steps (``cosine_step``) after ``warmup_epochs`` of linear warm-up
    (:func:`~labeldistill.training.epoch_lr`), top-1 and top-5 on ``test`` every ``eval_every`` epochs and after
    the last (``history``; the reported numbers are the last epoch's, never a selection).

    With ``resume_path``, a checkpoint (model, optimiser, epoch, history) is saved at the end of an epoch at most
    every ``validate.checkpoint_seconds`` and an interrupted run continues from it, ending with the same weights.
    Under torchrun each stored step is split across ranks and gradients are averaged (DistributedDataParallel).

    Returns:
        ``{"top1": fraction, "top5": fraction, "history": [{"epoch", "top1", "top5"}, ...], "epochs": int,
        "steps": int, "seconds": float}`` (and ``student_temperature``, the last one, with ``calibration: lpqld``).

    Raises:
        LabelDistillError: the loss became NaN or infinite.
    """
    vc, m = cfg.validate, store.manifest
    seed = cfg.seed if seed is None else seed
    device = pick_device(cfg.device, cfg.deterministic)
    epochs = vc.epochs or m["epochs"]
    replay = replay or LabelVariant.default_replay(m["prune"]["factor"])
    student, net, opt = _build_student(vc, m["num_classes"], data.shape, seed, device)
    sampler = PoolSampler(store.step_ids, m["steps_per_epoch"], epochs, seed, m["prune"].get("granularity", "batch"),
                          replay=replay)
    total = len(sampler)
    feed, history = LabelFeed(vc, label_model, image_logits), []
    mean, std = tuple(m["normalization"]["mean"]), tuple(m["normalization"]["std"])

    def score() -> dict[str, float]:  # every rank scores rank 0's model on its slice of the split
        broadcast_buffers(student)
        return evaluate_topk(student, test, mean, std, device, vc.eval_batch_size, sharded=True)

    ckpt = _checkpointer(cfg, m, seed, replay, resume_path, feed, history, log, desc)
    loss, end_epoch = _student_step(cfg, net, feed, device, log, desc, epochs, score, history)
    t0 = time.time()
    fit(student, opt, epochs=epochs, total=total,
        lr=schedule_lr(vc.schedule, vc.lr, [sampler.epoch_len(e) for e in range(epochs)], vc.warmup_epochs),
        batches=_epoch_batches(lambda start: _batches(cfg, store, data, feed, epochs, replay, start, seed)),
        loss=loss, guard=StepGuard("student", "validate.lr", lambda epoch, i, step: f"step {step} ({desc})"),
        checkpoint=ckpt, end_epoch=end_epoch, desc=desc, leave=False)
    if weights_path is not None and is_rank0():
        _save_weights(weights_path, student)
    return _summary(history, epochs, total, round(time.time() - t0, 2),
                    feed.student_temperature if vc.calibration == "lpqld" else None)


def _save_weights(path: Path, student: nn.Module) -> None:
    """Write the student's ``state_dict`` to ``path`` (safetensors, CPU, contiguous)."""
    atomic_write_bytes(path, save_safetensors({k: v.detach().cpu().contiguous()
                                               for k, v in student.state_dict().items()}))


def _summary(history: list[dict], epochs: int, steps: int, seconds: float,
             student_temperature: float | None) -> dict:
    """:func:`train_student`'s result: the last epoch's top-1/top-5, the history and the run's size and time."""
    last = history[-1]
    return {"top1": last["top1"], "top5": last["top5"], "history": history, "epochs": epochs, "steps": steps,
            "seconds": seconds,
            **({"student_temperature": student_temperature} if student_temperature is not None else {})}


def _checkpointer(cfg: Config, m: dict, seed: int, replay: str, resume_path: Path | None, feed: LabelFeed,
                  history: list[dict], log: MetricsLog | None, desc: str) -> Checkpointer:
    """The end-of-epoch checkpointer of :func:`train_student` (keyed by everything that changes the weights; a
    resumed run drops its lines in ``log`` written after the save, see :class:`~labeldistill.training.Checkpointer`)."""
    vc = cfg.validate
    key = settings_key("validate", _resume_settings(vc), m["image_fingerprint"], m["shards"], seed,
                       rank_world()[1], replay, *numerics_settings(cfg).values())
    return Checkpointer(resume_path, key, "validate-epoch", vc.checkpoint_seconds,
                        lambda: {"student_temperature": feed.student_temperature, "history": list(history)},
                        lambda state: (feed.load_state(state), history.extend(state.get("history", []))),
                        metrics=log, metrics_match={"stage": "validate", "run": desc})


def _build_student(vc, num_classes: int, shape: tuple, seed: int,
                   device: torch.device) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer]:
    """The seeded student (channels-last, synced BatchNorm with ``sync_bn``), its DDP wrapper and its optimiser."""
    torch.manual_seed(seed)  # student initialisation
    student = build_model(vc.model, num_classes, shape).to(device).to(memory_format=torch.channels_last)
    if vc.sync_bn:
        student = sync_batchnorm(student, device)
    net = wrap_ddp(student, device)
    opt = make_optimizer(vc.optimizer, decay_groups(student, vc.weight_decay, vc.weight_decay_1d), vc.lr,
                         vc.momentum, vc.weight_decay)
    return student, net, opt


def _student_step(cfg: Config, net: nn.Module, feed: LabelFeed, device: torch.device, log: MetricsLog | None,
                  desc: str, epochs: int, score: Callable[[], dict], history: list) -> tuple[Callable, Callable]:
    """``loss(batch, epoch)`` and ``end_epoch(epoch, loss)`` of a student run for :func:`fit`: the student's loss
    towards ``feed``'s targets on one replayed batch; after each epoch ``feed.end_epoch`` on its last batch,
    every ``validate.eval_every`` epochs and after the last ``score()`` appended to ``history`` (with the epoch,
    1-based), and every 50 epochs a metrics line."""
    last: dict = {}
    every = cfg.validate.eval_every

    def loss(batch, epoch: int) -> torch.Tensor:
        x, t, *y = batch
        x = x.to(device).contiguous(memory_format=torch.channels_last)  # this rank's rows (SoftLabelBatches)
        with autocast(device, cfg.autocast):  # bf16 on CUDA unless autocast: off; a no-op on CPU
            last["out"] = net(x)
            last["t"] = feed.targets(x, t.to(device), epoch)
        return feed.loss(last["out"].float(), last["t"], y[0].to(device) if y else None, epoch)

    def end_epoch(epoch: int, loss: torch.Tensor) -> None:
        feed.end_epoch(last["out"].float(), last["t"])
        if epoch + 1 == epochs or (every and (epoch + 1) % every == 0):
            history.append({"epoch": epoch + 1, **score()})
        if log is not None and (epoch + 1) % 50 == 0:
            log.log(stage="validate", run=desc, epoch=epoch + 1, loss=loss.item())

    return loss, end_epoch


def _epoch_batches(make: Callable[[int], SoftLabelBatches]) -> Callable[[int], Iterable]:
    """``batches(epoch)`` for :func:`fit` from one :class:`SoftLabelBatches` iteration over every epoch (made by
    ``make(first epoch)`` at the first call, so its worker processes start once): each call takes the next
    ``epoch_len(epoch)`` steps of it."""
    run: dict = {}

    def batches(epoch: int) -> Iterable:
        if "it" not in run:
            run["src"] = make(epoch)
            run["it"] = iter(run["src"])
        return itertools.islice(run["it"], run["src"].epoch_len(epoch))

    return batches


def _source_fields(cfg: Config, weights: Path | None, layout: RunLayout) -> dict:
    """Row fields of a label model (``label_model``: its weights file) or of static labels (``label_file``: the
    per-image logits file), and of the calibration (its settings)."""
    vc = cfg.validate
    key = "label_file" if vc.label_source == "static" else "label_model"
    out = {} if weights is None else {key: str(weights.relative_to(layout.root))
                                      if weights.is_relative_to(layout.root) else str(weights)}
    if vc.calibration != "none":
        out.update({"calibration": vc.calibration, "lpqld_step": vc.lpqld_step, "lpqld_gamma": vc.lpqld_gamma,
                    "lpqld_min_temperature": vc.lpqld_min_temperature,
                    "lpqld_student_temperature": vc.lpqld_student_temperature,
                    "lpqld_student_search": vc.lpqld_student_search})
    return out


def validate(cfg: Config, mode: str, variant: LabelVariant | float, *rest: str, store_path: Path | None = None,
             force: bool = False, repeat: int = 0, **parts: str) -> dict:
    """Validate one (pruned) store of ``mode``; writes ``validate/<mode>_<tag>.json``.

    Args:
        cfg: the run's config.
        mode: recover mode whose images are used.
        variant: the :class:`~labeldistill.layout.LabelVariant`, or its factor followed by (or with keywords
            for) strategy, logits, granularity, pool and replay.
        store_path: validate this store instead of the variant's store in the run directory.
        force: redo a finished result.
        repeat: which fresh student of ``validate.repeats`` (student seed ``seed + repeat``; row file
            ``..._<tag>-rep<repeat>.json`` when above 0).

    Returns:
        The result row: recover, source (of the images: synthesis, random_real, rded, folder, tensor), ipc, prune_factor, prune_strategy, logits, granularity, label_store,
        label_source (``validate.label_source``), label_bytes (bytes on disk of the store, or with a label model
        its weights file, named in label_model, or with ``static`` the per-image logits file, named in label_file),
        image_bytes (bytes of the image files), kept_steps, student,
        student_args, seed, repeat, student_seed, recipe (the student's lr, optimizer, epochs, weight_decay,
        weight_decay_1d, schedule, warmup_epochs, eval_every), fingerprint (of every setting the row depends on),
        top1, top5 (the last epoch's), history (top1 / top5 per evaluation), epochs, steps, seconds,
        model_file (the trained student's weights, :meth:`~labeldistill.layout.RunLayout.student_weights`),
        pool, replay, loss, eval_split (the real split top1 is measured on: test or holdout).

    Raises:
        StoreError: missing store, a store that does not belong to the images, or a store or earlier result made
        with another pool or replay (never reused silently).
        StaleStageError: a finished result of this student made with other settings (without ``force``), or
        (``label_source: generator``) a label generator made with other settings (rerun the generator stage).
        LabelDistillError: (``label_source: static``) images imported without per-image soft labels.
    """
    v = LabelVariant.of(variant, *rest, **parts)
    layout = RunLayout(cfg.run_path)
    ref = VALIDATE.ref(mode, v, model_tag(cfg.validate.model), label_feed_of(cfg), repeat)
    out = VALIDATE.marker(cfg, ref, layout)

    def reuse() -> dict:
        row = read_json(out)
        if diff := recipe_mismatch(row, v, with_replay=True):
            raise StoreError(f"{out} was computed with {diff}: rerun with --force to recompute it")
        return _rekeyed(VALIDATE, cfg, ref, out, row)

    return run_unit(VALIDATE, cfg, ref, lambda: _validate(cfg, ref, layout, out, store_path), reuse=reuse,
                    force=force, layout=layout)


@VALIDATE.runs
def _validate_unit(cfg: Config, ref: StageRef, force: bool) -> dict:
    return validate(student_config(cfg, ref.student), ref.mode, ref.variant, force=force, repeat=ref.repeat)


def _validate(cfg: Config, ref: StageRef, layout: RunLayout, out: Path, store_path: Path | None
              ) -> tuple[dict, float]:
    """Train and score the student of ``ref``; writes its row on rank 0; returns ``(row, seconds)``."""
    mode, v, source = ref.mode, ref.variant, cfg.validate.label_source
    gen = GENERATOR.ref(mode)
    if source == "generator" and GENERATOR.marker(cfg, gen, layout).is_file():  # refuse a stale label model
        check_unit(GENERATOR, cfg, gen, layout)
    store, data, img_meta = open_store(layout, mode, v, Path(store_path) if store_path else None)
    path = store.path
    test = load_split(cfg, cfg.validate.eval_split)
    resume = out.with_name(f".{out.stem}.resume.pt")
    label_model, weights, image_logits = None, None, None
    if source == "static":
        image_logits = load_image_logits(layout.images_dir(mode), img_meta["fingerprint"])
        weights = static_labels_file(layout, mode)
    elif source != "stored":
        label_model, weights = load_label_model(source, layout, mode, pick_device(cfg.device, cfg.deterministic))
    student_file = RunLayout.student_weights(out)
    res = train_student(cfg, store, data, test, desc=f"validate[{mode} {path.name}]",
                        log=MetricsLog(layout.metrics) if is_rank0() else None,  # one copy of the lines, not one per rank
                        resume_path=resume, replay=v.replay_mode, label_model=label_model, image_logits=image_logits,
                        seed=cfg.seed + ref.repeat, weights_path=student_file)
    row = {
        "recover": mode, "source": img_meta.get("source", "synthesis"), "ipc": img_meta["ipc"], "prune_factor": v.factor, "prune_strategy": v.strategy,
        "logits": v.logits, "granularity": v.granularity,
        "label_store": str(path.relative_to(layout.root)) if path.is_relative_to(layout.root) else str(path),
        "label_bytes": store.bytes_on_disk() if weights is None else label_model_bytes(weights), "image_bytes": image_bytes(layout.images_dir(mode)),
        "kept_steps": len(store), "student": cfg.validate.model.name, "student_args": dict(cfg.validate.model.args),
        "seed": cfg.seed, "repeat": ref.repeat, "student_seed": cfg.seed + ref.repeat, "recipe": _recipe(cfg.validate),
        "protocol": cfg.validate.protocol,
        **_identity(VALIDATE, cfg, ref), **res, "model_file": str(student_file.relative_to(layout.root)),
        "pool": v.pool, "replay": v.replay_mode, "loss": cfg.validate.loss, "eval_split": cfg.validate.eval_split,
        **({"gift_alpha": cfg.validate.gift_alpha, "gift_smoothing": cfg.validate.gift_smoothing}
           if cfg.validate.loss == "gift" else {}),
        "label_source": source, **_source_fields(cfg, weights, layout),
    }
    if is_rank0():
        atomic_write_json(out, row)
        resume.unlink(missing_ok=True)
    return row, res["seconds"]


_RECIPE_KEYS = ("lr", "optimizer", "epochs", "weight_decay", "weight_decay_1d", "schedule", "warmup_epochs",
                "eval_every")


def _recipe(vc) -> dict:
    """The training recipe a row records (a student's own ``lr``, ``optimizer``, ``epochs``, ``weight_decay``
    already in ``vc``: :func:`~labeldistill.config.with_student`)."""
    return {k: getattr(vc, k) for k in _RECIPE_KEYS}


def _rekeyed(stage: Stage, cfg: Config, ref: StageRef, out: Path, row: dict) -> dict:
    """A reused row (its unit recorded with the current settings) with the current identity: a row written before
    rows carried one, or with an older fingerprint version, gets it (and is rewritten on rank 0)."""
    if row.get("fingerprint_version") == FINGERPRINT_VERSION:
        return row
    row = {**row, **_identity(stage, cfg, ref)}
    if is_rank0():
        atomic_write_json(out, row)
    return row


def _identity(stage: Stage, cfg: Config, ref: StageRef) -> dict:
    """What a result row carries to know its identity: its unit's key and fingerprint, and the fingerprint's
    version (report and leaderboard compare these instead of rebuilding configs)."""
    return {"stage": ref.key, "fingerprint": fingerprint(stage.settings(cfg, ref)),
            "fingerprint_version": FINGERPRINT_VERSION}


def train_hard_student(cfg: Config, data: ImageSet, test: ImageSet, epochs: int, desc: str = "hard-label") -> dict:
    """Train a fresh ``validate.model`` student with cross-entropy on ``data``'s class labels; top-1 on ``test``.

    The protocol of :class:`~labeldistill.config.HardLabelConfig`: ``validate`` optimiser, learning rate and
    weight decay with a cosine schedule over all steps; each epoch a seeded permutation in batches of
    ``relabel.batch_size``; RandomResizedCrop(``relabel.crop_scale``) + horizontal flip (``relabel.flip``)
    through kornia; no CutMix; normalised with ``test``'s mean and std; the last model is evaluated.
    Under ``validate.protocol`` the preset's batch size and augmentation (:func:`labeldistill.protocols.hard_recipe`,
    applied to the normalised images; its crop scale, where it sets one, instead of ``relabel.crop_scale``) and the
    ``validate`` schedule, momentum and 1-D weight decay instead.

    Args:
        data: uint8 images ``(N, C, H, W)`` with int64 labels ``(N,)`` (in memory or lazy).
        test: the real test split.
        epochs: passes over ``data``.

    Returns:
        ``{"top1": fraction, "epochs", "steps", "seconds"}``.

    Raises:
        LabelDistillError: the loss became NaN or infinite.
    """
    vc, relabel_cfg, recipe = cfg.validate, cfg.relabel, hard_recipe(cfg)
    device = pick_device(cfg.device, cfg.deterministic)
    torch.manual_seed(cfg.seed)  # student initialisation and kornia's sampling
    student = build_model(vc.model, test.num_classes, test.shape).to(device).to(memory_format=torch.channels_last)
    params = decay_groups(student, vc.weight_decay, vc.weight_decay_1d) if recipe else student.parameters()
    opt = make_optimizer(vc.optimizer, params, vc.lr, vc.momentum, vc.weight_decay)
    size = tuple(test.shape[1:])
    crop_scale = recipe.crop_scale if recipe and recipe.crop_scale else relabel_cfg.crop_scale
    aug = hard_augmentation(recipe.augment if recipe else "crop_flip", size, crop_scale, relabel_cfg.flip)
    bs = recipe.batch_size if recipe else relabel_cfg.batch_size
    g = torch.Generator().manual_seed(cfg.seed)
    per_epoch = (len(data) + bs - 1) // bs
    total, t0 = epochs * per_epoch, time.time()
    lr = (schedule_lr(vc.schedule, vc.lr, [per_epoch] * epochs, vc.warmup_epochs) if recipe
          else lambda step: cosine_lr(vc.lr, step, total))

    def batches(epoch: int) -> Iterable:
        order = torch.randperm(len(data), generator=g)
        return iter_batches(data, [order[i * bs:(i + 1) * bs] for i in range(per_epoch)], cfg.data.workers)

    def loss(batch, epoch: int) -> torch.Tensor:
        images, labels = batch
        x = images.float().div_(255)
        x = aug(normalize(x, test.mean, test.std)) if recipe else normalize(aug(x), test.mean, test.std)
        with autocast(device, cfg.autocast):
            out = student(x.to(device).contiguous(memory_format=torch.channels_last))
        return F.cross_entropy(out.float(), labels.to(device))

    fit(student, opt, epochs=epochs, total=total, lr=lr, batches=batches,
        loss=loss, guard=StepGuard("hard-label", "validate.lr", lambda epoch, i, step: f"step {step} ({desc})"),
        desc=desc, leave=False)
    top1 = evaluate(student, test, test.mean, test.std, device, vc.eval_batch_size)
    return {"top1": top1, "epochs": epochs, "steps": total, "seconds": round(time.time() - t0, 2)}


def hard_label(cfg: Config, images: str, force: bool = False) -> dict:
    """A hard-label baseline of DD-Ranking's HLR (Li et al. 2025, "DD-Ranking", arXiv 2505.13300: HLR =
    Acc(real-hard) − Acc(syn-hard)); writes ``hard_label/<student>/<images>.json``.

    ``images`` = a recover mode: the student learns that mode's images with their classes for ``validate.epochs``
    (default ``relabel.epochs``) epochs — the syn-hard accuracy; ``images`` = ``real-train``
    (:data:`~labeldistill.layout.REAL_TRAIN`): the whole real train split (``data.train_subset`` if set) for
    ``hard_label.real_epochs`` epochs — the real-hard accuracy. Protocol: :func:`train_hard_student`.

    Returns:
        The row: images, source, ipc (modes only), n_images, image_bytes (the image files; uint8 ``N·C·H·W``
        for ``real-train``), label_bytes (0: the class of an image is its folder), student, student_args, seed,
        fingerprint, top1, epochs, steps, seconds.

    Raises:
        StaleStageError: a finished row made with other settings (without ``force``).
        LabelDistillError: the mode's images do not exist yet (run recover first).
    """
    resolve_augmentation(cfg)
    layout = RunLayout(cfg.run_path)
    ref = HARD_LABEL.ref(images, student=model_tag(cfg.validate.model))
    out = HARD_LABEL.marker(cfg, ref, layout)
    return run_unit(HARD_LABEL, cfg, ref, lambda: _train_hard_label(cfg, ref, layout, out),
                    reuse=lambda: _rekeyed(HARD_LABEL, cfg, ref, out, read_json(out)), force=force, layout=layout)


@HARD_LABEL.runs
def _hard_label_unit(cfg: Config, ref: StageRef, force: bool) -> dict:
    return hard_label(student_config(cfg, ref.student), ref.mode, force=force)


def _train_hard_label(cfg: Config, ref: StageRef, layout: RunLayout, out: Path) -> tuple[dict, float]:
    """Train and score the hard-label student of ``ref``; writes its row on rank 0; returns ``(row, seconds)``."""
    images = ref.mode
    test = load_split(cfg, "test")
    if images == REAL_TRAIN:
        data, meta = load_split(cfg, "train"), {"source": "real", "ipc": None}
        nbytes, epochs = len(data) * math.prod(data.shape), cfg.hard_label.real_epochs
    else:
        data, meta = load_synthetic(layout.images_dir(images), test.mean, test.std)
        nbytes, epochs = image_bytes(layout.images_dir(images)), cfg.validate.epochs or cfg.relabel.epochs
        if (recipe := hard_recipe(cfg)) is not None:
            epochs = recipe.epochs
    res = train_hard_student(cfg, data, test, epochs, desc=f"hard-label[{images}]")
    row = {"images": images, "source": meta.get("source", "synthesis"), "ipc": meta.get("ipc"),
           "n_images": len(data), "image_bytes": nbytes, "label_bytes": 0, "student": cfg.validate.model.name,
           "student_args": dict(cfg.validate.model.args), "seed": cfg.seed, "protocol": cfg.validate.protocol,
           **_identity(HARD_LABEL, cfg, ref),
           **res}
    if is_rank0():
        atomic_write_json(out, row)
    return row, res["seconds"]
