"""Process-group plumbing for `python tools/train.py` (one process) and `torchrun` (several).

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; without them the run is
a single process and no process group is created. CPU runs use gloo, CUDA runs nccl.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name: str, local_rank: int | None = None) -> torch.device:
    """'auto' -> this rank's GPU when CUDA is present, else the CPU; 'cuda' -> this rank's GPU;
    anything else as given. This rank's GPU is `local_rank`, by default torchrun's LOCAL_RANK
    (0 without torchrun), so the ranks of one machine never share a GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if local_rank is None else local_rank)
    return device


def dist_info() -> DistInfo:
    """This process's rank among torchrun's processes (rank 0 of 1 without torchrun)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group if this process was launched by torchrun; `device` is
    this rank's (see `pick_device`)."""
    info = dist_info()
    if not info.enabled:
        return info
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, rank=info.rank, world_size=info.world_size)
    return info


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_over_ranks(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise mean of a tensor over all ranks (identity on one process)."""
    if not info.enabled:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / info.world_size


def gather_to_main(obj: object, info: DistInfo) -> list | None:
    """Every rank's `obj` (picklable), in rank order, on rank 0; None on the others."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj: object, info: DistInfo) -> object:
    """Rank 0's `obj` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank. DDP broadcasts them before each
    forward, so rank 0's are the ones the model runs with; this makes the ranks equal after the
    last forward too (for checkpoints and validation)."""
    if info.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)
