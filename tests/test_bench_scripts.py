"""The benchmark scripts' plumbing: ``bench/gpu_check.sh --dry-run``, a tiny ``python -m bench.scale`` run, and
the section writers of the studies on fabricated finished runs (``--write-only`` / ``--render``).

The gpu check, the scale run (its peak RSS is a process's), label_study and one ld_claims render run as
subprocesses exactly as a user starts them (``python -m bench.<name>`` in the repository root); the other section
writers run the same ``main()`` in this process with the argv ``-m`` gives (each subprocess costs seconds of imports
and proves nothing more about a section).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROW_KEYS = {"classes", "ipc", "image_size", "epochs", "stage_seconds", "peak_rss_bytes", "store_bytes",
            "estimated_store_bytes"}
STAGES = {"class_stats", "recover", "relabel", "prune_x1", "prune_x10", "prune_x40", "validate_x1"}


def _env() -> dict:
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
            "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}


def _bench(name: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"bench.{name}", *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def _bench_here(monkeypatch, name: str, *args: str) -> None:
    """``python -m bench.<name> args`` in this process: ``main()`` with ``sys.argv[0]`` the script's path (as ``-m``
    sets it), from the repository root; glibc's malloc settings (``tune_malloc``, which cannot be undone) are left
    alone and torch's thread count is restored."""
    import importlib

    import torch

    module = importlib.import_module(f"bench.{name}")
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", [str(REPO / "bench" / f"{name}.py"), *args])
    if hasattr(module, "tune_malloc"):
        monkeypatch.setattr(module, "tune_malloc", lambda: None)
    threads = torch.get_num_threads()
    try:
        module.main()
    finally:
        torch.set_num_threads(threads)


def test_gpu_check_dry_run_writes_nothing(tmp_path):
    bench = REPO / "BENCHMARKS.md"
    before = bench.read_bytes() if bench.is_file() else None
    # check a's pytest (--collect-only in a dry run) collects one small module: the plumbing (the script's
    # pytest call, its environment, the summary it reads) is the same, and collecting the whole suite again
    # inside the suite that is running proves nothing more (PYTEST_ADDOPTS reaches the script's pytest)
    env = {**_env(), "PYTEST_ADDOPTS": "tests/test_cli_entry.py"}
    r = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run", "--work", str(tmp_path)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    for part in ("a. test suite", "b. recover", "c. relabel", "d. bf16 autocast", "e. 224 px", "f. time estimate",
                 "g. kill-and-resume", "h. relabel under torchrun", "i. tiny_imagenet_lpld.yaml",
                 "| d3. bf16 vs fp32 student top-1",
                 "config switch autocast: bf16 (default) | off", "nothing written to BENCHMARKS.md"):
        assert part in out, part
    assert "| c. relabel stage" in out and "| d3. bf16 vs fp32 student top-1" in out
    d1 = next(line for line in out.splitlines() if line.startswith("| d1. recover"))
    assert "within 0.05 |" in d1 and ("| met |" in d1 or "| **missed** |" in d1)  # d1 has a pass/fail threshold
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert res["tests"]["rc"] == 0 and "collected" in res["tests"]["summary"]
    assert [r["ipc"] for r in res["recover"]] == [2, 3] and all(r["ratio"] > 0 for r in res["recover"])
    assert 0 <= res["autocast"]["relabel_argmax_agreement"] <= 1
    assert res["px224"]["entries"] > 0
    assert res["time_estimate"]["ratio"] > 0 and "| f. dry-run time estimate" in out
    k = res["kill_resume"]  # g: each stage really died at its fault point, resumed, and matched the reference
    assert k["reference_rc"] == [0, 0]
    for verb in ("recover", "relabel"):
        assert k[f"{verb}_killed_rc"] == -9 and k[f"{verb}_resume_rc"] == 0 and k[f"{verb}_identical"], k
        assert k[f"{verb}_files"] > 0
    t = res["torchrun"]  # h: 2 gloo processes on the CPU
    assert (t["backend"], t["nproc"], t["rc"], t["identical"]) == ("gloo", 2, 0, True), t
    ti = res["tiny_dry_run"]  # i: the Tiny-ImageNet config planned on the fake 200-class tree
    assert ti["rc"] == 0 and ti["num_classes"] == 200 and list(ti["image_shape"])[-2:] == [64, 64], ti
    assert "| g. recover killed" in out and "| h. relabel under torchrun" in out and "| i. `configs/tiny" in out
    assert (bench.read_bytes() if bench.is_file() else None) == before


