"""labeldistill leaderboard: main-job, hard-label and learn-labels runs in one table, IOR, HLR, Pareto front and
its plot, budget (issue #15 item 5)."""

from __future__ import annotations

import json
import struct

import pytest

from labeldistill import cli
from labeldistill.leaderboard import (
    _dominated,
    best_within,
    format_leaderboard,
    front_sweep,
    leaderboard,
    plot_leaderboard,
)


def _main_row(recover: str, top1: float, seed: int, label_bytes: int, logits: str = "fp16",
              strategy: str = "random") -> dict:
    return {"recover": recover, "source": "synthesis" if recover != "random_real" else "random_real", "ipc": 1,
            "prune_factor": 1.0, "prune_strategy": strategy, "logits": logits, "granularity": "batch",
            "label_bytes": label_bytes, "image_bytes": 1000, "student": "convnet", "student_args": {"width": 4},
            "seed": seed, "top1": top1}


@pytest.fixture
def runs(tmp_path):
    main = tmp_path / "main"
    main.mkdir()
    rows = [_main_row("random_real", 0.50, 0, 4000), _main_row("random_real", 0.60, 1, 4000),
            _main_row("lpld", 0.70, 0, 4000), _main_row("lpld", 0.80, 1, 4000),
            _main_row("lpld", 0.65, 0, 1000, logits="top1")]  # no random_real with top1: no IOR
    (main / "results.json").write_text(json.dumps({"rows": rows, "seeds": [0, 1]}))
    ll = tmp_path / "ll"
    ll.mkdir()
    lrow = {"learner": "x", "arch": "lenet", "arch_args": {}, "n_base": 10, "source": "fmnist", "target": "fmnist",
            "top1_mean": 0.40, "top1_std": 0.0, "top1_all": [0.3, 0.5]}
    (ll / "results.json").write_text(json.dumps({"seed": 0, "n_base": 10, "rows": [{**lrow, "method": "ld"},
                                                {**lrow, "method": "onehot", "top1_all": [0.2, 0.2]}]}))
    (ll / "labels.json").write_text(json.dumps({"target": {"classes": [str(i) for i in range(10)]}}))
    header = json.dumps({"base_images": {"dtype": "U8", "shape": [10, 1, 28, 28], "data_offsets": [0, 7840]}})
    (ll / "labels.safetensors").write_bytes(struct.pack("<Q", len(header)) + header.encode() + bytes(7840))
    return main, ll


def test_leaderboard_ior_pareto_and_budget(runs):
    table = leaderboard(list(runs))
    by = {(r["images"], r["labels"], r["codec"]): r for r in table}
    lp = by[("lpld", "x1 random", "fp16")]
    assert lp["top1_mean"] == pytest.approx(0.75) and lp["top1_std"] == pytest.approx(0.05) and lp["n"] == 2
    assert lp["ior"] == pytest.approx(0.75 - 0.55)
    assert by[("random_real", "x1 random", "fp16")]["ior"] is None
    assert by[("lpld", "x1 random", "top1")]["ior"] is None
    ld = by[("base examples (fmnist)", "ld", "float32")]
    assert ld["label_bytes"] == 10 * 10 * 4 and ld["image_bytes"] == 7840 and ld["total_bytes"] == 8240
    assert ld["top1_mean"] == pytest.approx(0.4) and ld["ior"] is None
    # totals: lpld top1 2000 (0.65), lpld/random_real fp16 5000 (0.75 / 0.55), ld 8240 (0.40), onehot 8240 (0.20)
    assert {(r["images"], r["codec"], r["labels"]) for r in table if r["pareto"]} == {
        ("lpld", "top1", "x1 random"), ("lpld", "fp16", "x1 random")}
    assert best_within(table, 5000)["images"] == "lpld" and best_within(table, 5000)["codec"] == "fp16"
    assert best_within(table, 3000)["codec"] == "top1"
    assert best_within(table, 100) is None


