"""The dry run's cheap checks of the data: list the splits, decode one image of each, compare their classes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PIL import Image

from ..config import Config
from ..data import load_split
from ..data.imagefolder import decode_image, scan_imagefolder, split_folder, target_mode
from ..errors import DataError


def probe_data(cfg: Config) -> dict:
    """Splits, image shape, class names and warnings of the configured dataset (nothing is trained or written).

    Raises:
        DataError: missing data root, split folder, class folder or image; unreadable image; train and test
            classes or image sizes differ.
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
        first = folder / names[0]
        try:
            with Image.open(first) as im:
                mode = im.mode
        except OSError as e:
            raise DataError(f"cannot read image {first}: {e}") from None
        a = decode_image(first, target_mode(mode) if d.lazy else None, d.image_size, d.resize)
        shapes[split], mappings[split] = tuple(a.shape), c2i
        limit = d.train_subset if split == "train" else d.test_subset
        avail = len(names) - (d.holdout + d.test_holdout if split == "train" else 0)  # held out: not trained on
        out["splits"][split] = {
            "folder": str(folder), "images": len(names), "used": avail if limit is None else min(limit, avail),
            "classes": len(c2i), "class_to_idx": "class_to_idx.json" if (folder / "class_to_idx.json").is_file()
            else "sorted folder names", "probe": str(first), "probe_mode": mode,
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
    if d.image_size is None:
        out["warnings"].append("data.image_size is not set: every image must have the size of the probed one "
                               f"({shapes['train'][2]}x{shapes['train'][1]})"
                               + ("; a different one stops the run when it is decoded" if d.lazy else ""))
    if not d.lazy:
        gb = out["splits"]["train"]["used"] * math.prod(shapes["train"]) / 1e9
        if gb > 8:
            out["warnings"].append(f"the training split needs about {gb:.1f} GB in memory; set data.lazy: true")
    out["shape"] = shapes["train"]
    out["class_names"] = [c for c, _ in sorted(mappings["train"].items(), key=lambda kv: kv[1])]
    return out


def _probe_in_memory(cfg: Config) -> dict:
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    if train.classes != test.classes:
        raise DataError("the train and test splits have different classes")
    return {"splits": {s: {"folder": cfg.data.root or "(default location)", "images": len(ds), "used": len(ds),
                           "classes": ds.num_classes} for s, ds in (("train", train), ("test", test))},
            "warnings": [], "shape": train.shape, "class_names": list(train.classes)}
