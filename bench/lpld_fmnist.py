"""The LPLD study on Fashion-MNIST: does class-wise supervision make random label pruning safe?

Writes its tables into BENCHMARKS.md (section ``lpld_fmnist``) with the command, date, machine and wall time.
Every run shares one teacher and its class statistics (trained once in ``<runs>/base``); seeds change
recover, relabel, pruning and the student.

Tables:
  A. IPC × image source {sre2l, c, cs, cda, random_real, rded, cs with init real} × factors, mean ± std.
  B. random vs metric strategies (easy / hard) at 20× and 50× for cs, IPC 10.
  C. label-pool granularity: epoch vs batch at 20× for cs, IPC 10.
  D. top-k logits k ∈ {1, 2, 5} × factors {1, 10, 40} for cs, IPC 10, with label bytes.
  E. temperature T ∈ {1, 4, 20} at 1× and 40× for cs, IPC 10.

Usage::

    python bench/lpld_fmnist.py                       # the full study (hours on 2 CPU cores)
    python bench/lpld_fmnist.py --ipc 10 --seeds 0 1 2 --ipc50-seeds 0
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, command_line, machine, mean_std, today, write_section  # noqa: E402

from labeldistill.data import load_split  # noqa: E402
from labeldistill.layout import RunLayout  # noqa: E402
from labeldistill.config import load_config  # noqa: E402
from labeldistill.labels.store import LabelStore  # noqa: E402
from labeldistill.pipeline import run  # noqa: E402
from labeldistill.recover import load_synthetic  # noqa: E402
from labeldistill.report import human_bytes  # noqa: E402
from labeldistill.runtime import tune_malloc  # noqa: E402
from labeldistill.validate import train_student  # noqa: E402

MODES = ["sre2l", "c", "cs", "cda", "random_real", "rded"]
METRICS = ["confidence", "diff", "diff_signed", "correct", "cut_ratio"]


def base_overrides(args) -> list[str]:
    return [f"squeeze.epochs={args.teacher_epochs}", f"recover.iterations={args.iterations}",
            "recover.vectorize=10", f"relabel.epochs={args.epochs}", "relabel.cutmix=0.5"] + (
        [f"threads={args.threads}"] if args.threads else [])


def seeded_run(args, name: str, seed: int, overrides: list[str]):
    """Run the main job in ``<runs>/<name>`` reusing the base teacher and class statistics."""
    root = Path(args.runs) / name
    for d in ("teacher", "class_stats"):
        if not (root / d).exists():
            shutil.copytree(Path(args.runs) / "base" / d, root / d)
    cfg = load_config(REPO / "configs" / "fmnist_demo.yaml",
                      base_overrides(args) + [f"run_dir={root}", f"name={name}", f"seed={seed}"] + overrides)
    return cfg, run(cfg)


def table_a(args, results: dict) -> str:
    lines = ["| IPC | images | " + " | ".join(f"{f:g}×" for f in args.factors) + " | labels 1× / 40× | images |",
             "|---|---|" + "---|" * len(args.factors) + "---|---|"]
    for (ipc, mode), rows in results.items():
        cells = []
        for f in args.factors:
            accs = [r["top1"] for r in rows if r["prune_factor"] == f]
            cells.append(mean_std(accs) if accs else "–")
        lb = {f: next((r["label_bytes"] for r in rows if r["prune_factor"] == f), None) for f in (1.0, 40.0)}
        img = rows[0]["image_bytes"]
        lines.append(f"| {ipc} | {mode} | " + " | ".join(cells)
                     + f" | {human_bytes(lb[1.0] or 0)} / {human_bytes(lb[40.0] or 0)} | {human_bytes(img)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ipc", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ipc50-seeds", type=int, nargs="+", default=None,
                    help="seeds for IPC 50 (default: --seeds)")
    ap.add_argument("--factors", type=float, nargs="+", default=[1, 10, 20, 40, 100])
    ap.add_argument("--epochs", type=int, default=300, help="relabel (= student) epochs")
    ap.add_argument("--iterations", type=int, default=500, help="recover iterations")
    ap.add_argument("--teacher-epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--runs", default=str(REPO / "runs" / "bench_lpld"))
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    ap.add_argument("--skip", nargs="*", default=[], help="tables to skip: A B C D E")
    ap.add_argument("--section", default="lpld_fmnist", help="BENCHMARKS.md section name (for parallel runs)")
    args = ap.parse_args()
    tune_malloc()  # as the labeldistill command does (see bench/malloc.py)
    t0 = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_config(REPO / "configs" / "fmnist_demo.yaml",
                       base_overrides(args) + [f"run_dir={Path(args.runs) / 'base'}", "recover.modes=[]",
                                               "prune.factors=[1]"])
    from labeldistill.bnstats import class_stats
    from labeldistill.squeeze import squeeze

    teacher = squeeze(base)
    class_stats(base)
    sections = [f"## LPLD study on Fashion-MNIST\n\nCommand: `{command_line()}`  \nDate: {today()}  \n"
                f"Machine: {machine()}  \nTeacher: ConvNet-64, {teacher['epochs']} epochs, top-1 "
                f"{100 * teacher['top1']:.2f} %. Student: ConvNet-32, AdamW, {args.epochs} epochs, T = 4, "
                f"relabel batch 50 with CutMix (p 0.5), recover {args.iterations} iterations. Top-1 on the real "
                "test split (10,000 images), mean ± std over the seeds listed per table."]
    factor_list = "[" + ", ".join(f"{f:g}" for f in args.factors) + "]"
    results: dict = {}
    if "A" not in args.skip:
        for ipc in args.ipc:
            seeds = args.ipc50_seeds if (ipc >= 50 and args.ipc50_seeds is not None) else args.seeds
            for seed in seeds:
                _, res = seeded_run(args, f"ipc{ipc}_s{seed}", seed,
                                    [f"recover.ipc={ipc}", f"recover.modes=[{', '.join(MODES)}]",
                                     f"prune.factors={factor_list}"])
                for r in res["rows"]:
                    results.setdefault((ipc, r["recover"]), []).append(r)
                _, res = seeded_run(args, f"ipc{ipc}_s{seed}_initreal", seed,
                                    [f"recover.ipc={ipc}", "recover.modes=[cs]", "recover.init=real",
                                     f"prune.factors={factor_list}"])
                for r in res["rows"]:
                    results.setdefault((ipc, "cs (init real)"), []).append(r)
                write_section(Path(args.out), args.section, "\n\n".join(sections + [
                    f"### A. Image source × pruning factor (in progress: done up to IPC {ipc}, seed {seed})\n\n"
                    + table_a(args, results)]))
        ipcs = ", ".join(f"IPC {i}: seeds {args.ipc50_seeds if (i >= 50 and args.ipc50_seeds) else args.seeds}"
                         for i in args.ipc)
        sections.append(f"### A. Image source × pruning factor ({ipcs})\n\n" + table_a(args, results))
    if "B" not in args.skip:
        strategies = ["random"] + [f"{m}-{k}" for m in METRICS for k in ("easy", "hard")]
        rows: dict = {}
        for seed in args.seeds:
            _, res = seeded_run(args, f"ipc10_s{seed}_cs", seed, [
                "recover.ipc=10", "recover.modes=[cs]", "prune.factors=[20, 50]",
                f"prune.strategies=[{', '.join(strategies)}]"])
            for r in res["rows"]:
                rows.setdefault((r["prune_strategy"], r["prune_factor"]), []).append(r["top1"])
        lines = ["| strategy | 20× | 50× |", "|---|---|---|"]
        for st in strategies:
            lines.append(f"| {st} | {mean_std(rows[(st, 20.0)])} | {mean_std(rows[(st, 50.0)])} |")
        sections.append(f"### B. Pruning strategy (cs, IPC 10, seeds {args.seeds})\n\n"
                        "Metrics are this project's definitions (see `labels/prune.py`); the paper's are known "
                        "only from secondary descriptions.\n\n" + "\n".join(lines))
    if "C" not in args.skip:
        rows = {}
        for seed in args.seeds:
            for gran in ("batch", "epoch"):
                _, res = seeded_run(args, f"ipc10_s{seed}_cs", seed, [
                    "recover.ipc=10", "recover.modes=[cs]", "prune.factors=[20]", f"prune.granularity={gran}"])
                rows.setdefault(gran, []).extend(r["top1"] for r in res["rows"])
        sections.append(f"### C. Label pool granularity at 20× (cs, IPC 10, seeds {args.seeds})\n\n"
                        "| granularity | top-1 |\n|---|---|\n"
                        f"| batch (ILP: steps drawn with replacement each epoch) | {mean_std(rows['batch'])} |\n"
                        f"| epoch (one kept stored epoch replayed per epoch) | {mean_std(rows['epoch'])} |")
    if "D" not in args.skip:
        rows, nbytes = {}, {}
        for seed in args.seeds:
            _, res = seeded_run(args, f"ipc10_s{seed}_cs", seed, [
                "recover.ipc=10", "recover.modes=[cs]", "prune.factors=[1, 10, 40]",
                "prune.logits=[fp16, top1, top2, top5]"])
            for r in res["rows"]:
                rows.setdefault((r["logits"], r["prune_factor"]), []).append(r["top1"])
                nbytes[(r["logits"], r["prune_factor"])] = r["label_bytes"]
        lines = ["| logits | 1× | 10× | 40× | bytes 1× | bytes 40× |", "|---|---|---|---|---|---|"]
        for lg in ("fp16", "top5", "top2", "top1"):
            lines.append(f"| {lg} | " + " | ".join(mean_std(rows[(lg, f)]) for f in (1.0, 10.0, 40.0))
                         + f" | {human_bytes(nbytes[(lg, 1.0)])} | {human_bytes(nbytes[(lg, 40.0)])} |")
        sections.append(f"### D. Top-k label compression (cs, IPC 10, seeds {args.seeds})\n\n" + "\n".join(lines))
    if "E" not in args.skip:
        rows = {}
        test = None
        for seed in args.seeds:
            cfg, _ = seeded_run(args, f"ipc10_s{seed}_cs", seed, ["recover.ipc=10", "recover.modes=[cs]",
                                                               "prune.factors=[1, 40]"])
            lay = RunLayout(cfg.run_path)
            test = test or load_split(cfg, "test")
            for f in (1.0, 40.0):
                store = LabelStore(lay.pruned_store("cs", f))
                norm = store.manifest["normalization"]
                data, _ = load_synthetic(lay.images_dir("cs"), tuple(norm["mean"]), tuple(norm["std"]))
                for temp in (1.0, 4.0, 20.0):
                    c2 = dataclasses.replace(cfg, validate=dataclasses.replace(cfg.validate, temperature=temp))
                    rows.setdefault((temp, f), []).append(train_student(c2, store, data, test)["top1"])
        lines = ["| T | 1× | 40× |", "|---|---|---|"]
        for temp in (1.0, 4.0, 20.0):
            lines.append(f"| {temp:g} | {mean_std(rows[(temp, 1.0)])} | {mean_std(rows[(temp, 40.0)])} |")
        sections.append(f"### E. KD temperature (cs, IPC 10, seeds {args.seeds}; loss × T²)\n\n" + "\n".join(lines))
    sections.append(f"Wall time of this study: {(time.time() - t0) / 60:.1f} min.")
    write_section(Path(args.out), args.section, "\n\n".join(sections))
    print("\n\n".join(sections))


if __name__ == "__main__":
    main()
