"""Copy the main job's results (``runs/<name>/results.json`` from ``make demo``) into BENCHMARKS.md.

Usage (after the run)::

    python -m bench.demo_table [--run runs/fmnist_demo] [--command "make demo"] [--wall SECONDS]

The section records the command that produced the run, its wall time, the date and this machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.study import REPO, machine, result_row, today, write_section
from labeldistill import read_results
from labeldistill.report import results_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(REPO / "runs" / "fmnist_demo"))
    ap.add_argument("--command", default="make demo")
    ap.add_argument("--wall", type=float, default=None, help="wall time of the command in seconds")
    ap.add_argument("--section", default="demo")
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    args = ap.parse_args()
    res = read_results(args.run)
    t = res["teacher"]
    wall = f"{args.wall / 60:.1f} min" if args.wall else f"{res['seconds'] / 60:.1f} min (stages, from results.json)"
    prov = res.get("provenance", {})
    made = (f"Run made by commit {prov['commit']} (labeldistill {prov['labeldistill']}, torch {prov['torch']}, "
            f"{prov['device']}, {prov['torch_threads']} torch thread(s))  \n" if prov else "")
    body = (f"## Main job: `{args.command}`\n\nDate: {today()}  \n{made}Machine: {machine()}  \n"
            f"Wall time: {wall}\n\n"
            f"Teacher: {t['model']} {t.get('model_args', {})}, {t['epochs']} epochs, top-1 "
            f"{100 * t['top1']:.2f} % on the 10,000 real test images.\n\n" + results_table(res))
    rows = [result_row({k: r.get(k) for k in ("recover", "prune_factor", "logits", "student")},
                       {r.get("seed", 0): 100 * r["top1"]}, f"labeldistill-validate ({r.get('student')} student, "
                       f"{r.get('epochs', '?')} epochs)", unit="top-1 %", row=r) for r in res["rows"]]
    write_section(Path(args.out), args.section, body, rows, command=args.command)
    print(body)


if __name__ == "__main__":
    main()
