import math

import numpy as np
import pytest
import torch

from pipeline.diffusion import (
    GaussianDiffusion,
    create_diffusion,
    discretized_gaussian_log_likelihood,
    get_named_beta_schedule,
    sample_timesteps_uniform,
)

from .fakes import ToyModel

F64 = torch.float64


@pytest.fixture(scope="module")
def diffusion() -> GaussianDiffusion:
    return GaussianDiffusion(get_named_beta_schedule("squaredcos_cap_v2", 1000))


def _alpha_bar(betas: np.ndarray, t: int) -> float:
    return float(np.prod([1.0 - b for b in betas[: t + 1]]))


def _bayes_posterior(betas, t, x0, xt):
    """q(x_{t-1} | x_t, x_0) from Bayes' rule on q(x_{t-1} | x_0) and q(x_t | x_{t-1})."""
    beta = float(betas[t])
    ab_prev = _alpha_bar(betas, t - 1) if t > 0 else 1.0
    precision = 1.0 / (1.0 - ab_prev) + (1.0 - beta) / beta
    variance = 1.0 / precision
    mean = variance * (
        math.sqrt(ab_prev) * x0 / (1.0 - ab_prev) + math.sqrt(1.0 - beta) * xt / beta
    )
    return mean, variance


def test_q_sample_matches_closed_form_moments(diffusion):
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.tensor([-0.8, 0.0, 0.5, 1.0], dtype=F64).reshape(1, 4, 1, 1).expand(n, 4, 1, 1)
    for step in (0, 300, 999):
        t = torch.full((n,), step, dtype=torch.long)
        noise = torch.randn(x0.shape, generator=g, dtype=F64)
        xt = diffusion.q_sample(x0, t, noise)
        ab = _alpha_bar(diffusion.betas, step)
        expected_mean = math.sqrt(ab) * x0[0].flatten()
        torch.testing.assert_close(
            xt.mean(0).flatten(), expected_mean, atol=5 * math.sqrt((1 - ab) / n), rtol=0
        )
        torch.testing.assert_close(
            xt.var(0).flatten(), torch.full((4,), 1 - ab, dtype=F64), rtol=0.02, atol=1e-6
        )
        mean, var, log_var = diffusion.q_mean_variance(x0[:1], t[:1])
        torch.testing.assert_close(mean.flatten(), expected_mean)
        assert var.item() == pytest.approx(1 - ab, rel=1e-9)
        assert log_var.item() == pytest.approx(math.log(1 - ab), rel=1e-9)


@pytest.mark.parametrize("schedule", ["squaredcos_cap_v2", "linear"])
def test_q_posterior_matches_bayes_rule_in_float64(schedule):
    betas = get_named_beta_schedule(schedule, 1000)
    diffusion = GaussianDiffusion(betas)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(5, 3, 2, 2, generator=g, dtype=F64) * 2 - 1
    xt = torch.randn(5, 3, 2, 2, generator=g, dtype=F64)
    steps = [1, 2, 250, 700, 999]
    t = torch.tensor(steps)
    mean, var, log_var = diffusion.q_posterior_mean_variance(x0, xt, t)
    assert mean.dtype == F64
    for i, step in enumerate(steps):
        exp_mean, exp_var = _bayes_posterior(betas, step, x0[i], xt[i])
        torch.testing.assert_close(mean[i], exp_mean, rtol=1e-9, atol=1e-12)
        assert var[i].item() == pytest.approx(exp_var, rel=1e-9)
        assert log_var[i].item() == pytest.approx(math.log(exp_var), rel=1e-9)
    # t = 0: the posterior variance is 0, its log is clipped to that of t = 1
    _, var0, log_var0 = diffusion.q_posterior_mean_variance(x0[:1], xt[:1], torch.tensor([0]))
    assert var0.item() == 0.0
    assert log_var0.item() == pytest.approx(
        math.log(_bayes_posterior(betas, 1, 0.0, 0.0)[1]), rel=1e-9
    )


def _constant_model(eps: torch.Tensor, v: torch.Tensor):
    return lambda x, t, **_: torch.cat([eps, v], dim=1)


