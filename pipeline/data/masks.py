"""Training masks for inpainting fine-tuning (GLIDE Sec. 3.3: random regions erased).

A mask is float [B, 1, H, W] with 1 = keep (known pixel) and 0 = generate. Kinds:

- ``rectangle``: one axis-aligned box of random size (10%-75% of each side) and place.
- ``brush``: 1-4 free-form strokes, each a polyline of 2-6 vertices with a random thickness.
- ``border``: outpainting; one side erased over 15%-45% of the image, or a frame all around.
- ``full``: everything generated (the plain text-to-image case).
- ``none``: nothing generated (the model must reproduce the known image).

All draws come from the ``generator`` passed in, so masks are reproducible for a seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

MASK_KINDS = ("rectangle", "brush", "border", "full", "none")


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """An integer in [low, high]."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def rectangle_mask(size: int, generator: torch.Generator) -> Tensor:
    keep = torch.ones(size, size)
    height = max(1, round(_uniform(generator, 0.1, 0.75) * size))
    width = max(1, round(_uniform(generator, 0.1, 0.75) * size))
    top, left = _randint(generator, 0, size - height), _randint(generator, 0, size - width)
    keep[top : top + height, left : left + width] = 0.0
    return keep


def brush_mask(size: int, generator: torch.Generator) -> Tensor:
    """Free-form strokes: the pixels within a stroke's radius of its polyline are erased."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    erase = torch.zeros(size, size, dtype=torch.bool)
    for _ in range(_randint(generator, 1, 4)):
        radius = _uniform(generator, size / 32, size / 10) + 0.5
        point = (_uniform(generator, 0, size), _uniform(generator, 0, size))
        angle = _uniform(generator, 0, 2 * math.pi)
        for _ in range(_randint(generator, 1, 5)):
            angle += _uniform(generator, -math.pi / 2, math.pi / 2)
            length = _uniform(generator, size / 8, size / 2)
            end = (
                min(max(point[0] + length * math.cos(angle), 0.0), float(size)),
                min(max(point[1] + length * math.sin(angle), 0.0), float(size)),
            )
            erase |= _distance_to_segment(xs, ys, point, end) <= radius
            point = end
    return (~erase).float()


def _distance_to_segment(
    xs: Tensor, ys: Tensor, start: tuple[float, float], end: tuple[float, float]
) -> Tensor:
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    length_sq = dx * dx + dy * dy
    if length_sq == 0:
        return torch.hypot(xs - x0, ys - y0)
    along = (((xs - x0) * dx + (ys - y0) * dy) / length_sq).clamp(0.0, 1.0)
    return torch.hypot(xs - (x0 + along * dx), ys - (y0 + along * dy))


def border_mask(size: int, generator: torch.Generator) -> Tensor:
    """Outpainting: erase a band on one side, or a frame on all four sides."""
    keep = torch.ones(size, size)
    band = max(1, round(_uniform(generator, 0.15, 0.45) * size))
    side = _randint(generator, 0, 4)  # left, right, top, bottom, all around
    if side == 0:
        keep[:, :band] = 0.0
    elif side == 1:
        keep[:, size - band :] = 0.0
    elif side == 2:
        keep[:band, :] = 0.0
    elif side == 3:
        keep[size - band :, :] = 0.0
    else:
        frame = max(1, band // 2)
        keep[:frame, :] = keep[size - frame :, :] = 0.0
        keep[:, :frame] = keep[:, size - frame :] = 0.0
    return keep


def _mask_of_kind(kind: str, size: int, generator: torch.Generator) -> Tensor:
    if kind == "rectangle":
        return rectangle_mask(size, generator)
    if kind == "brush":
        return brush_mask(size, generator)
    if kind == "border":
        return border_mask(size, generator)
    if kind == "full":
        return torch.zeros(size, size)
    if kind == "none":
        return torch.ones(size, size)
    raise ValueError(f"unknown mask kind {kind!r}; expected one of {MASK_KINDS}")


def mask_mix_weights(mix: Mapping[str, float]) -> Tensor:
    """The mix as probabilities over MASK_KINDS (missing kinds 0); errors name a bad entry."""
    unknown = sorted(set(mix) - set(MASK_KINDS))
    if unknown:
        raise ValueError(f"unknown mask kind(s) {unknown}; expected some of {MASK_KINDS}")
    weights = torch.tensor([float(mix.get(kind, 0.0)) for kind in MASK_KINDS])
    if (weights < 0).any() or not math.isfinite(float(weights.sum())) or weights.sum() <= 0:
        raise ValueError(f"mask mix weights must be >= 0 with a positive sum, got {dict(mix)}")
    return weights / weights.sum()


def random_masks(
    batch_size: int, size: int, mix: Mapping[str, float], generator: torch.Generator
) -> tuple[Tensor, list[str]]:
    """``batch_size`` masks float [B, 1, size, size] (1 = keep) and the kind of each."""
    weights = mask_mix_weights(mix)
    picks = torch.multinomial(weights, batch_size, replacement=True, generator=generator)
    kinds = [MASK_KINDS[int(i)] for i in picks]
    masks = torch.stack([_mask_of_kind(kind, size, generator) for kind in kinds])
    return masks[:, None], kinds
