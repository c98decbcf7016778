"""Every way of paying for labels on one axis of bytes (issue #15 item 6; section ``label_study``).

Fashion-MNIST, IPC 10, images ``cs`` and ``random_real``; per seed one resumable main job (codecs × prune
factors, two more student losses, hard-label baselines), optionally LD / RR runs (``--ld-run``) and other run
directories (``--extra-runs``). The section (leaderboard, paired comparisons, best setting at label bytes ≤
image bytes) and the plot are rewritten from the finished runs after every seed.

    python -m bench.label_study                          # 3 seeds, about 40 CPU-minutes at one thread
    python -m bench.label_study --write-only             # the section and plot from the finished runs only
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.study import REPO, header, parser, ledger, paired_by_seed, paired_interval, result_row, seed_run_from, verdict, write_section
from labeldistill import load_config, read_results, run, run_stage
from labeldistill.io import human_bytes, read_json
from labeldistill.leaderboard import format_leaderboard, leaderboard, plot_leaderboard
from labeldistill.runtime import tune_malloc

MODES = ["cs", "random_real"]
CODECS = ["fp16", "int8", "int4", "top2-int8"]
FACTORS = [1, 10, 40]
LOSSES = ["soft_ce", "gift"]
LOSS_FACTOR = 40
REAL_EPOCHS = 2
DEMO = REPO / "configs" / "fmnist_demo.yaml"
ANCHORS = {"DC": 0.823, "DSA": 0.846}  # docs/anchors.md §1: F-MNIST IPC 10, hard labels


def job_overrides(runs: Path, seed: int, threads: int) -> list[str]:
    """The main job of one seed (every codec × factor, hard-label baselines)."""
    return [f"run_dir={runs / f's{seed}'}", "name=label_study", f"seed={seed}", f"threads={threads}", "device=cpu",
            f"recover.modes=[{', '.join(MODES)}]", "recover.ipc=10", "recover.iterations=500",
            "recover.vectorize=10", "relabel.epochs=300", "relabel.cutmix=0.5",
            f"prune.factors=[{', '.join(map(str, FACTORS))}]", f"prune.logits=[{', '.join(CODECS)}]",
            "hard_label.enabled=true", f"hard_label.real_epochs={REAL_EPOCHS}"]


def loss_dir(runs: Path, seed: int, loss: str) -> Path:
    return runs / f"s{seed}_loss-{loss}"


def seed_base(runs: Path, threads: int) -> dict:
    """Squeeze (and class statistics) once in ``<runs>/base``; returns the teacher info."""
    cfg = load_config(DEMO, [f"run_dir={runs / 'base'}", f"threads={threads}", "device=cpu", "recover.modes=[cs]"])
    teacher = run_stage(cfg, "squeeze")
    run_stage(cfg, "class-stats")
    return teacher


def run_seed(runs: Path, seed: int, threads: int) -> None:
    """The seed's main job, then each other loss at fp16 / ``LOSS_FACTOR``× on a copy of its run directory."""
    root = runs / f"s{seed}"
    cfg = load_config(DEMO, job_overrides(runs, seed, threads))
    seed_run_from(runs / "base", root, ["teacher", "class_stats"], cfg)
    run(cfg)
    for loss in LOSSES:
        dest = loss_dir(runs, seed, loss)
        over = job_overrides(runs, seed, threads)[1:] + [
            f"run_dir={dest}", f"validate.loss={loss}", f"prune.factors=[{LOSS_FACTOR}]", "prune.logits=[fp16]",
            "hard_label.enabled=false"]
        cfg = load_config(DEMO, over)
        if not dest.exists():  # everything but the results: images and stores are reused, only validate runs
            results = {"validate", "hard_label", "results.json", "report.md", "plots", "stages.json"}
            seed_run_from(root, dest, [p.name for p in root.iterdir() if p.name not in results], cfg)
        run(cfg)


