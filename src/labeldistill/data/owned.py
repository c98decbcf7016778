"""Image sets made elsewhere, as recover sources (``recover.variants.<mode>: {source: folder | tensor, path}``).

Layouts read:

* ``folder``, ImageFolder with ``class_to_idx.json`` (folder name → the teacher's class index): that mapping.
* ``folder``, SRe2L's output: ``new{c:03d}/class{c:03d}_id{i:03d}.{jpg,png}``, and RDED's (Sun et al., CVPR 2024;
  ``synthesize/main.py`` of the RDED repository): ``{c:05d}/class{c:05d}_id{i:05d}.jpg``; the class index is the
  folder's number, the teacher's class of that index (a file whose name says another class is refused).
* ``folder``, a plain ImageFolder (class sub-folders, no ``class_to_idx.json``): sorted folder names → 0..K-1,
  the rule of ``torchvision.datasets.ImageFolder`` (its ``find_classes``); recover says so in one line and
  writes the mapping to ``images/<mode>/source_class_to_idx.json``.
* ``tensor``, DD-Ranking's: ``images.pt`` (float ``(N, C, H, W)`` in [0, 1], or uint8) and ``labels.pt``
  (integer ``(N,)`` class indices of the teacher).

Every set is checked against the teacher: exactly its classes (indices ``0..C-1``, each with images), the same
number of images in every class (the IPC; unequal counts are refused), its number of channels (tensors; files
of another mode — grey, RGB, RGBA, palette — are converted to the teacher's channels and counted, never
refused). Images of another size than the teacher's input are resized to it (files: shorter side + centre crop,
as ``data.image_size``; tensors: bilinear, antialiased), and ``images.json`` says so; a non-square teacher input
with another size is refused. The teacher's top-1 on the set is checked by recover (the mapping check).

A ``folder`` set that needs no resize is kept in its own encoding: recover copies the files as they are (a JPEG
stays that JPEG), so the image bytes of the run are the bytes of the user's files (:func:`copy_own_files`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import DataError
from ..io import atomic_write_json, sha256_file
from .imagefolder import IMAGE_EXTENSIONS, conversion_note, load_images, read_headers, scan_imagefolder

SRE2L_DIR = re.compile(r"^new(\d{3,})$")
RDED_DIR = re.compile(r"^(\d{5,})$")
NUMBERED = {"sre2l": (SRE2L_DIR, "new{:03d}"), "rded": (RDED_DIR, "{:05d}")}  # layout → folder pattern, name
SRE2L_FILE = re.compile(r"^class(\d+)_id\d+\.", re.IGNORECASE)  # SRe2L's and RDED's file names
SORTED_ORDER = "sorted folder names (torchvision ImageFolder)"
TENSOR_FILES = ("images.pt", "labels.pt")
_FINGERPRINTS: dict[tuple, str] = {}  # (source, path, names, sizes, mtimes) → fingerprint, per process


@dataclass
class OwnListing:
    """The files of a set made elsewhere: image files in class-major order (``folder``) or the tensor files."""

    source: str
    root: Path
    layout: str  # "imagefolder", "sre2l", "rded" or "tensor"
    files: list[str] = field(default_factory=list)  # every file the set is made of, relative to root
    names: list[str] = field(default_factory=list)  # image files (folder sources), class-major
    labels: list[int] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)  # the set's own names of the classes, by index
    class_order: str = ""  # where the class index comes from: class_to_idx.json, SORTED_ORDER, folder number


def list_source(source: str, path: str | Path) -> OwnListing:
    """List a ``folder`` or ``tensor`` source without decoding anything.

    Raises:
        DataError: missing folder or files; a stray file; an SRe2L / RDED file named for another class than its
        folder.
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
    explicit = (root / "class_to_idx.json").is_file()
    for layout, (pattern, _) in NUMBERED.items():
        if not explicit and subdirs and all(pattern.match(d) for d in subdirs):
            return _list_numbered(root, subdirs, layout)
    mapping, names, labels = scan_imagefolder(root)  # class_to_idx.json, else torchvision's sorted order
    classes = [c for c, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
    return OwnListing(source, root, "imagefolder", names + (["class_to_idx.json"] if explicit else []), names,
                      labels.tolist(), classes, "class_to_idx.json" if explicit else SORTED_ORDER)


def _list_numbered(root: Path, subdirs: list[str], layout: str) -> OwnListing:
    """SRe2L's ``new{c:03d}/`` or RDED's ``{c:05d}/`` folders: the class index is the folder's number."""
    pattern, fmt = NUMBERED[layout]
    pairs = []
    for d in subdirs:
        c = int(pattern.match(d).group(1))
        with os.scandir(root / d) as it:
            entries = sorted(e.name for e in it if not e.name.startswith("."))
        for n in entries:
            if Path(n).suffix.lower() not in IMAGE_EXTENSIONS:
                raise DataError(f"{root / d / n} is not an image file; remove it from the {layout} folder")
            m = SRE2L_FILE.match(n)
            if m and int(m.group(1)) != c:
                raise DataError(f"{root / d / n} is named for class {int(m.group(1))} but lies in {d}/ (class {c}): "
                                "the class comes from the folder number; move the file")
            pairs.append((c, f"{d}/{n}"))
    pairs.sort(key=lambda cn: cn[0])  # stable: numeric class order (new1000 sorts before new101 as text)
    names = [n for _, n in pairs]
    return OwnListing("folder", root, layout, names, names, [c for c, _ in pairs],
                      [fmt.format(c) for c in sorted({c for c, _ in pairs})], "folder number")


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
        ``quantised``, ``class_names_in_source`` and a folder's notes (:func:`check_own_folder`).

    Raises:
        DataError: see :func:`list_source`; another set of classes than the teacher's, an ImageFolder whose
        class names are the teacher's under other indices, unequal image counts per class, another number of
        channels (tensors), float pixels outside [0, 1], an unreadable file, or another size with a non-square
        teacher input.
    """
    listing = list_source(source, path)
    if source == "tensor":
        images, labels, notes = _load_tensors(listing.root, shape)
    else:
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
        explicit = listing.class_order == "class_to_idx.json"
        where = listing.root / "class_to_idx.json" if explicit else f"{listing.root} ({SORTED_ORDER})"
        how = ("fix class_to_idx.json to the teacher's order" if explicit else
               "add a class_to_idx.json (folder name → the teacher's index; teacher/teacher.json lists its classes)")
        raise DataError(f"{where} gives class '{c}' index {i} but the teacher's index of '{c}' is {j} "
                        f"({len(moved)} classes differ): {how}")


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


def check_own_folder(listing: OwnListing, shape: tuple[int, int, int], classes: list[str]) -> dict:
    """Every check of a ``folder`` set that needs no pixel: each file's header (Pillow mode and size), the class
    names and counts against the teacher's, and whether the files need a resize. The dry run and recover both
    call it, so whatever recover would refuse for these reasons, the dry run refuses.

    Args:
        listing: the set (:func:`list_source`).
        shape: the teacher's input ``(C, H, W)``.
        classes: the teacher's class names, by index.

    Returns:
        Notes for ``images.json``: ``class_order``, ``decode_mode`` (``L`` for a 1-channel teacher, else
        ``RGB``), ``source_file_bytes`` (bytes of the image files), ``encoding`` (``copied``: the files are kept as they
        are; ``png``: resized and written by recover), and where they apply ``converted`` (the number of files of
        another mode) with its one-line ``conversion``, and ``resized``.

    Raises:
        DataError: an unreadable file or header; see :func:`load_own_set` for the class checks; another size
        with a non-square teacher input.
    """
    c, h, w = shape
    _check_names(listing, classes)
    _check_classes(listing.root, torch.tensor(listing.labels, dtype=torch.int64), len(classes))
    modes, sizes = read_headers(listing.root, listing.names)
    mode = "L" if c == 1 else "RGB"
    notes: dict = {"class_order": listing.class_order, "decode_mode": mode, "encoding": "copied",
                   "source_file_bytes": sum((listing.root / n).stat().st_size for n in listing.names)}
    line = conversion_note(modes, mode, listing.root)
    if line:
        notes.update(converted=sum(m != mode for m in modes), conversion=line)
    hw = {(b, a) for a, b in sizes}
    if hw != {(h, w)}:
        notes["resized"] = _resize_note(hw, shape, f"shorter side to {h} px + centre crop (bilinear, Pillow)")
        notes["encoding"] = "png"
    return notes


def _load_files(listing: OwnListing, shape: tuple[int, int, int], classes: list[str]
                ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    notes = check_own_folder(listing, shape, classes)
    c = shape[0]
    labels = torch.tensor(listing.labels, dtype=torch.int64)
    data = load_images(listing.root, listing.names, labels, classes, mean=(0.0,) * c, std=(1.0,) * c,
                       image_size=shape[1] if "resized" in notes else None, mode=notes["decode_mode"])
    return data.images, labels, notes


def copy_own_files(listing: OwnListing, classes: list[str], folder: Path) -> None:
    """Copy a ``folder`` set's image files as they are (same bytes, same encoding) into ``folder/<class>/<file>``
    with the teacher's class names, and write ``class_to_idx.json``; with sorted order (no
    ``class_to_idx.json`` in the set) also ``source_class_to_idx.json``, the mapping that was used.

    Within a class the files keep their names, so reading ``folder`` back (sorted by class index, then file
    name) gives the images in :func:`load_own_set`'s order.
    """
    for n, y in zip(listing.names, listing.labels):
        d = folder / classes[y]
        d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(listing.root / n, d / Path(n).name)
    atomic_write_json(folder / "class_to_idx.json", {c: i for i, c in enumerate(classes)})
    write_source_mapping(listing, folder)


def write_source_mapping(listing: OwnListing, folder: Path) -> None:
    """``folder/source_class_to_idx.json`` (the set's folder name → class index) when the order was not given by
    the set (sorted folder names); nothing otherwise."""
    if listing.class_order == SORTED_ORDER:
        atomic_write_json(folder / "source_class_to_idx.json", {c: i for i, c in enumerate(listing.class_names)})


def _load_tensors(root: Path, shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, dict]:
    c, h, w = shape
    try:
        x = torch.load(root / "images.pt", map_location="cpu", weights_only=True)
        y = torch.load(root / "labels.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise DataError(f"cannot read the tensors in {root}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                        ) from None
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
