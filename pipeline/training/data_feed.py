"""The training stream a Lightning worker iterates: Ray Data batches, epoch after epoch.

The stream has no end (training is step-based: ``max_steps``). Each batch carries its position
(epoch, index in epoch); the module records the position of the last batch it consumed and stores
it in checkpoints, and on resume the stream starts right after it, so a killed and restarted run
sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch


class EpochFeed:
    """Iterate a Ray Train dataset shard forever, one seeded pass (epoch) after another.

    ``position`` returns ``(epoch, last_index)`` of the last batch consumed (``(0, -1)`` at the
    start); it is read when iteration starts, i.e. after Lightning restored a checkpoint.
    Within an epoch the order is fixed by ``seed`` and the epoch number (local shuffle buffer),
    so two iterations with the same position yield identical batches.
    """

    def __init__(
        self,
        shard: Any,
        batch_size: int,
        *,
        seed: int,
        position: Callable[[], tuple[int, int]],
        shuffle_buffer: int = 0,
    ) -> None:
        self.shard = shard
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.position = position
        self.shuffle_buffer = int(shuffle_buffer)

    def epoch_batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of one epoch, in their fixed order."""
        options: dict[str, Any] = {"batch_size": self.batch_size, "drop_last": True}
        if self.shuffle_buffer > 0:
            options["local_shuffle_buffer_size"] = self.shuffle_buffer
            options["local_shuffle_seed"] = self.seed * 100_003 + epoch
        yield from self.shard.iter_torch_batches(**options)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        epoch, last = self.position()
        start = last + 1
        while True:
            produced = 0
            for index, batch in enumerate(self.epoch_batches(epoch)):
                produced += 1
                if index < start:
                    continue
                batch["epoch"] = torch.tensor([epoch])
                batch["index"] = torch.tensor([index])
                yield batch
            if produced == 0:
                raise RuntimeError(
                    f"the training data gave no batch of {self.batch_size} in epoch {epoch}: "
                    "fewer samples than one batch per worker"
                )
            epoch, start = epoch + 1, 0
