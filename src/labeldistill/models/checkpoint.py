"""Teacher weights on disk: the run's own teacher (safetensors + ``teacher.json``) and users' checkpoints."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from ..errors import DataError, LabelDistillError
from ..io import atomic_write_json, model_fingerprint, read_json
from .registry import create_model


CHANCE_FACTOR = 1.5  # a teacher whose top-1 is <= this × chance (1/C) is refused: its class mapping is most likely wrong


def near_chance(top1: float, num_classes: int) -> bool:
    """True when ``top1`` (fraction) is at most :data:`CHANCE_FACTOR` × chance (``1 / num_classes``)."""
    return top1 <= CHANCE_FACTOR / num_classes


def check_teacher_accuracy(path: str | Path, top1: float, classes: list[str], forced: bool) -> None:
    """Refuse a user's teacher checkpoint that scores near chance on the real test split (unless ``forced``).

    Args:
        path: the checkpoint (``squeeze.checkpoint``), named in the message.
        top1: its top-1 (fraction) on the test split.
        classes: the dataset's class names, in its class order.
        forced: ``squeeze.force_teacher``.

    Raises:
        DataError: ``top1`` at most :data:`CHANCE_FACTOR` × chance and not ``forced``.
    """
    c = len(classes)
    if forced or not near_chance(top1, c):
        return
    order = ", ".join(classes[:3]) + (", ..." if c > 3 else "")
    raise DataError(f"teacher checkpoint {path} scores {100 * top1:.1f} % on the test split (chance {100 / c:.1f} %, "
                    f"refused at <= {100 * CHANCE_FACTOR / c:.1f} %): its class order may differ from the dataset's "
                    f"({order}), or it was trained on other data or another normalisation; check its class order, "
                    "or set squeeze.force_teacher=true to use it anyway")


def teacher_record(path: str | Path) -> dict:
    """The ``teacher.json`` next to a teacher checkpoint (this project's ``teacher/model.safetensors`` has one), or
    ``{}`` when there is none or it is not a JSON object."""
    f = Path(path).parent / "teacher.json"
    try:
        rec = read_json(f) if f.is_file() else {}
    except ValueError:  # not JSON: a file of another tool, not ours
        return {}
    return rec if isinstance(rec, dict) else {}


def squeeze_augmentation(sc: Any) -> dict:
    """What a teacher trained by squeeze with settings ``sc`` (a ``SqueezeConfig``) saw, for ``teacher.json``:
    ``flip`` (bool) and ``crop_scale`` (RandomResizedCrop area range, or ``None`` for a padded random crop of
    ``crop_padding`` px)."""
    return {"flip": bool(sc.flip), "crop_scale": None if sc.crop_scale is None else list(sc.crop_scale),
            "crop_padding": sc.crop_padding if sc.crop_scale is None else 0}


def untrained_augmentation_warnings(cfg: Any) -> list[str]:
    """One line per relabel augmentation the teacher checkpoint (``squeeze.checkpoint``) was not trained with,
    when its ``teacher.json`` (:func:`teacher_record`) records what it saw (its ``augmentation``): horizontal
    flips, and RandomResizedCrops smaller than its smallest training crop. Empty without a checkpoint or a record.

    Args:
        cfg: a :class:`labeldistill.config.Config` with resolved augmentation keys
            (:func:`labeldistill.data.presets.resolve_augmentation`).
    """
    path = cfg.squeeze.checkpoint
    aug = teacher_record(path).get("augmentation") if path else None
    if not isinstance(aug, dict):
        return []
    relabel_cfg, out = cfg.relabel, []
    if relabel_cfg.flip and aug.get("flip") is False:
        out.append(f"relabel.flip: the teacher checkpoint {path} was trained without horizontal flips (its "
                   "teacher.json), so its labels of flipped images are guesses; set relabel.flip: false")
    low = (aug.get("crop_scale") or [None])[0]
    if low is not None and relabel_cfg.crop_scale[0] < low:
        out.append(f"relabel.crop_scale: crops down to {100 * relabel_cfg.crop_scale[0]:g} % of the area, but the "
                   f"teacher checkpoint {path} was trained on crops of at least {100 * low:g} % (its teacher.json); set "
                   f"relabel.crop_scale: [{low:g}, {relabel_cfg.crop_scale[1]:g}]")
    return out


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


# Where training scripts keep the weights inside a checkpoint dict (timm: state_dict / state_dict_ema; DeiT,
# torchvision references: model; some DDP scripts: module), tried in this order.
STATE_DICT_KEYS = ("state_dict", "model", "state_dict_ema", "module")
# Prefixes of wrapped models, removed when every key has them: DDP/DataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
SHOW_KEYS = 5


def _read_raw(p: Path) -> Any:
    """The object in a ``.safetensors`` or ``torch.save`` file (``weights_only``: tensors and plain data).

    Raises:
        DataError: unreadable file, or a pickled Python object other than tensors and plain containers.
    """
    try:
        if p.suffix == ".safetensors":
            return load_file(str(p))
        with torch.serialization.safe_globals([argparse.Namespace]):  # timm's train.py stores its args
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file for the user
        msg = str(e)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", msg)
        if found:
            raise DataError(f"teacher checkpoint {p} holds a pickled {found.group(1)} object, not only tensors: "
                            "save model.state_dict() (it is read with weights_only=True)") from None
        raise DataError(f"cannot read teacher checkpoint {p}: {msg.splitlines()[0] if msg else type(e).__name__}"
                        ) from None


def _unwrap(obj: Any, p: Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` inside a checkpoint object (see :data:`STATE_DICT_KEYS`), wrapper prefixes removed."""
    for _ in range(3):  # e.g. {"model": {"module": {...}}}
        if not isinstance(obj, dict) or any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        key = next((k for k in STATE_DICT_KEYS if isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        obj = obj[key]
    tensors = isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())
    if not tensors:
        keys = list(obj)[:SHOW_KEYS] if isinstance(obj, dict) else type(obj).__name__
        raise DataError(f"teacher checkpoint {p} holds no state_dict (a dict of tensors, alone or under "
                        f"{' / '.join(STATE_DICT_KEYS)}); found {keys}")
    sd = dict(obj)
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    return sd


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``state_dict`` from ``.safetensors`` or a ``torch.save`` file (``.pth``/``.pt``/``.bin``/...).

    Accepted forms: a plain ``state_dict``; a dict holding it under ``state_dict``, ``model``,
    ``state_dict_ema`` or ``module`` (the first present, so a timm checkpoint gives its raw weights, not
    the EMA ones; other entries such as ``optimizer``, ``epoch``, ``args`` are ignored); keys with a
    DistributedDataParallel / DataParallel ``module.`` or a ``torch.compile`` ``_orig_mod.`` prefix (removed
    when every key has it).

    Raises:
        DataError: missing or unreadable file, a pickled object other than tensors, or no state_dict inside.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"teacher checkpoint not found: {p}")
    return _unwrap(_read_raw(p), p)


def _first(keys: list[str]) -> str:
    more = f" (+{len(keys) - SHOW_KEYS} more)" if len(keys) > SHOW_KEYS else ""
    return ", ".join(keys[:SHOW_KEYS]) + more


def describe_mismatch(model: nn.Module, sd: dict[str, torch.Tensor]) -> str:
    """Which keys of ``sd`` are missing from / unexpected by ``model``, and which differ in shape (first few)."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in sd and sd[k].shape != own[k].shape]
    parts = [f"missing keys: {_first(missing)}" if missing else "",
             f"unexpected keys: {_first(unexpected)}" if unexpected else "",
             f"shape (checkpoint vs model): {_first(shapes)}" if shapes else ""]
    return "; ".join(x for x in parts if x) or "no key differs"


def load_checkpoint_into(model: nn.Module, path: str | Path, spec: Any, num_classes: int) -> None:
    """Load a user's teacher checkpoint into ``model`` (built from ``spec`` for ``num_classes`` classes).

    Raises:
        DataError: missing or unreadable file, or weights that do not fit the model: the message names the
        model and the first few missing, unexpected and mis-shaped keys.
    """
    sd = load_state_dict_file(path)
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        detail = describe_mismatch(model, sd)
        if detail == "no key differs":
            detail = str(e).splitlines()[-1].strip()
        raise DataError(f"teacher checkpoint {path} does not fit model '{spec.name}' {spec.args} with "
                        f"{num_classes} classes: {detail}") from None
