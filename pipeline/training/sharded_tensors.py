"""Sharded (FSDP2) parameters: which modules to shard, and moving whole tensors in and out of
shards. Pure PyTorch: the EMA and the model export use it without Ray or Lightning.

A sharded parameter is a ``DTensor``: each worker holds one slice of it. Gathering the whole
tensor (:func:`full_tensor`) is a collective operation: every worker must call it, in the same
order.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor


def is_sharded(tensor: Any) -> bool:
    """Whether ``tensor`` is a sharded (distributed) tensor."""
    return isinstance(tensor, DTensor)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor; for a sharded one gathered from every worker (all must call this)."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``full`` placed as ``like`` is: on its device, and sharded the same way if it is sharded
    (each worker keeps its own shard of its copy of ``full``; no communication)."""
    if isinstance(like, DTensor):
        return distribute_tensor(
            full.to(like.device), like.device_mesh, like.placements, src_data_rank=None
        )
    return full.to(like.device)


def copy_into(target: torch.Tensor, full: torch.Tensor) -> None:
    """Copy the whole tensor ``full`` into ``target``, or into its shard if it is sharded."""
    if isinstance(target, DTensor):
        target.to_local().copy_(shard_like(full, target).to_local())
    else:
        target.copy_(full)


def shard_units(module: nn.Module) -> list[nn.Module]:
    """The modules to shard, innermost first: each element with parameters of every
    ``nn.ModuleList`` below ``module``, then each direct child of ``module`` with parameters."""
    blocks = [
        element
        for child in module.modules()
        if isinstance(child, nn.ModuleList)
        for element in child
        if any(True for _ in element.parameters())
    ]
    roots = [child for child in module.children() if any(True for _ in child.parameters())]
    return [*reversed(blocks), *roots]


def shard_module(module: nn.Module, mesh: Any) -> None:
    """Apply FSDP2 ``fully_shard`` to :func:`shard_units` of ``module`` over ``mesh``."""
    from torch.distributed.fsdp import fully_shard

    for unit in shard_units(module):
        fully_shard(unit, mesh=mesh)
