"""Mid-meta-training resume of ``learn-labels``: a run killed between two epochs of LD, RR or DD continues from
its last saved epoch and ends with the bytes of a run never stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from labeldistill.cli import main
from labeldistill.learn_labels import load_ld_config
from labeldistill.learn_labels.dd import DDMetaLearner, LearnedImages
from labeldistill.learn_labels.labels import LearnedLabels, onehot_labels, uniform_labels
from labeldistill.learn_labels.ld import LDMetaLearner
from labeldistill.learn_labels.meta import MetaCheckpoint, meta_train
from labeldistill.learn_labels.rr import RRMetaLearner
from labeldistill.learn_labels.run import Progress
from labeldistill.models import create_model
from labeldistill.resume import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


class _Killed(Exception):
    """Stands for the SIGKILL right after a save."""


def _train(method: str, checkpoint: MetaCheckpoint | None = None):
    """A tiny meta-training (5 epochs of 7 outer steps, window 3 so the model is re-initialised several times)."""
    g = torch.Generator().manual_seed(1)
    xb, yb = torch.randn(8, 1, 4, 4, generator=g), torch.arange(8) % 3
    xt, yt = torch.randn(200, 1, 4, 4, generator=g), torch.randint(0, 3, (200,), generator=g)
    xv, yv = torch.randn(40, 1, 4, 4, generator=g), torch.randint(0, 3, (40,), generator=g)
    torch.manual_seed(0)
    make = lambda: create_model("mlp", 3, 1, 4, hidden=8, depth=1)  # noqa: E731
    if method == "dd":
        labels = LearnedLabels(onehot_labels(yb, 3), "prob", 1e-3)
        learner = DDMetaLearner(make, LearnedImages(xb, 0.05), 1e-2, 0.1, 2)
    else:
        labels = LearnedLabels(uniform_labels(8, 3), "prob", 0.02)
        learner = LDMetaLearner(make, 1e-2, 0.1, 2) if method == "ld" else RRMetaLearner(make, 3, 1e-2, 1.0, 0.5, 0.1)
    out = meta_train(learner, labels, xb, xt, yt, xv, yv, epochs=5, outer_batch=32, inner_batch=4,
                     inner_steps=1 if method == "rr" else 2, window=3, val_every=1, max_steps=10, seed=0,
                     checkpoint=checkpoint)
    return out, torch.get_rng_state()


@pytest.mark.parametrize("method", ["ld", "rr", "dd"])
def test_meta_train_resumed_after_epoch_2_equals_an_uninterrupted_run(tmp_path, method):
    """The state saved after epoch 2 (through the resume file, read with weights_only) restarts a fresh process's
    objects; labels, images, history, reset lengths and the global RNG at the end are identical."""
    ref, ref_rng = _train(method)
    assert ref.reset_lengths  # the re-initialisations (global RNG draws) are part of what is resumed
    path, saves = tmp_path / "r.pt", []

    def save_then_die(state: dict) -> None:
        save_checkpoint(path, "k", {"state": state})
        saves.append(state["epoch"])
        if len(saves) == 2:
            raise _Killed

    with pytest.raises(_Killed):
        _train(method, MetaCheckpoint(None, save_then_die, seconds=0))
    torch.manual_seed(123)  # whatever the killed process left in the global RNG
    state = load_checkpoint(path, "k")["state"]
    assert saves == [1, 2] and state["epoch"] == 2 and state["step"] == 14
    out, rng = _train(method, MetaCheckpoint(state, lambda s: None, seconds=0))
    for k in ("labels", "final_labels", "images", "final_images"):
        a, b = getattr(ref, k), getattr(out, k)
        assert (a is None and b is None) or torch.equal(a, b), k
    assert (out.steps, out.val_error, out.outer_steps, out.reset_lengths, out.history) == \
        (ref.steps, ref.val_error, ref.outer_steps, ref.reset_lengths, ref.history)
    assert torch.equal(rng, ref_rng)
    assert out.seconds >= state["seconds"]  # the time before the kill is counted


def test_checkpoint_seconds_throttles_saves():
    """``seconds`` well above the run's length: no save at all; the last epoch is never saved."""
    saved = []
    _train("rr", MetaCheckpoint(None, saved.append, seconds=3600))
    assert saved == []
    _train("rr", MetaCheckpoint(None, saved.append, seconds=0))
    assert [s["epoch"] for s in saved] == [1, 2, 3, 4]


TINY = {
    "name": "tiny", "threads": 1, "seed": 0, "methods": ["ld", "dd", "onehot"],
    "data": {"target": "digits", "val_size": 200, "target_subset": 400, "test_subset": 200},
    "base": {"n": 20, "seed": 7},
    "learner": {"name": "mlp", "args": {"hidden": 16, "depth": 1}},
    "meta": {"epochs": 4, "outer_batch": 100, "inner_batch": 10, "val_every": 1, "max_steps": 30,
             "reset_window": 5, "checkpoint_seconds": 0},
    "metatest": {"repeats": 1, "optimizers": ["adam"]},
    "plot_examples": 0,
}