def test_gpu_check_refuses_without_gpu_or_dry_run(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    r = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--skip-tests", "--work", str(tmp_path)],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--dry-run" in r.stderr


def test_scale_tiny_json(tmp_path):
    r = _bench("scale", "--classes", "10", "--ipc", "1", "--image-size", "16", "--epochs", "1", "--json", "--work",
               str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(r.stdout)
    assert list(data) == ["rows"] and len(data["rows"]) == 1
    row = data["rows"][0]
    assert set(row) == ROW_KEYS
    assert (row["classes"], row["ipc"], row["image_size"], row["epochs"]) == (10, 1, 16, 1)
    assert STAGES <= set(row["stage_seconds"]) and all(v >= 0 for v in row["stage_seconds"].values())
    assert row["peak_rss_bytes"] > 50 * 2**20
    assert row["store_bytes"] > 0 and abs(row["store_bytes"] / row["estimated_store_bytes"] - 1) <= 0.02
    # the details file agrees with the row: 10 images × 1 epoch in batches of 50 → 1 step, 10 entries
    det = json.loads((tmp_path / "c10_ipc1_s16_e1.json").read_text())
    assert det["details"]["relabel"]["entries"] == 10 and det["details"]["relabel"]["steps"] == 1
    assert det["details"]["prune_x1"]["store_bytes"] > 0
    assert not (tmp_path / "c10_ipc1_s16_e1").exists()  # run directory removed without --keep


def _fake_claims_run(folder: Path, accs: dict, orders: dict, lrs: dict) -> None:
    """results.json + sensitivity.json of a claims run, shaped as bench/ld_claims.py writes them."""
    folder.mkdir(parents=True)
    rows = []
    for m, per_opt in accs.items():
        rows += [{"method": m, "learner": "lenet", "optimizer": o, "top1_mean": a, "steps": 10}
                 for o, a in per_opt.items()]
        rows.append({"method": m, "learner": "mlp", "optimizer": "adam", "top1_mean": per_opt["adam"] - 0.01})
    (folder / "results.json").write_text(json.dumps({"rows": rows, "seconds": 1.0, "meta": {}}))
    sens = {m: {"lr": {"0.0003": {"top1_mean": accs[m]["adam"] - lrs[m]}, "0.003": {"top1_mean": accs[m]["adam"]}},
                "order": orders[m], "order_steps": 10} for m in accs}
    (folder / "sensitivity.json").write_text(json.dumps(sens))


def test_ld_claims_render_gives_paired_verdicts(tmp_path):
    """--render on fabricated runs: a claim whose paired differences are all positive 'held', all negative
    'did not hold', mixed 'not resolved' (issue #13 item 7)."""
    runs = tmp_path / "runs"
    for s, (eps, lr_ld) in enumerate([(0.00, 0.05), (0.01, -0.05), (0.02, 0.04)]):
        opt = lambda a, spread: {"sgd": a - spread, "sgd_momentum": a, "adam": a, "adamw": a}  # noqa: E731
        accs = {"ld": opt(0.80 + eps, 0.01), "rr": opt(0.78 + eps, 0.02), "dd": opt(0.70 + eps, 0.20)}
        orders = {"ld": [[0.8, 0.9, 0.8]] * 2, "rr": [[0.8, 0.8, 0.8]] * 2, "dd": [[0.70, 0.71 + eps, 0.70]] * 2}
        lrs = {"ld": 0.02 + lr_ld, "rr": 0.0, "dd": 0.02}
        _fake_claims_run(runs / f"claims_fmnist_n100_s{s}", accs, orders, lrs)
    out = tmp_path / "B.md"
    r = _bench("ld_claims", "--render", "--runs", str(runs), "--out", str(out), "--ns", "100", "--seeds", "3",
               timeout=300)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "<!-- ld_claims:start -->" in text and "Commit:" in text and "Command:" in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()
            if line.startswith(("| less", "| labels beat"))}
    assert "| held |" in rows["labels beat images"]  # LD − DD = +10 points in every pair
    assert "| held |" in rows["less sensitive to the optimizer"]  # DD spread 20 vs LD 1
    assert "| did not hold |" in rows["less sensitive to the order of examples"]  # LD 10-point order spread
    assert "| not resolved |" in rows["less sensitive to the learning rate"]  # sign changes across seeds
    data = json.loads((tmp_path / "docs" / "results" / "ld_claims.json").read_text())  # the same rows as JSON
    claims = {(r["setting"]["claim"], r["setting"]["labels"]): r for r in data["rows"] if "claim" in r["setting"]}
    beat = claims["labels beat images", "ld"]
    assert beat["seeds"] == [["fmnist", 100, 0], ["fmnist", 100, 1], ["fmnist", 100, 2]]
    assert beat["values"] == pytest.approx([10, 10, 10]) and beat["verdict"] == "held" and "LeNet" in beat["protocol"]
    assert claims["less sensitive to the order of examples", "ld"]["verdict"] == "did not hold"
    assert claims["less sensitive to the learning rate", "ld"]["verdict"] == "not resolved"
    acc = next(r for r in data["rows"] if r["setting"].get("measure") == "acc" and r["setting"]["labels"] == "dd")
    assert acc["values"] == pytest.approx([70, 71, 72]) and acc["setting"]["dataset"] == "fashion-mnist"


def _fake_label_study(runs: Path, seeds: list[int]) -> None:
    """Finished-looking runs of bench/label_study.py: top-1 = a fixed value per setting + 0.01 · seed."""
    def row(mode, f, c, loss, s):
        return {"recover": mode, "prune_factor": float(f), "prune_strategy": "random", "logits": c,
                "granularity": "batch", "label_bytes": 400_000 // f, "image_bytes": 70_000, "student": "convnet",
                "student_args": {"width": 32}, "seed": s, "loss": loss, "ipc": 10,
                "top1": (0.80 if mode == "cs" else 0.75) - 0.002 * f + 0.01 * s}
    for s in seeds:
        d = runs / f"s{s}"
        rows = [row(m, f, c, "kl", s) for m in ("cs", "random_real") for f in (1, 10, 40)
                for c in ("fp16", "int8", "int4", "top2-int8")]
        hard = [{"images": m, "n_images": n, "image_bytes": b, "label_bytes": 0, "student": "convnet",
                 "student_args": {"width": 32}, "seed": s, "top1": t + 0.01 * s}
                for m, n, b, t in (("cs", 100, 70_000, 0.70), ("random_real", 100, 70_000, 0.68),
                                   ("real-train", 60_000, 47_040_000, 0.86))]
        (d / "hard_label" / "convnet-width32").mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({"rows": rows, "hard_label": hard}))
        for h in hard:
            (d / "hard_label" / "convnet-width32" / f"{h['images']}.json").write_text(json.dumps(h))
        for loss in ("soft_ce", "gift"):
            (runs / f"s{s}_loss-{loss}").mkdir()
            (runs / f"s{s}_loss-{loss}" / "results.json").write_text(json.dumps(
                {"rows": [row(m, 40, "fp16", loss, s) for m in ("cs", "random_real")]}))


