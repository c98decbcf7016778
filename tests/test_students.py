"""validate.students: several student architectures on the same images and label stores (issue #12 item 6)."""

from __future__ import annotations

import json

import pytest
from conftest import needs_fmnist
from test_provenance import DEMO, MICRO, _cli

from labeldistill.config import load_config, student_specs
from labeldistill.errors import ConfigError
from labeldistill.layout import LabelVariant
from labeldistill.provenance import StageRef, fingerprint, model_tag
from labeldistill.main_stages import stage_settings

pytestmark = needs_fmnist
A = "{name: convnet, args: {width: 4, depth: 3, norm: batch}}"  # = validate.model of MICRO
B = "{name: mlp, args: {hidden: 16}}"


def _rows(run_dir) -> list[dict]:
    return json.loads((run_dir / "results.json").read_text())["rows"]


@pytest.fixture(scope="module")
def one_then_two(tmp_path_factory):
    """A run with validate.model = A only, then the same run directory with students [A, B]."""
    run_dir = tmp_path_factory.mktemp("students")
    assert _cli_ok("run", DEMO, *MICRO, f"run_dir={run_dir}")
    ledger = json.loads((run_dir / "stages.json").read_text())
    assert _cli_ok("run", DEMO, *MICRO, f"run_dir={run_dir}", f"validate.students=[{A}, {B}]")
    return run_dir, ledger


def _cli_ok(*argv: str) -> bool:
    from labeldistill import cli
    return cli.main(list(argv)) == 0


def test_every_student_gets_its_own_rows(one_then_two):
    run_dir, _ = one_then_two
    rows = _rows(run_dir)
    got = sorted((r["student"], json.dumps(r["student_args"], sort_keys=True), r["prune_factor"]) for r in rows)
    assert got == [("convnet", '{"depth": 3, "norm": "batch", "width": 4}', 1),
                   ("convnet", '{"depth": 3, "norm": "batch", "width": 4}', 2),
                   ("mlp", '{"hidden": 16}', 1), ("mlp", '{"hidden": 16}', 2)]
    files = sorted(str(p.relative_to(run_dir / "validate")) for p in (run_dir / "validate").glob("*/*.json"))
    assert files == ["convnet-depth3-normbatch-width4/random_real_x1.json",
                     "convnet-depth3-normbatch-width4/random_real_x2.json",
                     "mlp-hidden16/random_real_x1.json", "mlp-hidden16/random_real_x2.json"]
    assert len({r["fingerprint"] for r in rows}) == 4  # per student and factor: no two rows share one


def test_adding_a_student_keeps_the_finished_one_fresh(one_then_two):
    run_dir, before = one_then_two
    after = json.loads((run_dir / "stages.json").read_text())
    for key, rec in before.items():  # nothing recomputed: same fingerprint, same finishing time
        assert after[key]["fingerprint"] == rec["fingerprint"] and after[key]["finished"] == rec["finished"], key
    new = sorted(set(after) - set(before))
    assert new == ["validate[random_real x1 mlp-hidden16]", "validate[random_real x2 mlp-hidden16]"]


def test_each_student_is_fingerprinted_as_if_alone():
    both = load_config(DEMO, MICRO + [f"validate.students=[{A}, {B}]"])
    v = LabelVariant(2.0)
    for spec in student_specs(both.validate):
        alone = load_config(DEMO, MICRO + [f"validate.model={{name: {spec.name}, args: {json.dumps(spec.args)}}}"])
        ref = StageRef("validate", "random_real", v, model_tag(spec))
        assert fingerprint(stage_settings(both, ref)) == fingerprint(stage_settings(alone, ref))
    ref_a, ref_b = (StageRef("validate", "random_real", v, model_tag(s)) for s in student_specs(both.validate))
    assert fingerprint(stage_settings(both, ref_a)) != fingerprint(stage_settings(both, ref_b))


def test_report_and_table_name_each_student_with_its_args(one_then_two, capsys):
    run_dir, _ = one_then_two
    code, _, err = _cli(capsys, "report", DEMO, *MICRO, f"run_dir={run_dir}", f"validate.students=[{A}, {B}]")
    assert code == 0, err
    text = (run_dir / "report.md").read_text()
    assert "convnet(width=4, depth=3, norm=batch)" in text and "mlp(hidden=16)" in text, text


def test_dry_run_lists_the_students(one_then_two, capsys):
    run_dir, _ = one_then_two
    c = "{name: convnet, args: {width: 5}}"
    code, out, err = _cli(capsys, "run", DEMO, *MICRO, f"run_dir={run_dir}", f"validate.students=[{A}, {B}, {c}]",
                          "--dry-run", "--no-probe")
    assert code == 0, err
    assert "students: convnet {'width': 4, 'depth': 3, 'norm': 'batch'}" in out and "mlp {'hidden': 16}" in out, out
    assert "→ validate/convnet-width5/" in out
    assert "validate [to do]" in out and "6 student run(s)" in out, out


def test_unknown_student_is_refused_before_any_work(tmp_path, capsys):
    code, _, err = _cli(capsys, "run", DEMO, *MICRO, f"run_dir={tmp_path / 'x'}",
                        f"validate.students=[{A}, {{name: 'timm:mobilenetv3_smal_050'}}]")
    assert code == 2 and "validate.students[1]" in err and "mobilenetv3_small_050" in err, err
    assert not (tmp_path / "x" / "teacher").exists()


def test_repeated_or_malformed_student_is_a_config_error():
    with pytest.raises(ConfigError, match=r"validate.students\[1\] repeats validate.students\[0\]"):
        load_config(DEMO, MICRO + [f"validate.students=[{A}, {A}]"])
    with pytest.raises(ConfigError, match=r"validate.students\[0\] must be a model name"):
        load_config(DEMO, MICRO + ["validate.students=[{nam: convnet}]"])
    assert [s.name for s in student_specs(load_config(DEMO, MICRO).validate)] == ["convnet"]
    assert [s.name for s in student_specs(load_config(DEMO, MICRO + ["validate.students=[lenet]"]).validate)] \
        == ["lenet"]


def test_validate_verb_trains_every_student(one_then_two, capsys):
    run_dir, _ = one_then_two
    c = "{name: convnet, args: {width: 3}}"
    code, out, err = _cli(capsys, "validate", DEMO, *MICRO, f"run_dir={run_dir}", f"validate.students=[{A}, {B}, {c}]",
                          "--factor", "2")
    assert code == 0, err
    assert out.count("top-1") == 3 and "mlp {'hidden': 16}" in out and "{'width': 3}" in out, out
    assert (run_dir / "validate" / "convnet-width3" / "random_real_x2.json").is_file()