def _killed(cfg: str, run_dir, kill_at: str) -> subprocess.CompletedProcess:
    """``learn-labels`` in a process of its own, SIGKILLed at ``kill_at`` (resume.fault_point)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LABELDISTILL_KILL_AT": kill_at}
    return subprocess.run([sys.executable, "-m", "labeldistill.cli", "learn-labels", cfg, f"run_dir={run_dir}"],
                          capture_output=True, text=True, env=env, timeout=600)


def _timeless(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]


def test_learn_labels_killed_mid_meta_training_ends_identical(tmp_path, capsys):
    """SIGKILL after LD's 2nd epoch, then (resumed) after DD's 2nd epoch, then the same command with another
    ``meta.checkpoint_seconds`` (not a result setting): labels, images and meta-test rows equal an uninterrupted
    run's. The state in progress is offered to the same settings only. The two killed runs have processes of
    their own; the reference and the final resume run ``main`` in this one (a subprocess costs seconds of
    imports)."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert main(["learn-labels", str(cfg), f"run_dir={ref}"]) == 0
    assert _killed(str(cfg), cut, "meta-epoch:2").returncode == -9
    assert not (cut / "results.json").exists()

    def progress(*overrides: str) -> Progress:
        return Progress(load_ld_config(str(cfg), [f"run_dir={cut}", *overrides]))

    assert list(progress().meta_progress) == ["ld"] and progress().meta_progress["ld"]["epoch"] == 2
    assert progress().meta_checkpoint("ld", 0).state["step"] == 2 * 4  # 400 targets / 100 per outer step, 2 epochs
    assert list(progress("meta.checkpoint_seconds=7").meta_progress) == ["ld"]
    assert progress("meta.model_lr=0.002").meta_progress == {}  # other settings: not resumed
    # ld resumes at epoch 3 (save 1), finishes at 4 (never saved), dd saves epochs 1, 2: killed after its 2nd
    assert _killed(str(cfg), cut, "meta-epoch:3").returncode == -9
    capsys.readouterr()
    assert main(["learn-labels", str(cfg), f"run_dir={cut}", "meta.checkpoint_seconds=1000"]) == 0
    out = capsys.readouterr().out
    assert "1 label sets and 0 meta-test rows already done; dd meta-training continues after epoch 2" in out
    assert not (cut / ".learn_labels.resume.pt").exists()
    a, b = load_file(str(ref / "labels.safetensors")), load_file(str(cut / "labels.safetensors"))
    assert a.keys() == b.keys() and "dd_images" in a
    assert all(torch.equal(a[k], b[k]) for k in a)
    res_a, res_b = (json.loads((d / "results.json").read_text()) for d in (ref, cut))
    assert _timeless(res_a["rows"]) == _timeless(res_b["rows"])
    assert {m: _timeless([e])[0] for m, e in res_a["meta"].items()} == \
        {m: _timeless([e])[0] for m, e in res_b["meta"].items()}
    assert _metrics(ref) == _metrics(cut)  # kills right after a save: nothing logged twice, nothing lost


def _metrics(run_dir) -> list[dict]:
    """The lines of ``metrics.jsonl`` without their ``time`` and ``seconds`` fields."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return _timeless([{k: v for k, v in r.items() if k != "time"} for r in rows])


def test_metrics_of_a_run_killed_between_saves_equal_an_uninterrupted_runs(tmp_path):
    """A run killed after an epoch's model-selection line was logged but before that epoch was saved (its resume
    file holds the epoch before: a kill between two throttled saves, made here by putting back the previous
    save's file after a SIGKILL), resumed: ``metrics.jsonl`` holds exactly an uninterrupted run's lines, in its
    order — the redone epoch's ``select`` line and the teacher line once, the lines of an earlier run in the
    same file kept."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "methods": ["teacher", "ld"], "meta": {**TINY["meta"], "epochs": 3},
                                   "teacher": {"model": {"name": "mlp", "args": {"hidden": 16, "depth": 1}},
                                               "epochs": 1}}))
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert main(["learn-labels", str(cfg), f"run_dir={ref}"]) == 0
    cut.mkdir()
    (cut / "metrics.jsonl").write_text('{"time": 1.0, "event": "an earlier run"}\n')
    assert _killed(str(cfg), cut, "meta-epoch:1").returncode == -9  # saved after epoch 1, killed
    epoch1 = (cut / ".learn_labels.resume.pt").read_bytes()
    assert _killed(str(cfg), cut, "meta-epoch:1").returncode == -9  # resumed: epoch 2 logged and saved, killed
    (cut / ".learn_labels.resume.pt").write_bytes(epoch1)  # as if killed during epoch 2's save
    assert main(["learn-labels", str(cfg), f"run_dir={cut}"]) == 0
    want = _metrics(ref)
    assert [m["event"] for m in want].count("select") == 3 and want[0]["event"] == "teacher"
    assert _metrics(cut) == [{"event": "an earlier run"}, *want]
