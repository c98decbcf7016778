"""Label models: where the student's soft labels come from when they are not read from a store.

``validate.label_source`` names the source: ``stored`` (the label store; no model), ``online`` (the run's full
teacher, ``teacher/model.safetensors``), ``generator`` (the small label model the ``generator`` stage trains,
``labels/<mode>/generator/model.safetensors``) or ``static`` (no model: the per-image logits a set was imported
with, ``images/<mode>/image_logits.safetensors``, :func:`static_labels_file`). A label model is run, frozen and
in eval mode, on each replayed (normalised, augmented) batch; its logits replace the stored ones. What it costs is
the bytes on disk of its safetensors weights file (:func:`label_model_bytes`; for ``static``, of the logits file):
the augmentations need no bytes, since every stored step's crops, flips and CutMix are a pure function of
``(seed, step id)`` (:mod:`labeldistill.labels.relabel`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import ModelConfig
from ..data.synthetic import IMAGE_LOGITS
from ..errors import LabelDistillError
from ..io import atomic_write_json, read_json
from ..layout import RunLayout
from ..models import build_model
from ..models.checkpoint import load_teacher

WEIGHTS = "model.safetensors"
GENERATOR_INFO = "generator.json"


def save_generator(model: nn.Module, folder: Path, info: dict) -> None:
    """Write the generator's weights (float32 safetensors, ``model.safetensors``) and then ``generator.json``
    (``info`` plus ``weights_bytes``); the JSON file last, so it marks a complete generator."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{WEIGHTS}.tmp"
    save_file({k: v.detach().cpu().float().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(folder / WEIGHTS)
    atomic_write_json(folder / GENERATOR_INFO, {**info, "weights_bytes": label_model_bytes(folder / WEIGHTS)})


def _load_generator(folder: Path) -> nn.Module:
    if not (folder / GENERATOR_INFO).is_file():
        raise LabelDistillError(f"no label generator in {folder}: run 'labeldistill generator CONFIG' first")
    info = read_json(folder / GENERATOR_INFO)
    model = build_model(ModelConfig(info["model"], info.get("model_args", {})), info["num_classes"],
                        tuple(info["shape"]))
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    return model


def load_label_model(source: str, layout: RunLayout, mode: str, device: torch.device) -> tuple[nn.Module, Path]:
    """The frozen eval-mode label model of ``source`` (``online`` or ``generator``) and its weights file.

    Raises:
        LabelDistillError: unknown source, or its weights are missing (run squeeze / the generator stage).
    """
    if source == "online":
        model, _ = load_teacher(layout.teacher_dir, device)
        return model, layout.teacher_dir / WEIGHTS
    if source != "generator":
        raise LabelDistillError(f"label source '{source}' has no label model (known: online, generator)")
    model = _load_generator(layout.generator_dir(mode)).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, layout.generator_dir(mode) / WEIGHTS


def static_labels_file(layout: RunLayout, mode: str) -> Path:
    """``static``: the per-image logits file of a mode's images (written by recover for a set imported with soft
    labels; read by :func:`labeldistill.data.synthetic.load_image_logits`)."""
    return layout.images_dir(mode) / IMAGE_LOGITS


def label_model_bytes(weights: Path) -> int:
    """What a label model's labels cost: the size in bytes of its weights file on disk (``static``: of the
    per-image logits file)."""
    return Path(weights).stat().st_size