def test_label_study_writes_section_and_plot_from_finished_runs(tmp_path):
    _fake_label_study(tmp_path / "runs", [0, 1])  # seed 2 not finished
    out, plot = tmp_path / "B.md", tmp_path / "p.png"
    r = _bench("label_study", "--write-only", "--runs", str(tmp_path / "runs"), "--out", str(out), "--plot",
               str(plot))
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    assert "<!-- label_study:start -->" in text and "seeds [0, 1] of [0, 1, 2] finished" in text
    assert "Commit: " in text and "Command: `python -m bench.label_study --write-only" in text
    # best at label bytes <= image bytes: cs 10x (40,000 B <= 70,000 B) at 0.78 + 0.005 mean
    assert "**Best top-1 at label bytes ≤ image bytes**: cs + x10 random (fp16)" in text
    assert "| HLR cs: real-train − cs (hard labels) | 2 | +16.0 |" in text  # 0.86 - 0.70, the same each seed
    assert "| IOR 1× fp16: cs − random_real | 2 | +5.0 |" in text
    assert plot.stat().st_size > 10_000 and f"]({plot})" in text
    data = json.loads((tmp_path / "docs" / "results" / "label_study.json").read_text())  # the same rows as JSON
    assert data["section"] == "label_study" and data["command"].startswith("python -m bench.label_study --write-only")
    rows = {r["setting"].get("comparison"): r for r in data["rows"]}
    hlr = rows["HLR cs: real-train − cs (hard labels)"]
    assert hlr["seeds"] == [0, 1] and hlr["values"] == pytest.approx([16, 16]) and hlr["mean"] == pytest.approx(16)
    assert hlr["interval"] == pytest.approx([16, 16]) and hlr["verdict"] == "> 0" and "hard-label" in hlr["protocol"]
    ior = rows["IOR 1× fp16: cs − random_real"]
    assert ior["mean"] == pytest.approx(5) and ior["verdict"] == "held" and "validate" in ior["protocol"]
    cs10 = next(r for r in data["rows"] if r["setting"] == {"images": "cs", "factor": 10, "codec": "fp16", "loss": "kl"})
    assert cs10["values"] == pytest.approx([78, 79]) and cs10["interval"] is None


