"""Running a super-resolution network on overlapping tiles of the training crop size.

An upsampler trained on random crops (``train_upsampler.crop_size``) normalises its activations
with GroupNorm statistics of a crop; run on the whole image, the statistics are the whole
image's and the output drifts in flat regions (colour casts over whole regions, a frame along
the border: docs/evaluation.md). Applied tile by tile, every network call sees what training
saw. Each network call of the sampler is replaced by calls on ``size x size`` tiles every
``stride`` pixels (the low-res input tiled at the aligned positions), blended with a triangular
window that falls towards each tile's edges (where the network sees zero padding instead of the
image) and normalised by the summed window, so every pixel gets a weighted mean over the tiles
that cover it.

Only the low-noise steps need tiles: there the network sets the fine detail that the casts
spoil, while the high-noise steps set the low frequencies, which tiling leaves as they are
(measured: docs/evaluation.md). ``below_t`` limits tiling to original timesteps below it, so
the high-noise steps cost one whole-image call each (1000: tiles at every step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

Network = Callable[..., Tensor]


@dataclass(frozen=True)
class Tiling:
    """Tiles of ``size`` pixels every ``stride`` pixels (both multiples of the upsampling factor;
    ``size`` 0: the whole image in one call) at original timesteps below ``below_t``."""

    size: int = 0
    stride: int = 8
    below_t: int = 200  # the low-noise steps, where tiles matter (measured)

    def __post_init__(self) -> None:
        if self.size < 0 or self.stride <= 0 or self.below_t < 0:
            raise ValueError(
                f"tile size {self.size} / stride {self.stride} / below_t {self.below_t}: "
                "expected >= 0 / > 0 / >= 0"
            )
        if self.size and self.stride > self.size:
            raise ValueError(f"tile stride {self.stride} leaves gaps between {self.size}-px tiles")

    def wrap(self, network: Network) -> Network:
        """``network`` itself when tiling is off, else the same callable, run tile by tile at the
        timesteps below ``below_t``."""
        if not self.size:
            return network

        def run(x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
            if int(t.max()) >= self.below_t:
                return network(x, t, **kwargs)
            return tiled_forward(network, x, t, self, **kwargs)

        return run


def tile_offsets(image_size: int, tile: Tiling, factor: int) -> list[int]:
    """Tile start positions along one side: every ``stride`` px, the last flush with the edge."""
    if image_size % factor or tile.size % factor or tile.stride % factor:
        raise ValueError(
            f"image {image_size}, tile {tile.size} and stride {tile.stride} must all be multiples "
            f"of the upsampling factor {factor}"
        )
    if tile.size > image_size:
        raise ValueError(f"{tile.size}-px tiles do not fit a {image_size}-px image")
    offsets = list(range(0, image_size - tile.size + 1, tile.stride))
    return offsets if offsets[-1] == image_size - tile.size else [*offsets, image_size - tile.size]


def tile_window(size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """[size, size] weights: a separable triangle, highest at the tile centre, positive at edges."""
    ramp = torch.arange(size, dtype=dtype) + 0.5
    side = torch.minimum(ramp, size - ramp)  # [size]
    return side[:, None] * side[None, :]


def _repeat_batch(value: Any, copies: int) -> Any:
    """A per-image network input (tensor or dict of tensors, batch first) repeated for tiles."""
    if isinstance(value, dict):
        return {key: _repeat_batch(item, copies) for key, item in value.items()}
    return torch.cat([value] * copies) if isinstance(value, Tensor) else value


def _is_image(value: Any, size: int) -> bool:
    """A spatial network input at the full resolution (tiled like x)."""
    return isinstance(value, Tensor) and value.ndim == 4 and tuple(value.shape[-2:]) == (size,) * 2


def _tile_row(image: Tensor, top: int, offsets: list[int], size: int, scale: int = 1) -> Tensor:
    """The tiles of ``image`` [B, C, H/scale, W/scale] whose full-resolution rows start at
    ``top``, one per offset, batched: [len(offsets) * B, C, size/scale, size/scale]."""
    side, y = size // scale, top // scale
    return torch.cat(
        [image[..., y : y + side, left // scale : left // scale + side] for left in offsets]
    )


def tiled_forward(
    network: Network, x: Tensor, t: Tensor, tile: Tiling, *, low_res: Tensor, **kwargs: Any
) -> Tensor:
    """``network(x [B, C, H, W], t [B], low_res=[B, C, h, w], **kwargs)`` computed on tiles and
    blended: [B, C_out, H, W]. Other full-resolution image inputs (an inpainting upsampler's
    ``inpaint_image``, ``inpaint_mask``) are tiled with x; per-image inputs are repeated. The
    tiles of one row go through the network as one batch."""
    batch, _, height, width = x.shape
    if height != width or height % low_res.shape[-1]:
        raise ValueError(
            f"tiling needs square images; got {height}x{width}, low-res {low_res.shape}"
        )
    factor = height // low_res.shape[-1]
    offsets = tile_offsets(height, tile, factor)
    window = tile_window(tile.size, x.dtype).to(x.device)
    out, norm = None, torch.zeros(height, width, dtype=x.dtype, device=x.device)
    full_res = {k: v for k, v in kwargs.items() if _is_image(v, height)}  # e.g. inpaint_image
    per_image = {k: _repeat_batch(v, len(offsets)) for k, v in kwargs.items() if k not in full_res}
    times = torch.cat([t] * len(offsets))
    for top in offsets:
        tiled = {
            name: _tile_row(image, top, offsets, tile.size) for name, image in full_res.items()
        }
        outputs = network(
            _tile_row(x, top, offsets, tile.size),
            times,
            low_res=_tile_row(low_res, top, offsets, tile.size, factor),
            **tiled,
            **per_image,
        )
        if out is None:
            out = x.new_zeros(batch, outputs.shape[1], height, width)
        for index, left in enumerate(offsets):
            part = outputs[index * batch : (index + 1) * batch]
            out[..., top : top + tile.size, left : left + tile.size] += part * window
            norm[top : top + tile.size, left : left + tile.size] += window
    return out / norm
