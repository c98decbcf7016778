"""Shared helpers for benchmark scripts: machine description and writing a section into BENCHMARKS.md."""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    """One line: cores, memory, GPU or not, torch version."""
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


def command_line() -> str:
    return "python " + " ".join([str(Path(sys.argv[0]).relative_to(REPO)) if Path(sys.argv[0]).is_absolute()
                                 else sys.argv[0]] + sys.argv[1:])


def header(title: str, machine_note: str = "") -> str:
    """A section's opening lines: ``## title``, then the exact command, the commit, the UTC date and the machine
    (``machine_note`` is appended to the machine line, e.g. the load average), each a Markdown line break."""
    return (f"## {title}\n\nCommand: `{command_line()}`  \nCommit: {git_commit()}  \nDate: {today()}  \n"
            f"Machine: {machine()}{machine_note}  \n")


def write_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) the section between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``path``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    text = path.read_text() if path.is_file() else "# Benchmarks\n\n"
    pat = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    text = pat.sub(lambda _: block, text) if pat.search(text) else text.rstrip() + "\n\n" + block
    path.write_text(text)


def mean_std(xs: list[float]) -> str:
    """``"79.1 ± 0.4"`` (percent) from fractions; std over the list (population std for n > 1)."""
    t = torch.tensor(xs, dtype=torch.float64) * 100
    if len(xs) == 1:
        return f"{float(t[0]):.1f}"
    return f"{float(t.mean()):.1f} ± {float(t.std(unbiased=False)):.1f}"