def test_mnist_defaults_write_only_gives_paired_verdicts(tmp_path, monkeypatch):
    """--write-only on fabricated finished runs: a teacher whose students gain in every seed reads 'held', one
    with mixed signs 'not resolved'; a seed with one arm missing is left out (unpaired)."""
    runs = tmp_path / "runs"
    gains = {"project": [0.05, 0.06, 0.07], "elsewhere": [0.03, -0.02, 0.01]}
    for teacher, per_seed in gains.items():
        for seed, gain in enumerate(per_seed):
            for arm, top1 in (("before", 0.80), ("after", 0.80 + gain)):
                folder = runs / f"{teacher}_{arm}_s{seed}"
                folder.mkdir(parents=True)
                res = {"teacher": {"top1": 0.95 if arm == "after" else 0.93}, "rows": [{"top1": top1}],
                       "provenance": {"commit": "abc1234"}}
                (folder / "results.json").write_text(json.dumps(res))
    (runs / "project_before_s3").mkdir()  # seed 3: only one arm, not finished
    out = tmp_path / "B.md"
    _bench_here(monkeypatch, "mnist_defaults", "--write-only", "--runs", str(runs), "--out", str(out), "--seeds", "0",
                "1", "2", "3")
    text = out.read_text()
    assert "<!-- mnist_defaults:start -->" in text and "Commit:" in text and "Command:" in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith(("| project",
                                                                                              "| elsewhere"))}
    assert "| 93.0 ± 0.0 / 95.0 ± 0.0 | 80.0 ± 0.0 | 86.0 ± 1.0 | +6.0 [+3.5, +8.5] | 3 | held |" in rows["project"]
    assert "| 3 | not resolved |" in rows["elsewhere"]
    assert "abc1234" in text and "project teacher [0, 1, 2]" in text
    rows = json.loads((tmp_path / "docs" / "results" / "mnist_defaults.json").read_text())["rows"]
    gain = {r["setting"]["teacher"]: r for r in rows if r["setting"]["measure"] == "student after − before"}
    assert gain["project"]["values"] == pytest.approx([5, 6, 7]) and gain["project"]["verdict"] == "held"
    assert gain["project"]["interval"] == pytest.approx([3.5, 8.5], abs=0.02) and gain["project"]["seeds"] == [0, 1, 2]
    assert gain["elsewhere"]["verdict"] == "not resolved" and "300 epochs" in gain["elsewhere"]["protocol"]


def test_digits_write_only_rows_match_the_table(tmp_path, monkeypatch):
    """--write-only on fabricated finished runs: the Markdown cells and the JSON rows come from the same values."""
    runs = tmp_path / "runs"
    base = {"demo": 0.50, "teacher_aug": 0.60, "digits": 0.90, "recover_aug": 0.85}
    for arm, acc in base.items():
        for seed in (0, 1):
            root = runs / arm / f"seed{seed}"
            (root / "teacher").mkdir(parents=True)
            (root / "teacher" / "teacher.json").write_text(json.dumps({"top1": 0.95}))
            (root / "validate" / "convnet").mkdir(parents=True)
            for m in ("sre2l", "lpld"):
                for f in (1, 10, 40):
                    (root / "validate" / "convnet" / f"{m}_x{f}.json").write_text(json.dumps(
                        {"recover": m, "prune_factor": f, "top1": acc + 0.01 * seed}))
    out = tmp_path / "B.md"
    _bench_here(monkeypatch, "digits", "--write-only", "--seeds", "0", "1", "--runs", str(runs), "--out", str(out))
    line = next(ln for ln in out.read_text().splitlines() if ln.startswith("| student, lpld, 1× |"))
    assert "| 50.5 ± 0.5 | 60.5 ± 0.5 | 90.5 ± 0.5 | 85.5 ± 0.5 |" in line and "+40.0 [+40.0, +40.0] (held)" in line
    rows = json.loads((tmp_path / "docs" / "results" / "digits.json").read_text())["rows"]
    d = next(r for r in rows if r["setting"] == {"measure": "student, lpld, 1×", "comparison": "digits − demo"})
    assert d["values"] == pytest.approx([40, 40]) and d["interval"] == pytest.approx([40, 40]) and d["verdict"] == "held"
    demo = next(r for r in rows if r["setting"] == {"measure": "student, lpld, 1×", "arm": "demo"})
    assert demo["seeds"] == [0, 1] and demo["values"] == pytest.approx([50, 51])


