"""``labeldistill leaderboard``: one table over several run directories (main-job and learn-labels runs).

Each row is one setting: the data (dataset and IPC, or target and N), source of the images, label method and
codec, student, images + labels bytes, top-1 mean ± std (population) over the runs' seeds, and, for a main-job
image source with a ``random_real`` row of the same data, label settings and student among the inputs,
DD-Ranking's IOR = top-1(source) − top-1(random_real), averaged over the seeds both have. Rows
on the Pareto front of top-1 against total bytes are marked ``*``.

Main-job rows (``results.json`` rows with ``recover``) are grouped like :func:`labeldistill.report.summarize`
(plus ``validate.loss``, ``validate.calibration`` and ``validate.label_source``): images = the recover mode, labels =
``x<factor> <strategy>``, codec = ``logits``, bytes = ``label_bytes`` + ``image_bytes`` as recorded. A row whose
labels come from a label model (``label_source`` ``online`` / ``generator``) is labelled ``<source> model (x<factor>
...)`` (the factor names the store whose augmentations were replayed) with codec ``float32 weights``, and its label
bytes are the model's weights file, as validate recorded them; ``label_source: static`` is labelled ``static
per-image logits (x<factor> ...)`` with codec ``float32 logits`` and the bytes of the per-image logits file. Learn-labels rows (rows with ``method``): images =
``base examples``, labels = the method, codec = ``float32``; bytes = the row's (or results') ``label_bytes`` /
``image_bytes`` if recorded, else labels = ``N × C × 4`` (the label set as float32, ``C`` from ``labels.json``'s
target classes) and images = the uint8 ``base_images`` tensor of ``labels.safetensors`` (``N·C·H·W``), read from
its header (``dd`` rows: the float32 ``dd_images`` tensor, ``N·C·H·W·4``, labelled "learned images");
unknown bytes are shown as ``?`` and such a row is left out of the front and the budget choice.
Rows of different evaluation protocols (``validate.protocol``; none = the project's recipe) are never ranked
together: the leaderboard refuses such a mix (:func:`check_one_protocol`).
Main-job rows scored on the ``holdout`` split (``validate.eval_split: holdout``) are left out: the table compares
test-split accuracy.
Their top-1 spread is over the meta-test repeats (``top1_all``) of every run given.

Hard-label rows (``hard_label/<student>/<images>.json``, in the run directory or its ``seed*/``; written by
``labeldistill hard-label`` or by the main job with ``hard_label.enabled``) give DD-Ranking's other score
(Li et al. 2025, "DD-Ranking: Rethinking the Evaluation of Dataset Distillation", arXiv 2505.13300; the
``ddranking`` package's ``hard_label_recovery``): HLR = Acc(real-hard) − Acc(syn-hard), the student trained with
hard labels on the whole real train split (``real-train``) minus the same student trained with hard labels on
the distilled images; lower is better, 0 = the images recover full-data training. It is averaged over the seeds
that have both rows (DD-Ranking pairs them per evaluation run). Every row whose images have both baselines
carries the HLR of its images; otherwise ``hlr_missing`` says which baseline is absent. Hard-label rows of
distilled images are also rows of the table (labels ``hard (CE)``, 0 label bytes: the class of an image is its
folder), with IOR against random_real's hard-label row (DD-Ranking's IOR for hard-label methods); the
``real-train`` row is the full-data reference (its bytes: uint8 ``N·C·H·W``).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from .errors import LabelDistillError
from .io import human_bytes, read_json
from .layout import REAL_TRAIN

_CODEC = {"online": "float32 weights", "generator": "float32 weights", "static": "float32 logits"}
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


def _setting(dataset: str | None, ipc: int | None) -> str:
    """The data a row was made on: ``"<dataset> IPC <k>"`` (``"<dataset> full train"`` without IPC). Rows of
    different settings are never grouped, and IOR / HLR compare rows of one setting only."""
    return f"{dataset or '?'} " + (f"IPC {ipc}" if ipc is not None else "full train")


def _main_rows(rows: list[dict], run: str, dataset: str | None) -> list[dict]:
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
        if source == "static":  # the images' own per-image logits; the store only gave the augmentations
            labels = f"static per-image logits ({labels})"
        elif source != "stored":  # the labels come from a label model; the store only gave the augmentations
            labels = f"{source} model ({labels})"
        setting = _setting(dataset, r.get("ipc"))
        out.append({"kind": "main", "run": run, "setting": setting, "images": r["recover"], "labels": labels,
                    "codec": _CODEC.get(source, r.get("logits", "fp16")), "student": _student(r),
                    "image_bytes": r.get("image_bytes"), "label_bytes": r.get("label_bytes"), "top1": [r["top1"]],
                    "seeds": [r.get("seed")], "protocol": r.get("protocol"),
                    "match": (setting, *(str(r.get(k)) for k in _MAIN_KEY), _student(r)),
                    "hard_key": (setting, r["recover"], _student(r))})
    return out


def _hard_files(d: Path) -> list[Path]:
    return sorted(d.glob("hard_label/*/*.json")) + sorted(d.glob("seed*/hard_label/*/*.json"))


def load_hard_rows(run_dir: str | Path) -> list[dict]:
    """The hard-label rows (``hard_label/<student>/<images>.json``) of a run directory and its ``seed*/``, each
    with ``setting`` (:func:`_setting`: the run's dataset and the row's IPC)."""
    d = Path(run_dir)
    dataset = read_json(d / "results.json").get("dataset") if (d / "results.json").is_file() else None
    return [{**r, "setting": _setting(dataset, r.get("ipc"))} for r in map(read_json, _hard_files(d))]


def _hard_table_rows(hard: list[dict], run: str) -> list[dict]:
    out = []
    for r in hard:
        real = r["images"] == REAL_TRAIN
        images = r["images"] if not real else f"{REAL_TRAIN} ({r['n_images']} images)"
        out.append({"kind": "hard-label", "run": run, "setting": r["setting"], "images": images,
                    "labels": "hard (CE)", "codec": "-", "student": _student(r), "image_bytes": r.get("image_bytes"),
                    "label_bytes": 0, "top1": [r["top1"]], "seeds": [r.get("seed")], "protocol": r.get("protocol"),
                    "match": None if real else (r["setting"], "hard", _student(r)),
                    "hard_key": None if real else (r["setting"], r["images"], _student(r))})
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
        out.append({"kind": "learn-labels", "run": str(run_dir), "setting": f"{r.get('target', '?')} N={n}",
                    "images": images, "labels": r["method"], "codec": "float32", "student": _metatest_student(r),
                    "image_bytes": ib, "label_bytes": lb, "top1": list(r.get("top1_all") or [r["top1_mean"]]),
                    "seeds": [results.get("seed")], "match": None, "hard_key": None})
    return out


def _metatest_student(r: dict) -> str:
    """A meta-test row's model and how it was trained (head, optimiser, lr), so rows of different meta-test
    settings are not pooled."""
    out = _student(r, "arch", "arch_args")
    if r.get("head") not in (None, "plain"):
        out += f" + {r['head']} head"
    if r.get("optimizer"):
        out += f", {r['optimizer']}" + (f" lr {r['lr']:g}" if r.get("lr") is not None else "")
    return out


def load_rows(run_dir: str | Path) -> list[dict]:
    """The rows of one run directory, in the leaderboard's columns (one per result row, not yet grouped;
    a main-job run's hard-label rows included).

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
        return _main_rows(rows, str(d), results.get("dataset")) + _hard_table_rows(load_hard_rows(d), str(d))
    if rows and all("method" in r for r in rows):
        return _learned_rows(results, d)
    raise LabelDistillError(f"{d}/results.json has no main-job or learn-labels rows")


