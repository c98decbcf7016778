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

Under torchrun, validate opens a set through a decoded cache shared by the ranks (``load_synthetic(...,
share_dir=...)``): the first process decodes it, in chunks, into one uint8 ``.npy`` outside ``images/`` and every
process memory-maps it read-only, so the ranks of one machine share one copy of the pixels in the page cache instead
of each holding its own decoded set.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..errors import DataError, LabelDistillError
from ..io import atomic_write_json, tensor_fingerprint
from ..runtime import release_freed_memory
from .imagefolder import conversion_note, load_imagefolder, load_images, notice, read_class_to_idx, \
    read_headers, scan_imagefolder, set_mode
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


def load_synthetic(folder: Path, mean: tuple[float, ...], std: tuple[float, ...], share_dir: Path | None = None
                   ) -> tuple[ImageSet, dict]:
    """Load an ``images/<mode>/`` folder (image files + class_to_idx.json) and its ``images.json``; every file
    is converted to ``images.json``'s ``decode_mode`` when it has one (a copied set of mixed Pillow modes).

    Args:
        share_dir: when given, the images come from the decoded cache there (:func:`_shared_images`): a
            read-only memory map of uint8 ``(N, C, H, W)`` shared by every process that opens it, bitwise the
            pixels of the plain load. The cache is written by the first process to arrive (a file lock), keyed by
            the set's fingerprint and its files' names, sizes and modification times; a set whose decoded pixels
            do not give ``images.json``'s fingerprint is loaded the plain way instead.

    Raises:
        LabelDistillError: the folder was not written by ``recover`` (run it first).
        DataError: ``class_to_idx.json`` missing or corrupt (see
            :func:`~labeldistill.data.imagefolder.read_class_to_idx`), ``images.json`` not a JSON object with a
            string ``fingerprint`` and an integer ``ipc``, or an unreadable image.
    """
    folder = Path(folder)
    meta = _read_meta(folder)
    if share_dir is not None:
        data = _shared_images(folder, meta, tuple(mean), tuple(std), Path(share_dir))
        if data is not None:
            return data, meta
    data = load_imagefolder(folder, class_to_idx=read_class_to_idx(folder), mean=tuple(mean), std=tuple(std),
                            mode=meta.get("decode_mode"))
    return data, meta


def _read_meta(folder: Path) -> dict:
    """``images.json`` of an image folder, checked (errors: see :func:`load_synthetic`)."""
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
    return meta


CACHE_CHUNK = 256  # images decoded at a time into the cache (bounds the decoding process's private memory)


def _shared_images(folder: Path, meta: dict, mean: tuple[float, ...], std: tuple[float, ...],
                   share_dir: Path) -> ImageSet | None:
    """The image set as a read-only memory map of ``share_dir/<mode>-<key>.npy`` (written first if missing, under
    a file lock, decoded :data:`CACHE_CHUNK` images at a time); None when the decoded pixels do not give
    ``images.json``'s fingerprint (the caller then loads the files itself)."""
    mapping, names, labels = scan_imagefolder(folder, read_class_to_idx(folder))
    classes = [c for c, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
    sig = hashlib.sha256(f"{meta['fingerprint']}|{meta.get('decode_mode')}".encode())
    for n in names:
        st = (folder / n).stat()
        sig.update(f"|{n}:{st.st_size}:{st.st_mtime_ns}".encode())
    share_dir.mkdir(parents=True, exist_ok=True)
    path = share_dir / f"{folder.name}-{sig.hexdigest()[:16]}.npy"
    with open(share_dir / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first process decodes, the others wait and then map its file
        if not path.is_file():
            ok = _write_cache(folder, names, labels, classes, meta, path)
            release_freed_memory()  # the decoded chunks' heap, which would otherwise stay resident in this rank
            if not ok:
                return None
    with warnings.catch_warnings():  # read-only on purpose: build_batch only indexes the images
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        images = torch.from_numpy(np.load(path, mmap_mode="r"))
    return ImageSet(images, labels, classes, mean, std)


def _write_cache(folder: Path, names: list[str], labels: torch.Tensor, classes: list[str], meta: dict,
                 path: Path) -> bool:
    """Decode the set chunk by chunk into ``path`` (atomically); False (nothing written) when its pixels and
    labels do not give ``images.json``'s fingerprint."""
    mode = meta.get("decode_mode")
    if mode is None:
        modes = read_headers(folder, names)[0]
        mode = set_mode(modes)
        notice(conversion_note(modes, mode, folder))
    first = load_images(folder, names[:1], labels[:1], classes, (0.0,), (1.0,), mode=mode).images
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(names), *first.shape[1:]))
    try:
        for a in range(0, len(names), CACHE_CHUNK):
            chunk = load_images(folder, names[a:a + CACHE_CHUNK], labels[a:a + CACHE_CHUNK], classes, (0.0,),
                                (1.0,), mode=mode).images
            if chunk.shape[1:] != first.shape[1:]:
                raise DataError(f"{folder}: images of sizes {tuple(first.shape[2:])} and {tuple(chunk.shape[2:])}; "
                                "re-run recover with --force")
            out[a:a + len(chunk)] = chunk.numpy()
        out.flush()
        ok = image_fingerprint(torch.from_numpy(out), labels) == meta["fingerprint"]
        del out
        if ok:
            os.replace(tmp, path)
            for old in path.parent.glob(f"{folder.name}-*.npy"):  # caches of an earlier state of the set
                if old != path:
                    old.unlink(missing_ok=True)
        return ok
    finally:
        tmp.unlink(missing_ok=True)


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
