"""LPQLD's calibration (validate.calibration) and label sources stored / generator / online (issue #15 items 2, 3)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from labeldistill import cli
from labeldistill.config import load_config
from labeldistill.errors import ConfigError
from labeldistill.labels.calibration import calibrated_kl, search_student_temperature, teacher_temperature
from labeldistill.labels.store import StepRecord
from labeldistill.layout import LabelVariant
from labeldistill.leaderboard import format_leaderboard, leaderboard
from labeldistill.provenance import StageRef, as_version1, fingerprint
from labeldistill.main_stages import stage_settings
from labeldistill.validate import LabelFeed

from conftest import REPO, needs_fmnist
from test_provenance import MICRO

DEMO = str(REPO / "configs" / "fmnist_demo.yaml")


def _softmax(row: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def test_lpqld_teacher_temperature_steps_down_to_its_floor():
    # the reproduction script's setting: T = 20, step 30, gamma 0.7, floor 2; epochs counted from 1
    got = [teacher_temperature(e, 20.0, 30, 0.7, 2.0) for e in (1, 29, 30, 59, 60, 300)]
    assert got == pytest.approx([20.0, 20.0, 14.0, 14.0, 9.8, 2.0])
    vc = load_config(DEMO, ["validate.calibration=lpqld", "validate.temperature=20"]).validate
    feed = LabelFeed(vc)
    assert feed.temperature(28) == 20.0 and feed.temperature(29) == pytest.approx(14.0)  # 0-based epoch 29 = 30th
    assert LabelFeed(load_config(DEMO).validate).temperature(299) == 4.0  # no calibration: fixed


def test_lpqld_missing_logits_get_zero_and_the_kept_ones_are_renormalised():
    # MR-k: softmax over the k stored logits at T, 0 for every class not stored
    rec = StepRecord(0, torch.tensor([0]), torch.zeros(1, 4), torch.zeros(1, dtype=torch.bool), None,
                     torch.tensor([[3.0, 1.0]], dtype=torch.float16), topk_indices=torch.tensor([[2, 0]]))
    p = rec.soft_targets(4, 2.0)[0].tolist()
    a, b = _softmax([3.0, 1.0], 2.0)
    assert p == pytest.approx([b, 0.0, a, 0.0])


def test_lpqld_loss_uses_the_student_temperature_and_scales_by_the_teacher_one():
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
    p = torch.tensor([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0]])
    ts, tt = 0.5, 3.0
    want = sum(sum(pi * math.log(pi / qi) for pi, qi in zip(pr, _softmax(sr, ts)) if pi > 0)
               for pr, sr in zip(p.tolist(), s.tolist())) / 2
    assert calibrated_kl(s, p, ts, tt, t2_scale=False).item() == pytest.approx(want, rel=1e-5)
    assert calibrated_kl(s, p, ts, tt).item() == pytest.approx(want * 9, rel=1e-5)
    vc = SimpleNamespace(calibration="lpqld", lpqld_student_temperature=ts, temperature=3.0, lpqld_step=30,
                         lpqld_gamma=0.7, lpqld_min_temperature=2.0, t2_scale=True, lpqld_student_search=True)
    assert LabelFeed(vc).loss(s, p, None, 0).item() == pytest.approx(want * 9, rel=1e-5)


def test_lpqld_student_temperature_search_finds_the_temperature_of_the_targets():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(16, 10, generator=g) * 3
    for t in (0.37, 0.9):
        assert search_student_temperature(s, torch.softmax(s / t, 1)) == pytest.approx(t)
    vc = load_config(DEMO, ["validate.calibration=lpqld"]).validate
    feed = LabelFeed(vc)
    assert feed.student_temperature == 1.0
    feed.end_epoch(s, torch.softmax(s / 0.37, 1))
    assert feed.student_temperature == pytest.approx(0.37)


def test_defaults_keep_every_fingerprint():
    """Fingerprints computed before label sources and calibration existed (main at 7f71b0e), as fingerprint
    version 1 wrote them (``data.root`` instead of ``data.files``: old ledger entries are re-keyed through it)."""
    old = ["validate.weight_decay_1d=true", "validate.schedule=cosine_step"]  # the student recipe before #20
    c = load_config(DEMO, old)
    assert c.validate.label_source == "stored" and c.validate.calibration == "none"
    ref = StageRef("validate", "lpld", LabelVariant(10.0), "convnet-width32")
    assert fingerprint(as_version1(stage_settings(c, ref), None)) == "a130f52c31df1e6f"
    new = load_config(DEMO)  # the new recipe defaults: rows made before them are stale
    assert fingerprint(as_version1(stage_settings(new, ref), None)) != "a130f52c31df1e6f"
    assert fingerprint(as_version1(stage_settings(c, StageRef("relabel", "lpld")), None)) == "70c29f9a4d60b317"
    on = load_config(DEMO, ["validate.calibration=lpqld", *old])
    assert fingerprint(as_version1(stage_settings(on, ref), None)) != "a130f52c31df1e6f"


@pytest.mark.parametrize("bad, key", [("validate.label_source=teacher", "validate.label_source"),
                                      ("validate.calibration=hinton", "validate.calibration"),
                                      ("validate.lpqld_gamma=0", "validate.lpqld_gamma"),
                                      ("generator.epochs=0", "generator.epochs")])
def test_config_refuses_bad_source_settings(bad, key):
    with pytest.raises(ConfigError, match=key):
        load_config(DEMO, [bad])
    with pytest.raises(ConfigError, match="loss: kl"):
        load_config(DEMO, ["validate.calibration=lpqld", "validate.loss=gift"])


GEN = ["generator.epochs=6", "generator.checkpoint_seconds=0", "prune.factors=[1]"]


@pytest.fixture(scope="module")
def gen_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("gen")
    assert cli.main(["run", DEMO, *MICRO, *GEN, f"run_dir={run_dir}", "validate.label_source=generator"]) == 0
    return run_dir


@needs_fmnist
def test_generator_bytes_are_its_file_and_its_loss_falls(gen_run):
    g = gen_run / "labels" / "random_real" / "generator"
    info = json.loads((g / "generator.json").read_text())
    size = (g / "model.safetensors").stat().st_size
    assert info["weights_bytes"] == size
    assert len(info["losses"]) == 6 and info["losses"][-1] < 0.8 * info["losses"][0], info["losses"]
    row = json.loads((gen_run / "results.json").read_text())["rows"][0]
    assert row["label_source"] == "generator" and row["label_bytes"] == size
    assert row["label_model"] == "labels/random_real/generator/model.safetensors"
    ledger = json.loads((gen_run / "stages.json").read_text())
    assert "generator[random_real]" in ledger and "validate[random_real x1 convnet-depth3-normbatch-width4 " \
        "labels=generator]" in ledger


@needs_fmnist
def test_online_and_stored_rows_sit_beside_the_generator_row_with_their_sources(gen_run):
    base = ["run", DEMO, *MICRO, *GEN, f"run_dir={gen_run}"]
    assert cli.main([*base, "validate.label_source=online"]) == 0
    assert cli.main(base) == 0
    files = sorted(p.name for p in (gen_run / "validate").glob("*/*.json"))
    assert files == ["random_real_x1-labels_generator.json", "random_real_x1-labels_online.json",
                     "random_real_x1.json"]
    rows = {json.loads(p.read_text())["label_source"]: json.loads(p.read_text())
            for p in (gen_run / "validate").glob("*/*.json")}
    assert cli.main([*base, "validate.label_source=online", "validate.calibration=lpqld"]) == 0  # a 4th result
    assert json.loads((gen_run / "validate" / "convnet-depth3-normbatch-width4" /
                       "random_real_x1-labels_online+lpqld.json").read_text())["calibration"] == "lpqld"
    assert rows["online"]["label_bytes"] == (gen_run / "teacher" / "model.safetensors").stat().st_size
    assert rows["stored"]["label_bytes"] == sum(
        p.stat().st_size for p in (gen_run / "labels" / "random_real" / "x1").iterdir() if p.is_file())
    assert cli.main(["report", DEMO, *MICRO, *GEN, f"run_dir={gen_run}"]) == 0  # all three rows are current
    results = json.loads((gen_run / "results.json").read_text())
    assert sorted(r["label_source"] for r in results["rows"]) == ["generator", "online", "online", "stored"]
    report = (gen_run / "report.md").read_text()
    assert "| online model |" in report and "| generator model |" in report and "| fp16 |" in report
    assert "| online model + lpqld |" in report and not results["stale"]
    table = leaderboard([gen_run])
    by = {r["labels"]: r for r in table}
    assert "online model (x1 random, lpqld calibration)" in by
    assert by["online model (x1 random)"]["label_bytes"] == rows["online"]["label_bytes"]
    assert by["generator model (x1 random)"]["label_bytes"] == rows["generator"]["label_bytes"]
    assert by["x1 random"]["codec"] == "fp16" and by["online model (x1 random)"]["codec"] == "float32 weights"
    assert "generator model (x1 random)" in format_leaderboard(table)


@needs_fmnist
def test_validate_refuses_a_generator_made_with_other_settings(gen_run, capsys):
    """The validate verb (which does not retrain the generator) must not score a generator made with other
    settings under the current ones: one line naming the generator stage and the changed key, exit 2."""
    out = gen_run / "validate" / "convnet-depth3-normbatch-width4" / "random_real_x1-labels_generator.json"
    before = out.read_bytes()
    capsys.readouterr()
    code = cli.main(["validate", DEMO, *MICRO, *GEN, "generator.epochs=7", f"run_dir={gen_run}",
                     "validate.label_source=generator", "--force"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "generator[random_real]" in err and "generator.epochs" in err, err
    assert out.read_bytes() == before  # the finished row is untouched


@needs_fmnist
def test_generator_resumes_after_a_kill_with_the_same_weights(gen_run, tmp_path):
    run_dir = tmp_path / "r"
    shutil.copytree(gen_run, run_dir)
    shutil.rmtree(run_dir / "labels" / "random_real" / "generator")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1",
           "LABELDISTILL_KILL_AT": "generator-epoch:3"}
    argv = ["generator", DEMO, *MICRO, *GEN, f"run_dir={run_dir}", "validate.label_source=generator", "--force"]
    killed = subprocess.run([sys.executable, "-m", "labeldistill.cli", *argv], env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert (run_dir / "labels" / "random_real" / ".generator.resume.pt").is_file()
    assert not (run_dir / "labels" / "random_real" / "generator" / "generator.json").exists()
    assert cli.main(argv) == 0  # the resume in this process: only the killed run needs one of its own
    new = run_dir / "labels" / "random_real" / "generator"
    old = gen_run / "labels" / "random_real" / "generator"
    assert (new / "model.safetensors").read_bytes() == (old / "model.safetensors").read_bytes()
    assert json.loads((new / "generator.json").read_text())["losses"] == \
        json.loads((old / "generator.json").read_text())["losses"]
    assert not (run_dir / "labels" / "random_real" / ".generator.resume.pt").exists()


@needs_fmnist
def test_lpqld_calibration_end_to_end_records_its_settings(tmp_path):
    run_dir = tmp_path / "r"
    args = ["run", DEMO, *MICRO, "prune.factors=[2]", "prune.logits=[top3]", f"run_dir={run_dir}",
            "validate.calibration=lpqld", "validate.lpqld_step=1"]
    assert cli.main(args) == 0
    row = json.loads((run_dir / "results.json").read_text())["rows"][0]
    assert row["calibration"] == "lpqld" and row["lpqld_step"] == 1 and row["logits"] == "top3"
    assert row["student_temperature"] in [round(0.01 * i, 2) for i in range(1, 101)]
