"""How the label side's cost grows with classes, images per class, image size and stored steps (section ``scale``).

Random in-memory images (``bench-random``), an untrained ConvNet-16 teacher, every stage of the label side, each
configuration in its own child process with the peak memory reset before every stage; seconds, memory and bytes
per stage, the store's bytes against the dry run's estimate, and an extrapolation to ImageNet-1K.

    python -m bench.scale --classes 1000 --ipc 1 --epochs 5 --json      # one configuration, JSON on stdout
    python -m bench.scale --sweep                                        # the sweep → BENCHMARKS.md (scale)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.study import REPO, PeakAnon, cli_env, header, proc_status, result_row, shown, write_section


MODE = "lpld"
DATASET = "bench-random"
FACTORS = (1, 10, 40)
VALIDATE_FACTORS = (1, 40)
RELABEL_BATCH = 50
STEPS_PER_SHARD = 200
# LPLD (Xiao & He, NeurIPS 2024), ImageNet-1K label storage at 1× (GB), their reference layout (docs/anchors.md §3).
LPLD_TABLE_GB = {10: 5.67, 50: 28.33, 200: 113.33}
SWEEP_32 = [(c, i) for c in (10, 100, 1000) for i in (1, 10, 50) if (c, i) != (1000, 50)]
SWEEP_224 = [(1000, 1)]
# Batches optimised together in one recover forward. Capped: the cost of one vectorised recover step grows
# with the number of batches in it before the per-segment statistics became one scatter-add; the cap keeps the
# sweep's memory bounded.
VECTORIZE_CAP = 32
VECTORIZE_STUDY = (1, 16, 64, 256)  # recover at C = 256, IPC 1, 32 px: seconds vs batches per forward


# ------------------------------------------------------------------------------------------------ child side

def teacher_depth(size: int) -> int:
    """Conv blocks of the ConvNet so that ``size`` pixels pool (÷2 per block) to 4–7 px."""
    return max(1, int(math.floor(math.log2(max(size, 4) / 4))))


def test_images(classes: int, size: int) -> int:
    """Test images of the synthetic dataset: one per class, at most 200 above 64 px (evaluation runs in
    batches of up to 1,000 images; squeeze's evaluation batch is fixed at 1,000)."""
    return classes if size <= 64 else min(classes, 200)


def register_random_dataset(classes: int, real_per_class: int) -> None:
    """Register ``bench-random``: uint8 noise images, ``classes`` classes, in memory, nothing on disk."""
    import torch

    from labeldistill.data import ImageSet, register_dataset

    def bench_random(root, split, image_size=32):  # noqa: ARG001 - root unused: nothing is read
        s = int(image_size or 32)
        n = classes * real_per_class if split == "train" else test_images(classes, s)
        g = torch.Generator().manual_seed(1 if split == "train" else 2)
        images = torch.randint(0, 256, (n, 3, s, s), dtype=torch.uint8, generator=g)
        labels = torch.arange(n, dtype=torch.int64) % classes
        return ImageSet(images, labels, [f"c{i:04d}" for i in range(classes)], (0.5, 0.5, 0.5), (0.29, 0.29, 0.29))

    register_dataset(DATASET)(bench_random)


def overrides(spec: dict) -> list[str]:
    """The configuration of one measurement as ``key=value`` overrides of the defaults."""
    s, ipc = spec["image_size"], spec["ipc"]
    model = f"{{name: convnet, args: {{width: 16, depth: {teacher_depth(s)}}}}}"
    budget = max(1, round(1024 * (32 / s) ** 2))  # images per forward of recover / class-stats
    per_batch = min(ipc, 100)
    return [
        "name=scale", f"run_dir={spec['run_dir']}", "device=cpu", f"threads={spec['threads']}", "seed=0",
        f"data.dataset={DATASET}", f"data.image_size={s}",
        f"squeeze.model={model}", f"squeeze.epochs={spec['teacher_epochs']}", "squeeze.batch_size=128",
        f"class_stats.batch_size={max(8, min(512, budget // 2))}",
        f"recover.modes=[{MODE}]", f"recover.ipc={ipc}", f"recover.iterations={spec['iterations']}",
        "recover.batch_size=100",
        f"recover.vectorize={spec.get('vectorize') or max(1, min(VECTORIZE_CAP, budget // per_batch))}",
        f"recover.jitter={max(1, s // 16)}",
        f"relabel.epochs={spec['epochs']}", f"relabel.batch_size={RELABEL_BATCH}",
        f"relabel.steps_per_shard={STEPS_PER_SHARD}",
        f"prune.factors=[{', '.join(str(f) for f in FACTORS)}]",
        f"validate.model={model}", "validate.epochs=1", f"validate.eval_batch_size={max(50, min(1000, budget))}",
    ]


def _io() -> dict[str, int]:
    f = Path("/proc/self/io")
    return {k: int(v) for k, v in (ln.split(": ") for ln in f.read_text().splitlines())} if f.exists() else {}


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1


def _maps() -> int:
    return len(Path("/proc/self/maps").read_text().splitlines()) if os.path.exists("/proc/self/maps") else -1


def _fresh_peak() -> None:
    """Free what earlier stages left behind and reset this process's VmHWM to its current resident set."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: reset the peak RSS


def run_stages(stages: list[str], spec: dict) -> dict:
    """Run the stages of one configuration in this process, each with its own peak memory; their measurements."""
    import torch

    from labeldistill.config import load_config

    torch.set_num_threads(spec["threads"])
    register_random_dataset(spec["classes"], spec["real_per_class"])
    cfg = load_config(None, overrides(spec))
    run = Path(spec["run_dir"])
    labels = run / "labels" / MODE
    out = {}
    for stage in stages:
        _fresh_peak()
        b0 = dir_bytes(run)
        before, io0, fd0, maps0 = proc_status(), _io(), _open_files(), _maps()
        with PeakAnon() as peak:
            t0 = time.perf_counter()
            extra = run_stage(stage, cfg, labels, fd0, maps0)
            seconds = time.perf_counter() - t0
        after, io1 = proc_status(), _io()
        anon = peak.peak
        out[stage] = {"seconds": seconds, "peak_rss_bytes": after["VmHWM"], "rss_before_bytes": before["VmRSS"],
                      "peak_growth_bytes": after["VmHWM"] - before["VmRSS"], "peak_anon_bytes": anon,
                      "anon_growth_bytes": anon - before.get("RssAnon", 0),
                      "rss_file_end_bytes": after.get("RssFile", 0),
                      "wchar": io1.get("wchar", 0) - io0.get("wchar", 0), "bytes_written": dir_bytes(run) - b0,
                      **extra}
    return out


def run_stage(stage: str, cfg, labels: Path, fd0: int, maps0: int) -> dict:
    """Run one stage of :func:`run_stages`; returns its extra measurements (store bytes, steps, top-1 …)."""
    from labeldistill.bnstats import class_stats
    from labeldistill.labels.prune import prune_store
    from labeldistill.labels.relabel import relabel
    from labeldistill.labels.store import LabelStore
    from labeldistill.plan import plan_run
    from labeldistill.recover import recover
    from labeldistill.squeeze import squeeze
    from labeldistill.validate import validate

    simple = {"squeeze": lambda: squeeze(cfg), "class_stats": lambda: class_stats(cfg),
              "recover": lambda: recover(cfg, MODE)}
    if stage in simple:
        simple[stage]()
        return {}
    if stage == "relabel":
        store = relabel(cfg, MODE)
        m = store.manifest
        return {"store_bytes": store.bytes_on_disk(), "manifest_bytes": (store.path / "manifest.json").stat().st_size,
                "steps": m["num_steps"], "entries": m["num_entries"], "shards": len(m["shards"]),
                "component_bytes": m["component_bytes"]}
    if stage == "plan":
        p = plan_run(cfg)
        return {"estimates": {r["tag"]: r["total"] for r in p["labels"]},
                "reference_layout": {r["tag"]: r["reference_layout"] for r in p["labels"]}}
    if stage.startswith("prune_x"):
        f = float(stage.removeprefix("prune_x"))
        st = prune_store(labels / "full", labels / stage.removeprefix("prune_"), f, seed=cfg.seed, overwrite=True)
        return {"store_bytes": st.bytes_on_disk(), "steps": len(st),
                "manifest_bytes": (st.path / "manifest.json").stat().st_size}
    if stage.startswith("validate_x"):
        tag = stage.removeprefix("validate_")
        row = validate(cfg, MODE, float(tag[1:]), store_path=labels / tag, force=True)
        return {k: row[k] for k in ("top1", "steps", "label_bytes", "kept_steps")}
    if stage == "open_store":  # open the full store and read every step once
        st = LabelStore(labels / "full")
        t1 = time.perf_counter()
        for g in st.step_ids:
            st.get(g)
        return {"read_all_seconds": time.perf_counter() - t1, "steps": len(st), "shards": len(st.manifest["shards"]),
                "open_fds_added": _open_files() - fd0, "maps_added": _maps() - maps0}
    raise SystemExit(f"unknown stage {stage}")


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


# ----------------------------------------------------------------------------------------------- parent side

def child(stages: list[str], spec: dict) -> dict:
    env = {**cli_env(), "OMP_NUM_THREADS": str(spec["threads"])}
    r = subprocess.run([sys.executable, "-m", "bench.scale", "--_stages", ",".join(stages), "--_spec", json.dumps(spec)],
                       capture_output=True, text=True, env=env, cwd=REPO)
    if r.returncode != 0:
        raise RuntimeError(f"stages {stages} of {spec} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure(classes: int, ipc: int, image_size: int, epochs: int, work: Path, threads: int = 1,
            iterations: int = 3, real_per_class: int = 2, teacher_epochs: int = 0, keep: bool = False,
            validate_factors: tuple = VALIDATE_FACTORS, log=None, vectorize: int | None = None,
            stages: list[str] | None = None) -> dict:
    """All stages of one configuration, each in its own process; returns the row with per-stage details."""
    tag = f"c{classes}_ipc{ipc}_s{image_size}_e{epochs}" + (f"_v{vectorize}" if vectorize else "")
    run = work / tag
    shutil.rmtree(run, ignore_errors=True)
    spec = {"classes": classes, "ipc": ipc, "image_size": image_size, "epochs": epochs, "run_dir": str(run),
            "threads": threads, "iterations": iterations, "real_per_class": real_per_class,
            "teacher_epochs": teacher_epochs, "vectorize": vectorize}
    if stages is not None:  # a partial run (the recover study): no row
        details = child(stages, spec)
        if not keep:
            shutil.rmtree(run, ignore_errors=True)
        return {"tag": tag, "spec": spec, "details": details}
    stages = ["squeeze", "class_stats", "recover", "relabel", "plan", "open_store",
              *[f"prune_x{f}" for f in FACTORS], *[f"validate_x{f}" for f in validate_factors]]
    t_all = time.perf_counter()
    details = child(stages, spec)
    if log:
        for st, d in details.items():
            log(f"  {tag} {st}: {d['seconds']:.2f} s, VmHWM {d['peak_rss_bytes'] / 2**20:.0f} MiB "
                f"(from {d['rss_before_bytes'] / 2**20:.0f}), +{d['bytes_written'] / 2**20:.1f} MiB on disk")
    est = details["plan"]["estimates"]
    row = {
        "classes": classes, "ipc": ipc, "image_size": image_size, "epochs": epochs,
        "stage_seconds": {k: round(v["seconds"], 3) for k, v in details.items() if k not in ("plan", "open_store")},
        "peak_rss_bytes": max(v["peak_rss_bytes"] for k, v in details.items()),
        "store_bytes": details["relabel"]["store_bytes"],
        "estimated_store_bytes": est["full"],
    }
    extra = {"tag": tag, "spec": spec, "details": details, "wall_seconds": time.perf_counter() - t_all,
             "images": classes * ipc, "real_images": classes * real_per_class,
             "pruned": {f"x{f}": {"bytes": details[f"prune_x{f}"]["store_bytes"], "estimate": est.get(f"x{f}")}
                        for f in FACTORS}}
    (work / f"{tag}.json").write_text(json.dumps({"row": row, **extra}, indent=2))
    if not keep:
        shutil.rmtree(run, ignore_errors=True)
    return {"row": row, **extra}


# ----------------------------------------------------------------------------------------------------- sweep

def lstsq(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b·x``; returns (a, b)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - b * mx, b


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """Slope of log y vs log x over the points with the largest half of x (where fixed costs matter least)."""
    pts = sorted(zip(xs, ys))
    pts = pts[len(pts) // 2:] if len(pts) >= 4 else pts
    _, b = lstsq([math.log(x) for x, _ in pts], [math.log(max(y, 1e-6)) for _, y in pts])
    return b


def _kept(r: dict, stage: str) -> float:
    return r["details"]["relabel"]["entries"] * r["details"][stage]["steps"] / r["details"]["relabel"]["steps"]


UNITS = {  # stage → (unit, work units of a sweep row): relabel stores entries; prune keeps some; validate 1 epoch
    "squeeze": ("real image", lambda r: r["real_images"]), "class_stats": ("real image", lambda r: r["real_images"]),
    "recover": ("image-iteration", lambda r: r["images"] * r["spec"]["iterations"]),
    "relabel": ("stored entry", lambda r: r["details"]["relabel"]["entries"]),
    **{f"prune_x{f}": ("kept entry", lambda r, f=f: _kept(r, f"prune_x{f}")) for f in FACTORS},
    **{f"validate_x{f}": ("image-step", lambda r: r["images"]) for f in VALIDATE_FACTORS}}


def units(r: dict, stage: str) -> float:
    """Work units of ``stage`` in sweep row ``r`` (:data:`UNITS`)."""
    return UNITS[stage][1](r)


def imagenet_store_bytes(ipc: int, epochs: int = 300, cutmix: bool = False, batch: int = RELABEL_BATCH) -> int:
    """This project's 1× fp16 store for ImageNet-1K (1,000 classes, 224 px), from the dry-run estimator."""
    from labeldistill.labels.relabel import StepPlan
    from labeldistill.plan import estimate_store_bytes

    plan = StepPlan(1000 * ipc, batch, epochs, 0)
    est = estimate_store_bytes(range(plan.total_steps), plan, 1000, (224, 224), cutmix, "fp16", STEPS_PER_SHARD,
                               [f"n{i:08d}" for i in range(1000)])
    return est["total"]


def sweep(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t_start, load0 = time.time(), os.getloadavg()[0]
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    configs = [(c, i, 32) for c, i in SWEEP_32] + [(c, i, 224) for c, i in SWEEP_224]
    results = []
    for c, i, s in configs:
        log(f"C={c} IPC={i} S={s} E={args.sweep_epochs}")
        results.append(measure(c, i, s, args.sweep_epochs, work, args.threads, args.iterations, args.real_per_class,
                               args.teacher_epochs, log=log))
    study = []
    for v in VECTORIZE_STUDY:
        log(f"recover study: C=256 IPC=1 vectorize={v}")
        study.append(measure(256, 1, 32, 1, work, args.threads, args.iterations, args.real_per_class,
                             args.teacher_epochs, vectorize=v, stages=["squeeze", "class_stats", "recover"]))
        log(f"  {study[-1]['details']['recover']['seconds']:.2f} s")
    (work / "sweep.json").write_text(json.dumps({"rows": results, "recover_study": study}, indent=2))
    args.recover_study = study
    minutes = (time.time() - t_start) / 60
    body = sweep_report(results, args, minutes, load0)
    body = header("Scale: cost per stage vs classes, IPC, image size and stored steps") + body
    write_section(Path(args.out), "scale", body, [result_row({k: r["row"][k] for k in ("classes", "ipc", "image_size", "epochs")},
                                                             **r["row"]) for r in results])
    print(body)


def mib(b: float) -> str:
    return f"{b / 2**20:,.1f}"


def sweep_report(results: list[dict], args, minutes: float, load0: float) -> str:
    """The section's body: setting, seconds and memory tables, growth fits, the recover study, ImageNet-1K."""
    stages = list(results[0]["row"]["stage_seconds"])
    lines = tables(results, args, minutes, load0, stages)
    growth, fits = growth_lines(results, stages)
    lines += growth + memory_lines(results) + recover_study_lines(getattr(args, "recover_study", []), args)
    return "\n".join(lines + extrapolation_lines(results, fits, args))


def tables(results: list[dict], args, minutes: float, load0: float, stages: list[str]) -> list[str]:
    """Setting, seconds per stage and memory per stage."""
    lines = [
        f"Setting: random uint8 images ({args.real_per_class} \"real\" per class for class-stats), untrained "
        f"ConvNet-16 teacher, recover `{MODE}` ({args.iterations} iterations), relabel {args.sweep_epochs} epochs × "
        f"batch {RELABEL_BATCH}, prune 1×/10×/40×, validate 1 epoch on the 1× and 40× stores; CPU, {args.threads} "
        f"thread, one process per configuration. Cut to fit: no C = 1000 × IPC 50 at 32 px, 224 px only at C = 1000 "
        f"× IPC 1. Sweep: {minutes:.1f} min wall (1-min load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end; the 2 cores were shared with other jobs).",
        "",
        "### Seconds per stage (in-process, imports excluded)",
        "",
        "| C | IPC | px | images | entries | " + " | ".join(stages) + " | total |",
        "|---|---|---|---|---|" + "---|" * (len(stages) + 1),
    ]
    for r in results:
        row = r["row"]
        secs = row["stage_seconds"]
        lines.append(f"| {row['classes']} | {row['ipc']} | {row['image_size']} | {r['images']:,} | "
                     f"{r['details']['relabel']['entries']:,} | " + " | ".join(f"{secs[k]:.2f}" for k in stages)
                     + f" | {sum(secs.values()):.1f} |")
    lines += ["", "### Memory (peak resident set per stage process, MiB) and bytes", "",
              "VmHWM includes interpreter + torch (`rss before`); RssAnon (sampled every 20 ms) excludes mapped "
              "label shards.", "",
              "| C | IPC | px | rss before | class_stats | recover | relabel | prune 1× | validate 1× (anon) | "
              "validate 40× (anon) | full store | dry-run estimate | store ÷ estimate | manifest | shards | "
              "manifest B per step | open: fds / maps added |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        d, row = r["details"], r["row"]
        rel = d["relabel"]
        lines.append(
            f"| {row['classes']} | {row['ipc']} | {row['image_size']} | {mib(d['recover']['rss_before_bytes'])} | "
            f"{mib(d['class_stats']['peak_rss_bytes'])} | {mib(d['recover']['peak_rss_bytes'])} | "
            f"{mib(rel['peak_rss_bytes'])} | {mib(d['prune_x1']['peak_rss_bytes'])} | "
            f"{mib(d['validate_x1']['peak_rss_bytes'])} ({mib(d['validate_x1']['peak_anon_bytes'])}) | "
            f"{mib(d['validate_x40']['peak_rss_bytes'])} ({mib(d['validate_x40']['peak_anon_bytes'])}) | "
            f"{row['store_bytes']:,} | {row['estimated_store_bytes']:,} | "
            f"{row['store_bytes'] / row['estimated_store_bytes']:.4f} | {rel['manifest_bytes']:,} | "
            f"{rel['shards']} | {rel['manifest_bytes'] / rel['steps']:.1f} | "
            f"{d['open_store']['open_fds_added']} / {d['open_store']['maps_added']} |")
    return lines


def growth_lines(results: list[dict], stages: list[str]) -> tuple[list[str], dict]:
    """Least-squares growth per stage at 32 px (and its per-unit cost at 224 px), per class at fixed images."""
    r32 = [r for r in results if r["row"]["image_size"] == 32]
    r224 = [r for r in results if r["row"]["image_size"] != 32]  # the large-image rows (224 px in the sweep)
    lines = ["", "### Growth (32 px rows): least-squares `seconds = a + b · units`, and the log-log slope", "",
             "Slope over the larger half of the points (1 = linear).", "",
              "| stage | unit | a (s) | b (µs per unit) | log-log slope | per-unit at 224 px (µs) |",
              "|---|---|---|---|---|---|"]
    fits = {}
    for st in stages:
        xs = [units(r, st) for r in r32]
        ys = [r["row"]["stage_seconds"][st] for r in r32]
        a, b = lstsq(xs, ys)
        slope = loglog_slope(xs, ys)
        b224 = None
        if r224:
            b224 = sum((r["row"]["stage_seconds"][st] - max(a, 0)) / units(r, st) for r in r224) / len(r224)
        fits[st] = {"a": a, "b": b, "slope": slope, "b224": b224}
        lines.append(f"| {st} | {UNITS[st][0]} | {a:.2f} | {b * 1e6:,.1f} | {slope:.2f} | "
                     + (f"{b224 * 1e6:,.1f}" if b224 is not None else "–") + " |")
    # per class: relabel/validate at fixed images, different C
    lines += ["", "Per class at a fixed image count (32 px; rows with the same C·IPC):", ""]
    by_n: dict[int, list[dict]] = {}
    for r in r32:
        by_n.setdefault(r["images"], []).append(r)
    for n, rs in sorted(by_n.items()):
        if len(rs) < 2:
            continue
        rs.sort(key=lambda r: r["row"]["classes"])
        parts = []
        for st in ("class_stats", "recover", "relabel", "validate_x1"):
            parts.append(f"{st} " + " → ".join(f"{r['row']['stage_seconds'][st]:.2f} s (C={r['row']['classes']})"
                                               for r in rs))
        lines.append(f"- {n:,} images: " + "; ".join(parts))
    return lines, fits


def memory_lines(results: list[dict]) -> list[str]:
    """Manifest bytes per step, validate's and prune's memory against the store's size."""
    m_x = [r["details"]["relabel"]["steps"] for r in results]
    m_y = [r["details"]["relabel"]["manifest_bytes"] - 20 * r["row"]["classes"] for r in results]
    ma, mb = lstsq(m_x, m_y)
    # validate memory vs store size
    vm = []
    for r in results:
        d = r["details"]
        vm.append((r["row"]["classes"], r["row"]["ipc"], r["row"]["image_size"], d["prune_x1"]["store_bytes"],
                   d["prune_x40"]["store_bytes"], d["validate_x1"]["peak_rss_bytes"] - d["validate_x40"]["peak_rss_bytes"],
                   d["validate_x1"]["peak_anon_bytes"] - d["validate_x40"]["peak_anon_bytes"]))
    big = max(vm, key=lambda v: v[3])
    return ["", "### Memory at scale", "",
              f"- **manifest.json per stored step**: {mb:.2f} B per step + {ma:,.0f} B fixed (one entry per "
              f"shard of {STEPS_PER_SHARD} steps; the per-step index is built in memory on open).",
              "- **validate peak memory vs store size** (same images, same training steps, 1× minus 40× store): "
              + "; ".join(f"C={c} IPC={i} {s}px: store {mib(b1)} vs {mib(b40)} MiB → VmHWM {mib(dh)} MiB, "
                          f"RssAnon {mib(da)} MiB" for c, i, s, b1, b40, dh, da in vm if b1 > 8 * 2**20)
              + f". Largest store: {mib(big[3])} MiB, VmHWM difference {mib(big[5])} MiB, anonymous difference "
                f"{mib(big[6])} MiB.",
              "- **prune peak memory vs kept bytes** (anonymous growth during the stage): "
              + "; ".join(f"C={r['row']['classes']} IPC={r['row']['ipc']} {r['row']['image_size']}px: 1× "
                          f"{mib(r['details']['prune_x1']['anon_growth_bytes'])} MiB for a "
                          f"{mib(r['details']['prune_x1']['store_bytes'])} MiB store, 40× "
                          f"{mib(r['details']['prune_x40']['anon_growth_bytes'])} MiB"
                          for r in results if r["details"]["prune_x1"]["store_bytes"] > 8 * 2**20) + ".",
              ]


def recover_study_lines(study: list[dict], args) -> list[str]:
    """Vectorised recover: seconds against batches per forward."""
    lines: list[str] = []
    if study:
        lines += ["", "### Vectorised recover: seconds vs batches per forward (C = 256, IPC 1, 32 px, "
                  f"{args.iterations} iterations, class-wise batches of 1 image)", "",
                  "| batches per forward (`recover.vectorize`) | recover seconds | ms per image-iteration | "
                  "recover VmHWM growth (MiB) |", "|---|---|---|---|"]
        for r in study:
            d = r["details"]["recover"]
            lines.append(f"| {r['spec']['vectorize']} | {d['seconds']:.2f} | "
                         f"{1000 * d['seconds'] / (256 * args.iterations):.2f} | {mib(d['peak_growth_bytes'])} |")
        per = {r["spec"]["vectorize"]: r["details"]["recover"]["seconds"] for r in study}
        big, mid = max(per), sorted(per)[len(per) // 2]
        growth = per[big] / per[mid]
        lines += ["", f"Per image-iteration, {big} batches per forward take {growth:.2f}× the time of {mid} "
                  + ("(flat: per-batch statistics are one scatter-add)" if growth < 1.3 else
                     "(slower: look for per-batch work that grows with the whole tensor)")
                  + f"; the sweep caps vectorize at {VECTORIZE_CAP}."]
    return lines


def extrapolation_lines(results: list[dict], fits: dict, args) -> list[str]:
    """Label bytes and hours of every stage for ImageNet-1K at IPC 10, 50 and 200."""
    dev = max(abs(r["row"]["store_bytes"] / r["row"]["estimated_store_bytes"] - 1) for r in results)
    lines = ["", "### Extrapolation to ImageNet-1K (1,000 classes, 224 px, 300 relabel epochs, batch "
              f"{RELABEL_BATCH})", "",
              "Label bytes: the 1× fp16 store without CutMix from the dry-run estimator (on disk within "
              f"{dev:.3%} of it in the sweep), and from the measured bytes per entry; LPLD's table uses its "
              "reference layout (≈ 2,025 vs ≈ 2,006 B/entry). Hours: fitted fixed + per-unit cost at 224 px for "
              "this ConvNet-16 on 1 CPU thread; recover 4,000 iterations, validate 300 epochs.", ""]
    cmax = max(r["row"]["classes"] for r in results)
    c1000 = [r for r in results if r["row"]["classes"] == cmax]
    be = sum(r["row"]["store_bytes"] for r in c1000) / sum(r["details"]["relabel"]["entries"] for r in c1000)
    lines += ["| IPC | images | stored entries (1×) | label bytes, estimator | label bytes, measured B/entry "
              "× entries | LPLD paper (1×) | relabel (h) | prune 1× (h) | validate 300 ep (h) | recover 4k it (h) | "
              "uint8 images in RAM (relabel, validate) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for ipc in (10, 50, 200):
        n = 1000 * ipc
        entries = n * 300
        est = imagenet_store_bytes(ipc)

        def hours(st: str, u: float) -> str:
            f = fits[st]
            b = f["b224"] if f["b224"] is not None else f["b"]
            return f"{(max(f['a'], 0) + b * u) / 3600:,.1f}"

        lines.append(f"| {ipc} | {n:,} | {entries:,} | {est / 1e9:.2f} GB ({est / 2**30:.2f} GiB) | "
                     f"{be * entries / 1e9:.2f} GB | {LPLD_TABLE_GB[ipc]:.2f} GB | {hours('relabel', entries)} | "
                     f"{hours('prune_x1', entries)} | {hours('validate_x1', n * 300)} | "
                     f"{hours('recover', n * 4000)} | {n * 3 * 224 * 224 / 1e9:.1f} GB |")
    lines += ["", f"Measured bytes per stored entry at C = {cmax}: {be:,.1f} B. Per-row details (every stage's "
              f"VmHWM, RssAnon, wchar, bytes written): `{shown(Path(args.work) / 'sweep.json')}` after a run."]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--ipc", type=int, default=1)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=5, help="relabel epochs")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
    ap.add_argument("--sweep", action="store_true", help="run the sweep and write BENCHMARKS.md (section scale)")
    ap.add_argument("--sweep-epochs", type=int, default=5, help="relabel epochs in the sweep")
    ap.add_argument("--iterations", type=int, default=3, help="recover iterations")
    ap.add_argument("--real-per-class", type=int, default=2, help="random 'real' training images per class")
    ap.add_argument("--teacher-epochs", type=int, default=0, help="squeeze epochs (0: untrained teacher)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default=str(REPO / "runs" / "bench_scale"), help="work folder (run dirs, details)")
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    ap.add_argument("--_stages", help=argparse.SUPPRESS)
    ap.add_argument("--_spec", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._stages:
        print(json.dumps(run_stages(args._stages.split(","), json.loads(args._spec))))
        return
    if args.sweep:
        sweep(args)
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    res = measure(args.classes, args.ipc, args.image_size, args.epochs, work, args.threads, args.iterations,
                  args.real_per_class, args.teacher_epochs, keep=args.keep,
                  log=(lambda s: print(s, file=sys.stderr, flush=True)))
    if args.json:
        print(json.dumps({"rows": [res["row"]]}))
    else:
        r = res["row"]
        print(f"C={r['classes']} IPC={r['ipc']} {r['image_size']} px, {r['epochs']} epochs: "
              + ", ".join(f"{k} {v:.2f} s" for k, v in r["stage_seconds"].items())
              + f"; peak RSS {mib(r['peak_rss_bytes'])} MiB; store {r['store_bytes']:,} B vs estimate "
                f"{r['estimated_store_bytes']:,} B ({r['store_bytes'] / r['estimated_store_bytes']:.4f})")


if __name__ == "__main__":
    main()
