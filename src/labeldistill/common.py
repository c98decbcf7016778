"""Pieces shared by the stages: normalisation, streaming real data, evaluation, teacher/student checkpoints,
run-dir layout."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from .config import Config, ModelConfig
from .data import ImageSet, load_dataset
from .errors import DataError, LabelDistillError
from .models import create_model
from .utils import atomic_write_json, model_fingerprint, read_json


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``(x - mean) / std`` per channel for float images ``(N, C, H, W)`` in [0, 1]."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def denormalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Inverse of :func:`normalize`."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x * s + m


def cosine_lr(base: float, step: int, total: int) -> float:
    """Cosine annealing from ``base`` (step 0) to 0 (step ``total``), no warm-up."""
    return 0.5 * base * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op context on every other device (CPU and MPS run in float32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class _DecodeFailure:
    """A DataError raised in a DataLoader worker, sent back as a value so the message stays one line."""

    message: str


class _BatchDecoder(Dataset):
    """``ds[index]`` → (uint8 images ``(n, C, H, W)``, int64 labels ``(n,)``) of one batch of a lazy set."""

    def __init__(self, data: ImageSet):
        self.images, self.labels = data.images, data.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: Any) -> Any:
        try:
            return self.images[index], self.labels[index]
        except DataError as e:
            return _DecodeFailure(str(e))


def iter_batches(data: ImageSet, batches: Sequence[Any], workers: int | None = None,
                 pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels)`` for each index batch, in the given order.

    An in-memory set is indexed directly (no DataLoader, no copy beyond the indexing). A lazy set is decoded
    by a stock :class:`~torch.utils.data.DataLoader` whose sampler yields the batches (``batch_size=None``),
    with ``workers`` worker processes decoding ahead of the consumer.

    Args:
        data: the split.
        batches: slices, lists or LongTensors of image indices.
        workers: DataLoader worker processes for a lazy set; ``None`` = ``data.meta["workers"]`` (0 if unset).
        pin_memory: pin decoded batches (for asynchronous copies to CUDA).

    Yields:
        uint8 images ``(n, C, H, W)`` and int64 labels ``(n,)``.

    Raises:
        DataError: an image could not be decoded (same message as without workers).
    """
    if not data.is_lazy:
        for b in batches:
            yield data.images[b], data.labels[b]
        return
    workers = data.meta.get("workers", 0) if workers is None else workers
    # A private generator: creating the iterator then draws its worker base seed from it, not from the global
    # RNG, so a lazy run's augmentation (drawn from the global RNG in squeeze) matches an in-memory run.
    loader = DataLoader(_BatchDecoder(data), batch_size=None, sampler=list(batches), num_workers=workers,
                        pin_memory=pin_memory, prefetch_factor=4 if workers > 0 else None,
                        generator=torch.Generator().manual_seed(0))
    for item in loader:
        if isinstance(item, _DecodeFailure):
            raise DataError(item.message)
        yield item


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, mean: tuple[float, ...], std: tuple[float, ...],
             device: torch.device, batch_size: int = 1000, workers: int | None = None) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of ``model`` on ``data``, in eval mode, in float32.

    Args:
        model: classifier taking normalised ``(N, C, H, W)`` images.
        data: the split (in memory, or lazy: decoded by ``workers`` DataLoader processes).
        mean, std: normalisation in [0, 1] units.
        device: where the model runs.
        batch_size: images per forward pass.
        workers: see :func:`iter_batches`.
    """
    was_training = model.training
    model.eval()
    correct = 0
    batches = [slice(i, i + batch_size) for i in range(0, len(data), batch_size)]
    for images, labels in iter_batches(data, batches, workers, pin_memory=device.type == "cuda"):
        x = normalize(images.to(device, non_blocking=True).float() / 255, mean, std)
        y = labels.to(device)
        correct += int((model(x.contiguous(memory_format=torch.channels_last)).argmax(1) == y).sum())
    model.train(was_training)
    return correct / max(len(data), 1)


def data_options(cfg: Config) -> dict[str, Any]:
    """Dataset loader options from ``cfg.data`` (see :func:`labeldistill.data.load_dataset`)."""
    d = cfg.data
    return {"image_size": d.image_size, "resize": d.resize, "lazy": d.lazy, "mean": d.mean, "std": d.std}


def load_split(cfg: Config, split: str) -> ImageSet:
    """The configured dataset split, subset as configured (seeded, class-balanced).

    A lazy split keeps only its file list; ``meta["workers"]`` records ``data.workers`` for the passes that
    stream it.

    Raises:
        RegistryError / ConfigError / DataError: see :func:`labeldistill.data.load_dataset`.
    """
    ds = load_dataset(cfg.data.dataset, split, cfg.data.root, **data_options(cfg))
    n = cfg.data.train_subset if split == "train" else cfg.data.test_subset
    ds = ds.subset(n, seed=cfg.seed)
    ds.meta["workers"] = cfg.data.workers
    return ds


def build_model(spec: ModelConfig, num_classes: int, shape: tuple[int, int, int]) -> nn.Module:
    """Instantiate ``spec`` for images of ``shape`` = ``(C, H, W)``."""
    return create_model(spec.name, num_classes=num_classes, in_channels=shape[0], image_size=shape[1],
                        **spec.args)


@dataclass
class RunLayout:
    """Where each stage reads and writes inside a run directory."""

    root: Path

    @property
    def teacher_dir(self) -> Path:
        return self.root / "teacher"

    @property
    def class_stats_dir(self) -> Path:
        return self.root / "class_stats"

    def images_dir(self, mode: str) -> Path:
        return self.root / "images" / mode

    def full_store(self, mode: str) -> Path:
        return self.root / "labels" / mode / "full"

    def pruned_store(self, mode: str, factor: float, strategy: str = "random", logits: str = "fp16",
                     granularity: str = "batch") -> Path:
        return self.root / "labels" / mode / label_tag(factor, strategy, logits, granularity)

    def validate_file(self, mode: str, factor: float, strategy: str = "random", logits: str = "fp16",
                      granularity: str = "batch") -> Path:
        return self.root / "validate" / f"{mode}_{label_tag(factor, strategy, logits, granularity)}.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"


def label_tag(factor: float, strategy: str = "random", logits: str = "fp16", granularity: str = "batch") -> str:
    """A self-describing store name: ``x40``, ``x40-confidence-easy``, ``x10-top2``, ``x20-epoch``."""
    tag = f"x{format_factor(factor)}"
    if strategy != "random":
        tag += f"-{strategy}"
    if logits != "fp16":
        tag += f"-{logits}"
    if granularity != "batch":
        tag += f"-{granularity}"
    return tag


def format_factor(f: float) -> str:
    """``40.0`` → ``"40"``, ``2.5`` → ``"2.5"``."""
    return str(int(f)) if float(f).is_integer() else str(f)


def save_teacher(model: nn.Module, folder: Path, info: dict) -> None:
    """Save weights (safetensors) and ``teacher.json`` (model spec, accuracy, fingerprint)."""
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(folder / "model.safetensors"))
    atomic_write_json(folder / "teacher.json", {**info, "fingerprint": model_fingerprint(model)})


def load_teacher(folder: Path, device: torch.device) -> tuple[nn.Module, dict]:
    """Load the teacher saved by :func:`save_teacher`, in eval mode with frozen parameters.

    Raises:
        LabelDistillError: no teacher in ``folder`` (run ``squeeze`` first).
    """
    meta_f = folder / "teacher.json"
    if not meta_f.is_file():
        raise LabelDistillError(f"no teacher in {folder}: run 'labeldistill squeeze CONFIG' first")
    info = read_json(meta_f)
    model = create_model(info["model"], num_classes=info["num_classes"], in_channels=info["shape"][0],
                         image_size=info["shape"][1], **info.get("model_args", {}))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, info
