"""``labeldistill leaderboard``: one table over several run directories (main-job and learn-labels runs).

Each row is one setting: source of the images, label method and codec, student, images + labels bytes, top-1
mean ± std (population) over the runs' seeds, and, for a main-job image source with a ``random_real`` row of the
same label settings and student among the inputs, DD-Ranking's IOR = top-1(source) − top-1(random_real). Rows
on the Pareto front of top-1 against total bytes are marked ``*``.

Main-job rows (``results.json`` rows with ``recover``) are grouped like :func:`labeldistill.report.summarize`
(plus ``validate.loss``, ``validate.calibration`` and ``validate.label_source``): images = the recover mode, labels =
``x<factor> <strategy>``, codec = ``logits``, bytes = ``label_bytes`` + ``image_bytes`` as recorded. A row whose
labels come from a label model (``label_source`` ``online`` / ``generator``) is labelled ``<source> model (x<factor>
...)`` (the factor names the store whose augmentations were replayed) with codec ``float32 weights``, and its label
bytes are the model's weights file, as validate recorded them. Learn-labels rows (rows with ``method``): images =
``base examples``, labels = the method, codec = ``float32``; bytes = the row's (or results') ``label_bytes`` /
``image_bytes`` if recorded, else labels = ``N × C × 4`` (the label set as float32, ``C`` from ``labels.json``'s
target classes) and images = the uint8 ``base_images`` tensor of ``labels.safetensors`` (``N·C·H·W``), read from
its header (``dd`` rows: the float32 ``dd_images`` tensor, ``N·C·H·W·4``, labelled "learned images");
unknown bytes are shown as ``?`` and such a row is left out of the front and the budget choice.
Main-job rows scored on the ``holdout`` split (``validate.eval_split: holdout``) are left out: the table compares
test-split accuracy.
Their top-1 spread is over the meta-test repeats (``top1_all``) of every run given. Not done here: HLR, plots.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from .errors import LabelDistillError
from .io import human_bytes, read_json

_MAIN_KEY = ("prune_factor", "prune_strategy", "logits", "granularity", "loss", "label_source", "calibration",
             "student")


def _student(r: dict, name: str = "student", args: str = "student_args") -> str:
    a = r.get(args) or {}
    return f"{r[name]}({', '.join(f'{k}={v}' for k, v in a.items())})" if a else str(r[name])


def _safetensors_shape(path: Path, key: str) -> list[int] | None:
    """The shape of tensor ``key`` from a safetensors header (no tensor data read), or ``None``."""
    if not path.is_file():
        return None
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return header.get(key, {}).get("shape")


def _main_rows(rows: list[dict], run: str) -> list[dict]:
    out = []
    for r in rows:
        if r.get("eval_split", "test") != "test":  # scored on the held-out train images: not comparable
            continue
        labels = f"x{r.get('prune_factor', 1):g} {r.get('prune_strategy', 'random')}"
        if r.get("granularity", "batch") != "batch":
            labels += f" ({r['granularity']})"
        if r.get("loss", "kl") != "kl":
            labels += f", loss {r['loss']}"
        if r.get("calibration", "none") != "none":
            labels += f", {r['calibration']} calibration"
        source = r.get("label_source", "stored")
        if source != "stored":  # the labels come from a label model; the store only gave the augmentations
            labels = f"{source} model ({labels})"
        out.append({"kind": "main", "run": run, "images": r["recover"], "labels": labels,
                    "codec": r.get("logits", "fp16") if source == "stored" else "float32 weights", "student": _student(r),
                    "image_bytes": r.get("image_bytes"), "label_bytes": r.get("label_bytes"), "top1": [r["top1"]],
                    "seeds": [r.get("seed")], "match": tuple(str(r.get(k)) for k in _MAIN_KEY) + (_student(r),)})
    return out


def _learned_rows(results: dict, run_dir: Path) -> list[dict]:
    manifest = read_json(run_dir / "labels.json") if (run_dir / "labels.json").is_file() else {}
    classes = len(manifest.get("target", {}).get("classes", [])) or None
    images_shape = _safetensors_shape(run_dir / "labels.safetensors", "base_images")
    out = []
    for r in results["rows"]:
        n = r.get("n_base", results.get("n_base"))
        lb = r.get("label_bytes", results.get("label_bytes"))
        if lb is None and n and classes:
            lb = n * classes * 4
        ib = r.get("image_bytes", results.get("image_bytes"))
        learned = _safetensors_shape(run_dir / "labels.safetensors", f"{r['method']}_images")
        if ib is None and learned:  # dd: float32 learned pixels instead of the uint8 base examples
            ib = math.prod(learned) * 4
        elif ib is None and images_shape:
            ib = math.prod(images_shape)
        images = f"learned images ({r['method']})" if learned else f"base examples ({r.get('source')})"
        out.append({"kind": "learn-labels", "run": str(run_dir), "images": images,
                    "labels": r["method"], "codec": "float32", "student": _student(r, "arch", "arch_args"),
                    "image_bytes": ib, "label_bytes": lb, "top1": list(r.get("top1_all") or [r["top1_mean"]]),
                    "seeds": [results.get("seed")], "match": None})
    return out


def load_rows(run_dir: str | Path) -> list[dict]:
    """The rows of one run directory, in the leaderboard's columns (one per result row, not yet grouped).

    Raises:
        LabelDistillError: no such directory, no ``results.json``, or rows of neither kind.
    """
    d = Path(run_dir)
    if not (d / "results.json").is_file():
        what = "no such directory" if not d.is_dir() else "no results.json"
        raise LabelDistillError(f"{d}: {what}; give run directories of finished runs")
    results = read_json(d / "results.json")
    rows = results.get("rows") or []
    if rows and all("recover" in r for r in rows):
        return _main_rows(rows, str(d))
    if rows and all("method" in r for r in rows):
        return _learned_rows(results, d)
    raise LabelDistillError(f"{d}/results.json has no main-job or learn-labels rows")


def _group(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["kind"], r["images"], r["labels"], r["codec"], r["student"]), []).append(r)
    out = []
    for rs in groups.values():
        tops = [t for r in rs for t in r["top1"]]
        mean = sum(tops) / len(tops)
        first = rs[0]
        total = (first["image_bytes"] + first["label_bytes"]
                 if first["image_bytes"] is not None and first["label_bytes"] is not None else None)
        out.append({k: first[k] for k in ("kind", "images", "labels", "codec", "student", "image_bytes",
                                          "label_bytes", "match")}
                   | {"total_bytes": total, "top1_mean": mean,
                      "top1_std": math.sqrt(sum((t - mean) ** 2 for t in tops) / len(tops)), "n": len(tops),
                      "runs": sorted({r["run"] for r in rs})})
    return out


def _mark(table: list[dict]) -> None:
    """Set ``ior`` (vs random_real, main-job rows) and ``pareto`` on every row, in place."""
    real = {r["match"]: r["top1_mean"] for r in table if r["kind"] == "main" and r["images"] == "random_real"}
    for r in table:
        base = real.get(r["match"]) if r["kind"] == "main" and r["images"] != "random_real" else None
        r["ior"] = r["top1_mean"] - base if base is not None else None
        b = r["total_bytes"]
        r["pareto"] = b is not None and not any(
            o is not r and o["total_bytes"] is not None and o["total_bytes"] <= b and o["top1_mean"] >= r["top1_mean"]
            and (o["total_bytes"] < b or o["top1_mean"] > r["top1_mean"]) for o in table)


def leaderboard(run_dirs: list[str | Path]) -> list[dict]:
    """The merged table over ``run_dirs``, sorted by total bytes (unknown last), then top-1 (best first).

    Returns:
        One dict per setting: kind, images, labels, codec, student, image_bytes, label_bytes, total_bytes,
        top1_mean, top1_std, n, runs, ior (``None`` without a matching random_real row), pareto.

    Raises:
        LabelDistillError: from :func:`load_rows`.
    """
    table = _group([r for d in run_dirs for r in load_rows(d)])
    _mark(table)
    table.sort(key=lambda r: (r["total_bytes"] is None, r["total_bytes"] or 0, -r["top1_mean"]))
    for r in table:
        del r["match"]
    return table


def best_within(table: list[dict], budget: float) -> dict | None:
    """The row of highest top-1 whose total bytes are at most ``budget`` (``None`` if none)."""
    fit = [r for r in table if r["total_bytes"] is not None and r["total_bytes"] <= budget]
    return max(fit, key=lambda r: r["top1_mean"]) if fit else None


def _bytes(v: int | None) -> str:
    return human_bytes(v) if v is not None else "?"


def _ior(v: float | None) -> str:
    return "" if v is None else f"{100 * v:+.1f} pt"


def format_leaderboard(table: list[dict]) -> str:
    """A Markdown table of :func:`leaderboard`'s rows."""
    head = ("| * | images | labels | codec | student | image bytes | label bytes | total bytes | top-1 | n "
            "| IOR (vs random_real) |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {'*' if r['pareto'] else ''} | {r['images']} | {r['labels']} | {r['codec']} | {r['student']} "
             f"| {_bytes(r['image_bytes'])} | {_bytes(r['label_bytes'])} | {_bytes(r['total_bytes'])} "
             f"| {100 * r['top1_mean']:.1f} ± {100 * r['top1_std']:.1f} % | {r['n']} "
             f"| {_ior(r['ior'])} |" for r in table]
    return head + "\n".join(lines) + "\n\n* = on the Pareto front of top-1 vs total bytes.\n"


def format_choice(table: list[dict], budget: float) -> str:
    """One line: the best row within ``budget`` bytes, or that none fits."""
    r = best_within(table, budget)
    if r is None:
        return f"budget {human_bytes(budget)}: no row fits"
    return (f"budget {human_bytes(budget)}: {r['images']} + {r['labels']} ({r['codec']}, {r['student']}): "
            f"top-1 {100 * r['top1_mean']:.1f} %, {human_bytes(r['total_bytes'])}")
