"""Nothing stale, nothing silent: a changed setting never returns old results, CLI flags do what they say,
results carry their provenance, and seeds are a first-class axis (issue #11)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from labeldistill import cli
from labeldistill.data.synthetic import image_bytes

from conftest import REPO, needs_fmnist

pytestmark = needs_fmnist
DEMO = str(REPO / "configs" / "fmnist_demo.yaml")
MICRO = ["data.train_subset=300", "data.test_subset=200", "squeeze.epochs=1", "squeeze.model.args.width=8",
         "squeeze.batch_size=100", "class_stats.batch_size=300", "recover.modes=[random_real]", "recover.ipc=1",
         "relabel.epochs=2", "relabel.batch_size=5", "prune.factors=[1, 2]", "validate.model.args.width=4",
         "validate.epochs=2", "threads=1"]


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    errors = [ln.split("\r")[-1] for ln in err.splitlines() if "labeldistill: error:" in ln]
    return code, out, "\n".join(errors)


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("micro")
    assert cli.main(["run", DEMO, *MICRO, f"run_dir={run_dir}"]) == 0
    return run_dir


@pytest.mark.parametrize("change, key", [("recover.ipc=2", "recover.ipc"), ("seed=1", "seed"),
                                         ("relabel.epochs=3", "relabel.epochs"), ("squeeze.epochs=2", "squeeze.epochs")])
def test_a_changed_setting_is_refused_and_config_yaml_is_untouched(micro_run, capsys, change, key):
    before = (micro_run / "config.yaml").read_text()
    results = (micro_run / "results.json").read_text()
    code, out, err = _cli(capsys, "run", DEMO, *MICRO, f"run_dir={micro_run}", change)
    assert code == 2 and key in err and "--force" in err and "run_dir" in err, err
    assert "| random_real |" not in out  # no old table printed
    assert (micro_run / "config.yaml").read_text() == before and (micro_run / "results.json").read_text() == results


def test_dry_run_names_stale_stages(micro_run, capsys):
    code, out, _ = _cli(capsys, "run", DEMO, *MICRO, f"run_dir={micro_run}", "relabel.epochs=3", "--dry-run", "--no-probe")
    assert code == 0
    assert "squeeze [done]" in out and "relabel[random_real] [stale (relabel.epochs: 2 → 3)]" in out, out
    assert "[to do]" not in out


def test_force_recomputes_the_stale_stages_and_rewrites_config(tmp_path, capsys):
    run_dir = tmp_path / "r"
    assert cli.main(["run", DEMO, *MICRO, f"run_dir={run_dir}"]) == 0
    teacher = (run_dir / "teacher" / "model.safetensors").read_bytes()
    code, _, err = _cli(capsys, "run", DEMO, *MICRO, f"run_dir={run_dir}", "recover.ipc=2", "--force")
    assert code == 0, err
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["recover"]["ipc"] == 2
    rows = json.loads((run_dir / "results.json").read_text())["rows"]
    assert {r["ipc"] for r in rows} == {2} and all(r["kept_steps"] > 0 for r in rows)
    assert (run_dir / "teacher" / "model.safetensors").read_bytes() == teacher  # upstream, not stale: kept
    ledger = json.loads((run_dir / "stages.json").read_text())
    assert ledger["recover[random_real]"]["settings"]["recover.ipc"] == 2


def test_two_students_coexist_and_rows_name_them(micro_run, capsys):
    code, out, err = _cli(capsys, "run", DEMO, *MICRO, f"run_dir={micro_run}", "validate.model.args.width=6")
    assert code == 0, err
    files = sorted(p.relative_to(micro_run / "validate").parts[0] for p in (micro_run / "validate").glob("*/*.json"))
    assert {f for f in files} == {"convnet-depth3-normbatch-width4", "convnet-depth3-normbatch-width6"}
    rows = json.loads((micro_run / "results.json").read_text())["rows"]
    assert {r["student_args"]["width"] for r in rows} == {6}
    assert "convnet(width=6, depth=3, norm=batch)" in out
    # report (built from the validate rows) shows both students
    code, out, err = _cli(capsys, "report", DEMO, *MICRO, f"run_dir={micro_run}")
    assert code == 0, err
    text = (micro_run / "report.md").read_text()
    assert "width=4" in text and "width=6" in text


def test_factor_flag_prunes_and_validates_exactly_that_factor(micro_run, capsys):
    code, out, err = _cli(capsys, "prune", DEMO, *MICRO, f"run_dir={micro_run}", "--factor", "2.5")
    assert code == 0, err
    assert out.split() == [str(micro_run / "labels" / "random_real" / "x2.5")]
    code, out, err = _cli(capsys, "validate", DEMO, *MICRO, f"run_dir={micro_run}", "--factor", "2.5")
    assert code == 0 and "x2.5" in out and out.count("top-1") == 1, (out, err)
    for bad in ("0.5", "nan"):
        code, _, err = _cli(capsys, "prune", DEMO, *MICRO, f"run_dir={micro_run}", "--factor", bad)
        assert code == 2 and "--factor must be a number >= 1" in err
    code, _, err = _cli(capsys, "prune", DEMO, *MICRO, f"run_dir={micro_run}", "--mode", "srel2")
    assert code == 2 and "unknown recover mode 'srel2'" in err


def test_results_carry_provenance(micro_run):
    res = json.loads((micro_run / "results.json").read_text())
    prov = res["provenance"]
    assert prov["torch"] and prov["device"] == "cpu" and prov["torch_threads"] == 1
    assert prov["commit"] == "not a git checkout" or len(prov["commit"].split("+")[0]) >= 7
    assert set(prov["stage_seconds"]) >= {"squeeze", "recover[random_real]", "relabel[random_real]",
                                          "prune[random_real x2]"}
    assert "class-stats" not in prov["stage_seconds"]  # no mode optimises images: no class statistics
    assert all(r["fingerprint"] and r["seed"] == 0 for r in res["rows"])


def test_bad_student_name_fails_the_dry_run_with_close_matches(capsys, tmp_path):
    code, _, err = _cli(capsys, "run", DEMO, *MICRO, f"run_dir={tmp_path}", "validate.model.name=convnt", "--dry-run", "--no-probe")
    assert code == 2 and "validate.model" in err and "did you mean: convnet" in err, err
    code, _, err = _cli(capsys, "run", DEMO, *MICRO, f"run_dir={tmp_path / 'x'}", "validate.model.name=convnt")
    assert code == 2 and not (tmp_path / "x" / "teacher").exists()  # refused before squeeze


def test_bad_dataset_name_fails_the_dry_run_with_close_matches(capsys, tmp_path):
    code, _, err = _cli(capsys, "run", DEMO, *MICRO, f"run_dir={tmp_path}", "data.dataset=fashion-mnsit", "--dry-run", "--no-probe")
    assert code == 2 and "unknown dataset 'fashion-mnsit'; did you mean: fashion-mnist" in err, err


def test_stage_by_stage_errors_name_the_missing_stage_and_report_works(tmp_path, capsys):
    args = [DEMO, *MICRO, f"run_dir={tmp_path}"]
    assert _cli(capsys, "squeeze", *args)[0] == 0
    code, _, err = _cli(capsys, "prune", *args)
    assert code == 2 and "run 'labeldistill relabel CONFIG' first" in err, err
    for stage in ("class-stats", "recover", "relabel", "prune", "validate"):
        assert _cli(capsys, stage, *args)[0] == 0, stage
    code, out, err = _cli(capsys, "report", *args)
    assert code == 0 and (tmp_path / "report.md").is_file(), err
    assert json.loads((tmp_path / "results.json").read_text())["rows"]


def test_image_bytes_count_every_image_format(tmp_path):
    for i, fmt in enumerate(("png", "jpg", "webp")):
        d = tmp_path / f"c{i}"
        d.mkdir()
        Image.new("RGB", (16, 16), (i * 40, 10, 200)).save(d / f"0.{fmt}")
    (tmp_path / "class_to_idx.json").write_text("{}")
    expected = sum(p.stat().st_size for p in tmp_path.rglob("*.*") if p.suffix != ".json")
    assert image_bytes(tmp_path) == expected and expected > 0


def test_seeds_give_mean_and_std_rows(tmp_path, capsys):
    code, out, err = _cli(capsys, "run", DEMO, *MICRO, f"run_dir={tmp_path}", "seeds=[0, 1]", "prune.factors=[2]")
    assert code == 0, err
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["seeds"] == [0, 1] and len(res["rows"]) == 2 and {r["seed"] for r in res["rows"]} == {0, 1}
    (row,) = res["summary"]
    tops = [r["top1"] for r in res["rows"]]
    assert row["n"] == 2 and row["top1_mean"] == pytest.approx(sum(tops) / 2)
    assert row["top1_std"] == pytest.approx(abs(tops[0] - tops[1]) / 2)
    assert (tmp_path / "seed0" / "teacher").is_dir() and (tmp_path / "seed1" / "teacher").is_dir()
    assert "±" in (tmp_path / "report.md").read_text() and "Per seed" in out
    assert Path(tmp_path / "plots" / "accuracy_vs_bytes.png").stat().st_size > 1000
