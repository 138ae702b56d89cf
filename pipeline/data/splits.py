"""Deterministic train/val assignment.

- ``synthetic``: a fixed index range. The last ``n_val`` indices are validation, with
  ``n_val = round(num_samples * val_fraction)`` (at least 1 when ``val_fraction > 0`` and there
  are at least two samples), so the validation size is exact.
- ``folder`` / ``webdataset``: a hash of ``(seed, source)`` against ``val_fraction``, where
  ``source`` is the input's name relative to the input root. A given input always lands in the
  same split, whatever the other inputs, the order of listing or the parallelism.
"""

from __future__ import annotations

import hashlib

TRAIN = "train"
VAL = "val"
SPLITS = (TRAIN, VAL)


def hash_fraction(seed: int, source: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, source)."""
    digest = hashlib.sha256(f"{seed}\x00{source}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def synthetic_val_count(num_samples: int, val_fraction: float) -> int:
    if val_fraction <= 0 or num_samples < 2:
        return 0
    return min(num_samples - 1, max(1, round(num_samples * val_fraction)))


def synthetic_split(index: int, num_samples: int, val_fraction: float) -> str:
    return VAL if index >= num_samples - synthetic_val_count(num_samples, val_fraction) else TRAIN


def hashed_split(seed: int, source: str, val_fraction: float) -> str:
    return VAL if hash_fraction(seed, source) < val_fraction else TRAIN
