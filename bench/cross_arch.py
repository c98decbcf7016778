"""Cross-architecture evaluation on Fashion-MNIST (issue #12 item 6; section ``cross_arch``): the same images and
label stores train four students; a cross teacher relabels the same images; hard-label rows show what the
images are worth without a teacher. Resumable, in priority order, until ``--budget-min`` CPU minutes are spent.

    nice -n 10 python -m bench.cross_arch                 # the study (resumable)
    python -m bench.cross_arch --write-only               # rewrite the section from finished runs
"""

from __future__ import annotations

import dataclasses
import filecmp
import json
import time
from pathlib import Path

import torch

from bench.study import (REPO, command_line, compare, header, interval_text, ledger, md_table, mean_std,
                         paired_by_seed, parser, result_row, seed_run_from, shown, write_section)
from labeldistill import hard_label_rows, load_config, run, run_stage
from labeldistill.data.idx import FASHION_MNIST_DEFAULT_ROOT
from labeldistill.io import atomic_write_json, read_json
from labeldistill.runtime import set_threads, tune_malloc

DEMO = REPO / "configs" / "fmnist_demo.yaml"
STUDENTS = {  # label → model spec
    "ConvNet-32": {"name": "convnet", "args": {"width": 32, "depth": 3, "norm": "batch"}},
    "MobileNetV3-S-0.5": {"name": "timm:mobilenetv3_small_050", "args": {}},
    "ViT (4×96, p7)": {"name": "timm:vit_tiny_patch16_224",
                       "args": {"patch_size": 7, "depth": 4, "embed_dim": 96, "num_heads": 3}},
    "ResNet-18 (small stem)": {"name": "torchvision:resnet18", "args": {"stem": "small"}},
}
HEAVY = ("ResNet-18 (small stem)",)  # run after every other part (see the section for what finished)
MODES = ["cs", "sre2l", "random_real"]
CROSS_MODES = ["cs", "random_real"]  # random_real: the control (real images belong to no teacher)
FACTORS = [1, 10]
CELLS = ((10, "teacher0"), (10, "xteacher"), (50, "teacher0"))  # (IPC, labelling teacher)
HEAVY_ORDER = {  # groups of (teacher, mode): every seed of a group before the next group, so that the key
    # comparisons (cs vs random_real, own vs cross teacher) get paired seeds first
    10: [[("teacher0", "cs"), ("teacher0", "random_real"), ("xteacher", "cs")],
         [("teacher0", "sre2l"), ("xteacher", "random_real")]],
    50: [[("teacher0", "cs"), ("teacher0", "random_real")], [("teacher0", "sre2l")]]}


EXTRA: list[str] = []  # --extra: overrides for every part (a smoke test on a tiny scale)


def _cfg(path: Path, extra: list[str]):
    """The demo config in ``path`` with ``extra`` overrides (data.root spelled out as ``make demo`` does)."""
    return load_config(DEMO, [f"run_dir={path}", f"name={path.name}", "threads=1",
                              f"data.root={FASHION_MNIST_DEFAULT_ROOT}"] + extra + EXTRA)


def teacher_parts(args) -> dict[str, list[str]]:
    """Run directory name → overrides of the two teachers (full test split, as ``make demo``)."""
    return {"teacher0": [], "xteacher": ["seed=1", f"squeeze.model={args.xteacher}"]}


def image_overrides(args, ipc: int) -> list[str]:
    """The recover run of one IPC: demo recipe, teacher0 loaded from its checkpoint."""
    return [f"squeeze.checkpoint={Path(args.runs) / 'teacher0' / 'teacher' / 'model.safetensors'}",
            f"recover.ipc={ipc}", f"recover.modes=[{', '.join(MODES)}]", "prune.factors=[1]", "recover.vectorize=10",
            f"data.test_subset={args.test_subset}"]


