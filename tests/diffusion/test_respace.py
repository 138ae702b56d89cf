import numpy as np
import pytest
import torch

from pipeline.diffusion import (
    GaussianDiffusion,
    SamplerSettings,
    SpacedDiffusion,
    StepHooks,
    create_diffusion,
    get_named_beta_schedule,
    sample_loop,
    space_timesteps,
)

from .fakes import RecordingModel

# Published: GLIDE's upsampler respacing (glide-text2im), see shared/GLIDE.md.
FAST27 = [0, 22, 44, 66, 88, 111, 133, 155, 177, 199, 200, 222, 244, 266, 288, 311, 333, 355, 377,
          399, 400, 500, 599, 600, 799, 800, 997]  # fmt: skip


def test_fast27_is_exactly_glides_list():
    assert space_timesteps(1000, "fast27") == FAST27


def test_100_steps_are_evenly_strided_from_0_to_999():
    steps = space_timesteps(1000, "100")
    assert len(steps) == 100
    assert steps[:5] == [0, 10, 20, 30, 40] and steps[-2:] == [989, 999]
    assert set(np.diff(steps)) <= {10, 11}


def test_sections_split_the_process_and_give_extra_steps_to_the_first():
    assert len(space_timesteps(1000, "10,10,3,2,2")) == 27
    assert space_timesteps(1000, [10, 10, 3, 2, 2]) == space_timesteps(1000, "10,10,3,2,2")
    # 10 steps in sections of 4, 3, 3: [0..3], [4..6], [7..9]
    assert space_timesteps(10, "2,2,2") == [0, 3, 4, 6, 7, 9]


def test_ddim_uses_an_integer_stride():
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(1000, "ddim1000") == list(range(1000))
    with pytest.raises(ValueError, match="stride"):
        space_timesteps(1000, "ddim999")


@pytest.mark.parametrize("bad", ["abc", "ddimx", "10,x", "2000", "0", "10,,3"])
def test_bad_respacing_strings_raise(bad):
    with pytest.raises(ValueError):
        space_timesteps(1000, bad)


def test_empty_respacing_keeps_every_step():
    diffusion = create_diffusion(1000, "squaredcos_cap_v2", "")
    assert diffusion.num_timesteps == 1000
    assert torch.equal(diffusion.timestep_map, torch.arange(1000))


@pytest.mark.parametrize(
    ("schedule", "respacing"), [("linear", "fast27"), ("squaredcos_cap_v2", "100")]
)
def test_respaced_betas_reproduce_alpha_bar_at_kept_steps(schedule, respacing):
    base = GaussianDiffusion(get_named_beta_schedule(schedule, 1000))
    kept = space_timesteps(1000, respacing)
    spaced = create_diffusion(1000, schedule, respacing)
    assert isinstance(spaced, SpacedDiffusion)
    assert spaced.num_timesteps == len(kept)
    np.testing.assert_allclose(spaced.alphas_cumprod, base.alphas_cumprod[kept], rtol=1e-10)
    assert spaced.timestep_map.tolist() == kept


def test_model_and_cond_fn_receive_original_timesteps_after_respacing():
    diffusion = create_diffusion(1000, "linear", "fast27")
    model = RecordingModel()
    cond_ts = []

    def cond_fn(x, t, **_):
        cond_ts.append(int(t[0]))
        return torch.zeros_like(x)

    settings = SamplerSettings(steps="fast27")
    sample_loop(model, diffusion, (2, 3, 4, 4), settings, StepHooks(cond_fn=cond_fn))
    assert model.timesteps == FAST27[::-1]
    assert cond_ts == FAST27[::-1]

    model = RecordingModel()
    sample_loop(model, diffusion, (1, 3, 4, 4), SamplerSettings(steps="ddim27"))
    assert model.timesteps == FAST27[::-1]

    model = RecordingModel()
    diffusion.training_losses(model, torch.zeros(3, 3, 4, 4), torch.tensor([0, 5, 26]))
    assert model.calls[0][1].tolist() == [FAST27[0], FAST27[5], FAST27[26]]


def _glide_steps(count: int, size: int = 1000) -> list[int]:
    """GLIDE's rule derived independently: cumulative float sums of the stride (numpy's sequential
    accumulate), rounded half to even as Python's round does."""
    if count == 1:
        return [0]
    strides = np.full(count - 1, (size - 1) / (count - 1))
    positions = np.concatenate([[0.0], np.add.accumulate(strides)])
    return [int(v) for v in np.round(positions)]


def test_every_step_count_follows_glides_accumulated_stride():
    differ_from_product = 0
    for count in range(1, 1001):
        steps = space_timesteps(1000, str(count))
        assert steps == _glide_steps(count), count
        product = np.round(np.arange(count) * (999 / max(count - 1, 1))).astype(int).tolist()
        differ_from_product += steps != product
    assert differ_from_product == 278  # counts where rounding i * stride picks another step
    assert space_timesteps(1000, "21")[10] == 499  # 10 * 49.95 summed lands just below 499.5
