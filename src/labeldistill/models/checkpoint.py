"""Teacher weights on disk: the run's own teacher (safetensors + ``teacher.json``) and users' checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from ..errors import DataError, LabelDistillError
from ..io import atomic_write_json, model_fingerprint, read_json
from .registry import create_model


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


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``state_dict`` from ``.safetensors`` or a ``torch.save`` file (``.pth``/``.pt``, optionally a dict
    holding it under ``state_dict`` or ``model``), stripping a DistributedDataParallel ``module.`` prefix.

    Raises:
        DataError: missing or unreadable file.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"teacher checkpoint not found: {p}")
    try:
        if p.suffix == ".safetensors":
            sd = load_file(str(p))
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
            for k in ("state_dict", "model"):
                if isinstance(sd, dict) and isinstance(sd.get(k), dict):
                    sd = sd[k]
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise DataError(f"cannot read teacher checkpoint {p}: {str(e).splitlines()[0]}") from None
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_checkpoint_into(model: nn.Module, path: str | Path, spec: Any, num_classes: int) -> None:
    """Load a user's teacher checkpoint into ``model`` (built from ``spec`` for ``num_classes`` classes).

    Raises:
        DataError: missing or unreadable file, or weights that do not fit the model (names the model).
    """
    try:
        model.load_state_dict(load_state_dict_file(path))
    except RuntimeError as e:
        lines = str(e).splitlines()
        raise DataError(f"teacher checkpoint {path} does not fit model '{spec.name}' {spec.args} with "
                        f"{num_classes} classes: {lines[1].strip() if len(lines) > 1 else e}") from None