def label_overrides(args, ipc: int, teacher: str, seed: int, students: list[str], modes: list[str] | None = None,
                    factors: list[int] | None = None) -> list[str]:
    """One seed of one (IPC, teacher) cell: the images as folder sets, relabelled, pruned and validated
    (``modes`` / ``factors``: only these stores, e.g. one heavy student's run at a time)."""
    modes = modes or (MODES if teacher == "teacher0" else CROSS_MODES)
    images = Path(args.runs) / f"images_ipc{ipc}" / "images"
    variants = ", ".join(f"{m}: {{source: folder, path: '{images / m}'}}" for m in modes)
    model = [] if teacher == "teacher0" else [f"squeeze.model={args.xteacher}"]
    return [f"seed={seed}", f"squeeze.checkpoint={Path(args.runs) / teacher / 'teacher' / 'model.safetensors'}",
            *model, f"recover.ipc={ipc}", f"recover.modes=[{', '.join(modes)}]", f"recover.variants={{{variants}}}",
            f"relabel.epochs={args.epochs[ipc]}", f"prune.factors={factors or FACTORS}", f"data.test_subset={args.test_subset}",
            "validate.students=[" + ", ".join(json.dumps(STUDENTS[s]) for s in students) + "]"]


def plan(args) -> list[tuple[str, Path, list[str], str]]:
    """Every part in priority order: (kind, run dir, overrides, label)."""
    runs = Path(args.runs)
    light = [s for s in STUDENTS if s not in HEAVY]
    parts = [("squeeze", runs / name, o, name) for name, o in teacher_parts(args).items()]
    parts.append(("images", runs / "images_ipc10", image_overrides(args, 10), "images IPC 10"))
    for ipc, teacher in CELLS:
        if ipc == 50:
            parts.append(("images", runs / "images_ipc50", image_overrides(args, 50), "images IPC 50"))
        for s in args.seeds:
            parts.append(("run", runs / _cell_dir(ipc, teacher) / f"seed{s}",
                          label_overrides(args, ipc, teacher, s, light), f"IPC {ipc} {teacher} seed {s}"))
    for ipc in (10, 50):  # hard-label rows: the images' classes alone, no teacher (light students)
        for s in args.seeds:
            parts.append(("hard", runs / _cell_dir(ipc, "teacher0") / f"seed{s}",
                          label_overrides(args, ipc, "teacher0", s, light), f"hard labels IPC {ipc} seed {s}"))
    for heavy in HEAVY:  # one part per store, most informative first: the first group of every cell (1× before
        for rank in (0, 1):  # 10×, IPC 10 before 50), then the second groups
            for ipc, f in ((10, 1), (10, 10), (50, 1), (50, 10)):
                for group in HEAVY_ORDER[ipc][rank:rank + 1]:
                    for s in args.seeds:
                        for teacher, mode in group:
                            o = label_overrides(args, ipc, teacher, s, [heavy], modes=[mode], factors=[f])
                            parts.append(("run", runs / _cell_dir(ipc, teacher) / f"seed{s}", o,
                                          f"{heavy}: IPC {ipc} {teacher} {mode} {f}x seed {s}"))
    return parts


def _cell_dir(ipc: int, teacher: str) -> str:
    return f"ipc{ipc}_{'own' if teacher == 'teacher0' else 'cross'}"


def reuse_demo_teacher(args) -> bool:
    """Whether teacher0 is (now) ``make demo``'s teacher, copied when made with teacher0's settings."""
    dst = Path(args.runs) / "teacher0"
    if "squeeze" in ledger(dst):  # teacher0 made earlier: the demo's teacher when it is the same
        return _same_teacher(args, "teacher0")
    return seed_run_from(Path(args.demo_run), dst, ["teacher", "run.json"], _cfg(dst, []), stages=("squeeze",))