def test_p_mean_variance_interpolates_log_variance_and_uses_posterior_at_x0(diffusion):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, 4, 4, generator=g, dtype=F64)
    eps = torch.randn(3, 3, 4, 4, generator=g, dtype=F64) * 0.1
    t = torch.tensor([0, 10, 500])
    log_beta = np.log(diffusion.betas[t.numpy()]).reshape(-1, 1, 1, 1)
    log_beta_tilde = np.log(
        np.maximum(diffusion.posterior_variance, diffusion.posterior_variance[1])
    )
    log_beta_tilde = log_beta_tilde[t.numpy()].reshape(-1, 1, 1, 1)
    for v_value, f in [(1.0, 1.0), (-1.0, 0.0), (0.0, 0.5)]:
        v = torch.full_like(x, v_value)
        out = diffusion.p_mean_variance(_constant_model(eps, v), x, t, clip_denoised=False)
        expected = torch.as_tensor(f * log_beta + (1 - f) * log_beta_tilde).expand_as(x)
        torch.testing.assert_close(out["log_variance"], expected)
        torch.testing.assert_close(out["variance"], expected.exp())

    ab = torch.as_tensor(diffusion.alphas_cumprod[t.numpy()]).reshape(-1, 1, 1, 1)
    x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
    torch.testing.assert_close(out["pred_xstart"], x0)
    torch.testing.assert_close(out["eps"], eps)
    torch.testing.assert_close(out["mean"], diffusion.q_posterior_mean_variance(x0, x, t)[0])


def test_denoised_fn_sees_unclipped_x0_and_result_is_clipped(diffusion):
    x = torch.full((1, 3, 2, 2), 3.0)
    seen = []

    def denoised_fn(x0):
        seen.append(x0.abs().max().item())
        return x0 * 2

    model = _constant_model(torch.zeros_like(x), torch.zeros_like(x))
    out = diffusion.p_mean_variance(model, x, torch.tensor([100]), denoised_fn=denoised_fn)
    assert seen and seen[0] > 1.0
    assert out["pred_xstart"].abs().max().item() == 1.0


def test_vb_at_t0_is_discretized_decoder_nll(diffusion):
    g = torch.Generator().manual_seed(3)
    x0 = (torch.randint(0, 256, (2, 3, 4, 4), generator=g) / 127.5 - 1).to(F64)
    noise = torch.randn(x0.shape, generator=g, dtype=F64)
    eps = torch.randn(x0.shape, generator=g, dtype=F64) * 0.5
    v = torch.rand(x0.shape, generator=g, dtype=F64) * 2 - 1
    t = torch.zeros(2, dtype=torch.long)
    losses = diffusion.training_losses(_constant_model(eps, v), x0, t, noise=noise)

    ab0, beta0 = diffusion.alphas_cumprod[0], diffusion.betas[0]
    xt = math.sqrt(ab0) * x0 + math.sqrt(1 - ab0) * noise
    decoder_mean = (xt - math.sqrt(1 - ab0) * eps) / math.sqrt(
        ab0
    )  # posterior mean at t=0 is x0_hat
    f = (v + 1) / 2
    log_var = f * math.log(beta0) + (1 - f) * math.log(diffusion.posterior_variance[1])
    nll = -discretized_gaussian_log_likelihood(x0, decoder_mean, 0.5 * log_var)
    expected = nll.mean(dim=(1, 2, 3)) / math.log(2)
    torch.testing.assert_close(losses["vb"], expected)


def test_vb_at_t_positive_is_kl_to_true_posterior_in_bits(diffusion):
    g = torch.Generator().manual_seed(4)
    x0 = torch.rand(2, 3, 2, 2, generator=g, dtype=F64) * 2 - 1
    noise = torch.randn(x0.shape, generator=g, dtype=F64)
    eps = torch.randn(x0.shape, generator=g, dtype=F64)
    v = torch.rand(x0.shape, generator=g, dtype=F64) * 2 - 1
    t = torch.tensor([1, 600])
    losses = diffusion.training_losses(_constant_model(eps, v), x0, t, noise=noise)
    for i, step in enumerate(t.tolist()):
        ab = diffusion.alphas_cumprod[step]
        xt = math.sqrt(ab) * x0[i] + math.sqrt(1 - ab) * noise[i]
        true_mean, true_var = _bayes_posterior(diffusion.betas, step, x0[i], xt)
        x0_hat = (xt - math.sqrt(1 - ab) * eps[i]) / math.sqrt(ab)
        model_mean, _ = _bayes_posterior(diffusion.betas, step, x0_hat, xt)
        f = (v[i] + 1) / 2
        model_var = torch.exp(f * math.log(diffusion.betas[step]) + (1 - f) * math.log(true_var))
        kl = 0.5 * (
            model_var.log()
            - math.log(true_var)
            + (true_var + (true_mean - model_mean) ** 2) / model_var
            - 1
        )
        assert losses["vb"][i].item() == pytest.approx(kl.mean().item() / math.log(2), rel=1e-8)


