"""What every benchmark script shares: its BENCHMARKS.md section (command, commit, date, machine) and JSON rows
(``docs/results/<section>.json``), paired 95 % t-intervals with one verdict rule, seeding a run directory from
another and running the CLI. Too few pairs: none gives a NaN mean, one its difference; under 2 pairs the
interval is ``(-inf, inf)``, never resolved.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- the section: header and writing


def machine() -> str:
    """One line: cores, memory, GPU or not, torch version and threads."""
    import torch

    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} CPU cores, {mem:.0f} GiB RAM, {gpu}, torch {torch.__version__}, "
            f"Python {platform.python_version()}, {torch.get_num_threads()} torch threads")


def git_commit() -> str:
    """Short hash of the checkout's HEAD, or ``unknown``."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def command_line(argv: list[str] | None = None) -> str:
    """``python -m bench.<name> args``: the command that runs this script (``argv`` default ``sys.argv``)."""
    argv = sys.argv if argv is None else argv
    return " ".join([f"python -m bench.{Path(argv[0]).stem}", *argv[1:]])


def header(title: str, machine_note: str = "", command: str | None = None, commit: str | None = None) -> str:
    """``## title``, then command (default :func:`command_line`), commit, UTC date and machine (+ ``machine_note``)."""
    return (f"## {title}\n\nCommand: `{command or command_line()}`  \nCommit: {commit or git_commit()}  \n"
            f"Date: {today()}  \nMachine: {machine()}{machine_note}  \n")


def write_section(path: Path, name: str, body: str, rows: list[dict] | None = None, command: str | None = None,
                  commit: str | None = None) -> None:
    """Replace (or append) section ``name`` (``<!-- name:start/end -->``) of ``path``; ``rows``: also its JSON."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    path = Path(path)
    text = path.read_text() if path.is_file() else "# Benchmarks\n\n"
    pat = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    text = pat.sub(lambda _: block, text) if pat.search(text) else text.rstrip() + "\n\n" + block
    path.write_text(text)
    if rows is not None:
        write_results(path, name, rows, command, commit)


def parser(doc: str, runs: str | None = None, seeds: list[int] | None = None, threads: bool = False,
           render: str | None = None) -> argparse.ArgumentParser:
    """A study's parser with the shared flags: ``--out``, and as asked ``--runs`` (``runs/<runs>``), ``--seeds``,
    ``--threads`` and a render-only flag (``render``: ``write-only``, ``render`` or ``collect``)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"), help="Markdown file of the section")
    if runs:
        ap.add_argument("--runs", default=str(REPO / "runs" / runs), help="folder of the run directories")
    if seeds is not None:
        ap.add_argument("--seeds", type=int, nargs="+", default=seeds)
    if threads:
        ap.add_argument("--threads", type=int, default=1, help="torch threads")
    if render:
        ap.add_argument(f"--{render}", action="store_true", help="run nothing; write the section from finished runs")
    return ap


def md_row(cells) -> str:
    """One Markdown table line: ``| a | b |``."""
    return "| " + " | ".join(map(str, cells)) + " |"


def md_table(head: list, rows=()) -> list[str]:
    """A Markdown table's lines: the header ``head``, its separator and one line per row of cells."""
    return [md_row(head), "|" + "---|" * len(head), *(md_row(r) for r in rows)]


# ---------------------------------------------------------------- the section's table as JSON


def results_path(md: Path, name: str) -> Path:
    """``docs/results/<name>.json`` beside the Markdown file ``md`` (the repository's, for BENCHMARKS.md)."""
    return Path(md).resolve().parent / "docs" / "results" / f"{name}.json"


