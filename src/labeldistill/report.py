"""results.json → report.md, the accuracy-vs-bytes plot and the synthetic image grid."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .data.imagefolder import load_imagefolder  # noqa: E402
from .io import human_bytes, read_json  # noqa: E402,F401  (human_bytes: old import path)


def results_table(results: dict) -> str:
    """A Markdown table of the result rows."""
    head = ("| recover | IPC | prune | strategy | logits | kept steps | label bytes | image bytes | labels ÷ images "
            "| student | top-1 | seconds |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in results["rows"]:
        strategy = r.get("prune_strategy", "random")
        if r.get("granularity", "batch") != "batch":
            strategy += f" ({r['granularity']})"
        lines.append(
            f"| {r['recover']} | {r['ipc']} | {r['prune_factor']:g}× | {strategy} | {r.get('logits', 'fp16')} "
            f"| {r.get('kept_steps', '')} | {human_bytes(r['label_bytes'])} | {human_bytes(r['image_bytes'])} "
            f"| {r['label_bytes'] / max(r['image_bytes'], 1):.2f} | {r['student']} | {100 * r['top1']:.1f} % "
            f"| {r['seconds']:.0f} |")
    return head + "\n".join(lines) + "\n"


def plot_accuracy_vs_bytes(results: dict, path: Path) -> None:
    """Top-1 against total bytes (images + labels), one line per recover mode, log-scale x."""
    fig, ax = plt.subplots(figsize=(6, 4))
    modes = sorted({r["recover"] for r in results["rows"]})
    for mode in modes:
        rows = sorted((r for r in results["rows"] if r["recover"] == mode
                       and r.get("prune_strategy", "random") == "random" and r.get("logits", "fp16") == "fp16"),
                      key=lambda r: r["label_bytes"] + r["image_bytes"])
        xs = [(r["label_bytes"] + r["image_bytes"]) / 1024 for r in rows]
        ys = [100 * r["top1"] for r in rows]
        ax.plot(xs, ys, marker="o", label=mode)
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(f"{r['prune_factor']:g}×", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("total storage: images + soft labels (KiB)")
    ax.set_ylabel("student top-1 on real test set (%)")
    ax.set_title(f"{results['dataset']}: accuracy vs storage (random pruning, fp16 logits)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_image_grid(folders: dict[str, Path], path: Path, per_class: int = 10) -> None:
    """One panel per recover mode: rows = classes, columns = up to ``per_class`` images."""
    fig, axes = plt.subplots(1, len(folders), figsize=(4.2 * len(folders), 4.4), squeeze=False)
    for ax, (mode, folder) in zip(axes[0], folders.items()):
        c2i = read_json(folder / "class_to_idx.json")
        data = load_imagefolder(folder, class_to_idx=c2i, mean=(0.0,), std=(1.0,))
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


def write_report(run_dir: Path) -> Path:
    """Write ``report.md`` and ``plots/`` from ``results.json`` in ``run_dir``."""
    run_dir = Path(run_dir)
    results = read_json(run_dir / "results.json")
    plot_accuracy_vs_bytes(results, run_dir / "plots" / "accuracy_vs_bytes.png")
    folders = {m: run_dir / "images" / m for m in sorted({r["recover"] for r in results["rows"]})
               if (run_dir / "images" / m / "class_to_idx.json").is_file()}
    if folders:
        plot_image_grid(folders, run_dir / "plots" / "images.png")
    t = results["teacher"]
    text = (
        f"# {results['name']}: soft-label pruning on {results['dataset']}\n\n"
        f"Teacher: {t['model']} {t.get('model_args', {})}, {t['epochs']} epochs, "
        f"top-1 {100 * t['top1']:.2f} % on the real test split.\n\n"
        + results_table(results)
        + "\nlabel bytes = bytes on disk of the (pruned) label store; image bytes = PNG files. "
        "top-1 is measured on the real test split.\n\n"
        "![accuracy vs bytes](plots/accuracy_vs_bytes.png)\n\n![synthetic images](plots/images.png)\n"
    )
    out = run_dir / "report.md"
    out.write_text(text)
    return out
