"""The training stream a Lightning worker iterates, and where a resumed run starts in it.

Training counts steps, not epochs: the driver builds one Ray Dataset that chains as many seeded
epochs as the run needs (``pipeline.data.training_dataset(..., num_epochs=n)``). A resumed run
starts that stream after the samples the checkpoint's steps consumed (``resume_position``), so
it sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


def checkpoint_step(path: str | Path) -> int:
    """The optimizer step a Lightning checkpoint was saved at (0 if there is none).

    Memory-mapped: the weights are not read.
    """
    where = Path(path)
    if not where.exists():
        return 0
    state = torch.load(where, map_location="cpu", weights_only=True, mmap=True)
    return int(state["global_step"])


def epochs_needed(first_sample: int, max_steps: int, global_batch: int, epoch_size: int) -> int:
    """How many epochs, starting with the one holding ``first_sample``, cover the run."""
    if epoch_size < global_batch:
        raise ValueError(
            f"the training split holds {epoch_size} samples, fewer than one batch "
            f"({global_batch}): make more data or a smaller batch"
        )
    last_sample = max_steps * global_batch  # exclusive
    first_epoch = first_sample // epoch_size
    return max(1, math.ceil(last_sample / epoch_size) - first_epoch) + 1


class StepFeed:
    """Batches of ``batch_size`` rows from a Ray Train dataset shard, with a clear error if the
    stream runs dry before ``max_steps`` (Lightning would otherwise stop early, silently)."""

    def __init__(self, shard: Any, batch_size: int) -> None:
        self.shard = shard
        self.batch_size = int(batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        yield from self.shard.iter_torch_batches(batch_size=self.batch_size, drop_last=True)
        raise RuntimeError("the training stream ended before max_steps: too few epochs planned")
