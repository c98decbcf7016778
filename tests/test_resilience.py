"""Nothing lost, nothing silent: kill-and-resume, torchrun equivalence, vectorised recover, mismatches."""

import dataclasses
import filecmp
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from labeldistill.cli import main
from labeldistill.io import load_class_stats
from labeldistill.layout import RunLayout
from labeldistill.models.checkpoint import load_teacher
from labeldistill.models import bn_layers
from labeldistill.recover import BNInputHook, Segment, bn_targets, recover_segments
from labeldistill.augment import step_generator

from conftest import REPO, needs_fmnist

pytestmark = needs_fmnist

RESUME_OVERRIDES = [
    "data.train_subset=600", "data.test_subset=300",
    "squeeze.epochs=2", "squeeze.model.args.width=8", "squeeze.batch_size=100",
    "recover.ipc=2", "recover.iterations=6", "recover.batch_size=2", "recover.vectorize=2", "recover.modes=[lpld]",
    "relabel.epochs=4", "relabel.batch_size=4", "relabel.steps_per_shard=3",
    "prune.factors=[1, 4]",
    "validate.model.args.width=8", "validate.epochs=3", "validate.checkpoint_seconds=0",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _argv(run_dir: Path) -> list[str]:
    return ["run", str(REPO / "configs" / "fmnist_demo.yaml"), *RESUME_OVERRIDES, "threads=1", f"run_dir={run_dir}"]


def _killed(run_dir: Path, kill_at: str) -> subprocess.CompletedProcess:
    """``labeldistill run`` in a process of its own, SIGKILLed at ``kill_at`` (resume.fault_point)."""
    return subprocess.run([sys.executable, "-m", "labeldistill.cli", *_argv(run_dir)], capture_output=True,
                          text=True, env={**ENV, "LABELDISTILL_KILL_AT": kill_at}, timeout=600)


def _artifacts(run_dir: Path) -> list[Path]:
    keep = []
    for p in sorted(run_dir.rglob("*")):
        rel = p.relative_to(run_dir)
        if p.is_file() and rel.parts[0] in ("teacher", "class_stats", "images", "labels"):
            keep.append(rel)
    return keep


def _assert_same_artifacts(a: Path, b: Path) -> None:
    files_a, files_b = _artifacts(a), _artifacts(b)
    assert files_a == files_b
    diff = [str(f) for f in files_a if not filecmp.cmp(a / f, b / f, shallow=False)]
    assert not diff, f"differ after resume: {diff}"


def _run_here(run_dir: Path) -> None:
    """The same ``labeldistill run``, uninterrupted, in this process (no seconds of imports)."""
    threads = torch.get_num_threads()
    try:
        assert main(_argv(run_dir)) == 0
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """A run never interrupted; only the killed runs below need processes of their own."""
    ref = tmp_path_factory.mktemp("ref")
    _run_here(ref)
    return ref


def test_kill_at_every_stage_then_resume_is_byte_identical(reference_run, tmp_path):
    run_dir = tmp_path / "killed"
    for point in ("squeeze-epoch:1", "recover-group:1", "relabel-shard:2", "validate-epoch:2"):
        r = _killed(run_dir, point)
        assert r.returncode == -signal.SIGKILL, (point, r.returncode, r.stderr[-1500:])
    _run_here(run_dir)
    _assert_same_artifacts(reference_run, run_dir)
    for f in ("lpld_x1.json", "lpld_x4.json"):
        a = json.loads(next((reference_run / "validate").glob(f"*/{f}")).read_text())
        b = json.loads(next((run_dir / "validate").glob(f"*/{f}")).read_text())
        assert a["top1"] == b["top1"]
    assert not list(run_dir.rglob("*.partial")) and not list(run_dir.rglob(".*.resume.pt"))
    assert _metrics(run_dir) == _metrics(reference_run)  # no line of a resumed unit twice, none lost


def _metrics(run_dir: Path) -> list[dict]:
    """The lines of ``metrics.jsonl`` without their wall-clock fields (``time``, ``*seconds*``)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time" and "seconds" not in k} for r in rows]


def test_sigkill_at_a_random_moment_then_resume(reference_run, tmp_path):
    run_dir = tmp_path / "timer"
    p = subprocess.Popen([sys.executable, "-m", "labeldistill.cli", *_argv(run_dir)], env=ENV,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(6.0)
    p.send_signal(signal.SIGKILL)
    p.wait()
    _run_here(run_dir)
    _assert_same_artifacts(reference_run, run_dir)


def test_two_process_torchrun_matches_one_process(reference_run, tmp_path):
    run_dir = tmp_path / "ddp"
    run_dir.mkdir()
    for d in ("teacher", "class_stats"):  # squeeze under DDP trains another teacher; share it
        shutil.copytree(reference_run / d, run_dir / d)
    shutil.copy(reference_run / "run.json", run_dir / "run.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
           "-m", "labeldistill.cli", "relabel", str(REPO / "configs" / "fmnist_demo.yaml"), *RESUME_OVERRIDES,
           "threads=1", f"run_dir={run_dir}"]
    rec = cmd.copy()
    rec[rec.index("relabel")] = "recover"
    for c in (rec, cmd):
        r = subprocess.run(c, capture_output=True, text=True, env=ENV, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    for sub in ("images/lpld", "labels/lpld/full"):
        a, b = reference_run / sub, run_dir / sub
        names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        assert names == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
        assert all(filecmp.cmp(a / n, b / n, shallow=False) for n in names), sub


def test_vectorised_recover_matches_the_per_class_loop(tiny_run):
    cfg, _ = tiny_run
    lay = RunLayout(cfg.run_path)
    teacher, info = load_teacher(lay.teacher_dir, torch.device("cpu"))
    stats, _ = load_class_stats(lay.class_stats_dir)
    bns = bn_layers(teacher)
    hooks = [BNInputHook() for _ in bns]
    handles = [bn.register_forward_hook(h) for bn, h in zip(bns, hooks)]
    cfg2 = dataclasses.replace(cfg, recover=dataclasses.replace(cfg.recover, iterations=8, crops="per_image"))

    def segs():
        return [Segment(torch.full((3,), c), bn_targets("class", stats, len(bns), c, torch.device("cpu")),
                        step_generator(0, 5, c)) for c in range(4)]

    try:
        together, t_terms = recover_segments(teacher, hooks, segs(), (1, 28, 28), info["mean"], info["std"], cfg2,
                                             torch.device("cpu"))
        alone = [recover_segments(teacher, hooks, [s], (1, 28, 28), info["mean"], info["std"], cfg2,
                                  torch.device("cpu")) for s in segs()]
    finally:
        for h in handles:
            h.remove()
    for i, (imgs, terms) in enumerate(alone):
        # float32 noise of batched vs per-class convolutions over 8 Adam steps reaches ~2e-5 with some thread
        # counts; a segment leaking into another would move pixels by orders of magnitude more
        torch.testing.assert_close(together[i], imgs[0], atol=1e-4, rtol=0)
        assert abs(t_terms[i]["ce"] - terms[0]["ce"]) <= 1e-5 * max(1.0, abs(terms[0]["ce"]))
        assert abs(t_terms[i]["bn"] - terms[0]["bn"]) <= 1e-5 * max(1.0, abs(terms[0]["bn"]))
