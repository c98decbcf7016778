"""Label-distillation study on Fashion-MNIST (Bohdal, Yang & Hospedales 2020), written into BENCHMARKS.md.

Parts (``--parts``, comma-separated; all by default):

- ``main``: N ∈ {10, 100, 500} × {LD, RR, one-hot, smoothing, teacher} × {lenet, convnet} learners;
- ``transfer``: the N = 100 convnet labels meta-tested on {lenet, convnet, mlp} ×
  {SGD, SGD + momentum, Adam, AdamW} (``labels_from``: no new meta-training);
- ``resnet``: the same labels on resnet18 (``--resnet-*``: few repeats, a capped training length);
- ``cross``: digits28 → Fashion-MNIST and Fashion-MNIST → digits28, N = 100 unbalanced base examples;
- ``unroll``: time and memory of one LD outer step vs the number of unrolled steps k ∈ {1, 2, 5}.

Every setting is one ``learn-labels`` run under ``--runs`` (skipped when its ``results.json`` exists, so an
interrupted study resumes); the ``ld_fmnist`` section of BENCHMARKS.md is rewritten after every finished run,
each table with the exact command, the date and the machine. Published anchors come from ``docs/anchors.md`` §1 and are marked as such.

Example (the full study, in the background)::

    nohup nice -n 10 .venv/bin/python -m bench.ld_fmnist --repeats 20 > runs/bench_ld.log 2>&1 &
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from labeldistill.learn_labels import learn_labels, load_ld_config
from labeldistill.learn_labels.run import validation_split_key
from labeldistill.runtime import tune_malloc

from bench.study import write_section

ROOT = Path(__file__).resolve().parent.parent
OPTIMIZERS = ["sgd", "sgd_momentum", "adam", "adamw"]
METHOD_LABEL = {"ld": "LD", "rr": "RR", "onehot": "one-hot", "smooth": "smoothing 0.1", "teacher": "teacher"}

# docs/anchors.md §1, Fashion-MNIST, IPC 1 / 10 / 50 (= N 10 / 100 / 500). Published numbers, not measured here.
ANCHORS = [
    ("Random real subset (DC ConvNet)", "51.4 ± 3.8", "73.8 ± 0.7", "82.5 ± 0.7",
     "unverified - check the paper before quoting", "DC paper Table 1"),
    ("Label Solve (LS) → finite ConvNet", "61.3", "79.9", "84.9", "verified", "KIP-CNN Table 2"),
    ("DC (gradient matching)", "70.5 ± 0.6", "82.3 ± 0.4", "83.6 ± 0.4", "verified",
     "VICO-UoE/DatasetCondensation README Table 1; ± from KIP-CNN Table 1"),
    ("DSA", "70.6 ± 0.6", "84.6 ± 0.3", "88.7 ± 0.2", "verified",
     "VICO-UoE/DatasetCondensation README Table 2; ± from KIP-CNN"),
    ("KIP → finite ConvNet", "73.8", "86.8", "87.8", "verified", "KIP-CNN Table 2"),
]


# LD variants at N = 100 (convnet); "improved" is the study's default (configs/fmnist_ld.yaml).
ABLATIONS = {
    "paper": ["labels.param=prob", "labels.init=uniform", "labels.lr=0.001"],
    "prob_onehot": ["labels.param=prob", "labels.init=onehot", "labels.init_smoothing=0.0", "labels.lr=0.001"],
    "logits_uniform": ["labels.param=logits", "labels.init=uniform", "labels.lr=0.03"],
    "logits_teacher": ["labels.param=logits", "labels.init=teacher", "labels.init_smoothing=0.1", "labels.lr=0.03"],
    "k2": ["ld.inner_steps=2"],
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="unroll,main,ablation,cross,transfer,resnet",
                   help="comma-separated parts; run order: unroll, main at N = 100, ablation, cross, main at the "
                        "other N, transfer, resnet")
    p.add_argument("--config", default=str(ROOT / "configs" / "fmnist_ld.yaml"), help="base learn-labels config")
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"),
                   help="Markdown file whose 'ld_fmnist' section is (re)written")
    p.add_argument("--runs", default=str(ROOT / "runs" / "bench_ld"), help="folder of the run directories")
    p.add_argument("--ns", default="10,100,500", help="numbers of base examples of the main part")
    p.add_argument("--learners", default="lenet,convnet", help="learners of the main part")
    p.add_argument("--convnet-width", type=int, default=32, help="width of the convnet learner")
    p.add_argument("--repeats", type=int, default=20, help="fresh models per result row")
    p.add_argument("--epochs", type=int, default=None, help="meta-training epochs (default: the config's)")
    p.add_argument("--transfer-archs", default="lenet,convnet,mlp", help="cheap architectures of the transfer part")
    p.add_argument("--transfer-repeats", type=int, default=10, help="repeats of the transfer rows")
    p.add_argument("--resnet-repeats", type=int, default=1, help="repeats of the resnet18 transfer rows (0: skip)")
    p.add_argument("--resnet-methods", default="ld,onehot,teacher", help="label sets tested on resnet18")
    p.add_argument("--resnet-optimizers", default="adam,sgd_momentum", help="optimizers of the resnet18 rows")
    p.add_argument("--resnet-max-steps", type=int, default=200, help="training-length cap of resnet18 rows")
    p.add_argument("--resnet-test-subset", type=int, default=2000, help="test images for resnet18 rows")
    p.add_argument("--resnet-val-size", type=int, default=1000, help="validation images for resnet18 rows")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--override", action="append", default=[], help="extra key=value override for every run")
    p.add_argument("--unroll-probe", type=int, default=None, help=argparse.SUPPRESS)
    return p


def machine() -> str:
    """One line: CPU model and cores, GPU presence, torch version and threads."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}, {platform.system()} {platform.release()}, torch "
            f"{torch.__version__}, torch threads: {torch.get_num_threads()}")


