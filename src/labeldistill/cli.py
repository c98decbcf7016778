"""Command line: ``labeldistill <stage> CONFIG [key=value ...]``.

User errors (bad config, data, store) print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import ConfigError, LabelDistillError
from .variants import resolve_mode

STAGES = ("squeeze", "class-stats", "recover", "relabel", "generator", "prune", "validate", "hard-label", "run",
          "report")


def _add_stage_parsers(sub: argparse._SubParsersAction) -> None:
    """One sub-command per main-job stage (:data:`STAGES`) with its config, overrides and flags."""
    for name in STAGES:
        s = sub.add_parser(name, help=f"run the {name} stage" if name not in ("run", "report") else
                           ("run every stage of the main job" if name == "run" else "rewrite report.md"))
        s.add_argument("config", help="YAML experiment config")
        s.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. recover.ipc=5")
        if name in ("recover", "relabel", "generator", "prune", "validate", "hard-label"):
            s.add_argument("--mode", action="append", help="recover mode(s); default: recover.modes")
        if name == "hard-label":
            s.add_argument("--no-real", action="store_true",
                           help="only the modes' images, not the real train split (default: hard_label.real)")
        if name in ("prune", "validate"):
            s.add_argument("--factor", action="append", type=float, help="prune factor(s); default: prune.factors")
        if name != "report":
            s.add_argument("--force", action="store_true", help="redo the stage even if its output exists")
        if name == "run":
            s.add_argument("--dry-run", action="store_true",
                           help="check the config, data and teacher checkpoint, print the planned work and a storage "
                                "estimate; train and write nothing")
            s.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")
            s.add_argument("--no-probe", action="store_true",
                           help="with --dry-run: skip the time estimate (a few real steps of each stage, timed)")


def _build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="labeldistill", description="Label side of dataset distillation.")
    p.add_argument("--version", action="version", version=f"labeldistill {__version__}",
                   help="print the installed version (importlib.metadata) and exit")
    sub = p.add_subparsers(dest="command", required=True)
    _add_stage_parsers(sub)
    ll = sub.add_parser("learn-labels", help="learn soft labels for real base examples (LD / RR, Bohdal et al. 2020)")
    ll.add_argument("config", help="YAML learn-labels config")
    ll.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    ll.add_argument("--dry-run", action="store_true", help="load the data, check the teacher checkpoint and print "
                    "the planned work (base examples, target data, steps, outputs); train and write nothing")
    ll.add_argument("--force", action="store_true", help="redo a finished run (and its own teacher) from the start")
    st = sub.add_parser("store", help="inspect a label store")
    sst = st.add_subparsers(dest="store_command", required=True)
    info = sst.add_parser("info", help="bytes per component of a label store, images and class statistics")
    info.add_argument("path")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("--images", help="image folder the store labels (default: inferred from the run dir)")
    info.add_argument("--class-stats", help="stats.safetensors (default: inferred from the run dir)")
    ver = sst.add_parser("verify", help="check every shard's checksum")
    ver.add_argument("path")
    ex = sub.add_parser("export", help="export a run's images + soft labels for another tool",
                        description="ddranking: images.pt (float32 (N, C, H, W), class-major, normalised with the "
                        "dataset's mean/std), labels.pt (float32 (N, K) teacher logits) and meta.json (mean/std, "
                        "class order, IPC, mode, teacher) in <run_dir>/export/ddranking/<mode>/ or --out")
    ex.add_argument("run_dir")
    ex.add_argument("--format", required=True, choices=["ddranking"])
    ex.add_argument("--mode", action="append", help="recover mode(s); default: every images/<mode>")
    ex.add_argument("--labels", default="teacher", choices=["teacher", "store"],
                    help="teacher: the run's teacher's logits on each un-augmented image (default; what DD-Ranking "
                    "makes itself); store: the mean stored logits of --store over each image's un-mixed views")
    ex.add_argument("--store", default="full", help="with --labels store: label store tag under labels/<mode>/ "
                    "(default: full)")
    ex.add_argument("--device", default="auto", help="where the teacher runs (default: auto)")
    ex.add_argument("--out", help="output folder (one mode only)")
    lb = sub.add_parser("leaderboard", help="one table over main-job and learn-labels run directories")
    lb.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    lb.add_argument("--json", action="store_true", help="machine-readable output")
    lb.add_argument("--budget", type=float, metavar="BYTES", help="print the best row within BYTES total bytes")
    lb.add_argument("--plot", metavar="FILE", help="also draw top-1 vs total bytes with the Pareto front (PNG, ...)")
    return p


def _leaderboard_command(args: argparse.Namespace) -> int:
    """``leaderboard RUN_DIR [RUN_DIR ...] [--json] [--budget BYTES] [--plot FILE]``."""
    from . import leaderboard as lb

    table = lb.leaderboard(args.run_dirs)
    if args.plot:
        lb.plot_leaderboard(table, args.plot)
    if args.json:
        out = {"rows": table}
        if args.budget is not None:
            out["budget"] = {"bytes": args.budget, "best": lb.best_within(table, args.budget)}
        print(json.dumps(out, indent=2))
        return 0
    print(lb.format_leaderboard(table), end="")
    if args.budget is not None:
        print(lb.format_choice(table, args.budget))
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``, accepting ``key=value`` overrides after flags too (``run CONFIG --dry-run a=1``)."""
    parser = _build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    return args