def test_hybrid_loss_is_mse_plus_vb_and_model_sees_q_sample(diffusion):
    model = ToyModel()
    seen = []

    def recording(x, t, **kw):
        seen.append(x)
        return model(x, t, **kw)

    g = torch.Generator().manual_seed(5)
    x0 = torch.rand(4, 3, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 5, 400, 999])
    losses = diffusion.training_losses(recording, x0, t, noise=noise)
    assert set(losses) >= {"loss", "mse", "vb"}
    assert all(losses[k].shape == (4,) for k in ("loss", "mse", "vb"))
    torch.testing.assert_close(seen[0], diffusion.q_sample(x0, t, noise))
    eps = model(seen[0], t)[:, :3]
    torch.testing.assert_close(losses["mse"], ((noise - eps) ** 2).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(losses["loss"], losses["mse"] + losses["vb"])


def test_p2_weighting_scales_only_the_epsilon_term_by_one_over_k_plus_snr(diffusion):
    model = ToyModel()
    g = torch.Generator().manual_seed(6)
    x0 = torch.rand(4, 3, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 250, 600, 999])
    plain = diffusion.training_losses(model, x0, t, noise=noise)
    weighted = diffusion.training_losses(model, x0, t, noise=noise, p2_gamma=1.0, p2_k=1.0)
    ab = torch.tensor(diffusion.alphas_cumprod[t.numpy()], dtype=torch.float32)
    weight = 1.0 / (1.0 + ab / (1.0 - ab))  # = 1 - alpha_bar_t for k = gamma = 1
    torch.testing.assert_close(weight, 1.0 - ab)
    torch.testing.assert_close(weighted["mse"], plain["mse"])  # logged unweighted
    torch.testing.assert_close(weighted["vb"], plain["vb"])
    torch.testing.assert_close(weighted["loss"], weight * plain["mse"] + plain["vb"])
    # Small t (high SNR, fine detail) loses weight; t near T keeps almost all of it.
    assert weight[0] < 1e-3 and weight[-1] > 0.99
    half = diffusion.training_losses(model, x0, t, noise=noise, p2_gamma=0.5, p2_k=2.0)
    torch.testing.assert_close(
        half["loss"], (2.0 + ab / (1.0 - ab)) ** -0.5 * plain["mse"] + plain["vb"]
    )
    with pytest.raises(ValueError, match="gamma"):
        diffusion.training_losses(model, x0, t, noise=noise, p2_gamma=-1.0)


def test_vb_gradient_reaches_only_variance_channels_and_mse_only_eps(diffusion):
    output = torch.randn(3, 6, 4, 4, dtype=F64, requires_grad=True)
    x0 = torch.rand(3, 3, 4, 4, dtype=F64) * 2 - 1
    losses = diffusion.training_losses(
        lambda x, t, **_: output * 1.0, x0, torch.tensor([0, 3, 700])
    )
    (vb_grad,) = torch.autograd.grad(losses["vb"].sum(), output, retain_graph=True)
    assert vb_grad[:, :3].abs().max() == 0
    assert vb_grad[:, 3:].abs().min() > 0
    (mse_grad,) = torch.autograd.grad(losses["mse"].sum(), output)
    assert mse_grad[:, 3:].abs().max() == 0
    assert mse_grad[:, :3].abs().max() > 0


def test_vb_is_scaled_by_num_timesteps_over_1000():
    spaced = create_diffusion(1000, "squaredcos_cap_v2", "100")
    output = torch.randn(2, 6, 2, 2, dtype=F64)
    x0 = torch.rand(2, 3, 2, 2, dtype=F64) * 2 - 1
    noise = torch.randn(x0.shape, dtype=F64)
    t = torch.tensor([0, 50])
    losses = spaced.training_losses(lambda x, t, **_: output, x0, t, noise=noise)
    raw = spaced.vb_terms_bpd(output, x0, spaced.q_sample(x0, t, noise), t)
    torch.testing.assert_close(losses["vb"], raw * 0.1)


def test_model_output_with_wrong_channels_is_rejected(diffusion):
    x = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match="expected"):
        diffusion.p_mean_variance(lambda x, t: x, x, torch.tensor([3]))


def test_uniform_timesteps_cover_range_and_are_reproducible():
    a = sample_timesteps_uniform(20_000, 10, "cpu", torch.Generator().manual_seed(7))
    b = sample_timesteps_uniform(20_000, 10, "cpu", torch.Generator().manual_seed(7))
    assert a.dtype == torch.long and torch.equal(a, b)
    counts = torch.bincount(a, minlength=10)
    assert a.min() == 0 and a.max() == 9
    assert (counts - 2000).abs().max() < 200


