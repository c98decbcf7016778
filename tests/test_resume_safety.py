"""A resume file received from someone else can never run code (resume files are read with weights_only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labeldistill.errors import StoreError
from labeldistill.resume import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    """Pickles to a call of ``os.system`` (the classic pickle payload)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_own_checkpoint_round_trips(tmp_path):
    state = {"model": {"w": torch.arange(4.0)}, "epoch": 3, "rng": torch.get_rng_state(), "rows": [{"a": 1.5}]}
    save_checkpoint(tmp_path / "c.pt", "k1", state)
    back = load_checkpoint(tmp_path / "c.pt", "k1")
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["epoch"] == 3
    assert torch.equal(back["rng"], state["rng"]) and back["rows"] == [{"a": 1.5}]
    assert load_checkpoint(tmp_path / "c.pt", "other key") is None


def test_damaged_checkpoint_is_not_used(tmp_path):
    save_checkpoint(tmp_path / "c.pt", "k", {"x": torch.zeros(3)})
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(data[: len(data) // 2])
    assert load_checkpoint(tmp_path / "c.pt", "k") is None


def test_code_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"key": "k", "model": _Payload(marker)}, tmp_path / "c.pt")
    with pytest.raises(StoreError, match="could run code"):
        load_checkpoint(tmp_path / "c.pt", "k")
    assert not marker.exists()


def test_crafted_teacher_resume_file_in_a_run_dir(tmp_path):
    """`labeldistill squeeze` in a run directory holding a crafted teacher/.resume.pt: one line, exit 2, no code."""
    marker = tmp_path / "ran"
    run_dir = tmp_path / "run"
    (run_dir / "teacher").mkdir(parents=True)
    torch.save({"key": "anything", "model": _Payload(marker)}, run_dir / "teacher" / ".resume.pt")
    r = subprocess.run([sys.executable, "-m", "labeldistill.cli", "squeeze", str(REPO / "configs" / "fmnist_demo.yaml"),
                        f"run_dir={run_dir}", "data.dataset=digits", "data.root=null", "squeeze.epochs=1", "threads=1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1 and "could run code" in r.stderr
    assert not marker.exists()
