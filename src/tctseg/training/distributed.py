"""Distributed set-up for ``torchrun``: process group, DDP wrapping, rank-0-only side effects.

Launched by ``torchrun`` the environment holds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
then NCCL is used on CUDA and gloo on CPU. Without them everything here is a no-op and the
run is a single process.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

# validation runs on rank 0 only while the others wait at a barrier: allow it time
_PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes logs and checkpoints."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def init_distributed(device_type: str) -> DistributedContext:
    """Join the process group when launched by torchrun (NCCL on ``cuda``, gloo on ``cpu``)."""
    if not launched_by_torchrun():
        return DistributedContext()
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=_PROCESS_GROUP_TIMEOUT)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def device_for(context: DistributedContext, device_type: str) -> torch.device:
    """The device this rank trains on: ``cuda:<local_rank>`` on GPUs, else the CPU."""
    if device_type == "cuda":
        return torch.device("cuda", context.local_rank if context.enabled else torch.cuda.current_device())
    return torch.device(device_type)


def wrap_model(model: nn.Module, context: DistributedContext, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` when distributed (BatchNorm → SyncBatchNorm on GPU)."""
    if not context.enabled:
        return model
    if device.type == "cuda":
        # per-GPU batches are small (2–4 patches): synchronised statistics are steadier
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    # a method whose forward leaves some parameters unused says so (costs an extra graph walk)
    find_unused = bool(getattr(model, "has_unused_parameters", False))
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def barrier(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.barrier()


def all_reduce_min(value: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Element-wise minimum over ranks (in place; unchanged in a single process)."""
    if context.enabled and dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value


def all_reduce_mean(value: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Element-wise mean over ranks (in place; unchanged in a single process)."""
    if context.enabled and dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= context.world_size
    return value


def broadcast_buffers(model: nn.Module, context: DistributedContext) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last step every rank
    holds its own statistics; this makes the replicas identical again.
    """
    if context.enabled and dist.is_initialized():
        for buffer in unwrap_model(model).buffers():
            dist.broadcast(buffer, src=0)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