def finished_seeds(runs: Path, seeds: list[int]) -> list[int]:
    """Seeds whose main job and loss runs have all written ``results.json``."""
    return [s for s in seeds if (runs / f"s{s}" / "results.json").is_file()
            and all((loss_dir(runs, s, loss) / "results.json").is_file() for loss in LOSSES)]


def stage_minutes(runs: Path, seeds: list[int]) -> float:
    """Wall minutes recorded by the finished seeds' runs (``stages.json`` and the hard-label rows)."""
    total = 0.0
    for s in seeds:
        total += sum(v.get("seconds") or 0 for v in ledger(runs / f"s{s}").values())
        for loss in LOSSES:  # a loss run's ledger is a copy of the seed's plus its own validate rows
            own = ledger(loss_dir(runs, s, loss))
            total += sum(v.get("seconds") or 0 for m in MODES for k, v in own.items()
                         if k.startswith(f"validate[{m} x{LOSS_FACTOR} "))
        total += sum(r.get("seconds", 0) for r in read_results(runs / f"s{s}").get("hard_label", []))
    return total / 60


def reading(lo: float, hi: float, claim: bool = False) -> str:
    """A claim's verdict (``claim``: that the difference is > 0), else the sign when the interval excludes 0."""
    v = verdict(lo, hi)
    return v if claim else {"held": "> 0", "did not hold": "< 0"}.get(v, v)


def per_seed(runs: Path, seeds: list[int]) -> dict:
    """``{(mode, factor, codec, loss): {seed: top1}}`` and ``{("hard", images): {seed: top1}}``."""
    out: dict = {}
    for s in seeds:
        dirs = [runs / f"s{s}"] + [loss_dir(runs, s, loss) for loss in LOSSES]
        for d in dirs:
            for r in read_results(d)["rows"]:
                key = (r["recover"], int(r["prune_factor"]), r["logits"], r.get("loss", "kl"))
                out.setdefault(key, {})[s] = r["top1"]
        for r in read_results(runs / f"s{s}").get("hard_label", []):
            out.setdefault(("hard", r["images"]), {})[s] = r["top1"]
    return out


def protocol(key: tuple) -> str:
    """The evaluation protocol of a :func:`per_seed` key: this project's student recipe."""
    if key[0] == "hard":
        return "labeldistill hard-label (ConvNet-32 student, cross-entropy, 300 epochs; 2 on real-train)"
    return f"labeldistill-validate (ConvNet-32 student, AdamW, 300 epochs, T 4, loss {key[3]})"


def seed_rows(tops: dict) -> list[dict]:
    """JSON rows of every setting's per-seed top-1 (%)."""
    names = ("images", "factor", "codec", "loss")
    return [result_row(dict(zip(names, k)) if k[0] != "hard" else {"labels": "hard", "images": k[1]},
                       {s: 100 * v for s, v in by_seed.items()}, protocol(k), unit="top-1 %")
            for k, by_seed in tops.items()]


def comparisons(tops: dict, out: list) -> str:
    """Paired differences over seeds: codecs vs fp16, losses vs KL, cs vs random_real (IOR), HLR (and their
    JSON rows in ``out``)."""
    tests = [(f"{m} {f}×: {c} − fp16", (m, f, c, "kl"), (m, f, "fp16", "kl"), False)
             for m in MODES for f in FACTORS for c in CODECS[1:]]
    tests += [(f"{m} {LOSS_FACTOR}× fp16: loss {loss} − kl", (m, LOSS_FACTOR, "fp16", loss),
               (m, LOSS_FACTOR, "fp16", "kl"), False) for m in MODES for loss in LOSSES]
    tests += [(f"IOR {f}× {c}: cs − random_real", ("cs", f, c, "kl"), ("random_real", f, c, "kl"), True)
              for f in FACTORS for c in CODECS]
    tests.append(("IOR hard labels: cs − random_real", ("hard", "cs"), ("hard", "random_real"), True))
    tests += [(f"HLR {m}: real-train − {m} (hard labels)", ("hard", "real-train"), ("hard", m), False) for m in MODES]
    lines = ["| comparison (paired by seed) | seeds | mean (pt) | 95 % t-interval (pt) | reading |", "|---|---|---|---|---|"]
    for name, ka, kb, claim in tests:
        d = paired_by_seed(tops.get(ka, {}), tops.get(kb, {}))
        if not d:
            lines.append(f"| {name} | – | – | – | – |")
            continue
        m, lo, hi = paired_interval(list(d.values()))
        out.append(result_row({"comparison": name}, d, protocol(ka), paired=True, verdict=reading(lo, hi, claim),
                              unit="points"))
        ci = f"[{lo:+.1f}, {hi:+.1f}]" if len(d) > 1 else "–"
        lines.append(f"| {name} | {len(d)} | {m:+.1f} | {ci} | {reading(lo, hi, claim)} |")
    return "\n".join(lines)