def run_part(kind: str, path: Path, overrides: list[str]) -> None:
    """One part through the library's own resumable stages."""
    cfg = _cfg(path, overrides)
    if kind == "run":
        run(cfg)
    elif kind == "hard":  # the main job's hard-label baselines (cross-entropy on the images' classes), every student
        hard_label_rows(dataclasses.replace(cfg, hard_label=dataclasses.replace(cfg.hard_label, enabled=True,
                                                                                real=False)))
    else:
        run_stage(cfg, "squeeze")
        if kind == "images":
            run_stage(cfg, "class-stats")
            run_stage(cfg, "recover")


def throughput(args) -> dict[str, dict]:
    """Training and evaluation throughput of each student (images per CPU second, one thread, batch 50, AdamW,
    1 × 28 × 28 inputs), measured once and kept in ``<runs>/throughput.json``."""
    path = Path(args.runs) / "throughput.json"
    out = read_json(path) if path.is_file() else {}
    from labeldistill.config import ModelConfig
    from labeldistill.models import build_model

    for label, spec in STUDENTS.items():
        if label in out:
            continue
        torch.manual_seed(0)
        model = build_model(ModelConfig(spec["name"], spec["args"]), 10, (1, 28, 28))
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        x, y = torch.randn(50, 1, 28, 28), torch.randint(10, (50,))
        n, c0 = 0, None
        while c0 is None or time.process_time() - c0 < args.throughput_seconds:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if c0 is None:  # the first step (allocation) is not timed
                c0 = time.process_time()
            else:
                n += 50
        train = n / (time.process_time() - c0)
        model.eval()
        c1 = time.process_time()
        with torch.no_grad():
            model(torch.randn(500, 1, 28, 28))
        out[label] = {"parameters": sum(p.numel() for p in model.parameters()), "train_img_per_cpu_s": round(train),
                      "eval_img_per_cpu_s": round(500 / (time.process_time() - c1))}
        atomic_write_json(path, out)
    return out


def run_all(args) -> None:
    """Run the parts in order until the CPU budget is spent; record the CPU seconds of each finished part."""
    ledger_path = Path(args.runs) / "cpu_seconds.json"
    ledger = read_json(ledger_path) if ledger_path.is_file() else {}
    reuse_demo_teacher(args)
    if "throughput" not in ledger:
        c0 = time.process_time()
        throughput(args)
        ledger["throughput"] = round(time.process_time() - c0, 1)
    for kind, path, overrides, label in plan(args):
        spent = sum(ledger.values())
        if spent > 60 * args.budget_min:
            print(f"budget spent ({spent / 60:.1f} CPU min): stopping before '{label}'", flush=True)
            return
        c0, t0 = time.process_time(), time.time()
        print(f"== {label} ({path})", flush=True)
        run_part(kind, path, overrides)
        ledger[label] = round(ledger.get(label, 0.0) + time.process_time() - c0, 1)
        atomic_write_json(ledger_path, ledger)
        print(f"   {label}: {time.process_time() - c0:.0f} CPU s, {time.time() - t0:.0f} s wall", flush=True)
        write(args)


def refresh_reports(args) -> None:
    """Rewrite ``results.json`` and ``report.md`` of every label run from all its validate rows (each ``run``
    part writes only the rows of its own students), as ``labeldistill report`` does."""
    from labeldistill.report import collect_results, write_report

    all_students = list(STUDENTS)
    for ipc, teacher in CELLS:
        for s in args.seeds:
            path = Path(args.runs) / _cell_dir(ipc, teacher) / f"seed{s}"
            if (path / "validate").is_dir():
                atomic_write_json(path / "results.json",
                                  collect_results(_cfg(path, label_overrides(args, ipc, teacher, s, all_students))))
                write_report(path)


