"""Label codecs on a real relabel store (section ``codecs``): bytes per codec, decode time ÷ fp16 (interleaved
repeats, with an fp16 A/A noise row), the soft targets each keeps at T = 4, and where scale and offset live
(per step, per row, per shard).

    python -m bench.label_codecs                  # about 4 minutes on 2 CPU cores
    python -m bench.label_codecs --repeats 3 --no-write
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.study import REPO, header, result_row, write_section

from labeldistill.config import load_config
from labeldistill.labels.accounting import store_report
from labeldistill.labels.codecs import dequantize, quantize
from labeldistill.labels.prune import prune_store
from labeldistill.labels.relabel import StepPlan, relabel
from labeldistill.labels.store import LabelStore
from labeldistill.layout import RunLayout
from labeldistill.models import build_model
from labeldistill.models.checkpoint import load_teacher
from labeldistill.plan import estimate_store_bytes
from labeldistill.recover import load_synthetic, recover
from labeldistill.squeeze import squeeze
from labeldistill import StoredStepDataset
from labeldistill.validate import kd_loss

MODE = "random_real"
CODECS = ["fp16", "int8", "int4", "top3", "top3-int8", "top3-int4"]
T = 4.0
DEMO = REPO / "configs" / "fmnist_demo.yaml"


def overrides(run_dir: Path) -> list[str]:
    return [f"run_dir={run_dir}", "name=bench_codecs", "device=cpu", "threads=1", "data.train_subset=5000",
            "data.test_subset=1000", "squeeze.epochs=1", f"recover.modes=[{MODE}]", "recover.ipc=20",
            "relabel.epochs=40", "relabel.batch_size=50", "relabel.steps_per_shard=40"]


def build_stores(runs: Path) -> tuple[dict[str, LabelStore], torch.Tensor, StepPlan, Any]:
    """The fp16 relabel store and its factor-1 copy in every codec; returns (stores, images, plan, config)."""
    cfg = load_config(DEMO, overrides(runs))
    layout = RunLayout(runs)
    squeeze(cfg)
    recover(cfg, MODE)
    full = relabel(cfg, MODE)
    stores = {}
    for fmt in CODECS:
        dest = layout.root / "labels" / MODE / f"x1-{fmt}"
        if not (dest / "manifest.json").is_file():
            prune_store(full.path, dest, 1, seed=cfg.seed, logits=fmt)
        stores[fmt] = LabelStore(dest)
    _, info = load_teacher(layout.teacher_dir, torch.device("cpu"))
    data, _ = load_synthetic(layout.images_dir(MODE), info["mean"], info["std"])
    m = full.manifest
    return stores, data.float_images(), StepPlan(m["num_images"], m["batch_size"], m["epochs"], cfg.seed), cfg


def train_step(cfg: Any, store: LabelStore) -> Callable[[Any, Any, int], None]:
    """One student step as validate takes it: read the step, replay its augmentation, KD loss, backward, AdamW
    step (one ConvNet student shared by all codecs: only the time matters here)."""
    vc, m = cfg.validate, store.manifest
    torch.manual_seed(0)
    student = build_model(vc.model, m["num_classes"], (m["channels"], *m["input_size"]))
    opt = torch.optim.AdamW(student.parameters(), lr=vc.lr, weight_decay=vc.weight_decay)

    def step(s: LabelStore, d: StoredStepDataset, g: int) -> None:
        x, t = d[g]
        loss = kd_loss(student(x), t, T, vc.t2_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def bench_decode(stores: dict[str, LabelStore], images: torch.Tensor, repeats: int, cfg: Any) -> dict:
    """(a): seconds per call of four read paths, every step read by every codec back to back (random order); ratio:
    median of codec ÷ fp16 time per (repeat, step); ``fp16 (A/A)`` is the noise floor; repeat 0 warms up."""
    c = stores["fp16"].manifest["num_classes"]
    stores = {**stores, "fp16 (A/A)": LabelStore(stores["fp16"].path)}
    datasets = {f: StoredStepDataset(s, images, T) for f, s in stores.items()}
    paths = {
        "get": lambda s, d, g: s.get(g),
        "soft_targets": lambda s, d, g: s.get(g).soft_targets(c, T),
        "validate_read": lambda s, d, g: d[g],
        "train_step": train_step(cfg, stores["fp16"]),
    }
    order, ids = list(stores), stores["fp16"].step_ids
    gen = torch.Generator().manual_seed(0)
    out = {}
    for name, fn in paths.items():
        times: dict[str, list[float]] = {f: [] for f in stores}
        heavy = name == "train_step"  # ~40 ms a call: every 4th step, fewer repeats
        for rep in range(1 + (max(2, repeats // 5) if heavy else repeats)):
            for g in ids[::4] if heavy else ids:
                for j in torch.randperm(len(order), generator=gen).tolist():
                    f = order[j]
                    t0 = time.perf_counter()
                    fn(stores[f], datasets[f], g)
                    if rep:
                        times[f].append(time.perf_counter() - t0)
        out[name] = {f: {"us_per_step": 1e6 * statistics.median(v),
                         "ratio": statistics.median(a / b for a, b in zip(v, times["fp16"]))}
                     for f, v in times.items()}
    return out


def bench_bytes(stores: dict[str, LabelStore], plan: StepPlan) -> dict:
    """(b): components and bytes on disk per codec, ÷ fp16, and the estimate ÷ actual."""
    base = store_report(stores["fp16"].path)
    out = {}
    for f, s in stores.items():
        r = store_report(s.path)
        m = s.manifest
        names = list(m["class_to_idx"])
        est = estimate_store_bytes(s.step_ids, plan, m["num_classes"], tuple(m["image_hw"]), bool(m["cutmix"]), f,
                                   None, names)
        comps = r["components"]
        out[f] = {"logits": comps["logits"], "logits_scale": comps["logits_scale"],
                  "logits_index": comps["logits_index"], "total": r["total_on_disk"],
                  "logits_ratio": (comps["logits"] + comps["logits_scale"]) / base["components"]["logits"],
                  "labels_ratio": (comps["logits"] + comps["logits_scale"] + comps["logits_index"])
                  / base["components"]["logits"],
                  "total_ratio": r["total_on_disk"] / base["total_on_disk"],
                  "estimate": est["total"], "estimate_ratio": r["total_on_disk"] / est["total"]}
    return out


REFERENCE = {"fp16": "fp16", "int8": "fp16", "int4": "fp16", "top3": "fp16", "top3-int8": "top3", "top3-int4": "top3"}


def bench_quality(stores: dict[str, LabelStore]) -> dict:
    """(c): total variation of softmax(logits / T) against the same kept logits in fp16 (``REFERENCE``), per
    row; argmax agreement."""
    c = stores["fp16"].manifest["num_classes"]
    ids = stores["fp16"].step_ids
    probs = {f: [s.get(g).soft_targets(c, T) for g in ids] for f, s in stores.items()}
    out = {}
    for f in stores:
        ref = probs[REFERENCE[f]]
        tv = torch.cat([0.5 * (p - r).abs().sum(1) for p, r in zip(probs[f], ref)])
        agree = torch.cat([p.argmax(1) == r.argmax(1) for p, r in zip(probs[f], ref)])
        out[f] = {"reference": REFERENCE[f], "tv_max": float(tv.max()), "tv_mean": float(tv.mean()),
                  "argmax_agreement": float(agree.float().mean())}
    return out


def _quantised_by_groups(x: torch.Tensor, groups: list[slice], levels: int) -> torch.Tensor:
    out = torch.empty_like(x)
    for sl in groups:
        q, s, o = quantize(x[sl], levels)
        out[sl] = dequantize(q, s, o)
    return out


def bench_placement(store: LabelStore) -> dict:
    """(d): per step / per row / per shard scale + offset on the same fp16 logits: error, TV at T, bytes."""
    recs = [store.get(g) for g in store.step_ids]
    x = torch.cat([r.logits.float() for r in recs])
    c = x.shape[1]
    sizes = [len(r.sample_idx) for r in recs]
    bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()
    groups = {"per step": [slice(a, b) for a, b in itertools.pairwise(bounds)],
              "per row": [slice(i, i + 1) for i in range(len(x))], "per shard": [slice(0, len(x))]}
    param_bytes = {"per step": 8 * len(recs), "per row (fp16)": 4 * len(x), "per shard": 8}
    p = torch.softmax(x / T, 1)
    out = {"row_range_median": float((x.amax(1) - x.amin(1)).median()),
           "step_range_median": statistics.median(float(x[g].max() - x[g].min()) for g in groups["per step"])}
    for bits in (8, 4):
        for where, gs in groups.items():
            xh = _quantised_by_groups(x, gs, 2 ** bits - 1)
            tv = 0.5 * (torch.softmax(xh / T, 1) - p).abs().sum(1)
            pb = param_bytes["per row (fp16)" if where == "per row" else where]
            out[f"int{bits} {where}"] = {
                "max_abs_err": float((xh - x).abs().max()), "tv_max": float(tv.max()), "tv_mean": float(tv.mean()),
                "logits_ratio": (len(x) * (c if bits == 8 else (c + 1) // 2) + pb) / (2 * c * len(x))}
    return out


def _table(dec: dict, byt: dict, qual: dict) -> list[str]:
    paths = ("get", "soft_targets", "validate_read", "train_step")
    rows = [("| codec | logits + scale ÷ fp16 | labels (+ indices) ÷ fp16 | store on disk ÷ fp16 | estimate ÷ actual | "
             "decode `get` ÷ fp16 | `get` + `soft_targets` ÷ fp16 | validate read (`StoredStepDataset`) ÷ fp16 | "
             "validate step (read + student step) ÷ fp16 | TV at T=4 vs reference, max / mean | argmax agreement | "
             "reference |"), "|" + "---|" * 12]
    for f in CODECS:
        b, q = byt[f], qual[f]
        rows.append(f"| `{f}` | {b['logits_ratio']:.3f} ({b['logits']:,} + {b['logits_scale']:,} B) | "
                    f"{b['labels_ratio']:.3f} | {b['total_ratio']:.3f} ({b['total']:,} B) | {b['estimate_ratio']:.4f} | "
                    + " | ".join(f"{dec[k][f]['ratio']:.3f} ({dec[k][f]['us_per_step']:.0f} µs)" for k in paths)
                    + f" | {q['tv_max']:.4f} / {q['tv_mean']:.5f} | {100 * q['argmax_agreement']:.2f} % | "
                    f"`{q['reference']}` |")
        if f == "fp16":
            rows.append("| fp16 again, second handle (A/A: noise floor) | | | | | "
                        + " | ".join(f"{dec[k]['fp16 (A/A)']['ratio']:.3f}" for k in paths) + " | | | |")
    return rows


def _reading(dec: dict, byt: dict) -> str:
    """One generated paragraph: targets met or not, and what decoding costs per step and per validate step."""
    def extra(f: str, path: str) -> float:
        return dec[path][f]["us_per_step"] - dec[path]["fp16"]["us_per_step"]

    i8, i4 = byt["int8"]["logits_ratio"], byt["int4"]["logits_ratio"]
    return (f"Reading: logits + scale of int8 = {i8:.3f} of fp16 ({'meets' if i8 <= 0.6 else 'misses'} ≤ 0.6), of int4 "
            f"{i4:.3f} ({'meets' if i4 <= 0.35 else 'misses'} ≤ 0.35). Decoding one step of "
            f"{dec['get']['fp16']['us_per_step']:.0f} µs costs int8 {extra('int8', 'get'):+.0f} µs and int4 "
            f"{extra('int4', 'get'):+.0f} µs more than fp16 (read ratios {dec['get']['int8']['ratio']:.3f} / "
            f"{dec['get']['int4']['ratio']:.3f}); in validate's read (crop replay included) the ratios are "
            f"{dec['validate_read']['int8']['ratio']:.3f} / {dec['validate_read']['int4']['ratio']:.3f}, and in a whole "
            f"validate step {dec['train_step']['int8']['ratio']:.3f} / {dec['train_step']['int4']['ratio']:.3f} "
            f"(A/A noise floor {dec['train_step']['fp16 (A/A)']['ratio']:.3f}).")


def _placement_table(pl: dict) -> list[str]:
    rows = [(f"Scale + offset placement on the same logits (median range of a row {pl['row_range_median']:.1f}, of a "
             f"step {pl['step_range_median']:.1f} logits); the store uses **per step**:"), "",
            "| codec, where scale + offset live | logits + params ÷ fp16 | max abs error (logits) | TV at T=4, max / mean |",
            "|---|---|---|---|"]
    for k, v in pl.items():
        if isinstance(v, dict):
            rows.append(f"| {k} | {v['logits_ratio']:.3f} | {v['max_abs_err']:.4f} | {v['tv_max']:.4f} / {v['tv_mean']:.5f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=str(REPO / "runs" / "bench_codecs"), help="work folder")
    ap.add_argument("--repeats", type=int, default=15, help="interleaved repeats of the decode timings")
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    ap.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    args = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    torch.set_num_threads(1)
    t_start, load_start = time.time(), os.getloadavg()[0]
    print("setup: teacher, images, relabel store, one store per codec …", flush=True)
    stores, images, plan, cfg = build_stores(Path(args.runs))
    print("decode timings", flush=True)
    dec = bench_decode(stores, images, args.repeats, cfg)
    byt, qual, pl = bench_bytes(stores, plan), bench_quality(stores), bench_placement(stores["fp16"])
    m = stores["fp16"].manifest
    setting = (
        f"Setting: Fashion-MNIST, ConvNet-64 teacher (1 epoch on 5,000 images), {m['num_images']} real images "
        f"(`random_real`), relabel {m['epochs']} epochs × {m['steps_per_epoch']} steps of {m['batch_size']} "
        f"({m['num_steps']} steps, {m['num_entries']:,} entries, {m['num_classes']} classes, no CutMix), written in "
        "fp16 by `relabel` and re-written in each codec by `prune_store` at factor 1 (one shard). Decode times: every "
        "step read by every codec in turn (in a random order per step), all steps per repeat, "
        f"{args.repeats} repeats after a warm-up repeat (validate step: every 4th step, {max(2, args.repeats // 5)} "
        "repeats), 1 torch thread; ratio = median over all (repeat, step) "
        "pairs of the codec's time ÷ fp16's for that step in that round, µs = median per call. TV = ½·Σ|p − p_ref| per row of softmax(logits / 4), against the same kept logits "
        "in fp16 (`reference`; `top3` against `fp16` shows what top-k itself changes). Targets at 10 classes: "
        "logits + scale ≤ 0.6 of fp16 (int8), ≤ 0.35 (int4). "
        f"Wall time {(time.time() - t_start) / 60:.1f} min; 1-minute load average {load_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end (other jobs shared the 2 cores).")
    body = header("Label codecs: bytes, decode time and soft targets per logits format") + "\n".join([
        setting, "", *_table(dec, byt, qual), "", _reading(dec, byt), "", *_placement_table(pl)])
    if not args.no_write:
        write_section(Path(args.out), "codecs", body, [result_row({"codec": f}, bytes=byt[f], quality=qual[f], decode={
            k: v[f] for k, v in dec.items()}) for f in CODECS] + [result_row({"placement": k}, **v) for k, v in pl.items()
                                                                 if isinstance(v, dict)])
    (Path(args.runs) / "codecs.json").write_text(json.dumps(
        {"decode": dec, "bytes": byt, "quality": qual, "placement": pl}, indent=2))
    print(body)


if __name__ == "__main__":
    main()
