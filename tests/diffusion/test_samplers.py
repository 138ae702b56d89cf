import dataclasses

import numpy as np
import pytest
import torch

from pipeline.diffusion import (
    GaussianDiffusion,
    SamplerSettings,
    StepHooks,
    ancestral_step,
    create_diffusion,
    ddim_step,
    get_named_beta_schedule,
    sample_loop,
    sample_loop_progressive,
)

from .fakes import RecordingModel, ToyModel, oracle_model

F64 = torch.float64
SHAPE = (2, 3, 4, 4)
ANCESTRAL = SamplerSettings(steps="20")  # the sampler only: the fixture's diffusion is respaced
DDIM = SamplerSettings(steps="ddim20")


@pytest.fixture(scope="module")
def diffusion() -> GaussianDiffusion:
    return create_diffusion(1000, "squaredcos_cap_v2", "ddim20")


def _x0() -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.rand(SHAPE, generator=g, dtype=F64) * 1.8 - 0.9


def test_ancestral_step_is_posterior_mean_plus_scaled_generator_noise(diffusion):
    model = ToyModel().double()
    x = torch.randn(SHAPE, dtype=F64)
    t = torch.tensor([7, 7])
    out = ancestral_step(model, diffusion, x, t, generator=torch.Generator().manual_seed(9))

    eps = model(x, diffusion.timestep_map[t])[:, :3]
    ab = torch.as_tensor(diffusion.alphas_cumprod[7])
    x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
    mean = diffusion.q_posterior_mean_variance(x0, x, t)[0]
    torch.testing.assert_close(out["pred_xstart"], x0)
    torch.testing.assert_close(out["mean"], mean)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(9), dtype=F64)
    torch.testing.assert_close(out["sample"], mean + (0.5 * out["log_variance"]).exp() * noise)


@pytest.mark.parametrize("step", [ancestral_step, ddim_step])
def test_no_noise_is_added_at_t0(diffusion, step):
    x = torch.randn(SHAPE, dtype=F64)
    out = step(
        ToyModel().double(),
        diffusion,
        x,
        torch.zeros(2, dtype=torch.long),
        generator=torch.Generator(),
    )
    torch.testing.assert_close(out["sample"], out["pred_xstart"])  # at t=0 the mean is x0_hat


@pytest.mark.parametrize("settings", [ANCESTRAL, DDIM])
def test_oracle_model_recovers_its_data_point(diffusion, settings):
    x0 = _x0()
    base = get_named_beta_schedule("squaredcos_cap_v2", 1000)
    model = oracle_model(x0, np.cumprod(1 - base))
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=F64)
    generator = torch.Generator().manual_seed(1)
    sample = sample_loop(model, diffusion, SHAPE, settings, noise=noise, generator=generator)
    torch.testing.assert_close(sample, x0)


def test_ddim_eta0_is_deterministic_and_follows_the_ddim_update(diffusion):
    model = ToyModel().double()
    noise = torch.randn(SHAPE, dtype=F64)
    a = sample_loop(model, diffusion, SHAPE, DDIM, noise=noise, generator=torch.Generator())
    b = sample_loop(model, diffusion, SHAPE, dataclasses.replace(DDIM, seed=2), noise=noise)
    assert torch.equal(a, b)

    x, t = noise, torch.tensor([10, 10])
    out = ddim_step(model, diffusion, x, t)
    ab, ab_prev = (torch.as_tensor(diffusion.alphas_cumprod[i]) for i in (10, 9))
    eps = (x - ab.sqrt() * out["pred_xstart"]) / (1 - ab).sqrt()
    torch.testing.assert_close(
        out["sample"], ab_prev.sqrt() * out["pred_xstart"] + (1 - ab_prev).sqrt() * eps
    )


@pytest.mark.parametrize("settings", [ANCESTRAL, dataclasses.replace(DDIM, eta=1.0)])
def test_loops_are_reproducible_from_the_generator(diffusion, settings):
    def run(seed):
        generator = torch.Generator().manual_seed(seed)
        return sample_loop(ToyModel(), diffusion, SHAPE, settings, generator=generator)

    assert torch.equal(run(5), run(5))
    assert not torch.allclose(run(5), run(6))
    seeded = sample_loop(ToyModel(), diffusion, SHAPE, dataclasses.replace(settings, seed=5))
    assert torch.equal(seeded, run(5))  # without a generator, one seeded with settings.seed


