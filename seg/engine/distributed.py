"""Process-group set-up from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK).

One process per device. Without torchrun (no WORLD_SIZE in the environment) the run is a single
process and no process group is created; under torchrun one is, whatever the world size.
Backend: NCCL on GPU, gloo on CPU.
"""
from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from seg.config import SCHEMA
from seg.errors import ConfigError
from seg.models.norm import convert_sync_batchnorm, revert_sync_batchnorm

__all__ = ["DEVICES", "DistInfo", "parse_device", "resolve_device", "current_dist", "init_distributed",
           "cleanup_distributed", "describe", "barrier", "all_reduce_mean", "broadcast_object", "broadcast_buffers",
           "convert_sync_bn"]

#: what train.device and every tool's --device accept, besides cuda:N (one GPU by its index)
DEVICES = tuple(SCHEMA["train"]["device"]["choices"])  # auto (the GPU when present), cpu, cuda


@dataclass(frozen=True)
class DistInfo:
    """Where this process runs: its rank of ``world_size`` processes, its rank on this machine and its device
    (from :func:`init_distributed`, or :func:`current_dist` wherever a run's info is not at hand)."""
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True in a process group (torchrun, any world size): DDP and SyncBatchNorm are used."""
        return self.world_size > 1 or _in_group()


def _in_group() -> bool:
    return dist.is_available() and dist.is_initialized()


def current_dist() -> DistInfo:
    """This process's place in the run, read from the process group ((0, 1) without one). Its device is the
    one collectives run on: the current GPU under NCCL, the CPU otherwise (gloo, or no group)."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not _in_group():
        return DistInfo(0, 1, local_rank, torch.device("cpu"))
    nccl = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)


def parse_device(spec: str | torch.device, option: str) -> str:
    """``spec`` written the one way (lower case): one of DEVICES or cuda:N. ConfigError naming ``option``
    for anything else; whether the device exists is :func:`resolve_device`'s question."""
    name = str(spec).strip().lower()
    kind, colon, index = name.partition(":")
    if kind == "mps":  # torch has the backend, but seg's kernels and its tests run on CUDA and the CPU only
        raise ConfigError(f"{option}={name}: Apple's MPS backend is not supported (seg runs on CUDA or the CPU); "
                          "use cpu")
    if name in DEVICES or (kind == "cuda" and colon and index.isdigit()):
        return name
    raise ConfigError(f"{option}: expected {', '.join(DEVICES)} or cuda:N, got {str(spec)!r}")


def resolve_device(spec: str | torch.device, option: str = "train.device", local_rank: int = 0) -> torch.device:
    """The device ``spec`` names on this machine: "auto" is GPU ``local_rank`` when CUDA is present, else the
    CPU; "cuda" is GPU ``local_rank``; "cuda:N" is GPU N. A GPU this machine lacks is a ConfigError naming
    ``option`` (the config key or command-line option the value came from)."""
    name = parse_device(spec, option)
    kind, _, index = name.partition(":")
    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    gpu = int(index) if index else local_rank
    count = torch.cuda.device_count()
    if gpu >= count:
        have = f"only {count} CUDA device(s)" if count else "no CUDA device"
        raise ConfigError(f"{option}={name} requested but this machine has {have}")
    return torch.device("cuda", gpu)


def init_distributed(device: str = "auto", timeout_min: float | None = None, option: str = "train.device"
                     ) -> DistInfo:
    """Read torchrun's environment, resolve the device (:func:`resolve_device`; ``option`` names where
    ``device`` came from), and init the process group when world size > 1.

    timeout_min: how long a collective waits for a hung or dead rank before it raises, so a stopped
    process fails the run instead of blocking the others (default: the schema's train.dist_timeout_min).
    """
    if timeout_min is None:
        timeout_min = SCHEMA["train"]["dist_timeout_min"]["default"]
    timeout = datetime.timedelta(minutes=timeout_min)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, option, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    # under torchrun the process group exists even for one process (as in torchvision's references), so
    # `torchrun --nproc_per_node 1` runs the very code of a multi-GPU job: NCCL, DDP and SyncBatchNorm
    if "WORLD_SIZE" in os.environ and not _in_group():
        if dev.type == "cuda":
            dist.init_process_group(backend="nccl", device_id=dev, timeout=timeout)
        else:
            dist.init_process_group(backend="gloo", timeout=timeout)
    return DistInfo(rank, world_size, local_rank, dev)


def describe(info: DistInfo, model: nn.Module) -> str:
    """One line saying how the run is spread: process group backend, world size, device, norm layers."""
    backend = dist.get_backend() if _in_group() else "no process group"
    norms = sorted({type(m).__name__ for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)})
    return f"{backend}, world size {info.world_size}, {info.device}, norm {'/'.join(norms) or 'none'}"


def cleanup_distributed() -> None:
    if _in_group():
        dist.destroy_process_group()


def barrier() -> None:
    if _in_group():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all ranks (identity for a single process), on the tensor's own device.

    NCCL reduces CUDA tensors only: a CPU tensor travels through the current GPU and back."""
    if not _in_group():
        return value
    home = value.device
    if dist.get_backend() == "nccl" and home.type != "cuda":
        value = value.to(current_dist().device)
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return (value / dist.get_world_size()).to(home)


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s picklable `obj` on every rank (identity for a single process)."""
    if not _in_group():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s buffers (BN running statistics) to all ranks.

    Without SyncBN each rank's running statistics follow its own share of the batch; DDP syncs them
    only at the start of each forward. Calling this at the end makes every rank's state identical.
    """
    if not _in_group():
        return
    for buf in model.buffers():
        dist.broadcast(buf.data, src)


def convert_sync_bn(model: nn.Module, enabled: bool, info: DistInfo) -> nn.Module:
    """SyncBatchNorm when asked for, on GPU, with world size > 1; per-rank norms otherwise.

    SyncBatchNorm only runs on CUDA, so a CPU run uses per-rank BatchNorm (also when the model was
    built with SyncBatchNorm layers, ``model.norm=syncbn``) and says so once. Both ways timm's fused
    norm+activation layers keep their activation (:mod:`seg.models.norm`).
    """
    has_sync = any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    if info.device.type != "cuda":
        if (enabled and info.distributed) or has_sync:
            if info.is_main:
                print("warning: SyncBatchNorm needs CUDA: using per-rank BatchNorm2d on CPU", file=sys.stderr,
                      flush=True)
            return revert_sync_batchnorm(model)
        return model
    if enabled and info.distributed:
        return convert_sync_batchnorm(model)
    return model
