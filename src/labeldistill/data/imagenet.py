"""Tiny-ImageNet and ImageNet-1K in the layouts they are distributed in (no re-sorting of files needed).

**tiny-imagenet** (``tiny-imagenet-200.zip``, extracted; ``data.root`` is ``tiny-imagenet-200/`` or its
parent)::

    <root>/wnids.txt                          200 wnids, one a line (unsorted)
    <root>/train/<wnid>/images/*.JPEG         500 training images per class (<wnid>_boxes.txt is ignored)
    <root>/val/images/*.JPEG                  10,000 validation images (the ``test`` split)
    <root>/val/val_annotations.txt            "<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>" per validation image

``test/`` (unlabelled) is not used. Images are 64×64; the few grey-level JPEGs are converted to RGB.
The class order is the sorted wnids (``data.class_order: sorted``, the default): the order of
``torchvision.datasets.ImageFolder`` on ``train/``, which the LPLD and SRe2L reference teachers, RDED and
DD-Ranking use, so their Tiny-ImageNet checkpoints and image sets map onto the right classes.
``data.class_order: wnids`` takes the order of ``wnids.txt`` (index = line number) instead.

**imagenet** (ILSVRC-2012; ``data.root`` holds ``train/`` and ``val/``)::

    <root>/train/<wnid>/*.JPEG                training images, one folder per class (1,000 classes)
    <root>/val/<wnid>/*.JPEG                  validation images sorted into class folders, or flat:
    <root>/val/*.JPEG                         + one ground-truth file, the first found of
        <root>/val_labels.txt  or <root>/val/val_labels.txt      "<file> <wnid>" per line
        LOC_val_solution.csv in <root>, <root>/val or up to 3 folders above <root> (Kaggle's
                                               "ImageId,PredictionString" with the wnid first in the string)

The class order is torchvision's (sorted wnids of ``train/``, what pretrained models expect) unless
``train/class_to_idx.json`` fixes another. Images are converted to RGB, resized (shorter side ``resize``,
default ``image_size / 0.875`` = 256 for 224) and centre-cropped to ``image_size`` (default 224); set
``data.lazy: true`` to stream the 1.28M training images from disk instead of decoding them into memory.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch

from ..errors import ConfigError, DataError
from .imagefolder import IMAGE_EXTENSIONS, load_images, read_class_to_idx, scan_imagefolder
from .registry import ImageSet, register_dataset

TINY_MEAN, TINY_STD = (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_CLASS_ORDERS = ("sorted", "wnids")


def _image_files(folder: Path) -> list[str]:
    """Sorted image file names in ``folder`` (no sub-folders, no dot files)."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and e.is_file()
                      and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS)


def _labelled(pairs: list[tuple[str, str]], c2i: dict[str, int], source: Path, folder: Path
              ) -> tuple[list[str], torch.Tensor]:
    """``(file, wnid)`` pairs → names sorted class-major, labels; every file must exist in ``folder``.

    Raises:
        DataError: an unknown wnid, a listed file that is missing, or an image in ``folder`` with no label.
    """
    present = set(_image_files(folder))
    bad = next((w for _, w in pairs if w not in c2i), None)
    if bad is not None:
        raise DataError(f"{source} names class '{bad}', which is not one of the {len(c2i)} training classes")
    missing = next((f for f, _ in pairs if f not in present), None)
    if missing is not None:
        raise DataError(f"{source} lists {missing}, which is not in {folder}")
    unlabelled = sorted(present - {f for f, _ in pairs})
    if unlabelled:
        raise DataError(f"{folder / unlabelled[0]} has no line in {source} (+{len(unlabelled) - 1} more)")
    if not pairs:
        raise DataError(f"{source} lists no images")
    ordered = sorted(pairs, key=lambda fw: (c2i[fw[1]], fw[0]))
    return [f for f, _ in ordered], torch.tensor([c2i[w] for _, w in ordered], dtype=torch.int64)


def _tiny_root(root: str | None) -> Path:
    if root is None:
        raise DataError(f"dataset 'tiny-imagenet' needs data.root: the folder extracted from {TINY_URL}")
    r = Path(root)
    if not (r / "wnids.txt").is_file() and (r / "tiny-imagenet-200" / "wnids.txt").is_file():
        r = r / "tiny-imagenet-200"
    if not (r / "wnids.txt").is_file():
        raise DataError(f"tiny-imagenet: missing {r / 'wnids.txt'}; point data.root at the folder extracted "
                        f"from tiny-imagenet-200.zip ({TINY_URL}), with wnids.txt, train/ and val/")
    return r


def _tiny_split(r: Path, split: str, wnids: list[str]) -> tuple[Path, list[str], torch.Tensor]:
    """The folder, file names relative to it, and labels of a Tiny-ImageNet split."""
    c2i = {w: i for i, w in enumerate(wnids)}
    if split == "train":
        names: list[str] = []
        counts = []
        for w in wnids:
            d = r / "train" / w / "images"
            if not d.is_dir():
                raise DataError(f"tiny-imagenet: missing {d} (train/<wnid>/images/ for every wnid in wnids.txt)")
            files = _image_files(d)
            if not files:
                raise DataError(f"tiny-imagenet: no images in {d}")
            names += [f"{w}/images/{f}" for f in files]
            counts.append(len(files))
        labels = torch.repeat_interleave(torch.arange(len(wnids)), torch.tensor(counts))
        return r / "train", names, labels
    ann = r / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise DataError(f"tiny-imagenet: missing {ann} (val/images/ + val/val_annotations.txt, as in the archive)")
    pairs = []
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) < 2:
            raise DataError(f"{ann}:{n}: expected '<file> <wnid> <box>', got {line!r}")
        pairs.append((cols[0], cols[1]))
    names, labels = _labelled(pairs, c2i, ann, r / "val" / "images")
    return r / "val", [f"images/{f}" for f in names], labels


