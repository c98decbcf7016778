"""Small shared helpers: device choice, atomic writes, fingerprints, JSON-lines metrics."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import sys
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA, then MPS, then CPU; any other string is passed to :class:`torch.device`."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


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
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def model_fingerprint(model: nn.Module) -> str:
    """Fingerprint of a model's ``state_dict`` (names, shapes, values)."""
    sd = model.state_dict()
    return tensor_fingerprint(*[sd[k] for k in sorted(sd)], extra=",".join(sorted(sd)))


def dir_bytes(path: Path) -> int:
    """Total size in bytes of the regular files under ``path`` (recursively)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


class MetricsLog:
    """Append JSON lines (one dict per event, with a wall-clock timestamp) to ``metrics.jsonl``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, **kv: Any) -> None:
        kv = {"time": round(time.time(), 3), **kv}
        with open(self.path, "a") as f:
            f.write(json.dumps(kv) + "\n")


def is_rank0() -> bool:
    """True on rank 0 of a process group, or without one."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc <malloc.h> mallopt parameters


def tune_malloc(keep_bytes: int = 1 << 30) -> bool:
    """Stop glibc from handing every large tensor buffer back to the kernel (CPU runs only; Linux/glibc).

    By default glibc serves allocations above 128 KiB–32 MiB with ``mmap`` and returns them with ``munmap``
    on free, so every forward pass re-faults its activation pages: a 10,000-image evaluation of a ConvNet-32
    on CPU spends more than half its time in the kernel (``bench/malloc.py`` measures it). Raising the mmap and trim thresholds to ``keep_bytes`` keeps freed buffers in the heap for
    reuse; the price is that up to ``keep_bytes`` of freed memory stays resident.

    Set ``LABELDISTILL_MALLOC=system`` to keep glibc's defaults; nothing is changed either when the user
    already tunes malloc (``MALLOC_*`` or ``GLIBC_TUNABLES`` variables, or a preloaded allocator).

    Args:
        keep_bytes: mmap and trim threshold in bytes (at most 2**31 - 1).

    Returns:
        True when the thresholds were set.
    """
    env = os.environ
    if (env.get("LABELDISTILL_MALLOC", "").lower() == "system" or not sys.platform.startswith("linux")
            or "GLIBC_TUNABLES" in env or "LD_PRELOAD" in env or any(k.startswith("MALLOC_") for k in env)):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        value = min(int(keep_bytes), 2**31 - 1)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, value) and libc.mallopt(_M_TRIM_THRESHOLD, value)
                    and libc.mallopt(_M_TOP_PAD, 64 << 20))
    except (OSError, AttributeError):  # not glibc (e.g. musl): keep the system allocator's behaviour
        return False

