"""Likelihood helpers for the variational-bound term of the hybrid loss (improved DDPM).

All functions broadcast their tensor arguments; natural-log units (nats) unless noted.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Half-width of one 8-bit bin when [0, 255] is mapped to [-1, 1].
HALF_BIN = 1.0 / 255.0

#: Values of x at or beyond these edges use the open-ended edge bins.
_EDGE = 0.999
_LOG_EPS = 1e-12


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension except the first: [B, ...] -> [B]."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    """Fast tanh approximation of the standard normal CDF (max abs error about 3e-4)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """Log-likelihood of 8-bit data under a Gaussian discretised into 256 bins on [-1, 1].

    x: data in [-1, 1] lying on the 8-bit grid, shape [B, ...].
    means, log_scales: Gaussian mean and log standard deviation, broadcastable to x.
    Returns the elementwise log-probability (nats) of the bin holding each x; the first and last
    bins extend to -inf and +inf.
    """
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + HALF_BIN))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - HALF_BIN))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=_LOG_EPS))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=_LOG_EPS))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=_LOG_EPS))
    return torch.where(
        x < -_EDGE,
        log_cdf_plus,
        torch.where(x > _EDGE, log_one_minus_cdf_min, log_cdf_delta),
    )