def test_cond_fn_shifts_ancestral_mean_by_variance_times_grad(diffusion):
    model = ToyModel().double()
    x = torch.randn(SHAPE, dtype=F64)
    t = torch.tensor([12, 3])
    grad = torch.randn(SHAPE, dtype=F64)
    seen_t = []

    def cond_fn(x_in, t_in, **_):
        seen_t.append(t_in.tolist())
        return grad

    plain = ancestral_step(model, diffusion, x, t, generator=torch.Generator().manual_seed(0))
    guided = ancestral_step(
        model,
        diffusion,
        x,
        t,
        generator=torch.Generator().manual_seed(0),
        hooks=StepHooks(cond_fn=cond_fn),
    )
    torch.testing.assert_close(guided["mean"], plain["mean"] + plain["variance"] * grad)
    torch.testing.assert_close(guided["sample"] - plain["sample"], plain["variance"] * grad)
    assert seen_t == [diffusion.timestep_map[t].tolist()]


def test_cond_fn_shifts_the_ddim_score(diffusion):
    model = ToyModel().double()
    x = torch.randn(SHAPE, dtype=F64)
    t = torch.tensor([12, 12])
    grad = torch.randn(SHAPE, dtype=F64)
    plain = ddim_step(model, diffusion, x, t)
    guided = ddim_step(model, diffusion, x, t, hooks=StepHooks(cond_fn=lambda *_, **__: grad))
    ab, ab_prev = (torch.as_tensor(diffusion.alphas_cumprod[i]) for i in (12, 11))
    eps = plain["eps"] - (1 - ab).sqrt() * grad
    x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
    torch.testing.assert_close(guided["pred_xstart"], x0)
    torch.testing.assert_close(guided["sample"], ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps)


@pytest.mark.parametrize("settings", [ANCESTRAL, DDIM])
def test_denoised_fn_replacement_keeps_known_pixels_exactly(diffusion, settings):
    source = _x0().float()
    mask = torch.zeros(SHAPE)
    mask[..., :2] = 1.0  # left half known

    def replace_known(x0):
        return x0 * (1 - mask) + source * mask

    sample = sample_loop(
        ToyModel(), diffusion, SHAPE, settings, StepHooks(denoised_fn=replace_known)
    )
    assert torch.equal(sample[..., :2], source[..., :2])
    assert not torch.allclose(sample[..., 2:], source[..., 2:])


def test_initial_noise_is_scaled_by_the_temperature_and_progress_runs(diffusion):
    model = RecordingModel()
    noise = torch.randn(SHAPE)
    settings = dataclasses.replace(ANCESTRAL, temperature=0.997, progress=True)
    steps = list(sample_loop_progressive(model, diffusion, SHAPE, settings, noise=noise))
    assert len(steps) == diffusion.num_timesteps
    torch.testing.assert_close(model.calls[0][0], noise * 0.997)


def test_dynamic_threshold_is_used_when_requested(diffusion):
    model = lambda x, t, **_: torch.cat([-3 * x, torch.zeros_like(x)], dim=1)  # noqa: E731
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([15, 15])
    static = ancestral_step(model, diffusion, x, t)["pred_xstart"]
    dynamic = ancestral_step(model, diffusion, x, t, threshold=0.9)["pred_xstart"]
    assert static.abs().max() <= 1 and dynamic.abs().max() <= 1
    assert (static.abs() == 1).float().mean() > (dynamic.abs() == 1).float().mean()


@pytest.mark.parametrize("settings", [ANCESTRAL, dataclasses.replace(DDIM, eta=0.5)])
def test_progressive_loop_ends_on_the_plain_loops_sample(diffusion, settings):
    model = ToyModel()
    steps = list(sample_loop_progressive(model, diffusion, SHAPE, settings))
    assert len(steps) == diffusion.num_timesteps
    assert not torch.equal(steps[0]["sample"], steps[-1]["sample"])  # intermediate x_t
    assert torch.equal(steps[-1]["sample"], sample_loop(model, diffusion, SHAPE, settings))


def test_sampler_settings_are_frozen_and_name_their_sampler():
    settings = SamplerSettings(steps="ddim50", seed=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 4  # type: ignore[misc]
    assert settings.ddim and not SamplerSettings(steps="fast27").ddim
    assert hash(settings) == hash(SamplerSettings(steps="ddim50", seed=3))


def test_the_diffusion_has_no_default_schedule():
    with pytest.raises(TypeError):
        create_diffusion()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        create_diffusion(1000)  # type: ignore[call-arg]
