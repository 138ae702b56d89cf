import pytest
import torch

from pipeline.diffusion import apply_threshold, dynamic_threshold, static_threshold


def test_static_threshold_clips_to_unit_range():
    x = torch.tensor([-3.0, -0.5, 0.0, 0.9, 2.0])
    torch.testing.assert_close(static_threshold(x), torch.tensor([-1.0, -0.5, 0.0, 0.9, 1.0]))


def test_dynamic_threshold_rescales_each_sample_by_its_percentile():
    g = torch.Generator().manual_seed(0)
    big = torch.randn(1, 3, 8, 8, generator=g) * 4  # p-th percentile of |x| well above 1
    small = torch.rand(1, 3, 8, 8, generator=g) * 1.6 - 0.8  # already within [-1, 1]
    x = torch.cat([big, small])
    out = dynamic_threshold(x, 0.9)

    s = torch.quantile(big.abs().flatten(), 0.9)
    assert s > 1
    torch.testing.assert_close(out[0], big[0].clamp(-s, s) / s)
    assert out[0].abs().max().item() == pytest.approx(1.0)
    inside = big[0].abs() < s
    torch.testing.assert_close(out[0][inside], big[0][inside] / s)  # interior scaled, not clipped
    torch.testing.assert_close(out[1], small[0])  # s = max(s, 1) = 1: unchanged


def test_dynamic_threshold_rejects_bad_percentile():
    with pytest.raises(ValueError, match="percentile"):
        dynamic_threshold(torch.zeros(1, 3), 1.5)


def test_apply_threshold_prefers_dynamic_then_static():
    x = torch.tensor([[-4.0, 0.5, 2.0, 4.0]])
    torch.testing.assert_close(apply_threshold(x, False, None), x)
    torch.testing.assert_close(apply_threshold(x, True, None), static_threshold(x))
    torch.testing.assert_close(apply_threshold(x, False, 1.0), x / 4)
