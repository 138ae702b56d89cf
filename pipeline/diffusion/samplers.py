"""Samplers: ancestral (learned variance) and DDIM, with hooks for guidance and inpainting.

One loop, `sample_loop_progressive` (every step's output) and `sample_loop` (x_0 only), runs
either sampler as `SamplerSettings` say; `StepHooks` carry what a caller adds to every step.

Hooks:
    cond_fn(x_t, t_original, **model_kwargs) -> gradient shaped like x_t (e.g. of a CLIP score).
        It is called with grad enabled on a detached x_t; it must set requires_grad itself.
        Ancestral: mean += variance * grad. DDIM: eps -= sqrt(1 - alpha_bar_t) * grad (score shift).
    denoised_fn(x0) -> x0, applied to every predicted x0 before thresholding (e.g. replacing the
        known region with the source image for inpainting).

Every random draw uses `generator` (drawn on the generator's device, then moved), so a loop is
deterministic given the generator's seed. No noise is added at the last step (t = 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .gaussian_diffusion import DenoisedFn, GaussianDiffusion, Model, gaussian_noise

CondFn = Callable[..., Tensor]


@dataclass(frozen=True)
class SamplerSettings:
    """How to sample, apart from the model and its diffusion (which the model file fixes).

    steps: the respacing ("100", "fast27", "ddim50", "10,10,3"); "ddimN" uses DDIM, every other
        respacing the ancestral sampler with the learned variance.
    seed: seeds the sampling generator (the same seed gives the same samples).
    batch_size: prompts per network batch for `pipeline.sampling` (0 = all at once).
    device: where to sample (None: where the model's parameters are).
    threshold: dynamic-thresholding percentile of x0 in (0, 1) (None: clip x0 to [-1, 1]).
    temperature: x_T = temperature * noise (GLIDE's upsampler uses 0.997).
    eta: DDIM's noise (0 = deterministic); the ancestral sampler ignores it.
    progress: show a progress bar over the steps.
    """

    steps: str = "100"
    seed: int = 0
    batch_size: int = 0
    device: torch.device | str | None = None
    threshold: float | None = None
    temperature: float = 1.0
    eta: float = 0.0
    progress: bool = False

    @property
    def ddim(self) -> bool:
        """Whether the respacing asks for the DDIM sampler."""
        return str(self.steps).startswith("ddim")


@dataclass(frozen=True)
class StepHooks:
    """What a caller adds to every step: the network's extra inputs (`model_kwargs`), a gradient
    hook (`cond_fn`) and an x0 post-processor (`denoised_fn`); see the module docstring."""

    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    cond_fn: CondFn | None = None
    denoised_fn: DenoisedFn | None = None


NO_HOOKS = StepHooks()
DEFAULT_SETTINGS = SamplerSettings()


def _nonzero_mask(t: Tensor, like: Tensor) -> Tensor:
    """1 where t != 0 else 0, shaped [B, 1, ..., 1] to broadcast against like."""
    return (t != 0).to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def _cond_gradient(
    cond_fn: CondFn, diffusion: GaussianDiffusion, x: Tensor, t: Tensor, hooks: StepHooks
) -> Tensor:
    with torch.enable_grad():
        grad = cond_fn(x.detach(), diffusion.original_timesteps(t), **hooks.model_kwargs)
    return grad.detach()


def _prediction(
    model: Model,
    diffusion: GaussianDiffusion,
    x: Tensor,
    t: Tensor,
    hooks: StepHooks,
    clip_denoised: bool,
    threshold: float | None,
) -> dict[str, Tensor]:
    """The model's p(x_{t-1} | x_t) with x0 post-processed, without gradients."""
    with torch.no_grad():
        return diffusion.p_mean_variance(
            model,
            x,
            t,
            clip_denoised=clip_denoised,
            denoised_fn=hooks.denoised_fn,
            threshold=threshold,
            model_kwargs=dict(hooks.model_kwargs),
        )


def condition_mean(out: dict[str, Tensor], grad: Tensor) -> dict[str, Tensor]:
    """Shift the mean of p(x_{t-1} | x_t) by variance * grad (classifier / CLIP guidance)."""
    return {**out, "mean": out["mean"] + out["variance"] * grad}


def condition_score(
    diffusion: GaussianDiffusion, out: dict[str, Tensor], x: Tensor, t: Tensor, grad: Tensor
) -> dict[str, Tensor]:
    """Shift the score: eps' = eps - sqrt(1 - alpha_bar_t) grad, then recompute x0 and the mean
    from eps' (used by DDIM, whose update has no variance to scale the gradient by)."""
    alpha_bar = diffusion.extract(diffusion.alphas_cumprod, t, x)
    eps = diffusion.predict_eps_from_xstart(x, t, out["pred_xstart"])
    eps = eps - torch.sqrt(1.0 - alpha_bar) * grad
    pred_xstart = diffusion.predict_xstart_from_eps(x, t, eps)
    mean, _, _ = diffusion.q_posterior_mean_variance(pred_xstart, x, t)
    return {**out, "pred_xstart": pred_xstart, "mean": mean, "eps": eps}


def ancestral_step(
    model: Model,
    diffusion: GaussianDiffusion,
    x: Tensor,
    t: Tensor,
    *,
    generator: torch.Generator | None = None,
    hooks: StepHooks = NO_HOOKS,
    clip_denoised: bool = True,
    threshold: float | None = None,
) -> dict[str, Tensor]:
    """One step x_t -> x_{t-1} ~ N(mean, sigma_t^2) with the learned variance.

    x: [B, C, H, W]; t: [B] step indices of `diffusion`; threshold: percentile for dynamic
    thresholding of x0 (else a static clip if clip_denoised). Returns dict(sample, pred_xstart,
    mean, variance, log_variance, eps).
    """
    out = _prediction(model, diffusion, x, t, hooks, clip_denoised, threshold)
    if hooks.cond_fn is not None:
        out = condition_mean(out, _cond_gradient(hooks.cond_fn, diffusion, x, t, hooks))
    noise = gaussian_noise(x.shape, generator, x.device, x.dtype)
    std = torch.exp(0.5 * out["log_variance"])
    sample = out["mean"] + _nonzero_mask(t, x) * std * noise
    return {**out, "sample": sample}


def ddim_step(
    model: Model,
    diffusion: GaussianDiffusion,
    x: Tensor,
    t: Tensor,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    hooks: StepHooks = NO_HOOKS,
    clip_denoised: bool = True,
    threshold: float | None = None,
) -> dict[str, Tensor]:
    """One DDIM step x_t -> x_{t-1} (Song et al. 2020, eq. 12); arguments as `ancestral_step`.

    eps is recomputed from the processed x0 so that thresholding and denoised_fn are respected:
        x_{t-1} = sqrt(abar_{t-1}) x0 + sqrt(1 - abar_{t-1} - sigma^2) eps + sigma z,
        sigma = eta * sqrt((1 - abar_{t-1}) / (1 - abar_t)) * sqrt(1 - abar_t / abar_{t-1}).
    eta = 0 is deterministic. Returns dict(sample, pred_xstart, eps, ...).
    """
    out = _prediction(model, diffusion, x, t, hooks, clip_denoised, threshold)
    if hooks.cond_fn is not None:
        grad = _cond_gradient(hooks.cond_fn, diffusion, x, t, hooks)
        out = condition_score(diffusion, out, x, t, grad)
    pred_xstart = out["pred_xstart"]
    eps = diffusion.predict_eps_from_xstart(x, t, pred_xstart)
    alpha_bar = diffusion.extract(diffusion.alphas_cumprod, t, x)
    alpha_bar_prev = diffusion.extract(diffusion.alphas_cumprod_prev, t, x)
    sigma = (
        eta
        * torch.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar))
        * torch.sqrt(1.0 - alpha_bar / alpha_bar_prev)
    )
    mean = (
        pred_xstart * torch.sqrt(alpha_bar_prev) + torch.sqrt(1.0 - alpha_bar_prev - sigma**2) * eps
    )
    noise = gaussian_noise(x.shape, generator, x.device, x.dtype)
    sample = mean + _nonzero_mask(t, x) * sigma * noise
    return {**out, "eps": eps, "sample": sample}