def _group(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["kind"], r["setting"], r["images"], r["labels"], r["codec"], r["student"]), []).append(r)
    out = []
    for rs in groups.values():
        tops = [t for r in rs for t in r["top1"]]
        mean = sum(tops) / len(tops)
        first = rs[0]
        total = (first["image_bytes"] + first["label_bytes"]
                 if first["image_bytes"] is not None and first["label_bytes"] is not None else None)
        by_seed: dict = {}
        for r in rs:
            for seed, t in zip(r["seeds"], r["top1"]):
                by_seed.setdefault(seed, []).append(t)
        out.append({k: first[k] for k in ("kind", "setting", "images", "labels", "codec", "student", "image_bytes",
                                          "label_bytes", "match", "hard_key")}
                   | {"total_bytes": total, "top1_mean": mean, "by_seed": {k: sum(v) / len(v) for k, v in by_seed.items()},
                      "top1_std": math.sqrt(sum((t - mean) ** 2 for t in tops) / len(tops)), "n": len(tops),
                      "runs": sorted({r["run"] for r in rs})})
    return out


def _ior(table: list[dict]) -> None:
    """Set ``ior``, ``ior_n`` and ``ior_missing`` on every row, in place: DD-Ranking's IOR, the mean over the
    seeds both rows have of top-1 minus that of the random_real row with the same setting, labels and student
    (hard-label rows against random_real's hard-label row); paired by seed, as HLR is."""
    real = {r["match"]: r["by_seed"] for r in table if r["images"] == "random_real" and r["match"]}
    for r in table:
        base = real.get(r["match"]) if r["match"] and r["images"] != "random_real" else None
        seeds = sorted(set(base) & set(r["by_seed"]), key=str) if base else []
        r["ior"] = sum(r["by_seed"][k] - base[k] for k in seeds) / len(seeds) if seeds else None
        r["ior_n"] = len(seeds)
        r["ior_missing"] = None if seeds else (
            "the baseline" if r["images"] == "random_real" else
            "no seed in common with the random_real row" if base else
            "no random_real row with these labels" if r["match"] else
            "n/a (full train set)" if r["images"].startswith(REAL_TRAIN) else f"n/a ({r['kind']})")


