"""A few held-out samples read directly from the shards: sources for editing grids, metrics."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.data.manifest import read_manifest, split_shards
from pipeline.data.shard_reader import iter_shard_samples


def held_out_examples(
    shard_dir: str | os.PathLike[str],
    count: int,
    *,
    split: str = "val",
    images: Sequence[str] = ("base",),
    manifest: dict[str, Any] | None = None,
    with_meta: bool = False,
) -> list[dict[str, Any]]:
    """The first ``count`` samples of ``split`` in shard order: ``{"key", "caption", <image>:
    uint8 HWC}`` (plus ``"meta"``, the sample's JSON, with ``with_meta``). Fewer when the split
    is smaller; a corrupt sample raises CorruptShardError."""
    manifest = manifest if manifest is not None else read_manifest(shard_dir)
    found: list[dict[str, Any]] = []
    for shard in split_shards(manifest, split):
        if len(found) >= count:
            break
        path = Path(shard_dir) / shard["path"]
        for sample in iter_shard_samples(
            path, images=images, expected_samples=int(shard["num_samples"]), with_meta=with_meta
        ):
            found.append(sample)
            if len(found) >= count:
                break
    return found
