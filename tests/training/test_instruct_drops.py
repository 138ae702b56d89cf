"""Instruction-editing condition drops: the three bands at their rates, never overlapping."""

import pytest
import torch

from pipeline.training.instruct_drops import condition_drops


def test_each_band_at_its_rate_and_the_rest_keep_both():
    generator = torch.Generator().manual_seed(0)
    drop_image, drop_text = condition_drops(200_000, 0.05, 0.05, 0.05, generator=generator)
    both = drop_image & drop_text
    rates = [
        float(m.float().mean()) for m in (drop_image & ~drop_text, drop_text & ~drop_image, both)
    ]
    assert rates == pytest.approx([0.05, 0.05, 0.05], abs=0.003)
    assert float((~drop_image & ~drop_text).float().mean()) == pytest.approx(0.85, abs=0.003)


def test_zero_probabilities_keep_every_condition_and_bad_ones_are_refused():
    drop_image, drop_text = condition_drops(64, 0.0, 0.0, 0.0)
    assert not drop_image.any() and not drop_text.any()
    with pytest.raises(ValueError, match="sum to at most 1"):
        condition_drops(4, 0.5, 0.4, 0.2)