def hlr_by_images(hard: list[dict]) -> dict[tuple, dict]:
    """DD-Ranking's HLR per (setting, images, student) from hard-label rows (with ``setting``, as
    :func:`load_hard_rows` gives them): mean over the seeds with both rows of top-1(real-train of the same
    dataset) − top-1(images), in fractions; several rows of one seed (several runs) count with their mean.

    Returns:
        ``{(setting, images, student): {"hlr": float | None, "n": seeds paired, "missing": None | why}}`` for
        every distilled image set with a hard-label row.
    """
    tops: dict[tuple, dict] = {}
    for r in hard:
        dataset = r["setting"].rsplit(" IPC ", 1)[0].removesuffix(" full train")
        key = (dataset, None, REAL_TRAIN) if r["images"] == REAL_TRAIN else (dataset, r["setting"], r["images"])
        tops.setdefault((*key, _student(r)), {}).setdefault(r.get("seed"), []).append(r["top1"])
    mean = {k: {s: sum(v) / len(v) for s, v in by_seed.items()} for k, by_seed in tops.items()}
    out = {}
    for (dataset, setting, images, student), syn in mean.items():
        if images == REAL_TRAIN:
            continue
        real = mean.get((dataset, None, REAL_TRAIN, student), {})
        seeds = sorted(set(syn) & set(real), key=str)
        why = None if seeds else (f"no {REAL_TRAIN} hard-label row for this student" if not real
                                  else "no seed with both hard-label rows")
        out[(setting, images, student)] = {"hlr": sum(real[k] - syn[k] for k in seeds) / len(seeds) if seeds
                                           else None, "n": len(seeds), "missing": why}
    return out


def _hlr(table: list[dict], hard: list[dict]) -> None:
    """Set ``hlr``, ``hlr_n`` and ``hlr_missing`` on every row, in place (see :func:`hlr_by_images`)."""
    by = hlr_by_images(hard)
    for r in table:
        h = by.get(r["hard_key"]) if r["hard_key"] else None
        r["hlr"], r["hlr_n"] = (h["hlr"], h["n"]) if h else (None, 0)
        if h:
            r["hlr_missing"] = h["missing"]
        elif r["hard_key"]:
            r["hlr_missing"] = f"no hard-label row of {r['hard_key'][1]}"
        else:
            r["hlr_missing"] = "the reference" if r["kind"] == "hard-label" else f"n/a ({r['kind']})"


def _dominated(r: dict, table: list[dict]) -> bool:
    b = r["total_bytes"]
    t = r["top1_mean"]
    return any(o is not r and o["total_bytes"] is not None and o["total_bytes"] <= b and o["top1_mean"] >= t
               and (o["total_bytes"] < b or o["top1_mean"] > t) for o in table)


