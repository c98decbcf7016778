"""The student recipe (issue #20 item 7): kept weights, evaluation history with top-5, warm-up, no weight decay on
1-D parameters, per-epoch cosine, per-student recipes, and repeats that recompute nothing upstream."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import needs_fmnist
from safetensors.torch import load_file
from test_provenance import DEMO, MICRO

from labeldistill import cli
from labeldistill.config import ModelConfig, StudentSpec, load_config, student_specs
from labeldistill.data import load_split
from labeldistill.errors import ConfigError, StaleStageError
from labeldistill.main_stages import VALIDATE
from labeldistill.models import build_model
from labeldistill.provenance import model_tag
from labeldistill.runner import check_unit
from labeldistill.training import decay_groups, epoch_lr, evaluate_topk, make_optimizer

A = "{name: convnet, args: {width: 4, depth: 3, norm: batch}}"  # = validate.model of MICRO
A_OWN = "{name: convnet, args: {width: 4, depth: 3, norm: batch}, lr: 0.004, epochs: 3}"


def test_warmup_then_cosine_per_epoch():
    lr = epoch_lr(1.0, [3] * 6, warmup_epochs=2)  # 6 epochs of 3 steps
    got = [lr(s) for s in range(18)]
    assert got[0:3] == [0.01] * 3 and got[3:6] == [pytest.approx(0.505)] * 3  # linear from 0.01 · lr
    assert got[6:9] == [1.0] * 3  # the cosine starts at the peak after the warm-up
    assert all(len(set(got[e * 3:(e + 1) * 3])) == 1 for e in range(6))  # constant within an epoch
    assert got[9] == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(torch.pi / 4)).item()))
    step = epoch_lr(1.0, [3] * 6, per_epoch=False)  # the old schedule: a new value every step
    assert len({step(s) for s in range(18)}) == 18 and step(0) == 1.0


def test_no_weight_decay_on_1d_params_by_default():
    model = build_model(ModelConfig("convnet", {"width": 4, "depth": 2, "norm": "batch"}), 10, (1, 28, 28))
    opt = make_optimizer("adamw", decay_groups(model, 0.01), 0.1, weight_decay=0.01)
    by_dim = {(p.ndim > 1, g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    assert by_dim == {(True, 0.01), (False, 0.0)}
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(p.numel() for p in model.parameters())
    old = make_optimizer("adamw", decay_groups(model, 0.01, decay_1d=True), 0.1, weight_decay=0.01)
    assert {g["weight_decay"] for g in old.param_groups} == {0.01}  # validate.weight_decay_1d: true


def test_student_entries_take_a_recipe():
    cfg = load_config(DEMO, [f"validate.students=[{A}, {A_OWN}]"])
    plain, own = student_specs(cfg.validate)
    assert isinstance(own, StudentSpec) and (own.lr, own.epochs, own.optimizer) == (0.004, 3, None)
    assert model_tag(own) == model_tag(plain) + "-lr0.004-epochs3"  # its own result folder
    with pytest.raises(ConfigError, match="momentum"):
        load_config(DEMO, ["validate.students=[{name: convnet, momentum: 0.5}]"])
    with pytest.raises(ConfigError, match=r"students\[0\].lr"):
        load_config(DEMO, ["validate.students=[{name: convnet, lr: -1}]"])
    with pytest.raises(ConfigError, match="validate.schedule"):
        load_config(DEMO, ["validate.schedule=cosine"])


def _run(*extra: str) -> None:
    assert cli.main(["run", DEMO, *MICRO, *extra]) == 0


@pytest.fixture(scope="module")
def repeated(tmp_path_factory):
    """A run with one student, then the same directory with 2 repeats and a second student with its own recipe."""
    run_dir = tmp_path_factory.mktemp("recipe")
    _run(f"run_dir={run_dir}", "validate.eval_every=1")
    ledger = json.loads((run_dir / "stages.json").read_text())
    _run(f"run_dir={run_dir}", "validate.eval_every=1", "validate.repeats=2", f"validate.students=[{A}, {A_OWN}]")
    return run_dir, ledger


@needs_fmnist
def test_weights_kept_and_history(repeated):
    run_dir, _ = repeated
    cfg = load_config(run_dir / "config.yaml")
    test = load_split(cfg, "test")
    rows = json.loads((run_dir / "results.json").read_text())["rows"]
    for r in rows:
        assert [h["epoch"] for h in r["history"]] == list(range(1, r["epochs"] + 1))  # eval_every: 1
        assert (r["history"][-1]["top1"], r["history"][-1]["top5"]) == (r["top1"], r["top5"])  # the last epoch's
        assert r["top5"] >= r["top1"]
    r = rows[0]
    model = build_model(ModelConfig(r["student"], r["student_args"]), test.num_classes, test.shape)
    model.load_state_dict(load_file(run_dir / r["model_file"]))
    assert r["model_file"].endswith(".model.safetensors") and (run_dir / r["model_file"]).parent.name == r["stage"].split()[-1].rstrip("]")
    assert evaluate_topk(model, test, test.mean, test.std, torch.device("cpu"))["top1"] == r["top1"]


@needs_fmnist
def test_per_student_recipe_used_and_recorded(repeated):
    run_dir, _ = repeated
    rows = json.loads((run_dir / "results.json").read_text())["rows"]
    own = [r for r in rows if r["recipe"]["lr"] == 0.004]
    plain = [r for r in rows if r["recipe"]["lr"] != 0.004]
    assert own and all(r["epochs"] == 3 and r["recipe"]["epochs"] == 3 for r in own)
    assert all(r["epochs"] == 2 and r["recipe"]["weight_decay_1d"] is False for r in plain)
    ledger = json.loads((run_dir / "stages.json").read_text())
    assert {ledger[r["stage"]]["settings"]["validate.lr"] for r in own} == {0.004}  # the fingerprint covers it


@needs_fmnist
def test_repeats_are_extra_units_upstream_untouched(repeated):
    run_dir, before = repeated
    results = json.loads((run_dir / "results.json").read_text())
    rows, after = results["rows"], json.loads((run_dir / "stages.json").read_text())
    assert {k: v for k, v in after.items() if not k.startswith("validate")} == \
        {k: v for k, v in before.items() if not k.startswith("validate")}  # nothing upstream recomputed
    assert all(after[k] == v for k, v in before.items())  # the first repeat of the first student reused too
    per_store = {}
    for r in rows:
        per_store.setdefault((r["label_store"], r["recipe"]["lr"]), []).append(r)
    assert all(sorted(x["repeat"] for x in rs) == [0, 1] for rs in per_store.values())
    assert all(len({x["student_seed"] for x in rs}) == 2 for rs in per_store.values())
    summary = results["summary"]
    assert len(summary) == len(per_store) and all(s["n"] == 2 and s["repeats"] == [0, 1] for s in summary)
    s, rs = summary[0], per_store[(rows[0]["label_store"], rows[0]["recipe"]["lr"])]
    assert (s["prune_factor"], s["recipe"]) == (rs[0]["prune_factor"], rs[0]["recipe"])
    t = torch.tensor([x["top1"] for x in rs], dtype=torch.float64)
    assert s["top1_mean"] == pytest.approx(float(t.mean())) and s["top1_std"] == pytest.approx(float(t.std(False)))
    assert "±" in (run_dir / "report.md").read_text()


@needs_fmnist
def test_recipe_keys_make_old_rows_stale(repeated):
    run_dir, _ = repeated
    for change in ("validate.schedule=cosine_step", "validate.weight_decay_1d=true", "validate.warmup_epochs=1"):
        cfg = load_config(run_dir / "config.yaml", [change, "validate.students=[]"])
        with pytest.raises(StaleStageError):
            check_unit(VALIDATE, cfg, VALIDATE.units(cfg)[0])
