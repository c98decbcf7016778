"""``report.md`` and the label plot of a ``learn-labels`` run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

METHOD_NAMES = {"ld": "LD (learned, 2nd order)", "rr": "RR (learned, ridge regression)", "onehot": "one-hot",
                "smooth": "label smoothing", "teacher": "teacher pseudo-labels"}


def results_table(rows: list[dict]) -> str:
    """A Markdown table of result rows (top-1 in %, mean ± std over the repeats)."""
    head = ("| method | N | learner | optimizer (lr) | steps | step rule | top-1 % (mean ± std) | repeats |\n"
            "|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {r['method']} | {r['n_base']} | {r['learner']} | {r['optimizer']} ({r['lr']:g}) | {r['steps']} "
             f"| {r['step_rule']} | {100 * r['top1_mean']:.2f} ± {100 * r['top1_std']:.2f} | {r['repeats']} |"
             for r in rows]
    return head + "\n".join(lines) + "\n"


def _pick_examples(source_labels: torch.Tensor, count: int) -> list[int]:
    """Up to ``count`` example positions, round-robin over the source classes (one of each class first)."""
    by_class: dict[int, list[int]] = {}
    for i, c in enumerate(source_labels.tolist()):
        by_class.setdefault(c, []).append(i)
    picked: list[int] = []
    depth = 0
    while len(picked) < min(count, len(source_labels)):
        for c in sorted(by_class):
            if depth < len(by_class[c]) and len(picked) < count:
                picked.append(by_class[c][depth])
        depth += 1
    return picked


def plot_labels(images: torch.Tensor, source_labels: torch.Tensor, source_classes: list[str],
                label_sets: dict[str, torch.Tensor], target_classes: list[str], path: Path, count: int = 10) -> None:
    """Base images (one row each) next to a bar chart of every label set's distribution.

    Args:
        images: uint8 base images ``(N, C, H, W)``.
        source_labels: source classes of the base examples ``(N,)``.
        source_classes: names of the source classes.
        label_sets: method → ``(N, K)`` label distributions.
        target_classes: names of the K target classes (bar labels).
        path: PNG file to write.
        count: number of base examples shown.
    """
    picked = _pick_examples(source_labels, count)
    methods = list(label_sets)
    fig, axes = plt.subplots(len(picked), 1 + len(methods), figsize=(1.3 + 2.2 * len(methods), 1.15 * len(picked)),
                             squeeze=False, gridspec_kw={"width_ratios": [0.6] + [1.0] * len(methods)})
    k = len(target_classes)
    for row, i in enumerate(picked):
        img = images[i].float().div(255).permute(1, 2, 0).numpy()
        ax = axes[row][0]
        ax.imshow(img[:, :, 0] if img.shape[2] == 1 else img, cmap="gray" if img.shape[2] == 1 else None)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(source_classes[int(source_labels[i])], fontsize=6, rotation=0, ha="right", va="center")
        for col, m in enumerate(methods, start=1):
            a = axes[row][col]
            p = label_sets[m][i].tolist()
            a.bar(range(k), p, color=["C3" if j == max(range(k), key=p.__getitem__) else "C0" for j in range(k)])
            a.set_ylim(0, 1)
            a.set_yticks([])
            a.set_xticks(range(k))
            a.set_xticklabels(target_classes if row == len(picked) - 1 else [], rotation=90, fontsize=5)
            if row == 0:
                a.set_title(m, fontsize=8)
    fig.tight_layout(pad=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(run_dir: Path, results: dict, plot: bool = True) -> Path:
    """Write ``report.md`` in ``run_dir`` from the ``results.json`` content."""
    lines = [f"# {results['name']}: label distillation, {results['source']} → {results['target']}", ""]
    lines.append(f"N = {results['n_base']} base examples ({results['base_mode']}), learner "
                 f"{results['learner']['name']} {results['learner']['args']}, labels: {results['label_param']}, "
                 f"init {results['label_init']}. Top-1 on the real {results['target']} test split "
                 f"({results['sizes']['test']} images); model selection on {results['sizes']['val']} validation "
                 f"images held out of the train split.")
    if results.get("cross_dataset"):
        lines.append("")
        lines.append("Cross-dataset: the one-hot and smoothed baselines map source class i to target class i, an "
                     "arbitrary correspondence; compare them with care.")
    lines += ["", results_table(results["rows"])]
    if results["meta"]:
        lines += ["## Meta-training", "", "| method | outer steps | resets | best steps | best val error "
                  "| s / outer step | seconds |", "|---|---|---|---|---|---|---|"]
        for m, r in results["meta"].items():
            lines.append(f"| {m} | {r['outer_steps']} | {r['resets']} | {r['best_steps']} "
                         f"| {100 * r['best_val_error']:.2f} % | {r['seconds_per_outer_step']:.3f} "
                         f"| {r['seconds']:.0f} |")
        lines.append("")
    t = results.get("teacher")
    if t:
        lines.append(f"Teacher: {t['model']} {t.get('model_args', {})}, top-1 {100 * t['top1']:.2f} % on the test "
                     f"split, temperature {t['temperature']}"
                     + (f", loaded from {t['loaded_from']}" if t.get("loaded_from") else "") + ".")
        lines.append("")
    m = results["machine"]
    lines.append(f"Wall time {results['seconds']:.0f} s on {m['device']} ({m['cpu_threads']} CPU threads), "
                 f"torch {m['torch']}.")
    if plot:
        lines += ["", "![base examples and their labels](labels.png)"]
    out = Path(run_dir) / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out