def test_leaderboard_cli(runs, capsys):
    assert cli.main(["leaderboard", *map(str, runs), "--budget", "3000"]) == 0
    out = capsys.readouterr().out
    assert "IOR (vs random_real)" in out and "+20.0 pt" in out and "| ld |" in out
    assert "budget 2.9 KiB: lpld + x1 random (top1" in out
    assert cli.main(["leaderboard", *map(str, runs), "--budget", "10"]) == 0
    assert "no row fits" in capsys.readouterr().out
    assert cli.main(["leaderboard", *map(str, runs), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["rows"]) == 5


def test_leaderboard_missing_run_dir_exits_2_with_one_line(runs, tmp_path, capsys):
    assert cli.main(["leaderboard", str(runs[0]), str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "no such directory" in err[0]


def test_leaderboard_leaves_out_holdout_rows(tmp_path):
    run = tmp_path / "sel"
    run.mkdir()
    rows = [_main_row("lpld", 0.70, 0, 4000), {**_main_row("lpld", 0.95, 1, 4000), "eval_split": "holdout"}]
    (run / "results.json").write_text(json.dumps({"rows": rows}))
    (lp,) = leaderboard([run])
    assert lp["n"] == 1 and lp["top1_mean"] == pytest.approx(0.70)


def _hard(run, images: str, top1: float, seed: int, n: int = 100, sub: str = "") -> None:
    d = run / sub / "hard_label" / "convnet-width4"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{images}.json").write_text(json.dumps({
        "images": images, "source": "x", "ipc": None if images == "real-train" else 1, "n_images": n,
        "image_bytes": 1000 if images != "real-train" else 10**6,
        "label_bytes": 0, "student": "convnet", "student_args": {"width": 4}, "seed": seed, "top1": top1}))


def test_hlr_pairs_seeds_and_says_what_is_missing(runs):
    main, ll = runs
    for seed, (real, lp, rr) in enumerate([(0.90, 0.60, 0.50), (0.92, 0.66, 0.52)]):
        _hard(main, "real-train", real, seed, n=60000, sub=f"seed{seed}")
        _hard(main, "lpld", lp, seed, sub=f"seed{seed}")
        _hard(main, "random_real", rr, seed, sub=f"seed{seed}")
    _hard(main, "random_real", 0.99, 7, sub="seed7")  # no real-train row of seed 7: not paired
    table = leaderboard([main, ll])
    by = {(r["images"], r["labels"], r["codec"]): r for r in table}
    # HLR = mean over paired seeds of real-train - images: lpld (0.30 + 0.26) / 2, random_real (0.40 + 0.40) / 2
    assert by[("lpld", "x1 random", "fp16")]["hlr"] == pytest.approx(0.28)
    assert by[("lpld", "x1 random", "fp16")]["hlr_n"] == 2
    assert by[("lpld", "x1 random", "top1")]["hlr"] == pytest.approx(0.28)  # a property of the images
    assert by[("random_real", "x1 random", "fp16")]["hlr"] == pytest.approx(0.40)
    hard_lp = by[("lpld", "hard (CE)", "-")]
    assert hard_lp["label_bytes"] == 0 and hard_lp["top1_mean"] == pytest.approx(0.63) and hard_lp["n"] == 2
    # IOR of a hard-label row: against random_real's hard-label rows of the same seeds (seed 7's 0.99 has no
    # lpld partner): ((0.60 - 0.50) + (0.66 - 0.52)) / 2
    assert hard_lp["ior"] == pytest.approx(0.12) and hard_lp["ior_n"] == 2
    assert by[("real-train (60000 images)", "hard (CE)", "-")]["hlr_missing"] == "the reference"
    assert by[("base examples (fmnist)", "ld", "float32")]["hlr_missing"] == "n/a (learn-labels)"
    out = format_leaderboard(leaderboard([main, ll]))
    assert "+28.0 pt" in out and "HLR (real-train − images, hard labels)" in out


def test_hlr_missing_baselines(runs):
    main, _ = runs
    assert leaderboard([main])[0]["hlr_missing"] == "no hard-label row of lpld"
    _hard(main, "lpld", 0.6, 0)
    by = {(r["images"], r["codec"]): r for r in leaderboard([main])}
    assert by[("lpld", "fp16")]["hlr"] is None
    assert by[("lpld", "fp16")]["hlr_missing"] == "no real-train hard-label row for this student"
    assert by[("random_real", "fp16")]["hlr_missing"] == "no hard-label row of random_real"
    _hard(main, "real-train", 0.9, 1)
    assert {(r["images"], r["codec"]): r for r in leaderboard([main])}[("lpld", "fp16")]["hlr_missing"] == \
        "no seed with both hard-label rows"