def test_demo_table_writes_the_rows_it_renders(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"recover": "cs", "ipc": 10, "prune_factor": f, "label_bytes": 1000 // f, "image_bytes": 7840,
             "student": "convnet", "student_args": {}, "top1": t, "seconds": 3.0, "seed": 0, "epochs": 300}
            for f, t in ((1.0, 0.791), (10.0, 0.774))]
    (run / "results.json").write_text(json.dumps({"rows": rows, "seconds": 60.0, "teacher": {
        "model": "convnet", "epochs": 3, "top1": 0.897}}))
    out = tmp_path / "B.md"
    _bench_here(monkeypatch, "demo_table", "--run", str(run), "--out", str(out))
    assert "| 77.4 % |" in out.read_text()
    data = json.loads((tmp_path / "docs" / "results" / "demo.json").read_text())
    assert data["command"] == "make demo" and [v for r in data["rows"] for v in r["values"]] == pytest.approx([79.1, 77.4])
    assert data["rows"][1]["setting"]["prune_factor"] == 10.0 and "300 epochs" in data["rows"][1]["protocol"]


def test_ld_budget_section_from_budget_runs_only(tmp_path, monkeypatch):
    """--render with only budget runs: section ld_budget gets the per-seed rows and the paired LD − DD verdict
    (held when LD leads in every pair), and no ld_claims section is written (its parts have no runs here)."""
    runs = tmp_path / "runs"
    for s, eps in enumerate((0.0, 0.01, 0.02)):
        for method, accs in (("ld", {"ld": 0.87 + eps, "onehot": 0.80, "teacher": 0.85}), ("dd", {"dd": 0.80})):
            folder = runs / f"budget_{method}_s{s}"
            folder.mkdir(parents=True)
            rows = [{"method": m, "learner": "lenet", "optimizer": "adam", "top1_mean": a, "steps": 400}
                    for m, a in accs.items()]
            meta = {method: {"outer_steps": 19600}}
            (folder / "results.json").write_text(json.dumps({"rows": rows, "seconds": 60.0, "meta": meta}))
            (folder / "bench.json").write_text(json.dumps({"bench_command": f"ld_claims --budget-methods {method}"}))
    out = tmp_path / "B.md"
    _bench_here(monkeypatch, "ld_claims", "--render", "--runs", str(runs), "--out", str(out), "--seeds", "3")
    text = out.read_text()
    assert "<!-- ld_budget:start -->" in text and "<!-- ld_claims:start -->" not in text and "19,600" in text
    beat = next(line for line in text.splitlines() if line.startswith("| labels beat images"))
    assert "+8.0 [" in beat and beat.endswith("| held |")  # LD − DD = 7, 8, 9 points
    data = json.loads((tmp_path / "docs" / "results" / "ld_budget.json").read_text())
    ld = next(r for r in data["rows"] if r["setting"].get("labels") == "ld")
    assert ld["values"] == pytest.approx([87, 88, 89]) and ld["seeds"] == [0, 1, 2]


def test_ld_budget_runs_get_the_papers_number_of_label_updates(tmp_path):
    """mnist-5k's 3,500 outer-loss images at batch 1,024 are 4 updates per epoch: 4,900 epochs = 19,600 updates."""
    from bench import ld_claims

    study = ld_claims.Study(ld_claims._parser().parse_args(["--runs", str(tmp_path)]))
    ov = study.budget_overrides("ld", 0)
    epochs = int(next(o for o in reversed(ov) if o.startswith("meta.epochs=")).split("=")[1])
    assert epochs == 4900 and epochs * 4 == ld_claims.PAPER_LABEL_UPDATES == 19600
    assert "metatest.step_rule=val" in ov and ov[-6:].count("methods=[ld, onehot, teacher]") == 1
    assert "methods=[dd]" in study.budget_overrides("dd", 0)
