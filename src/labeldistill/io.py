"""Files and fingerprints: atomic writes, JSON, checksums, settings and tensor fingerprints, metrics log.

Every artifact a stage writes goes through :func:`atomic_write_bytes` / :func:`atomic_dir`, so a kill or a
full disk never leaves a half-written output in place of a good one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn
from safetensors.torch import load_file

from .errors import LabelDistillError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path) -> Any:
    """The JSON content of ``path``."""
    return json.loads(Path(path).read_text())


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Build a directory under a temporary name; rename it to ``final`` only if the block succeeds.

    An existing ``final`` is replaced only on success, so a failure never leaves a partial output or
    loses the previous one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in ``chunk``-byte pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def tensor_fingerprint(*tensors: torch.Tensor, extra: str = "") -> str:
    """SHA-256 (first 16 hex digits) over tensors' shapes, dtypes and bytes, plus an extra string."""
    h = hashlib.sha256(extra.encode())
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")  # no copy (a mapped set stays mapped)
    return h.hexdigest()[:16]


def model_fingerprint(model: nn.Module) -> str:
    """Fingerprint of a model's ``state_dict`` (names, shapes, values)."""
    sd = model.state_dict()
    return tensor_fingerprint(*[sd[k] for k in sorted(sd)], extra=",".join(sorted(sd)))


def dir_bytes(path: Path) -> int:
    """Total size in bytes of the regular files under ``path`` (recursively)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


class MetricsLog:
    """Append JSON lines (one dict per event, with a wall-clock timestamp) to ``metrics.jsonl``.

    A resumable loop records :meth:`size` in its checkpoint and calls :meth:`rewind` with it when it resumes, so
    the lines of the work it redoes are not written twice.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, **kv: Any) -> None:
        kv = {"time": round(time.time(), 3), **kv}
        with open(self.path, "a") as f:
            f.write(json.dumps(kv) + "\n")

    def size(self) -> int:
        """The file's length now (bytes; 0 when it does not exist yet)."""
        return self.path.stat().st_size if self.path.is_file() else 0

    def rewind(self, size: int, **match: Any) -> None:
        """Drop the lines written after byte ``size`` whose fields include ``match`` (every such line when no
        ``match`` is given): the lines of work a resumed run redoes and logs again. Lines before ``size`` and
        later lines of other work stay, in their order; the file is replaced atomically (temporary file +
        rename), so a kill leaves either the old or the new file.

        Args:
            size: bytes of the file at the checkpoint the run resumes from (:meth:`size`); a file now shorter
                (edited or replaced since) is left as it is.
            match: fields (e.g. ``stage="validate", run=...``) that mark the resumed work's lines.
        """
        if not self.path.is_file() or self.path.stat().st_size <= size:
            return
        data = self.path.read_bytes()
        if size and data[size - 1:size] != b"\n":
            return  # not a line boundary of this file: not the file the checkpoint saw
        kept = [line for line in data[size:].splitlines(keepends=True) if match and not _matches(line, match)]
        atomic_write_bytes(self.path, data[:size] + b"".join(kept))


def _matches(line: bytes, match: dict) -> bool:
    """True when the JSON line ``line`` holds every field of ``match`` with the same value (a cut-off line: True)."""
    try:
        row = json.loads(line)
    except ValueError:
        return True
    return isinstance(row, dict) and all(row.get(k) == v for k, v in match.items())


def load_class_stats(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Load the ``class-stats`` artifact: ``stats.safetensors`` (tensors named ``l{i}.class_mean`` etc., see
    :mod:`labeldistill.bnstats`) and its JSON description ``class_stats.json``.

    Raises:
        LabelDistillError: missing (run ``class-stats`` first).
    """
    f = Path(folder) / "stats.safetensors"
    if not f.is_file():
        raise LabelDistillError(f"no class statistics in {folder}: run 'labeldistill class-stats CONFIG' first")
    return load_file(str(f)), read_json(Path(folder) / "class_stats.json")


def settings_key(*parts: Any) -> str:
    """Stable fingerprint (16 hex digits) of JSON-serialisable settings."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def human_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KiB"`` (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
