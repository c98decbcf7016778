"""The dry run's cheap checks of the data: list the splits, read every image file's header (Pillow mode and
size, no pixels), decode one image of each split, compare their classes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..config import Config
from ..data import load_split
from ..data.imagefolder import conversion_note, decode_image, read_headers, scan_imagefolder, set_mode, split_folder
from ..errors import DataError


def probe_data(cfg: Config) -> dict:
    """Splits, image shape, class names and warnings of the configured dataset (nothing is trained or written).

    Every file of an ``imagefolder`` split, and of a lazy split of any dataset, has its header read, so a file
    the run could not read, or (without ``data.image_size``) of another size, is refused here.

    Raises:
        DataError: missing data root, split folder, class folder or image; unreadable image or image header;
            images of several sizes without ``data.image_size``; train and test classes or image sizes differ.
    """
    return _probe_imagefolder(cfg) if cfg.data.dataset == "imagefolder" else _probe_in_memory(cfg)


def _probe_imagefolder(cfg: Config) -> dict:
    """List both splits of an ImageFolder and decode one image of each with the configured settings."""
    d = cfg.data
    if d.root is None:
        raise DataError("dataset 'imagefolder' needs data.root=/path/to/folder")
    root = Path(d.root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}; set data.root to a folder with class sub-folders")
    out: dict[str, Any] = {"splits": {}, "warnings": []}
    shapes, mappings = {}, {}
    for split in ("train",) if d.test_holdout else ("train", "test"):
        folder = split_folder(root, split)  # no test/ or val/ folder without data.test_holdout: refused
        c2i, names, labels = scan_imagefolder(folder)
        modes, sizes = read_headers(folder, names)
        if d.image_size is None and len(set(sizes)) > 1:
            odd = next(i for i, s in enumerate(sizes) if s != sizes[0])
            raise DataError(f"{folder / names[odd]} is {sizes[odd][0]}x{sizes[odd][1]}, {folder / names[0]} is "
                            f"{sizes[0][0]}x{sizes[0][1]}: set data.image_size to resize them to one size")
        mode = set_mode(modes)
        line = conversion_note(modes, mode, folder)
        if line:
            out["warnings"].append(line)
        a = decode_image(folder / names[0], mode, d.image_size, d.resize)
        shapes[split], mappings[split] = tuple(a.shape), c2i
        limit = d.train_subset if split == "train" else d.test_subset
        avail = len(names) - (d.holdout + d.test_holdout if split == "train" else 0)  # held out: not trained on
        out["splits"][split] = {
            "folder": str(folder), "images": len(names), "used": avail if limit is None else min(limit, avail),
            "classes": len(c2i), "class_to_idx": "class_to_idx.json" if (folder / "class_to_idx.json").is_file()
            else "sorted folder names", "probe": str(folder / names[0]), "probe_mode": mode,
        }
    if d.test_holdout:  # the test split is part of the train folder
        out["splits"]["test"] = {**out["splits"]["train"], "images": d.test_holdout,
                                 "used": min(d.test_subset or d.test_holdout, d.test_holdout),
                                 "held_out_of_train": True}
        shapes["test"], mappings["test"] = shapes["train"], mappings["train"]
    if mappings["train"] != mappings["test"]:
        raise DataError(f"the train split ({out['splits']['train']['folder']}) and the test split "
                        f"({out['splits']['test']['folder']}) have different classes or class indices; give both "
                        "the same class folders (or the same class_to_idx.json)")
    if shapes["train"] != shapes["test"]:
        raise DataError(f"train images decode to {shapes['train']} but test images to {shapes['test']}; set "
                        "data.image_size so both splits are resized to one size")
    if not d.lazy:
        gb = out["splits"]["train"]["used"] * math.prod(shapes["train"]) / 1e9
        if gb > 8:
            out["warnings"].append(f"the training split needs about {gb:.1f} GB in memory; set data.lazy: true")
    out["shape"] = shapes["train"]
    out["class_names"] = [c for c, _ in sorted(mappings["train"].items(), key=lambda kv: kv[1])]
    return out


def _probe_in_memory(cfg: Config) -> dict:
    """Load both splits (a lazy split: its file list, then every file's header is read)."""
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    for ds in (train, test):
        if ds.is_lazy:
            names = [ds.images.name(i) for i in range(len(ds))]
            _, sizes = read_headers(ds.images.folder, names)
            if ds.images.image_size is None and len(set(sizes)) > 1:
                odd = next(i for i, s in enumerate(sizes) if s != sizes[0])
                raise DataError(f"{ds.images.path(odd)} is {sizes[odd][0]}x{sizes[odd][1]}, {ds.images.path(0)} is "
                                f"{sizes[0][0]}x{sizes[0][1]}: set data.image_size to resize them to one size")
    if train.classes != test.classes:
        raise DataError("the train and test splits have different classes")
    return {"splits": {s: {"folder": cfg.data.root or "(default location)", "images": len(ds), "used": len(ds),
                           "classes": ds.num_classes} for s, ds in (("train", train), ("test", test))},
            "warnings": [], "shape": train.shape, "class_names": list(train.classes)}
