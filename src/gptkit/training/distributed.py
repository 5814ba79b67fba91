"""Process-group setup for `torchrun`: DDP over gloo (CPU) or NCCL (GPU). One process = world of one."""

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

    @classmethod
    def from_env(cls) -> DistInfo:
        """This process's place as torchrun describes it (RANK, WORLD_SIZE, LOCAL_RANK); one process without."""
        env = os.environ
        return cls(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))


def setup(device: str, info: DistInfo) -> torch.device:
    """Join the process group `info` describes (if distributed and not joined yet); pick this rank's device."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and info.enabled:
        device = f"cuda:{info.local_rank}"
    chosen = torch.device(device)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if info.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return chosen


def mean_across_ranks(value: float, info: DistInfo, device: torch.device) -> float:
    if not info.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item()) / info.world_size


def any_across_ranks(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank if `flag` is True on any (so that all ranks stop at the same step)."""
    if not info.enabled:
        return flag
    tensor = torch.tensor([float(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, info: DistInfo, device: torch.device, *, fsdp: bool, compile: bool) -> torch.nn.Module:
    """The module a training step calls. FSDP2 shards `model` in place (each block, then the root), so
    build the optimizer after this; DDP and torch.compile wrap it instead."""
    if fsdp:
        if not info.enabled:
            raise ValueError("FSDP shards the model across processes: launch with torchrun --nproc_per_node N > 1")
        from torch.distributed.fsdp import fully_shard

        for block in model.transformer.h:
            fully_shard(block)
        fully_shard(model)
    trained = torch.compile(model) if compile else model
    if info.enabled and not fsdp:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(trained, device_ids=[device] if device.type == "cuda" else None)
    return trained


def gradient_sync(trained: torch.nn.Module, model: torch.nn.Module, enabled: bool):
    """Context in which backward passes all-reduce gradients only if `enabled` (off for all but the last
    micro-batch of an accumulated step)."""
    import contextlib

    if enabled:
        return contextlib.nullcontext()
    if hasattr(trained, "no_sync"):  # DDP
        return trained.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2

        @contextlib.contextmanager
        def paused():
            model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)

        return paused()
    return contextlib.nullcontext()


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded model and optimizer state (keyed by parameter name), on the CPU. A collective under FSDP:
    every rank calls it; rank 0 receives the full tensors."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizer, options=options)


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Restore what `full_state` saved, sharding it again where the model is sharded."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, optim_state_dict=state, options=StateDictOptions(full_state_dict=True))
