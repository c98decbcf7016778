"""validate.parallel under torchrun (gloo, 2 CPU processes): rows equal a one-process run's, ledger intact."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labeldistill.cli import main

from conftest import REPO, needs_fmnist

pytestmark = needs_fmnist

OVERRIDES = [
    "data.train_subset=400", "data.test_subset=200",
    "squeeze.epochs=1", "squeeze.model.args.width=8", "squeeze.batch_size=100",
    "recover.ipc=2", "recover.iterations=3", "recover.batch_size=4", "recover.modes=[lpld]",
    "relabel.epochs=2", "relabel.batch_size=4", "prune.factors=[1]",
    "validate.students=[{name: convnet, args: {width: 8}}, {name: convnet, args: {width: 4}}]",
    "validate.epochs=2", "validate.checkpoint_seconds=0", "threads=1",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
CONFIG = str(REPO / "configs" / "fmnist_demo.yaml")


def _cli(*args: str, torchrun: bool = False) -> subprocess.CompletedProcess:
    launch = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]
              if torchrun else [sys.executable])
    r = subprocess.run([*launch, "-m", "labeldistill.cli", *args], capture_output=True, text=True, env=ENV,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _rows(run_dir: Path) -> dict[str, dict]:
    rows = {}
    for f in sorted((run_dir / "validate").rglob("*.json")):
        row = json.loads(f.read_text())
        row.pop("seconds")
        rows[str(f.relative_to(run_dir))] = row
    return rows


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The one-process reference, run in this process (only the torchrun runs need processes of their own)."""
    run_dir = tmp_path_factory.mktemp("one")
    threads = torch.get_num_threads()
    try:
        assert main(["run", CONFIG, *OVERRIDES, f"run_dir={run_dir}"]) == 0
    finally:
        torch.set_num_threads(threads)
    return run_dir


def test_students_parallel_rows_equal_one_process(one_process, tmp_path):
    run_dir = tmp_path / "students"
    shutil.copytree(one_process, run_dir)
    shutil.rmtree(run_dir / "validate")
    _cli("validate", CONFIG, *OVERRIDES, f"run_dir={run_dir}", "validate.parallel=students", "--force",
         torchrun=True)
    ours, theirs = _rows(run_dir), _rows(one_process)
    assert len(ours) == 2 and ours == theirs
    ledger = json.loads((run_dir / "stages.json").read_text())
    assert all(row["stage"] in ledger for row in ours.values())  # rank 1's unit recorded by rank 0
    assert ledger == {**json.loads((one_process / "stages.json").read_text()),
                      **{k: {**v, "seconds": ledger[k]["seconds"], "finished": ledger[k]["finished"]}
                         for k, v in json.loads((one_process / "stages.json").read_text()).items()
                         if k.startswith("validate")}}
    _cli("validate", CONFIG, *OVERRIDES, f"run_dir={run_dir}", "validate.parallel=students", torchrun=True)
    assert _rows(run_dir) == theirs  # reused from the ledger, nothing refused


SHARDED_EVAL = '''
import sys, torch
from labeldistill.data import ImageSet
from labeldistill.distributed import close_distributed, init_distributed, rank_world
from labeldistill.models import build_model
from labeldistill.config import ModelConfig
from labeldistill.training import evaluate
init_distributed()
torch.manual_seed(0)  # same weights and data on every rank
model = build_model(ModelConfig("convnet", {"width": 4}), 10, (1, 28, 28))
data = ImageSet(torch.randint(0, 256, (250, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (250,)),
                [str(i) for i in range(10)], (0.5,), (0.5,))
dev = torch.device("cpu")
full = evaluate(model, data, (0.5,), (0.5,), dev, batch_size=40)
shard = evaluate(model, data, (0.5,), (0.5,), dev, batch_size=40, sharded=True)
open(sys.argv[1] + f"/rank{rank_world()[0]}", "w").write(f"{full} {shard}")
close_distributed()
'''


def test_sharded_evaluation_gives_the_one_process_top1(tmp_path):
    script = tmp_path / "eval.py"
    script.write_text(SHARDED_EVAL)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", str(script), str(tmp_path)], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for rank in (0, 1):
        full, shard = (tmp_path / f"rank{rank}").read_text().split()
        assert full == shard and 0 < float(full) < 1


def test_squeeze_under_ddp_logs_each_epoch_once(tmp_path):
    """Both ranks train the teacher; only rank 0 writes its metrics lines (they were written once per rank)."""
    _cli("squeeze", CONFIG, *OVERRIDES, "squeeze.epochs=2", f"run_dir={tmp_path}", torchrun=True)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines if x["stage"] == "squeeze" and "epoch" in x] == [0, 1]
