"""Distributed runs on torchrun's engine: which rank this is, and merging state on rank 0.

`torchrun --nproc-per-node N -m expc run SPEC` sets RANK / WORLD_SIZE; each rank runs its
shard of the batches (every N-th batch), then every rank's aggregator and metric state goes
to rank 0, which merges them in rank order with the states' exact `merge` and writes the one
run folder. Each rank writes its own results shards (`runtime/results_writer.py`); rank 0
gathers their records and joins them in rank order. gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping

import attrs
import torch
import torch.distributed as dist


@attrs.frozen(kw_only=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def current_world(device: torch.device) -> World:
    """This process's place in a torchrun job (a single process when not launched by one)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(rank=dist.get_rank(), size=dist.get_world_size())


def gather_states(world: World, states: Mapping[str, Mapping[str, torch.Tensor]]
                  ) -> list[dict[str, dict[str, torch.Tensor]]] | None:
    """Every rank's state dicts on rank 0 (in rank order); None on the other ranks."""
    cpu = {name: {k: v.detach().cpu() for k, v in state.items()} for name, state in states.items()}
    if not world.distributed:
        return [cpu]
    gathered: list | None = [None] * world.size if world.is_main else None
    dist.gather_object(cpu, gathered, dst=0)
    return gathered


def gather_objects(world: World, value: object, *, everywhere: bool = False) -> list | None:
    """Every rank's picklable `value` in rank order: on rank 0 (None on the others), or on
    every rank with `everywhere`; one process: `[value]`."""
    if not world.distributed:
        return [value]
    gathered = [None] * world.size
    if everywhere:
        dist.all_gather_object(gathered, value)
        return gathered
    dist.gather_object(value, gathered if world.is_main else None, dst=0)
    return gathered if world.is_main else None


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def ignore_launcher_stop(world: World) -> None:
    """In a rank of a distributed run, ignore SIGTERM from now on (main thread only).

    torchrun's agent SIGTERMs every rank as soon as one fails. Inside the run `StopSignals`
    turns it into a clean stop (it restores this setting when the run ends); before that,
    and once a rank's failure is settled, the signal could only kill the rank before it
    reports — rank 0 would print nothing. The agent still kills a rank that hangs.
    """
    if world.distributed and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
