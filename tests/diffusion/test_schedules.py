import math

import numpy as np
import pytest

from pipeline.diffusion import get_named_beta_schedule


def _cosine_alpha_bar(t: float) -> float:
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


@pytest.mark.parametrize("steps", [1000, 50])
def test_cosine_schedule_follows_alpha_bar_closed_form(steps):
    betas = get_named_beta_schedule("squaredcos_cap_v2", steps)
    assert betas.dtype == np.float64 and betas.shape == (steps,)
    cumulative = np.cumprod(1.0 - betas)
    expected = np.array(
        [_cosine_alpha_bar((i + 1) / steps) / _cosine_alpha_bar(0.0) for i in range(steps)]
    )
    unclipped = betas < 0.999
    first_clipped = np.argmin(unclipped) if not unclipped.all() else steps
    np.testing.assert_allclose(cumulative[:first_clipped], expected[:first_clipped], rtol=1e-10)


def test_cosine_schedule_clips_betas_at_0_999():
    betas = get_named_beta_schedule("squaredcos_cap_v2", 1000)
    assert betas.max() == pytest.approx(0.999, abs=0)
    assert betas[-1] == 0.999  # alpha_bar(1) = cos^2(pi/2) = 0 would give beta = 1
    assert (betas > 0).all()
    assert (np.diff(betas) >= 0).all()


@pytest.mark.parametrize(("steps", "first", "last"), [(1000, 1e-4, 0.02), (500, 2e-4, 0.04)])
def test_linear_schedule_endpoints_scale_with_steps(steps, first, last):
    betas = get_named_beta_schedule("linear", steps)
    assert betas.dtype == np.float64 and betas.shape == (steps,)
    assert betas[0] == pytest.approx(first, rel=1e-12)
    assert betas[-1] == pytest.approx(last, rel=1e-12)
    np.testing.assert_allclose(np.diff(betas), (last - first) / (steps - 1), rtol=1e-9)


def test_unknown_schedule_is_named_in_the_error():
    with pytest.raises(ValueError, match="cosine_v9"):
        get_named_beta_schedule("cosine_v9", 1000)
