"""Image sets made elsewhere, as recover sources (``recover.variants.<mode>: {source: folder | tensor, path}``).

Layouts read:

* ``folder``, ImageFolder: class sub-folders + ``class_to_idx.json`` (folder name → the teacher's class index).
  Without ``class_to_idx.json`` the set is refused: the class order is never taken from folder sort order.
* ``folder``, SRe2L's output: ``new{c:03d}/class{c:03d}_id{i:03d}.{jpg,png}``; the class index is the folder's
  number, the teacher's class of that index (a file whose name says another class is refused).
* ``tensor``, DD-Ranking's: ``images.pt`` (float ``(N, C, H, W)`` in [0, 1], or uint8) and ``labels.pt``
  (integer ``(N,)`` class indices of the teacher).

Every set is checked against the teacher: exactly its classes (indices ``0..C-1``, each with images), the same
number of images in every class (the IPC; unequal counts are refused), its number of channels. Images of
another size than the teacher's input are resized to it (ImageFolder files: shorter side + centre crop, as
``data.image_size``; tensors: bilinear, antialiased), and ``images.json`` says so; a non-square teacher input
with another size is refused. The teacher's top-1 on the set is checked by recover (the mapping check).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import DataError
from ..io import sha256_file
from .imagefolder import IMAGE_EXTENSIONS, load_images, scan_imagefolder

SRE2L_DIR = re.compile(r"^new(\d{3,})$")
SRE2L_FILE = re.compile(r"^class(\d+)_id\d+\.", re.IGNORECASE)
TENSOR_FILES = ("images.pt", "labels.pt")
_FINGERPRINTS: dict[tuple, str] = {}  # (source, path, names, sizes, mtimes) → fingerprint, per process


@dataclass
class OwnListing:
    """The files of a set made elsewhere: image files in class-major order (``folder``) or the tensor files."""

    source: str
    root: Path
    layout: str  # "imagefolder", "sre2l" or "tensor"
    files: list[str] = field(default_factory=list)  # every file the set is made of, relative to root
    names: list[str] = field(default_factory=list)  # image files (folder sources), class-major
    labels: list[int] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)  # the set's own names of the classes, by index


def list_source(source: str, path: str | Path) -> OwnListing:
    """List a ``folder`` or ``tensor`` source without decoding anything.

    Raises:
        DataError: missing folder or files; an ImageFolder without ``class_to_idx.json``; a stray file; an
        SRe2L file named for another class than its folder.
    """
    root = Path(path).expanduser()
    if source == "tensor":
        missing = [f for f in TENSOR_FILES if not (root / f).is_file()]
        if missing:
            raise DataError(f"tensor image source {root} has no {missing[0]}: give the folder holding images.pt "
                            "(float (N, C, H, W) in [0, 1] or uint8) and labels.pt (int64 (N,))")
        return OwnListing(source, root, "tensor", list(TENSOR_FILES))
    if not root.is_dir():
        raise DataError(f"image source folder not found: {root}")
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if (root / "class_to_idx.json").is_file():
        mapping, names, labels = scan_imagefolder(root)
        classes = [c for c, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
        return OwnListing(source, root, "imagefolder", names + ["class_to_idx.json"], names, labels.tolist(), classes)
    if subdirs and all(SRE2L_DIR.match(d) for d in subdirs):
        return _list_sre2l(root, subdirs)
    raise DataError(f"image folder {root} has no class_to_idx.json: add one mapping each class folder to the "
                    "teacher's class index, e.g. {\"" + (subdirs[0] if subdirs else "cat") + "\": 0, ...} "
                    "(the class order is never taken from folder sort order; SRe2L's new000/ folders need none)")


def _list_sre2l(root: Path, subdirs: list[str]) -> OwnListing:
    pairs = []
    for d in subdirs:
        c = int(SRE2L_DIR.match(d).group(1))
        with os.scandir(root / d) as it:
            entries = sorted(e.name for e in it if not e.name.startswith("."))
        for n in entries:
            if Path(n).suffix.lower() not in IMAGE_EXTENSIONS:
                raise DataError(f"{root / d / n} is not an image file; remove it from the SRe2L folder")
            m = SRE2L_FILE.match(n)
            if m and int(m.group(1)) != c:
                raise DataError(f"{root / d / n} is named for class {int(m.group(1))} but lies in {d}/ (class {c}): "
                                "the class comes from the folder number; move the file")
            pairs.append((c, f"{d}/{n}"))
    names = [n for _, n in pairs]
    return OwnListing("folder", root, "sre2l", names, names, [c for c, _ in pairs], [f"new{c:03d}" for c in
                                                                                     sorted({c for c, _ in pairs})])


def source_fingerprint(source: str, path: str | Path) -> str:
    """16 hex digits over the names and bytes of every file of the set (cached per process while no file's size
    or modification time changes); ``"(missing)"`` when the set is gone.

    Raises:
        DataError: a set that cannot be listed (see :func:`list_source`).
    """
    root = Path(path).expanduser()
    if not root.exists():
        return "(missing)"
    listing = list_source(source, root)
    stats = tuple((f, (root / f).stat().st_size, (root / f).stat().st_mtime_ns) for f in listing.files)
    key = (source, str(root.resolve()), stats)
    if key not in _FINGERPRINTS:
        h = hashlib.sha256()
        for f in listing.files:
            h.update(f"{f}\0{sha256_file(root / f)}\0".encode())
        _FINGERPRINTS[key] = h.hexdigest()[:16]
    return _FINGERPRINTS[key]


def load_own_set(source: str, path: str | Path, shape: tuple[int, int, int], classes: list[str]
                 ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Read a set made elsewhere for a teacher with input ``shape`` ``(C, H, W)`` and class names ``classes``.

    Returns:
        uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)``, class-major (stable), and notes for
        ``images.json``: ``layout``, ``ipc``, ``num_source_files``, and where they apply ``resized``,
        ``quantised``, ``class_names_in_source``.

    Raises:
        DataError: see :func:`list_source`; another set of classes than the teacher's, an ImageFolder whose
        class names are the teacher's under other indices, unequal image counts per class, another number of
        channels, float pixels outside [0, 1], or another size with a non-square teacher input.
    """
    listing = list_source(source, path)
    if source == "tensor":
        images, labels, notes = _load_tensors(listing.root, shape)
    else:
        _check_names(listing, classes)
        images, labels, notes = _load_files(listing, shape, classes)
    _check_classes(listing.root, labels, len(classes))
    order = torch.argsort(labels, stable=True)
    notes.update(layout=listing.layout, ipc=int(len(labels) // len(classes)), num_source_files=len(listing.files))
    if listing.class_names and listing.class_names != list(classes):
        notes["class_names_in_source"] = listing.class_names
    return images[order].contiguous(), labels[order], notes


def _check_names(listing: OwnListing, classes: list[str]) -> None:
    """An ImageFolder naming the teacher's classes must give them the teacher's indices."""
    if listing.layout != "imagefolder" or sorted(listing.class_names) != sorted(classes):
        return
    moved = [(c, i, classes.index(c)) for i, c in enumerate(listing.class_names) if classes[i] != c]
    if moved:
        c, i, j = moved[0]
        raise DataError(f"{listing.root / 'class_to_idx.json'} gives class '{c}' index {i} but the teacher's index "
                        f"of '{c}' is {j} ({len(moved)} classes differ): fix class_to_idx.json to the teacher's order")


def _check_classes(root: Path, labels: torch.Tensor, num_classes: int) -> None:
    if len(labels) == 0:
        raise DataError(f"image source {root} holds no images")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(f"image source {root} has class index {hi if hi >= num_classes else lo} but the teacher has "
                        f"{num_classes} classes (0..{num_classes - 1}): check the class numbering of the set")
    counts = torch.bincount(labels, minlength=num_classes)
    if int(counts.min()) == 0:
        raise DataError(f"image source {root} has no images of class {int((counts == 0).nonzero()[0])} "
                        f"({int((counts == 0).sum())} of the teacher's {num_classes} classes missing): the set must "
                        "cover every class of the teacher")
    if int(counts.min()) != int(counts.max()):
        a, b = int(counts.argmin()), int(counts.argmax())
        raise DataError(f"image source {root} has unequal images per class (class {a}: {int(counts[a])}, class {b}: "
                        f"{int(counts[b])}): labeldistill needs the same number in every class (the IPC); "
                        "remove the extra images")


def _resize_note(sizes: set, shape: tuple[int, int, int], how: str) -> dict:
    _, h, w = shape
    if h != w:
        raise DataError(f"images are {', '.join(f'{a}x{b}' for a, b in sorted(sizes))} (HxW) but the teacher takes "
                        f"{h}x{w}, which is not square: resize the set to {h}x{w} first")
    return {"from": [list(s) for s in sorted(sizes)], "to": [h, w], "how": how}


def _load_files(listing: OwnListing, shape: tuple[int, int, int], classes: list[str]
                ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    c, h, w = shape
    sizes = set()
    for n in listing.names:
        try:
            with Image.open(listing.root / n) as im:
                sizes.add((im.size[1], im.size[0]))
        except OSError as e:
            raise DataError(f"cannot read image {listing.root / n}: {e}") from None
    notes: dict = {}
    size = None
    if sizes != {(h, w)}:
        notes["resized"] = _resize_note(sizes, shape, f"shorter side to {h} px + centre crop (bilinear, Pillow)")
        size = h
    labels = torch.tensor(listing.labels, dtype=torch.int64)
    data = load_images(listing.root, listing.names, labels, classes, mean=(0.0,) * c, std=(1.0,) * c,
                       image_size=size, mode="L" if c == 1 else "RGB")
    return data.images, labels, notes


def read_tensor_file(f: Path) -> torch.Tensor:
    """The tensor in a ``torch.save`` file, read with ``weights_only=True`` (never unpickles arbitrary code).

    Raises:
        DataError: an unreadable or corrupt file (any failure of ``torch.load``), or no non-empty tensor inside.
    """
    try:
        t = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise DataError(f"cannot read {f}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(t, torch.Tensor) or t.numel() == 0:
        raise DataError(f"{f} must hold a non-empty tensor, got {tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}")
    return t


def _load_tensors(root: Path, shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, dict]:
    c, h, w = shape
    x, y = read_tensor_file(root / "images.pt"), read_tensor_file(root / "labels.pt")
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != c:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"{root / 'images.pt'} must hold a tensor (N, {c}, H, W) for this teacher, got {got}")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or len(y) != len(x) or y.is_floating_point():
        got = f"{tuple(y.shape)} {y.dtype}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise DataError(f"{root / 'labels.pt'} must hold integer class indices ({len(x)},) (hard labels; the teacher "
                        f"relabels the images), got {got}")
    notes: dict = {}
    if x.dtype != torch.uint8:
        x = x.float()
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise DataError(f"{root / 'images.pt'} holds values in [{lo:.3g}, {hi:.3g}]; labeldistill needs pixels in "
                            "[0, 1] (undo the normalisation: x * std + mean) or uint8")
        notes["quantised"] = "float [0, 1] → uint8: round(x · 255)"
    if tuple(x.shape[2:]) != (h, w):
        notes["resized"] = _resize_note({tuple(x.shape[2:])}, shape, "bilinear, antialiased (torch interpolate)")
        x = F.interpolate(x.float() / (255 if x.dtype == torch.uint8 else 1), size=(h, w), mode="bilinear",
                          antialias=True, align_corners=False)
        notes.setdefault("quantised", "resized → uint8: round(x · 255)")
    if x.dtype != torch.uint8:
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return x.contiguous(), y.to(torch.int64), notes
