"""Stage 1, squeeze: train the teacher on the real training set (SRe2L, Yin et al. NeurIPS 2023, §3.1).

SGD with momentum and a cosine learning rate (optionally after a linear warm-up); random crop (zero padding)
or RandomResizedCrop, + horizontal flip, through kornia. A lazy training set (``data.lazy``) is decoded by
``data.workers`` DataLoader processes; on CUDA the forward pass runs under bf16 autocast (config key ``autocast``).
"""

from __future__ import annotations

import time

import kornia.augmentation as K
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import Config, SqueezeConfig, check_squeeze
from .data import ImageSet, iter_batches, load_split, normalize, resolve_augmentation
from .distributed import rank_world, wrap_ddp
from .errors import DataError
from .io import MetricsLog, read_json
from .layout import RunLayout
from .models import build_model
from .main_stages import SQUEEZE
from .provenance import StageRef
from .models.checkpoint import (  # noqa: F401
    check_teacher_accuracy,
    load_checkpoint_into,
    load_state_dict_file,
    save_teacher,
    squeeze_augmentation,
    teacher_record,
)
from .runner import run_unit
from .runtime import autocast, is_rank0, pick_device
from .training import Checkpointer, StepGuard, cosine_lr, evaluate, fit, make_optimizer


def teacher_lr(sc: SqueezeConfig, step: int, total: int, steps_per_epoch: int) -> float:
    """Learning rate at ``step``: linear from 0.01 × lr to lr over ``warmup_epochs``, then cosine to 0."""
    warm = sc.warmup_epochs * steps_per_epoch
    if step < warm:
        return sc.lr * (0.01 + 0.99 * step / warm)
    return cosine_lr(sc.lr, step - warm, total - warm)


def squeeze(cfg: Config, force: bool = False) -> dict:
    """Train the teacher (or load ``squeeze.checkpoint``) and save ``teacher/model.safetensors`` + ``teacher.json``.

    Skipped when ``teacher.json`` already exists (unless ``force``). Training resumes from the last finished
    epoch after an interruption (``teacher/.resume.pt``) and then gives the same weights as an
    uninterrupted run. Under ``torchrun`` the batches of each step are split across ranks
    (DistributedDataParallel).

    A checkpoint is scored on the real test split first; one at most 1.5 × chance is refused (its class order
    most likely differs from the dataset's) unless ``squeeze.force_teacher``, and nothing is written.
    ``teacher.json`` records the augmentation the teacher was trained with (a checkpoint's: from the
    ``teacher.json`` next to it, if any), for the dry run's warning about relabel augmentations it never saw.

    Returns:
        The teacher info: model name and args, ``top1`` (fraction) on the real test split, epochs, augmentation.

    Raises:
        DataError / RegistryError: bad dataset, model or checkpoint, train and test splits with different
        classes, or a checkpoint near chance on the test split; ConfigError: bad squeeze options;
        LabelDistillError: the loss diverged.
    """
    resolve_augmentation(cfg)
    layout = RunLayout(cfg.run_path)
    run_unit(SQUEEZE, cfg, SQUEEZE.ref(), lambda: _squeeze(cfg, layout), force=force, layout=layout)
    return read_json(SQUEEZE.marker(cfg, SQUEEZE.ref(), layout))


@SQUEEZE.runs
def _squeeze_unit(cfg: Config, ref: StageRef, force: bool) -> dict:
    return squeeze(cfg, force=force)


def _squeeze(cfg: Config, layout: RunLayout) -> tuple[None, float]:
    """Train or load the teacher, score it, write it on rank 0; returns ``(None, seconds)``."""
    t0 = time.time()
    sc = cfg.squeeze
    check_squeeze(sc)
    device = pick_device(cfg.device, cfg.deterministic)
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    if test.classes != train.classes:
        raise DataError(f"the test split has classes {_class_summary(test.classes)} but the train split has "
                        f"{_class_summary(train.classes)}: give both the same class folders (or class_to_idx.json)")
    torch.manual_seed(cfg.seed)  # model init and kornia's sampling during training
    model = build_model(sc.model, train.num_classes, train.shape)
    if sc.checkpoint:
        load_checkpoint_into(model, sc.checkpoint, sc.model, train.num_classes)
        epochs_done = 0
    model = model.to(device).to(memory_format=torch.channels_last)
    if not sc.checkpoint:
        _train_teacher(model, train, cfg, layout, device)
        epochs_done = sc.epochs
    top1 = evaluate(model, test, train.mean, train.std, device, workers=cfg.data.workers)
    if sc.checkpoint:
        check_teacher_accuracy(sc.checkpoint, top1, train.classes, sc.force_teacher)
    info = {
        "model": sc.model.name, "model_args": dict(sc.model.args), "num_classes": train.num_classes,
        "shape": list(train.shape), "mean": list(train.mean), "std": list(train.std),
        "classes": train.classes, "dataset": cfg.data.dataset, "epochs": epochs_done, "top1": top1,
        "checkpoint": sc.checkpoint,
        # what it was trained with: relabel warns about augmentations a checkpoint never saw (untrained_...)
        "augmentation": teacher_record(sc.checkpoint).get("augmentation") if sc.checkpoint else
        squeeze_augmentation(sc),
    }
    MetricsLog(layout.metrics).log(stage="squeeze", top1=top1)
    if is_rank0():
        save_teacher(model, layout.teacher_dir, info)
        (layout.teacher_dir / ".resume.pt").unlink(missing_ok=True)
    return None, time.time() - t0