def _mark(table: list[dict], hard: list[dict]) -> None:
    """Set IOR, HLR and ``pareto`` (no other row has at most its bytes and at least its top-1, one of them
    strictly) on every row, in place."""
    _ior(table)
    _hlr(table, hard)
    for r in table:
        r["pareto"] = r["total_bytes"] is not None and not _dominated(r, table)


def check_one_protocol(rows: list[dict]) -> None:
    """Refuse rows of more than one evaluation protocol (``validate.protocol``; a row without one is the project's
    own recipe, ``project``): their accuracies come from different students and recipes and are not ranked
    together.

    Raises:
        LabelDistillError: the protocols found and the runs that have each.
    """
    seen: dict[str, set] = {}
    for r in rows:
        seen.setdefault(r.get("protocol") or "project", set()).add(r["run"])
    if len(seen) > 1:
        which = "; ".join(f"{p}: {', '.join(sorted(runs))}" for p, runs in sorted(seen.items()))
        raise LabelDistillError(f"leaderboard: rows of {len(seen)} evaluation protocols ({which}); rank the run "
                                "directories of one validate.protocol at a time")


def leaderboard(run_dirs: list[str | Path]) -> list[dict]:
    """The merged table over ``run_dirs``, sorted by total bytes (unknown last), then top-1 (best first).

    Returns:
        One dict per setting: kind (``main``, ``hard-label``, ``learn-labels``), setting (dataset and IPC, or
        target and N: rows of different settings are neither pooled nor compared), images, labels, codec, student,
        image_bytes, label_bytes, total_bytes, top1_mean, top1_std, n, runs, ior (``None`` without a matching
        random_real row or a seed in common; ``ior_missing`` says why), ior_n (seeds paired), hlr (``None``
        without both hard-label baselines; ``hlr_missing`` says why), hlr_n (seeds paired), pareto.

    Raises:
        LabelDistillError: from :func:`load_rows`.
    """
    rows = [r for d in run_dirs for r in load_rows(d)]
    check_one_protocol(rows)
    table = _group(rows)
    _mark(table, [h for d in run_dirs for h in load_hard_rows(d)])
    table.sort(key=lambda r: (r["total_bytes"] is None, r["total_bytes"] or 0, -r["top1_mean"]))
    for r in table:
        del r["match"], r["hard_key"], r["by_seed"]
    return table


def best_within(table: list[dict], budget: float) -> dict | None:
    """The row of highest top-1 whose total bytes are at most ``budget`` (``None`` if none)."""
    fit = [r for r in table if r["total_bytes"] is not None and r["total_bytes"] <= budget]
    return max(fit, key=lambda r: r["top1_mean"]) if fit else None


def _bytes(v: int | None) -> str:
    return human_bytes(v) if v is not None else "?"


def _pt(v: float | None, missing: str | None) -> str:
    return f"{100 * v:+.1f} pt" if v is not None else (missing or "")


def format_leaderboard(table: list[dict]) -> str:
    """A Markdown table of :func:`leaderboard`'s rows."""
    head = ("| * | data | images | labels | codec | student | image bytes | label bytes | total bytes | top-1 | n "
            "| IOR (vs random_real) | HLR (real-train − images, hard labels) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {'*' if r['pareto'] else ''} | {r['setting']} | {r['images']} | {r['labels']} | {r['codec']} "
             f"| {r['student']} "
             f"| {_bytes(r['image_bytes'])} | {_bytes(r['label_bytes'])} | {_bytes(r['total_bytes'])} "
             f"| {100 * r['top1_mean']:.1f} ± {100 * r['top1_std']:.1f} % | {r['n']} "
             f"| {_pt(r['ior'], r['ior_missing'])} | {_pt(r['hlr'], r['hlr_missing'])} |" for r in table]
    return head + "\n".join(lines) + (
        "\n\n* = on the Pareto front of top-1 vs total bytes. IOR: higher is better; HLR: lower is better "
        "(DD-Ranking, arXiv 2505.13300).\n")


