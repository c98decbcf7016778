"""Teacher for the pseudo-label baseline and the teacher label initialisation (spec §8, project addition).

A network trained with hard-label cross-entropy on the target meta-train images (the validation images are
held out, so model selection stays clean); its tempered softmax outputs on the base examples are the
``teacher`` label set. Saved with :func:`labeldistill.models.checkpoint.save_teacher`, so a later run can reuse it
through ``teacher.checkpoint``.

Split hygiene (issue #13): a teacher's labels and its initialisation feed model selection on the validation
split, so a teacher must never have been trained on validation images. Every teacher records the exact
target-train indices it was trained on (``split.safetensors``, int64 ``train_indices``) with SHA-256
fingerprints of them and of the validation split of the run that trained it (``teacher.json`` → ``split``).
A run that loads a teacher (``teacher.checkpoint``, or a teacher left in its own folder) checks that record
against its own validation split and refuses the teacher with a :class:`ConfigError` when the two overlap,
when the record is missing or altered, or when it was made for another dataset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..io import tensor_fingerprint
from ..models.checkpoint import load_checkpoint_into, load_teacher, save_teacher
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


SPLIT_FILE = "split.safetensors"


@dataclass
class TeacherSplit:
    """Which target-train images a teacher is trained on and which ones the run holds out.

    Attributes:
        dataset: target dataset name.
        train_size: number of images in the target train split (a different count = a different dataset copy).
        train_indices: int64 ``(M,)`` indices into the target train split of the teacher's training images.
        val_indices: int64 ``(V,)`` indices of the run's validation split (same indexing).
    """

    dataset: str
    train_size: int
    train_indices: torch.Tensor
    val_indices: torch.Tensor

    def record(self) -> dict:
        """What ``teacher.json`` keeps under ``split``: dataset, sizes and the two fingerprints."""
        return {"dataset": self.dataset, "train_size": self.train_size, "n_train": len(self.train_indices),
                "train_fingerprint": indices_fingerprint(self.train_indices),
                "val_fingerprint": indices_fingerprint(self.val_indices), "n_val": len(self.val_indices)}


def indices_fingerprint(indices: torch.Tensor) -> str:
    """Fingerprint (16 hex digits) of a set of int64 indices, independent of their order."""
    return tensor_fingerprint(indices.detach().cpu().long().sort().values, extra="indices")


def check_teacher_split(info: dict, folder: Path, split: TeacherSplit) -> None:
    """Refuse a loaded teacher that may have seen the run's validation split.

    Accepted only when ``info['split']`` names the same dataset (same train-split size) and the indices stored
    in ``folder/split.safetensors`` match its train fingerprint and share no image with ``split.val_indices``.

    Raises:
        ConfigError: one line saying why (no record, another dataset, altered record, overlap).
    """
    fix = "set teacher.checkpoint to a teacher trained with this validation split held out, or to null to train one"
    rec = info.get("split")
    f = folder / SPLIT_FILE
    if not isinstance(rec, dict) or not f.is_file():
        raise ConfigError(f"the teacher in {folder} records no training split, so it cannot be shown to have never "
                          f"seen this run's validation split; {fix}")
    if rec.get("dataset") != split.dataset or rec.get("train_size") != split.train_size:
        raise ConfigError(f"the teacher in {folder} was trained on {rec.get('dataset')} ({rec.get('train_size')} "
                          f"train images), this run's target is {split.dataset} ({split.train_size}); {fix}")
    seen = load_file(str(f))["train_indices"]
    if indices_fingerprint(seen) != rec.get("train_fingerprint"):
        raise ConfigError(f"the teacher in {folder}: {SPLIT_FILE} does not match the train fingerprint in "
                          f"teacher.json (altered or copied from another teacher); {fix}")
    overlap = int(torch.isin(split.val_indices.cpu(), seen).sum())
    if overlap:
        raise ConfigError(f"the teacher in {folder} was trained on {overlap} of this run's {len(split.val_indices)} "
                          f"validation images ({split.dataset} train split); {fix}")


def check_checkpoint_form(cfg: TeacherConfig) -> None:
    """Refuse a ``teacher.checkpoint`` the run cannot use, before anything is read or written.

    Raises:
        ConfigError: neither a file nor a folder with ``teacher.json`` + ``model.safetensors``, or a
            ``state_dict`` file without ``teacher.unknown_split`` (nothing shows it never saw the validation split).
    """
    if not cfg.checkpoint:
        return
    path = Path(cfg.checkpoint)
    if path.is_file() and not cfg.unknown_split:
        raise ConfigError(f"teacher.checkpoint {path} is a state_dict trained elsewhere: nothing records its training "
                          "images, so it may have seen this run's validation split; set teacher.unknown_split=true to "
                          "use it anyway (results.json then says split_checked: false)")
    if not path.is_file() and not ((path / "teacher.json").is_file() and (path / "model.safetensors").is_file()):
        raise ConfigError(f"teacher.checkpoint {path} is neither a state_dict file nor a folder with teacher.json + "
                          "model.safetensors; point it at one or set it to null")


def external_teacher(cfg: TeacherConfig, path: Path, num_classes: int, shape: tuple[int, int, int],
                     device: torch.device) -> nn.Module:
    """A teacher trained elsewhere: ``teacher.model`` built for the run, loaded from a ``state_dict`` file.

    Args:
        cfg: teacher settings (``model``, ``unknown_split``).
        path: the ``state_dict`` file (forms: :func:`~labeldistill.models.checkpoint.load_state_dict_file`).
        num_classes: the target's class count.
        shape: ``(C, H, W)`` of the run's images.
        device: where the teacher runs.

    Returns:
        The teacher in eval mode.

    Raises:
        ConfigError: ``teacher.unknown_split`` is false (nothing shows the file never saw the validation split).
        DataError: unreadable file, no state_dict inside, or weights that do not fit ``teacher.model``.
    """
    check_checkpoint_form(cfg)
    model = build_network(cfg.model, num_classes, shape, torch.device("cpu"))
    load_checkpoint_into(model, path, cfg.model, num_classes)
    return model.to(device).eval()


def _check_teacher_fits(info: dict, source: Path, classes: list[str], mean: tuple[float, ...],
                        std: tuple[float, ...], shape: list[int]) -> None:
    """Raise ConfigError when a saved teacher was trained for other classes, normalisation or input size."""
    if info.get("classes") != list(classes) or info.get("mean") != list(mean) or \
            info.get("std") != list(std) or info.get("shape", shape) != shape:
        raise ConfigError(f"the teacher in {source} was trained for classes {info.get('classes')} with "
                          f"normalisation {info.get('mean')}/{info.get('std')} at {info.get('shape')}; this run "
                          f"needs {classes} with {list(mean)}/{list(std)} at {shape} (C, H, W); set "
                          "teacher.checkpoint to a matching teacher or null")


def get_teacher(cfg: TeacherConfig, folder: Path, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor,
                y_test: torch.Tensor, classes: list[str], split: TeacherSplit, mean: tuple[float, ...],
                std: tuple[float, ...], device: torch.device, seed: int, reuse: bool = True) -> tuple[nn.Module, dict]:
    """Load the teacher from ``cfg.checkpoint`` or ``folder`` (``reuse``), or train one and save it in ``folder``.

    Args:
        cfg: teacher settings.
        folder: the run's teacher folder.
        x, y: normalised target meta-train images ``(M, C, H, W)`` and classes (``split.train_indices`` of the
            target train split).
        x_test, y_test: the real test split (only to record the teacher's accuracy).
        classes: target class names (checked against a loaded teacher).
        split: the dataset, the indices of ``x`` and the run's validation indices (recorded with a trained
            teacher, checked against a loaded one by :func:`check_teacher_split`).
        mean, std: normalisation of the inputs.
        device: where the teacher runs.
        seed: training seed.
        reuse: load a teacher already in ``folder`` (False: train and overwrite it; ``--force``).

    Returns:
        ``(teacher in eval mode, info)``; info holds the model, its test top-1, its split record and where it
        came from.

    Raises:
        ConfigError: ``teacher.checkpoint`` does not exist, was trained for other classes/normalisation/input
            size, or may have seen the run's validation split (a state_dict file: unless ``teacher.unknown_split``).
        DataError: a state_dict file that cannot be read or does not fit ``teacher.model``.
    """
    source = Path(cfg.checkpoint) if cfg.checkpoint else folder
    shape = list(x.shape[1:])
    if source.is_file():  # a state_dict trained elsewhere
        model = external_teacher(cfg, source, len(classes), tuple(shape), device)
        return model, {"model": cfg.model.name, "model_args": dict(cfg.model.args), "num_classes": len(classes),
                       "shape": shape, "classes": list(classes), "mean": list(mean), "std": list(std),
                       "top1": 1.0 - error_rate(model, x_test, y_test), "split_checked": False,
                       "loaded_from": str(source)}
    if (source / "teacher.json").is_file() and (source / "model.safetensors").is_file() and \
            (reuse or cfg.checkpoint):
        model, info = load_teacher(source, device)
        _check_teacher_fits(info, source, classes, mean, std, shape)
        check_teacher_split(info, source, split)
        return model, {**info, "loaded_from": str(source)}
    check_checkpoint_form(cfg)
    t0 = time.perf_counter()
    model = train_teacher(cfg, x, y, len(classes), tuple(x.shape[1:]), device, seed)
    top1 = 1.0 - error_rate(model, x_test, y_test)
    info = {"model": cfg.model.name, "model_args": dict(cfg.model.args), "num_classes": len(classes),
            "shape": list(x.shape[1:]), "classes": list(classes), "dataset": split.dataset, "mean": list(mean),
            "std": list(std), "epochs": cfg.epochs, "lr": cfg.lr, "top1": top1, "split": split.record(),
            "seconds": round(time.perf_counter() - t0, 2)}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{SPLIT_FILE}.tmp"
    save_file({"train_indices": split.train_indices.detach().cpu().long().contiguous()}, str(tmp))
    tmp.replace(folder / SPLIT_FILE)
    save_teacher(model, folder, info)
    return model.eval(), {**info, "loaded_from": None}
