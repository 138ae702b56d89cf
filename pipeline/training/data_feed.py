"""The training streams the Lightning workers iterate, and where a resumed run starts in them.

Data parallelism. A stage's ``batch_size`` is the global batch (GLIDE's 2048 is global): each of
``num_workers`` workers takes ``batch_size // num_workers`` samples per optimizer step from its
own stream (part ``rank`` of every seeded epoch, see ``pipeline.data.train_input``), so the
workers of a step read different samples, and each worker's sequence of batches is fixed by the
seed and the number of workers. Gradients are averaged over the workers, so a step is one step
on the global batch: the learning rate, warm-up and schedule (in optimizer steps) are those of
the global batch and do not change with the number of workers.

Training counts steps, not epochs: the driver builds, for each worker, one Ray Dataset that chains
as many epochs as the run needs (``training_dataset(..., num_epochs=n)``). A resumed run starts
every stream after the samples the checkpoint's steps consumed (:func:`stream_window`), so each
worker sees exactly the batches it would have seen without the interruption.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from pipeline.data.train_input import part_size, resume_position


def checkpoint_step(path: str | Path) -> int:
    """The optimizer step a Lightning checkpoint was saved at (0 if there is none).

    Memory-mapped: the weights are not read.
    """
    where = Path(path)
    if not where.exists():
        return 0
    state = torch.load(where, map_location="cpu", weights_only=True, mmap=True)
    return int(state["global_step"])


def stream_name(rank: int) -> str:
    """The Ray Train dataset name of worker ``rank``'s stream."""
    return f"train_rank{int(rank)}"


def epochs_needed(first_sample: int, max_steps: int, batch: int, epoch_size: int) -> int:
    """How many epochs of ``epoch_size`` samples, starting with the one holding
    ``first_sample``, cover ``max_steps`` batches of ``batch`` samples."""
    if epoch_size < batch:
        raise ValueError(
            f"an epoch holds {epoch_size} samples per worker, fewer than one batch per worker "
            f"({batch}): make more data, or lower batch_size or num_workers"
        )
    last_sample = max_steps * batch  # exclusive
    first_epoch = first_sample // epoch_size
    return max(1, math.ceil(last_sample / epoch_size) - first_epoch) + 1


def stream_window(
    first_sample: int, max_steps: int, batch: int, epoch_size: int, world_size: int
) -> dict[str, int]:
    """Where one worker's stream starts and how long it runs, as ``training_dataset`` keywords
    (``epoch``, ``skip_samples``, ``num_epochs``, ``world_size``).

    ``first_sample``: samples this worker consumed before (``resumed_step * batch``); ``batch``:
    its per-step share of the global batch; ``epoch_size``: samples in the whole split.
    """
    part = part_size(epoch_size, world_size)
    num_epochs = epochs_needed(first_sample, max_steps, batch, part)
    epoch, skip = resume_position(first_sample, part)
    return {
        "epoch": epoch,
        "skip_samples": skip,
        "num_epochs": num_epochs,
        "world_size": world_size,
    }


def ingest_options(buffer_mb: int, cpus: int) -> Any:
    """Ray Data options for one worker's training stream: fixed order, a bounded read-ahead and
    at most ``cpus`` CPUs (its share of the cluster's CPUs beside the workers, so that no
    stream can take the CPUs another one needs).

    Without a bound the stream reads far ahead of a slow (CPU) trainer, fills the object store
    and spills; the executor thread then competes with training for the CPU and the GIL
    (measured on 2 cores, mini: 24 img/s fell to 7 img/s once spilling began).
    """
    from ray.data import ExecutionOptions, ExecutionResources

    return ExecutionOptions(
        resource_limits=ExecutionResources(cpu=cpus, object_store_memory=buffer_mb * 2**20),
        preserve_order=True,
        verbose_progress=False,
    )


class InputStarvedError(RuntimeError):
    """No training batch arrived within the time limit."""


class StepFeed:
    """Batches of ``batch_size`` rows from a Ray Train dataset shard, with clear errors if the
    stream runs dry before ``max_steps`` (Lightning would otherwise stop early, silently) or if no
    batch arrives within ``timeout_s`` seconds (``starved_hint`` says what to change).

    A background thread reads the stream, so a starved input pipeline ends in an error instead of
    a wait without end.
    """

    def __init__(
        self, shard: Any, batch_size: int, timeout_s: float, starved_hint: str = ""
    ) -> None:
        self.shard = shard
        self.batch_size = int(batch_size)
        self.timeout_s = float(timeout_s)
        self.starved_hint = starved_hint

    def _produce(self, out: queue.Queue, stop: threading.Event) -> None:
        def put(item: tuple[str, Any]) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.5)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            batches = self.shard.iter_torch_batches(batch_size=self.batch_size, drop_last=True)
            for batch in batches:
                if not put(("batch", batch)):
                    return
            put(("end", None))
        except BaseException as error:  # handed to the training thread, which raises it
            put(("error", error))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        out: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()
        reader = threading.Thread(target=self._produce, args=(out, stop), daemon=True)
        reader.start()
        try:
            while True:
                try:
                    kind, item = out.get(timeout=self.timeout_s)
                except queue.Empty:
                    raise InputStarvedError(
                        f"no training batch arrived within {self.timeout_s:g} s "
                        f"(ray.resource_timeout_s): the input pipeline is starved or stuck. "
                        f"{self.starved_hint}"
                    ) from None
                if kind == "batch":
                    yield item
                elif kind == "error":
                    raise item
                else:
                    raise RuntimeError(
                        "the training stream ended before max_steps: too few epochs planned"
                    )
        finally:
            stop.set()
