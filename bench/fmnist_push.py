"""The push (section ``fmnist_push``): Fashion-MNIST IPC 10, label bytes <= image bytes, under DC's student
(``validate.protocol=dc``) against DSA's 84.6 % (stretch: RCIG's 88.5 %). One lever at a time against the base
recipe on the holdout split (paired seeds); the best recipe then runs on the test split (5 seeds) beside random
real images with hard labels under the same preset, and the whole-data upper bound (the same student on the
whole train split less the holdout, hard labels, ``--upper-epochs``); against a published number the interval is
one-sample. Resumable: ``OMP_NUM_THREADS=1 python -m bench.fmnist_push`` (``--collect``: only write the section).
``--parts ipc``: the final recipe at IPC 1 and 50 (test split, ``--ipc-seeds``) against DSA at that IPC.
Teacher lever: an int is a ConvNet-64's epochs, ``w128e3`` a ConvNet-128 (batch norm) trained 3 epochs.
Not measured: a ResNet-18 teacher (left for a GPU; this CPU study's time went to the levers above).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from bench.lpld_fmnist import claim_row, compute_seconds, config, overrides, run_commits
from bench.study import (compare, finished_results, git_commit, header, interval_text, load_json, mean_std, md_row,
                         md_table, parser, result_row, seed_run_from, write_section)
from labeldistill import run, run_stage
from labeldistill.runtime import tune_malloc

BASE = {"teacher": 15, "images": "cs", "T": 20.0, "relabel": 300, "codec": "int8x10", "loss": "kl"}
LEVERS = [("teacher", 3), ("teacher", 1), ("teacher", 6), ("teacher", "w128e3"), ("images", "cs_init_real"), ("images", "rded"),
          ("images", "random_real"), ("T", 1.0), ("T", 4.0), ("relabel", 100), ("codec", "fp16x10"), ("codec", "int4x5"), ("codec", "int8x40"),
          ("codec", "int4x40"), ("loss", "gift")]
ANCHORS = {"DSA": 84.6, "RCIG": 88.5}  # shared/ANCHORS.md §1, F-MNIST IPC 10 (RCIG: unverified there)
TEACHERS = [BASE["teacher"], *(v for k, v in LEVERS if k == "teacher")]
DSA_AT = {1: 70.6, 50: 88.7}  # DSA at F-MNIST IPC 1 and 50 (shared/ANCHORS.md §1, verified)
DC = ["validate.protocol=dc", "validate.optimizer=sgd", "validate.lr=0.01", "validate.weight_decay=0.0005",
      "validate.model={name: convnet, args: {width: 128, depth: 3, norm: instance, dc_padding: true}}"]
HARD = "hard_label/*/random_real.json"
UPPER = "hard_label/*/real-train.json"


def parse_args(argv=None):
    ap = parser(__doc__, runs="bench_fmnist_push", render="collect")
    ap.add_argument("--section", default="fmnist_push")
    ap.add_argument("--holdout", type=int, default=5000)
    ap.add_argument("--select-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="test-split seeds")
    ap.add_argument("--iterations", type=int, default=500, help="recover iterations")
    ap.add_argument("--upper-epochs", type=int, default=5, help="epochs of the whole-data upper bound (0: none)")
    ap.add_argument("--upper-seeds", type=int, nargs="*", default=[0], help="seeds of the whole-data upper bound")
    ap.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE", help="for every run (smoke tests)")
    ap.add_argument("--parts", nargs="+", choices=["levers", "final", "upper", "ipc"],
                    default=["levers", "final", "upper", "ipc"],
                    help="what to run (two processes can share the work: e.g. `upper` beside `levers`)")
    ap.add_argument("--ipc-seeds", type=int, nargs="*", default=[0, 1, 2], help="seeds of the IPC 1 / 50 rows")
    ap.add_argument("--only-levers", nargs="*", metavar="LEVER=VALUE", help="run only these levers' jobs (e.g. teacher=1)")
    ap.add_argument("--only-seeds", type=int, nargs="*", help="run only these seeds' lever / test jobs")
    args = ap.parse_args(argv)
    args.iterations_ipc50, args.teacher_epochs = args.iterations, BASE["teacher"]  # read by lpld_fmnist.overrides
    return args


def name(split: str, seed: int, r: dict, ipc: int = 10) -> str:
    diff = "-".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in r.items() if v != BASE[k])
    return f"{split}_s{seed}_{diff or 'base'}" + ("" if ipc == 10 else f"_ipc{ipc}")


def teacher_spec(v: int | str) -> tuple[int, int]:
    """``(width, epochs)`` of a teacher lever value: ``15`` -> ConvNet-64 for 15 epochs, ``"w128e3"`` -> (128, 3)."""
    if isinstance(v, int):
        return 64, v
    width, epochs = v.removeprefix("w").split("e")
    return int(width), int(epochs)


def teacher_overrides(v: int | str) -> list[str]:
    """The squeeze settings of teacher ``v`` (the model only where it is not the config's ConvNet-64)."""
    width, epochs = teacher_spec(v)
    model = [f"squeeze.model={{name: convnet, args: {{width: {width}, depth: 3, norm: batch}}}}"] if width != 64 else []
    return [f"squeeze.epochs={epochs}", *model]


def teacher_name(teacher: int | str) -> str:
    """The run folder of teacher ``teacher``: ``teacher_e<epochs>`` (ConvNet-64) or ``teacher_w<width>_e<epochs>``."""
    width, epochs = teacher_spec(teacher)
    return f"teacher_e{epochs}" if width == 64 else f"teacher_w{width}_e{epochs}"


def teacher_label(v: int | str) -> str:
    width, epochs = teacher_spec(v)
    return f"ConvNet-{width}, {epochs} epoch{'s' * (epochs != 1)}"


def recipe_overrides(args, r: dict, split: str, ipc: int = 10) -> list[str]:
    logits, factor = r["codec"].split("x")
    mode = "cs" if r["images"] == "cs_init_real" else r["images"]
    return [*overrides(args, ipc, r["relabel"]), *DC, *teacher_overrides(r["teacher"]), f"recover.modes=[{mode}]",
            *(["recover.init=real"] if r["images"] == "cs_init_real" else []), f"prune.factors=[{factor}]",
            f"prune.logits=[{logits}]", f"validate.temperature={r['T']:g}", f"validate.loss={r['loss']}",
            f"validate.eval_split={split}", *args.override]  # the smoke overrides win


def teacher_dir(args, teacher: int | str) -> Path:
    """:func:`teacher_name`'s folder, with the teacher every run with that teacher lever value loads."""
    cfg = config(args, teacher_name(teacher), 0, recipe_overrides(args, {**BASE, "teacher": teacher}, "holdout"))
    run_stage(cfg, "squeeze")
    return cfg.run_path


def job(args, split: str, seed: int, r: dict, hard: bool = False, ipc: int = 10):
    """Run recipe ``r`` for ``seed`` on ``split`` (``hard``: only random real images with hard labels, test split);
    the teacher is :func:`teacher_dir`'s (``squeeze.checkpoint``), images and full label stores come from any
    finished run of this seed made with the same settings (the ledger decides)."""
    nm = f"test_s{seed}_hard" if hard else name(split, seed, r, ipc)
    teacher = teacher_dir(args, r["teacher"]) / "teacher" / "model.safetensors"  # one teacher for every seed
    cfg = config(args, nm, seed, recipe_overrides(args, r, split, ipc) + [f"squeeze.checkpoint={teacher}"])
    mode = cfg.recover.modes[0]
    for d in sorted(Path(args.runs).glob(f"*_s{seed}_*")):
        for part, key in ((f"images/{mode}", f"recover[{mode}]"), (f"labels/{mode}/full", f"relabel[{mode}]")):
            seed_run_from(d, cfg.run_path, [part], cfg, stages=(key,))
    if not hard:
        return run(cfg)
    from labeldistill.validate import hard_label
    run_stage(cfg, "squeeze")  # loads the shared teacher: recover needs it where no donor had these images
    run_stage(cfg, "recover")
    return hard_label(cfg, mode)


def upper_bound(args, seed: int) -> dict:
    """The dc student on the whole train split (less the holdout) with hard labels for ``--upper-epochs`` epochs,
    scored on the test split: the ceiling any IPC 10 set is measured against under this student."""
    from labeldistill.layout import REAL_TRAIN
    from labeldistill.validate import hard_label

    cfg = config(args, f"upper_s{seed}", seed, recipe_overrides(args, BASE, "test")
                 + [f"hard_label.real_epochs={args.upper_epochs}"])
    return hard_label(cfg, REAL_TRAIN)


def by_seed(args, split: str, r: dict, seeds, ipc: int = 10) -> dict:
    """``{seed: the row of its finished run, top-1 in %}`` (each run has one row)."""
    res = {s: finished_results(Path(args.runs) / name(split, s, r, ipc)) for s in seeds}
    rows = {s: {**x["rows"][0], "top1": 100 * x["rows"][0]["top1"]} for s, x in res.items() if x}
    assert all(len(res[s]["rows"]) == 1 and x["eval_split"] == split for s, x in rows.items())
    return rows


def fits(row: dict) -> bool:
    return row["label_bytes"] <= row["image_bytes"]


def choose(args) -> dict:
    """Every lever's value with the best mean holdout top-1 among the values (the base's included) that finished
    every selection seed (codecs only within the byte budget); a value still running is not a candidate, so the
    choice never rests on a subset of the seeds; the base's value where none finished."""
    best, seeds = dict(BASE), args.select_seeds
    for lever in dict(LEVERS):
        cands = [BASE] + [{**BASE, lever: v} for k, v in LEVERS if k == lever]
        rows = [by_seed(args, "holdout", c, seeds) for c in cands]
        ok = [(sum(x[s]["top1"] for s in seeds), c[lever]) for c, x in zip(cands, rows)
              if set(seeds) <= set(x) and all(fits(x[s]) for s in seeds)]
        best[lever] = max(ok, key=lambda t: t[0])[1] if ok else BASE[lever]
    return best


def final_recipe(args, best: dict) -> dict | None:
    """The recipe with the best mean holdout top-1 among the base, each chosen lever alone and ``best`` (all chosen
    levers together: chosen one at a time, they need not add up); None until each finished every selection seed."""
    cands = [BASE] + [{**BASE, k: v} for k, v in best.items() if v != BASE[k]] + [best]
    rows = [by_seed(args, "holdout", r, args.select_seeds) for r in cands]
    if any(len(x) < len(args.select_seeds) for x in rows):
        return None
    return max(zip(cands, rows), key=lambda c: sum(y["top1"] for y in c[1].values()))[0]


def lever_table(args, best: dict, out: list) -> str:
    lines = md_table(["lever", "value", "holdout top-1 %", "label / image bytes", "diff vs base, points: mean "
                      "[95 % CI]", "n", "verdict (> 0)", "chosen"])
    base = by_seed(args, "holdout", BASE, args.select_seeds)
    for lever, v in [("base", "")] + LEVERS + [("combined", "")]:
        r = BASE if lever == "base" else best if lever == "combined" else {**BASE, lever: v}
        x = by_seed(args, "holdout", r, args.select_seeds)
        diffs = {s: x[s]["top1"] - base[s]["top1"] for s in sorted(set(x) & set(base))} if lever != "base" else {}
        proto = f"dc preset, holdout split, recipe {r}"
        out.append(result_row({"part": "lever", "lever": lever, "value": v, "split": "holdout", "recipe": r},
                              {s: y["top1"] for s, y in x.items()}, proto, unit="top-1 %"))
        ver = compare(out, {"part": "lever diff", "lever": lever, "value": v}, diffs, proto) if diffs else ""
        b = (f"{x[min(x)]['label_bytes']:,} / {x[min(x)]['image_bytes']:,}"
             + ("" if all(map(fits, x.values())) else " (over)")) if x else "–"
        lines.append(md_row([lever, best if lever == "combined" else v, mean_std([y["top1"] / 100 for y in x.values()]),
                             b, interval_text(list(diffs.values()), 2), len(diffs), ver,
                             "yes" if lever in BASE and best[lever] == v else ""]))
    return "\n".join(lines)


def width_text(args, out: list) -> str:
    """Teacher width at equal length: ConvNet-128 − ConvNet-64, both 3 epochs, paired on the holdout seeds."""
    wide, narrow = ({s: y["top1"] for s, y in by_seed(args, "holdout", {**BASE, "teacher": t}, args.select_seeds).items()}
                    for t in ("w128e3", 3))
    diffs = {s: wide[s] - narrow[s] for s in sorted(set(wide) & set(narrow))}
    if not diffs:
        return ""
    v = compare(out, {"part": "teacher width", "lever": "teacher", "value": "w128e3 - 3"}, diffs,
                "dc preset, holdout split", either=True)
    return (f"Teacher width at equal length (3 epochs), ConvNet-128 − ConvNet-64: "
            f"{interval_text(list(diffs.values()), 2)} points (n = {len(diffs)}; "
            f"{'the interval excludes 0' if v == 'held' else 'not resolved'}).")


def final_table(args, rec: dict, out: list) -> str:
    best = {s: y["top1"] for s, y in by_seed(args, "test", rec, args.seeds).items()}
    hard = {s: 100 * h["top1"] for s in args.seeds for f in (Path(args.runs) / f"test_s{s}_hard").glob(HARD)
            if (h := load_json(f))}
    upper = {s: 100 * h["top1"] for s in args.upper_seeds for f in (Path(args.runs) / f"upper_s{s}").glob(UPPER)
             if (h := load_json(f))}
    at = {ipc: by_seed(args, "test", rec, args.ipc_seeds, ipc) for ipc in DSA_AT}
    lines = md_table(["row (test split)", "top-1 %", "seeds"])
    for label, vals in ((f"best recipe {rec}", best), ("random real, hard labels (the dc preset's hard recipe)", hard),
                        (f"whole train split less the holdout, hard labels, {args.upper_epochs} epochs (upper bound)",
                         upper), *((f"the same recipe at IPC {i}" + ("" if all(map(fits, x.values())) else
                                    " (labels over the byte budget)"), {s: y["top1"] for s, y in x.items()})
                                   for i, x in at.items())):
        out.append(result_row({"part": "final", "row": label, "split": "test"}, vals, "dc", unit="top-1 %"))
        lines.append(md_row([label, mean_std([v / 100 for v in vals.values()]), sorted(vals)]))
    lines += ["", *md_table(["claim", "where", "top-1 minus the anchor, points: mean [95 % CI]", "n", "verdict"])]
    claims = [(f"{a}'s {p} %", 10, best, p) for a, p in ANCHORS.items()]
    for anchor, ipc, vals, pub in claims + [(f"DSA's {p} %", i, {s: y["top1"] for s, y in at[i].items()}, p)
                                            for i, p in DSA_AT.items()]:
        # one-sample: the anchor is a fixed published number, not a paired run
        lines.append(claim_row(out, "dc", f"best recipe beats {anchor} (one-sample t, not paired)",
                               f"IPC {ipc}, test", {s: (v - pub) / 100 for s, v in vals.items()}))
    return "\n".join(lines)


def goal_text(rows: list[dict]) -> str:
    """The goal's verdict in words, from the JSON rows: the DSA IPC 10 claim and the levers whose gain held."""
    dsa = next(r for r in rows if r["setting"].get("claim", "").startswith(f"best recipe beats DSA's {ANCHORS['DSA']}"))
    up = [f"{r['setting']['lever']} {r['setting']['value']}" for r in rows
          if r["setting"].get("part") == "lever diff" and r["setting"]["lever"] != "combined" and r["verdict"] == "held"]
    gap = f"{dsa['mean']:+.2f} points against DSA's {ANCHORS['DSA']} %" if dsa["values"] else "no test seed yet"
    rest = sum(r["setting"].get("part") == "lever diff" and r["setting"]["lever"] != "combined"
               and r["verdict"] != "held" for r in rows)
    short = ("" if dsa["verdict"] == "held" or not dsa["values"] else
             f" Which lever ran out: the gains that held ({', '.join(up) or 'none'}) are already spent on the final "
             f"recipe, and the other {rest} lever values measured here gained nothing that held, so none of them is "
             f"left to close the gap.")
    return (f"**Goal** (above DSA's {ANCHORS['DSA']} % at IPC 10, the interval saying so): "
            f"{'reached' if dsa['verdict'] == 'held' else 'not reached'} ({gap}). Levers whose holdout gain over the "
            f"base held (byte budget aside): {', '.join(up) or 'none (every lever measured here ran out)'}.{short}")


def missing_runs(args, best: dict, rec: dict | None) -> list[str]:
    """The planned runs (levers, combined, test rows, hard rows, upper bound, IPC rows) not finished yet."""
    runs = Path(args.runs)
    recipes = [BASE] + [{**BASE, k: v} for k, v in LEVERS] + [best]
    want = [name("holdout", s, r) for r in recipes for s in args.select_seeds]
    if rec is not None:
        want += [name("test", s, rec) for s in args.seeds] + [name("test", s, rec, i) for i in DSA_AT for s in args.ipc_seeds]
    todo = sorted({n for n in want if finished_results(runs / n) is None})
    todo += [f"test_s{s}_hard" for s in args.seeds if not any((runs / f"test_s{s}_hard").glob(HARD))]
    todo += [f"upper_s{s}" for s in (args.upper_seeds if args.upper_epochs else []) if not any((runs / f"upper_s{s}").glob(UPPER))]
    return todo + ([] if rec else ["the final recipe (combined holdout runs)"])


def write(args, t0: float, status: str) -> None:
    best = choose(args)
    rec = final_recipe(args, best)
    todo = missing_runs(args, best, rec)
    teachers = {t: load_json(Path(args.runs) / teacher_name(t) / "teacher" / "teacher.json") for t in TEACHERS}
    head = header("The push: Fashion-MNIST IPC 10 under DC's student, label bytes ≤ image bytes",
                  commit=f"{args.commit} (runs made by {', '.join(run_commits(args)) or '–'})") + (
        f"Status: {status}; " + (f"**partial**, {len(todo)} planned runs not finished ({', '.join(todo[:4])}"
                                 f"{', …' if len(todo) > 4 else ''}): only the finished runs below" if todo
                                 else "every planned run finished") + ".  \n"
        "Teachers (batch norm, trained without the holdout images; one per teacher lever value, shared by every "
        "seed), test top-1: " + (", ".join(f"{teacher_label(v)} {100 * t['top1']:.2f} %" for v, t in teachers.items()
                                           if t) or "none trained yet") + ".  \n"
        f"Base recipe: {BASE} (codec `<logits>x<prune factor>`; relabel batch 50, CutMix 0.5, pool `prefix`, "
        f"recover {args.iterations} iterations). The dc preset fixes the student's 301 epochs: the relabel lever "
        f"changes only the stored epochs. The `gift` lever is the project's GIFT-style cosine loss (not a verified "
        f"reproduction): at T = 20 its gradient is about 1/100 of `kl`'s (`labeldistill.validate.gift_loss`), which the "
        f"dc preset's SGD at lr 0.01 does not make up for; its row measures that pairing.  \nCompute: {compute_seconds(args) / 60:.0f} min recorded by the runs, "
        f"{(time.time() - t0) / 60:.1f} min this invocation. {__doc__.splitlines()[-1]}")
    rows: list[dict] = []
    parts = [head, f"### Levers (holdout split, {args.holdout // 10} per class; seeds {args.select_seeds})\n\n"
             "Paired difference: 95 % t-interval over seeds. Chosen: best mean within the byte budget.\n\n"
             + lever_table(args, best, rows) + (f"\n\n{w}" if (w := width_text(args, rows)) else "")]
    if rec:
        parts.append(f"### Final rows (test split, seeds {args.seeds})\n\n" + final_table(args, rec, rows))
        parts.append(goal_text(rows))
    write_section(Path(args.out), args.section, "\n\n".join(parts), rows, commit=args.commit)


def main(argv=None) -> None:
    args = parse_args(argv)
    args.commit = git_commit()
    tune_malloc()
    torch.set_num_threads(1)
    t0 = time.time()

    def mine(seeds):
        return [s for s in seeds if args.only_seeds is None or s in args.only_seeds]

    if not args.collect and "upper" in args.parts:
        for seed in args.upper_seeds if args.upper_epochs else []:
            upper_bound(args, seed)
            write(args, t0, f"upper bound: seed {seed} done")
    if not args.collect and "levers" in args.parts:
        for seed in mine(args.select_seeds):
            for r in ([] if args.only_levers else [BASE]) + [{**BASE, k: v} for k, v in LEVERS
                                                              if not args.only_levers or f"{k}={v}" in args.only_levers]:
                job(args, "holdout", seed, r)
                write(args, t0, f"selection: seed {seed}, {name('holdout', seed, r)} done")
    if not args.collect and "final" in args.parts:
        best = choose(args)
        for seed in mine(args.select_seeds):
            job(args, "holdout", seed, best)
        rec = final_recipe(args, best)
        if rec is None:
            print("fmnist_push: the combined recipe has not finished on every selection seed (another process's "
                  "seeds?): no test rows run; run --parts final for those seeds first", file=sys.stderr)
        for seed in mine(args.seeds) if rec else []:
            job(args, "test", seed, rec)
            job(args, "test", seed, {**BASE, "images": "random_real"}, hard=True)
            write(args, t0, f"test rows: seed {seed} done")
    rec = final_recipe(args, choose(args)) if not args.collect and "ipc" in args.parts else None
    for ipc in DSA_AT if rec else []:
        for seed in mine(args.ipc_seeds):
            job(args, "test", seed, rec, ipc=ipc)
            write(args, t0, f"IPC {ipc}: seed {seed} done")
    write(args, t0, "written from finished runs by --collect" if args.collect
          else f"parts {args.parts} done for seeds {args.only_seeds or 'all'}")


if __name__ == "__main__":
    main()
