"""bench/cross_arch.py writes its section from whatever rows exist: every student gets its column, missing cells
say so, and paired differences use the common seeds only."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bench import cross_arch


def _row(root: Path, cell: str, seed: int, label: str, mode: str, factor: int, top1: float) -> None:
    spec = cross_arch.STUDENTS[label]
    f = root / cell / f"seed{seed}" / "validate" / spec["name"].replace(":", "-") / f"{mode}_x{factor}.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({"student": spec["name"], "student_args": spec["args"], "recover": mode,
                             "prune_factor": factor, "seed": seed, "top1": top1}))


def _args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(runs=str(tmp_path / "runs"), seeds=[0, 1, 2], epochs={10: 60, 50: 20}, test_subset=2000,
                              xteacher_label="LeNet-5", budget_min=62.0, command="python -m bench.cross_arch",
                              out=str(tmp_path / "B.md"))


def test_section_from_partial_rows(tmp_path):
    args = _args(tmp_path)
    root = Path(args.runs)
    conv, resnet = "ConvNet-32", "ResNet-18 (small stem)"
    for s, (cs, rr) in enumerate([(0.80, 0.78), (0.82, 0.79), (0.81, 0.77)]):
        _row(root, "ipc10_own", s, conv, "cs", 1, cs)
        _row(root, "ipc10_own", s, conv, "random_real", 1, rr)
    _row(root, "ipc10_own", 0, resnet, "cs", 1, 0.70)  # one seed only
    _row(root, "ipc10_own", 1, resnet, "random_real", 1, 0.60)  # no common seed with the cs row
    cross_arch.write(args)
    text = Path(args.out).read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("| 10 | cs | own") and "| 1× |" in ln)
    cells = [c.strip() for c in line.split("|")[5:9]]
    assert cells == ["81.0 ± 0.8 (3)", "–", "–", "70.0 (1)"], cells
    comp = next(ln for ln in text.splitlines() if ln.startswith("| IPC 10: cs − random_real (own teacher) | 1×"))
    # differences 2, 3, 4 points: mean 3, t(0.975, 2) · 1 / √3 = 2.48
    assert "+3.0 [+0.5, +5.5] (n=3; held)" in comp and "0 paired seed(s): no interval" in comp, comp
    assert "ConvNet-32: 2/48 runs" not in text and "ConvNet-32: 6/48 runs (seeds 0, 1, 2)" in text
    assert "ResNet-18 (small stem): 2/48 runs (seeds 0, 1)" in text
    assert "<!-- cross_arch:start -->" in text and "Command: `python -m bench.cross_arch`" in text
    data = json.loads((tmp_path / "docs" / "results" / "cross_arch.json").read_text())  # the same rows as JSON
    assert data["section"] == "cross_arch" and data["command"] == "python -m bench.cross_arch"
    own = next(r for r in data["rows"] if r["setting"] == {"ipc": 10, "images": "cs", "labels_by": "own (ConvNet-64, "
                                                           "seed 0)", "factor": 1, "student": conv})
    assert own["values"] == pytest.approx([80, 82, 81]) and own["mean"] == pytest.approx(81)
    assert own["protocol"] == "labeldistill-validate (ConvNet-32 student, AdamW, 60 epochs)"
    d = next(r for r in data["rows"] if r["setting"] == {"comparison": "IPC 10: cs − random_real (own teacher)",
                                                         "factor": 1, "student": conv})
    assert d["values"] == pytest.approx([2, 3, 4]) and d["verdict"] == "held"
    assert d["interval"] == pytest.approx([0.52, 5.48], abs=0.01)
    assert not any(r["setting"].get("student") == resnet and "comparison" in r["setting"] for r in data["rows"])


def test_demo_teacher_is_reused_only_with_the_same_settings(tmp_path):
    from labeldistill.layout import RunLayout
    from labeldistill.main_stages import SQUEEZE
    from labeldistill.provenance import write_record

    args = _args(tmp_path)
    demo = tmp_path / "demo"
    (demo / "teacher").mkdir(parents=True)
    (demo / "teacher" / "teacher.json").write_text(json.dumps({"model": "convnet", "epochs": 3, "top1": 0.9}))
    (demo / "run.json").write_text("{}")
    cfg = cross_arch._cfg(Path(args.runs) / "teacher0", [])
    args.demo_run = str(demo)
    write_record(RunLayout(demo), "squeeze", {**SQUEEZE.settings(cfg, SQUEEZE.ref()), "squeeze.epochs": 99})
    assert not cross_arch.reuse_demo_teacher(args) and not (Path(args.runs) / "teacher0").exists()
    write_record(RunLayout(demo), "squeeze", SQUEEZE.settings(cfg, SQUEEZE.ref()))  # the same settings
    assert cross_arch.reuse_demo_teacher(args)
    assert (Path(args.runs) / "teacher0" / "teacher" / "teacher.json").is_file()
    assert "squeeze" in json.loads((Path(args.runs) / "teacher0" / "stages.json").read_text())  # recorded by adopt
    assert "reused from" in cross_arch._teacher_line(args, "teacher0")


def test_hard_label_rows_and_what_the_teacher_adds(tmp_path):
    """Hard-label rows (``hard_label/<student>/<mode>.json`` of the own cells) get their own table row, are not
    counted as label runs, and are paired with each factor's own-teacher row."""
    args = _args(tmp_path)
    root = Path(args.runs)
    conv = cross_arch.STUDENTS["ConvNet-32"]
    for s, (soft, hard) in enumerate([(0.80, 0.60), (0.82, 0.61), (0.81, 0.63)]):
        _row(root, "ipc10_own", s, "ConvNet-32", "cs", 1, soft)
        f = root / "ipc10_own" / f"seed{s}" / "hard_label" / "convnet-width32" / "cs.json"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps({"images": "cs", "student": conv["name"], "student_args": conv["args"], "seed": s,
                                 "top1": hard}))
    cross_arch.write(args)
    text = Path(args.out).read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("| 10 | cs | none: hard labels (CE) |"))
    assert "61.3 ± 1.2 (3)" in line, line
    comp = next(ln for ln in text.splitlines()
                if ln.startswith("| IPC 10: cs, own teacher's labels − hard labels | 1×"))
    # differences 20, 21, 18 points: mean 19.67, sd 1.53, t(0.975, 2) · 1.53 / √3 = 3.79
    assert "+19.7 [+15.9, +23.5] (n=3; held)" in comp, comp
    assert "ConvNet-32: 3/48 runs (seeds 0, 1, 2); " in text and "hard-label rows: 3." in text
    rows = json.loads((tmp_path / "docs" / "results" / "cross_arch.json").read_text())["rows"]
    hard = next(r for r in rows if r["setting"]["labels_by"] == "none: hard labels (CE)" if "labels_by" in r["setting"])
    assert hard["values"] == pytest.approx([60, 61, 63]) and "hard-label" in hard["protocol"]
