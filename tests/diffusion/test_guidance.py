import torch
import torch.nn.functional as F

from pipeline.diffusion import (
    SamplerSettings,
    StepHooks,
    classifier_free_guidance_model,
    clip_cond_fn,
    create_diffusion,
    sample_loop,
)

from .fakes import RecordingModel, ToyModel

F64 = torch.float64


def _doubled_inputs():
    g = torch.Generator().manual_seed(0)
    x_half = torch.randn(2, 3, 4, 4, generator=g)
    x = torch.cat([x_half, torch.randn(2, 3, 4, 4, generator=g)])  # second half must be ignored
    t = torch.tensor([500, 500, 500, 500])
    cond = torch.tensor([0.3, -0.7, 0.0, 0.0])  # [conditional; unconditional]
    return x_half, x, t, cond


def test_cfg_scale_1_is_conditional_and_scale_0_unconditional_exactly():
    model = ToyModel()
    x_half, x, t, cond = _doubled_inputs()
    reference = model(torch.cat([x_half, x_half]), t, cond=cond)
    cond_out, uncond_out = reference[:2], reference[2:]
    out1 = classifier_free_guidance_model(model, 1.0)(x, t, cond=cond)
    out0 = classifier_free_guidance_model(model, 0.0)(x, t, cond=cond)
    assert torch.equal(out1[:2], cond_out) and torch.equal(out1[2:], cond_out)
    assert torch.equal(out0[:2, :3], uncond_out[:, :3])
    assert torch.equal(out0[:2, 3:], cond_out[:, 3:])  # variance always from the conditional half


def test_cfg_extrapolates_epsilon_only():
    model = ToyModel()
    x_half, x, t, cond = _doubled_inputs()
    reference = model(torch.cat([x_half, x_half]), t, cond=cond)
    eps_c, eps_u = reference[:2, :3], reference[2:, :3]
    out = classifier_free_guidance_model(model, 3.0)(x, t, cond=cond)
    torch.testing.assert_close(out[:2, :3], eps_u + 3.0 * (eps_c - eps_u))
    assert torch.equal(out[:2, 3:], reference[:2, 3:])
    assert torch.equal(out[:2], out[2:])


def test_cfg_runs_one_forward_pass_per_step_on_duplicated_x():
    diffusion = create_diffusion(1000, "squaredcos_cap_v2", "ddim10")
    recorder = RecordingModel()
    guided = classifier_free_guidance_model(recorder, 3.0)
    cond = torch.tensor([0.5, -0.5])
    hooks = StepHooks(model_kwargs={"cond": cond})
    sample = sample_loop(guided, diffusion, (2, 3, 4, 4), SamplerSettings(steps="10"), hooks)
    assert len(recorder.calls) == diffusion.num_timesteps
    for x_in, _, kwargs in recorder.calls:
        assert torch.equal(x_in[0], x_in[1])
        assert torch.equal(kwargs["cond"], cond)
    assert sample.shape == (2, 3, 4, 4)  # the caller keeps sample[:1]


def _embed_fn():
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(8, 3 * 4 * 4, generator=g, dtype=F64)

    def image_embed_fn(x, t):
        return torch.tanh(x.flatten(1)) @ weight.T + t.to(x.dtype)[:, None] / 1000

    return image_embed_fn


def test_clip_cond_fn_matches_finite_differences():
    embed = _embed_fn()
    g = torch.Generator().manual_seed(2)
    text = torch.randn(2, 8, generator=g, dtype=F64)
    x = torch.randn(2, 3, 4, 4, generator=g, dtype=F64)
    t = torch.tensor([100, 700])
    logit_scale, scale = 2.0, 1.5

    def objective(x_):
        sim = (F.normalize(text, dim=-1) * F.normalize(embed(x_, t), dim=-1)).sum(-1)
        return torch.exp(torch.tensor(logit_scale, dtype=F64)) * sim  # [B]

    grad = clip_cond_fn(embed, text, logit_scale, scale)(x, t)
    h = 1e-6
    numeric = torch.zeros_like(x)
    for idx in range(x.numel()):
        delta = torch.zeros(x.numel(), dtype=F64)
        delta[idx] = h
        delta = delta.reshape(x.shape)
        numeric.view(-1)[idx] = (objective(x + delta).sum() - objective(x - delta).sum()) / (2 * h)
    torch.testing.assert_close(grad, numeric * scale, rtol=1e-6, atol=1e-8)


def test_clip_cond_fn_gradients_are_per_sample():
    embed = _embed_fn()
    g = torch.Generator().manual_seed(3)
    text = torch.randn(2, 8, generator=g, dtype=F64)
    x = torch.randn(2, 3, 4, 4, generator=g, dtype=F64)
    t = torch.tensor([10, 10])
    base = clip_cond_fn(embed, text, 0.0, 1.0)(x, t)
    other = text.clone()
    other[1] = torch.randn(8, generator=g, dtype=F64)
    changed = clip_cond_fn(embed, other, 0.0, 1.0)(x, t)
    assert torch.equal(base[0], changed[0])
    assert not torch.allclose(base[1], changed[1])
    assert not x.requires_grad
