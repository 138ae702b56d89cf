import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from pipeline.diffusion import (
    approx_standard_normal_cdf,
    discretized_gaussian_log_likelihood,
    mean_flat,
    normal_kl,
)


def test_normal_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    m1, m2, lv1, lv2 = torch.randn(4, 100, generator=g, dtype=torch.float64)
    expected = kl_divergence(Normal(m1, (0.5 * lv1).exp()), Normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), expected)


def test_approx_cdf_is_close_to_exact_cdf():
    x = torch.linspace(-6, 6, 2001, dtype=torch.float64)
    exact = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    assert (approx_standard_normal_cdf(x) - exact).abs().max() < 5e-4


def test_discretized_likelihood_is_a_distribution_over_256_bins():
    bins = torch.linspace(-1, 1, 256, dtype=torch.float64)  # the 8-bit grid on [-1, 1]
    for mean, log_scale in [(0.0, math.log(0.1)), (0.9, math.log(0.02)), (-0.3, math.log(1.5))]:
        logp = discretized_gaussian_log_likelihood(
            bins,
            torch.tensor(mean, dtype=torch.float64),
            torch.tensor(log_scale, dtype=torch.float64),
        )
        assert logp.exp().sum().item() == pytest.approx(1.0, rel=1e-6)


def test_discretized_likelihood_matches_exact_bin_probability():
    bins = torch.linspace(-1, 1, 256, dtype=torch.float64)
    mean, scale = torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    normal = Normal(mean, scale)
    upper = torch.where(
        bins > 0.999, torch.tensor(1.0, dtype=torch.float64), normal.cdf(bins + 1 / 255)
    )
    lower = torch.where(
        bins < -0.999, torch.tensor(0.0, dtype=torch.float64), normal.cdf(bins - 1 / 255)
    )
    exact = upper - lower  # edge bins extend to -inf / +inf
    approx = discretized_gaussian_log_likelihood(bins, mean, scale.log()).exp()
    torch.testing.assert_close(approx, exact, atol=5e-4, rtol=0)


def test_mean_flat_reduces_all_but_batch():
    x = torch.arange(24.0).reshape(2, 3, 4)
    torch.testing.assert_close(mean_flat(x), torch.stack([x[0].mean(), x[1].mean()]))
