"""The shared training loop (`training.fit`): a run cut off after an epoch resumes to the same weights, the resume
file carries every field it needs, a non-finite loss is refused in the caller's words."""

from __future__ import annotations

import json

import pytest
import torch

from labeldistill.errors import LabelDistillError
from labeldistill.io import MetricsLog
from labeldistill.resume import save_checkpoint
from labeldistill.training import Checkpointer, StepGuard, cosine_lr, fit

X = torch.randn(24, 3, generator=torch.Generator().manual_seed(1))
Y = X @ torch.tensor([[1.0], [-2.0], [0.5]])


class Stop(Exception):
    pass


def _train(path, epochs=4, stop_at=None, lr=0.1):
    """A linear model trained by `fit` on a seeded shuffle (its own generator, saved in the resume file)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    lrs = []

    def batches(epoch):
        if epoch == stop_at:
            raise Stop
        order = torch.randperm(len(X), generator=g)
        return [order[i:i + 8] for i in range(0, len(X), 8)]

    def loss(idx, epoch):
        lrs.append(opt.param_groups[0]["lr"])
        return torch.nn.functional.mse_loss(model(X[idx]), Y[idx])

    ckpt = Checkpointer(path, "k", "test-epoch", 0, lambda: {"gen": g.get_state()},
                        lambda s: g.set_state(s["gen"]))
    steps = fit(model, opt, epochs=epochs, total=epochs * 3, lr=lambda s: cosine_lr(lr, s, epochs * 3),
                batches=batches, loss=loss, guard=StepGuard("toy", "toy.lr"), checkpoint=ckpt)
    return model, steps, lrs


def test_a_cut_off_run_resumes_to_the_same_weights_and_schedule(tmp_path):
    whole, steps, lrs = _train(None)
    path = tmp_path / ".resume.pt"
    with pytest.raises(Stop):
        _train(path, stop_at=2)
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 1 and state["step"] == 6 and state["key"] == "k" and "gen" in state
    resumed, steps2, lrs2 = _train(path)
    assert steps == steps2 == 12 and lrs2 == lrs[6:]  # the schedule continues at the saved step
    assert torch.equal(whole.weight, resumed.weight) and torch.equal(whole.bias, resumed.bias)


def test_a_run_killed_during_a_save_logs_each_epoch_once_and_keeps_other_lines(tmp_path):
    """Killed while saving epoch 1 (its metrics line written, the resume file still epoch 0's), then resumed: epoch
    1's line is in the log once, in its place among the run's lines; lines of other work, before the save and
    after the kill, stay."""
    log, path = MetricsLog(tmp_path / "metrics.jsonl"), tmp_path / ".resume.pt"

    def run(die_in_save: int | None = None) -> None:
        model = torch.nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        saves = []

        def extra() -> dict:
            saves.append(1)
            if len(saves) == die_in_save:
                raise Stop
            return {}

        fit(model, opt, epochs=4, total=12, lr=lambda s: 0.1, batches=lambda e: [slice(i, i + 8) for i in (0, 8, 16)],
            loss=lambda idx, e: torch.nn.functional.mse_loss(model(X[idx]), Y[idx]),
            guard=StepGuard("toy", "toy.lr"), end_epoch=lambda epoch, loss: log.log(stage="toy", epoch=epoch),
            checkpoint=Checkpointer(path, "k", "test-epoch", 0, extra, metrics=log, metrics_match={"stage": "toy"}))

    log.log(stage="before")
    with pytest.raises(Stop):
        run(die_in_save=2)
    log.log(stage="other")
    run()
    lines = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert [(r["stage"], r.get("epoch")) for r in lines] == \
        [("before", None), ("toy", 0), ("other", None), ("toy", 1), ("toy", 2), ("toy", 3)]


def test_a_resume_file_without_the_loop_fields_or_with_another_key_starts_over(tmp_path):
    path = tmp_path / ".resume.pt"
    save_checkpoint(path, "k", {"model": {}, "opt": {}, "epoch": 1})  # no "step": not this loop's file
    assert _train(path)[2][0] == 0.1  # trained from step 0 (the schedule's first value)
    save_checkpoint(path, "other", {"model": {}, "opt": {}, "epoch": 1, "step": 6})
    assert len(_train(path)[2]) == 12


def test_a_non_finite_loss_is_refused_in_the_callers_words(tmp_path):
    with pytest.raises(LabelDistillError, match=r"toy loss became (nan|inf) at step \d+; lower toy.lr"):
        _train(None, lr=1e30)