def test_plot_front_is_the_tables_pareto_front(runs, tmp_path, capsys):
    main, ll = runs
    _hard(main, "lpld", 0.6, 0)
    _hard(main, "random_real", 0.7, 0)  # 1,000 B at 0.7: dominates lpld top1 (2,000 B, 0.65)
    table = leaderboard([main, ll])
    front = plot_leaderboard(table, tmp_path / "lb.png")
    assert (tmp_path / "lb.png").stat().st_size > 10_000
    marked = [r for r in table if r["pareto"]]
    assert [id(r) for r in front] == [id(r) for r in sorted(marked, key=lambda r: r["total_bytes"])]
    assert {(r["images"], r["codec"]) for r in front} == {("random_real", "-"), ("lpld", "fp16")}
    # the sweep and the pairwise marks agree on ties and duplicates too
    pts = [(1, 0.5), (1, 0.5), (2, 0.5), (2, 0.7), (3, 0.6), (0.5, 0.1)]
    rows = [{"total_bytes": b, "top1_mean": t} for b, t in pts]
    assert front_sweep(pts) == [i for i, r in enumerate(rows) if not _dominated(r, rows)] == [0, 1, 3, 5]
    assert cli.main(["leaderboard", str(main), "--plot", str(tmp_path / "cli.png")]) == 0
    assert (tmp_path / "cli.png").is_file() and "plot:" in capsys.readouterr().out
    assert cli.main(["leaderboard", str(main), "--plot", str(tmp_path / "x.nope")]) == 2
    assert "--plot" in capsys.readouterr().err


def _ipc_run(root, name: str, ipc: int, top1: float, hard_top1: float, real_top1: float) -> object:
    run = root / name
    run.mkdir()
    row = {**_main_row("cs", top1, 0, 4000), "ipc": ipc, "image_bytes": 100 * ipc}
    (run / "results.json").write_text(json.dumps({"dataset": "fashion-mnist", "rows": [row]}))
    d = run / "hard_label" / "convnet-width4"
    d.mkdir(parents=True)
    for images, t, i in (("cs", hard_top1, ipc), ("real-train", real_top1, None)):
        (d / f"{images}.json").write_text(json.dumps({
            "images": images, "source": "x", "ipc": i, "n_images": 10 * (i or 100), "image_bytes": 100 * (i or 100),
            "label_bytes": 0, "student": "convnet", "student_args": {"width": 4}, "seed": 0, "top1": t}))
    return run


def test_rows_of_different_ipc_are_neither_pooled_nor_paired(tmp_path):
    """Two runs with the same mode name at IPC 10 and IPC 50: two rows with their own bytes, accuracy and HLR
    (the real-train rows of one dataset and seed are one reference: their mean)."""
    a = _ipc_run(tmp_path, "a", 10, 0.5, 0.30, 0.90)
    b = _ipc_run(tmp_path, "b", 50, 0.8, 0.60, 0.92)
    by = {(r["setting"], r["kind"]): r for r in leaderboard([a, b])}
    ten, fifty = by[("fashion-mnist IPC 10", "main")], by[("fashion-mnist IPC 50", "main")]
    assert (ten["n"], ten["top1_mean"], ten["image_bytes"]) == (1, 0.5, 1000)
    assert (fifty["n"], fifty["top1_mean"], fifty["image_bytes"]) == (1, 0.8, 5000)
    assert ten["hlr"] == pytest.approx(0.91 - 0.30) and fifty["hlr"] == pytest.approx(0.91 - 0.60)
    assert by[("fashion-mnist full train", "hard-label")]["n"] == 2
    assert "| fashion-mnist IPC 50 | cs |" in format_leaderboard(leaderboard([a, b]))


def test_learned_rows_of_different_metatest_settings_are_not_pooled(tmp_path):
    ll = tmp_path / "ll"
    ll.mkdir()
    base = {"method": "onehot", "arch": "lenet", "arch_args": {}, "n_base": 10, "source": "fmnist",
            "target": "fmnist", "top1_std": 0.0, "label_bytes": 400, "image_bytes": 7840}
    rows = [{**base, "head": "plain", "optimizer": "adam", "lr": 0.001, "top1_mean": 0.6, "top1_all": [0.6]},
            {**base, "head": "rr", "optimizer": "sgd", "lr": 0.01, "top1_mean": 0.2, "top1_all": [0.2]}]
    (ll / "results.json").write_text(json.dumps({"seed": 0, "n_base": 10, "rows": rows}))
    table = leaderboard([ll])
    assert sorted((r["student"], r["top1_mean"], r["n"]) for r in table) == [
        ("lenet + rr head, sgd lr 0.01", 0.2, 1), ("lenet, adam lr 0.001", 0.6, 1)]
    assert {r["setting"] for r in table} == {"fmnist N=10"}
