"""The stage runner (issue 21): nothing is reused without a record, the dry run and the job walk the same units,
the data enters fingerprints by identity, old ledgers are re-keyed, and a new stage needs no edit elsewhere."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from labeldistill import cli
from labeldistill.config import load_config
from labeldistill.data import data_identity
from labeldistill.data.idx import FASHION_MNIST_DEFAULT_ROOT
from labeldistill.errors import StaleStageError
from labeldistill.io import atomic_write_json, read_json
from labeldistill.layout import RunLayout
from labeldistill.main_stages import SQUEEZE
from labeldistill.provenance import FINGERPRINT_VERSION, StageRef, as_version1, fingerprint
from labeldistill.resume import load_checkpoint, save_checkpoint
from labeldistill.runner import Stage, run_unit, unit_status

from conftest import REPO, needs_fmnist

DEMO = str(REPO / "configs" / "fmnist_demo.yaml")
MICRO = ["data.train_subset=300", "data.test_subset=200", "squeeze.epochs=1", "squeeze.model.args.width=8",
         "squeeze.batch_size=100", "recover.modes=[random_real]", "recover.ipc=1", "relabel.epochs=2",
         "relabel.batch_size=5", "prune.factors=[1]", "validate.model.args.width=4", "validate.epochs=2",
         "threads=1", "generator.epochs=2", "generator.checkpoint_seconds=0"]
SRC = REPO / "src" / "labeldistill"


def _plan(capsys, *argv: str) -> dict[str, str]:
    """Stage name → status of ``run --dry-run`` (no time probe)."""
    capsys.readouterr()
    assert cli.main(["run", DEMO, *MICRO, *argv, "--dry-run", "--json", "--no-probe"]) == 0
    return {s["stage"]: s["status"] for s in json.loads(capsys.readouterr().out)["stages"]}


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runner")
    assert cli.main(["run", DEMO, *MICRO, f"run_dir={run_dir}", f"data.root={FASHION_MNIST_DEFAULT_ROOT}"]) == 0
    return run_dir


@needs_fmnist
def test_the_data_enters_by_identity_not_by_folder(micro_run, capsys, tmp_path):
    # made with data.root given (as `make demo` does); planned without it: the same files, every stage done
    plan = _plan(capsys, f"run_dir={micro_run}")
    assert set(plan.values()) == {"done"}, plan
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in Path(FASHION_MNIST_DEFAULT_ROOT).iterdir():
        (moved / f.name).symlink_to(f)
    assert set(_plan(capsys, f"run_dir={micro_run}", f"data.root={moved}").values()) == {"done"}
    (moved / "extra.txt").write_text("another file")  # other files: every stage stale, naming data.files
    plan = _plan(capsys, f"run_dir={micro_run}", f"data.root={moved}")
    assert plan["squeeze"].startswith("stale (data.files: ") and plan["validate"].startswith("stale"), plan
    assert data_identity("fashion-mnist", None) == data_identity("fashion-mnist", FASHION_MNIST_DEFAULT_ROOT)


@needs_fmnist
def test_an_unrecorded_output_is_refused_and_recomputed_under_force(micro_run, capsys):
    ledger = read_json(micro_run / "stages.json")
    key = "validate[random_real x1 convnet-depth3-normbatch-width4]"
    atomic_write_json(micro_run / "stages.json", {k: v for k, v in ledger.items() if k != key})
    assert "not recorded" in _plan(capsys, f"run_dir={micro_run}")["validate"]
    assert cli.main(["run", DEMO, *MICRO, f"run_dir={micro_run}"]) == 2
    err = capsys.readouterr().err
    assert key in err and "does not record" in err and "--force" in err, err
    assert cli.main(["run", DEMO, *MICRO, f"run_dir={micro_run}", "--force"]) == 0
    after = read_json(micro_run / "stages.json")
    assert key in after and after["squeeze"] == ledger["squeeze"]  # only the unrecorded unit was recomputed
    row = read_json(micro_run / "results.json")["rows"][0]
    assert row["stage"] == key and row["fingerprint"] == after[key]["fingerprint"]
    assert row["fingerprint_version"] == FINGERPRINT_VERSION


@needs_fmnist
def test_validate_of_online_and_generator_labels_is_done_after_their_run(micro_run, capsys):
    for source in ("online", "generator"):
        assert _plan(capsys, f"run_dir={micro_run}", f"validate.label_source={source}")["validate"] == "to do"
        assert cli.main(["run", DEMO, *MICRO, f"run_dir={micro_run}", f"validate.label_source={source}"]) == 0
        plan = _plan(capsys, f"run_dir={micro_run}", f"validate.label_source={source}")
        assert set(plan.values()) == {"done"}, plan
    assert "generator[random_real]" in plan
    assert cli.main(["report", DEMO, *MICRO, f"run_dir={micro_run}"]) == 0  # rows of every source: current
    results = read_json(micro_run / "results.json")
    assert sorted(r["label_source"] for r in results["rows"]) == ["generator", "online", "stored"]
    assert not results["stale"]


@needs_fmnist
def test_a_version_1_ledger_is_re_keyed_when_nothing_that_matters_changed(micro_run, capsys):
    ledger = read_json(micro_run / "stages.json")
    old = {}
    for key, rec in ledger.items():  # as version 1 wrote it for `make demo` (data.root named)
        settings = as_version1(rec["settings"], FASHION_MNIST_DEFAULT_ROOT)
        old[key] = {"fingerprint": fingerprint(settings), "settings": settings, "seconds": rec["seconds"]}
    atomic_write_json(micro_run / "stages.json", old)
    assert set(_plan(capsys, f"run_dir={micro_run}").values()) == {"done"}  # the dry run writes nothing
    assert read_json(micro_run / "stages.json") == old
    assert cli.main(["run", DEMO, *MICRO, f"run_dir={micro_run}"]) == 0
    rekeyed = read_json(micro_run / "stages.json")
    assert rekeyed["squeeze"]["version"] == FINGERPRINT_VERSION
    assert rekeyed["squeeze"]["fingerprint"] == ledger["squeeze"]["fingerprint"]
    old["squeeze"]["settings"]["squeeze.epochs"] = 5  # an old record of other settings stays stale
    old["squeeze"]["fingerprint"] = fingerprint(old["squeeze"]["settings"])
    atomic_write_json(micro_run / "stages.json", old)
    assert _plan(capsys, f"run_dir={micro_run}")["squeeze"] == "stale (squeeze.epochs: 5 → 1)"
    atomic_write_json(micro_run / "stages.json", rekeyed)  # as the run left it, for the next test


def test_a_stage_declared_in_a_test_runs_resumes_and_is_refused_when_stale(tmp_path):
    """No edit to provenance, pipeline, plan or report: the toy stage is one declaration and a work function."""
    calls, crash = [], [True]
    size = {"n": 3}
    toy = Stage("toy", upstream=SQUEEZE, own=lambda cfg, ref: {"toy.size": size["n"]},
                marker=lambda cfg, ref, lay: lay.root / "toy" / "toy.json",
                units=lambda cfg: [StageRef("toy", m) for m in cfg.recover.modes])
    cfg = load_config(DEMO, [f"run_dir={tmp_path}", "data.dataset=digits", "recover.modes=[random_real]"])
    ref = toy.units(cfg)[0]
    ckpt = tmp_path / "toy" / ".resume.pt"

    def work():
        state = load_checkpoint(ckpt, toy.resume_key(cfg, ref)) or {"done": 0}
        for i in range(state["done"], size["n"]):
            calls.append(i)
            save_checkpoint(ckpt, toy.resume_key(cfg, ref), {"done": i + 1})
            if crash[0] and i == 1:
                crash[0] = False
                raise KeyboardInterrupt  # interrupted after two of three parts
        atomic_write_json(tmp_path / "toy" / "toy.json", {"parts": size["n"]})
        return "made", 0.0

    with pytest.raises(KeyboardInterrupt):
        run_unit(toy, cfg, ref, work)
    assert unit_status(toy, cfg, ref) == "to do"
    assert run_unit(toy, cfg, ref, work) == "made" and calls == [0, 1, 2]  # resumed at the third part
    assert unit_status(toy, cfg, ref) == "done"
    assert run_unit(toy, cfg, ref, work, reuse=lambda: "reused") == "reused" and calls == [0, 1, 2]
    size["n"] = 4
    assert unit_status(toy, cfg, ref) == "stale (toy.size: 3 → 4)"
    with pytest.raises(StaleStageError, match=r"toy\[random_real\] .* \(toy.size: 3 → 4\); rerun with --force"):
        run_unit(toy, cfg, ref, work)
    assert load_checkpoint(ckpt, toy.resume_key(cfg, ref)) is None  # the resume key follows the fingerprint
    assert run_unit(toy, cfg, ref, work, force=True) == "made" and calls == [0, 1, 2, 0, 1, 2, 3]
    assert read_json(tmp_path / "stages.json")["toy[random_real]"]["settings"]["toy.size"] == 4


def test_the_ledger_is_written_by_one_function_only():
    """Only provenance.write_record names the ledger in a write; no other module spells its file name."""
    writers, spelled = set(), set()
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for call in [n for n in ast.walk(fn) if isinstance(n, ast.Call)]:
                text = ast.unparse(call)
                if "LEDGER" in text and any(w in text for w in ("write", "dump", "save", "open(")):
                    writers.add(f"{path.stem}.{fn.name}")
        spelled |= {path.stem for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value == "stages.json"}
    assert writers == {"provenance.write_record"}, writers
    assert spelled == {"provenance"}, spelled


@needs_fmnist
def test_a_stage_added_to_the_main_job_is_run_planned_and_refused_by_the_job(micro_run, capsys, monkeypatch):
    from labeldistill import main_stages
    from labeldistill.provenance import flat_settings

    toy = Stage("toy", upstream=main_stages.RELABEL, own=lambda cfg, ref: flat_settings("toy", {"seed2": cfg.seed}),
                marker=lambda cfg, ref, lay: lay.root / "toy" / f"{ref.mode}.json",
                units=lambda cfg: [StageRef("toy", m) for m in cfg.recover.modes])

    @toy.runs
    def _unit(cfg, ref, force):
        out = toy.marker(cfg, ref, RunLayout(cfg.run_path))
        return run_unit(toy, cfg, ref, lambda: (atomic_write_json(out, {"mode": ref.mode}), 0.0), force=force)

    monkeypatch.setattr(main_stages, "LATE", (*main_stages.LATE, toy))
    assert _plan(capsys, f"run_dir={micro_run}")["toy[random_real]"] == "to do"
    assert cli.main(["run", DEMO, *MICRO, f"run_dir={micro_run}"]) == 0
    assert (micro_run / "toy" / "random_real.json").is_file()
    assert _plan(capsys, f"run_dir={micro_run}")["toy[random_real]"] == "done"
    assert _plan(capsys, f"run_dir={micro_run}", "seed=1")["toy[random_real]"].startswith("stale (")
