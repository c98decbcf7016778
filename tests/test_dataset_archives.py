"""Datasets in their distributed file formats (CIFAR pickles, the Tiny-ImageNet archive, ImageNet train/val),
on small fakes written in exactly those formats, and corrupt IDX headers."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labeldistill.data import load_dataset
from labeldistill.data.idx import read_idx
from labeldistill.errors import ConfigError, DataError


# ---- CIFAR -------------------------------------------------------------------------------------------------

def _cifar_batch(rng, n: int, label_key: str, classes: int) -> tuple[dict, np.ndarray]:
    """One batch in the real layout: ``data`` uint8 (n, 3072) = R, G, B planes of 32×32, row-major."""
    x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    y = [int(v) for v in rng.integers(0, classes, size=n)]
    batch = {"batch_label": "fake batch", label_key: y, "data": x.reshape(n, 3072),
             "filenames": [f"img_{i}.png" for i in range(n)]}
    if label_key == "fine_labels":
        batch["coarse_labels"] = [v // 5 for v in y]
    return batch, x


def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _fake_cifar10(root: Path, rng) -> tuple[np.ndarray, np.ndarray]:
    d = root / "cifar-10-batches-py"
    xs, ys = [], []
    for i in range(1, 6):
        b, x = _cifar_batch(rng, 4, "labels", 10)
        _write(d / f"data_batch_{i}", b)
        xs.append(x)
        ys += b["labels"]
    b, _ = _cifar_batch(rng, 3, "labels", 10)
    _write(d / "test_batch", b)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _write(d / "batches.meta", {"num_cases_per_batch": 4, "label_names": names, "num_vis": 3072})
    return np.concatenate(xs), np.array(ys)


def test_cifar10_pickle_batches(tmp_path):
    x, y = _fake_cifar10(tmp_path, np.random.default_rng(0))
    tr = load_dataset("cifar10", "train", str(tmp_path))
    assert tr.images.dtype == torch.uint8 and tr.images.shape == (20, 3, 32, 32)
    assert torch.equal(tr.images, torch.from_numpy(x)) and torch.equal(tr.labels, torch.from_numpy(y))
    assert tr.classes[0] == "airplane" and tr.num_classes == 10 and len(tr.mean) == 3
    te = load_dataset("cifar10", "test", str(tmp_path / "cifar-10-batches-py"))  # the extracted folder works too
    assert len(te) == 3
    with pytest.raises(ConfigError, match="image_size"):
        load_dataset("cifar10", "train", str(tmp_path), image_size=16)


def test_cifar100_fine_labels_and_missing_files(tmp_path):
    rng = np.random.default_rng(1)
    d = tmp_path / "cifar-100-python"
    b, x = _cifar_batch(rng, 6, "fine_labels", 100)
    _write(d / "train", b)
    _write(d / "meta", {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": ["s"] * 20})
    tr = load_dataset("cifar100", "train", str(tmp_path))
    assert tr.num_classes == 100 and torch.equal(tr.labels, torch.tensor(b["fine_labels"]))
    assert torch.equal(tr.images, torch.from_numpy(x))
    with pytest.raises(DataError, match=r"missing .*cifar-100-python/test; extract cifar-100-python.tar.gz"):
        load_dataset("cifar100", "test", str(tmp_path))
    (d / "test").write_bytes(b"\x80\x02 broken")
    with pytest.raises(DataError, match="cannot read the test batches"):
        load_dataset("cifar100", "test", str(tmp_path))
    with pytest.raises(DataError, match="missing .*cifar-10-batches-py/data_batch_1"):
        load_dataset("cifar10", "train", str(tmp_path))


# ---- Tiny-ImageNet ---------------------------------------------------------------------------------------

def _jpeg(path: Path, rng, size: int = 12, gray: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = rng.integers(0, 256, size=(size, size) if gray else (size, size, 3), dtype=np.uint8)
    Image.fromarray(a).save(path, quality=95)


WNIDS = ["n02", "n01", "n03"]  # deliberately unsorted: the class order is sorted (or wnids.txt's on request)


def _fake_tiny(root: Path, rng) -> None:
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in WNIDS))
    for w in WNIDS:
        for k in range(2):
            _jpeg(root / "train" / w / "images" / f"{w}_{k}.JPEG", rng, gray=(w == "n03" and k == 1))
        (root / "train" / w / f"{w}_boxes.txt").write_text(f"{w}_0.JPEG\t0\t0\t5\t5\n")
    lines = []
    for k, w in enumerate(["n03", "n01", "n02", "n01"]):
        _jpeg(root / "val" / "images" / f"val_{k}.JPEG", rng)
        lines.append(f"val_{k}.JPEG\t{w}\t0\t1\t10\t11")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    _jpeg(root / "test" / "images" / "test_0.JPEG", rng)


def test_tiny_imagenet_archive_layout(tmp_path):
    _fake_tiny(tmp_path / "tiny-imagenet-200", np.random.default_rng(2))
    tr = load_dataset("tiny-imagenet", "train", str(tmp_path))  # the parent of tiny-imagenet-200/ works too
    assert tr.classes == sorted(WNIDS) and tr.images.shape == (6, 3, 12, 12)  # grey-level JPEG converted to RGB
    assert tr.labels.tolist() == [0, 0, 1, 1, 2, 2]
    te = load_dataset("tiny-imagenet", "test", str(tmp_path / "tiny-imagenet-200"), lazy=True, class_order="wnids")
    assert te.is_lazy and te.labels.tolist() == [0, 1, 1, 2]  # n02 | n01 n01 | n03, class-major
    assert [te.images.name(i) for i in range(4)] == ["images/val_2.JPEG", "images/val_1.JPEG",
                                                    "images/val_3.JPEG", "images/val_0.JPEG"]
    assert te.images[:].shape == (4, 3, 12, 12)
    small = load_dataset("tiny-imagenet", "train", str(tmp_path), image_size=8)
    assert small.images.shape == (6, 3, 8, 8)


def test_tiny_imagenet_errors(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    _fake_tiny(root, np.random.default_rng(3))
    with pytest.raises(DataError, match="missing .*wnids.txt"):
        load_dataset("tiny-imagenet", "train", str(tmp_path / "elsewhere"))
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match="class 'n99'"):
        load_dataset("tiny-imagenet", "test", str(root))
    for p in (root / "train" / "n01" / "images").iterdir():
        p.unlink()
    with pytest.raises(DataError, match="no images in .*n01/images"):
        load_dataset("tiny-imagenet", "train", str(root))


# ---- ImageNet ----------------------------------------------------------------------------------------------

VAL = {"ILSVRC2012_val_00000001.JPEG": "n01440764", "ILSVRC2012_val_00000002.JPEG": "n09999999",
       "ILSVRC2012_val_00000003.JPEG": "n01440764"}


def _fake_imagenet(root: Path, rng, flat: bool = True) -> None:
    for w in ("n09999999", "n01440764"):
        for k in range(2):
            _jpeg(root / "train" / w / f"{w}_{k}.JPEG", rng, size=14 + k)
    for f, w in VAL.items():
        _jpeg(root / "val" / (f if flat else f"{w}/{f}"), rng, size=16, gray=f.endswith("2.JPEG"))


def test_imagenet_train_folders_and_val_labels_txt(tmp_path):
    _fake_imagenet(tmp_path, np.random.default_rng(4))
    (tmp_path / "val_labels.txt").write_text("".join(f"{f} {w}\n" for f, w in VAL.items()))
    tr = load_dataset("imagenet", "train", str(tmp_path), image_size=8)
    assert tr.classes == ["n01440764", "n09999999"]  # torchvision's order: sorted wnids
    assert tr.images.shape == (4, 3, 8, 8) and tr.labels.tolist() == [0, 0, 1, 1]
    assert tr.mean == (0.485, 0.456, 0.406)
    te = load_dataset("imagenet", "test", str(tmp_path), image_size=8)
    assert te.labels.tolist() == [0, 0, 1] and te.images.shape == (3, 3, 8, 8)
    lazy = load_dataset("imagenet", "test", str(tmp_path), image_size=8, lazy=True)
    assert torch.equal(lazy.images[:], te.images)


def test_imagenet_kaggle_solution_csv_and_class_folders(tmp_path):
    _fake_imagenet(tmp_path / "a", np.random.default_rng(5))
    rows = "".join(f"{f[:-5]},{w} 1 2 3 4 {w} 5 6 7 8\n" for f, w in VAL.items())
    (tmp_path / "a" / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + rows)
    assert load_dataset("imagenet", "test", str(tmp_path / "a"), image_size=8).labels.tolist() == [0, 0, 1]
    _fake_imagenet(tmp_path / "b", np.random.default_rng(5), flat=False)
    te = load_dataset("imagenet", "test", str(tmp_path / "b"), image_size=8)
    assert te.labels.tolist() == [0, 0, 1] and te.classes == ["n01440764", "n09999999"]


def test_imagenet_flat_val_without_ground_truth(tmp_path):
    _fake_imagenet(tmp_path / "in", np.random.default_rng(6))
    with pytest.raises(DataError, match="val_labels.txt .* or LOC_val_solution.csv"):
        load_dataset("imagenet", "test", str(tmp_path / "in"), image_size=8)
    (tmp_path / "in" / "val_labels.txt").write_text("ILSVRC2012_val_00000001.JPEG n01440764\n")
    with pytest.raises(DataError, match="has no line in"):
        load_dataset("imagenet", "test", str(tmp_path / "in"), image_size=8)


# ---- IDX headers -------------------------------------------------------------------------------------------

GOOD = bytes([0, 0, 8, 3]) + struct.pack(">III", 2, 3, 3) + bytes(18)


@pytest.mark.parametrize("raw, msg", [
    (b"\x01" + GOOD[1:], "bad magic"),
    (GOOD[:2] + b"\x07" + GOOD[3:], "unknown data type code 0x07"),
    (GOOD[:3] + b"\x40" + GOOD[4:], "truncated"),                           # 64 dimensions
    (GOOD[:3] + b"\x00" + GOOD[4:], "corrupt header"),                      # 0 dimensions: 1 byte, not 30
    (GOOD[:4] + struct.pack(">III", 2, 3, 2) + bytes(18), "corrupt header"),  # sizes shrunk: 12 of 18 bytes
    (GOOD[:4] + struct.pack(">III", 2**31, 2**31, 4) + bytes(18), "corrupt header"),  # sizes overflow int64
    (GOOD[:4] + struct.pack(">III", 2**32 - 1, 2**32 - 1, 2**32 - 1) + bytes(18), "corrupt header"),
    (GOOD[:4] + struct.pack(">III", 0, 3, 3), None),                         # empty, valid
])
def test_corrupt_idx_header_is_one_data_error(tmp_path, raw, msg):
    f = tmp_path / "x-idx3-ubyte"
    f.write_bytes(raw)
    if msg is None:
        read_idx(f)
        return
    with pytest.raises(DataError, match=msg) as e:
        read_idx(f)
    assert "\n" not in str(e.value)


def test_corrupt_gzip_stream_is_a_data_error(tmp_path):
    z = bytearray(gzip.compress(GOOD))
    z[12] ^= 0xFF
    z[13] ^= 0x55
    (tmp_path / "x.gz").write_bytes(bytes(z))
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "x.gz")