def collect(args) -> list[dict]:
    """Every finished validate row of the label runs, tagged with its IPC, teacher and student label."""
    labels = {(s["name"], json.dumps(s["args"], sort_keys=True)): k for k, s in STUDENTS.items()}
    rows = []
    for ipc, teacher in CELLS:
        for kind in ("validate", "hard_label"):  # hard labels: no teacher, no store (factor "-")
            for f in sorted((Path(args.runs) / _cell_dir(ipc, teacher)).glob(f"seed*/{kind}/*/*.json")):
                r = read_json(f)
                if kind == "hard_label":
                    r = {**r, "recover": r["images"], "prune_factor": "-"} if r["images"] in MODES else {}
                key = (r.get("student"), json.dumps(r.get("student_args"), sort_keys=True))
                if key in labels and r["prune_factor"] in [*FACTORS, "-"] and r["seed"] in args.seeds:
                    rows.append({**r, "cell_ipc": ipc, "teacher": teacher if kind == "validate" else "none",
                                 "label": labels[key]})
    return rows


def _acc(rows: list[dict], **match) -> dict[int, float]:
    """Seed → top-1 of the rows matching every key."""
    return {r["seed"]: r["top1"] for r in rows if all(r[k] == v for k, v in match.items())}


def protocol(args, ipc: int, student: str, hard: bool = False) -> str:
    """The evaluation protocol of a row: this project's student recipe with ``student``."""
    return (f"labeldistill-{'hard-label' if hard else 'validate'} ({student} student, AdamW, "
            f"{args.epochs[ipc]} epochs{', cross-entropy' if hard else ''})")