@register_dataset("tiny-imagenet")
def tiny_imagenet(root: str | None, split: str, image_size: int | None = None, resize: int | None = None,
                  lazy: bool = False, mean: tuple[float, ...] | None = None,
                  std: tuple[float, ...] | None = None, class_order: str = "sorted") -> ImageSet:
    """Tiny-ImageNet (200 classes, 100k train / 10k val as ``test``, 3×64×64) in its archive layout.

    Args:
        class_order: ``sorted`` (sorted wnids, torchvision ImageFolder's order: the reference teachers') or
            ``wnids`` (the order of ``wnids.txt``).

    Raises:
        ConfigError: an unknown ``class_order``.
        DataError: missing root, ``wnids.txt``, class folder or annotation file, or an unreadable image.
    """
    if class_order not in TINY_CLASS_ORDERS:
        raise ConfigError(f"data.class_order must be one of {', '.join(TINY_CLASS_ORDERS)}, got {class_order!r}")
    r = _tiny_root(root)
    wnids = [w.strip() for w in (r / "wnids.txt").read_text().split() if w.strip()]
    if len(set(wnids)) != len(wnids) or not wnids:
        raise DataError(f"{r / 'wnids.txt'}: expected distinct wnids, one a line")
    if class_order == "sorted":
        wnids = sorted(wnids)
    folder, names, labels = _tiny_split(r, split, wnids)
    return load_images(folder, names, labels, wnids, mean or TINY_MEAN, std or TINY_STD, image_size, resize,
                       lazy, mode="RGB")


def _ground_truth(r: Path) -> Path | None:
    """The first ImageNet validation ground-truth file found (see the module docstring)."""
    for f in (r / "val_labels.txt", r / "val" / "val_labels.txt", r / "LOC_val_solution.csv",
              r / "val" / "LOC_val_solution.csv", *(p / "LOC_val_solution.csv" for p in list(r.resolve().parents)[:3])):
        if f.is_file():
            return f
    return None


def _read_ground_truth(f: Path) -> list[tuple[str, str]]:
    """``(file, wnid)`` pairs of ``val_labels.txt`` or Kaggle's ``LOC_val_solution.csv``."""
    pairs = []
    if f.suffix == ".csv":
        with f.open(newline="") as fh:
            for n, row in enumerate(csv.DictReader(fh), 2):
                if not row.get("ImageId") or not (row.get("PredictionString") or "").split():
                    raise DataError(f"{f}:{n}: expected 'ImageId,PredictionString' with a wnid first")
                pairs.append((row["ImageId"] + ".JPEG", row["PredictionString"].split()[0]))
        return pairs
    for n, line in enumerate(f.read_text().splitlines(), 1):
        cols = line.split()
        if cols and len(cols) != 2:
            raise DataError(f"{f}:{n}: expected '<file> <wnid>', got {line!r}")
        if cols:
            pairs.append((cols[0], cols[1]))
    return pairs


def _imagenet_split(r: Path, split: str) -> tuple[Path, list[str], torch.Tensor, list[str]]:
    """Folder, names, labels and classes of an ImageNet split."""
    train, val = r / "train", r / "val"
    folder = train if split == "train" else val
    if not folder.is_dir():
        raise DataError(f"imagenet: missing {folder}; data.root must hold train/<wnid>/*.JPEG and val/")
    c2i = read_class_to_idx(train) if train.is_dir() else None
    flat = split == "test" and not any(p.is_dir() for p in val.iterdir())
    if not flat:
        c2i, names, labels = scan_imagefolder(folder, c2i)
        return folder, names, labels, [c for c, _ in sorted(c2i.items(), key=lambda kv: kv[1])]
    gt = _ground_truth(r)
    if gt is None:
        raise DataError(f"imagenet: {val} holds images but no class folders, and no ground truth was found: put "
                        f"val_labels.txt ('<file> <wnid>' per line) or LOC_val_solution.csv in {r}")
    pairs = _read_ground_truth(gt)
    c2i = c2i or {w: i for i, w in enumerate(sorted({w for _, w in pairs}))}
    names, labels = _labelled(pairs, c2i, gt, val)
    return val, names, labels, [c for c, _ in sorted(c2i.items(), key=lambda kv: kv[1])]


@register_dataset("imagenet")
def imagenet(root: str | None, split: str, image_size: int = 224, resize: int | None = None, lazy: bool = False,
             mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> ImageSet:
    """ImageNet-1K (ILSVRC-2012): train class folders; val in class folders or flat + ground truth (``test``).

    Raises:
        DataError: missing root or split folder, no ground truth for a flat val folder, a ground truth that
        does not match the files, or an unreadable image.
    """
    if root is None or not Path(root).is_dir():
        raise DataError(f"dataset 'imagenet' needs data.root: a folder with train/ and val/ (got {root})")
    folder, names, labels, classes = _imagenet_split(Path(root), split)
    return load_images(folder, names, labels, classes, mean or IMAGENET_MEAN, std or IMAGENET_STD, image_size,
                       resize or round(image_size / 0.875), lazy, mode="RGB")
