"""Which conditions an instruction-editing training example loses (InstructPix2Pix Sec. 3.4):
the image to edit alone, the instruction alone, or both, each with its own probability, so that
both guidance directions of :mod:`pipeline.diffusion.instruct_guidance` can be estimated."""

from __future__ import annotations

import torch
from torch import Tensor


def condition_drops(
    batch_size: int,
    image_only: float,
    text_only: float,
    both: float,
    *,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """(drop_image, drop_text), bool [B] each: one uniform draw per example falls in the image
    band, the text band, the both band or none (the paper: 5% each)."""
    if min(image_only, text_only, both) < 0 or image_only + text_only + both > 1:
        raise ValueError(
            f"drop probabilities must be >= 0 and sum to at most 1, got image {image_only}, "
            f"text {text_only}, both {both}"
        )
    u = torch.rand(batch_size, device=device, generator=generator)
    image_band = u < image_only
    text_band = (u >= image_only) & (u < image_only + text_only)
    both_band = (u >= image_only + text_only) & (u < image_only + text_only + both)
    return image_band | both_band, text_band | both_band
