"""Image sets made elsewhere, as recover sources (``recover.variants.<mode>: {source: folder | tensor, path}``).

Layouts read:

* ``folder``, ImageFolder with ``class_to_idx.json`` (folder name → the teacher's class index): that mapping.
* ``folder``, SRe2L's output: ``new{c:03d}/class{c:03d}_id{i:03d}.{jpg,png}``, and RDED's (Sun et al., CVPR 2024;
  ``synthesize/main.py`` of the RDED repository): ``{c:05d}/class{c:05d}_id{i:05d}.jpg``; the class index is the
  folder's number, the teacher's class of that index (a file whose name says another class is refused).
* ``folder``, a plain ImageFolder (class sub-folders, no ``class_to_idx.json``): sorted folder names → 0..K-1,
  the rule of ``torchvision.datasets.ImageFolder`` (its ``find_classes``); recover says so in one line and
  writes the mapping to ``images/<mode>/source_class_to_idx.json``.
* ``tensor``, DD-Ranking's (ddranking 0.2.0's contract, as ``labeldistill export --format ddranking`` writes it):
  ``images.pt``, uint8 or float ``(N, C, H, W)``, and ``labels.pt``, integer ``(N,)`` class indices of the teacher
  or float ``(N, K)`` soft labels: teacher outputs (logits), which DD-Ranking softens with ``softmax(· / T)``
  (``loss/kl.py``); rows that are probabilities (>= 0, summing to 1) are refused. An optional ``meta.json``
  beside them may give ``normalised: true`` with ``normalization`` (``mean``, ``std``; without ``normalised: true``
  it is not applied: earlier exports wrote [0, 1] pixels beside a ``normalization`` entry),
  ``classes`` (names by index; the teacher's names must keep the teacher's indices) and ``hard_labels`` (per
  image).
  Float images normalised as DD-Ranking's real data (``utils/data.py``: ``Normalize(mean, std)``) are
  de-normalised, ``x · std + mean``, with the ``mean``/``std`` given under ``recover.variants.<mode>``, else of
  ``meta.json``;
  without either, float images are taken as pixels in [0, 1] and values outside are refused (the message asks for
  the mean and std). The class of an image with soft labels is ``meta.json``'s ``hard_labels``, else the
  class-major order DD-Ranking assumes (image ``i`` is class ``i // IPC``, ``metrics/soft_label.py``).
  Float pixels are rounded to uint8 (the kept set is a PNG folder); ``quantised.max_error_grey_levels`` records
  the largest rounding error, and pixels off the 1/255 grid by more than :data:`GRID_TOLERANCE` are kept in
  :attr:`OwnSet.float_images` so recover can measure the teacher's top-1 before rounding. The soft labels come
  back as :attr:`OwnSet.logits` (recover writes them beside the PNGs for ``validate.label_source: static``).

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
import json
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
TENSOR_META = "meta.json"  # optional, beside the tensors: normalization, classes, hard_labels (our export writes it)
GRID_TOLERANCE = 0.01  # grey levels: float pixels closer than this to k/255 count as exact uint8 values
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
                            "(float (N, C, H, W), or uint8) and labels.pt (int64 (N,) or float (N, K) logits)")
        meta = _tensor_meta(root)
        return OwnListing(source, root, "tensor", list(TENSOR_FILES) + ([TENSOR_META] if meta else []),
                          class_names=list(meta.get("classes", [])))
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


@dataclass
class OwnSet:
    """A set made elsewhere, read for a teacher: class-major (stable) in every tensor.

    Attributes:
        images: uint8 ``(N, C, H, W)``, the pixels labeldistill keeps (PNG).
        labels: int64 ``(N,)`` class indices of the teacher.
        notes: entries for ``images.json``: ``layout``, ``ipc``, ``num_source_files``, and where they apply
            ``resized``, ``quantised``, ``normalization``, ``soft_labels``, ``hard_labels_from``,
            ``class_names_in_source``.
        logits: float32 ``(N, K)`` per-image soft labels (teacher outputs, DD-Ranking's contract) when the set
            brought them (float ``labels.pt``), else None.
        float_images: the float pixels ``(N, C, H, W)`` in [0, 1] before rounding to uint8, only when they were
            off the 1/255 grid by more than :data:`GRID_TOLERANCE` grey levels (recover measures the teacher's
            top-1 on both), else None.
    """

    images: torch.Tensor
    labels: torch.Tensor
    notes: dict
    logits: torch.Tensor | None = None
    float_images: torch.Tensor | None = None

    def __iter__(self):
        """Unpacks as ``images, labels, notes`` (what :func:`load_own_set` returned before it had soft labels)."""
        return iter((self.images, self.labels, self.notes))


def load_own_set(source: str, path: str | Path, shape: tuple[int, int, int], classes: list[str],
                 mean: list[float] | None = None, std: list[float] | None = None) -> OwnSet:
    """Read a set made elsewhere for a teacher with input ``shape`` ``(C, H, W)`` and class names ``classes``.

    Args:
        mean, std: a ``tensor`` set's normalisation (``recover.variants.<mode>.mean/std``); its ``meta.json``'s
            ``normalization`` when not given. Float images are de-normalised with them (``x · std + mean``).

    Returns:
        An :class:`OwnSet`; its notes for ``images.json`` also hold a folder's notes (:func:`check_own_folder`).

    Raises:
        DataError: see :func:`list_source`; another set of classes than the teacher's, class names that are the
        teacher's under other indices, unequal image counts per class, another number of channels (tensors),
        float pixels outside [0, 1] (after de-normalising; without a mean/std: normalised images), soft labels
        that are not ``(N, K)`` logits of the teacher's ``K`` classes, an unreadable file, or another size with a
        non-square teacher input.
    """
    listing = list_source(source, path)
    logits = float_images = None
    _check_names(listing, classes)
    if source == "tensor":
        images, labels, logits, float_images, notes = _load_tensors(listing.root, shape, len(classes), mean, std)
    else:
        images, labels, notes = _load_files(listing, shape, classes)
    _check_classes(listing.root, labels, len(classes))
    order = torch.argsort(labels, stable=True)
    notes.update(layout=listing.layout, ipc=int(len(labels) // len(classes)), num_source_files=len(listing.files))
    if listing.class_names and listing.class_names != list(classes):
        notes["class_names_in_source"] = listing.class_names
    return OwnSet(images[order].contiguous(), labels[order], notes,
                  None if logits is None else logits[order].contiguous(),
                  None if float_images is None else float_images[order].contiguous())


def _check_names(listing: OwnListing, classes: list[str]) -> None:
    """An ImageFolder (``class_to_idx.json``) or a tensor set (``meta.json``'s ``classes``) naming the teacher's
    classes must give them the teacher's indices."""
    if listing.layout not in ("imagefolder", "tensor") or sorted(listing.class_names) != sorted(classes):
        return
    moved = [(c, i, classes.index(c)) for i, c in enumerate(listing.class_names) if classes[i] != c]
    if moved:
        c, i, j = moved[0]
        if listing.layout == "tensor":
            where, how = listing.root / TENSOR_META, f"fix {TENSOR_META} to the teacher's order"
        elif listing.class_order == "class_to_idx.json":
            where, how = listing.root / "class_to_idx.json", "fix class_to_idx.json to the teacher's order"
        else:
            where = f"{listing.root} ({SORTED_ORDER})"
            how = "add a class_to_idx.json (folder name → the teacher's index; teacher/teacher.json lists its classes)"
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


def _tensor_meta(root: Path) -> dict:
    """A tensor set's ``meta.json`` (``{}`` without one).

    Raises:
        DataError: a ``meta.json`` that is not a JSON object.
    """
    f = root / TENSOR_META
    if not f.is_file():
        return {}
    try:
        meta = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {f}: {e}") from None
    if not isinstance(meta, dict):
        raise DataError(f"{f} must hold a JSON object (normalization, classes, hard_labels)")
    return meta


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


def _load_tensors(root: Path, shape: tuple[int, int, int], num_classes: int, mean: list[float] | None,
                  std: list[float] | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None,
                                                    torch.Tensor | None, dict]:
    """uint8 images, int64 labels, float logits or None, off-grid float pixels or None, and notes (set order)."""
    c, h, w = shape
    x, y = read_tensor_file(root / "images.pt"), read_tensor_file(root / "labels.pt")
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != c:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"{root / 'images.pt'} must hold a tensor (N, {c}, H, W) for this teacher, got {got}")
    meta = _tensor_meta(root)
    notes: dict = {}
    labels, logits = _tensor_labels(root, y, len(x), num_classes, meta, notes)
    if x.dtype != torch.uint8:
        x = _to_unit_range(root, x.float(), _normalization(root, c, mean, std, meta, notes))
    if tuple(x.shape[2:]) != (h, w):
        notes["resized"] = _resize_note({tuple(x.shape[2:])}, shape, "bilinear, antialiased (torch interpolate)")
        x = F.interpolate(x.float() / (255 if x.dtype == torch.uint8 else 1), size=(h, w), mode="bilinear",
                          antialias=True, align_corners=False).clamp(0, 1)
    if x.dtype == torch.uint8:
        return x.contiguous(), labels, logits, None, notes
    u8 = (x * 255).round().to(torch.uint8)
    err = float((x * 255 - u8.float()).abs().max()) if x.numel() else 0.0
    notes["quantised"] = {"rule": "float [0, 1] → uint8: round(x · 255)", "max_error_grey_levels": round(err, 4)}
    return u8.contiguous(), labels, logits, (x if err > GRID_TOLERANCE else None), notes


def _normalization(root: Path, c: int, mean: list[float] | None, std: list[float] | None, meta: dict,
                   notes: dict) -> tuple[list[float], list[float]] | None:
    """The mean/std float images are normalised with: the config's, else ``meta.json``'s (with ``normalised:
    true``), else None."""
    if mean is not None and std is not None:
        where = "config"
    elif meta.get("normalised") is True and isinstance(meta.get("normalization"), dict):
        mean, std, where = meta["normalization"].get("mean"), meta["normalization"].get("std"), TENSOR_META
    else:
        return None
    ok = all(isinstance(v, list) and len(v) == c and all(isinstance(a, (int, float)) for a in v) for v in (mean, std))
    if not ok or min(std) <= 0:
        raise DataError(f"the normalisation of {root} ({where}) must give {c} mean and {c} std values (std > 0), "
                        f"got mean={mean}, std={std}")
    notes["normalization"] = {"mean": mean, "std": std, "from": where}
    return mean, std


def _to_unit_range(root: Path, x: torch.Tensor, norm: tuple[list[float], list[float]] | None) -> torch.Tensor:
    """Float images as pixels in [0, 1]: de-normalised with ``norm`` (``x · std + mean``), else taken as they are.

    Raises:
        DataError: values outside [0, 1] (± 1e-3) after that.
    """
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{root / 'images.pt'} holds non-finite values (NaN or inf)")
    if norm is not None:
        m, s = (torch.tensor(v, dtype=x.dtype).view(1, -1, 1, 1) for v in norm)
        x = x * s + m
    lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 1.0)
    if lo < -1e-3 or hi > 1 + 1e-3:
        if norm is None:
            raise DataError(f"{root / 'images.pt'} holds values in [{lo:.3g}, {hi:.3g}], not pixels in [0, 1]: "
                            "normalised images need their mean and std, in recover.variants.<mode> (mean: [...], "
                            f"std: [...]) or in a {TENSOR_META} beside the tensors ({{\"normalised\": true, "
                            "\"normalization\": {\"mean\": [...], \"std\": [...]}})")
        raise DataError(f"{root / 'images.pt'} de-normalised with mean={norm[0]}, std={norm[1]} holds values in "
                        f"[{lo:.3g}, {hi:.3g}], not pixels in [0, 1]: check the mean and std")
    return x.clamp(0, 1)