def _store_command(args: argparse.Namespace) -> int:
    """``store info`` / ``store verify``."""
    from .labels.store import LabelStore

    store = LabelStore(args.path, verify=args.store_command == "verify")
    if args.store_command == "verify":
        print(f"ok: {len(store.manifest['shards'])} shards, {len(store)} steps verified")
        return 0
    from .labels.accounting import format_report, store_report

    rep = store_report(args.path, args.images, args.class_stats)
    print(json.dumps(rep, indent=2) if args.json else format_report(rep))
    return 0


def _export_command(args: argparse.Namespace) -> int:
    """``export RUN_DIR --format ddranking [--mode M] [--labels teacher|store] [--store TAG] [--out DIR]``."""
    from pathlib import Path

    from .export import export_ddranking

    run_dir = Path(args.run_dir)
    modes = args.mode or sorted(p.name for p in (run_dir / "images").glob("*") if p.is_dir())
    if not modes:
        raise LabelDistillError(f"no images/<mode> folders in {run_dir}")
    if args.out and len(modes) > 1:
        raise LabelDistillError("--out needs exactly one --mode")
    for m in modes:
        print(export_ddranking(run_dir, m, args.store, args.out, labels=args.labels, device=args.device))
    return 0


def _run_command(cfg, args: argparse.Namespace) -> None:
    """``run`` (every stage) or ``run --dry-run`` (the plan)."""
    if args.dry_run:
        from .plan import add_time_estimate, format_plan, plan_run

        plan = plan_run(cfg)
        if not args.no_probe:
            add_time_estimate(cfg, plan)
        print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
    else:
        from .pipeline import run

        run(cfg, force=args.force)


def _report_command(cfg) -> None:
    """``report``: results.json, report.md and plots from whatever validate rows exist (any seed)."""
    from .io import atomic_write_json
    from .report import collect_results, summarize, write_report

    if not cfg.seeds:
        results = collect_results(cfg)
    else:
        import dataclasses

        parts = [collect_results(dataclasses.replace(cfg, seed=s, seeds=None), cfg.run_path / f"seed{s}")
                 for s in cfg.seeds if (cfg.run_path / f"seed{s}" / "validate").is_dir()]
        if not parts:
            raise LabelDistillError(f"no validate results under {cfg.run_path}/seed*/: run the job first")
        results = {**parts[0], "seeds": [p["seed"] for p in parts], "teachers": [p["teacher"] for p in parts],
                   "rows": [r for p in parts for r in p["rows"]], "stale": [s for p in parts for s in p["stale"]]}
        results["summary"] = summarize(results["rows"])
    atomic_write_json(cfg.run_path / "results.json", results)
    print(write_report(cfg.run_path))
    if results["stale"]:
        print(f"left out {len(results['stale'])} result(s) made with other settings: {', '.join(results['stale'])}")


def _stage_command(cfg, args: argparse.Namespace, modes: list[str], force: bool) -> None:
    """One stage of the main job: squeeze, class-stats, recover, relabel, generator or hard-label."""
    if args.command == "squeeze":
        from .squeeze import squeeze

        info = squeeze(cfg, force=force)
        print(f"teacher {info['model']}: top-1 {100 * info['top1']:.2f} %")
    elif args.command == "class-stats":
        from .bnstats import class_stats

        print(class_stats(cfg, force=force))
    elif args.command == "recover":
        from .recover import recover

        for m in modes:
            print(recover(cfg, m, force=force))
    elif args.command == "relabel":
        from .labels.relabel import relabel

        for m in modes:
            print(relabel(cfg, m, force=force).path)
    elif args.command == "generator":
        from .labels.generator import train_generator

        for m in modes:
            g = train_generator(cfg, m, force=force)
            print(f"{m} generator {g['model']}: {g['weights_bytes']} bytes, loss {g['losses'][0]:.4f} → "
                  f"{g['losses'][-1]:.4f}")
    elif args.command == "hard-label":
        from .config import student_specs, with_student
        from .layout import REAL_TRAIN
        from .validate import hard_label

        specs = student_specs(cfg.validate)
        for spec in specs:  # each student of validate.students gets its own baselines
            for m in list(modes) + ([REAL_TRAIN] if cfg.hard_label.real and not args.no_real else []):
                r = hard_label(with_student(cfg, spec), m, force=force)
                who = f" ({r['student']})" if len(specs) > 1 else ""
                print(f"{m}: hard-label top-1 {100 * r['top1']:.2f} % ({r['n_images']} images, {r['epochs']} "
                      f"epochs){who}")