def format_choice(table: list[dict], budget: float) -> str:
    """One line: the best row within ``budget`` bytes, or that none fits."""
    r = best_within(table, budget)
    if r is None:
        return f"budget {human_bytes(budget)}: no row fits"
    return (f"budget {human_bytes(budget)}: {r['images']} + {r['labels']} ({r['codec']}, {r['student']}): "
            f"top-1 {100 * r['top1_mean']:.1f} %, {human_bytes(r['total_bytes'])}")


def front_sweep(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the Pareto-optimal ``(bytes, top-1)`` points (fewer bytes and higher top-1 are better), by one
    sweep in order of bytes: a point is kept when its top-1 beats every point with fewer bytes (and, at equal
    bytes, equals the best there). The table's marks use the pairwise definition; the two agree (tested)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    kept: list[int] = []
    best = -math.inf
    for i in order:
        b, t = points[i]
        if t > best or (kept and t == best and b == points[kept[-1]][0]):
            kept.append(i)
            best = t
    return sorted(kept)


_MARKERS = {"fp16": "o", "int8": "s", "int4": "^", "float32": "*", "-": "X"}


def _marker(r: dict) -> str:
    if "loss" in r["labels"]:
        return "P"
    return _MARKERS.get(r["codec"], "D" if r["codec"].startswith("top") else "v")


def plot_leaderboard(table: list[dict], path: str | Path, title: str | None = None) -> list[dict]:
    """Top-1 (%) against total bytes (log x) for :func:`leaderboard`'s rows with known bytes: one marker per
    setting (colour = images, shape = codec / label kind, bar = ± std), the Pareto front as a step line.

    Returns:
        The rows on the front drawn (by :func:`front_sweep`, in order of bytes).

    Raises:
        LabelDistillError: no row has known bytes, or ``path`` has no image-format suffix matplotlib writes.
    """
    import matplotlib  # here, not at the top: the table needs no plotting library

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = [r for r in table if r["total_bytes"] is not None]
    if not rows:
        raise LabelDistillError("no row with known bytes to plot")
    kinds = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    if Path(path).suffix.lstrip(".").lower() not in kinds:
        raise LabelDistillError(f"--plot {path}: give a file name ending in one of .{', .'.join(sorted(kinds))}")
    fig, ax = plt.subplots(figsize=(8.0, 5.2))
    colours = {im: f"C{i % 10}" for i, im in enumerate(dict.fromkeys(r["images"] for r in rows))}
    for r in rows:
        ax.errorbar(r["total_bytes"], 100 * r["top1_mean"], yerr=100 * r["top1_std"], fmt=_marker(r),
                    color=colours[r["images"]], ms=6, capsize=2, alpha=0.85, lw=0.8)
    front = [rows[i] for i in front_sweep([(r["total_bytes"], r["top1_mean"]) for r in rows])]
    front.sort(key=lambda r: r["total_bytes"])
    ax.plot([r["total_bytes"] for r in front], [100 * r["top1_mean"] for r in front], "k--", lw=1,
            drawstyle="steps-post", label="Pareto front", zorder=0)
    mid = math.sqrt(min(r["total_bytes"] for r in rows) * max(r["total_bytes"] for r in rows))
    for r in front:  # names on the left of points in the right half, so that they stay inside the axes
        name = f"{r['images']}: {r['labels']} {r['codec']}".replace(" -", "")
        right = r["total_bytes"] > mid
        ax.annotate(name, (r["total_bytes"], 100 * r["top1_mean"]), textcoords="offset points",
                    xytext=(-4 if right else 4, -9), ha="right" if right else "left", fontsize=6)
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=im) for im, c in colours.items()]
    shapes = {("other loss" if "loss" in r["labels"] else "hard labels" if r["codec"] == "-" else r["codec"]):
              _marker(r) for r in rows}
    handles += [plt.Line2D([], [], color="grey", marker=m, ls="", label=k) for k, m in shapes.items()]
    handles.append(plt.Line2D([], [], color="k", ls="--", label="Pareto front"))
    ax.legend(handles=handles, fontsize=7, loc="lower right", ncol=2)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=4))  # 1 KiB, 4 KiB, ..., 1 MiB, 4 MiB, ...
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: human_bytes(v)))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("total bytes: images + labels (log scale)")
    ax.set_ylabel("student top-1 on the real test split (%)")
    ax.set_title(title or "accuracy vs bytes", fontsize=9)
    ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return front
