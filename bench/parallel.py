"""validate.parallel (section ``parallel``): wall time and peak memory of 2 students on 2 torchrun processes vs
1 process, on one tiny Fashion-MNIST run.

    python -m bench.parallel
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.study import REPO, header, write_section

OVERRIDES = [
    "data.train_subset=2000", "squeeze.epochs=1", "squeeze.model.args.width=8", "recover.ipc=10",
    "recover.iterations=20", "recover.modes=[lpld]", "relabel.epochs=20", "prune.factors=[1]",
    # two students of equal cost (one model, two learning rates: per-student recipes get their own folders)
    "validate.students=[{name: convnet, args: {width: 32}, lr: 0.002}, {name: convnet, args: {width: 32}, lr: 0.004}]",
    "validate.epochs=300", "validate.checkpoint_seconds=600", "threads=1",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
MEASURE = ("import resource, subprocess, sys, time; t = time.time(); r = subprocess.run(sys.argv[1:]); "
           "print(time.time() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, r.returncode)")


def _measure(cmd: list[str]) -> tuple[float, float]:
    """``(wall seconds, peak MiB of the largest child)`` of ``cmd`` run in a fresh wrapper process."""
    out = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, env=ENV)
    wall, mib, rc = out.stdout.strip().splitlines()[-1].split()
    if rc != "0":
        raise SystemExit(f"{cmd} failed:\n{out.stderr[-3000:]}")
    return float(wall), float(mib)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", action="store_true", help="print, do not write BENCHMARKS.md")
    args = ap.parse_args()
    config = str(REPO / "configs" / "fmnist_demo.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        run = [f"run_dir={Path(tmp) / 'run'}", *OVERRIDES]
        subprocess.run([sys.executable, "-m", "labeldistill.cli", "run", config, *run], check=True, env=ENV,
                       capture_output=True)
        validate = ["-m", "labeldistill.cli", "validate", config, *run, "--force"]
        one = _measure([sys.executable, *validate])
        two = _measure([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                        *validate, "validate.parallel=students"])
    ratio, mem = two[0] / one[0], two[1] / one[1]
    rows = [{"processes": 1, "parallel": "data", "wall_s": round(one[0], 1), "peak_mib": round(one[1])},
            {"processes": 2, "parallel": "students", "wall_s": round(two[0], 1), "peak_mib": round(two[1])}]
    body = (header("validate.parallel: students — 2 students on 2 processes vs 1 process",
                   f" (load average at the end {os.getloadavg()[0]:.1f})") +
            "\nTwo validate units of equal cost (ConvNet width 32 at lr 0.002 and 0.004, 300 epochs, lpld IPC 10, Fashion-MNIST), `OMP_NUM_THREADS=1`"
            " per process; wall = the whole `validate --force` command; peak = largest child `ru_maxrss`.\n\n"
            "| processes | parallel | wall s | peak MiB per process |\n|---|---|---|---|\n" +
            "".join(f"| {r['processes']} | {r['parallel']} | {r['wall_s']} | {r['peak_mib']} |\n" for r in rows) +
            f"\nWall ratio 2 processes ÷ 1: **{ratio:.2f}** (target ≤ 0.6); peak memory per process ÷ 1 process: "
            f"**{mem:.2f}**.\n")
    print(body)
    if not args.no_write:
        write_section(REPO / "BENCHMARKS.md", "parallel", body, rows)


if __name__ == "__main__":
    main()