class Study:
    """Runs the settings and renders the Markdown file."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.runs = Path(args.runs)
        self.command = "nice -n 10 .venv/bin/python -m bench.ld_fmnist " + " ".join(
            shlex.quote(a) for a in sys.argv[1:])
        self.started = dt.datetime.now().astimezone()
        self.tables: dict[str, str] = {}

    # ---------------------------------------------------------------- settings
    def learner(self, name: str) -> str:
        if name == "convnet":
            return f"learner={{name: convnet, args: {{width: {self.args.convnet_width}, norm: instance}}}}"
        return f"learner={{name: {name}, args: {{}}}}"

    def common(self) -> list[str]:
        ov = [f"metatest.repeats={self.args.repeats}"]
        if self.args.epochs is not None:
            ov.append(f"meta.epochs={self.args.epochs}")
        if self.args.threads:
            ov.append(f"threads={self.args.threads}")
        return ov + list(self.args.override)

    def teacher_marker(self, overrides: list[str]) -> Path:
        """Marker file naming the first teacher trained with this run's validation split (issue #13: a teacher
        is reused only by runs that hold out the same validation images, which the teacher check enforces)."""
        key = validation_split_key(load_ld_config(self.args.config, self.common() + overrides))
        return self.runs / f"teacher_{key}.txt"

    def teacher_override(self, overrides: list[str]) -> list[str]:
        """Reuse the teacher of an earlier run with the same validation split, if any."""
        marker = self.teacher_marker(overrides)
        if marker.is_file():
            return [f"teacher.checkpoint={marker.read_text().strip()}"]
        return []

    def run(self, key: str, overrides: list[str], target: str = "fashion-mnist") -> dict:
        """One learn-labels run (cached by its results.json)."""
        run_dir = self.runs / key
        done = run_dir / "results.json"
        if done.is_file():
            return json.loads(done.read_text())
        ov = self.common() + overrides + self.teacher_override(overrides) + [f"run_dir={run_dir}", f"name={key}"]
        cfg = load_ld_config(self.args.config, ov)
        print(f"[{dt.datetime.now():%H:%M:%S}] {key}: labeldistill learn-labels "
              f"{os.path.relpath(self.args.config, ROOT)} {' '.join(shlex.quote(o) for o in ov)}", flush=True)
        res = learn_labels(cfg)
        marker = self.teacher_marker(overrides)
        if not marker.is_file() and (run_dir / "teacher" / "teacher.json").is_file():
            marker.write_text(str(run_dir / "teacher"))
        (run_dir / "bench.json").write_text(json.dumps({
            "bench_command": self.command, "machine": machine(),
            "learn_labels_command": f"labeldistill learn-labels {os.path.relpath(self.args.config, ROOT)} "
                                    + " ".join(shlex.quote(o) for o in ov)}, indent=2))
        print(f"[{dt.datetime.now():%H:%M:%S}] {key}: done in {res['seconds']:.0f} s", flush=True)
        return res

    @staticmethod
    def inner_batch(n: int) -> int:
        """The reference configs' inner batch n_i (spec §9): 10 for N ≤ 20, 25 for N = 50, else 50."""
        return 10 if n <= 20 else 25 if n <= 50 else 50

    def main_part(self, headline: bool) -> None:
        """``headline``: the N = 100 settings; otherwise the other N."""
        ns = [int(n) for n in self.args.ns.split(",")]
        learners = self.args.learners.split(",")
        for n in sorted(ns):
            if (n == 100) != headline:
                continue
            for learner in learners:
                self.run(f"main_{learner}_n{n}", [f"base.n={n}", f"meta.inner_batch={self.inner_batch(n)}",
                                                  self.learner(learner)])
                self.render()

    def ablation_part(self) -> None:
        """LD label parameterisation and initialisation at N = 100 with the convnet (spec §14.1–2)."""
        for key, ov in ABLATIONS.items():
            self.run(f"ablation_{key}", ["base.n=100", "meta.inner_batch=50", self.learner("convnet"),
                                         "methods=[ld]"] + ov)
            self.render()

    def n100_labels(self) -> Path:
        """Run directory of the N = 100 convnet labels that the transfer parts reuse (learned if missing)."""
        src = self.runs / "main_convnet_n100"
        if not (src / "labels.json").is_file():
            self.run("main_convnet_n100", ["base.n=100", "meta.inner_batch=50", self.learner("convnet")])
        return src

    def transfer_part(self) -> None:
        src = self.n100_labels()
        cheap = [a for a in self.args.transfer_archs.split(",") if a and a != "convnet"]
        archs = "[" + ", ".join(f"{{name: {a}}}" for a in cheap) + "]"
        opts = "[" + ", ".join(OPTIMIZERS) + "]"
        self.run("transfer_n100", [f"labels_from={src}", "methods=[ld, rr, onehot, smooth, teacher]",
                                   self.learner("convnet"), f"metatest.archs={archs}", f"metatest.optimizers={opts}",
                                   "metatest.rr_learner=false", f"metatest.repeats={self.args.transfer_repeats}"])
        self.render()

    def resnet_part(self) -> None:
        """The N = 100 convnet labels on resnet18 (few repeats: a CPU minute per model)."""
        src = self.n100_labels()
        a = self.args
        if a.resnet_repeats > 0:
            self.run("transfer_n100_resnet18", [
                f"labels_from={src}", f"methods=[{a.resnet_methods}]", "learner={name: resnet18}",
                f"metatest.optimizers=[{a.resnet_optimizers}]", "metatest.rr_learner=false",
                "metatest.step_rule=val", f"metatest.repeats={a.resnet_repeats}",
                f"meta.max_steps={a.resnet_max_steps}",
                f"data.test_subset={a.resnet_test_subset}", f"data.val_size={a.resnet_val_size}",
                "metatest.eval_batch=250"])
            self.render()

    def cross_part(self) -> None:
        # One-hot initialisation would start from the arbitrary digit i → class i map: start uniform (the paper).
        self.run("cross_digits28_to_fmnist", ["data.source=digits28", "base.mode=unbalanced", "base.n=100",
                                              "meta.inner_batch=50", "labels.init=uniform", self.learner("convnet")])
        self.render()
        # digits28 has 1,137 outer-loss images after validation: scale the epochs to the same number of outer
        # steps as a Fashion-MNIST run (55,000 images).
        base = load_ld_config(self.args.config, self.common())
        epochs = -(-base.meta.epochs * (55000 // base.meta.outer_batch) // (1137 // base.meta.outer_batch))
        self.run("cross_fmnist_to_digits28", ["data.target=digits28", "data.source=fashion-mnist",
                                              "data.val_size=300", "base.mode=unbalanced", "base.n=100",
                                              f"meta.epochs={epochs}", f"meta.val_every={max(epochs // 10, 1)}",
                                              "meta.inner_batch=50", "labels.init=uniform",
                                              self.learner("convnet")], target="digits28")
        self.render()

    def unroll_part(self) -> None:
        out = self.runs / "unroll.json"
        if out.is_file():
            return
        rows = []
        for k in (1, 2, 5):
            cmd = [sys.executable, "-m", "bench.ld_fmnist", "--unroll-probe", str(k), "--config",
                   self.args.config, "--convnet-width", str(self.args.convnet_width)]
            if self.args.threads:
                cmd += ["--threads", str(self.args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(f"unroll k={k}: {rows[-1]}", flush=True)
        self.runs.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"rows": rows, "date": dt.datetime.now().astimezone().isoformat(),
                                   "command": self.command, "machine": machine()}, indent=2))
        self.render()

    # ---------------------------------------------------------------- rendering
    def _load(self, key: str) -> dict | None:
        f = self.runs / key / "results.json"
        return json.loads(f.read_text()) if f.is_file() else None

    def _stamp(self, keys: list[str]) -> str:
        """Commands, date and machine of the finished runs among ``keys``."""
        done = [k for k in keys if (self.runs / k / "results.json").is_file()]
        if not done:
            return ""
        when = max(dt.datetime.fromtimestamp((self.runs / k / "results.json").stat().st_mtime).astimezone()
                   for k in done)
        seconds = sum(json.loads((self.runs / k / "results.json").read_text())["seconds"] for k in done)
        info = [json.loads((self.runs / k / "bench.json").read_text()) for k in done
                if (self.runs / k / "bench.json").is_file()]
        commands = list(dict.fromkeys(i["bench_command"] for i in info))
        machines = list(dict.fromkeys(i["machine"] for i in info))
        per_run = "\n".join(i["learn_labels_command"] for i in info)
        return ("Command: " + "; ".join(f"`{c}`" for c in commands)
                + f"  \nFinished {when:%Y-%m-%d %H:%M %Z}; wall time of these runs {seconds / 60:.1f} min. "
                f"Machine: {'; '.join(machines)}.\n\n<details><summary>the same runs as learn-labels commands"
                f"</summary>\n\n```\n{per_run}\n```\n</details>\n")

    def _models(self, res: dict | None) -> str:
        """' (5 models)' when a run used another number of fresh models than the header states."""
        if not res or not res["rows"]:
            return ""
        r = res["rows"][0]["repeats"]
        return "" if r == self.args.repeats else f" ({r} models)"

    @staticmethod
    def _cell(row: dict | None) -> str:
        if row is None:
            return "–"
        return f"{100 * row['top1_mean']:.1f} ± {100 * row['top1_std']:.1f}"

    @staticmethod
    def _find(res: dict | None, method: str, learner: str, optimizer: str = "adam") -> dict | None:
        if res is None:
            return None
        for r in res["rows"]:
            if r["method"] == method and r["learner"] == learner and r["optimizer"] == optimizer:
                return r
        return None

    def render(self) -> None:
        a = self.args
        parts = [
            "# Label distillation on Fashion-MNIST (LD and RR, Bohdal et al. 2020)", "",
            "Produced by `bench/ld_fmnist.py`. Top-1 accuracy (%) on the real Fashion-MNIST test split, mean ± std "
            f"over the repeats (main tables: {a.repeats} fresh models). Model selection (label snapshots and "
            "training lengths) uses a validation split held out of the TRAIN split; the test split is only used "
            "for the numbers below. Labels of every learned method are over the target classes; baselines use the "
            "same base examples and the same learner, with the training length searched on validation. "
            "'rr+X' is the paper's RR learner (X's features + EMA ridge-regression head). See "
            "`docs/label_distillation.md` for the protocol.", "",
            "## Published anchors (not measured here)", "",
            "From `docs/anchors.md` §1 (Fashion-MNIST, DC ConvNet-128 evaluation unless noted); IPC k = N/10 base "
            "examples. No LD number on Fashion-MNIST has been published.", "",
            "| method (published) | IPC 1 (N = 10) | IPC 10 (N = 100) | IPC 50 (N = 500) | status | source |",
            "|---|---|---|---|---|---|",
        ]
        parts += [f"| {m} | {x} | {y} | {z} | {s} | {src} |" for m, x, y, z, s, src in ANCHORS]
        parts.append("")
        parts += self._main_tables()
        parts += self._ablation_table()
        parts += self._transfer_tables()
        parts += self._cross_tables()
        parts += self._unroll_table()
        # Recorded commands name run directories relative to the repository (they are written absolute).
        text = "\n".join(parts).replace(str(ROOT) + os.sep, "")
        # One level below the file's own title: '# X' → '## X', '## Y' → '### Y'.
        text = "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())
        write_section(Path(a.out), "ld_fmnist", text)

    def _main_tables(self) -> list[str]:
        a = self.args
        ns = [int(n) for n in a.ns.split(",")]
        out: list[str] = []
        for learner in a.learners.split(","):
            keys = [f"main_{learner}_n{n}" for n in ns]
            res = {n: self._load(k) for n, k in zip(ns, keys)}
            if not any(res.values()):
                continue
            arch = f"convnet (width {a.convnet_width}, instance norm, depth 3)" if learner == "convnet" else learner
            out += [f"## Within Fashion-MNIST, {arch} learner", "", self._stamp(keys), "",
                    "| labels | tested with | " + " | ".join(f"N = {n}" + self._models(res[n]) for n in ns) + " |",
                    "|---|---|" + "---|" * len(ns)]
            plan = [("ld", learner), ("onehot", learner), ("smooth", learner), ("teacher", learner),
                    ("rr", f"rr+{learner}"), ("onehot", f"rr+{learner}"), ("smooth", f"rr+{learner}"),
                    ("teacher", f"rr+{learner}"), ("rr", learner)]
            for method, who in plan:
                cells = [self._cell(self._find(res[n], method, who)) for n in ns]
                out.append(f"| {METHOD_LABEL[method]} | {who} (Adam) | " + " | ".join(cells) + " |")
            meta = []
            for n in ns:
                r = res[n]
                if r:
                    for m, info in r["meta"].items():
                        meta.append(f"{m.upper()} N = {n}: {info['outer_steps']} outer steps, {info['resets']} "
                                    f"resets, best training length {info['best_steps']} steps, "
                                    f"{info['seconds_per_outer_step']:.3f} s/outer step")
            teacher = next((r["teacher"] for r in res.values() if r and r.get("teacher")), None)
            if teacher:
                meta.append(f"teacher {teacher['model']} {teacher.get('model_args', {})}: "
                            f"{100 * teacher['top1']:.1f} % test top-1")
            out += ["", "Meta-training: " + "; ".join(meta) + ".", ""]
        return out

    def _ablation_table(self) -> list[str]:
        keys = ["main_convnet_n100"] + [f"ablation_{k}" for k in ABLATIONS]
        res = {k: self._load(k) for k in keys}
        if not any(res[k] for k in keys[1:]):
            return []
        out = ["## LD variants (N = 100, convnet learner)", "", self._stamp(keys), "",
               "Same base examples, seeds and protocol; only the label parameterisation, initialisation, label "
               "learning rate or number of unrolled steps k changes. 'paper' is the reference configuration "
               "(probabilities, uniform init, Adam 1e-3, clamp and renormalise).", "",
               "| variant | param | init | label lr | k | outer steps | best val error | training steps "
               "| top-1 (Adam) |", "|---|---|---|---|---|---|---|---|---|"]
        for k in keys:
            r = res[k]
            if r is None or "ld" not in r["meta"]:
                continue
            cfg = json.loads((self.runs / k / "labels.json").read_text())["methods"]["ld"]
            m = r["meta"]["ld"]
            name = "default (configs/fmnist_ld.yaml)" if k == keys[0] else k.removeprefix("ablation_")
            row = self._find(r, "ld", "convnet")
            out.append(f"| {name} | {cfg['param']} | {cfg['init']} | {cfg['label_lr']:g} | {cfg['inner_steps']} "
                       f"| {m['outer_steps']} | {100 * m['best_val_error']:.2f} % | {m['best_steps']} "
                       f"| {self._cell(row)} |")
        return out + [""]

    def _transfer_tables(self) -> list[str]:
        keys = ["transfer_n100", "transfer_n100_resnet18"]
        res = [self._load(k) for k in keys]
        if not any(res):
            return []
        out = ["## Transfer across optimizers and architectures (N = 100, labels learned with the convnet)", "",
               self._stamp(keys), "",
               "Every training length is searched on validation (except LD on the convnet with Adam: its "
               "meta-training length). Learning rates: "
               + ", ".join(f"{o} {lr:g}" for o, lr in self._lrs(res).items())
               + f" (SGD + momentum: 0.9; AdamW: weight decay 0.01). {self.args.transfer_repeats} repeats per row; "
               f"resnet18 rows (CPU budget): {self.args.resnet_repeats} repeat(s), training length ≤ "
               f"{self.args.resnet_max_steps} steps, {self.args.resnet_val_size} validation and "
               f"{self.args.resnet_test_subset} test images; '–' = not run.", "",
               "| labels | architecture | " + " | ".join(OPTIMIZERS) + " |", "|---|---|" + "---|" * len(OPTIMIZERS)]
        archs = []
        for r in res:
            for row in (r or {}).get("rows", []):
                if row["learner"] not in archs:
                    archs.append(row["learner"])
        for method in ("ld", "rr", "onehot", "smooth", "teacher"):
            for arch in archs:
                cells = []
                for o in OPTIMIZERS:
                    row = next((self._find(r, method, arch, o) for r in res if self._find(r, method, arch, o)), None)
                    cells.append(self._cell(row))
                out.append(f"| {METHOD_LABEL[method]} | {arch} | " + " | ".join(cells) + " |")
        return out + [""]

    @staticmethod
    def _lrs(res: list[dict | None]) -> dict:
        lrs: dict = {}
        for r in res:
            for row in (r or {}).get("rows", []):
                lrs.setdefault(row["optimizer"], row["lr"])
        return lrs

    def _cross_tables(self) -> list[str]:
        keys = ["cross_digits28_to_fmnist", "cross_fmnist_to_digits28"]
        res = {k: self._load(k) for k in keys}
        if not any(res.values()):
            return []
        out = ["## Cross-dataset (N = 100 unbalanced base examples, convnet learner)", "", self._stamp(keys), "",
               "One-hot and smoothed baselines map source class i to target class i (digit i ↔ clothing class i): "
               "an arbitrary correspondence, as in the reference code; they show what the learned labels fix.", "",
               "| labels | tested with | digits28 → Fashion-MNIST | Fashion-MNIST → digits28 |", "|---|---|---|---|"]
        learner = "convnet"
        plan = [("ld", learner), ("rr", f"rr+{learner}"), ("rr", learner), ("teacher", learner),
                ("teacher", f"rr+{learner}"), ("onehot", learner), ("smooth", learner)]
        for method, who in plan:
            cells = [self._cell(self._find(res[k], method, who)) for k in keys]
            out.append(f"| {METHOD_LABEL[method]} | {who} (Adam) | " + " | ".join(cells) + " |")
        return out + [""]

    def _unroll_table(self) -> list[str]:
        f = self.runs / "unroll.json"
        if not f.is_file():
            return []
        data = json.loads(f.read_text())
        when = dt.datetime.fromisoformat(data["date"])
        out = ["## LD cost vs number of unrolled inner steps k", "",
               f"Command: `{data['command']}`  ", f"Finished {when:%Y-%m-%d %H:%M %Z}. Machine: {data['machine']}.", "",
               "One outer step (k inner SGD steps on 50 base examples with the graph kept, outer cross-entropy on a "
               f"target batch, gradient to the labels, online model update); convnet width {self.args.convnet_width}. "
               "Graph memory = bytes of the tensors autograd saves for the backward pass; peak RSS = the probe "
               "process's maximum resident set (data and model included).", "",
               "Wall seconds depend on what else runs on the cores (the 1-minute load average during each probe is "
               "given); CPU seconds are the probe's own processor time.", "",
               "| k | outer batch | wall s / outer step | CPU s / outer step | graph memory (MiB) | peak RSS (MiB) "
               "| load average |", "|---|---|---|---|---|---|---|"]
        for r in data["rows"]:
            out.append(f"| {r['inner_steps']} | {r['outer_batch']} | {r['seconds_per_step']:.3f} "
                       f"| {r['cpu_seconds_per_step']:.3f} | {r['saved_tensor_bytes'] / 2**20:.0f} "
                       f"| {r['peak_rss_bytes'] / 2**20:.0f} | {r['load_average']:.1f} |")
        return out + [""]


def unroll_probe(args: argparse.Namespace) -> None:
    """Child process of the ``unroll`` part: profile one k and print a JSON line."""
    from labeldistill.learn_labels.ld import profile_outer_step
    from labeldistill.learn_labels.learners import build_network
    from labeldistill.learn_labels.run import prepare_task

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_ld_config(args.config, ["base.n=100", "meta.inner_batch=50",
                                       f"learner={{name: convnet, args: {{width: {args.convnet_width}, "
                                       "norm: instance}}"])
    device = torch.device("cpu")
    task = prepare_task(cfg, device)
    batch = cfg.meta.outer_batch
    make = lambda: build_network(cfg.learner, task.num_classes, task.shape, device)  # noqa: E731
    labels = torch.full((len(task.x_base), task.num_classes), 1.0 / task.num_classes)
    res = profile_outer_step(make, task.x_base, labels, task.x_target[:batch], task.y_target[:batch],
                             args.unroll_probe, cfg.meta.inner_batch, cfg.ld.inner_lr, repeats=10)
    res["outer_batch"] = batch
    res["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    res["load_average"] = os.getloadavg()[0]
    print(json.dumps(res))


def main() -> None:
    args = _parser().parse_args()
    tune_malloc()  # as the labeldistill command does (see bench/malloc.py)
    if args.unroll_probe is not None:
        unroll_probe(args)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    study = Study(args)
    study.runs.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    parts = args.parts.split(",")
    study.render()
    order = [("unroll", study.unroll_part), ("main", lambda: study.main_part(headline=True)),
             ("ablation", study.ablation_part), ("cross", study.cross_part),
             ("main", lambda: study.main_part(headline=False)), ("transfer", study.transfer_part),
             ("resnet", study.resnet_part)]
    for name, part in order:
        if name in parts:
            part()
    study.render()
    print(f"study done in {(time.time() - t0) / 60:.1f} min; wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
