"""Lightning checkpoint I/O that writes atomically and loads with ``weights_only=True``.

A stage killed while saving leaves the previous ``last.ckpt`` intact; a checkpoint holding
arbitrary pickled objects is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from pipeline.io import atomic_output_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO with temp-file-and-rename saves and weights-only loads."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any = None
    ) -> None:
        with atomic_output_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(
        self,
        path: str | os.PathLike[str],
        map_location: Any = None,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        return torch.load(Path(path), map_location=map_location or "cpu", weights_only=True)
