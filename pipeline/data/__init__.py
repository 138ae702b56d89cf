"""Data layer: synthetic scenes, input sources, sharding on Ray Data, the training input pipeline.

Importing this package is cheap: nothing heavy (Ray, torch, PIL) is imported until a function is
used. The main entry points, importable from here lazily:

- :func:`build_shards` (``pipeline.data.sharding``): the ``shard`` stage's library function;
- :func:`read_manifest` (``pipeline.data.manifest``): load and verify a shard folder's manifest;
- :func:`iter_shard_samples` (``pipeline.data.shard_reader``): read one shard safely;
- :func:`training_dataset`, :func:`tokenize_captions`, :func:`collate_to_torch`
  (``pipeline.data.train_input``): shards -> a deterministic Ray Dataset of training rows;
- :func:`init_ray` (``pipeline.data.ray_session``): start or join Ray once, deterministic Ray Data.

Modules: ``synthetic_scenes``, ``image_prep`` (one sample: decode, validate, resize), ``sources``
(enumerate folder / img2dataset inputs), ``tar_members`` (safe tar member names),
``shard_tasks`` (the Ray Data worker functions), ``splits``, ``shard_writer``, ``manifest``,
``sharding``, ``shard_reader``, ``train_input``, ``ray_session``.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "build_shards": "pipeline.data.sharding",
    "ShardingError": "pipeline.data.sharding",
    "read_manifest": "pipeline.data.manifest",
    "ManifestError": "pipeline.data.manifest",
    "iter_shard_samples": "pipeline.data.shard_reader",
    "CorruptShardError": "pipeline.data.shard_reader",
    "training_dataset": "pipeline.data.train_input",
    "tokenize_captions": "pipeline.data.train_input",
    "collate_to_torch": "pipeline.data.train_input",
    "init_ray": "pipeline.data.ray_session",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