def _resolve_device(
    model: Model, noise: Tensor | None, device: torch.device | str | None
) -> torch.device:
    if device is not None:
        return torch.device(device)
    if noise is not None:
        return noise.device
    if isinstance(model, torch.nn.Module):
        param = next(model.parameters(), None)
        if param is not None:
            return param.device
    return torch.device("cpu")


def _initial_noise(
    shape: Sequence[int],
    noise: Tensor | None,
    generator: torch.Generator,
    device: torch.device,
    temperature: float,
) -> Tensor:
    """x_T = temperature * noise (drawn from the generator when not given)."""
    if noise is None:
        noise = gaussian_noise(shape, generator, device)
    elif tuple(noise.shape) != tuple(shape):
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(shape)}")
    return noise.to(device) * temperature


def _timesteps(diffusion: GaussianDiffusion, progress: bool) -> Iterator[int]:
    indices = range(diffusion.num_timesteps - 1, -1, -1)
    if progress:
        from tqdm.auto import tqdm

        return iter(tqdm(indices, desc="sampling"))
    return iter(indices)


def _step(
    model: Model,
    diffusion: GaussianDiffusion,
    x: Tensor,
    t: Tensor,
    settings: SamplerSettings,
    hooks: StepHooks,
    generator: torch.Generator,
) -> dict[str, Tensor]:
    """One step of the sampler that `settings` name."""
    if settings.ddim:
        return ddim_step(
            model,
            diffusion,
            x,
            t,
            eta=settings.eta,
            generator=generator,
            hooks=hooks,
            threshold=settings.threshold,
        )
    return ancestral_step(
        model, diffusion, x, t, generator=generator, hooks=hooks, threshold=settings.threshold
    )


