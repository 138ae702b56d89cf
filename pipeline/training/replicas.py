"""What differs and what must agree between data-parallel workers.

Differs: each worker's random draws (diffusion timesteps, noise, caption drop, dropout). Every
worker starts from the same seed (Lightning re-seeds them all alike), which would give every
worker the same draws for its different images; :class:`RankRandomness` gives worker ``r`` its
own stream (:func:`rank_seed`; worker 0 keeps the run's seed, so a one-worker run is unchanged)
and saves every worker's random state in the checkpoints, so a resumed run continues each stream.

Agrees: the weights. Data-parallel workers apply the same averaged gradients to the same weights;
:func:`check_replicas` compares them at the end of a run and fails the stage if they differ.
"""

from __future__ import annotations

import hashlib
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

RNG_KEY = "rank_rng"


def rank_seed(seed: int, rank: int) -> int:
    """The seed of worker ``rank``'s random stream: ``seed`` for rank 0, a different one for
    every other rank (and every seed)."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1)[0])


def _gather_objects(value: Any) -> list[Any]:
    world = torch.distributed.get_world_size()
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class RankRandomness(pl.Callback):
    """Give each worker its own random stream, and keep every worker's state in checkpoints."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.world_size > 1 and trainer.ckpt_path is None:  # resumed: state restored
            torch.manual_seed(rank_seed(self.seed, trainer.global_rank))

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: Any, checkpoint: dict) -> None:
        if not _distributed():
            return
        cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() else torch.empty(0)
        states = _gather_objects((torch.get_rng_state(), cuda))  # every worker takes part
        checkpoint[RNG_KEY] = {"cpu": [s[0] for s in states], "cuda": [s[1] for s in states]}

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: Any, checkpoint: dict) -> None:
        states = checkpoint.get(RNG_KEY)
        if not states or len(states["cpu"]) != trainer.world_size:
            return
        rank = trainer.global_rank
        torch.set_rng_state(states["cpu"][rank])
        if torch.cuda.is_available() and states["cuda"][rank].numel():
            torch.cuda.set_rng_state(states["cuda"][rank])


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names and bytes of ``tensors``."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_replicas(tensors: dict[str, torch.Tensor], stage: str) -> int:
    """Compare the weights (``tensors``: whole, not sharded) of every worker; raise if any
    differ; return how many workers agreed (1 without a process group). Every worker calls it."""
    if not _distributed():
        return 1
    digests = _gather_objects(weights_digest(tensors))
    if len(set(digests)) != 1:
        raise RuntimeError(
            f"{stage}: the {len(digests)} data-parallel workers ended with different weights "
            f"(digests {sorted(set(digests))}); the run is not a valid data-parallel run"
        )
    return len(digests)


def count_nodes(node_id: str) -> int:
    """How many distinct nodes the workers run on (each gives its own ``node_id``)."""
    if not _distributed():
        return 1
    return len(set(_gather_objects(node_id)))
