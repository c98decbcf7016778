"""What users try first: ``labeldistill --version`` and ``python -m labeldistill``."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

from labeldistill import cli


def test_version_flag_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"labeldistill {version('labeldistill')}"


def test_python_dash_m_runs_the_same_command_line(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "labeldistill", "--version"], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0 and ok.stdout.strip() == f"labeldistill {version('labeldistill')}"
    bad = subprocess.run([sys.executable, "-m", "labeldistill", "run", str(tmp_path / "missing.yaml")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "config file not found" in bad.stderr
