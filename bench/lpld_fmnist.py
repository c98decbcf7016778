"""The LPLD study on Fashion-MNIST (section ``lpld_fmnist``): KD temperature and epochs chosen on a held-out
split, then sre2l, cs, random_real and real-initialised cs at IPC 10 and 50 on paired seeds, with paired
verdicts. Resumable; the section is rewritten after every finished seed.

    python -m bench.lpld_fmnist                # selection, then IPC 10 seeds, then IPC 50 seeds (hours)
    python -m bench.lpld_fmnist --collect      # the section from whatever runs have finished
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.study import (REPO, compare, finished_results, git_commit, header, interval_text, ledger, md_row, mean_std,
                         parser, result_row, seed_run_from, write_section)
from labeldistill import load_config, run, run_stage
from labeldistill.io import read_json
from labeldistill.runtime import tune_malloc

SOURCES = ["sre2l", "cs", "random_real", "cs_init_real"]
SELECT_FACTORS = (1.0, 40.0)
LITTLE_LOSS = 1.0  # points: the "little or no loss" margin the 1x -> 40x drop is tested against


def parse_args(argv=None) -> argparse.Namespace:
    ap = parser(__doc__, runs="bench_lpld2", render="collect")
    ap.add_argument("--holdout", type=int, default=5000, help="train images held out for selection (data.holdout)")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[1, 4, 20])
    ap.add_argument("--epochs-grid", type=int, nargs="+", default=[100, 200, 300], help="relabel = student epochs")
    ap.add_argument("--select-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="IPC 10 seeds")
    ap.add_argument("--ipc50-seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--factors", type=float, nargs="+", default=[1, 10, 40, 100])
    ap.add_argument("--iterations", type=int, default=500, help="recover iterations at IPC 10")
    ap.add_argument("--iterations-ipc50", type=int, default=500, help="recover iterations at IPC 50")
    ap.add_argument("--teacher-epochs", type=int, default=3)
    ap.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra config overrides for every run (e.g. a small smoke run: data.train_subset=1000)")
    return ap.parse_args(argv)


def overrides(args, ipc: int, epochs: int) -> list[str]:
    its = args.iterations if ipc == 10 else args.iterations_ipc50
    return [f"squeeze.epochs={args.teacher_epochs}", f"recover.iterations={its}", "recover.vectorize=10",
            f"recover.ipc={ipc}", f"relabel.epochs={epochs}", "relabel.cutmix=0.5", "threads=1",
            f"data.holdout={args.holdout}", *args.override]


def config(args, name: str, seed: int, extra: list[str]):
    root = Path(args.runs) / name
    return load_config(REPO / "configs" / "fmnist_demo.yaml", [f"run_dir={root}", f"name={name}", f"seed={seed}"]
                       + extra)


def run_dir_job(args, name: str, seed: int, extra: list[str], donors: dict[str, Path]) -> dict:
    """The main job in ``<runs>/<name>`` (the teacher: ``base``'s, loaded through ``squeeze.checkpoint`` so every
    seed shares it; other outputs from ``donors``: relative path → donor run directory, copied only when the
    donor's ledger records them with this run's settings, see :func:`bench.study.seed_run_from`); returns its
    results.json content."""
    teacher = Path(args.runs) / "base" / "teacher" / "model.safetensors"
    root, cfg = Path(args.runs) / name, config(args, name, seed, extra + [f"squeeze.checkpoint={teacher}"])
    for rel, donor in donors.items():
        seed_run_from(donor, root, [rel], cfg, stages=(_stage_of(rel),))
    return run(cfg)


def _stage_of(rel: str) -> str:
    """The ledger key of a copied part: ``images/<mode>`` → ``recover[<mode>]``, ``labels/<mode>/...`` →
    ``relabel[<mode>]``."""
    kind, mode = rel.split("/")[:2]
    return f"{'recover' if kind == 'images' else 'relabel'}[{mode}]"


def sel_name(seed: int, epochs: int, temp: float) -> str:
    return f"sel_s{seed}_e{epochs}_t{temp:g}"


def rep_name(ipc: int, seed: int, epochs: int, temp: float, init_real: bool = False) -> str:
    return f"rep_ipc{ipc}_s{seed}_e{epochs}_t{temp:g}" + ("_initreal" if init_real else "")


def finished_rows(args, name: str) -> list[dict] | None:
    res = finished_results(Path(args.runs) / name)
    return res["rows"] if res else None


def run_selection_seed(args, seed: int) -> None:
    first = Path(args.runs) / sel_name(seed, args.epochs_grid[0], args.temperatures[0])
    for epochs in args.epochs_grid:
        for temp in args.temperatures:
            donors = {"images/cs": first, "labels/cs": Path(args.runs) / sel_name(seed, epochs, args.temperatures[0])}
            run_dir_job(args, sel_name(seed, epochs, temp), seed, overrides(args, 10, epochs) + [
                "recover.modes=[cs]", "prune.factors=[1, 40]", f"validate.temperature={temp}",
                "validate.eval_split=holdout"], donors)


def selection_results(args) -> dict:
    """``{(epochs, temp): {seed: {factor: top1}}}`` from finished selection runs."""
    out: dict = {}
    for epochs in args.epochs_grid:
        for temp in args.temperatures:
            for seed in args.select_seeds:
                rows = finished_rows(args, sel_name(seed, epochs, temp))
                if rows:
                    assert all(r["eval_split"] == "holdout" for r in rows)
                    out.setdefault((epochs, temp), {})[seed] = {r["prune_factor"]: r["top1"] for r in rows}
    return out


def choose(args, sel: dict) -> tuple[int, float] | None:
    """The (epochs, temp) with the best mean holdout top-1 over factors 1× and 40× and the seeds that finished
    every grid cell; None until at least one seed finished the whole grid."""
    cells = [(e, t) for e in args.epochs_grid for t in args.temperatures]
    seeds = [s for s in args.select_seeds if all(s in sel.get(c, {}) for c in cells)]
    if not seeds:
        return None
    score = {c: sum(sel[c][s][f] for s in seeds for f in SELECT_FACTORS) for c in cells}
    return max(cells, key=lambda c: score[c])


def run_report_seed(args, ipc: int, seed: int, epochs: int, temp: float) -> None:
    factors = "[" + ", ".join(f"{f:g}" for f in args.factors) + "]"
    common = overrides(args, ipc, epochs) + [f"prune.factors={factors}", f"validate.temperature={temp}"]
    # at IPC 10 the selection's cs images and labels of this seed are the same outputs (same settings): reuse them
    donors = {"images/cs": Path(args.runs) / sel_name(seed, args.epochs_grid[0], args.temperatures[0]),
              "labels/cs": Path(args.runs) / sel_name(seed, epochs, args.temperatures[0])} \
        if ipc == 10 and seed in args.select_seeds else {}
    run_dir_job(args, rep_name(ipc, seed, epochs, temp), seed,
                common + ["recover.modes=[sre2l, cs, random_real]"], donors)
    run_dir_job(args, rep_name(ipc, seed, epochs, temp, True), seed,
                common + ["recover.modes=[cs]", "recover.init=real"], {})


def report_results(args, ipc: int, seeds: list[int], epochs: int, temp: float) -> dict:
    """``{source: {seed: {factor: top1}}}`` over the seeds whose two runs both finished (paired)."""
    out: dict = {s: {} for s in SOURCES}
    for seed in seeds:
        main, init = (finished_rows(args, rep_name(ipc, seed, epochs, temp, r)) for r in (False, True))
        if not (main and init):
            continue
        for src, r in [(r["recover"], r) for r in main] + [("cs_init_real", r) for r in init]:
            assert r["eval_split"] == "test"
            out[src].setdefault(seed, {})[r["prune_factor"]] = r["top1"]
    return out


def protocol(epochs: int, temp: float) -> str:
    """The evaluation protocol of a row: this project's student recipe (``validate``)."""
    return f"labeldistill-validate (ConvNet-32 student, AdamW, {epochs} epochs, T {temp:g})"


