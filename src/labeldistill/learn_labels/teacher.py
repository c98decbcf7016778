"""Teacher for the pseudo-label baseline and the teacher label initialisation (spec §8, project addition).

A network trained with hard-label cross-entropy on the target meta-train images (the validation images are
held out, so model selection stays clean); its tempered softmax outputs on the base examples are the
``teacher`` label set. Saved with :func:`labeldistill.models.checkpoint.save_teacher`, so a later run can reuse it
through ``teacher.checkpoint``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..models.checkpoint import load_teacher, save_teacher
from ..training import make_optimizer
from .config import TeacherConfig
from .learners import MinibatchSampler, build_network, error_rate, seeded


def train_teacher(cfg: TeacherConfig, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                  shape: tuple[int, int, int], device: torch.device, seed: int) -> nn.Module:
    """Train a teacher with Adam and cross-entropy, no augmentation.

    Args:
        cfg: teacher settings.
        x: normalised target meta-train images ``(M, C, H, W)``.
        y: their int64 classes ``(M,)``.
        num_classes: K.
        shape: ``(C, H, W)``.
        device: training device.
        seed: seed of the initialisation and the batch order.

    Returns:
        The trained network in eval mode.
    """
    model = seeded(seed, lambda: build_network(cfg.model, num_classes, shape, device))
    opt = make_optimizer("adam", model.parameters(), cfg.lr)
    sampler = MinibatchSampler(len(x), cfg.batch_size, torch.Generator().manual_seed(seed))
    steps = cfg.epochs * max(len(x) // sampler.batch, 1)
    for _ in tqdm(range(steps), desc="teacher", unit="step"):
        idx = sampler.next()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def soft_labels(model: nn.Module, x: torch.Tensor, temperature: float, batch: int = 1000) -> torch.Tensor:
    """``softmax(model(x) / temperature)`` ``(N, K)`` in eval mode."""
    model.eval()
    out = [torch.softmax(model(x[i:i + batch]) / temperature, dim=1) for i in range(0, len(x), batch)]
    return torch.cat(out).float()


def get_teacher(cfg: TeacherConfig, folder: Path, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor,
                y_test: torch.Tensor, classes: list[str], dataset: str, mean: tuple[float, ...],
                std: tuple[float, ...], device: torch.device, seed: int) -> tuple[nn.Module, dict]:
    """Load the teacher from ``cfg.checkpoint`` or ``folder``, or train one and save it in ``folder``.

    Args:
        cfg: teacher settings.
        folder: the run's teacher folder.
        x, y: normalised target meta-train images ``(M, C, H, W)`` and classes.
        x_test, y_test: the real test split (only to record the teacher's accuracy).
        classes: target class names (checked against a loaded teacher).
        dataset: target dataset name.
        mean, std: normalisation of the inputs.
        device: where the teacher runs.
        seed: training seed.

    Returns:
        ``(teacher in eval mode, info)``; info holds the model, its test top-1 and where it came from.

    Raises:
        ConfigError: ``teacher.checkpoint`` does not exist or was trained for other classes/normalisation.
    """
    source = Path(cfg.checkpoint) if cfg.checkpoint else folder
    if (source / "teacher.json").is_file() and (source / "model.safetensors").is_file():
        model, info = load_teacher(source, device)
        if info.get("classes") != list(classes) or info.get("mean") != list(mean) or \
                info.get("std") != list(std):
            raise ConfigError(f"the teacher in {source} was trained for classes {info.get('classes')} with "
                              f"normalisation {info.get('mean')}/{info.get('std')}; this run needs {classes} with "
                              f"{list(mean)}/{list(std)}; set teacher.checkpoint to a matching teacher or null")
        return model, {**info, "loaded_from": str(source)}
    if cfg.checkpoint:
        raise ConfigError(f"teacher.checkpoint {source} has no teacher.json + model.safetensors; "
                          "point it at the teacher folder of an earlier run or set it to null")
    t0 = time.perf_counter()
    model = train_teacher(cfg, x, y, len(classes), tuple(x.shape[1:]), device, seed)
    top1 = 1.0 - error_rate(model, x_test, y_test)
    info = {"model": cfg.model.name, "model_args": dict(cfg.model.args), "num_classes": len(classes),
            "shape": list(x.shape[1:]), "classes": list(classes), "dataset": dataset, "mean": list(mean),
            "std": list(std), "epochs": cfg.epochs, "lr": cfg.lr, "top1": top1,
            "seconds": round(time.perf_counter() - t0, 2)}
    save_teacher(model, folder, info)
    return model.eval(), {**info, "loaded_from": None}