def main_table(args, rows: list[dict], out: list) -> str:
    """IPC × images × labelling teacher × factor rows, one column per student: mean ± std (seeds done)."""
    lines = ["| IPC | images | labels by | factor | " + " | ".join(STUDENTS) + " |",
             "|---|---|---|---|" + "---|" * len(STUDENTS)]
    for ipc, teacher in CELLS:
        for mode in (MODES if teacher == "teacher0" else CROSS_MODES):
            by = "own (ConvNet-64, seed 0)" if teacher == "teacher0" else f"cross ({args.xteacher_label}, seed 1)"
            keys = [(f, by, {"teacher": teacher, "prune_factor": f}) for f in FACTORS]
            if teacher == "teacher0":
                keys.append(("–", "none: hard labels (CE)", {"teacher": "none"}))
            for f, labels_by, match in keys:
                cells = []
                for s in STUDENTS:
                    acc = _acc(rows, cell_ipc=ipc, recover=mode, label=s, **match)
                    cells.append(f"{mean_std(list(acc.values()))} ({len(acc)})" if acc else "–")
                    if acc:
                        out.append(result_row({"ipc": ipc, "images": mode, "labels_by": labels_by, "factor": f,
                                               "student": s}, {k: 100 * v for k, v in acc.items()},
                                              protocol(args, ipc, s, f == "–"), unit="top-1 %"))
                lines.append(f"| {ipc} | {mode} | {labels_by} | {f}{'×' * (f != '–')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparisons(args, rows: list[dict], out: list) -> str:
    """Paired differences per student: synthetic vs real images, and own vs cross teacher."""
    lines = ["| comparison (points of top-1) | factor | " + " | ".join(STUDENTS) + " |",
             "|---|---|" + "---|" * len(STUDENTS)]
    tests = [(f"IPC {ipc}: {m} − random_real (own teacher)", {"cell_ipc": ipc, "teacher": "teacher0", "recover": m},
              {"cell_ipc": ipc, "teacher": "teacher0", "recover": "random_real"}) for ipc in (10, 50) for m in ("cs", "sre2l")]
    tests += [(f"IPC 10: {m}, own − cross teacher", {"cell_ipc": 10, "teacher": "teacher0", "recover": m},
               {"cell_ipc": 10, "teacher": "xteacher", "recover": m}) for m in CROSS_MODES]
    tests.append(("IPC 10: cs − random_real (cross teacher)", {"cell_ipc": 10, "teacher": "xteacher", "recover": "cs"},
                  {"cell_ipc": 10, "teacher": "xteacher", "recover": "random_real"}))
    tests += [(f"IPC {ipc}: {m}, own teacher's labels − hard labels", {"cell_ipc": ipc, "teacher": "teacher0",
               "recover": m}, {"cell_ipc": ipc, "teacher": "none", "recover": m, "prune_factor": "-"})
              for ipc in (10, 50) for m in ("cs", "random_real")]
    for name, a, b in tests:
        for f in FACTORS:
            cells = []
            for s in STUDENTS:  # hard labels have no store: the same row against each factor
                d = paired_by_seed(_acc(rows, **a, prune_factor=f, label=s),
                                   _acc(rows, **{"prune_factor": f, **b}, label=s))
                if len(d) < 2:
                    cells.append(f"{len(d)} paired seed(s): no interval")
                    continue
                v = compare(out, {"comparison": name, "factor": f, "student": s}, d, protocol(args, a["cell_ipc"], s),
                            either=True)  # either sign: these are measurements, not claims
                cells.append(f"{interval_text(list(d.values()))} (n={len(d)}; {v})")
            lines.append(f"| {name} | {f}× | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _same_teacher(args, name: str) -> bool:
    """Whether run ``name``'s teacher is the demo run's (its ``teacher.json``, with the weights' fingerprint, copied)."""
    a, b = Path(args.runs) / name / "teacher" / "teacher.json", Path(args.demo_run) / "teacher" / "teacher.json"
    return a.is_file() and b.is_file() and filecmp.cmp(a, b, shallow=False)


def _teacher_line(args, name: str) -> str:
    f = Path(args.runs) / name / "teacher" / "teacher.json"
    if not f.is_file():
        return f"{name}: not trained yet"
    t = read_json(f)
    reused = args.demo_run if _same_teacher(args, name) else None
    return (f"{name}: {t['model']} {t.get('model_args', {})}, {t['epochs']} epochs, top-1 {100 * t['top1']:.2f} % "
            "(10,000 test images)" + (f"; the squeeze stage of `make demo`, reused from `{shown(reused)}` (same settings "
                                      "fingerprint)" if reused else ""))


def _images_line(args) -> str:
    out = []
    for ipc in (10, 50):
        for m in MODES:
            f = Path(args.runs) / f"images_ipc{ipc}" / "images" / m / "images.json"
            if f.is_file():
                top1 = read_json(f).get("teacher_top1_on_images")
                out.append(f"IPC {ipc} {m}" + (f" ({100 * top1:.0f} %)" if top1 is not None else ""))
    cross = []
    for m in CROSS_MODES:
        f = Path(args.runs) / "ipc10_cross" / f"seed{args.seeds[0]}" / "images" / m / "images.json"
        if f.is_file() and read_json(f).get("teacher_top1_on_images") is not None:
            cross.append(f"{m} {100 * read_json(f)['teacher_top1_on_images']:.0f} %")
    return ("Image sets made (teacher0's top-1 on them): " + (", ".join(out) or "none yet")
            + (f". The cross teacher's top-1 on the IPC 10 sets: {', '.join(cross)}." if cross else "."))


def status(args, rows: list[dict]) -> str:
    """Which seeds of which cells finished, and the CPU time spent."""
    ledger_path = Path(args.runs) / "cpu_seconds.json"
    ledger = read_json(ledger_path) if ledger_path.is_file() else {}
    done = []
    hard = [r for r in rows if r["teacher"] == "none"]
    rows = [r for r in rows if r["teacher"] != "none"]
    for s in STUDENTS:
        n = len([r for r in rows if r["label"] == s])
        want = len(args.seeds) * len(FACTORS) * (2 * len(MODES) + len(CROSS_MODES))
        seeds = sorted({r["seed"] for r in rows if r["label"] == s})
        done.append(f"{s}: {n}/{want} runs (seeds {', '.join(map(str, seeds)) or 'none'})")
    return (f"Finished: {'; '.join(done)}; hard-label rows: {len(hard)}. CPU time so far: {sum(ledger.values()) / 60:.1f} min "
            f"(budget {args.budget_min:g} min).")


def students_table(args) -> str:
    """The students: spec, parameters and measured throughput."""
    path = Path(args.runs) / "throughput.json"
    tp = read_json(path) if path.is_file() else {}
    return "\n".join(md_table(["student", "model spec", "parameters", "train img / CPU s", "eval img / CPU s"], [
        [label, f"`{spec['name']}` {spec['args'] or ''}", f"{t['parameters']:,}" if t else "–",
         t.get("train_img_per_cpu_s", "–"), t.get("eval_img_per_cpu_s", "–")]
        for label, spec in STUDENTS.items() for t in [tp.get(label, {})]]))


def write(args) -> None:
    """Write the ``cross_arch`` section of BENCHMARKS.md from whatever rows exist."""
    rows, out = collect(args), []
    e10, e50 = args.epochs[10], args.epochs[50]
    body = (header("Cross-architecture evaluation (Fashion-MNIST)", ", run at nice 10 beside other jobs", args.command)
            + f"Runs: `{shown(args.runs)}` (rows: `<cell>/seed<s>/validate/<student>/<mode>_x<f>.json`)\n\n"
            f"{_teacher_line(args, 'teacher0')}  \n{_teacher_line(args, 'xteacher')}  \n{_images_line(args)}\n\n"
            f"Recipe: the demo's recover from teacher0 and its relabel, but **{e10} epochs at IPC 10 and {e50} at IPC "
            f"50** (the demo: 300; sized to ~{args.budget_min:g} CPU minutes, so absolute numbers are lower); random "
            f"pruning 1× and 10×. Top-1 on a fixed subset of {args.test_subset} test images, mean ± std over seeds "
            f"{', '.join(map(str, args.seeds))} (count in brackets); teachers and images are shared by the seeds.\n\n"
            "Students (throughput: one thread, batch 50, AdamW):\n\n" + students_table(args)
            + f"\n\n{status(args, rows)}\n\n" + main_table(args, rows, out) + "\n\nPaired differences (same seeds)"
            ", 95 % t-interval; 'held' when it excludes 0:\n\n" + comparisons(args, rows, out)
            + f"\n\nHard-label rows: the same images and students trained with cross-entropy on the images' classes "
            f"({e10} / {e50} epochs, no teacher; not run for ResNet-18).\n")
    write_section(Path(args.out), "cross_arch", body, out, command=args.command)


def main() -> None:
    ap = parser(__doc__, runs="bench_cross_arch", seeds=[0, 1, 2], render="write-only")
    ap.add_argument("--epochs10", type=int, default=60, help="relabel = student epochs at IPC 10")
    ap.add_argument("--epochs50", type=int, default=20, help="relabel = student epochs at IPC 50")
    ap.add_argument("--test-subset", type=int, default=2000)
    ap.add_argument("--xteacher", default="{name: lenet}", help="model spec of the cross teacher (YAML)")
    ap.add_argument("--xteacher-label", default="LeNet-5")
    ap.add_argument("--throughput-seconds", type=float, default=4.0, help="CPU seconds per throughput measurement")
    ap.add_argument("--budget-min", type=float, default=62.0, help="CPU minutes after which no new part starts")
    ap.add_argument("--demo-run", default=str(REPO / "runs" / "fmnist_demo"),
                    help="make demo's run directory: its teacher is reused when the settings match")
    ap.add_argument("--extra", nargs="*", default=[], help="overrides for every part (smoke tests only)")
    args = ap.parse_args()
    EXTRA[:] = args.extra
    args.epochs = {10: args.epochs10, 50: args.epochs50}
    args.command = command_line().replace(" --write-only", "")
    tune_malloc()
    set_threads(1)
    if not args.write_only:
        run_all(args)
    refresh_reports(args)
    write(args)


if __name__ == "__main__":
    main()
