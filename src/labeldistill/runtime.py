"""Where and how the code runs: device choice, deterministic CUDA kernels, bf16 autocast, threads, rank 0, the
allocator setting."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

import torch


def pick_device(name: str = "auto", deterministic: bool = False) -> torch.device:
    """``auto`` → CUDA, then MPS, then CPU; any other string is passed to :class:`torch.device`.

    With ``deterministic`` (the config key) a CUDA device gets :func:`set_deterministic` before it is returned.
    """
    if name == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
    else:
        device = torch.device(name)
    set_deterministic(device, deterministic)
    return device


CUBLAS_WORKSPACE = ":4096:8"
"""``CUBLAS_WORKSPACE_CONFIG`` for deterministic cuBLAS (PyTorch, Reproducibility notes: ``:4096:8`` or ``:16:8``)."""


def deterministic_env(on: bool) -> None:
    """Set ``CUBLAS_WORKSPACE_CONFIG`` (unless the user set it) when ``on``; cuBLAS reads it when CUDA starts its
    first cuBLAS handle, so the CLI calls this before any CUDA work."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)


def set_deterministic(device: torch.device, on: bool) -> bool:
    """Deterministic CUDA kernels for the config key ``deterministic: true``; on CPU and MPS, or with ``on``
    false, nothing is changed (process-wide torch flags stay as they are).

    On CUDA with ``on``: ``torch.use_deterministic_algorithms(True, warn_only=True)``,
    ``torch.backends.cudnn.deterministic = True``, ``torch.backends.cudnn.benchmark = False`` and
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (:func:`deterministic_env`). ``warn_only``: an operation that has no
    deterministic CUDA kernel warns instead of raising; recover differentiates through the crop
    (``grid_sample``) and ``F.interpolate(bilinear)``, which PyTorch 2.14's
    ``torch.use_deterministic_algorithms`` documentation lists among those, so a strict mode would stop recover.
    Cost (PyTorch docs, "Reproducibility"): deterministic operations are often slower; cuDNN no longer picks the
    fastest convolution algorithm per shape; ``:4096:8`` is one of the two cuBLAS workspace settings the PyTorch reproducibility notes give (its memory cost is not measured here).

    Returns:
        True when the settings were applied (CUDA and ``on``).
    """
    if device.type != "cuda" or not on:
        return False
    deterministic_env(True)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return True


def autocast(device: torch.device, mode: str = "bf16") -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``mode`` is ``bf16`` (the config key ``autocast``); a no-op context with
    ``off`` and on every other device (CPU and MPS run in float32)."""
    if device.type == "cuda" and mode == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` when a count is configured; ``None`` keeps torch's default."""
    if threads:
        torch.set_num_threads(threads)


_SOLO = {"on": False}  # set by labeldistill.distributed.solo(): this process runs its own units as world 1


def in_solo() -> bool:
    """True inside :func:`labeldistill.distributed.solo` (each rank runs whole units as a single process)."""
    return _SOLO["on"]


def process_rank() -> int:
    """The process's rank in its process group (0 without one), even inside ``solo``."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_rank0() -> bool:
    """True on rank 0 of a process group, or without one, or inside ``solo`` (every rank writes the outputs of the
    units it runs)."""
    return in_solo() or process_rank() == 0


_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc <malloc.h> mallopt parameters


def release_freed_memory() -> bool:
    """Hand glibc's freed heap memory back to the kernel (``malloc_trim(0)``), e.g. after decoding a whole image
    set in small pieces; True when it ran (Linux/glibc only, a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0)) or True
    except (OSError, AttributeError):  # not glibc
        return False


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

