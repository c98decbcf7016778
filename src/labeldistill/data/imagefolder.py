"""ImageFolder datasets read with Pillow, with an explicit ``class_to_idx``; in memory or lazy.

Layout: ``root/<split>/<class>/<image>`` (``split`` = ``train``, and ``test`` or ``val``), or
``root/<class>/<image>`` for the train split alone (its test split is then refused: hold one out of the train
split with ``data.test_holdout``). If ``class_to_idx.json`` is next to the class folders it
fixes the class order; otherwise classes are sorted by name (torchvision's ``find_classes``, the rule of
``torchvision.datasets.ImageFolder``) and that mapping is what the caller gets (and writes out with any
artifact): the index is never implied by folder order alone downstream.

A folder may mix Pillow modes (grey-level JPEGs in a colour set, as in Tiny-ImageNet and ImageNet; RGBA or
palette PNGs): unless the caller fixes the mode, every image is converted to the set's mode — ``RGB`` if any
file is in colour, else ``L`` (:func:`set_mode`) — and one line on stderr says how many were converted.

Two ways to hold the pixels:

* **in memory** (default): every image is decoded once into a uint8 tensor ``(N, C, H, W)``. Fine up to a
  few GB (Tiny-ImageNet: 100,000 × 3 × 64 × 64 = 1.2 GB).
* **lazy** (``data.lazy: true``): only the file list is kept (one packed byte buffer, not a Python list of
  paths, so DataLoader worker processes share it without copy-on-write growth); images are decoded when
  indexed (:class:`LazyImages`). This is how ImageNet-scale folders are streamed.

Both paths decode with the same function, so for the same folder and settings they give identical pixels.
With ``image_size`` every image is resized (bilinear, antialiased, Pillow) so that its shorter side is
``resize`` pixels (default ``image_size``), then centre-cropped to ``image_size × image_size`` — torchvision's
``Resize(resize) → CenterCrop(image_size)`` (ImageNet evaluation preset: 256 → 224).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .registry import ImageSet, register_dataset

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
# Images used to estimate the per-channel mean/std of a lazy split when data.mean/std are not given.
STATS_SAMPLE = 256
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def split_folder(root: str | Path, split: str) -> Path:
    """The folder of ``split``: ``root/train`` (else ``root`` itself); ``root/test`` or ``root/val``.

    Raises:
        DataError: ``split`` is ``test`` and there is neither ``root/test`` nor ``root/val``: the test split would
            be the training images (hold some out with ``data.test_holdout: N`` instead).
    """
    root = Path(root)
    candidates = [root / split] + ([root / "val"] if split == "test" else [])
    for c in candidates:
        if c.is_dir():
            return c
    if split == "test":
        raise DataError(f"{root} has no test/ or val/ folder, so its test split would be its own training images; "
                        "add a test/ (or val/) folder of other images, or set data.test_holdout=N to hold N "
                        "training images out as the test split")
    return root


def read_class_to_idx(folder: Path) -> dict[str, int]:
    """``class_to_idx.json`` in ``folder`` if present, else sorted sub-folder names (torchvision 0.29's
    ``datasets.folder.find_classes``, as ``torchvision.datasets.ImageFolder``).

    Raises:
        DataError: no class folders, or a JSON that does not match the folders.
    """
    f = folder / "class_to_idx.json"
    if f.is_file():
        subdirs = sorted(p.name for p in folder.iterdir() if p.is_dir())
        try:
            mapping = {str(k): int(v) for k, v in json.loads(f.read_text()).items()}
        except (ValueError, AttributeError, TypeError) as e:
            raise DataError(f"{f}: not a JSON object of class name -> index ({str(e).splitlines()[0]})") from None
        missing = [c for c in mapping if c not in subdirs]
        if missing:
            raise DataError(f"{f} names class folder '{missing[0]}' which does not exist in {folder}")
        if sorted(mapping.values()) != list(range(len(mapping))):
            raise DataError(f"{f}: indices must be 0..{len(mapping) - 1}")
        return mapping
    from torchvision.datasets.folder import find_classes  # torchvision's ImageFolder rule: sorted folder names

    try:
        return find_classes(folder)[1]
    except FileNotFoundError:
        raise DataError(f"no class folders in {folder}") from None


def scan_imagefolder(folder: str | Path, class_to_idx: dict[str, int] | None = None
                     ) -> tuple[dict[str, int], list[str], torch.Tensor]:
    """List an ImageFolder without opening any image.

    Returns:
        ``(class_to_idx, names, labels)``: ``names[i]`` is ``"<class>/<file>"`` relative to ``folder``, sorted
        by class index then file name; ``labels`` is int64 ``(N,)``.

    Raises:
        DataError: missing folder, no class folders, an empty class, or a file that is not an image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    mapping = class_to_idx or read_class_to_idx(folder)
    names: list[str] = []
    counts: list[tuple[int, int]] = []
    for cls, ci in sorted(mapping.items(), key=lambda kv: kv[1]):
        d = folder / cls
        entries = []
        if d.is_dir():
            with os.scandir(d) as it:  # d_type from the directory listing: no stat per file
                entries = sorted((e.name, e.is_dir()) for e in it if not e.name.startswith("."))
        stray = [n for n, is_dir in entries if is_dir or Path(n).suffix.lower() not in IMAGE_EXTENSIONS]
        if stray:
            raise DataError(f"{d / stray[0]} is not an image file ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                            "remove it from the class folder")
        if not entries:
            raise DataError(f"class '{cls}' has no images in {d}")
        names.extend(f"{cls}/{n}" for n, _ in entries)
        counts.append((ci, len(entries)))
    labels = torch.cat([torch.full((n,), ci, dtype=torch.int64) for ci, n in counts])
    return mapping, names, labels


def target_mode(mode: str) -> str:
    """The family of a Pillow mode: ``L`` for grey-level modes, else ``RGB``."""
    return "L" if mode in _GRAY_MODES else "RGB"


def set_mode(modes: Iterable[str]) -> str:
    """The Pillow mode a set of files is decoded to: ``RGB`` if any file is in colour (RGB, RGBA, palette,
    CMYK, ...), else ``L``."""
    return "RGB" if any(m not in _GRAY_MODES for m in modes) else "L"


def read_headers(folder: str | Path, names: list[str]) -> tuple[list[str], list[tuple[int, int]]]:
    """Pillow mode and ``(width, height)`` in pixels of every file ``folder/names[i]``, from its header only
    (``Image.open`` reads no pixel data): what the dry run checks before a run decodes the files.

    Raises:
        DataError: a file that is missing, not an image, or whose header is cut off or corrupt.
    """
    modes, sizes = [], []
    for n in names:
        p = Path(folder) / n
        try:
            with Image.open(p) as im:
                modes.append(im.mode)
                sizes.append(im.size)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise DataError(f"cannot read image {p}: {e}") from None
    return modes, sizes


def conversion_note(modes: list[str], mode: str, where: str | Path) -> str | None:
    """One line saying how many files of ``modes`` are converted to ``mode`` (None if none is)."""
    other = [m for m in modes if m != mode]
    if not other:
        return None
    kinds = ", ".join(f"{k} {other.count(k)}" for k in sorted(set(other)))
    return f"{len(other)} of {len(modes)} images in {where} converted to {mode} ({kinds})"


def notice(line: str | None) -> None:
    """Print ``note: <line>`` on stderr (nothing for None)."""
    if line:
        print(f"note: {line}", file=sys.stderr, flush=True)


def _lazy_mode(folder: str | Path, names: list[str]) -> str:
    """:func:`set_mode` of a lazy set, reading headers only until the first colour file (one for a colour set)."""
    for n in names:
        mode = read_headers(folder, [n])[0][0]
        if mode not in _GRAY_MODES:
            return "RGB"
    return "L"


def resize_center_crop(im: Image.Image, shorter: int, crop: int) -> Image.Image:
    """Resize so the shorter side is ``shorter`` pixels (bilinear, antialiased), then centre-crop ``crop × crop``.

    Same output size and rounding as torchvision's ``Resize(shorter)`` followed by ``CenterCrop(crop)``.
    Requires ``shorter >= crop``.
    """
    w, h = im.size
    if min(w, h) != shorter:
        if w <= h:
            nw, nh = shorter, int(shorter * h / w)
        else:
            nw, nh = int(shorter * w / h), shorter
        im = im.resize((nw, nh), Image.BILINEAR)
    w, h = im.size
    left, top = int(round((w - crop) / 2.0)), int(round((h - crop) / 2.0))
    if (left, top, w, h) == (0, 0, crop, crop):
        return im
    return im.crop((left, top, left + crop, top + crop))


def _pixels(im: Image.Image, mode: str | None, image_size: int | None, resize: int | None) -> np.ndarray:
    """Decode an opened image to uint8 ``(C, H, W)`` (convert to ``mode``, then resize + centre crop)."""
    if mode is not None and im.mode != mode:
        im = im.convert(mode)
    else:
        im.load()
    if image_size is not None:
        im = resize_center_crop(im, resize or image_size, image_size)
    a = np.asarray(im)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def decode_image(path: str | Path, mode: str | None = None, image_size: int | None = None,
                 resize: int | None = None) -> np.ndarray:
    """Decode one image file to a uint8 array ``(C, H, W)``.

    Args:
        path: the image file.
        mode: convert to this Pillow mode first (``None``: keep the file's mode).
        image_size: if set, resize the shorter side to ``resize`` (default ``image_size``) pixels and
            centre-crop ``image_size × image_size``.
        resize: see ``image_size``.

    Raises:
        DataError: unreadable or corrupt file.
    """
    try:
        with Image.open(path) as im:
            return _pixels(im, mode, image_size, resize)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None


class LazyImages:
    """uint8 images ``(N, C, H, W)`` decoded from files when indexed.

    Indexing follows tensor semantics for the first dimension: an int gives ``(C, H, W)``; a slice, a list, a
    LongTensor/ndarray of indices or a bool mask gives ``(n, C, H, W)`` in that order (repeats allowed).
    :meth:`take` selects without decoding. Every image is converted to one Pillow mode (``L`` or ``RGB``,
    :func:`set_mode` of the files: headers are read up to the first colour file), so a few grey-level or CMYK
    JPEGs in a colour set (as in ImageNet) are fine.
    Without ``image_size`` every image must have the first image's size; a different one raises on decode.

    Args:
        folder: the split folder the names are relative to.
        names: ``"<class>/<file>"`` per image.
        image_size: side of the square output in pixels, or None (native size).
        resize: shorter side before the centre crop (default ``image_size``).
        mode: Pillow mode to convert to; None: :func:`set_mode` of the files.

    Raises:
        DataError: no images, or the first image is unreadable.
    """

    dtype = torch.uint8
    ndim = 4

    def __init__(self, folder: str | Path, names: list[str], image_size: int | None = None,
                 resize: int | None = None, mode: str | None = None):
        if not names:
            raise DataError(f"no images in {folder}")
        self.folder = str(folder)
        encoded = [n.encode("utf-8") for n in names]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._buf = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self.image_size, self.resize = image_size, resize
        first = self.path(0)
        try:
            with Image.open(first) as im:
                native_size = im.size
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"cannot read image {first}: {e}") from None
        self.mode = mode or _lazy_mode(folder, names)
        channels = 1 if self.mode == "L" else 3
        h, w = (image_size, image_size) if image_size is not None else (native_size[1], native_size[0])
        self._shape = (channels, h, w)

    @classmethod
    def _view(cls, parent: "LazyImages", buf: np.ndarray, offsets: np.ndarray) -> "LazyImages":
        out = cls.__new__(cls)
        out.__dict__.update(parent.__dict__)
        out._buf, out._offsets = buf, offsets
        return out

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @property
    def shape(self) -> torch.Size:
        """``(N, C, H, W)``."""
        return torch.Size((len(self), *self._shape))

    def name(self, i: int) -> str:
        """``"<class>/<file>"`` of image ``i``."""
        return self._buf[self._offsets[i]:self._offsets[i + 1]].tobytes().decode("utf-8")

    def path(self, i: int) -> str:
        """Full path of image ``i``."""
        return os.path.join(self.folder, self.name(i))

    def _indices(self, index: Any) -> np.ndarray:
        n = len(self)
        if isinstance(index, slice):
            return np.arange(n)[index]
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        idx = np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean mask of shape {idx.shape} for {n} images")
            return np.nonzero(idx)[0]
        idx = idx.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"image index out of range for {n} images")
        return np.where(idx < 0, idx + n, idx)

    def _array(self, i: int) -> np.ndarray:
        a = decode_image(self.path(i), self.mode, self.image_size, self.resize)
        if a.shape != self._shape:
            raise DataError(f"{self.path(i)} is {a.shape[2]}x{a.shape[1]}, other images are "
                            f"{self._shape[2]}x{self._shape[1]}; set data.image_size to resize them")
        return a

    def decode(self, i: int) -> torch.Tensor:
        """Image ``i`` as uint8 ``(C, H, W)``.

        Raises:
            DataError: unreadable file, or (without ``image_size``) a size other than the first image's.
        """
        return torch.from_numpy(self._array(i).copy())

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            return self.decode(int(self._indices([index])[0]))
        idx = self._indices(index)
        out = np.empty((len(idx), *self._shape), dtype=np.uint8)
        for k, i in enumerate(idx.tolist()):
            out[k] = self._array(i)
        return torch.from_numpy(out)

    def take(self, index: Any) -> "LazyImages":
        """A lazy view of the selected images (nothing is decoded)."""
        idx = self._indices(index)
        starts, ends = self._offsets[idx], self._offsets[idx + 1]
        lengths = ends - starts
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if len(idx):
            gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
            buf = self._buf[gather]
        else:
            buf = self._buf[:0]
        return LazyImages._view(self, buf, offsets)

    def __repr__(self) -> str:
        return f"LazyImages({self.folder!r}, n={len(self)}, shape={tuple(self._shape)}, mode={self.mode})"


