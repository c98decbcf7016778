"""LD's own dataset and LD's own claims (issues #13 items 4, 6, 7 and #22 item 3): sections ``ld_claims`` and
``ld_budget``.

Parts (``--parts``): ``probe`` (CPU cost of LD / DD outer steps and fresh-model steps), ``mnist`` (LD's MNIST row,
Bohdal et al. 2020, on mnist-5k against one-hot and teacher labels), ``claims`` (LD vs RR vs DD on Fashion-MNIST
and mnist-5k, with a sensitivity probe per run), ``cross`` (Fashion-MNIST base examples → mnist-5k) and
``budget`` (LD at the paper's 19,600 label updates against DD at as many; section ``ld_budget``). Every setting
is one resumable ``learn-labels`` run under ``--runs``; ``--render`` rewrites the sections from finished runs.

    OMP_NUM_THREADS=1 nohup nice -n 10 .venv/bin/python -m bench.ld_claims --threads 1 \\
        --runs runs/bench_ld2 > runs/bench_ld2.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from bench.study import (REPO, compare, git_commit, interval_text, load_json, machine, md_table, mean_std,
                         paired_by_seed, paired_interval, parser, result_row, today, verdict, write_section)
from labeldistill import load_ld_config
from labeldistill.learn_labels import learn_labels
from labeldistill.learn_labels.dd import DDMetaLearner, LearnedImages
from labeldistill.learn_labels.labels import LearnedLabels, onehot_labels
from labeldistill.learn_labels.ld import LDMetaLearner
from labeldistill.learn_labels.learners import (
    OptimizerSpec,
    PlainLearner,
    build_network,
    error_rate,
    outer_steps_per_epoch,
    seeded,
    train_learner,
)
from labeldistill.learn_labels.metatest import EvalData, LearnerSpec, evaluate_label_set
from labeldistill.learn_labels.run import prepare_task, validation_split_key
from labeldistill.runtime import tune_malloc

CONFIG = REPO / "configs" / "fmnist_ld.yaml"
OPTIMIZERS = ["sgd", "sgd_momentum", "adam", "adamw"]
DATASETS = {"fmnist": "fashion-mnist", "mnist5k": "mnist-5k"}
PAPER_LD = ["labels.param=prob", "labels.init=uniform", "labels.init_smoothing=0.0", "labels.lr=0.001"]
# 400 epochs of the paper's 50,000-image MNIST meta-train split (10,000 held out) at outer batch 1024 (spec §7, §9).
PAPER_LABEL_UPDATES = 400 * -(-50000 // 1024)  # 19,600: the reference target loader keeps the short last batch


def _parser() -> argparse.ArgumentParser:
    p = parser(__doc__, runs="bench_ld2", threads=True, render="render")
    p.add_argument("--parts", default="probe,mnist,claims,cross", help="comma-separated parts")
    p.add_argument("--seeds", type=int, default=3, help="paired seeds of every part (seed s: base.seed 1234 + s)")
    p.add_argument("--cross-seeds", type=int, default=2, help="seeds of the cross part")
    p.add_argument("--mnist-epochs", type=int, default=400, help="meta-training epochs of the mnist/cross parts")
    p.add_argument("--mnist-repeats", type=int, default=5, help="fresh models per row of the mnist/cross parts")
    p.add_argument("--claims-steps", type=int, default=300, help="outer steps of every claims meta-training")
    p.add_argument("--claims-repeats", type=int, default=2, help="fresh models per row of the claims part")
    p.add_argument("--claims-max-steps", type=int, default=300, help="training-length cap of claims fresh models")
    p.add_argument("--ns", default="10,100", help="numbers of base examples of the claims part")
    p.add_argument("--budget-methods", default="ld,dd", help="runs of the budget part (ld: LD + one-hot + teacher)")
    return p


class Study:
    """Runs the settings and renders the ``ld_claims`` section."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.runs = Path(args.runs).absolute()  # not resolved: a symlinked runs/ keeps repo-relative paths
        self.command = "OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python -m bench.ld_claims " + " ".join(
            shlex.quote(a) for a in sys.argv[1:])
        self.t0 = time.time()

    # ------------------------------------------------------------------ settings
    def common(self) -> list[str]:
        return [f"threads={self.args.threads}", "learner={name: lenet, args: {}}", "plot_examples=0"]

    def mnist_overrides(self, seed: int, cross: bool) -> list[str]:
        """The paper's LD configuration on mnist-5k (target) with LeNet; ``cross``: Fashion-MNIST base examples."""
        a = self.args
        ov = [f"seed={seed}", f"base.seed={1234 + seed}", "data.target=mnist-5k", "data.val_size=500",
              "base.n=100", "meta.inner_batch=50", "meta.outer_batch=1024", f"meta.epochs={a.mnist_epochs}",
              "meta.val_every=25", *PAPER_LD, "teacher.model={name: lenet, args: {}}", "teacher.epochs=20",
              f"metatest.repeats={a.mnist_repeats}", "metatest.optimizers=[adam]", "metatest.rr_learner=false"]
        if cross:
            return ov + ["data.source=fashion-mnist", "base.mode=unbalanced", "methods=[ld, teacher]"]
        return ov + ["methods=[ld, onehot, teacher]"]

    def budget_overrides(self, method: str, seed: int) -> list[str]:
        """``mnist_overrides`` at the paper's label-update count, every row's training length validated."""
        ov = self.mnist_overrides(seed, cross=False)
        cfg = load_ld_config(CONFIG, self.common() + ov)
        per_epoch = outer_steps_per_epoch(len(prepare_task(cfg, torch.device("cpu")).x_target),
                                          cfg.meta.outer_batch, cfg.meta.last_batch)
        epochs = -(-PAPER_LABEL_UPDATES // per_epoch)
        methods = "[ld, onehot, teacher]" if method == "ld" else "[dd]"
        return ov + [f"meta.epochs={epochs}", f"meta.val_every={max(epochs // 25, 1)}", "metatest.step_rule=val",
                     f"methods={methods}", "dd.init=real", "dd.lr=0.01"]

    def budget_part(self) -> None:
        for s in range(self.args.seeds):
            for m in self.args.budget_methods.split(","):
                self.run(f"budget_{m}_s{s}", self.budget_overrides(m, s))
                self.render()

    def claims_overrides(self, ds: str, n: int, seed: int) -> list[str]:
        """LD (project default labels: logits, one-hot init), RR and DD (real init) under one budget."""
        a = self.args
        subset, batch = 3072, 256  # 12 outer steps per epoch on both datasets
        epochs = max(a.claims_steps // (subset // batch), 1)
        return [f"seed={seed}", f"base.seed={1234 + seed}", f"data.target={DATASETS[ds]}", "data.val_size=500",
                f"data.target_subset={subset}", "data.test_subset=2000", f"base.n={n}",
                f"meta.inner_batch={10 if n <= 20 else 50}", f"meta.outer_batch={batch}", f"meta.epochs={epochs}",
                f"meta.val_every={max(epochs // 5, 1)}", f"meta.max_steps={a.claims_max_steps}",
                "methods=[ld, rr, dd]", "dd.init=real", "dd.lr=0.01", f"metatest.repeats={a.claims_repeats}",
                f"metatest.optimizers=[{', '.join(OPTIMIZERS)}]", "metatest.archs=[mlp]",
                "metatest.rr_learner=false", "metatest.step_rule=val"]

    def run(self, key: str, overrides: list[str]) -> dict:
        """One learn-labels run (cached by its results.json); reuses a teacher only with the same split."""
        run_dir = self.runs / key
        done = run_dir / "results.json"
        if done.is_file():
            return json.loads(done.read_text())
        ov = self.common() + overrides
        # a teacher is reused only by runs with the same validation split (the teacher check refuses others)
        marker = self.runs / f"teacher_{validation_split_key(load_ld_config(CONFIG, ov))}.txt"
        if marker.is_file():
            ov.append(f"teacher.checkpoint={self.runs / marker.read_text().strip() / 'teacher'}")
        ov += [f"run_dir={run_dir}", f"name={key}"]
        cmd = "labeldistill learn-labels configs/fmnist_ld.yaml " + " ".join(shlex.quote(o) for o in ov)
        print(f"[{time.strftime('%H:%M:%S')}] {key}: {cmd}", flush=True)
        res = learn_labels(load_ld_config(CONFIG, ov))
        if not marker.is_file() and (run_dir / "teacher" / "teacher.json").is_file():
            marker.write_text(key)
        (run_dir / "bench.json").write_text(json.dumps({"bench_command": self.command, "machine": machine(),
                                                        "learn_labels_command": cmd}, indent=2))
        print(f"[{time.strftime('%H:%M:%S')}] {key}: done in {res['seconds']:.0f} s", flush=True)
        return res

    # ------------------------------------------------------------------ parts
    def probe_part(self) -> None:
        f = self.runs / "probe.json"
        if not f.is_file():
            f.write_text(json.dumps({**outer_step_probe(CONFIG, self.common()), "machine": machine()}, indent=2))
        self.render()

    def mnist_part(self, cross: bool) -> None:
        for s in range(self.args.cross_seeds if cross else self.args.seeds):
            self.run(f"{'cross_fmnist_to_mnist5k' if cross else 'mnist5k_paper'}_s{s}", self.mnist_overrides(s, cross))
            self.render()

    def claims_part(self) -> None:
        ns = [int(n) for n in self.args.ns.split(",")]
        for s in range(self.args.seeds):
            for ds in DATASETS:
                for n in ns:
                    key = f"claims_{ds}_n{n}_s{s}"
                    self.run(key, self.claims_overrides(ds, n, s))
                    f = self.runs / key / "sensitivity.json"
                    if not f.is_file():
                        cfg = load_ld_config(CONFIG, self.common() + self.claims_overrides(ds, n, s)
                                             + [f"run_dir={self.runs / key}"])
                        f.write_text(json.dumps(sensitivity(cfg, self.runs / key), indent=2))
                    self.render()

    # ------------------------------------------------------------------ rendering
    def render(self) -> None:
        if any(any(self.runs.glob(pat)) for pat in ("probe.json", "mnist5k_*/results.json", "claims_*/results.json",
                                                "cross_*/results.json")):  # none: keep the written section
            r = Render(self)
            text = r.text()
            write_section(Path(self.args.out), "ld_claims", text, r.rows, command="; ".join(r.commands))
        budget = Budget(self)
        if budget.text:
            write_section(Path(self.args.out), "ld_budget", budget.text, budget.rows, command="; ".join(budget.commands))

# ---------------------------------------------------------------------- measurements outside learn-labels
def outer_step_probe(config: Path, common: list[str], repeats: int = 10) -> dict:
    """CPU seconds of one LD and one DD outer step (N = 100 mnist-5k base examples, LeNet, k = 1) at outer
    batch 256 and 1024, and of one fresh-model training step (batch 50) of LeNet and the MLP."""
    cfg = load_ld_config(config, common + ["data.target=mnist-5k", "data.val_size=500", "base.n=100",
                                           "meta.inner_batch=50"])
    cpu = torch.device("cpu")
    task = prepare_task(cfg, cpu)
    make = lambda: build_network(cfg.learner, task.num_classes, task.shape, cpu)  # noqa: E731
    onehot = onehot_labels(task.base_source_labels, task.num_classes)
    g = torch.Generator().manual_seed(0)
    out: dict = {"outer_step_cpu_s": {}, "fresh_step_cpu_s": {}}
    for method in ("ld", "dd"):
        for batch in (256, 1024):
            torch.manual_seed(0)
            labels = LearnedLabels(onehot, "prob", 1e-3)
            variant = LDMetaLearner(make, 1e-3, 0.01, 1) if method == "ld" else \
                DDMetaLearner(make, LearnedImages(task.x_base, 0.01), 1e-3, 0.01, 1)
            xt, yt = task.x_target[:batch], task.y_target[:batch]
            idx = [torch.randperm(len(task.x_base), generator=g)[:50]]
            variant.outer_step(labels, task.x_base, idx, xt, yt)  # warm-up
            c0 = time.process_time()
            for _ in range(repeats):
                variant.outer_step(labels, task.x_base, idx, xt, yt)
            out["outer_step_cpu_s"][f"{method}@{batch}"] = (time.process_time() - c0) / repeats
    for arch in ("lenet", "mlp"):
        spec = LearnerSpec(load_ld_config(config, [f"learner={{name: {arch}, args: {{}}}}"]).learner)
        learner = PlainLearner(build_network(spec.arch, task.num_classes, task.shape, cpu), OptimizerSpec())
        c0 = time.process_time()
        train_learner(learner, task.x_base, onehot, 100, 50, torch.Generator().manual_seed(0))
        out["fresh_step_cpu_s"][arch] = (time.process_time() - c0) / 100
    out["load_average"] = os.getloadavg()[0]
    return out


def sensitivity(cfg, run_dir: Path) -> dict:
    """``{method: {"lr": {lr: row}, "order": [[top-1 per order] per init], "order_steps"}}`` of a finished claims
    run: Adam at lr 3e-4 and 3e-3 with the run's seeds, and 2 initialisations × 3 minibatch orders trained for
    the step count of the run's Adam row."""
    cpu = torch.device("cpu")
    t = load_file(str(run_dir / "labels.safetensors"))
    res = json.loads((run_dir / "results.json").read_text())
    task = prepare_task(cfg, cpu, t["base_indices"])
    data = EvalData(task.x_base, task.x_val, task.y_val, task.x_test, task.y_test, task.num_classes, task.shape,
                    cpu, cfg.meta.inner_batch, cfg.max_steps(), cfg.metatest.eval_batch)
    seed = cfg.seed * 100_000 + 1000  # the run's own row seed
    out: dict = {}
    for m in cfg.methods:
        own = replace(data, x_base=t[f"{m}_images"]) if f"{m}_images" in t else data
        lr_rows = {}
        for lr in (3e-4, 3e-3):
            spec = LearnerSpec(cfg.learner, "plain", OptimizerSpec("adam", lr))
            row = evaluate_label_set(spec, own, t[m], cfg.metatest.repeats, seed, desc=f"{m} adam {lr:g}")
            lr_rows[f"{lr:g}"] = {k: row[k] for k in ("top1_mean", "top1_all", "steps")}
        adam = adam_row(res, m, cfg.learner.name)
        spec = LearnerSpec(cfg.learner, "plain", OptimizerSpec("adam", 1e-3))
        orders = []
        for r in range(2):
            accs = []
            for o in range(3):
                learner = seeded(seed + r, lambda sp=spec, d=own: sp.build(d))
                train_learner(learner, own.x_base, t[m], adam["steps"], own.batch,
                              torch.Generator().manual_seed(seed + 9_000 + 97 * o + r))
                accs.append(1.0 - error_rate(learner.predict, own.x_test, own.y_test, own.eval_batch))
            orders.append(accs)
        out[m] = {"lr": lr_rows, "order": orders, "order_steps": adam["steps"]}
    return out


# ---------------------------------------------------------------------- rendering
CLAIMS = [
    ("labels beat images", "acc", "top-1 (LeNet, Adam 1e-3) of the label method − DD's", 1),
    ("less sensitive to the optimizer", "opt", "spread (max − min top-1) over SGD, SGD + momentum, Adam, AdamW: "
     "DD's − the label method's", -1),
    ("less sensitive to the architecture", "arch", "gap between LeNet and MLP top-1 (absolute, Adam): DD's − the "
     "label method's", -1),
    ("less sensitive to the order of examples", "order", "spread over 3 minibatch orders (same initialisation, "
     "mean over 2 initialisations; N = 100 only): DD's − the label method's", -1),
    ("less sensitive to the learning rate", "lr", "spread over Adam lr 3e-4, 1e-3, 3e-3: DD's − the label method's",
     -1),
]


def adam_row(res: dict | None, method: str, learner: str = "lenet") -> dict | None:
    """The meta-test row of ``method`` with ``learner`` and Adam in a run's results, or ``None``."""
    return next((r for r in (res or {}).get("rows", []) if r["method"] == method and r["learner"] == learner
                 and r["optimizer"] == "adam"), None)


def adam_top1(res: dict | None, method: str) -> float | None:
    """Top-1 (%) of :func:`adam_row` with LeNet, or ``None``."""
    row = adam_row(res, method)
    return None if row is None else 100 * row["top1_mean"]


def claim_measures(res: dict, sens: dict, method: str, learner: str = "lenet") -> dict:
    """The five measures (percentage points) of one label set of a claims run."""
    rows = [r for r in res["rows"] if r["method"] == method]
    own = {r["optimizer"]: 100 * r["top1_mean"] for r in rows if r["learner"] == learner}
    mlp = next(100 * r["top1_mean"] for r in rows if r["learner"] == "mlp" and r["optimizer"] == "adam")
    s = sens[method]
    lrs = [own["adam"]] + [100 * v["top1_mean"] for v in s["lr"].values()]
    order = statistics.fmean(100 * (max(a) - min(a)) for a in s["order"])
    return {"acc": own["adam"], "opt": max(own.values()) - min(own.values()), "arch": abs(own["adam"] - mlp),
            "order": order, "lr": max(lrs) - min(lrs)}


def claim_diffs(data: dict, method: str, key: str, sign: int, only: tuple | None = None) -> dict:
    """``{(dataset, N, seed): sign · (measure(method) − measure(dd))}`` over all settings, or ``only``; no order
    measure at N = 10, where every minibatch is the whole set."""
    return {(*st, s): sign * (per[s][method][key] - per[s]["dd"][key]) for st, per in sorted(data.items())
            if only in (None, st) and (key != "order" or st[1] > 10)
            for s in sorted(per) if method in per[s] and "dd" in per[s]}


def opening(title: str, commands: list[str]) -> list[str]:
    """A section's title, the commands that made its runs, commit, date and machine."""
    return [f"## {title}", "", "Command: " + "; ".join(f"`{c}`" for c in commands) + "  ",
            f"Commit: {git_commit()}; written {today()}; machine: {machine()}.  "]


def pm(xs: list[float]) -> str:
    """``mean ± std`` of percent values (population std; the value alone for one)."""
    return mean_std(xs, scale=1)


def ci(d: list[float] | dict) -> str:
    d = list(d.values()) if isinstance(d, dict) else d
    return interval_text(d, one="n=1") + (f" (n={len(d)})" if len(d) > 1 else "")


class Render:
    """Markdown of the ``ld_claims`` section from the finished runs under ``study.runs``."""

    def __init__(self, study: Study):
        self.s, self.a, self.runs = study, study.args, study.runs
        self.rows: list[dict] = []  # the JSON rows of what is rendered

    def load(self, key: str, name: str = "results.json") -> dict | None:
        return load_json(self.runs / key / name)

    def text(self) -> str:
        done = sorted(p.parent.name for p in self.runs.glob("*/results.json"))
        seconds = sum(json.loads((self.runs / k / "results.json").read_text())["seconds"] for k in done)
        recorded = [json.loads((self.runs / k / "bench.json").read_text())["bench_command"] for k in done
                    if (self.runs / k / "bench.json").is_file()]
        commands = self.commands = list(dict.fromkeys(recorded)) or [self.s.command]  # what made the runs
        out = [*opening("LD on its own dataset, and LD's claims against image distillation (issue #13)", commands),
               f"Finished runs: {len(done)} under `{self._rel(self.runs)}` ({self._progress(done)}), {seconds / 60:.1f} "
               "min wall on 2 shared cores. Rewrite: `.venv/bin/python -m bench.ld_claims --render --runs "
               f"{self._rel(self.runs)}`.", "",
               "Top-1 (%) on the test split of fresh models trained on the N images and their labels; training "
               "length and label snapshots chosen on a validation split of TRAIN. Seed s: `seed=s`, "
               "`base.seed=1234+s`; comparisons pair equal s (95 % t-intervals; 'held' / 'did not hold' only when "
               "the interval excludes 0).", ""]
        out += self._probe() + self._mnist() + self._claims()
        return "\n".join(out).replace(str(REPO) + os.sep, "")

    def _probe(self) -> list[str]:
        p = self.load(".", "probe.json")
        if p is None:
            return []
        o, f = p["outer_step_cpu_s"], p["fresh_step_cpu_s"]
        return ["### Sizing: measured costs (part `probe`)", "",
                f"CPU seconds (this process, one thread; 1-min load average {p['load_average']:.1f}) on {p['machine']}:",
                "", "| quantity | CPU s |", "|---|---|",
                *[f"| {k.split('@')[0].upper()} outer step, N = 100, LeNet, outer batch {k.split('@')[1]} | {v:.3f} |"
                  for k, v in o.items()],
                *[f"| fresh-model training step, {k}, batch 50 | {v:.4f} |" for k, v in f.items()], "",
                f"Sized to about 60 CPU-minutes; the paper's {PAPER_LABEL_UPDATES:,} label updates at batch 1024 "
                f"would take ≈ {PAPER_LABEL_UPDATES * o['ld@1024'] / 60:.0f} CPU-min per LD run here.", ""]

    def _mnist(self) -> list[str]:
        out: list[str] = []
        within = [self.load(f"mnist5k_paper_s{s}") for s in range(self.a.seeds)]
        cross = [self.load(f"cross_fmnist_to_mnist5k_s{s}") for s in range(self.a.cross_seeds)]
        if not any(within) and not any(cross):
            return out

        done = [r for r in within if r]
        proto = (f"learn-labels metatest (LeNet, Adam 1e-3, {self.a.mnist_repeats} fresh models per seed; LD: its "
                 "meta-training step count, baselines: a validated one)")
        per = {(part, m): {s: v for s, v in enumerate(adam_top1(r, m) for r in res) if v is not None}
               for part, res in (("mnist-5k within", within), ("Fashion-MNIST → mnist-5k", cross))
               for m in ("ld", "onehot", "teacher")}
        self.rows += [result_row({"part": k[0], "labels": k[1]}, v, proto, unit="top-1 %") for k, v in per.items() if v]
        diffs = {f"LD − {m}": paired_by_seed(per["mnist-5k within", "ld"], per["mnist-5k within", m], 1)
                 for m in ("onehot", "teacher")}
        self.rows += [result_row({"part": "mnist-5k within", "comparison": k}, d, proto, paired=True,
                                 verdict=verdict(*paired_interval(list(d.values()))[1:]), unit="points")
                      for k, d in diffs.items()]
        w = {m: list(per["mnist-5k within", m].values()) for m in ("ld", "onehot", "teacher")}
        x = {m: list(per["Fashion-MNIST → mnist-5k", m].values()) for m in ("ld", "teacher")}
        updates = sorted({r["meta"]["ld"]["outer_steps"] for r in done + [c for c in cross if c]})
        teacher = [100 * r["teacher"]["top1"] for r in done if r.get("teacher")]
        out += ["### LD's MNIST row on mnist-5k (parts `mnist`, `cross`)", "",
                f"The paper's LD configuration (spec §9, outer batch 1024, {self.a.mnist_epochs} epochs), N = 100, "
                f"LeNet; mean ± std over seeds of {self.a.mnist_repeats} fresh models each (per seed in brackets). LD's "
                "test models train for LD's meta-training step count (`metatest.step_rule=paper`, as the reference "
                "does), one-hot's and the teacher's for a validated count; section `ld_budget` validates every "
                "row.", "",
                "| labels | mnist-5k within (this study) | Fashion-MNIST → mnist-5k (this study) | MNIST, paper |",
                "|---|---|---|---|",
                f"| LD | {pm(w['ld'])} {self._seeds(w['ld'])} | {pm(x['ld'])} "
                f"{self._seeds(x['ld'])} | 87.3 ± 0.7 (Bohdal et al. 2020 via KIP-CNN Table 1, 20 test models;"
                " `docs/anchors.md` §2) |",
                f"| one-hot (same base examples) | {pm(w['onehot'])} {self._seeds(w['onehot'])} "
                "| – (arbitrary class map) | not quoted (unverified) |",
                f"| teacher pseudo-labels (LeNet teacher, {pm(teacher)} % test top-1) | {pm(w['teacher'])} "
                f"{self._seeds(w['teacher'])} | {pm(x['teacher'])} | not quoted (unverified) |", ""]
        out += [f"Paired LD − one-hot (mnist-5k): {ci(list(diffs['LD − onehot'].values()))} points; LD − teacher: "
                f"{ci(list(diffs['LD − teacher'].values()))}.", "",
                "**Protocol vs the paper:** mnist-5k's 3,500 outer-loss images (the paper: 50,000 − 10,000), 500 "
                f"validation and 1,000 test images; {', '.join(f'{u:,}' for u in updates) or '–'} label updates against the "
                f"paper's {PAPER_LABEL_UPDATES:,}, i.e. {self._fraction(updates)} of them.", ""]
        return out

    def _claims_data(self) -> dict:
        """{(ds, n): {seed: {method: measures}}} over finished claims runs with their sensitivity probe."""
        data: dict = {}
        for ds in DATASETS:
            for n in [int(x) for x in self.a.ns.split(",")]:
                for s in range(self.a.seeds):
                    key = f"claims_{ds}_n{n}_s{s}"
                    res, sens = self.load(key), self.load(key, "sensitivity.json")
                    if res and sens:
                        data.setdefault((ds, n), {})[s] = {m: claim_measures(res, sens, m) for m in sens}
        return data

    def _claims(self) -> list[str]:
        data = self._claims_data()
        if not data:
            return []
        a = self.a
        out = ["### LD vs RR vs DD: the paper's claims (part `claims`)", "",
               f"Same base examples, learner (LeNet) and budget for every method: {a.claims_steps} outer steps at "
               "batch 256 over 3,072 images, k = 1. LD: the project's default labels; RR: the same through the ridge "
               f"head; DD: pixels from the real base examples, Adam 0.01. Meta-test: LeNet and MLP, {a.claims_repeats}"
               f" fresh models per row, training length validated (≤ {a.claims_max_steps} steps).", "",
               "Top-1 (%) with LeNet + Adam 1e-3, mean ± std over seeds:", "",
               *md_table(["setting", "seeds", "LD", "RR", "DD"], [
                   [f"{DATASETS[ds]}, N = {n}", len(per), *(pm([per[s][m]["acc"] for s in per if m in per[s]])
                                                           for m in ("ld", "rr", "dd"))]
                   for (ds, n), per in sorted(data.items())])]
        out += ["", "Sensitivity measures (percentage points, mean over seeds; smaller = less sensitive):", "",
                *md_table(["setting", "labels", "optimizer spread", "LeNet→MLP gap", "order spread", "lr spread"])]
        for (ds, n), per in sorted(data.items()):
            for m in ("ld", "rr", "dd"):
                self.rows += [result_row({"part": "claims", "dataset": DATASETS[ds], "n": n, "labels": m, "measure": k},
                                         {s: per[s][m][k] for s in per if m in per[s]}, self._claims_protocol(),
                                         unit="top-1 %" if k == "acc" else "points")
                              for k in ("acc", "opt", "arch", "order", "lr")]
                v = [per[s][m] for s in per if m in per[s]]
                cells = [f"{statistics.fmean(x[k] for x in v):.1f}" for k in ("opt", "arch", "order", "lr")]
                out.append(f"| {DATASETS[ds]}, N = {n} | {m.upper()} | " + " | ".join(cells) + " |")
        out += ["", self._meta_line(), "", *self._verdicts(data), "",
                "DD is the project's variant (`learn_labels/dd.py`: random orders, fixed inner step), not Wang et "
                "al.'s; its order and learning-rate verdicts say nothing about the original DD.", ""]
        return out

    def _meta_line(self) -> str:
        """Outer steps and CPU cost of the claims meta-trainings, per method."""
        steps: dict = {}
        for f in sorted(self.runs.glob("claims_*/results.json")):
            for m, info in json.loads(f.read_text()).get("meta", {}).items():
                steps.setdefault(m, []).append((info["outer_steps"], info["seconds_per_outer_step"]))
        parts = [f"{m.upper()} {sorted({o for o, _ in v})} outer steps, {statistics.fmean(t for _, t in v):.3f} "
                 "s (wall) per outer step" for m, v in steps.items()]
        return "Meta-training per run: " + "; ".join(parts) + "." if parts else ""

    def _verdicts(self, data: dict) -> list[str]:
        settings = sorted(data)
        out = ["Claims (paired over seeds; pooled = every (dataset, N, seed) pair). Difference oriented so that "
               "> 0 supports the claim; verdict from the pooled 95 % t-interval.", "",
               "| claim | measure | LD vs DD, pooled | verdict | "
               + " | ".join(f"{DATASETS[ds]} N = {n}" for ds, n in settings) + " | RR vs DD, pooled | verdict |",
               "|---|---|---|---|" + "---|" * len(settings) + "---|---|"]
        for name, key, what, sign in CLAIMS:
            cell = {}
            for m in ("ld", "rr"):
                d = claim_diffs(data, m, key, sign)
                cell[m] = f"{ci(d)} | " + compare(self.rows, {"part": "claims", "claim": name, "measure": what,
                                                              "labels": m, "versus": "dd", "pooled": settings},
                                                  d, self._claims_protocol())
            out.append(f"| {name} | {what} | {cell['ld']} | "
                       + " | ".join(ci(claim_diffs(data, "ld", key, sign, st)) for st in settings)
                       + f" | {cell['rr']} |")
        return out

    def _claims_protocol(self) -> str:
        return (f"learn-labels metatest (LeNet, Adam 1e-3, {self.a.claims_repeats} fresh models per seed, training "
                f"length validated, ≤ {self.a.claims_max_steps} steps)")

    @staticmethod
    def _fraction(updates: list[int]) -> str:
        return f"1/{PAPER_LABEL_UPDATES / max(updates):.0f}" if updates else "a fraction"

    @staticmethod
    def _seeds(xs: list[float]) -> str:
        return "[" + ", ".join(f"{x:.1f}" for x in xs) + "]" if xs else ""

    def _progress(self, done: list[str]) -> str:
        """'mnist 3/3, claims 5/12, cross 0/2': finished vs planned runs per part."""
        a = self.a
        ns = [int(n) for n in a.ns.split(",")]
        plan = {"mnist": [f"mnist5k_paper_s{s}" for s in range(a.seeds)],
                "claims": [f"claims_{ds}_n{n}_s{s}" for s in range(a.seeds) for ds in DATASETS for n in ns],
                "cross": [f"cross_fmnist_to_mnist5k_s{s}" for s in range(a.cross_seeds)]}
        return ", ".join(f"{part} {sum(k in done for k in keys)}/{len(keys)}" for part, keys in plan.items())

    @staticmethod
    def _rel(p: Path) -> str:
        return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


class Budget:
    """Markdown and JSON rows of the ``ld_budget`` section from the finished ``budget_*`` runs."""

    LABELS = {"ld": "LD (paper configuration)", "onehot": "one-hot", "teacher": "teacher pseudo-labels",
              "dd": "DD (real init, one-hot labels)"}

    def __init__(self, study: Study):
        self.runs, self.rows = study.runs, []
        self.commands = sorted({json.loads(f.read_text())["bench_command"] for f in study.runs.glob("budget_*/bench.json")})
        res = {(m, s): r for m in ("ld", "dd") for s in range(study.args.seeds)
               if (r := load_json(study.runs / f"budget_{m}_s{s}" / "results.json"))}
        self.repeats = study.args.mnist_repeats
        self.text = self._text(res, study.args.seeds) if res else ""

    def _text(self, res: dict, seeds: int) -> str:
        per: dict = {m: {} for m in self.LABELS}
        steps: dict = {m: [] for m in self.LABELS}
        for (run, s), r in res.items():
            for m in (("ld", "onehot", "teacher") if run == "ld" else ("dd",)):
                if (row := adam_row(r, m)) is not None:
                    per[m][s] = 100 * row["top1_mean"]
                    steps[m].append(row["steps"])
        proto = "learn-labels metatest (LeNet, Adam 1e-3, training length validated for every row)"
        updates = sorted({i["outer_steps"] for r in res.values() for i in r.get("meta", {}).values()})
        cpu = sum(r["seconds"] for r in res.values()) / 60
        out = [*opening("LD at the paper's number of label updates (mnist-5k, issue #22 item 3)", self.commands),
               f"Finished runs: {len(res)} of {2 * seeds} under `{Render._rel(self.runs)}`, {cpu:.0f} min wall.", "",
               f"Part `mnist` of section `ld_claims`, but {', '.join(f'{u:,}' for u in updates)} label updates per "
               f"method (the paper's {PAPER_LABEL_UPDATES:,}), DD at as many, every row's training length validated "
               f"(`metatest.step_rule=val`); {self.repeats} fresh models per row and seed.", "",
               "| labels | " + " | ".join(f"seed {s}" for s in range(seeds)) + " | mean ± std | steps (validated) |",
               "|---|" + "---|" * seeds + "---|---|"]
        for m, name in self.LABELS.items():
            self.rows.append(result_row({"labels": m}, per[m], proto, unit="top-1 %") if per[m] else {})
            cells = [f"{per[m][s]:.1f}" if s in per[m] else "–" for s in range(seeds)]
            out.append(f"| {name} | " + " | ".join(cells) + f" | {pm(list(per[m].values())) if per[m] else '–'} "
                       f"| {sorted(steps[m]) or '–'} |")
        out += ["", "LD's paper number: 87.3 ± 0.7 % on MNIST (Bohdal et al. 2020 via KIP-CNN Table 1).", "",
                *md_table(["claim (paired over seeds)", "difference (points), 95 % interval", "verdict"])]
        for name, a, b in (("labels beat images (paper configuration): LD − DD", "ld", "dd"),
                           ("LD − one-hot", "ld", "onehot"), ("LD − teacher", "ld", "teacher")):
            d = paired_by_seed(per[a], per[b], 1)
            v = verdict(*paired_interval(list(d.values()))[1:]) if len(d) > 1 else "not resolved (one seed)"
            self.rows.append(result_row({"comparison": name}, d, proto, paired=True, verdict=v, unit="points"))
            out.append(f"| {name} | {ci(d) if d else '–'} | {v} |")
        out += ["", "Under the project's default LD labels: row `labels beat images` of section `ld_claims`.", ""]
        self.rows = [r for r in self.rows if r]
        return "\n".join(out).replace(str(REPO) + os.sep, "")


def main() -> None:
    args = _parser().parse_args()
    tune_malloc()
    torch.set_num_threads(args.threads)
    study = Study(args)
    study.runs.mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")
    if not args.render:
        order = [("probe", study.probe_part), ("mnist", lambda: study.mnist_part(False)),
                 ("claims", study.claims_part), ("cross", lambda: study.mnist_part(True)),
                 ("budget", study.budget_part)]
        for name, part in order:
            if name in parts:
                part()
    study.render()
    print(f"done in {(time.time() - study.t0) / 60:.1f} min; wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
