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

sigma_data (v only): the standard deviation of the data the diffusion runs over. Plain v assumes
1; the bicubic residual's is ~0.1, so r_t's scale falls from 1 to ~0.1 as the noise goes and at
middle noise levels the network has to cancel the noise in r_t exactly to say "no detail here".
Karras et al. (2022)'s preconditioning fixes both: with s^2 = 1 - abar and D^2 = s^2 + abar
sigma_data^2 (r_t's variance), the network sees r_t / D and its output F gives
    v = sqrt(abar) s (1 - sigma_data^2) / D^2 * r_t + sigma_data / D * F,
i.e. x0 = sqrt(abar) sigma_data^2 / D^2 * r_t - s sigma_data / D * F: F = 0 is the Wiener
estimate of the residual, and at sigma_data = 1 this is plain v. Training then weighs the v
error by 1 / c_out^2 = D^2 / sigma_data^2 (gaussian_diffusion.training_losses), so F's target
has unit variance at every noise level.
"""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from torch import Tensor

PREDICTION_TYPES = ("epsilon", "v")


def check_parameterisation(
    prediction_type: str, low_res_residual: bool, sigma_data: float = 1.0
) -> None:
    """ValueError for an unknown prediction type, a residual over epsilon or a bad sigma_data."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type {prediction_type!r}: expected one of {', '.join(PREDICTION_TYPES)}"
        )
    if low_res_residual and prediction_type != "v":
        raise ValueError("low_res_residual needs prediction_type 'v'")
    if not 0.0 < sigma_data <= 1.0:
        raise ValueError(f"sigma_data {sigma_data}: expected a value in (0, 1]")
    if sigma_data != 1.0 and prediction_type != "v":
        raise ValueError("sigma_data other than 1 needs prediction_type 'v'")


def scaled_v_coefficients(
    alphas_cumprod: np.ndarray, sigma_data: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step (input scale 1/D, skip coefficient, output scale sigma_data/D) of the
    preconditioned v above, float64 arrays [T]."""
    noise_variance = 1.0 - alphas_cumprod
    data_variance = sigma_data**2
    total = noise_variance + alphas_cumprod * data_variance  # D^2
    skip = np.sqrt(alphas_cumprod * noise_variance) * (1.0 - data_variance) / total
    return 1.0 / np.sqrt(total), skip, sigma_data / np.sqrt(total)


def low_res_upsampled(low_res: Tensor, size: tuple[int, int], dtype) -> Tensor:
    """U: the low-res image [B, C, h, w] in [-1, 1], bicubic-upsampled to ``size`` and clipped."""
    upsampled = F.interpolate(low_res.to(dtype), size=size, mode="bicubic", align_corners=False)
    return upsampled.clamp(-1.0, 1.0)