def sample_loop_progressive(
    model: Model,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    settings: SamplerSettings = DEFAULT_SETTINGS,
    hooks: StepHooks = NO_HOOKS,
    *,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Iterator[dict[str, Tensor]]:
    """Sample from t = T-1 down to t = 0, yielding every step's output dict (``"sample"`` is
    x_{t-1}, ``"pred_xstart"`` the x0 prediction); the last ``"sample"`` is x_0.

    shape: [B, C, H, W]. `diffusion` is already respaced (its steps are the ones run); the
    sampler (DDIM or ancestral), threshold, temperature, eta, progress bar and device come from
    `settings`. The device defaults to the noise's, then the model's parameters', then the CPU.
    Random draws use `generator`, by default one on that device seeded with ``settings.seed``.
    """
    device = _resolve_device(model, noise, settings.device)
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(int(settings.seed))
    x = _initial_noise(shape, noise, generator, device, settings.temperature)
    for i in _timesteps(diffusion, settings.progress):
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=device)
        out = _step(model, diffusion, x, t, settings, hooks, generator)
        yield out
        x = out["sample"]


def sample_loop(
    model: Model,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    settings: SamplerSettings = DEFAULT_SETTINGS,
    hooks: StepHooks = NO_HOOKS,
    *,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """x_0 [B, C, H, W]: the last sample of `sample_loop_progressive` (same arguments)."""
    steps = sample_loop_progressive(
        model, diffusion, shape, settings, hooks, generator=generator, noise=noise
    )
    return final_step(steps)["sample"]


def final_step(steps: Iterator[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Run a progressive loop to its end; its last step's output dict."""
    final: dict[str, Tensor] | None = None
    for final in steps:  # noqa: B007 (only the last step is kept)
        pass
    if final is None:
        raise ValueError("the diffusion has no steps")
    return final
