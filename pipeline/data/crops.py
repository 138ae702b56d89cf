"""Aligned random crops of the cascade pair (high-res image, its low-res version) for training
super-resolution models on crops, as cascaded diffusion models do to save compute.

The low-res image of a shard sample is the area (box) average of the high-res one over
``scale x scale`` blocks (pipeline/data/image_prep.py). A crop whose offset is a multiple of
``scale`` therefore has, as its low-res crop, exactly the box-downsampled high-res crop: the two
crops show the same region. Offsets are drawn on the low-res pixel grid from a generator the
caller seeds (e.g. by seed, epoch, shard and sample index), so a resumed run draws the crops an
uninterrupted run would have drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def scale_factor(high: np.ndarray, low: np.ndarray) -> int:
    """The integer factor between a square high-res image [H, H, C] and its low-res [h, h, C]."""
    if high.shape[0] != high.shape[1] or low.shape[0] != low.shape[1]:
        raise ValueError(f"expected square images, got {high.shape} and {low.shape}")
    if high.shape[0] % low.shape[0]:
        raise ValueError(
            f"high-res size {high.shape[0]} is not a multiple of low-res size {low.shape[0]}"
        )
    return high.shape[0] // low.shape[0]


def crop_pair(
    high: np.ndarray, low: np.ndarray, crop_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random ``crop_size`` crop of ``high`` [H, H, C] and the matching crop of ``low``.

    ``crop_size`` 0 (or the full size) returns both images unchanged. The offset is a multiple
    of the scale factor, drawn uniformly over the positions on the low-res grid.
    """
    scale = scale_factor(high, low)
    size = high.shape[0]
    if crop_size in (0, size):
        return high, low
    if not 0 < crop_size <= size or crop_size % scale:
        raise ValueError(
            f"crop_size {crop_size} must be a multiple of the scale factor {scale} in (0, {size}]"
        )
    low_crop = crop_size // scale
    y, x = (int(v) for v in rng.integers(0, low.shape[0] - low_crop + 1, size=2))
    high_out = high[y * scale : y * scale + crop_size, x * scale : x * scale + crop_size]
    low_out = low[y : y + low_crop, x : x + low_crop]
    return np.ascontiguousarray(high_out), np.ascontiguousarray(low_out)


def crop_row(
    row: dict[str, Any],
    image_key: str,
    low_res_key: str,
    crop_size: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """A decoded shard sample -> a training row whose ``image_key`` and ``low_res_key`` images
    are an aligned crop pair; other fields are kept."""
    high, low = crop_pair(row[image_key], row[low_res_key], crop_size, rng)
    return {**row, image_key: high, low_res_key: low}
