"""Shared fixtures: a tiny real Fashion-MNIST run of the whole main job, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from labeldistill.config import load_config
from labeldistill.data.idx import FASHION_MNIST_DEFAULT_ROOT

REPO = Path(__file__).resolve().parents[1]
TINY_OVERRIDES = [
    "data.train_subset=2000", "data.test_subset=1000",
    "squeeze.epochs=1", "squeeze.model.args.width=16", "squeeze.batch_size=64",
    "recover.ipc=2", "recover.iterations=15",
    "relabel.epochs=6", "relabel.batch_size=8", "relabel.steps_per_shard=4",
    "prune.factors=[1, 3]",
    "validate.model.args.width=8", "validate.epochs=6",
]


def fmnist_available() -> bool:
    return Path(FASHION_MNIST_DEFAULT_ROOT, "train-images-idx3-ubyte.gz").is_file()


needs_fmnist = pytest.mark.skipif(not fmnist_available(), reason="Fashion-MNIST not installed (make data)")


@pytest.fixture(scope="session")
def tiny_cfg(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    return load_config(REPO / "configs" / "fmnist_demo.yaml", TINY_OVERRIDES + [f"run_dir={run_dir}", "name=tiny"])


@pytest.fixture(scope="session")
def tiny_run(tiny_cfg):
    """The main job on 2,000 real Fashion-MNIST training images; returns (config, results)."""
    if not fmnist_available():
        pytest.skip("Fashion-MNIST not installed (make data)")
    from labeldistill.pipeline import run

    return tiny_cfg, run(tiny_cfg)


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads on a shared 2-core machine, and busy OpenMP workers spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
