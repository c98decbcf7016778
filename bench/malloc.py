"""What ``labeldistill.runtime.tune_malloc`` buys on CPU (section ``malloc``): glibc's default allocator vs raised
thresholds, each in fresh processes, alternating, on an eval pass, 300 student steps and 20 LD outer steps.

    python -m bench.malloc
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.study import REPO, header, result_row, write_section

WORKLOADS = ("eval", "train", "ld")


def _measure(fn) -> dict:
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    fn()
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    return {"wall": t1 - t0, "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime,
            "minflt": r1.ru_minflt - r0.ru_minflt}


def probe(tuned: bool) -> dict:
    """Run the workloads in this process (after ``tune_malloc`` when ``tuned``)."""
    from labeldistill.config import ModelConfig
    from labeldistill.learn_labels.ld import profile_outer_step
    from labeldistill.learn_labels.learners import build_network
    from labeldistill.runtime import tune_malloc

    applied = tune_malloc() if tuned else False
    torch.set_num_threads(1)
    torch.manual_seed(0)
    arch = ModelConfig("convnet", {"width": 32, "depth": 3, "norm": "instance"})
    make = lambda: build_network(arch, 10, (1, 28, 28), torch.device("cpu"))  # noqa: E731
    model = make()
    x = torch.randn(10_000, 1, 28, 28)
    out = {"applied": applied}

    def ev():
        with torch.no_grad():
            for i in range(0, len(x), 1000):
                model(x[i:i + 1000])

    def tr():
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        soft = torch.softmax(torch.randn(len(x), 10), 1)
        for s in range(300):
            idx = torch.arange(s * 50, s * 50 + 50) % len(x)
            loss = F.kl_div(F.log_softmax(model(x[idx]), 1), soft[idx], reduction="batchmean")
            opt.zero_grad()
            loss.backward()
            opt.step()

    def ld():
        labels = torch.full((50, 10), 0.1)
        profile_outer_step(make, x[:50], labels, x[:256], torch.randint(0, 10, (256,)), 1, 50, repeats=20)

    ev()  # warm-up (first-touch of the weights and the thread pool)
    for name, fn in zip(WORKLOADS, (ev, tr, ld)):
        out[name] = _measure(fn)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per setting")
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    ap.add_argument("--probe", choices=["default", "tuned"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe == "tuned")))
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LABELDISTILL_MALLOC"}
    env["OMP_NUM_THREADS"] = "1"
    runs: dict[str, list[dict]] = {"default": [], "tuned": []}
    for _ in range(args.rounds):
        for mode in ("default", "tuned"):
            res = subprocess.run([sys.executable, "-m", "bench.malloc", "--probe", mode], capture_output=True, text=True,
                                 env=env, check=True)
            runs[mode].append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(mode, runs[mode][-1], flush=True)
    if not all(r["applied"] for r in runs["tuned"]):
        raise SystemExit("tune_malloc() did not apply on this machine (not glibc?): nothing to compare")

    def best(mode: str, w: str) -> dict:  # the fastest round: the least disturbed by other jobs
        return min((r[w] for r in runs[mode]), key=lambda m: m["wall"])

    lines = ["| workload | default: wall s (user / sys) | minor faults | tuned: wall s (user / sys) | minor faults "
             "| default ÷ tuned (wall) |", "|---|---|---|---|---|---|"]
    for w in WORKLOADS:
        d, t = best("default", w), best("tuned", w)
        lines.append(f"| {w} | {d['wall']:.2f} ({d['user']:.2f} / {d['sys']:.2f}) | {d['minflt']:,} "
                     f"| {t['wall']:.2f} ({t['user']:.2f} / {t['sys']:.2f}) | {t['minflt']:,} "
                     f"| {d['wall'] / t['wall']:.2f}× |")
    body = (header("Allocator setting (`tune_malloc`)", f", load average {os.getloadavg()[0]:.1f} at the end")
            + "Each setting in a fresh process, 1 torch thread, best of "
            f"{args.rounds} alternating rounds. 'default' = glibc's malloc as shipped; 'tuned' = "
            "`labeldistill.runtime.tune_malloc()` (called by the `labeldistill` command; "
            "`LABELDISTILL_MALLOC=system` turns it off). Workloads: see `bench/malloc.py`.\n\n" + "\n".join(lines))
    write_section(Path(args.out), "malloc", body, [result_row({"workload": w}, default=best("default", w),
                                                              tuned=best("tuned", w)) for w in WORKLOADS])
    print(body)


if __name__ == "__main__":
    main()
