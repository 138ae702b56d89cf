"""Two-scale (image, instruction) guidance: its limits and its single forward pass."""

import pytest
import torch

from pipeline.diffusion.instruct_guidance import instruct_guidance_model

from .fakes import ToyModel


def _tripled_inputs():
    g = torch.Generator().manual_seed(0)
    x_third = torch.randn(2, 3, 4, 4, generator=g)
    x = torch.cat([x_third, torch.randn(4, 3, 4, 4, generator=g)])  # only the first third counts
    t = torch.full((6,), 400)
    cond = torch.tensor([0.3, -0.7, 0.2, -0.4, 0.0, 0.0])  # [(I, T); (I, 0); (0, 0)]
    return x_third, x, t, cond


def _reference(model, x_third, t, cond):
    out = model(torch.cat([x_third] * 3), t, cond=cond)
    return out[:2], out[2:4], out[4:]  # (I, T), (I, 0), (0, 0)


def test_scales_one_give_the_conditioned_model_and_zero_the_unconditioned():
    model = ToyModel()
    x_third, x, t, cond = _tripled_inputs()
    full, _, neither = _reference(model, x_third, t, cond)
    ones = instruct_guidance_model(model, 1.0, 1.0)(x, t, cond=cond)
    zeros = instruct_guidance_model(model, 0.0, 0.0)(x, t, cond=cond)
    torch.testing.assert_close(ones[:2], full, rtol=0, atol=1e-6)
    torch.testing.assert_close(zeros[:2, :3], neither[:, :3], rtol=0, atol=1e-6)
    assert torch.equal(zeros[:2, 3:], full[:, 3:])  # variance from the fully conditioned third
    assert torch.equal(ones[:2], ones[2:4]) and torch.equal(ones[:2], ones[4:])


def test_each_scale_extrapolates_its_own_direction():
    model = ToyModel()
    x_third, x, t, cond = _tripled_inputs()
    full, image_only, neither = (o[:, :3] for o in _reference(model, x_third, t, cond))
    out = instruct_guidance_model(model, 1.5, 7.5)(x, t, cond=cond)[:2, :3]
    expected = neither + 1.5 * (image_only - neither) + 7.5 * (full - image_only)
    torch.testing.assert_close(out, expected)


def test_a_batch_that_is_not_tripled_is_refused():
    model = ToyModel()
    with pytest.raises(ValueError, match="tripled"):
        instruct_guidance_model(model, 1.5, 7.5)(torch.zeros(4, 3, 4, 4), torch.zeros(4), cond=None)
