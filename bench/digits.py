"""The main job on scikit-learn's 8 × 8 digits: the Fashion-MNIST demo's settings vs ``configs/digits_lpld.yaml``
(section ``digits``).

Four arms (``demo``, ``teacher_aug``, ``digits``, ``recover_aug``) run the whole job on the same seeds, one
resumable run directory per (arm, seed) under ``--runs``; the section gives teacher and student top-1 and paired
differences with 95 % t-intervals. ``--write-only`` writes it from the finished runs.

    nohup nice -n 10 python -m bench.digits --seeds 0 1 2 > runs/bench_digits.log 2>&1 &
    python -m bench.digits --seeds 0 1 2 --write-only
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench.study import (REPO, compare, header, interval_text, mean_std, paired_by_seed, parser, result_row,
                         run_cli, write_section)
from labeldistill import load_config
from labeldistill.config import config_to_dict

# The demo's augmentation as it was measured: the fixed defaults before they followed the data (digits now resolve
# to no flip and relabel crops of at least 1/4 of the area; bench/mnist_defaults.py measures that change)
DEMO_AUG = ["squeeze.flip=true", "recover.flip=true", "relabel.flip=true", "relabel.crop_scale=[0.08, 1.0]"]
ARMS = {  # name → (config file, overrides)
    "demo": ("configs/fmnist_demo.yaml", ["data.dataset=digits", *DEMO_AUG]),
    # the demo with only the teacher's augmentation fitted to 8 px: isolates the main cause
    "teacher_aug": ("configs/fmnist_demo.yaml", ["data.dataset=digits", *DEMO_AUG, "squeeze.flip=false",
                                                 "squeeze.crop_padding=1"]),
    "digits": ("configs/digits_lpld.yaml", []),
    # the digits config with the demo's recover augmentation (flip, 2 px jitter): what that part costs
    "recover_aug": ("configs/digits_lpld.yaml", ["recover.flip=true", "recover.jitter=2"]),
}
LABELS = {"demo": "demo", "teacher_aug": "teacher aug", "digits": "digits", "recover_aug": "digits + demo recover aug"}
COMPARE = [("teacher_aug", "demo"), ("digits", "demo"), ("digits", "recover_aug")]  # (arm, baseline) → Δ columns
MODES = ("sre2l", "lpld")
FACTORS = (1, 10, 40)


def run_arm(arm: str, seed: int, runs: Path) -> None:
    """``labeldistill run`` for one arm and seed in a child process (resumes a finished part)."""
    path, overrides = ARMS[arm]
    run_cli("run", REPO / path, [*overrides, f"seed={seed}", f"run_dir={runs / arm / f'seed{seed}'}", "threads=1"])


def read_arm(arm: str, seed: int, runs: Path) -> dict | None:
    """Teacher and student top-1 (fractions) of a finished (arm, seed) run, else ``None``."""
    root = runs / arm / f"seed{seed}"
    teacher = root / "teacher" / "teacher.json"
    rows = {}
    for f in root.glob("validate/*/*.json"):
        r = json.loads(f.read_text())
        rows[(r["recover"], int(r["prune_factor"]))] = r["top1"]
    if not teacher.is_file() or len(rows) < len(MODES) * len(FACTORS):
        return None
    return {"teacher": json.loads(teacher.read_text())["top1"], **rows}


def changed_keys() -> list[str]:
    """``key: demo → digits`` for every resolved config value that differs between those two arms."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and v:
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = (flat(config_to_dict(load_config(REPO / ARMS[arm][0], ARMS[arm][1]))) for arm in ("demo", "digits"))
    skip = {"name", "run_dir"}
    return [f"`{k}`: {a.get(k)} → {b.get(k)}" for k in sorted(set(a) | set(b)) if k not in skip and a.get(k) != b.get(k)]


def section(seeds: list[int], runs: Path, minutes: float | None, out: list) -> str:
    done = [s for s in seeds if all(read_arm(arm, s, runs) for arm in ARMS)]
    lines = [header("Small inputs: the main job on 8 × 8 digits"),
             "scikit-learn's digits (8 × 8, 1,437 train / 360 test). Arms: **demo** = `configs/fmnist_demo.yaml "
             "data.dataset=digits`; **teacher aug** = plus `squeeze.flip=false squeeze.crop_padding=1`; **digits** = "
             "`configs/digits_lpld.yaml`; **digits + demo recover aug** = plus `recover.flip=true recover.jitter=2`. "
             f"Top-1 % on the test digits, mean ± std over seeds {done or 'none yet'} (of {seeds} asked); Δ in "
             "points, paired by seed, 95 % t-interval, 'held' when it excludes 0."
             + (f" Wall time of this invocation: {minutes:.1f} min." if minutes is not None else ""), ""]
    if not done:
        return "\n".join(lines + ["No seed has finished every arm yet."])
    res = {arm: [read_arm(arm, s, runs) for s in done] for arm in ARMS}
    heads = [LABELS[a] for a in ARMS] + [f"Δ {LABELS[a]} − {LABELS[b]}" for a, b in COMPARE]
    lines += ["| | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    keys = [("teacher", "teacher")] + [((m, f), f"student, {m}, {f}×") for m in MODES for f in FACTORS]
    for key, label in keys:
        col = {arm: {s: 100 * r[key] for s, r in zip(done, res[arm])} for arm in ARMS}
        proto = "labeldistill-validate (the arm's student recipe)" if key != "teacher" else "labeldistill-squeeze"
        out += [result_row({"measure": label, "arm": a}, col[a], proto, unit="top-1 %") for a in ARMS]
        cells = [mean_std(list(col[a].values()), scale=1) for a in ARMS]
        for a, b in COMPARE:
            d = paired_by_seed(col[a], col[b], 1)
            v = compare(out, {"measure": label, "comparison": f"{a} − {b}"}, d, proto, either=True)
            cells.append(f"{interval_text(list(d.values()))} ({v})" if len(d) > 1 else
                         interval_text(list(d.values()), one="1 seed, no interval"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "What changed from demo to digits (resolved config):", ""] + [f"- {c}" for c in changed_keys()]
    return "\n".join(lines)


def main() -> None:
    ap = parser(__doc__, runs="bench_digits", seeds=[0, 1, 2], render="write-only")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    args = ap.parse_args()
    runs, t0 = Path(args.runs), time.time()
    if not args.write_only:
        for seed in args.seeds:
            for arm in args.arms:
                run_arm(arm, seed, runs)
    rows: list[dict] = []
    body = section(args.seeds, runs, None if args.write_only else (time.time() - t0) / 60, rows)
    write_section(Path(args.out), "digits", body, rows)
    print(body)


if __name__ == "__main__":
    main()
