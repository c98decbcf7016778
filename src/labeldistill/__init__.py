"""labeldistill: the label side of dataset distillation (SRe2L/LPLD soft-label pruning, learned labels)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("labeldistill")  # the installed distribution's version (pyproject.toml)
except PackageNotFoundError:  # a source tree on PYTHONPATH without an install
    __version__ = "0+unknown"
