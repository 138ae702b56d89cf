"""InstructPix2Pix's guidance with two scales, one for the image and one for the instruction.

    eps = eps(0, 0) + s_I (eps(I, 0) - eps(0, 0)) + s_T (eps(I, T) - eps(I, 0))

where I is the image to edit (0: dropped, zeros) and T the instruction (0: the empty caption).
The caller builds a tripled batch [(I, T); (I, 0); (0, 0)] of model_kwargs and samples with the
wrapped model: one forward pass per step over 3B, x_t read from the first third. s_I = s_T = 1
gives the fully conditioned model, s_I = s_T = 0 the unconditioned one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

Model = Callable[..., Tensor]


def combine_instruct_output(
    model_output: Tensor, channels: int, image_scale: float, text_scale: float
) -> Tensor:
    """Guided output [B, 2C, H, W] from the tripled output [3B, 2C, H, W] ordered
    [(I, T); (I, 0); (0, 0)]; the variance channels come from the fully conditioned third."""
    if model_output.shape[0] % 3:
        raise ValueError(f"two-scale guidance needs a tripled batch, got {model_output.shape[0]}")
    full, image_only, neither = model_output.chunk(3, dim=0)
    eps_full, eps_image, eps_none = (o[:, :channels] for o in (full, image_only, neither))
    eps = eps_none + image_scale * (eps_image - eps_none) + text_scale * (eps_full - eps_image)
    return torch.cat([eps, full[:, channels:]], dim=1)


def instruct_guidance_model(model: Model, image_scale: float, text_scale: float) -> Model:
    """Wrap ``model`` for two-scale guidance in ONE forward pass per step.

    The returned callable takes x_t [3B, C, H, W] (its first third is used for all three), t [3B]
    and the caller's tripled model_kwargs; it returns the guided output repeated to [3B, 2C, H, W]
    so the sampler keeps its batch (the caller keeps the first third of the samples).
    """

    def guided(x: Tensor, t: Tensor, **model_kwargs: Any) -> Tensor:
        if x.shape[0] % 3:
            raise ValueError(f"two-scale guidance needs a tripled batch, got {x.shape[0]}")
        third = x[: x.shape[0] // 3]
        model_output = model(torch.cat([third, third, third], dim=0), t, **model_kwargs)
        out = combine_instruct_output(model_output, x.shape[1], image_scale, text_scale)
        return torch.cat([out, out, out], dim=0)

    return guided