def _finite(x):
    """``x`` with every NaN / infinite float replaced by ``None`` (JSON has neither)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    return [_finite(v) for v in x] if isinstance(x, (list, tuple)) else x


def write_results(md: Path, name: str, rows: list[dict], command: str | None = None, commit: str | None = None) -> Path:
    """Write ``{"section", "command", "commit", "date", "machine", "rows"}`` to :func:`results_path`."""
    f = results_path(md, name)
    f.parent.mkdir(parents=True, exist_ok=True)
    doc = {"section": name, "command": command or command_line(), "commit": commit or git_commit(), "date": today(),
           "machine": machine(), "rows": rows}
    f.write_text(json.dumps(_finite(doc), indent=2, default=str) + "\n")
    return f


def result_row(setting: dict, per_seed: dict | None = None, protocol: str | None = None, *, paired: bool = False,
               **extra) -> dict:
    """One JSON row: ``setting``, ``protocol``, ``seeds``, ``values`` (per seed), ``mean``, ``interval`` (95 %, for
    ``paired`` differences of ≥ 2 seeds, else ``None``) and ``extra``; without ``per_seed``: setting and extra."""
    if per_seed is None:
        return {"setting": setting, **extra}
    seeds = sorted(per_seed)
    values = [per_seed[s] for s in seeds]
    mean, lo, hi = paired_interval(values)
    return {"setting": setting, "protocol": protocol, "seeds": seeds, "values": values, "mean": mean,
            "interval": [lo, hi] if paired and len(values) > 1 else None, **extra}


def shown(path) -> str:
    """``path`` as written in BENCHMARKS.md: relative to the repository when inside it (no machine paths)."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else p.name


def mean_std(xs: list[float], scale: float = 100, sample: bool = False) -> str:
    """``"79.1 ± 0.4"``: mean ± std (population, or sample) of ``xs × scale``; one value alone, ``–`` for none."""
    v = [scale * x for x in xs]
    if len(v) < 2:
        return f"{v[0]:.1f}" if v else "–"
    return f"{statistics.fmean(v):.1f} ± {(statistics.stdev if sample else statistics.pstdev)(v):.1f}"


# ---------------------------------------------------------------- paired differences over seeds