def selection_table(args, sel: dict, chosen, out: list) -> str:
    lines = ["| E (epochs) | T | 1× (holdout) | 40× (holdout) | mean of both | seeds |", "|---|---|---|---|---|---|"]
    for (epochs, temp), by_seed in sorted(sel.items()):
        cols = {f"{f:g}x": {s: v[f] for s, v in by_seed.items()} for f in SELECT_FACTORS}
        cols["mean of both"] = {s: (v[1.0] + v[40.0]) / 2 for s, v in by_seed.items()}
        out += [result_row({"part": "selection", "images": "cs", "ipc": 10, "epochs": epochs, "temperature": temp,
                            "factor": k, "split": "holdout", "chosen": chosen == (epochs, temp)},
                           {s: 100 * x for s, x in col.items()}, protocol(epochs, temp), unit="top-1 %")
                for k, col in cols.items()]
        mark = " **(chosen)**" if chosen == (epochs, temp) else ""
        lines.append(f"| {epochs} | {temp:g}{mark} | " + " | ".join(mean_std(list(c.values())) for c in cols.values())
                     + f" | {sorted(by_seed)} |")
    return "\n".join(lines)


def report_table(args, res: dict[int, dict], chosen, out: list) -> str:
    lines = ["| IPC | images | " + " | ".join(f"{f:g}×" for f in args.factors) + " | seeds |",
             "|---|---|" + "---|" * len(args.factors) + "---|"]
    for ipc, by_src in res.items():
        for src in SOURCES:
            by_seed = by_src[src]
            if not by_seed:
                continue
            cols = {f: {s: v[f] for s, v in by_seed.items()} for f in args.factors}
            out += [result_row({"part": "report", "ipc": ipc, "images": src, "factor": f, "split": "test"},
                               {s: 100 * x for s, x in col.items()}, protocol(*chosen), unit="top-1 %")
                    for f, col in cols.items()]
            lines.append(f"| {ipc} | {src.replace('_', ' ')} | " + " | ".join(
                mean_std(list(c.values())) for c in cols.values()) + f" | {sorted(by_seed)} |")
    return "\n".join(lines)


