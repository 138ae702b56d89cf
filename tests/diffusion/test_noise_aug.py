"""Noise conditioning augmentation of the low-res input (Imagen): level 0 = clean."""

import pytest
import torch

from pipeline.diffusion import create_diffusion
from pipeline.diffusion.noise_aug import noise_augment, random_levels


def test_levels_follow_the_forward_process():
    diffusion = create_diffusion(1000, "linear")
    low = torch.full((3, 3, 64, 64), 0.5)
    out = noise_augment(diffusion, low, torch.tensor([0, 1, 600]), torch.Generator().manual_seed(0))
    assert torch.equal(out[0], low[0])  # level 0: unchanged
    for row, level in ((1, 1), (2, 600)):
        alpha_bar = float(diffusion.alphas_cumprod[level - 1])
        assert out[row].mean() == pytest.approx(0.5 * alpha_bar**0.5, abs=0.02)
        assert out[row].std() == pytest.approx((1 - alpha_bar) ** 0.5, rel=0.05)
    again = noise_augment(
        diffusion, low, torch.tensor([0, 1, 600]), torch.Generator().manual_seed(0)
    )
    assert torch.equal(out, again)


def test_bad_levels_are_refused():
    diffusion = create_diffusion(1000, "linear")
    low = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"in \[0, 1000\]"):
        noise_augment(diffusion, low, torch.tensor([0, 1001]))
    with pytest.raises(ValueError, match="levels must be"):
        noise_augment(diffusion, low, torch.tensor([0]))
    levels = random_levels(4000, 250, "cpu", torch.Generator().manual_seed(0))
    assert int(levels.min()) == 0 and int(levels.max()) == 250
