"""Hard-label baselines for DD-Ranking's HLR: rows, reuse and staleness, the CLI verb, the main job's switch, and
the leaderboard's HLR from them."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from conftest import REPO, needs_fmnist

from labeldistill import cli
from labeldistill.config import dump_config
from labeldistill.errors import StaleStageError
from labeldistill.layout import REAL_TRAIN, RunLayout
from labeldistill.leaderboard import leaderboard
from labeldistill.pipeline import run
from labeldistill.plan import plan_run
from labeldistill.validate import hard_label


@pytest.fixture
def own_run(tiny_run, tmp_path, one_thread):
    """A copy of the session's tiny run (so switching hard_label on changes nobody else's run directory)."""
    cfg, _ = tiny_run
    dest = tmp_path / "run"
    shutil.copytree(cfg.run_path, dest, ignore=shutil.ignore_patterns("hard_label"))
    c = dataclasses.replace(cfg, run_dir=str(dest), hard_label=dataclasses.replace(cfg.hard_label, real_epochs=1))
    return c


@needs_fmnist
def test_hard_label_rows_reuse_and_refuse_stale(own_run):
    cfg = own_run
    mode = cfg.recover.modes[0]
    row = hard_label(cfg, mode)
    f = RunLayout(cfg.run_path).hard_label_file(mode, "convnet-depth3-normbatch-width8")
    assert json.loads(f.read_text()) == row
    assert row["n_images"] == 20 and row["label_bytes"] == 0 and row["epochs"] == cfg.validate.epochs
    assert row["steps"] == cfg.validate.epochs * 3  # 20 images in batches of 8
    assert hard_label(cfg, mode) == row  # finished: reused, not retrained
    again = hard_label(cfg, mode, force=True)
    assert again["top1"] == row["top1"] and again["fingerprint"] == row["fingerprint"]  # seeded: the same student
    real = hard_label(cfg, REAL_TRAIN)
    assert real["n_images"] == 2000 and real["image_bytes"] == 2000 * 28 * 28 and real["steps"] == 250
    assert real["top1"] > 0.2  # 10 classes: well above chance after one epoch on 2,000 images
    other = dataclasses.replace(cfg, validate=dataclasses.replace(cfg.validate, lr=0.01))
    with pytest.raises(StaleStageError, match="other settings"):
        hard_label(other, mode)
    more = dataclasses.replace(cfg, hard_label=dataclasses.replace(cfg.hard_label, real_epochs=2))
    with pytest.raises(StaleStageError):
        hard_label(more, REAL_TRAIN)
    assert hard_label(more, mode) == again  # real_epochs does not concern the distilled images


@needs_fmnist
def test_main_job_switch_cli_verb_and_leaderboard_hlr(own_run, capsys):
    cfg = dataclasses.replace(own_run, hard_label=dataclasses.replace(own_run.hard_label, enabled=True))
    res = run(cfg)  # every stage is done: only the hard-label rows are new
    names = [h["images"] for h in res["hard_label"]]
    assert names == [*cfg.recover.modes, REAL_TRAIN]
    tops = {h["images"]: h["top1"] for h in res["hard_label"]}
    table = leaderboard([cfg.run_path])
    mode = cfg.recover.modes[0]
    soft = next(r for r in table if r["images"] == mode and r["kind"] == "main")
    assert soft["hlr"] == pytest.approx(tops[REAL_TRAIN] - tops[mode]) and soft["hlr_n"] == 1
    hard_stage = next(s for s in plan_run(cfg)["stages"] if s["stage"] == "hard-label")
    assert hard_stage["done"] and "real-train 1 epochs" in hard_stage["work"]
    assert hard_stage["steps"] == 2 * cfg.validate.epochs * 3 + 250  # two modes of 20 images, 2,000 real images
    dump_config(cfg, cfg.run_path / "c.yaml")
    capsys.readouterr()
    assert cli.main(["hard-label", str(cfg.run_path / "c.yaml"), "--mode", mode, "--no-real"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{mode}: hard-label top-1 {100 * tops[mode]:.2f} %") and REAL_TRAIN not in out


@needs_fmnist
def test_every_student_gets_its_own_baselines(own_run):
    """validate.students [A, B] with hard_label.enabled: one row per (student, images), each trained with that
    student (so HLR compares like with like), and the plan counts both students' runs."""
    from labeldistill.config import ModelConfig
    from labeldistill.pipeline import hard_label_rows

    mlp = ModelConfig(name="mlp", args={"hidden": 16})
    cfg = dataclasses.replace(own_run, hard_label=dataclasses.replace(own_run.hard_label, enabled=True, real=False),
                              validate=dataclasses.replace(own_run.validate, students=[own_run.validate.model, mlp]))
    rows = hard_label_rows(cfg)
    assert [(r["student"], r["images"]) for r in rows] == \
        [(s, m) for s in ("convnet", "mlp") for m in cfg.recover.modes]
    assert rows[0]["student_args"] == dict(own_run.validate.model.args) and rows[-1]["student_args"] == {"hidden": 16}
    layout = RunLayout(cfg.run_path)
    assert all(layout.hard_label_file(m, t).is_file() for m in cfg.recover.modes
               for t in ("convnet-depth3-normbatch-width8", "mlp-hidden16"))
    stage = next(s for s in plan_run(cfg)["stages"] if s["stage"] == "hard-label")
    assert stage["done"] and "for each of 2 students" in stage["work"]
    assert stage["steps"] == 2 * len(cfg.recover.modes) * cfg.validate.epochs * 3  # 20 images in batches of 8


def test_real_train_fingerprint_depends_on_the_holdout():
    """The real-train baseline trains on the train split less data.holdout: changing it must make the row stale."""
    from labeldistill.config import load_config
    from labeldistill.provenance import fingerprint
    from labeldistill.main_stages import hard_label_settings

    demo = REPO / "configs" / "fmnist_demo.yaml"
    a, b = load_config(demo), load_config(demo, ["data.holdout=1000"])
    assert fingerprint(hard_label_settings(a, REAL_TRAIN)) != fingerprint(hard_label_settings(b, REAL_TRAIN))
    assert fingerprint(hard_label_settings(a, "lpld")) != fingerprint(hard_label_settings(b, "lpld"))