def claim_row(out: list, proto: str, claim: str, where: str, diffs: dict, threshold: float = 0.0,
              above: bool = True) -> str:
    """One claims-table row (and its JSON row); ``diffs``: seed → difference in fractions (shown in points)."""
    pts = {s: 100 * d for s, d in diffs.items()}
    v = compare(out, {"part": "claims", "claim": claim, "where": where, "threshold_points": 100 * threshold,
                      "above": above}, pts, proto, 100 * threshold, above)  # pts and threshold in points
    return md_row([claim, where, interval_text(list(pts.values()), 2), len(pts), v])


def paired(a: dict, b: dict, fa: float, fb: float | None = None, sign: int = 1) -> dict:
    """``{seed: sign · (a[seed][fa] - b[seed][fb])}`` over the seeds both have."""
    fb = fa if fb is None else fb
    return {s: sign * (a[s][fa] - b[s][fb]) for s in sorted(set(a) & set(b)) if fa in a[s] and fb in b[s]}


def claims_table(args, res: dict[int, dict], sel: dict, chosen, out: list) -> str:
    lines = ["| claim (Xiao & He 2024, LPLD) | where | paired difference, points: mean [95 % CI] | n | verdict |",
             "|---|---|---|---|---|"]
    row = lambda *a, **k: lines.append(claim_row(out, protocol(*chosen), *a, **k))  # noqa: E731
    for ipc, r in res.items():
        for f in args.factors:
            row("class-wise supervision beats SRe2L's (cs − sre2l > 0)", f"IPC {ipc}, {f:g}×",
                paired(r["cs"], r["sre2l"], f))
        for f in (40.0, 100.0):
            if f in args.factors:
                row(f"cs loses little or nothing from 1× to {f:g}× (drop 1× − {f:g}× < {LITTLE_LOSS:g} point)",
                    f"IPC {ipc}", paired(r["cs"], r["cs"], f, 1.0, -1), LITTLE_LOSS / 100, False)
        for f in args.factors:
            row("synthesised images beat real ones (cs − random real > 0)", f"IPC {ipc}, {f:g}×",
                paired(r["cs"], r["random_real"], f))
        for f in args.factors:
            row("(not LPLD's) initialising cs from real images helps (cs init real − cs > 0)", f"IPC {ipc}, {f:g}×",
                paired(r["cs_init_real"], r["cs"], f))
    if chosen:
        epochs = chosen[0]
        high = sel.get((epochs, 20.0), {})
        for low_t in (1.0, 4.0):
            for f in SELECT_FACTORS:
                lines.append(claim_row(out, protocol(epochs, 20.0),
                                       f"a high KD temperature suits pruned labels (T 20 − T {low_t:g} > 0)",
                                       f"IPC 10, {f:g}×, E {epochs}, **holdout**",
                                       paired(high, sel.get((epochs, low_t), {}), f)))
    return "\n".join(lines)


