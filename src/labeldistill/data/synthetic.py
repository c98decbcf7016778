"""Distilled image sets on disk: an ImageFolder with an explicit ``class_to_idx.json`` and the
``images.json`` that describes how the set was made (mode, source, IPC, fingerprint, teacher).

Images the project writes itself (recover's synthesis, real-image sources, a resized set made elsewhere) are
PNG: lossless, so relabel and validate see exactly the pixels recover optimised. A ``folder`` set made
elsewhere that needs no resize keeps the user's own files, copied as they are (a JPEG stays a JPEG;
``images.json``: ``encoding: copied``, ``decode_mode``): they decode (Pillow, deterministic) to the pixels
recover checked and fingerprinted, and :func:`image_bytes` counts the bytes the user has. The class index
never depends on folder sort order. A set imported with per-image soft labels (``recover`` source ``tensor``
with float ``labels.pt``) also holds ``image_logits.safetensors``: float32 ``(N, K)`` logits, one row per image
in the folder's class-major order, read by ``validate.label_source: static``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..errors import DataError, LabelDistillError
from ..io import atomic_write_json, tensor_fingerprint
from .imagefolder import load_imagefolder, read_class_to_idx
from .registry import ImageSet


def save_imagefolder(images: torch.Tensor, labels: torch.Tensor, classes: list[str], folder: Path) -> None:
    """Write uint8 ``(N, C, H, W)`` images as PNG into ``folder/<class>/<index>.png`` + ``class_to_idx.json``."""
    for i, (im, y) in enumerate(zip(images, labels)):
        d = folder / classes[int(y)]
        d.mkdir(parents=True, exist_ok=True)
        a = im.permute(1, 2, 0).numpy()
        Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).save(d / f"{i:06d}.png", optimize=True)
    atomic_write_json(folder / "class_to_idx.json", {c: i for i, c in enumerate(classes)})


def image_fingerprint(images_u8: torch.Tensor, labels: torch.Tensor) -> str:
    """Fingerprint of an image set: its uint8 pixels ``(N, C, H, W)`` and labels (independent of the encoding)."""
    return tensor_fingerprint(images_u8, labels)


def load_synthetic(folder: Path, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[ImageSet, dict]:
    """Load an ``images/<mode>/`` folder (image files + class_to_idx.json) and its ``images.json``; every file
    is converted to ``images.json``'s ``decode_mode`` when it has one (a copied set of mixed Pillow modes).

    Raises:
        LabelDistillError: the folder was not written by ``recover`` (run it first).
        DataError: ``class_to_idx.json`` missing or corrupt (see
            :func:`~labeldistill.data.imagefolder.read_class_to_idx`), ``images.json`` not a JSON object with a
            string ``fingerprint`` and an integer ``ipc``, or an unreadable image.
    """
    folder = Path(folder)
    meta_f = folder / "images.json"
    if not meta_f.is_file():
        raise LabelDistillError(f"no synthetic images in {folder}: run 'labeldistill recover CONFIG' first")
    try:
        meta = json.loads(meta_f.read_text())
    except ValueError as e:
        raise DataError(f"{meta_f} is not valid JSON ({e}); re-run recover with --force") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("fingerprint"), str) or \
            not isinstance(meta.get("ipc"), int) or isinstance(meta.get("ipc"), bool):
        raise DataError(f"{meta_f} is corrupt (needs a string 'fingerprint' and an integer 'ipc'); re-run recover "
                        "with --force")
    if not (folder / "class_to_idx.json").is_file():
        raise DataError(f"{folder} has no class_to_idx.json (the class order is never taken from folder names); "
                        "re-run recover with --force")
    data = load_imagefolder(folder, class_to_idx=read_class_to_idx(folder), mean=tuple(mean), std=tuple(std),
                            mode=meta.get("decode_mode"))
    return data, meta


IMAGE_LOGITS = "image_logits.safetensors"


def save_image_logits(logits: torch.Tensor, folder: Path, image_fp: str) -> None:
    """Write per-image logits ``(N, K)`` (float32) as ``folder/image_logits.safetensors``, tagged with the image
    set's fingerprint (:func:`image_fingerprint`) so they are never read for other images."""
    save_file({"logits": logits.float().contiguous()}, str(Path(folder) / IMAGE_LOGITS),
              metadata={"image_fingerprint": image_fp})


def load_image_logits(folder: Path, image_fp: str) -> torch.Tensor:
    """The per-image logits float32 ``(N, K)`` of an image folder, in its class-major order.

    Raises:
        LabelDistillError: no ``image_logits.safetensors`` (the set was not imported with soft labels), or one
        written for another image set.
    """
    f = Path(folder) / IMAGE_LOGITS
    if not f.is_file():
        raise LabelDistillError(f"no per-image soft labels in {folder}: validate.label_source: static needs a set "
                                "imported with them (recover source: tensor with float labels.pt (N, K) logits)")
    with safe_open(str(f), "pt") as fh:
        fp = (fh.metadata() or {}).get("image_fingerprint")
    if fp != image_fp:
        raise LabelDistillError(f"{f} belongs to image set {fp}, not to {image_fp}: rerun recover --force")
    return load_file(str(f))["logits"]


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")


def image_bytes(folder: Path) -> int:
    """Bytes on disk of every image file (PNG, JPEG, WebP, BMP, GIF, TIFF, PPM/PGM) under an image folder."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
               and p.is_file())
