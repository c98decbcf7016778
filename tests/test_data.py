import gzip
import json

import numpy as np
import pytest
import torch
from PIL import Image

from labeldistill.data import list_datasets, load_dataset
from labeldistill.data.idx import read_idx
from labeldistill.data.imagefolder import load_imagefolder
from labeldistill.errors import DataError, RegistryError

from conftest import needs_fmnist


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


@pytest.mark.parametrize("compress", [False, True])
def test_idx_roundtrip_raw_and_gzip(tmp_path, compress):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / ("x.idx.gz" if compress else "x.idx")
    data = _idx_bytes(arr)
    p.write_bytes(gzip.compress(data) if compress else data)
    np.testing.assert_array_equal(read_idx(p), arr)


def test_idx_truncated_and_bad_magic(tmp_path):
    arr = np.zeros((4, 5, 5), dtype=np.uint8)
    p = tmp_path / "t.idx"
    p.write_bytes(_idx_bytes(arr)[:-7])
    with pytest.raises(DataError, match="truncated"):
        read_idx(p)
    p.write_bytes(b"\x12\x34" + _idx_bytes(arr)[2:])
    with pytest.raises(DataError, match="magic"):
        read_idx(p)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(RegistryError, match="fashion-mnist"):
        load_dataset("cifar-1000", "train")


def test_missing_data_folder(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        load_dataset("fashion-mnist", "train", str(tmp_path / "missing"))


@needs_fmnist
def test_fashion_mnist_shapes_and_balanced_subset():
    test = load_dataset("fashion-mnist", "test")
    assert test.images.shape == (10000, 1, 28, 28) and test.images.dtype == torch.uint8
    assert test.num_classes == 10 and test.labels.max() == 9
    sub = test.subset(100, seed=3)
    assert len(sub) == 100
    assert torch.bincount(sub.labels, minlength=10).tolist() == [10] * 10
    assert torch.equal(sub.images, test.subset(100, seed=3).images)  # seeded


def test_digits_splits_are_disjoint_and_resized():
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(tr) + len(te) == 1797 and tr.shape == (1, 8, 8)
    assert load_dataset("digits28", "test").shape == (1, 28, 28)
    assert "digits" in list_datasets()


def test_imagefolder_uses_explicit_class_to_idx(tmp_path):
    for cls in ("zebra", "ant"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.full((6, 6), 40 if cls == "zebra" else 200, np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "class_to_idx.json").write_text(json.dumps({"zebra": 0, "ant": 1}))
    ds = load_imagefolder(tmp_path)
    assert ds.classes == ["zebra", "ant"]  # not the alphabetical order
    assert ds.labels.tolist() == [0, 0, 1, 1]
    assert int(ds.images[0, 0, 0, 0]) == 40


def test_imagefolder_rejects_mixed_sizes_and_empty_class(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "a" / "0.png")
    with pytest.raises(DataError, match="no images"):
        load_imagefolder(tmp_path)
    Image.fromarray(np.zeros((7, 6), np.uint8)).save(tmp_path / "b" / "0.png")
    with pytest.raises(DataError, match="resize"):
        load_imagefolder(tmp_path)
