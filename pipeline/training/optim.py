"""AdamW with linear warm-up and a constant or cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def lr_multiplier(step: int, *, warmup_steps: int, max_steps: int, schedule: str) -> float:
    """Factor on the base learning rate at optimizer step ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        span = max(1, max_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr_schedule {schedule!r}: constant or cosine")


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    warmup_steps: int,
    max_steps: int,
    schedule: str,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and its per-step LambdaLR scheduler."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)
    lr_multiplier(0, warmup_steps=warmup_steps, max_steps=max_steps, schedule=schedule)

    def multiplier(step: int) -> float:
        return lr_multiplier(
            step, warmup_steps=warmup_steps, max_steps=max_steps, schedule=schedule
        )

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