def estimate_stats(images: LazyImages, sample: int = STATS_SAMPLE, seed: int = 0
                   ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units from ``sample`` seeded random images of a lazy set."""
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(images), generator=g)[:sample].sort().values
    x = images[pick].float().div_(255)
    return tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())


def load_imagefolder(folder: str | Path, class_to_idx: dict[str, int] | None = None,
                     mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                     image_size: int | None = None, resize: int | None = None, lazy: bool = False,
                     mode: str | None = None) -> ImageSet:
    """Load an ImageFolder: into memory as uint8 ``(N, C, H, W)``, or lazily (:class:`LazyImages`).

    Args:
        folder: the split folder (class sub-folders inside).
        class_to_idx: fixes the class order; default: ``class_to_idx.json`` or sorted folder names.
        mean, std: per-channel normalisation in [0, 1] units; default: computed from the loaded images
            (lazy: estimated from :data:`STATS_SAMPLE` seeded random images).
        image_size: resize (shorter side to ``resize``, default ``image_size``) + centre crop to this square
            size in pixels; None keeps the native size, which must then be the same for every image.
        resize: see ``image_size``.
        lazy: keep only the file list and decode on indexing.
        mode: convert every image to this Pillow mode; None: :func:`set_mode` of the files.

    Raises:
        DataError: missing folder, empty class, stray or unreadable file, or mixed sizes (without
            ``image_size``).
    """
    folder = Path(folder)
    mapping, names, labels = scan_imagefolder(folder, class_to_idx)
    classes = [c for c, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
    return load_images(folder, names, labels, classes, mean, std, image_size, resize, lazy, mode)


def load_images(folder: str | Path, names: list[str], labels: torch.Tensor, classes: list[str],
                mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                image_size: int | None = None, resize: int | None = None, lazy: bool = False,
                mode: str | None = None) -> ImageSet:
    """An :class:`ImageSet` of the files ``folder/names[i]`` with class ``labels[i]`` (any file layout).

    Args:
        folder, names: the image files (``names`` relative to ``folder``).
        labels: int64 ``(N,)`` class indices into ``classes``.
        mean, std, image_size, resize, lazy: as :func:`load_imagefolder`.
        mode: convert every image to this Pillow mode (``RGB``, ``L``); None: :func:`set_mode` of the files
            (in memory: one line on stderr says how many files were converted).

    Raises:
        DataError: unreadable file, or mixed sizes (without ``image_size``).
    """
    folder = Path(folder)
    if lazy:
        images = LazyImages(folder, names, image_size, resize, mode)
        if mean is None or std is None:
            mean, std = estimate_stats(images)
        return ImageSet(images, labels, list(classes), tuple(mean), tuple(std))
    if not names:
        raise DataError(f"no images in {folder}")
    modes, sizes = read_headers(folder, names)
    if image_size is None and len(set(sizes)) > 1:
        odd = next(i for i, s in enumerate(sizes) if s != sizes[0])
        raise DataError(f"{folder / names[odd]} is {sizes[odd][0]}x{sizes[odd][1]}, other images are "
                        f"{sizes[0][0]}x{sizes[0][1]}; resize them to one size first (or set data.image_size)")
    if mode is None:
        mode = set_mode(modes)
        notice(conversion_note(modes, mode, folder))
    x = torch.from_numpy(np.stack([decode_image(folder / n, mode, image_size, resize) for n in names])).contiguous()
    if mean is None or std is None:
        xf = x.float() / 255
        mean = tuple(xf.mean(dim=(0, 2, 3)).tolist())
        std = tuple(xf.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    return ImageSet(x, labels, list(classes), tuple(mean), tuple(std))


@register_dataset("imagefolder")
def imagefolder(root: str | None, split: str, image_size: int | None = None, resize: int | None = None,
                lazy: bool = False, mean: tuple[float, ...] | None = None,
                std: tuple[float, ...] | None = None) -> ImageSet:
    """A user's ImageFolder (e.g. Tiny-ImageNet, ImageNet); see :func:`load_imagefolder` for the options.

    Raises:
        DataError: ``root`` not given or missing, or any error of :func:`load_imagefolder`.
    """
    if root is None:
        raise DataError("dataset 'imagefolder' needs data.root=/path/to/folder")
    if not Path(root).is_dir():
        raise DataError(f"data folder not found: {root}; set data.root to a folder with class sub-folders")
    return load_imagefolder(split_folder(root, split), mean=mean, std=std, image_size=image_size, resize=resize,
                            lazy=lazy)
