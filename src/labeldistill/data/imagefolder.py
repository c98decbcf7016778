"""ImageFolder datasets read with Pillow, with an explicit ``class_to_idx``.

Layout: ``root/<split>/<class>/<image>`` (``split`` = ``train``, and ``test`` or ``val``), or
``root/<class>/<image>`` for a single split. If ``class_to_idx.json`` is next to the class folders it
fixes the class order; otherwise classes are sorted by name and that mapping is what the caller gets
(and writes out with any artifact): the index is never implied by folder order alone downstream.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from . import ImageSet, register_dataset

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def _split_root(root: Path, split: str) -> Path:
    candidates = [root / split] + ([root / "val"] if split == "test" else [])
    for c in candidates:
        if c.is_dir():
            return c
    return root


def read_class_to_idx(folder: Path) -> dict[str, int]:
    """``class_to_idx.json`` in ``folder`` if present, else sorted sub-folder names.

    Raises:
        DataError: no class folders, or a JSON that does not match the folders.
    """
    subdirs = sorted(p.name for p in folder.iterdir() if p.is_dir())
    f = folder / "class_to_idx.json"
    if f.is_file():
        try:
            mapping = {str(k): int(v) for k, v in json.loads(f.read_text()).items()}
        except (ValueError, AttributeError) as e:
            raise DataError(f"{f}: not a JSON object of class name -> index ({e})") from None
        missing = [c for c in mapping if c not in subdirs]
        if missing:
            raise DataError(f"{f} names class folder '{missing[0]}' which does not exist in {folder}")
        if sorted(mapping.values()) != list(range(len(mapping))):
            raise DataError(f"{f}: indices must be 0..{len(mapping) - 1}")
        return mapping
    if not subdirs:
        raise DataError(f"no class folders in {folder}")
    return {c: i for i, c in enumerate(subdirs)}


def load_imagefolder(folder: str | Path, class_to_idx: dict[str, int] | None = None,
                     mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> ImageSet:
    """Load every image of an ImageFolder into memory as uint8 ``(N, C, H, W)``.

    Raises:
        DataError: missing folder, empty class, unreadable file, mixed sizes or modes.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    mapping = class_to_idx or read_class_to_idx(folder)
    arrays, labels, size, mode = [], [], None, None
    for cls, ci in sorted(mapping.items(), key=lambda kv: kv[1]):
        entries = sorted(p for p in (folder / cls).iterdir() if not p.name.startswith(".")) \
            if (folder / cls).is_dir() else []
        stray = [p for p in entries if p.is_dir() or p.suffix.lower() not in IMAGE_EXTENSIONS]
        if stray:
            raise DataError(f"{stray[0]} is not an image file ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                            "remove it from the class folder")
        files = entries
        if not files:
            raise DataError(f"class '{cls}' has no images in {folder / cls}")
        for p in files:
            try:
                with Image.open(p) as im:
                    im.load()
                    if mode is None:
                        mode, size = im.mode, im.size
                    if im.mode != mode:
                        raise DataError(f"{p} has mode {im.mode}, other images have {mode}")
                    if im.size != size:
                        raise DataError(f"{p} is {im.size[0]}x{im.size[1]}, other images are "
                                        f"{size[0]}x{size[1]}; resize them to one size first")
                    a = np.asarray(im)
            except (UnidentifiedImageError, OSError) as e:
                raise DataError(f"cannot read image {p}: {e}") from None
            arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
            labels.append(ci)
    x = torch.from_numpy(np.stack(arrays)).contiguous()
    classes = [c for c, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
    if mean is None or std is None:
        xf = x.float() / 255
        mean = tuple(xf.mean(dim=(0, 2, 3)).tolist())
        std = tuple(xf.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    return ImageSet(x, torch.tensor(labels, dtype=torch.int64), classes, mean, std)


@register_dataset("imagefolder")
def imagefolder(root: str | None, split: str) -> ImageSet:
    """A user's ImageFolder (e.g. Tiny-ImageNet); normalisation computed from the loaded split."""
    if root is None:
        raise DataError("dataset 'imagefolder' needs data.root=/path/to/folder")
    return load_imagefolder(_split_root(Path(root), split))
