"""Skip training steps whose loss is NaN or infinite; stop after too many in a row.

Deciding on the host whether to skip needs the loss's value there: a host sync in every step,
which on a GPU stalls the CPU until the forward pass has finished. The fused AdamW can skip its
own update on the device instead (its ``found_inf`` input, as the grad scaler uses it: weights,
moments and step count stay as they were), so with that optimizer the guard never waits: the
counts reach the host through an asynchronous copy, exact on a CPU and a step or two late on a
GPU. Other optimizers (FSDP's sharded parameters, 16-mixed's grad scaler) take the host sync.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class NonFiniteLossError(RuntimeError):
    """Raised after too many consecutive steps with a NaN or infinite loss."""


class NonFiniteGuard:
    """Counts non-finite steps (``total``, ``in_a_row``) and raises past ``limit`` in a row.

    ``what`` names the steps in the error ("steps", "CLIP steps")."""

    def __init__(self, limit: int, what: str = "steps") -> None:
        self.limit = int(limit)
        self.what = what
        self.total = 0
        self.in_a_row = 0
        self._counts: Tensor | None = None  # on the device: [total, run, longest run]
        self._host: _LaggedHostCopy | None = None

    def keep_step(self, finite: Tensor, optimizer: Any, scaled: bool, step: int) -> bool:
        """Whether the caller should return its loss (True) or skip the step (False).

        ``finite``: bool scalar, the same on every rank. With an optimizer that skips on the
        device, always True: a non-finite step's update is cancelled inside the optimizer.
        """
        if _skips_on_device(optimizer, scaled):
            self._count_on_device(~finite, optimizer, step)
            return True
        optimizer.found_inf = None
        if bool(finite):  # host sync
            self.in_a_row = 0
            return True
        self.total += 1
        self.in_a_row += 1
        self._raise_past_limit(self.in_a_row, step)
        return False

    def _count_on_device(self, bad: Tensor, optimizer: Any, step: int) -> None:
        optimizer.found_inf = bad.float()  # the fused AdamW leaves everything as it was
        if self._counts is None or self._counts.device != bad.device:
            start = [self.total, self.in_a_row, self.in_a_row]
            self._counts = torch.tensor(start, dtype=torch.long, device=bad.device)
            self._host = _LaggedHostCopy(self._counts)
        counts, bad = self._counts, bad.long()
        counts[0] += bad
        counts[1] = (counts[1] + 1) * bad
        counts[2] = torch.maximum(counts[2], counts[1])
        total, run, longest = self._host.read(counts)
        self.total, self.in_a_row = total, run
        self._raise_past_limit(longest, step)

    def device_total(self) -> Tensor | float:
        """The count of non-finite steps, as a tensor when it lives on the device (to log it
        without a host sync)."""
        return self._counts[0].float() if self._counts is not None else float(self.total)

    def _raise_past_limit(self, run: int, step: int) -> None:
        if run >= self.limit:
            raise NonFiniteLossError(
                f"{run} consecutive {self.what} had a NaN/inf loss (limit {self.limit}, "
                f"{self.total} in total, at step {step}): lower the learning rate, check the "
                "data, or raise max_consecutive_nonfinite"
            )

    def state_dict(self) -> dict[str, int]:
        if self._counts is not None:  # exact, at a checkpoint (a rare host sync)
            self.total, self.in_a_row = (int(v) for v in self._counts[:2].tolist())
        return {"nonfinite_total": self.total, "nonfinite_in_a_row": self.in_a_row}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total = int(state["nonfinite_total"])
        self.in_a_row = int(state["nonfinite_in_a_row"])
        self._counts = self._host = None


class SkipsNonFiniteSteps:
    """LightningModule mixin: the one place where a training step's NaN/inf loss is handled.

    The module creates ``self.nonfinite`` (a :class:`NonFiniteGuard`) and asks
    :meth:`keep_finite_step` whether to return its loss. Put it before ``pl.LightningModule`` in
    the bases."""

    nonfinite: NonFiniteGuard

    def keep_finite_step(self, loss: Tensor) -> bool:
        """Whether the training step returns ``loss`` (True) or is skipped (False); the loss
        counts as finite only where it is finite on every rank."""
        finite = torch.isfinite(loss)
        if self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce(finite.float(), reduce_op="min") > 0
        optimizer = self.optimizers(use_pl_optimizer=False)
        scaled = getattr(self.trainer.precision_plugin, "scaler", None) is not None
        return self.nonfinite.keep_step(finite, optimizer, scaled, int(self.global_step))

    @property
    def nonfinite_total(self) -> int:
        """Steps skipped so far for a NaN/inf loss (exact: may wait for the device)."""
        return self.nonfinite.state_dict()["nonfinite_total"]


def _skips_on_device(optimizer: Any, scaled: bool) -> bool:
    return bool(getattr(optimizer, "defaults", {}).get("fused")) and not scaled


class _LaggedHostCopy:
    """The newest values of a small device tensor that have reached the host, without waiting.

    On a CPU the tensor itself is read. On a GPU each ``read`` starts a copy into pinned memory
    once the previous one has landed, and returns the values of the last copy that landed."""

    def __init__(self, like: Tensor) -> None:
        self.on_cpu = like.device.type == "cpu"
        self.values = like.tolist()
        if not self.on_cpu:
            self.buffer = torch.empty(like.shape, dtype=like.dtype, pin_memory=True)
            self.event: torch.cuda.Event | None = None

    def read(self, tensor: Tensor) -> list[int]:
        if self.on_cpu:
            return tensor.tolist()
        if self.event is None or self.event.query():
            if self.event is not None:
                self.values = self.buffer.tolist()
            self.buffer.copy_(tensor, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        return self.values
