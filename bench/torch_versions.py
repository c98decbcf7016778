"""A ConvNet training step under two PyTorch builds on this machine (section ``torch_versions``): new ÷ old
seconds per step (median over alternating child processes), import time and peak memory.

    python -m bench.torch_versions --old /path/to/venv-with-torch-2.13/bin/python [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench.study import REPO, cli_env, command_line, header, result_row, write_section

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
t_import = time.perf_counter() - t0
from labeldistill.models import create_model
torch.set_num_threads(1)
torch.manual_seed(0)
model = create_model("convnet", num_classes=10, in_channels=1, image_size=28, width=64, depth=3, norm="batch")
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
def step():
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
for _ in range(int(sys.argv[2])):
    step()
t = time.perf_counter()
for _ in range(int(sys.argv[1])):
    step()
per_step = (time.perf_counter() - t) / int(sys.argv[1])
print(json.dumps({"torch": torch.__version__, "seconds_per_step": per_step, "import_seconds": t_import,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_child(python: str, steps: int, warmup: int) -> dict:
    """One measurement in a fresh interpreter."""
    r = subprocess.run([python, "-c", CHILD, str(steps), str(warmup)], capture_output=True, text=True, timeout=600,
                       env=cli_env())  # this checkout's src on PYTHONPATH: the other venv need not install it
    if r.returncode != 0:
        raise SystemExit(f"child {python} failed: {r.stderr.strip().splitlines()[-1]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="python of a venv with the old torch")
    ap.add_argument("--new", default=sys.executable, help="python of the venv with the new torch (default: this)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    args = ap.parse_args()
    rows: dict[str, list[dict]] = {"old": [], "new": []}
    for i in range(args.repeats):
        order = ("old", "new") if i % 2 == 0 else ("new", "old")
        for side in order:
            rows[side].append(run_child(getattr(args, side), args.steps, args.warmup))
    ratios = [n["seconds_per_step"] / o["seconds_per_step"] for n, o in zip(rows["new"], rows["old"])]
    med = {s: {k: statistics.median(r[k] for r in rows[s]) for k in ("seconds_per_step", "import_seconds",
                                                                     "peak_rss_mib")} for s in rows}
    body = (
        header("PyTorch builds: a training step under the new and the old torch",
               command=command_line().replace(args.old, "<venv with torch 2.13.0>/bin/python")) + "\n"
        f"ConvNet-64 (depth 3, BatchNorm), batch 128 of 28 × 28 × 1, SGD, 1 torch thread, {args.steps} timed steps "
        f"after {args.warmup} warm-up steps, {args.repeats} alternating repeats, one fresh process each.\n\n"
        "| torch | seconds per step (median) | `import torch` seconds | peak RSS (MiB) |\n|---|---|---|---|\n"
        + "".join(f"| {rows[s][0]['torch']} | {med[s]['seconds_per_step']:.4f} | {med[s]['import_seconds']:.2f} "
                  f"| {med[s]['peak_rss_mib']:.0f} |\n" for s in ("new", "old"))
        + f"\nnew ÷ old seconds per step: median **{statistics.median(ratios):.3f}** "
        f"(per repeat: {', '.join(f'{r:.3f}' for r in ratios)}).\n")
    write_section(Path(args.out), "torch_versions", body, [result_row({"torch": rows[s][0]["torch"]}, **med[s]) for s in med]
                  + [result_row({"ratio": "new ÷ old seconds per step"}, per_repeat=ratios, median=statistics.median(ratios))],
                  command=command_line().replace(args.old, "<venv with torch 2.13.0>/bin/python"))
    print(body)


if __name__ == "__main__":
    main()
