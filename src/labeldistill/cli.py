"""Command line: ``labeldistill <stage> CONFIG [key=value ...]``.

User errors (bad config, data, store) print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import LabelDistillError

STAGES = ("squeeze", "class-stats", "recover", "relabel", "prune", "validate", "run", "report")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="labeldistill", description="Label side of dataset distillation.")
    sub = p.add_subparsers(dest="command", required=True)
    for name in STAGES:
        s = sub.add_parser(name, help=f"run the {name} stage" if name not in ("run", "report") else
                           ("run every stage of the main job" if name == "run" else "rewrite report.md"))
        s.add_argument("config", help="YAML experiment config")
        s.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. recover.ipc=5")
        if name in ("recover", "relabel", "prune", "validate"):
            s.add_argument("--mode", action="append", help="recover mode(s); default: recover.modes")
        if name in ("prune", "validate"):
            s.add_argument("--factor", action="append", type=float, help="prune factor(s); default: prune.factors")
        if name != "report":
            s.add_argument("--force", action="store_true", help="redo the stage even if its output exists")
    ll = sub.add_parser("learn-labels", help="learn soft labels for real base examples (LD / RR, Bohdal et al. 2020)")
    ll.add_argument("config", help="YAML learn-labels config")
    ll.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    st = sub.add_parser("store", help="inspect a label store")
    sst = st.add_subparsers(dest="store_command", required=True)
    info = sst.add_parser("info", help="sizes and settings of a label store")
    info.add_argument("path")
    info.add_argument("--json", action="store_true")
    ver = sst.add_parser("verify", help="check every shard's checksum")
    ver.add_argument("path")
    return p


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "store":
        from .labels.store import LabelStore

        store = LabelStore(args.path, verify=args.store_command == "verify")
        if args.store_command == "verify":
            print(f"ok: {len(store.manifest['shards'])} shards, {len(store)} steps verified")
            return 0
        m = store.manifest
        summary = {"path": str(store.path), "steps": len(store), "entries": m["num_entries"],
                   "bytes_on_disk": store.bytes_on_disk(), "component_bytes": m["component_bytes"],
                   "prune": m["prune"], "epochs": m["epochs"], "batch_size": m["batch_size"]}
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            for k, v in summary.items():
                print(f"{k}: {v}")
        return 0

    if args.command == "learn-labels":
        from .learn_labels import learn_labels_main

        return learn_labels_main(args.config, args.overrides)

    from .config import load_config

    cfg = load_config(args.config, args.overrides)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    modes = getattr(args, "mode", None) or cfg.recover.modes
    factors = getattr(args, "factor", None) or cfg.prune.factors
    force = getattr(args, "force", False)
    if args.command == "run":
        from .pipeline import run

        run(cfg)
    elif args.command == "squeeze":
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
    elif args.command == "prune":
        from .common import RunLayout
        from .labels.prune import prune_store

        lay = RunLayout(cfg.run_path)
        for m in modes:
            for f in factors:
                s = prune_store(lay.full_store(m), lay.pruned_store(m, f), float(f), cfg.prune.strategy, cfg.seed,
                                overwrite=force)
                print(f"{s.path}: {len(s)} steps, {s.bytes_on_disk()} bytes")
    elif args.command == "validate":
        from .validate import validate

        for m in modes:
            for f in factors:
                r = validate(cfg, m, float(f), force=force)
                print(f"{m} x{f:g}: top-1 {100 * r['top1']:.2f} %, labels {r['label_bytes']} bytes")
    elif args.command == "report":
        from .report import write_report

        print(write_report(cfg.run_path))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``labeldistill`` console script."""
    try:
        return _main(argv)
    except LabelDistillError as e:
        print(f"labeldistill: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labeldistill: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
