"""The ``deterministic`` config key: applied on CUDA only (a no-op on CPU), and in fingerprints only when true."""

from __future__ import annotations

import os

import pytest
import torch

from labeldistill import runtime
from labeldistill.config import load_config
from labeldistill.errors import ConfigError
from labeldistill.provenance import data_settings, numerics_settings


@pytest.fixture
def clean_flags(monkeypatch):
    """Restore torch's process-wide flags and the environment after a test that may set them."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def test_cpu_is_a_no_op(clean_flags):
    assert runtime.set_deterministic(torch.device("cpu"), True) is False
    assert runtime.pick_device("cpu", deterministic=True).type == "cpu"
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_cuda_gets_every_setting_and_off_changes_nothing(clean_flags):
    cuda = torch.device("cuda", 0)  # only the device's type is read: no GPU needed
    assert runtime.set_deterministic(cuda, False) is False and not torch.are_deterministic_algorithms_enabled()
    torch.backends.cudnn.benchmark = True
    assert runtime.set_deterministic(cuda, True) is True
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_a_users_cublas_setting_is_kept(clean_flags, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    runtime.deterministic_env(True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_fingerprints_record_it_only_when_true():
    off, on = load_config(None, []), load_config(None, ["deterministic=true"])
    assert off.deterministic is False and "deterministic" not in data_settings(off) and numerics_settings(off) == {}
    assert data_settings(on)["deterministic"] is True
    assert {k: v for k, v in data_settings(on).items() if k != "deterministic"} == data_settings(off)


def test_a_non_boolean_is_refused():
    with pytest.raises(ConfigError, match="deterministic"):
        load_config(None, ["deterministic=yes please"])