def _label_command(cfg, args: argparse.Namespace, modes: list[str], force: bool) -> None:
    """``prune`` / ``validate`` for the configured label variants whose factor is among ``--factor``."""
    from .config import student_specs, with_student
    from .labels.prune import prune_all
    from .provenance import check_students
    from .main_stages import VALIDATE
    from .pipeline import spread_validate
    from .runner import run_spread
    from .validate import validate
    from .variants import label_variants

    if args.factor:
        bad = [f for f in args.factor if not f >= 1]
        if bad:
            raise ConfigError(f"--factor must be a number >= 1 (1 keeps every stored step), got {bad[0]:g}")
        if cfg.relabel.only_kept is not None and {float(f) for f in args.factor} != {float(cfg.relabel.only_kept)}:
            raise ConfigError(f"relabel.only_kept={cfg.relabel.only_kept:g} generated only that factor's store; "
                              "--factor must be the same")
        cfg.prune.factors = [float(f) for f in args.factor]
    variants = label_variants(cfg)
    if args.command == "validate":
        check_students(cfg)
    for m in modes:
        if args.command == "prune":
            for path in prune_all(cfg, m, force=force):
                print(path)
        elif spread_validate(cfg):  # validate.parallel: students under torchrun: whole students per rank
            refs = [r for r in VALIDATE.units(cfg) if r.mode == m]
            done = run_spread([(VALIDATE, r) for r in refs], cfg, {r.key for r in refs} if force else set())
            for r in (done[ref.key] for ref in refs):
                print(f"{m} {r['label_store']} ({r['label_source']} labels) {r['student']} {r['student_args']}: "
                      f"top-1 {100 * r['top1']:.2f} %, labels {r['label_bytes']} bytes")
        else:
            for spec in student_specs(cfg.validate):  # each student as if it were the only one
                for v, rep in ((v, rep) for v in variants for rep in range(cfg.validate.repeats)):
                    r = validate(with_student(cfg, spec), m, v, force=force, repeat=rep)
                    print(f"{m} {r['label_store']} ({r['label_source']} labels) {r['student']} {r['student_args']}"
                          f"{f' repeat {rep}' if rep else ''}: top-1 {100 * r['top1']:.2f} %, "
                          f"labels {r['label_bytes']} bytes")


def _main(argv: list[str] | None) -> int:
    args = _parse_args(argv)
    if args.command == "store":
        return _store_command(args)
    if args.command == "export":
        return _export_command(args)
    if args.command == "leaderboard":
        return _leaderboard_command(args)
    if args.command == "learn-labels":
        if args.dry_run:
            from .learn_labels.config import load_ld_config
            from .learn_labels.plan import format_ld_plan, plan_learn_labels

            print(format_ld_plan(plan_learn_labels(load_ld_config(args.config, args.overrides), args.force)))
            return 0
        from .learn_labels import learn_labels_main

        return learn_labels_main(args.config, args.overrides, force=args.force)
    from .config import load_config
    from .runtime import deterministic_env, set_threads

    cfg = load_config(args.config, args.overrides)
    deterministic_env(cfg.deterministic)  # before the first cuBLAS handle: no stage has touched CUDA yet
    from .data import resolve_augmentation

    resolve_augmentation(cfg)  # every stage, the stored config.yaml and the dry run see concrete values
    set_threads(cfg.threads)
    modes = getattr(args, "mode", None) or cfg.recover.modes
    for m in modes:
        resolve_mode(m, cfg.recover.variants)
    force = getattr(args, "force", False)
    if args.command == "run":
        _run_command(cfg, args)
    elif args.command == "report":
        _report_command(cfg)
    elif args.command in ("prune", "validate"):
        _label_command(cfg, args, modes, force)
    else:
        _stage_command(cfg, args, modes, force)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``labeldistill`` console script (also under ``torchrun``)."""
    try:
        from .distributed import init_distributed
        from .runtime import tune_malloc

        tune_malloc()
        init_distributed()
        return _main(argv)
    except LabelDistillError as e:
        print(f"labeldistill: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # unwritable output folder, full disk, vanished file
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"labeldistill: error: {e.strerror or e}{where}; check that the run directory is writable and "
              "the disk has space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labeldistill: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    finally:
        from .distributed import close_distributed

        close_distributed()


if __name__ == "__main__":
    sys.exit(main())
