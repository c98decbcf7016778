"""torch.distributed helpers: every stage runs unchanged under ``torchrun --nproc-per-node N [--nnodes …]``.

The process group is created from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` …) with
``gloo`` on CPU and ``nccl`` on CUDA. Without torchrun every helper degrades to the single-process case.
How each stage splits its work: recover shards its optimisation batches, relabel its shards, class-stats
its images (per-class sums are all-reduced), squeeze and validate wrap the model in DistributedDataParallel.
Outputs are written by rank 0 (or by the rank owning a shard); a barrier separates stages.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn

from .runtime import _SOLO, in_solo

T = TypeVar("T")


def _active() -> bool:
    """A process group is active and this process is not inside :func:`solo`."""
    return dist.is_available() and dist.is_initialized() and not in_solo()


@contextlib.contextmanager
def solo() -> Iterator[None]:
    """Inside, this process behaves as a single-process run (``validate.parallel: students``): rank 0 of world 1,
    no DistributedDataParallel, no barriers or all-reduces, and it writes the outputs of the units it runs
    (:func:`labeldistill.runtime.is_rank0` is true); the ledger stays with process rank 0
    (:func:`labeldistill.runner.run_spread`)."""
    was = _SOLO["on"]
    _SOLO["on"] = True
    try:
        yield
    finally:
        _SOLO["on"] = was


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order (``[obj]`` without a process group or inside ``solo``)."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def init_distributed() -> bool:
    """Initialise the default process group if launched by torchrun (``WORLD_SIZE`` > 1).

    Returns:
        True if a process group is active.
    """
    if dist.is_available() and dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def close_distributed() -> None:
    """Destroy the default process group if one is active (before the process exits, so the backend's threads
    shut down in order rather than at interpreter teardown)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if _active():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every rank (no-op without a process group or inside :func:`solo`)."""
    if _active():
        dist.barrier()


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items``: every ``world``-th item starting at ``rank`` (round robin)."""
    rank, world = rank_world()
    return list(items[rank::world])


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (no-op without a process group or inside :func:`solo`); returns ``t``."""
    if _active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` under a process group, else ``model`` itself."""
    if _active() and dist.get_world_size() > 1:
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank (no-op without a process group or inside
    :func:`solo`): DistributedDataParallel broadcasts them before each forward, so after the last training step
    each rank's differ by its own batch rows."""
    if _active():
        for b in model.buffers():
            dist.broadcast(b.data, 0)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with its BatchNorm layers converted to SyncBatchNorm under a process group of several ranks (not
    inside :func:`solo`); ``model`` itself otherwise.

    Raises:
        ConfigError: on a device other than CUDA (torch's SyncBatchNorm runs on GPUs only).
    """
    if not (_active() and dist.get_world_size() > 1):
        return model
    if device.type != "cuda":
        from .errors import ConfigError

        raise ConfigError(f"validate.sync_bn needs CUDA (torch's SyncBatchNorm), not {device.type}; set it to false")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