def _alpha_terms(diffusion, t, like):
    a = diffusion.extract(diffusion.sqrt_alphas_cumprod, t, like)
    return a, diffusion.extract(diffusion.sqrt_one_minus_alphas_cumprod, t, like)


def test_a_v_model_gives_the_same_reverse_step_as_its_epsilon_twin():
    """prediction_type only changes what the first C channels mean: the v output
    sqrt(abar) eps - sqrt(1 - abar) x0 of an epsilon output gives the same x0, epsilon, mean and
    variance, respaced or not."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(3, 3, 4, 4, generator=g, dtype=F64)
    for respacing in ("", "fast27"):
        eps_diffusion = create_diffusion(1000, "linear", respacing)
        v_diffusion = create_diffusion(1000, "linear", respacing, prediction_type="v")
        t = torch.tensor([0, 3, eps_diffusion.num_timesteps - 1])
        eps_output = ToyModel()(x, eps_diffusion.original_timesteps(t)).detach()
        eps = eps_output[:, :3]
        a, s = _alpha_terms(eps_diffusion, t, x)
        v = a * eps - s * eps_diffusion.predict_xstart_from_eps(x, t, eps)
        v_output = torch.cat([v, eps_output[:, 3:]], dim=1)
        want = eps_diffusion.p_mean_variance_from_output(eps_output, x, t, clip_denoised=False)
        got = v_diffusion.p_mean_variance_from_output(v_output, x, t, clip_denoised=False)
        for key in ("mean", "variance", "pred_xstart", "eps"):
            torch.testing.assert_close(got[key], want[key])


def test_a_v_model_is_trained_on_the_error_of_its_v():
    diffusion = create_diffusion(1000, "linear", prediction_type="v")
    model = ToyModel()
    g = torch.Generator().manual_seed(9)
    x0 = torch.rand(4, 3, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 5, 400, 999])
    losses = diffusion.training_losses(model, x0, t, noise=noise)
    a, s = _alpha_terms(diffusion, t, x0)
    v_hat = model(diffusion.q_sample(x0, t, noise), t)[:, :3]
    want = ((a * noise - s * x0 - v_hat) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(losses["mse"], want)
    torch.testing.assert_close(losses["loss"], losses["mse"] + losses["vb"])


def test_a_residual_upsampler_sees_the_residual_and_its_v_recovers_the_image():
    """low_res_residual: the network is given x_t - sqrt(abar) U (U: bicubic low_res) and
    predicts v of x0 - U; the exact v of the residual gives zero loss and x0 back exactly."""
    diffusion = create_diffusion(1000, "linear", prediction_type="v", low_res_residual=True)
    g = torch.Generator().manual_seed(10)
    x0 = torch.rand(2, 3, 8, 8, generator=g, dtype=F64) * 2 - 1
    low = x0.reshape(2, 3, 4, 2, 4, 2).mean(dim=(3, 5))
    U = torch.nn.functional.interpolate(low, size=(8, 8), mode="bicubic").clamp(-1, 1)
    noise = torch.randn(x0.shape, generator=g, dtype=F64)
    t = torch.tensor([10, 700])
    a, s = _alpha_terms(diffusion, t, x0)
    seen = []

    def oracle(x_in, timesteps, low_res):
        seen.append(x_in)
        v_residual = a * noise - s * (x0 - U)
        return torch.cat([v_residual, torch.zeros_like(x_in)], dim=1)

    x_t = diffusion.q_sample(x0, t, noise)
    losses = diffusion.training_losses(oracle, x0, t, model_kwargs={"low_res": low}, noise=noise)
    torch.testing.assert_close(seen[0], x_t - a * U)
    assert float(losses["mse"].max()) < 1e-20
    out = diffusion.p_mean_variance(
        oracle, x_t, t, clip_denoised=False, model_kwargs={"low_res": low}
    )
    torch.testing.assert_close(out["pred_xstart"], x0)
    torch.testing.assert_close(out["eps"], noise)
    with pytest.raises(ValueError, match="low_res input"):
        diffusion.p_mean_variance(oracle, x_t, t)


def test_a_scaled_v_upsampler_sees_unit_variance_and_defaults_to_the_wiener_estimate():
    """sigma_data: for a residual of that std the network's input has unit variance at every
    noise level, an output of zero gives the Wiener estimate U + sqrt(abar) sigma^2 / D^2 r_t,
    and the exact output gives zero loss and x0 back."""
    sigma = 0.1
    diffusion = create_diffusion(
        1000, "linear", prediction_type="v", low_res_residual=True, sigma_data=sigma
    )
    g = torch.Generator().manual_seed(11)
    low = torch.rand(64, 3, 4, 4, generator=g, dtype=F64) * 2 - 1
    U = torch.nn.functional.interpolate(low, size=(8, 8), mode="bicubic").clamp(-1, 1)
    x0 = U + sigma * torch.randn(U.shape, generator=g, dtype=F64)
    noise = torch.randn(x0.shape, generator=g, dtype=F64)
    t = torch.tensor([10, 300, 700, 999]).repeat_interleave(16)
    a, s = _alpha_terms(diffusion, t, x0)
    D = torch.sqrt(s**2 + a**2 * sigma**2)
    x_t = diffusion.q_sample(x0, t, noise)
    r_t = x_t - a * U
    seen = []

    def zero(x_in, timesteps, low_res):
        seen.append(x_in)
        return torch.zeros(x_in.shape[0], 6, *x_in.shape[2:], dtype=x_in.dtype)

    def oracle(x_in, timesteps, low_res):
        F_exact = (a * sigma**2 / D**2 * r_t - (x0 - U)) * D / (s * sigma)
        return torch.cat([F_exact, torch.zeros_like(x_in)], dim=1)

    kwargs = {"low_res": low}
    out = diffusion.p_mean_variance(zero, x_t, t, clip_denoised=False, model_kwargs=kwargs)
    torch.testing.assert_close(out["pred_xstart"], U + a * sigma**2 / D**2 * r_t)
    variance_per_level = seen[0].reshape(4, -1).var(dim=1)
    assert torch.allclose(variance_per_level, torch.ones(4, dtype=F64), atol=0.1)
    losses = diffusion.training_losses(oracle, x0, t, model_kwargs=kwargs, noise=noise)
    assert float(losses["mse"].max()) < 1e-20
    out = diffusion.p_mean_variance(oracle, x_t, t, clip_denoised=False, model_kwargs=kwargs)
    torch.testing.assert_close(out["pred_xstart"], x0)


def test_a_scaled_v_upsampler_is_trained_on_its_own_output_at_unit_scale():
    """sigma_data's loss weight 1 / c_out^2 (Karras et al.): the network's target F has unit
    variance at every noise level, so the zero network costs ~1 everywhere, where its plain v
    error would cost ~sigma^2 at high noise and ~1 at low noise (the detail-free regression at
    high noise drowned by the denoising terms)."""
    sigma = 0.1
    diffusion = create_diffusion(
        1000, "linear", prediction_type="v", low_res_residual=True, sigma_data=sigma
    )
    g = torch.Generator().manual_seed(12)
    low = torch.rand(4 * 256, 3, 4, 4, generator=g, dtype=F64) * 2 - 1
    U = torch.nn.functional.interpolate(low, size=(8, 8), mode="bicubic").clamp(-1, 1)
    x0 = U + sigma * torch.randn(U.shape, generator=g, dtype=F64)
    t = torch.tensor([5, 30, 300, 999]).repeat_interleave(256)

    def zero(x_in, timesteps, low_res):
        return torch.zeros(x_in.shape[0], 6, *x_in.shape[2:], dtype=x_in.dtype)

    losses = diffusion.training_losses(zero, x0, t, model_kwargs={"low_res": low}, generator=g)
    per_level = (losses["loss"] - losses["vb"]).reshape(4, -1).mean(dim=1)
    assert torch.allclose(per_level, torch.ones(4, dtype=F64), atol=0.1), per_level
    plain = losses["mse"].reshape(4, -1).mean(dim=1)
    assert plain[-1] < 2 * sigma**2 and plain[0] > 0.5, plain


def test_sigma_data_outside_zero_one_or_without_v_is_refused():
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="sigma_data"):
            create_diffusion(1000, "linear", prediction_type="v", sigma_data=bad)
    with pytest.raises(ValueError, match="needs prediction_type 'v'"):
        create_diffusion(1000, "linear", sigma_data=0.5)


def test_an_unknown_prediction_type_or_an_epsilon_residual_is_refused():
    with pytest.raises(ValueError, match="prediction_type 'x0'"):
        create_diffusion(1000, "linear", prediction_type="x0")
    with pytest.raises(ValueError, match="low_res_residual needs prediction_type 'v'"):
        create_diffusion(1000, "linear", "fast27", low_res_residual=True)
