"""The dry run's time estimate (``labeldistill run CONFIG --dry-run``; :mod:`labeldistill.plan.timing`)."""

from __future__ import annotations

import json
import time

import pytest

from conftest import REPO, TINY_OVERRIDES, needs_fmnist
from labeldistill.cli import main
from labeldistill.plan import timing

CONFIG = str(REPO / "configs" / "fmnist_demo.yaml")


@pytest.fixture
def quick_probe(monkeypatch, one_thread):
    """One warm-up and two timed calls per probe (the defaults keep timing for half a second)."""
    monkeypatch.setattr(timing, "MIN_SECONDS", 0.0)


def _dry_run(capsys, tmp_path, *flags: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    rc = main(["run", CONFIG, "--dry-run", *flags, *TINY_OVERRIDES, f"run_dir={tmp_path / 'run'}", "threads=1",
               "device=cpu"])
    wall = time.perf_counter() - t0
    assert rc == 0
    return capsys.readouterr().out, wall


@needs_fmnist
def test_json_has_positive_seconds_per_stage_and_their_sum(quick_probe, capsys, tmp_path):
    out, probe_wall = _dry_run(capsys, tmp_path, "--json")
    plan = json.loads(out)
    t = plan["time"]
    stages = plan["stages"]
    assert [s["stage"] for s in stages] == ["squeeze", "class-stats", "recover[sre2l]", "recover[lpld]",
                                           "relabel[sre2l]", "relabel[lpld]", "prune", "validate"]
    for s in stages:
        if s["steps"] or s["images"]:
            assert s["seconds"] > 0, s
    assert t["total_seconds"] == pytest.approx(sum(s["seconds"] for s in stages))
    assert t["device"] == "cpu" and t["threads"] == 1 and t["probe_seconds"] > 0
    assert all(v > 0 for v in t["rates"].values()) and "validate_step[convnet-depth3-normbatch-width8]" in t["rates"]
    assert sum(r["seconds"] for r in plan["validate"]) == pytest.approx(stages[-1]["seconds"], abs=1e-3 * len(plan["validate"]))
    # a stage's estimate is its planned work × the probed rate
    steps = next(s for s in stages if s["stage"] == "relabel[lpld]")
    assert steps["seconds"] == pytest.approx(steps["images"] * t["rates"]["relabel_image"], rel=1e-3, abs=6e-4)  # ms rounding

    out, wall = _dry_run(capsys, tmp_path, "--json", "--no-probe")
    plan = json.loads(out)
    assert "time" not in plan and not any("seconds" in s for s in plan["stages"])
    assert wall < probe_wall


@needs_fmnist
def test_text_shows_seconds_and_done_stages_count_zero(quick_probe, capsys, tmp_path):
    from labeldistill.config import load_config
    from labeldistill.squeeze import squeeze

    squeeze(load_config(CONFIG, TINY_OVERRIDES + [f"run_dir={tmp_path / 'run'}", "threads=1", "device=cpu"]))
    out, _ = _dry_run(capsys, tmp_path)
    assert "time estimate: " in out and " in all on cpu with 1 thread(s)" in out
    assert "  done, counted as 0 s: squeeze" in out
    squeeze_line = next(line for line in out.splitlines() if line.startswith("  squeeze [done]"))
    assert squeeze_line.endswith("— 0.0 s")
    relabel_line = next(line for line in out.splitlines() if line.startswith("  relabel[lpld] [to do]"))
    assert relabel_line.rsplit("— ", 1)[1].endswith(" s")
    out, _ = _dry_run(capsys, tmp_path, "--json")
    plan = json.loads(out)
    sq = plan["stages"][0]
    assert sq["seconds"] == 0 and sq["seconds_note"] == "done"
    assert plan["time"]["total_seconds"] == pytest.approx(sum(s["seconds"] for s in plan["stages"][1:]))
    assert "squeeze_step" not in plan["time"]["rates"]  # a done stage is not probed


def test_human_seconds():
    assert [timing.human_seconds(s) for s in (0.42, 12.4, 185, 7620, 4 * 86400)] == [
        "0.4 s", "12 s", "3 min 05 s", "2 h 07 min", "4.0 days"]
