"""The dry run's time estimate against the real run (section ``time_estimate``): estimate ÷ the seconds each
stage records in ``stages.json``, per stage and in all, for the demo (shortened) and a 224 px synthetic
configuration, one thread.

    python -m bench.time_estimate            # both configurations
    python -m bench.time_estimate --only demo --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path


from bench.study import REPO, header, ledger, result_row, write_section
from bench.scale import overrides as scale_overrides, register_random_dataset

DEMO_OVERRIDES = ["threads=1", "device=cpu", "squeeze.epochs=1", "recover.iterations=100", "relabel.epochs=50",
                  "validate.epochs=50"]
PX224 = {"classes": 100, "ipc": 2, "image_size": 224, "real_per_class": 5, "teacher_epochs": 1,
         "iterations": 40, "epochs": 5, "threads": 1}
PX224_EXTRA = ["validate.epochs=3"]


def actual_seconds(stage: str, ledger: dict) -> float | None:
    """The recorded seconds of a plan stage row: its own key, or the sum of its units (``validate[...]``)."""
    if stage in ledger:
        return ledger[stage]
    parts = [v for k, v in ledger.items() if k.startswith(stage + "[") and v is not None]
    return sum(parts) if parts else None


def estimate_and_run(cfg) -> dict:
    """Dry-run estimate, then the real run of ``cfg`` in a fresh run directory: ``{"rows": [{"stage", "estimate",
    "actual", "ratio"}], "estimate_total", "actual_total", "wall", ...}`` (seconds)."""
    from labeldistill import run
    from labeldistill.plan import add_time_estimate, plan_run

    shutil.rmtree(cfg.run_path, ignore_errors=True)
    load_before = os.getloadavg()
    plan = plan_run(cfg)
    add_time_estimate(cfg, plan)
    t0 = time.perf_counter()
    run(cfg)
    wall = time.perf_counter() - t0
    seconds = {k: v.get("seconds") for k, v in ledger(cfg.run_path).items()}
    rows = []
    for s in plan["stages"]:
        act = actual_seconds(s["stage"], seconds)
        rows.append({"stage": s["stage"], "estimate": s["seconds"], "actual": act,
                     "ratio": s["seconds"] / act if act else None})
    est_total = sum(r["estimate"] for r in rows if r["actual"] is not None)
    act_total = sum(v for v in seconds.values() if v is not None)
    return {"rows": rows, "estimate_total": est_total, "actual_total": act_total, "wall": wall,
            "probe_seconds": plan["time"]["probe_seconds"], "load_before": load_before,
            "load_after": os.getloadavg(), "rates": plan["time"]["rates"]}


def demo_config(work: Path):
    from labeldistill.config import load_config

    return load_config(REPO / "configs" / "fmnist_demo.yaml", [f"run_dir={work / 'demo'}"] + DEMO_OVERRIDES)


def px224_config(work: Path):
    from labeldistill.config import load_config

    register_random_dataset(PX224["classes"], PX224["real_per_class"])
    return load_config(None, scale_overrides({**PX224, "run_dir": str(work / "px224")}) + PX224_EXTRA)


def table(res: dict) -> list[str]:
    """Markdown rows: stage, estimate, actual, ratio; then the total and the whole job's wall time."""
    out = ["| stage | estimate (s) | actual (s, stages.json) | estimate ÷ actual |", "|---|---|---|---|"]
    for r in res["rows"]:
        act = "—" if r["actual"] is None else f"{r['actual']:.2f}"
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}"
        out.append(f"| {r['stage']} | {r['estimate']:.2f} | {act} | {ratio} |")
    out.append(f"| **all stages** | {res['estimate_total']:.2f} | {res['actual_total']:.2f} | "
               f"**{res['estimate_total'] / res['actual_total']:.2f}** |")
    out.append(f"| whole job (wall: also data and model loading, writes, report) | {res['estimate_total']:.2f} | {res['wall']:.2f} | "
               f"{res['estimate_total'] / res['wall']:.2f} |")
    return out


def section(results: dict[str, dict]) -> str:
    loads = [x for r in results.values() for x in (r["load_before"][0], r["load_after"][0])]
    body = header("Time estimate: dry run vs actual run",
                  f"; 1-minute load average {min(loads):.1f}–{max(loads):.1f} during the runs (other jobs shared "
                  "the CPUs)")
    body += ("\nThe dry run's time estimate (`labeldistill run CONFIG --dry-run`: a few real steps of each stage "
             "timed, × the planned steps; `src/labeldistill/plan/timing.py`) against the stages' own wall "
             "seconds in `stages.json` of the real run, in the same process right after it, 1 thread. "
             "Target: estimate ÷ actual within 0.7–1.3 per stage and in all.\n")
    notes = {"demo": f"`configs/fmnist_demo.yaml` with `{' '.join(DEMO_OVERRIDES)}`",
             "px224": (f"224 px synthetic (`bench/scale.py`'s `bench-random`, {PX224['classes']} classes, IPC "
                       f"{PX224['ipc']}, {PX224['real_per_class']} train images per class, ConvNet-16 depth 5 teacher "
                       f"and student, {PX224['iterations']} recover iterations, relabel {PX224['epochs']} epochs, "
                       f"`{' '.join(PX224_EXTRA)}`)")}
    for name, res in results.items():
        body += (f"\n### {name}: {notes[name]}\n\nLoad average (1 min) {res['load_before'][0]:.1f} before, "
                 f"{res['load_after'][0]:.1f} after; the probe took {res['probe_seconds']:.1f} s.\n\n")
        body += "\n".join(table(res)) + "\n"
    return body


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["demo", "px224"], action="append", help="run only these configurations")
    ap.add_argument("--work", default="/tmp/time_estimate", help="run directories (removed and remade)")
    ap.add_argument("--no-write", action="store_true", help="print, do not write BENCHMARKS.md")
    args = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    from labeldistill.runtime import set_threads, tune_malloc

    tune_malloc()  # as the labeldistill command does
    set_threads(1)
    work = Path(args.work)
    results = {}
    for name in args.only or ["demo", "px224"]:
        cfg = demo_config(work) if name == "demo" else px224_config(work)
        results[name] = estimate_and_run(cfg)
        print(name, json.dumps(results[name], indent=1, default=str), flush=True)
        body = section(results)  # written after each configuration: a later failure keeps the earlier ones
        if not args.no_write:
            write_section(REPO / "BENCHMARKS.md", "time_estimate", body, [
                result_row({"config": n, "stage": r["stage"]}, estimate_s=r["estimate"], actual_s=r["actual"],
                           ratio=r["ratio"]) for n, res in results.items() for r in res["rows"]])
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
