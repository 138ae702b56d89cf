"""Per-sample values kept with their evaluation index, gathered across Ray Train workers.

The bootstrap resamples evaluation samples, so it needs each sample's value (its Inception
features, CLIP score, PSNR) rather than running sums; keeping the index lets every condition be
lined up by caption whatever worker produced it.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class PerSampleValues(Metric):
    """``update(index [B], values [B, ...])``; ``compute()`` -> values [N, ...] sorted by index.

    ``shape``: one sample's value shape, when known; a worker that saw no sample then adds an
    empty block of that shape before the gather (workers must agree on the rank of the states).
    """

    full_state_update = False

    def __init__(self, shape: tuple[int, ...] | None = ()) -> None:
        super().__init__()
        self.shape = shape
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def update(self, index: Tensor, values: Tensor) -> None:
        index = torch.as_tensor(index).long().reshape(-1)
        if values.shape[0] != index.shape[0]:
            raise ValueError(f"{index.shape[0]} indices but {values.shape[0]} values")
        self.index.append(index.to(self.device))
        self.values.append(values.detach().double().to(self.device))

    def fill_if_empty(self) -> None:
        """Add an empty block where this worker saw no sample (call before ``compute``)."""
        if not len(self.index) and self.shape is not None:
            self.update(torch.empty(0, dtype=torch.long), torch.empty(0, *self.shape))

    def compute(self) -> Tensor:
        if not len(self.index):
            raise RuntimeError("no per-sample values were added")
        index, values = dim_zero_cat(self.index), dim_zero_cat(self.values)
        if torch.unique(index).numel() != index.numel():
            raise RuntimeError("a sample index was added twice (each sample is evaluated once)")
        return values[torch.argsort(index)].cpu()
