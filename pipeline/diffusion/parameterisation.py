"""What the network's first C output channels mean, and an upsampler's residual preconditioning.

prediction_type "epsilon" (GLIDE): the noise. "v" (Salimans & Ho, 2022):
    v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0,
so x0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v: at high noise the network outputs the image,
at low noise the noise, and an error in v moves x0 by at most that error.

low_res_residual (super-resolution models): the diffusion runs over r = x - U, with U the bicubic
upsampling of the model's ``low_res`` input. The forward process of x is unchanged
(x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, so r_t = x_t - sqrt(abar) U); only the network sees
r_t and predicts v of r, which in x's terms is v_x = v_r - sqrt(1 - abar) U. Flat regions, where
the image equals U, then cost the network nothing at any noise level.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

PREDICTION_TYPES = ("epsilon", "v")


def check_parameterisation(prediction_type: str, low_res_residual: bool) -> None:
    """ValueError for an unknown prediction type or a residual over epsilon."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type {prediction_type!r}: expected one of {', '.join(PREDICTION_TYPES)}"
        )
    if low_res_residual and prediction_type != "v":
        raise ValueError("low_res_residual needs prediction_type 'v'")


def low_res_upsampled(low_res: Tensor, size: tuple[int, int], dtype) -> Tensor:
    """U: the low-res image [B, C, h, w] in [-1, 1], bicubic-upsampled to ``size`` and clipped."""
    upsampled = F.interpolate(low_res.to(dtype), size=size, mode="bicubic", align_corners=False)
    return upsampled.clamp(-1.0, 1.0)