def _tensor_labels(root: Path, y: object, n: int, num_classes: int, meta: dict, notes: dict
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """int64 class indices ``(N,)`` and float32 logits ``(N, K)`` or None, from ``labels.pt`` (and ``meta.json``).

    Float ``(N, K)`` labels are teacher outputs (DD-Ranking 0.2.0 softens them with ``softmax(· / T)``,
    ``loss/kl.py``); the class of each image is ``meta.json``'s ``hard_labels``, else the class-major order
    ``i // IPC`` that DD-Ranking 0.2.0 assumes (``metrics/soft_label.py``, ``compute_metrics``).
    """
    f = root / "labels.pt"
    if isinstance(y, torch.Tensor) and y.dim() == 1 and len(y) == n and not y.is_floating_point():
        return y.to(torch.int64), None
    if not (isinstance(y, torch.Tensor) and y.dim() == 2 and len(y) == n and y.is_floating_point()):
        got = f"{tuple(y.shape)} {y.dtype}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise DataError(f"{f} must hold integer class indices ({n},) or float soft labels ({n}, K), got {got}")
    logits = y.float()
    if y.shape[1] != num_classes:
        raise DataError(f"{f} holds soft labels over {y.shape[1]} classes but the teacher has {num_classes}")
    if not bool(torch.isfinite(logits).all()):
        raise DataError(f"{f} holds non-finite soft labels")
    if bool((logits >= 0).all()) and bool(torch.allclose(logits.sum(1), torch.ones(n), atol=1e-3)):
        raise DataError(f"{f} holds probabilities (rows >= 0 summing to 1), but soft labels are teacher outputs "
                        "(logits, softened with softmax(· / T) as DD-Ranking does): save their log instead")
    hard = meta.get("hard_labels")
    if hard is not None:
        if not (isinstance(hard, list) and len(hard) == n and all(isinstance(v, int) for v in hard)):
            raise DataError(f"{root / TENSOR_META}: hard_labels must be {n} integer class indices")
        notes["hard_labels_from"] = TENSOR_META
        labels = torch.tensor(hard, dtype=torch.int64)
    else:
        if n % num_classes:
            raise DataError(f"{f} holds {n} soft labels, not a multiple of the teacher's {num_classes} classes: "
                            f"without hard_labels in a {TENSOR_META} the set must be class-major, IPC per class")
        notes["hard_labels_from"] = "class-major order (image i is class i // IPC, as DD-Ranking 0.2.0)"
        labels = torch.arange(num_classes).repeat_interleave(n // num_classes)
    notes["soft_labels"] = {"kind": "logits", "shape": [n, num_classes]}
    return labels, logits