def _key(r: dict) -> tuple | None:
    """The :func:`per_seed` key of a leaderboard row (``None`` for rows without per-seed values here)."""
    if r["kind"] == "hard-label" and not r["images"].startswith("real-train"):
        return ("hard", r["images"])
    if r["kind"] != "main":
        return None
    factor = int(float(r["labels"].split()[0][1:]))
    loss = r["labels"].split("loss ")[1] if "loss " in r["labels"] else "kl"
    return (r["images"], factor, r["codec"], loss)


def _name(r: dict) -> str:
    return f"{r['images']} + {r['labels']}" + (f" ({r['codec']})" if r["codec"] != "-" else "")


def _vs_anchor(r: dict, tops: dict) -> str:
    """The row's top-1 against DC and DSA: a one-sample 95 % t-interval over its seeds."""
    vals = list(tops.get(_key(r), {}).values()) if _key(r) else []
    if len(vals) < 2:
        return f"top-1 {100 * r['top1_mean']:.1f} % ({r['n']} value(s): no interval)"
    out = []
    for name, a in ANCHORS.items():
        m, lo, hi = paired_interval([100 * (v - a) for v in vals])
        out.append(f"{name} {100 * a:.1f} %: {m:+.1f} pt [{lo:+.1f}, {hi:+.1f}] → "
                   + {"held": "beats it", "did not hold": "below it", "not resolved": "not resolved"}[
                       reading(lo, hi, True)])
    return f"top-1 {100 * r['top1_mean']:.1f} ± {100 * r['top1_std']:.1f} %; vs " + "; ".join(out)


def headline(table: list[dict], tops: dict) -> str:
    """The best setting at label bytes ≤ image bytes, the best overall, the best hard-label set, and each
    against the image-distillation anchors."""
    known = [r for r in table if r["total_bytes"] is not None and not r["images"].startswith("real-train")]
    if not known:
        return "No finished runs yet."
    cheap = [r for r in known if r["label_bytes"] <= r["image_bytes"]]
    lines = []
    if cheap:
        b = max(cheap, key=lambda r: r["top1_mean"])
        lines.append(f"- **Best top-1 at label bytes ≤ image bytes**: {_name(b)}, labels "
                     f"{human_bytes(b['label_bytes'])} ≤ images {human_bytes(b['image_bytes'])}: "
                     f"{_vs_anchor(b, tops)}.")
    best = max(known, key=lambda r: r["top1_mean"])
    lines.append(f"- **Best top-1 of any setting**: {_name(best)}, {human_bytes(best['total_bytes'])} in all: "
                 f"{_vs_anchor(best, tops)}.")
    hard = [r for r in known if r["kind"] == "hard-label"]
    if hard:
        h = max(hard, key=lambda r: r["top1_mean"])
        lines.append(f"- **Best with hard labels only** (the anchors' setting: no stored labels): {_name(h)}: "
                     f"{_vs_anchor(h, tops)}.")
    beats = [r for r in known if r["top1_mean"] > ANCHORS["DSA"]]
    lines.append(f"- Settings whose mean top-1 exceeds DSA's 84.6 %: {len(beats)} of {len(known)}"
                 + (f" ({', '.join(_name(r) for r in beats[:6])}{', ...' if len(beats) > 6 else ''})" if beats else "")
                 + f"; exceeding DC's 82.3 %: {sum(r['top1_mean'] > ANCHORS['DC'] for r in known)}.")
    return "\n".join(lines)