def _class_summary(classes: list[str]) -> str:
    return f"{len(classes)} [{', '.join(classes[:3])}{', ...' if len(classes) > 3 else ''}]"


def train_augmentation(sc: SqueezeConfig, hw: tuple[int, int]) -> nn.Module:
    """The teacher's training augmentation on float ``(N, C, H, W)`` batches in [0, 1] (kornia, global RNG):
    RandomResizedCrop(``crop_scale``) when set, else a random crop after ``crop_padding`` px of zero padding,
    then a random horizontal flip when ``flip``."""
    if sc.crop_scale is not None:
        crop: nn.Module = K.RandomResizedCrop(hw, scale=tuple(sc.crop_scale))
    else:
        crop = K.RandomCrop(hw, padding=sc.crop_padding) if sc.crop_padding > 0 else nn.Identity()
    return nn.Sequential(crop, K.RandomHorizontalFlip() if sc.flip else nn.Identity())


def _teacher_batches(train: ImageSet, cfg: Config, g: torch.Generator, steps_per_epoch: int):
    """``batches(epoch)`` for :func:`fit`: a seeded permutation of ``train`` in batches of ``squeeze.batch_size``,
    each item ``((images, labels), indices)``. A lazy set under torchrun decodes only this rank's rows of each
    batch (the other rows stay zero, see :func:`_teacher_step`)."""
    bs, workers = cfg.squeeze.batch_size, cfg.data.workers
    rank, world = rank_world()

    def batches(epoch: int):
        order = torch.randperm(len(train), generator=g)
        idx = [order[i * bs:(i + 1) * bs] for i in range(steps_per_epoch)]
        fetch = [b[rank::world] for b in idx] if train.is_lazy and world > 1 else idx
        return zip(iter_batches(train, fetch, workers), idx)

    return batches


def _teacher_step(net: nn.Module, train: ImageSet, cfg: Config, aug: nn.Module, device: torch.device):
    """``loss(batch, epoch)`` for :func:`fit`: augment the whole batch on every rank (so the global RNG stays in
    step with a one-process run and every row gets the crop and flip it would get there), then keep this rank's
    rows (DDP averages the gradients)."""
    rank, world = rank_world()
    local_only = train.is_lazy and world > 1

    def loss(batch, epoch: int) -> torch.Tensor:
        (images, _), idx = batch
        if local_only:
            x = torch.zeros((len(idx), *train.shape))
            x[rank::world] = images.float().div_(255)
        else:
            x = images.float().div_(255)
        x = aug(x)
        mine = slice(rank, None, world)
        x = normalize(x[mine].to(device), train.mean, train.std).contiguous(memory_format=torch.channels_last)
        y = train.labels[idx][mine].to(device)
        with autocast(device, cfg.autocast):
            return F.cross_entropy(net(x), y)

    return loss


def _train_teacher(model: nn.Module, train: ImageSet, cfg: Config, layout: RunLayout, device: torch.device) -> None:
    sc = cfg.squeeze
    net = wrap_ddp(model, device)
    opt = make_optimizer("sgd", model.parameters(), sc.lr, sc.momentum, sc.weight_decay, nesterov=True)
    aug = train_augmentation(sc, tuple(train.shape[1:]))
    g = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = (len(train) + sc.batch_size - 1) // sc.batch_size
    total = sc.epochs * steps_per_epoch
    key = SQUEEZE.resume_key(cfg, SQUEEZE.ref(), rank_world()[1])  # what the ledger records, and the world size

    def load_rng(state: dict) -> None:
        g.set_state(state["gen"])
        torch.set_rng_state(state["rng"])

    log = MetricsLog(layout.metrics)
    ckpt = Checkpointer(layout.teacher_dir / ".resume.pt", key, "squeeze-epoch", 0,
                        lambda: {"gen": g.get_state(), "rng": torch.get_rng_state()}, load_rng,
                        metrics=log, metrics_match={"stage": "squeeze"})
    fit(model, opt, epochs=sc.epochs, total=total, lr=lambda step: teacher_lr(sc, step, total, steps_per_epoch),
        batches=_teacher_batches(train, cfg, g, steps_per_epoch), loss=_teacher_step(net, train, cfg, aug, device),
        guard=StepGuard("teacher", "squeeze.lr", lambda epoch, i, step: f"epoch {epoch}, step {i}"),
        checkpoint=ckpt, end_epoch=lambda epoch, loss: is_rank0() and log.log(stage="squeeze", epoch=epoch,
                                                                              loss=loss.item()),  # once, not per rank
        desc="squeeze")