# Two-sided 95 % quantiles t_{0.975, df} of Student's t (standard tables, e.g. NIST/SEMATECH e-Handbook
# §1.3.6.7.2), used when scipy is not installed.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t975_table(df: int) -> float:
    """``t_{0.975, df}`` from :data:`T975` (the next smaller tabulated df; 1.960 beyond 120); ValueError for df < 1."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return 1.960 if df > 120 else T975[max(k for k in T975 if k <= df)]


def t975(df: int) -> float:
    """``t_{0.975, df}``: ``scipy.stats.t.ppf`` when scipy is installed, else :func:`t975_table`."""
    try:
        from scipy.stats import t
    except ImportError:
        return t975_table(df)
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return float(t.ppf(0.975, df))


def paired_interval(diffs: list[float]) -> tuple[float, float, float]:
    """``(mean, low, high)``: mean and 95 % t-interval of paired differences (one per seed)."""
    n = len(diffs)
    if n < 2:
        return (diffs[0] if n else math.nan), -math.inf, math.inf
    mean = sum(diffs) / n
    half = t975(n - 1) * math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def verdict(low: float, high: float, threshold: float = 0.0, above: bool = True) -> str:
    """``held`` / ``did not hold`` when the interval is wholly on the claimed / other side of ``threshold``."""
    if above:
        return "held" if low > threshold else "did not hold" if high < threshold else "not resolved"
    return "held" if high < threshold else "did not hold" if low > threshold else "not resolved"


def interval_text(diffs: list[float], digits: int = 1, one: str = "one seed") -> str:
    """``+3.0 [+0.5, +5.5]``; ``+3.0 (one seed)`` for one difference (``one``); ``–`` for none."""
    if not diffs:
        return "–"
    m, lo, hi = paired_interval(diffs)
    return f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]" if len(diffs) > 1 else f"{m:+.{digits}f} ({one})"


def compare(out: list, setting: dict, diffs: dict, protocol: str, threshold: float = 0.0, above: bool = True, *,
            either: bool = False, unit: str = "points", **extra) -> str:
    """The verdict of paired ``diffs`` (``{seed: difference}``; ``either``: ``held`` when the interval excludes 0 on
    either side, a measurement rather than a claim), its JSON row appended to ``out``."""
    v = verdict(*paired_interval(list(diffs.values()))[1:], threshold, above)
    v = ("held" if v != "not resolved" else v) if either else v
    out.append(result_row(setting, diffs, protocol, paired=True, verdict=v, unit=unit, **extra))
    return v


def paired_diffs(a: dict, b: dict, scale: float = 100) -> list[float]:
    """``scale · (a[seed] − b[seed])`` over the seeds both have, in seed order."""
    return list(paired_by_seed(a, b, scale).values())


def paired_by_seed(a: dict, b: dict, scale: float = 100) -> dict:
    """``{seed: scale · (a[seed] − b[seed])}`` over the seeds both have, in seed order."""
    return {s: scale * (a[s] - b[s]) for s in sorted(set(a) & set(b))}


# ---------------------------------------------------------------- run directories


def ledger(run_dir: Path) -> dict:
    """The stage records of a run directory (``stages.json``; empty when none)."""
    from labeldistill.io import read_json
    from labeldistill.provenance import LEDGER

    f = Path(run_dir) / LEDGER
    return read_json(f) if f.is_file() else {}


def finished_results(run_dir: Path) -> dict | None:
    """The ``results.json`` of a finished run, else ``None``."""
    from labeldistill import read_results
    from labeldistill.errors import LabelDistillError

    try:
        return read_results(run_dir)
    except LabelDistillError:
        return None


def seed_run_from(src: Path, dst: Path, parts: list[str], cfg, stages: tuple[str, ...] = ()) -> bool:
    """Copy the finished outputs ``parts`` (e.g. ``teacher``, ``images/cs``) of run ``src`` into run ``dst`` (config
    ``cfg``; parts it has are kept). The ledger records a copy only through :func:`labeldistill.runner.adopt`, when
    ``src`` made it with ``cfg``'s settings; with ``stages`` (ledger keys) nothing is copied unless each would be
    adopted. Returns whether ``dst``'s ledger records every key of ``stages``."""
    from labeldistill.layout import RunLayout
    from labeldistill.main_stages import main_units
    from labeldistill.provenance import recorded_changes
    from labeldistill.runner import adopt

    src, dst = Path(src), Path(dst)
    units = main_units(cfg)
    wanted = [(st, ref) for st, ref in units if ref.key in stages]
    if len(wanted) < len(stages) or any(ref.key not in ledger(src) or
                                        recorded_changes(RunLayout(src), ref.key, st.settings(cfg, ref))
                                        for st, ref in wanted):
        return False
    for part in parts:
        if (src / part).exists() and not (dst / part).exists():
            (dst / part).parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if (src / part).is_dir() else shutil.copy)(src / part, dst / part)
    adopt(units, cfg, src)
    return all(s in ledger(dst) for s in stages)


def load_json(path) -> dict | None:
    """The JSON document in ``path``, or ``None`` when there is no such file."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def cli_env() -> dict:
    """A child process's environment: one thread, no progress bars, this checkout's ``src`` on ``PYTHONPATH``."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}


def run_cli(verb: str, config: Path, overrides: list[str]) -> None:
    """``labeldistill <verb> <config> <overrides>`` in a child process (:func:`cli_env`); prints its wall time."""
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "labeldistill.cli", verb, str(config), *overrides], cwd=REPO, env=cli_env(),
                   check=True)
    print(f"{verb} {' '.join(o for o in overrides if o.startswith(('run_dir=', 'seed=')))}: {time.time() - t0:.0f} s",
          flush=True)


# ---------------------------------------------------------------- measurements


def met(ok: bool) -> str:
    """A target's verdict in a measurement table: ``met`` or ``**missed**``."""
    return "met" if ok else "**missed**"


def proc_status() -> dict[str, int]:
    """This process's ``VmHWM``, ``VmRSS``, ``RssAnon`` and ``RssFile`` (bytes) from ``/proc/self/status``."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) * 1024
    return out


class PeakAnon:
    """``with PeakAnon(interval) as p``: ``p.peak``, the largest ``RssAnon`` (bytes) sampled in the block."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, proc_status().get("RssAnon", 0))
            time.sleep(self.interval)

    def __enter__(self) -> PeakAnon:
        self.peak = proc_status().get("RssAnon", 0)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, proc_status().get("RssAnon", 0))