def render(args: argparse.Namespace, runs: Path, t0: float) -> None:
    """Write the section and the plot from the finished seeds (and the optional learn-labels / extra runs)."""
    done = finished_seeds(runs, args.seeds)
    dirs = [d for s in done for d in [runs / f"s{s}"] + [loss_dir(runs, s, loss) for loss in LOSSES]]
    dirs += [Path(d) for d in ([args.ld_run] if args.ld_run else []) + list(args.extra_runs)]
    state = "complete" if done == args.seeds else f"in progress: seeds {done} of {args.seeds} finished"
    teacher = read_json(runs / "base" / "teacher" / "teacher.json") if (runs / "base" / "teacher").is_dir() else {}
    head = (header("Label study: every way of paying for labels on one axis of bytes (Fashion-MNIST, IPC 10)")
            + f"Seeds: {state}. Wall time: {(time.time() - t0) / 60:.1f} min this invocation, "
            f"{stage_minutes(runs, done):.1f} min recorded by the finished runs (1 thread, 2 shared cores).\n\n"
            f"Setting: teacher ConvNet-64 ({teacher.get('epochs', '?')} epochs, top-1 "
            f"{100 * teacher.get('top1', float('nan')):.2f} %); images `cs` and `random_real`, IPC 10; relabel 300 "
            f"epochs with CutMix; student ConvNet-32, AdamW, T = 4; factors {FACTORS} × codecs {CODECS} (loss KL); "
            f"losses soft_ce and gift at fp16 {LOSS_FACTOR}×; hard-label baselines (cross-entropy; {REAL_EPOCHS} "
            "epochs on the 60,000 real images). Top-1 on the test split, mean ± std over seeds. IOR and HLR: "
            "DD-Ranking's (arXiv 2505.13300), HLR lower-better. Anchors DC 82.3 %, DSA 84.6 % (ConvNet-128, hard "
            "labels; [docs/anchors.md](docs/anchors.md) §1): a comparison, not a reproduction.\n\n")
    if not dirs:
        write_section(Path(args.out), "label_study", head + "No seed has finished yet.", [])
        return
    table = leaderboard(dirs)
    tops = per_seed(runs, done)
    rows = seed_rows(tops)
    plot = Path(args.plot)
    plot_leaderboard(table, plot, title=f"Fashion-MNIST IPC 10: top-1 vs bytes ({len(done)} seed(s))")
    link = plot.relative_to(REPO) if plot.is_relative_to(REPO) else plot
    hook = "Other run directories (e.g. `generator` / `online` label sources) join with `--extra-runs`."
    body = (head + headline(table, tops) + f"\n\n![top-1 vs total bytes]({link})\n\n### Leaderboard\n\n"
            + format_leaderboard(table) + "\n### Paired comparisons over seeds\n\n"
            "Differences in points; an interval that excludes 0 gives the sign (IOR rows: `held` = cs beats "
            "random_real), otherwise `not resolved`.\n\n" + comparisons(tops, rows) + f"\n\n{hook}\n")
    write_section(Path(args.out), "label_study", body, rows)


def main() -> None:
    ap = parser(__doc__, runs="bench_label_study", seeds=[0, 1, 2], threads=True, render="write-only")
    ap.add_argument("--ld-run", help="a finished learn-labels run directory (e.g. LD/RR at N = 100)")
    ap.add_argument("--extra-runs", nargs="*", default=[], help="more run directories for the table and plot")
    ap.add_argument("--plot", default=str(REPO / "docs" / "label_study.png"))
    args = ap.parse_args()
    tune_malloc()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    runs = Path(args.runs)
    if not args.write_only:
        seed_base(runs, args.threads)
        for seed in args.seeds:
            run_seed(runs, seed, args.threads)
            render(args, runs, t0)
    render(args, runs, t0)


if __name__ == "__main__":
    main()
