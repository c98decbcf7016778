"""results.json → report.md, the accuracy-vs-bytes plot and the synthetic image grid."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import torch  # noqa: E402

from .config import Config  # noqa: E402
from .data.synthetic import load_synthetic  # noqa: E402
from .errors import LabelDistillError  # noqa: E402
from .io import human_bytes, read_json  # noqa: E402
from .layout import RunLayout  # noqa: E402
from .main_stages import VALIDATE  # noqa: E402
from .provenance import fingerprint, machine, read_ledger, stage_seconds  # noqa: E402
from .runtime import pick_device  # noqa: E402

_GROUP = ("recover", "prune_factor", "prune_strategy", "logits", "granularity", "student")


def _student(r: dict) -> str:
    """The student with its main arguments: ``convnet(width=32, depth=3)``."""
    args = r.get("student_args") or {}
    return f"{r['student']}({', '.join(f'{k}={v}' for k, v in args.items())})" if args else r["student"]


def _labels_from(r: dict) -> tuple[str, str]:
    """(label source, calibration) of a row; rows made before these existed are ``stored`` / ``none``."""
    return r.get("label_source", "stored"), r.get("calibration", "none")


def _group_key(r: dict) -> tuple:
    """The setting a row belongs to: its images and labels, its student and that student's training recipe (two
    entries of ``validate.students`` with one model and different learning rates are two settings)."""
    recipe = tuple(sorted((r.get("recipe") or {}).items()))
    return tuple(r.get(k) for k in _GROUP) + (_student(r),) + _labels_from(r) + (recipe,)


def summarize(rows: list[dict]) -> list[dict]:
    """Mean ± std (population, in fractions) of top-1 (and top-5 where every row has it) over the seeds and
    repeats (``validate.repeats``) of each (images, labels, student) setting.

    Returns:
        One dict per setting, in first-seen order: the grouping fields, ``ipc``, ``label_bytes``,
        ``image_bytes`` (of the first seed), ``kept_steps``, ``top1_mean``, ``top1_std`` (``top5_mean``,
        ``top5_std``), ``n``, ``seeds``, ``repeats`` (each row's repeat index, 0 for rows made before repeats).
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(_group_key(r), []).append(r)
    out = []
    for rs in groups.values():
        t = torch.tensor([r["top1"] for r in rs], dtype=torch.float64)
        first = rs[0]
        out.append({**{k: first.get(k) for k in _GROUP}, "student_args": first.get("student_args", {}),
                    "source": first.get("source"), "label_source": _labels_from(first)[0],
                    "calibration": _labels_from(first)[1], "ipc": first["ipc"], "kept_steps": first.get("kept_steps"), "label_bytes": first["label_bytes"],
                    "image_bytes": first["image_bytes"], "top1_mean": float(t.mean()),
                    "top1_std": float(t.std(unbiased=False)) if len(rs) > 1 else 0.0, "n": len(rs),
                    "seeds": [r.get("seed") for r in rs], "repeats": [r.get("repeat", 0) for r in rs],
                    **({"recipe": first["recipe"]} if "recipe" in first else {}),
                    **_top5(rs)})
    return out


def _top5(rows: list[dict]) -> dict:
    """``top5_mean`` and ``top5_std`` (population) when every row has a top-5, else ``{}``."""
    if not all("top5" in r for r in rows):
        return {}
    t = torch.tensor([r["top5"] for r in rows], dtype=torch.float64)
    return {"top5_mean": float(t.mean()), "top5_std": float(t.std(unbiased=False)) if len(rows) > 1 else 0.0}


def _run_label(r: dict) -> str:
    """A row's seed, with its repeat after the first: ``0`` or ``0 rep2``."""
    return f"{r.get('seed')}" + (f" rep{r['repeat']}" if r.get("repeat") else "")


def results_table(results: dict) -> str:
    """A Markdown table of the result rows (with seeds: mean ± std per setting, then one row per seed)."""
    head = ("| recover | IPC | prune | strategy | labels | kept steps | label bytes | image bytes | labels ÷ images "
            "| student | top-1 | {last} |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    if results.get("summary"):
        lines = [_line(r, f"{100 * r['top1_mean']:.1f} ± {100 * r['top1_std']:.1f} %", f"{r['n']}")
                 for r in results["summary"]]
        per_seed = [_line(r, f"{100 * r['top1']:.1f} %", _run_label(r)) for r in results["rows"]]
        return (head.format(last="seeds") + "\n".join(lines) + "\n\nPer seed:\n\n" + head.format(last="seed")
                + "\n".join(per_seed) + "\n")
    lines = [_line(r, f"{100 * r['top1']:.1f} %", f"{r['seconds']:.0f}") for r in results["rows"]]
    return head.format(last="seconds") + "\n".join(lines) + "\n"


def _line(r: dict, top1: str, last: str) -> str:
    strategy = r.get("prune_strategy", "random")
    if r.get("granularity", "batch") != "batch":
        strategy += f" ({r['granularity']})"
    source, calibration = _labels_from(r)
    labels = r.get("logits", "fp16") if source == "stored" else f"{source} model"  # label bytes: its weights
    labels += "" if calibration == "none" else f" + {calibration}"
    return (f"| {r['recover']} | {r['ipc']} | {r['prune_factor']:g}× | {strategy} | {labels} "
            f"| {r.get('kept_steps', '')} | {human_bytes(r['label_bytes'])} | {human_bytes(r['image_bytes'])} "
            f"| {r['label_bytes'] / max(r['image_bytes'], 1):.2f} | {_student(r)} | {top1} | {last} |")


def plot_accuracy_vs_bytes(results: dict, path: Path) -> None:
    """Top-1 against total bytes (images + labels), one line per recover mode and student, log-scale x; error
    bars (± std over seeds) when the results hold several seeds."""
    rows = results.get("summary") or [{**r, "top1_mean": r["top1"], "top1_std": 0.0} for r in results["rows"]]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    students = {_student(r) for r in rows}
    for key in sorted({(r["recover"], _student(r)) for r in rows}):
        sel = sorted((r for r in rows if (r["recover"], _student(r)) == key
                      and r.get("prune_strategy", "random") == "random" and r.get("logits", "fp16") == "fp16"
                      and _labels_from(r) == ("stored", "none")),
                     key=lambda r: r["label_bytes"] + r["image_bytes"])
        xs = [(r["label_bytes"] + r["image_bytes"]) / 1024 for r in sel]
        ys = [100 * r["top1_mean"] for r in sel]
        label = key[0] if len(students) == 1 else f"{key[0]} · {key[1]}"
        ax.errorbar(xs, ys, yerr=[100 * r["top1_std"] for r in sel], marker="o", capsize=3, label=label)
        for r, x, y in zip(sel, xs, ys):
            ax.annotate(f"{r['prune_factor']:g}×", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("total storage: images + soft labels (KiB, log scale)")
    ax.set_ylabel("student top-1 on real test set (%)")
    seeds = f", mean ± std over {len(results['seeds'])} seeds" if results.get("seeds") else ""
    ax.set_title(f"{results['dataset']}: accuracy vs storage (random pruning, fp16{seeds})", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def collect_results(cfg: Config, run_dir: Path | None = None) -> dict:
    """Results of a run built stage by stage: every ``validate/<student>/*.json`` row of the run directory that
    is current (rows of other settings are listed under ``stale``). A row knows its identity: the unit key
    (``stage``) and fingerprint it was made with. A row of a unit ``cfg`` asks for
    (:data:`~labeldistill.main_stages.VALIDATE`) is current when its fingerprint is the one ``cfg`` gives; a row of
    another unit — another label source, calibration or student, kept side by side — when ``stages.json`` records
    that unit with the row's fingerprint. Rows without a key (made before rows carried one) are stale.

    Raises:
        LabelDistillError: no teacher or no validate rows yet.
    """
    root = Path(run_dir or cfg.run_path)
    cfg = dataclasses.replace(cfg, run_dir=str(root)) if run_dir is not None else cfg
    layout = RunLayout(root)
    expected = {ref.key: fingerprint(VALIDATE.settings(cfg, ref)) for ref in VALIDATE.units(cfg)}
    ledger = read_ledger(layout)
    rows, stale = [], []
    for f in sorted((root / "validate").glob("*/*.json")):
        r = read_json(f)
        key, fp = r.get("stage"), r.get("fingerprint")
        want = expected.get(key) if key in expected else ledger.get(key, {}).get("fingerprint")
        (rows if key is not None and fp == want else stale).append(r)
    if not (root / "teacher" / "teacher.json").is_file() or not (rows or stale):
        raise LabelDistillError(f"no validate results in {root}: run 'labeldistill validate CONFIG' first")
    t = read_json(root / "teacher" / "teacher.json")
    old = read_json(root / "results.json") if (root / "results.json").is_file() else {}
    prov = {**(old.get("provenance") or machine(pick_device(cfg.device))), "stage_seconds": stage_seconds(layout)}
    return {"provenance": prov, "name": cfg.name, "dataset": cfg.data.dataset, "seed": cfg.seed,
            "teacher": {"model": t["model"], "model_args": t.get("model_args", {}), "top1": t["top1"],
                        "epochs": t["epochs"]},
            "rows": rows, "stale": [str(r.get("label_store")) + f" ({r['student']})" for r in stale],
            "seconds": round(sum(r.get("seconds", 0) for r in rows), 2),
            **({"summary": summarize(rows)} if any(r.get("repeat") for r in rows) else {})}


def plot_image_grid(folders: dict[str, Path], path: Path, per_class: int = 10) -> None:
    """One panel per recover mode: rows = classes, columns = up to ``per_class`` images."""
    fig, axes = plt.subplots(1, len(folders), figsize=(4.2 * len(folders), 4.4), squeeze=False)
    for ax, (mode, folder) in zip(axes[0], folders.items()):
        data = load_synthetic(folder, (0.0,), (1.0,))[0]
        rows = []
        for c in range(data.num_classes):
            imgs = data.images[data.labels == c][:per_class]
            rows.append(torch.cat(list(imgs), dim=2))
        grid = torch.cat(rows, dim=1)  # (C, H·classes, W·k)
        a = grid.permute(1, 2, 0).numpy()
        ax.imshow(a[:, :, 0] if a.shape[2] == 1 else a, cmap="gray" if a.shape[2] == 1 else None)
        ax.set_title(mode)
        ax.set_yticks([(i + 0.5) * data.images.shape[2] for i in range(data.num_classes)])
        ax.set_yticklabels(data.classes, fontsize=7)
        ax.set_xticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _eval_split(results: dict) -> str:
    """The split the rows' top-1 is measured on (``test`` for rows made before ``eval_split`` existed)."""
    splits = sorted({r.get("eval_split", "test") for r in results.get("rows", [])}) or ["test"]
    return " and ".join(splits) + (" (held out of the train split)" if "holdout" in splits else "")


def write_report(run_dir: Path) -> Path:
    """Write ``report.md`` and ``plots/`` from ``results.json`` in ``run_dir``."""
    run_dir = Path(run_dir)
    results = read_json(run_dir / "results.json")
    plot_accuracy_vs_bytes(results, run_dir / "plots" / "accuracy_vs_bytes.png")
    images_root = run_dir / "images" if not results.get("seeds") else run_dir / f"seed{results['seeds'][0]}" / "images"
    folders = {m: images_root / m for m in sorted({r["recover"] for r in results["rows"]})
               if (images_root / m / "images.json").is_file()}
    if folders:
        plot_image_grid(folders, run_dir / "plots" / "images.png")
    t = results["teacher"]
    tops = ", ".join(f"{100 * x['top1']:.2f}" for x in results.get("teachers", [t]))
    prov = results.get("provenance", {})
    text = (
        f"# {results['name']}: soft-label pruning on {results['dataset']}\n\n"
        f"Teacher: {t['model']} {t.get('model_args', {})}, {t['epochs']} epochs, "
        f"top-1 {tops} % on the real test split" + (f" (seeds {results['seeds']})" if results.get("seeds") else "")
        + ".\n\n"
        + (f"Code {prov.get('commit')} (labeldistill {prov.get('labeldistill')}), torch {prov.get('torch')}, "
           f"{prov.get('device')} ({prov.get('device_name')}), {prov.get('torch_threads')} torch thread(s).\n\n"
           if prov else "")
        + results_table(results)
        + "\nlabel bytes = bytes on disk of the (pruned) label store; image bytes = the image files. "
        f"top-1 is measured on the real {_eval_split(results)} split.\n\n"
        "![accuracy vs bytes](plots/accuracy_vs_bytes.png)\n\n![synthetic images](plots/images.png)\n"
    )
    out = run_dir / "report.md"
    out.write_text(text)
    return out
