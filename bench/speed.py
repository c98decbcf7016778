"""Speed and memory ratios of the label side on a small real Fashion-MNIST setting (section ``speed``): relabel ÷
plain inference, stored-label ÷ hard-label and online-KD student epochs, vectorised recover, torchrun relabel,
store bytes ÷ floor and validate's peak memory with a 1× vs 40× store. Each pair runs interleaved; the median of
the per-repeat ratios is reported.

    python -m bench.speed                      # about 10 minutes on 2 CPU cores
    python -m bench.speed --repeats 3 --skip-torchrun
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from bench.study import REPO, PeakAnon, header, met as verdict, proc_status, result_row, seed_run_from, write_section

from labeldistill.data import load_split, normalize
from labeldistill.layout import RunLayout
from labeldistill.models import build_model
from labeldistill.models.checkpoint import load_teacher
from labeldistill.config import load_config
from labeldistill.labels.accounting import store_report
from labeldistill.labels.prune import prune_store
from labeldistill.labels.relabel import StepPlan, build_batch, generate_steps, relabel, sample_step
from labeldistill.labels.store import LabelStore, LabelStoreWriter
from labeldistill.models import bn_layers
from labeldistill.recover import BNInputHook, Segment, load_synthetic, recover, recover_segments
from labeldistill.augment import step_generator
from labeldistill.io import human_bytes
from labeldistill.squeeze import squeeze
from labeldistill import PoolSampler, StoredStepDataset
from labeldistill.validate import kd_loss, train_student

MODE = "random_real"
MEMORY_REPEATS = 5
DEMO = REPO / "configs" / "fmnist_demo.yaml"


def overrides(run_dir: Path, threads: int, relabel_epochs: int = 100) -> list[str]:
    """The bench setting as config overrides (shared by this process, its children and the CLI runs)."""
    return [f"run_dir={run_dir}", "name=bench_speed", "device=cpu", f"threads={threads}",
            "data.train_subset=5000", "data.test_subset=2000", "squeeze.epochs=1",
            f"recover.modes=[{MODE}]", "recover.ipc=100", f"relabel.epochs={relabel_epochs}",
            "relabel.batch_size=100", "relabel.steps_per_shard=100", "validate.epochs=20"]


def interleaved(fns: dict[str, Callable[[], None]], repeats: int, warmup: bool = True) -> dict[str, list[float]]:
    """Run every function once per repeat, in turn (A, B, A, B …); wall seconds per function and repeat."""
    if warmup:
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def median_ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(num, den))


# ---------------------------------------------------------------- 1. relabel vs plain inference

def bench_relabel(cfg, teacher, info, images: torch.Tensor, repeats: int) -> dict:
    rc = cfg.relabel
    plan = StepPlan(len(images), rc.batch_size, rc.epochs, cfg.seed)
    ids = list(range(100))  # 100 steps = 10,000 augmented images
    n = sum(len(plan.sample_idx(g)) for g in ids)
    x = normalize(images[torch.arange(n) % len(images)], info["mean"], info["std"])
    chunks = [x[i:i + 1000].contiguous(memory_format=torch.channels_last) for i in range(0, n, 1000)]
    cpu = torch.device("cpu")

    def labels() -> None:
        for _ in generate_steps(teacher, images, plan, ids, rc, info["mean"], info["std"], cpu, progress=False):
            pass

    @torch.no_grad()
    def plain() -> None:
        for c in chunks:
            teacher(c)

    t = interleaved({"relabel": labels, "plain": plain}, repeats)
    return {"images": n, "times": t, "ratio": median_ratio(t["relabel"], t["plain"])}


# ---------------------------------------------------------------- 2. student epoch: stored vs hard vs online KD

class FreshAugmentSteps(Dataset):
    """``ds[step_id]`` → (batch, image labels): the step's crop/flip sampled afresh (as relabel samples it),
    applied with the same code as a replay; no stored labels read."""

    def __init__(self, plan: StepPlan, cfg, images: torch.Tensor, labels: torch.Tensor, mean, std):
        self.plan, self.rc, self.images, self.labels, self.mean, self.std = plan, cfg.relabel, images, labels, mean, std
        self.hw = tuple(images.shape[2:])

    def __len__(self) -> int:
        return self.plan.total_steps

    def __getitem__(self, step_id: int):
        rec = sample_step(self.plan, step_id, self.rc, self.hw, self.hw)
        return build_batch(self.images, rec, self.hw, self.mean, self.std), self.labels[rec.sample_idx]


def bench_student(cfg, teacher, info, data, store: LabelStore, repeats: int, epochs: int = 3) -> dict:
    vc = cfg.validate
    m = store.manifest
    images = data.float_images()
    plan = StepPlan(len(images), m["batch_size"], m["epochs"], cfg.seed)
    sampler = PoolSampler(store.step_ids, m["steps_per_epoch"], epochs, cfg.seed)
    stored_ds = StoredStepDataset(store, images, vc.temperature)
    fresh_ds = FreshAugmentSteps(plan, cfg, images, data.labels, tuple(info["mean"]), tuple(info["std"]))
    T = vc.temperature

    def run(kind: str) -> Callable[[], None]:
        def go() -> None:
            torch.manual_seed(cfg.seed)
            student = build_model(vc.model, data.num_classes, data.shape).to(memory_format=torch.channels_last)
            opt = torch.optim.AdamW(student.parameters(), lr=vc.lr, weight_decay=vc.weight_decay)
            ds = stored_ds if kind == "stored" else fresh_ds
            for x, t in DataLoader(ds, batch_size=None, sampler=sampler, num_workers=0):
                x = x.contiguous(memory_format=torch.channels_last)
                if kind == "stored":
                    loss = kd_loss(student(x), t, T, vc.t2_scale)
                elif kind == "hard":
                    loss = F.cross_entropy(student(x), t)
                else:
                    with torch.no_grad():
                        p = torch.softmax(teacher(x) / T, 1)
                    loss = kd_loss(student(x), p, T, vc.t2_scale)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return go

    t = interleaved({"stored": run("stored"), "hard": run("hard"), "online": run("online")}, repeats)
    return {"steps": len(sampler), "times": t, "ratio_hard": median_ratio(t["stored"], t["hard"]),
            "ratio_online": median_ratio(t["stored"], t["online"])}


# ---------------------------------------------------------------- 3. vectorised recover

def bench_recover(cfg, teacher, info, repeats: int, iterations: int = 20) -> dict:
    cfg.recover.iterations = iterations
    cfg.recover.ipc = 10
    bns = bn_layers(teacher)
    hooks = [BNInputHook() for _ in bns]
    handles = [bn.register_forward_hook(h) for bn, h in zip(bns, hooks)]
    targets = [(bn.running_mean, bn.running_var) for bn in bns]  # global targets ("c" variant): same cost
    shape, cpu = tuple(info["shape"]), torch.device("cpu")
    C = info["num_classes"]

    def segments() -> list[Segment]:
        return [Segment(torch.full((10,), c), targets, step_generator(cfg.seed, 99, c)) for c in range(C)]

    def loop() -> None:
        for seg in segments():
            recover_segments(teacher, hooks, [seg], shape, info["mean"], info["std"], cfg, cpu)

    def vectorized() -> None:
        recover_segments(teacher, hooks, segments(), shape, info["mean"], info["std"], cfg, cpu)

    try:
        t = interleaved({"vectorize=1": loop, "vectorize=10": vectorized}, repeats)
    finally:
        for h in handles:
            h.remove()
    image_iters = C * 10 * iterations
    return {"image_iterations": image_iters, "times": t, "ratio": median_ratio(t["vectorize=1"], t["vectorize=10"])}


# ---------------------------------------------------------------- 4. torchrun relabel

def bench_torchrun(base: Path, repeats: int) -> dict:
    run_dir = base.parent / "torchrun"
    seed_run_from(base, run_dir, ["teacher", f"images/{MODE}"],
                  load_config(DEMO, overrides(run_dir, 1, relabel_epochs=30) + ["relabel.steps_per_shard=20"]))

    def cli(threads: int) -> list[str]:
        ov = overrides(run_dir, threads, relabel_epochs=30) + ["relabel.steps_per_shard=20"]
        return ["-m", "labeldistill.cli", "relabel", str(DEMO), *ov, "--mode", MODE, "--force"]

    variants = {
        "1 process × 1 thread": ({"OMP_NUM_THREADS": "1"}, [sys.executable, *cli(1)]),
        "2 processes × 1 thread": ({"OMP_NUM_THREADS": "1"},
                                   [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc-per-node", "2", *cli(1)]),
        "1 process × 2 threads": ({"OMP_NUM_THREADS": "2"}, [sys.executable, *cli(2)]),
    }
    out: dict[str, dict[str, list[float]]] = {k: {"wall": [], "stage": []} for k in variants}
    metrics = RunLayout(run_dir).metrics
    steps = 0
    for rep in range(repeats + 1):  # the first round warms the page cache and is not counted
        for name, (env, cmd) in variants.items():
            t0 = time.perf_counter()
            r = subprocess.run(cmd, env={**os.environ, **env, "TQDM_DISABLE": "1"}, cwd=REPO,
                               capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if r.returncode != 0:
                raise RuntimeError(f"{name} failed:\n{r.stderr[-2000:]}")
            last = [json.loads(line) for line in metrics.read_text().splitlines()
                    if '"stage": "relabel"' in line][-1]
            steps = last["steps"]
            if rep > 0:
                out[name]["wall"].append(wall)
                out[name]["stage"].append(last["seconds"])
    one = out["1 process × 1 thread"]
    res = {"steps": steps, "entries": steps * 100, "times": out, "store": str(RunLayout(run_dir).full_store(MODE))}
    for name in ("2 processes × 1 thread", "1 process × 2 threads"):
        res[name] = {"stage": median_ratio(one["stage"], out[name]["stage"]),
                     "wall": median_ratio(one["wall"], out[name]["wall"])}
    return res


# ---------------------------------------------------------------- 6. validate memory (child process)

def child_validate(args) -> None:
    """Run validate's training loop on one store and print this process's peak memory as JSON."""
    cfg = load_config(DEMO, overrides(Path(args.run_dir), args.threads))
    torch.set_num_threads(args.threads)
    with PeakAnon(0.01) as peak:
        store = LabelStore(args.child_validate)
        data, _ = load_synthetic(RunLayout(cfg.run_path).images_dir(MODE), store.manifest["normalization"]["mean"],
                                 store.manifest["normalization"]["std"])
        res = train_student(cfg, store, data, load_split(cfg, "test"), desc="mem", log=None, resume_path=None)
    st = proc_status()
    print(json.dumps({"vmhwm_kib": st["VmHWM"] // 1024, "peak_rss_anon_kib": peak.peak // 1024,
                      "rss_file_kib_end": st.get("RssFile", 0) // 1024,
                      "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "steps": res["steps"], "seconds": res["seconds"]}))


def amplified_store(full: LabelStore, dest: Path, epochs: int) -> LabelStore:
    """The store with ``epochs`` stored epochs (fresh crops, the real store's logits reused): large enough next to
    the process that eager label loading would show in the memory figures."""
    if (dest / "manifest.json").is_file():
        return LabelStore(dest)
    m = full.manifest
    plan = StepPlan(m["num_images"], m["batch_size"], epochs, m["seed"] + 1)
    meta = {k: v for k, v in m.items() if k not in ("format", "schema_version", "shards", "component_bytes",
                                                    "num_steps", "num_entries", "seconds")}
    meta.update(epochs=epochs, total_steps=plan.total_steps)
    cfg = load_config(DEMO, [f"relabel.batch_size={m['batch_size']}"])
    hw = tuple(m["image_hw"])
    writer = LabelStoreWriter(dest, meta, steps_per_shard=1000)
    source_ids = full.step_ids
    for g in range(plan.total_steps):
        rec = sample_step(plan, g, cfg.relabel, hw, hw)
        rec.logits = full.get(source_ids[g % len(source_ids)]).logits
        writer.add(rec)
    return writer.close()


def bench_memory(run_dir: Path, stores: dict[str, Path], threads: int, repeats: int) -> dict:
    """Peak memory of validate's training loop per store, one child process per run, interleaved."""
    res: dict[str, list[dict]] = {k: [] for k in stores}
    children_max = []
    for _ in range(repeats):
        for name, path in stores.items():
            r = subprocess.run([sys.executable, "-m", "bench.speed", "--child-validate", str(path), "--run-dir", str(run_dir),
                                "--threads", str(threads)], capture_output=True, text=True, cwd=REPO,
                               env={**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"})
            if r.returncode != 0:
                raise RuntimeError(f"validate child failed:\n{r.stderr[-2000:]}")
            res[name].append(json.loads(r.stdout.strip().splitlines()[-1]))
            children_max.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    names = list(stores)
    pairs = {}
    for a, b in zip(names[0::2], names[1::2]):
        pairs[f"{a} ÷ {b}"] = {
            "hwm": median_ratio([r["vmhwm_kib"] for r in res[a]], [r["vmhwm_kib"] for r in res[b]]),
            "anon": median_ratio([r["peak_rss_anon_kib"] for r in res[a]], [r["peak_rss_anon_kib"] for r in res[b]]),
            "hwm_diff_mib": statistics.median(x["vmhwm_kib"] - y["vmhwm_kib"] for x, y in zip(res[a], res[b])) / 1024,
            "anon_diff_mib": statistics.median(x["peak_rss_anon_kib"] - y["peak_rss_anon_kib"]
                                               for x, y in zip(res[a], res[b])) / 1024,
        }
    return {
        "runs": res, "pairs": pairs,
        "median": {k: {f: statistics.median(r[f] for r in v) for f in ("vmhwm_kib", "peak_rss_anon_kib",
                                                                          "rss_file_kib_end")}
                   for k, v in res.items()},
        "children_maxrss_kib": children_max,
    }


# ---------------------------------------------------------------- main

def fmt_times(t: dict[str, list[float]]) -> str:
    return ", ".join(f"{k} {statistics.median(v):.3f} s" for k, v in t.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=str(REPO / "runs" / "bench_speed"), help="work folder")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats per pair")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the in-process measurements")
    ap.add_argument("--skip-torchrun", action="store_true")
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    ap.add_argument("--child-validate", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_validate:
        child_validate(args)
        return
    os.environ.setdefault("TQDM_DISABLE", "1")
    torch.set_num_threads(args.threads)
    t_start, load_start = time.time(), os.getloadavg()[0]
    res, stores = measure_all(args)
    body = (header("Speed and memory ratios") + f"Setting: Fashion-MNIST, ConvNet-64 teacher (1 epoch on 5,000 images), 1,000 real images "
            f"(`random_real`, IPC 100), relabel batch 100, ConvNet-32 student, CPU, {args.threads} torch thread(s) "
            f"for in-process measurements. Each pair was run interleaved (A, B, A, B …, after one warm-up round), "
            f"{args.repeats} repeats (torchrun: {max(3, args.repeats // 2 + 1)}, memory: {MEMORY_REPEATS}, one process per run); "
            f"the ratio is the median of the per-repeat ratios. Wall time of the whole benchmark: "
            f"{(time.time() - t_start) / 60:.1f} min; 1-minute load average {load_start:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end (other jobs shared the cores).\n\n"
            + "\n".join(ratio_rows(res) + store_rows(res, stores)))
    write_section(Path(args.out), "speed", body, [result_row({"measurement": k}, **(v or {})) for k, v in res.items()])
    (Path(args.runs) / "speed.json").write_text(json.dumps(res, indent=2, default=str))
    print(body)


def measure_all(args) -> tuple[dict, dict]:
    """Measurements 1–6 on the bench setting (made first when missing); returns them and the stores' sizes."""
    base = Path(args.runs) / "main"
    cfg = load_config(DEMO, overrides(base, args.threads))
    layout = RunLayout(base)
    print("setup: teacher, images, 100k-entry store …", flush=True)
    squeeze(cfg)
    recover(cfg, MODE)
    full = relabel(cfg, MODE)
    x40 = layout.pruned_store(MODE, 40)
    if not (x40 / "manifest.json").is_file():
        prune_store(full.path, x40, 40, seed=cfg.seed)
    teacher, info = load_teacher(layout.teacher_dir, torch.device("cpu"))
    data, _ = load_synthetic(layout.images_dir(MODE), info["mean"], info["std"])
    images = data.float_images()

    print("1. relabel vs plain inference", flush=True)
    r1 = bench_relabel(cfg, teacher, info, images, args.repeats)
    print(f"   {r1['ratio']:.3f}", flush=True)
    print("2. student epoch: stored vs hard vs online KD", flush=True)
    r2 = bench_student(cfg, teacher, info, data, full, args.repeats)
    print(f"   {r2['ratio_hard']:.3f} / {r2['ratio_online']:.3f}", flush=True)
    print("3. vectorised recover", flush=True)
    r3 = bench_recover(load_config(DEMO, overrides(base, args.threads)), teacher, info, args.repeats)
    print(f"   {r3['ratio']:.2f}", flush=True)
    r4 = None
    if not args.skip_torchrun:
        print("4. torchrun relabel", flush=True)
        r4 = bench_torchrun(base, max(3, args.repeats // 2 + 1))
        print(f"   {r4['2 processes × 1 thread']}", flush=True)
    print("5. store bytes", flush=True)
    rep = store_report(full.path)
    rep40 = store_report(x40)
    print("6. validate memory", flush=True)
    big = amplified_store(full, layout.root / "labels" / MODE / "amplified", 2000)
    big40 = layout.root / "labels" / MODE / "amplified-x40"
    if not (big40 / "manifest.json").is_file():
        prune_store(big.path, big40, 40, seed=cfg.seed)
    big_bytes, big40_bytes = big.bytes_on_disk(), LabelStore(big40).bytes_on_disk()
    r6 = bench_memory(base, {"1×": full.path, "40×": x40, "amplified 1×": big.path, "amplified 40×": big40},
                      args.threads, MEMORY_REPEATS)
    print(f"   {r6['pairs']}", flush=True)
    res = {"relabel": r1, "student": r2, "recover": r3, "torchrun": r4, "store": rep, "store_x40": rep40, "memory": r6}
    return res, {"shards": len(full.manifest["shards"]), "big_entries": big.manifest["num_entries"],
                 "big_bytes": big_bytes, "big40_bytes": big40_bytes}


def ratio_rows(res: dict) -> list[str]:
    """Table rows 1–4: relabel, student epoch, recover, torchrun."""
    r1, r2, r3, r4 = res["relabel"], res["student"], res["recover"], res["torchrun"]
    rows = [
        "| # | measurement | ratio (median) | target | | medians of the two sides |",
        "|---|---|---|---|---|---|",
        f"| 1 | relabel (`generate_steps`, {r1['images']:,} augmented images) ÷ plain teacher forward of as many "
        f"images | {r1['ratio']:.3f} | ≤ 1.15 | {verdict(r1['ratio'] <= 1.15)} | {fmt_times(r1['times'])} |",
        f"| 2a | student epoch with stored labels ÷ hard labels ({r2['steps']} steps of 100) | "
        f"{r2['ratio_hard']:.3f} | ≤ 1.10 | {verdict(r2['ratio_hard'] <= 1.10)} | {fmt_times(r2['times'])} |",
        f"| 2b | student epoch with stored labels ÷ online-teacher KD | {r2['ratio_online']:.3f} | (report) | | |",
        f"| 3 | recover throughput at IPC 10 (10 class-wise batches × 20 iterations), vectorize 10 ÷ vectorize 1 | "
        f"{r3['ratio']:.2f}× | ≥ 3× | {verdict(r3['ratio'] >= 3)} | {fmt_times(r3['times'])} |",
    ]
    if r4 is not None:
        two, thr = r4["2 processes × 1 thread"], r4["1 process × 2 threads"]
        rows += [
            f"| 4a | relabel throughput, torchrun 2 processes × 1 thread ÷ 1 process × 1 thread ({r4['steps']} steps) "
            f"| {two['stage']:.2f}× in-stage, {two['wall']:.2f}× wall | (report) | | "
            + "; ".join(f"{k}: stage {statistics.median(v['stage']):.2f} s, wall {statistics.median(v['wall']):.2f} s"
                        for k, v in r4["times"].items()) + " |",
            f"| 4b | relabel throughput, 1 process × 2 threads ÷ 1 process × 1 thread | {thr['stage']:.2f}× in-stage, "
            f"{thr['wall']:.2f}× wall | (report) | | |",
        ]
    return rows


def store_rows(res: dict, stores: dict) -> list[str]:
    """Table rows 5–6: store bytes and validate's memory."""
    rep, rep40, r6 = res["store"], res["store_x40"], res["memory"]
    big_bytes, big40_bytes = stores["big_bytes"], stores["big40_bytes"]
    return [
        f"| 5 | label store bytes on disk ÷ floor (components), {rep['entries']:,} entries, {rep['steps']} steps, "
        f"{stores['shards']} shards | {rep['overhead_ratio']:.4f} | ≤ 1.02 | "
        f"{verdict(rep['overhead_ratio'] <= 1.02)} | {rep['total_on_disk']:,} B ÷ {rep['floor']:,} B |",
        f"| 5b | same for the 40× store ({rep40['entries']:,} entries, 1 shard) | {rep40['overhead_ratio']:.4f} | "
        f"(report) | | {rep40['total_on_disk']:,} B ÷ {rep40['floor']:,} B |",
        f"| 6 | validate peak resident memory (VmHWM), 1× store ({rep['entries']:,} entries, "
        f"{human_bytes(rep['total_on_disk'])}) ÷ 40× store ({human_bytes(rep40['total_on_disk'])}), same training "
        f"steps | {r6['pairs']['1× ÷ 40×']['hwm']:.3f} | ≈ 1 (lazy) | "
        f"{verdict(r6['pairs']['1× ÷ 40×']['hwm'] <= 1.02)} | "
        + "; ".join(f"{k}: VmHWM {v['vmhwm_kib'] / 1024:.1f} MiB, peak RssAnon {v['peak_rss_anon_kib'] / 1024:.1f} MiB"
                    for k, v in r6["median"].items() if not k.startswith("amplified")) + " |",
        f"| 6b | same, peak anonymous memory (RssAnon, sampled every 10 ms) | {r6['pairs']['1× ÷ 40×']['anon']:.3f} | "
        f"≈ 1 | | difference {r6['pairs']['1× ÷ 40×']['anon_diff_mib']:+.1f} MiB |",
        f"| 6c | same with an amplified 1× store ({stores['big_entries']:,} entries, {human_bytes(big_bytes)}; "
        f"fresh crops, real logits reused) ÷ its 40× store ({human_bytes(big40_bytes)}) | "
        f"{r6['pairs']['amplified 1× ÷ amplified 40×']['hwm']:.3f} (RssAnon "
        f"{r6['pairs']['amplified 1× ÷ amplified 40×']['anon']:.3f}) | ≈ 1 (lazy) | "
        f"{verdict(r6['pairs']['amplified 1× ÷ amplified 40×']['anon_diff_mib'] < 0.5 * (big_bytes - big40_bytes) / 2**20)}"
        " (lazy: anonymous growth < ½ of the extra label bytes an eager reader would hold) | "
        f"VmHWM difference {r6['pairs']['amplified 1× ÷ amplified 40×']['hwm_diff_mib']:+.1f} MiB, RssAnon difference "
        f"{r6['pairs']['amplified 1× ÷ amplified 40×']['anon_diff_mib']:+.1f} MiB, vs "
        f"{human_bytes(big_bytes - big40_bytes)} more labels; mapped label pages resident at the end (RssFile): "
        f"{r6['median']['amplified 1×']['rss_file_kib_end'] / 1024:.1f} vs "
        f"{r6['median']['amplified 40×']['rss_file_kib_end'] / 1024:.1f} MiB |",
    ]


if __name__ == "__main__":
    main()
