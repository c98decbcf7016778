"""Augmentation defaults that follow the data, on mnist-5k (section ``mnist_defaults``): ``before`` (flips, crops
down to 8 %) vs ``after`` (no flip, crops ≥ 25 %), with the run's own teacher and with one trained elsewhere;
paired seeds, 95 % t-intervals. Each run is a ``labeldistill run`` child under ``--runs``.

    OMP_NUM_THREADS=1 nohup python -m bench.mnist_defaults > /tmp/mnist_defaults.log 2>&1 &
    python -m bench.mnist_defaults --write-only
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.study import (REPO, compare, finished_results, header, interval_text, mean_std, parser, result_row,
                         run_cli, write_section)

CONFIG = REPO / "configs" / "fmnist_demo.yaml"
BASE = ["data.dataset=mnist-5k", "recover.modes=[random_real]", "recover.ipc=10", "prune.factors=[1]", "threads=1"]
# the fixed defaults before they followed the data (still Fashion-MNIST's resolved values)
BEFORE = ["squeeze.flip=true", "recover.flip=true", "relabel.flip=true", "relabel.crop_scale=[0.08, 1.0]"]
ARMS = {"before": BEFORE, "after": []}  # after: every augmentation key unset, resolved from mnist-5k
TEACHERS = ("project", "elsewhere")
ELSEWHERE_SEED = 100


def parse_args(argv=None) -> argparse.Namespace:
    ap = parser(__doc__, runs="bench_mnist_defaults", seeds=[0, 1, 2], render="write-only")
    ap.add_argument("--teacher-epochs", type=int, default=5, help="squeeze epochs of the project's teacher")
    ap.add_argument("--elsewhere-epochs", type=int, default=15, help="squeeze epochs of the teacher from elsewhere")
    ap.add_argument("--relabel-epochs", type=int, default=300, help="relabel (= student) epochs")
    ap.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra config overrides for every run (e.g. a smoke run: data.train_subset=200)")
    return ap.parse_args(argv)


def elsewhere_checkpoint(args) -> Path:
    return Path(args.runs) / "elsewhere" / "teacher" / "model.safetensors"


def cli(args, verb: str, run_dir: Path, overrides: list[str]) -> None:
    """``labeldistill <verb> fmnist_demo.yaml`` in a child process, one thread, into ``run_dir``."""
    run_cli(verb, CONFIG, [*BASE, f"relabel.epochs={args.relabel_epochs}", *overrides, *args.override,
                           f"run_dir={run_dir}"])


def arm_overrides(args, teacher: str, arm: str, seed: int) -> list[str]:
    own = [f"squeeze.epochs={args.teacher_epochs}"] if teacher == "project" else \
        [f"squeeze.checkpoint={elsewhere_checkpoint(args)}"]
    return [*own, *ARMS[arm], f"seed={seed}"]


def run_dir(args, teacher: str, arm: str, seed: int) -> Path:
    return Path(args.runs) / f"{teacher}_{arm}_s{seed}"


def run_all(args) -> None:
    """The teacher from elsewhere once, then per seed both arms for both teachers."""
    cli(args, "squeeze", Path(args.runs) / "elsewhere",
        [f"squeeze.epochs={args.elsewhere_epochs}", "squeeze.flip=false", f"seed={ELSEWHERE_SEED}"])
    for seed in args.seeds:
        for teacher in TEACHERS:
            for arm in ARMS:
                cli(args, "run", run_dir(args, teacher, arm, seed), arm_overrides(args, teacher, arm, seed))
        write(args, f"running: seed {seed} done")


def read_run(root: Path) -> dict | None:
    """Teacher and student top-1 (fractions) and the code commit of a finished run, else ``None``."""
    res = finished_results(root)
    if res is None:
        return None
    return {"teacher": res["teacher"]["top1"], "student": res["rows"][0]["top1"],
            "commit": res.get("provenance", {}).get("commit", "unknown")}


def collect(args) -> dict:
    """``{teacher: {arm: {seed: run}}}`` over the seeds whose two arms both finished (paired)."""
    out: dict = {t: {a: {} for a in ARMS} for t in TEACHERS}
    for t in TEACHERS:
        for seed in args.seeds:
            runs = {a: read_run(run_dir(args, t, a, seed)) for a in ARMS}
            if all(runs.values()):
                for a, r in runs.items():
                    out[t][a][seed] = r
    return out


def table(args, res: dict, out: list) -> str:
    proto = f"labeldistill-validate (ConvNet-32 student, AdamW, {args.relabel_epochs} epochs)"
    lines = ["| teacher | teacher top-1 before / after | student top-1 before | student top-1 after | "
             "after − before, points: mean [95 % CI] | n | verdict (after > before) |", "|---|---|---|---|---|---|---|"]
    for t in TEACHERS:
        before, after = res[t]["before"], res[t]["after"]
        diffs = {s: 100 * (after[s]["student"] - before[s]["student"]) for s in sorted(before)}
        cols = {f"{who} {arm}": {s: 100 * r[s][who] for s in r} for arm, r in (("before", before), ("after", after))
                for who in ("teacher", "student")}
        out += [result_row({"teacher": t, "measure": k}, col, proto, unit="top-1 %") for k, col in cols.items()]
        v = compare(out, {"teacher": t, "measure": "student after − before"}, diffs, proto) if diffs else "–"
        pct = {k: mean_std(list(c.values()), scale=1, sample=True) for k, c in cols.items()}  # sample std over seeds
        lines.append(f"| {t} | {pct['teacher before']} / {pct['teacher after']} | {pct['student before']} | "
                     f"{pct['student after']} | {interval_text(list(diffs.values()))} | {len(diffs)} | {v} |")
    return "\n".join(lines)


def write(args, status: str) -> None:
    """Rewrite the section from the finished runs."""
    res, rows = collect(args), []
    commits = sorted({r["commit"] for t in res.values() for a in t.values() for r in a.values()})
    done = sorted(res["project"]["before"])
    body = "\n".join([
        header("Augmentation defaults that follow the data (mnist-5k, real digits at IPC 10)"),
        f"Status: {status}; seeds with both arms finished: project teacher {done}, elsewhere "
        f"{sorted(res['elsewhere']['before'])}; runs made by commit(s) {', '.join(commits) or '–'}.  ",
        f"Before: `{' '.join(BEFORE)}`. After: those keys resolved from mnist-5k (no flip, relabel crops "
        f"[0.25, 1.0]). 100 real train digits (IPC 10), {args.relabel_epochs} relabel (= student) epochs, student "
        f"ConvNet-32, top-1 on the 1,000 test digits. Teacher ConvNet-64: `project` trained in each run "
        f"({args.teacher_epochs} epochs), `elsewhere` once without flips ({args.elsewhere_epochs} epochs, seed "
        f"{ELSEWHERE_SEED}). Paired seeds; mean ± sample std; 95 % t-interval of the difference.",
        "", table(args, res, rows)])
    write_section(Path(args.out), "mnist_defaults", body, rows)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.write_only:
        write(args, "written from finished runs by --write-only")
        return
    t0 = time.time()
    run_all(args)
    write(args, f"complete ({(time.time() - t0) / 60:.0f} min wall)")


if __name__ == "__main__":
    main()