def run_commits(args) -> list[str]:
    """The code commits recorded by the finished runs (results.json provenance)."""
    return sorted({finished_results(f.parent).get("provenance", {}).get("commit", "unknown")
                   for f in Path(args.runs).glob("*/results.json")})


def compute_seconds(args) -> float:
    """Sum of the stage seconds recorded by every run directory of the study (their stages.json)."""
    return sum(v.get("seconds") or 0.0 for f in Path(args.runs).glob("*/stages.json")
               for v in ledger(f.parent).values())


def write(args, t0: float, status: str) -> None:
    """Rewrite the section from the runs that have finished."""
    sel = selection_results(args)
    chosen = choose(args, sel)
    teacher = read_json(Path(args.runs) / "base" / "teacher" / "teacher.json")
    res = {}
    if chosen:
        for ipc, seeds in ((10, args.seeds), (50, args.ipc50_seeds)):
            r = report_results(args, ipc, seeds, *chosen)
            if any(r.values()):
                res[ipc] = r
    done = {ipc: sorted(r["cs"]) for ipc, r in res.items()}
    hp = (f"E = {chosen[0]} relabel (= student) epochs, T = {chosen[1]:g}" if chosen else
          "not yet chosen (selection in progress)")
    if chosen and chosen[0] == max(args.epochs_grid):
        hp += (f" (E is the longest in the grid {args.epochs_grid}: longer training may be better still; "
               "not searched, for compute)")
    head = header("LPLD study on Fashion-MNIST (validation-selected hyperparameters, paired seeds)",
                  commit=f"{args.commit} (runs made by {', '.join(run_commits(args)) or '–'})") + (
        f"Status: {status}; report seeds finished: {done or 'none'}.  \n"
        f"Teacher: ConvNet-64, {teacher['epochs']} epochs without {args.holdout:,} held-out train images, top-1 "
        f"{100 * teacher['top1']:.2f} % on test. Student ConvNet-32, AdamW; CutMix 0.5; recover "
        f"{args.iterations} / {args.iterations_ipc50} iterations at IPC 10 / 50.  \n"
        f"Chosen on the holdout split: {hp}.  \n"
        f"Compute: {compute_seconds(args) / 60:.0f} min recorded by the runs, {(time.time() - t0) / 60:.1f} min this "
        "invocation.")
    rows: list[dict] = []
    parts = [
        head,
        f"### Selection (cs, IPC 10; top-1 % on the **holdout** split, {args.holdout // 10} per class)\n\n"
        "Chosen: the best mean of 1× and 40× over the seeds that finished the grid.\n\n"
        + (selection_table(args, sel, chosen, rows) if sel else "(no run finished)"),
    ]
    if res:
        parts.append("### Report (top-1 % on the test split; mean ± std over the seeds listed, "
                     "the same seeds for every source)\n\n" + report_table(args, res, chosen, rows))
    if res or chosen:
        parts.append("### Claims (paired over seeds: same seed, same teacher, for both sides)\n\n"
                     "95 % t-interval of the per-seed difference; **held** / **did not hold** when it lies wholly on "
                     "one side of the threshold. Temperature rows: holdout accuracy.\n\n"
                     + claims_table(args, res, sel, chosen, rows))
    write_section(Path(args.out), "lpld_fmnist", "\n\n".join(parts), rows, commit=args.commit)


def main(argv=None) -> None:
    args = parse_args(argv)
    args.commit = git_commit()  # the code this process imported, even if the checkout moves on while it runs
    tune_malloc()  # as the labeldistill command does (see bench/malloc.py)
    torch.set_num_threads(1)
    t0 = time.time()
    if args.collect:
        write(args, t0, "written from finished runs by --collect")
        return
    base = config(args, "base", 0, overrides(args, 10, args.epochs_grid[0]) + ["recover.modes=[]", "prune.factors=[1]"])
    run_stage(base, "squeeze")
    run_stage(base, "class-stats")
    for seed in args.select_seeds:
        run_selection_seed(args, seed)
        write(args, t0, f"selection: seed {seed} done")
    chosen = choose(args, selection_results(args))
    for ipc, seeds in ((10, args.seeds), (50, args.ipc50_seeds)):
        for seed in seeds:
            run_report_seed(args, ipc, seed, *chosen)
            write(args, t0, f"running: IPC {ipc} seed {seed} done")
    write(args, t0, "complete")


if __name__ == "__main__":
    main()
