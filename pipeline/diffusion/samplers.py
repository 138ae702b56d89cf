"""Samplers: ancestral (learned variance) and DDIM, with hooks for guidance and inpainting.

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

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from .gaussian_diffusion import DenoisedFn, GaussianDiffusion, Model, gaussian_noise

CondFn = Callable[..., Tensor]


def _nonzero_mask(t: Tensor, like: Tensor) -> Tensor:
    """1 where t != 0 else 0, shaped [B, 1, ..., 1] to broadcast against like."""
    return (t != 0).to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def _cond_gradient(
    cond_fn: CondFn, diffusion: GaussianDiffusion, x: Tensor, t: Tensor, model_kwargs: dict
) -> Tensor:
    with torch.enable_grad():
        grad = cond_fn(x.detach(), diffusion.original_timesteps(t), **model_kwargs)
    return grad.detach()


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
    generator: torch.Generator | None = None,
    model_kwargs: dict[str, Any] | None = None,
    cond_fn: CondFn | None = None,
    denoised_fn: DenoisedFn | None = None,
    clip_denoised: bool = True,
    threshold: float | None = None,
) -> dict[str, Tensor]:
    """One step x_t -> x_{t-1} ~ N(mean, sigma_t^2) with the learned variance.

    x: [B, C, H, W]; t: [B] step indices of `diffusion`. Returns dict(sample, pred_xstart, mean,
    variance, log_variance, eps).
    """
    model_kwargs = model_kwargs or {}
    with torch.no_grad():
        out = diffusion.p_mean_variance(
            model,
            x,
            t,
            clip_denoised=clip_denoised,
            denoised_fn=denoised_fn,
            threshold=threshold,
            model_kwargs=model_kwargs,
        )
    if cond_fn is not None:
        out = condition_mean(out, _cond_gradient(cond_fn, diffusion, x, t, model_kwargs))
    noise = gaussian_noise(x.shape, generator, x.device, x.dtype)
    std = torch.exp(0.5 * out["log_variance"])
    sample = out["mean"] + _nonzero_mask(t, x) * std * noise
    return {**out, "sample": sample}


def ddim_step(
    model: Model,
    diffusion: GaussianDiffusion,
    x: Tensor,
    t: Tensor,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    model_kwargs: dict[str, Any] | None = None,
    cond_fn: CondFn | None = None,
    denoised_fn: DenoisedFn | None = None,
    clip_denoised: bool = True,
    threshold: float | None = None,
) -> dict[str, Tensor]:
    """One DDIM step x_t -> x_{t-1} (Song et al. 2020, eq. 12).

    eps is recomputed from the processed x0 so that thresholding and denoised_fn are respected:
        x_{t-1} = sqrt(abar_{t-1}) x0 + sqrt(1 - abar_{t-1} - sigma^2) eps + sigma z,
        sigma = eta * sqrt((1 - abar_{t-1}) / (1 - abar_t)) * sqrt(1 - abar_t / abar_{t-1}).
    eta = 0 is deterministic. Returns dict(sample, pred_xstart, eps, ...).
    """
    model_kwargs = model_kwargs or {}
    with torch.no_grad():
        out = diffusion.p_mean_variance(
            model,
            x,
            t,
            clip_denoised=clip_denoised,
            denoised_fn=denoised_fn,
            threshold=threshold,
            model_kwargs=model_kwargs,
        )
    if cond_fn is not None:
        out = condition_score(
            diffusion, out, x, t, _cond_gradient(cond_fn, diffusion, x, t, model_kwargs)
        )
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
    generator: torch.Generator | None,
    device: torch.device,
    init_noise_scale: float,
) -> Tensor:
    """x_T = init_noise_scale * noise (drawn from the generator when not given)."""
    if noise is None:
        noise = gaussian_noise(shape, generator, device)
    elif tuple(noise.shape) != tuple(shape):
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(shape)}")
    return noise.to(device) * init_noise_scale


def _timesteps(diffusion: GaussianDiffusion, progress: bool) -> Iterator[int]:
    indices = range(diffusion.num_timesteps - 1, -1, -1)
    if progress:
        from tqdm.auto import tqdm

        return iter(tqdm(indices, desc="sampling"))
    return iter(indices)


def _sample_loop_progressive(
    step: Callable[..., dict[str, Tensor]],
    model: Model,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    noise: Tensor | None,
    generator: torch.Generator | None,
    init_noise_scale: float,
    progress: bool,
    device: torch.device | str | None,
    **step_kwargs: Any,
) -> Iterator[dict[str, Tensor]]:
    """Run `step` from t = T-1 down to t = 0, yielding each step's output dict."""
    resolved = _resolve_device(model, noise, device)
    x = _initial_noise(shape, noise, generator, resolved, init_noise_scale)
    for i in _timesteps(diffusion, progress):
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=resolved)
        out = step(model, diffusion, x, t, generator=generator, **step_kwargs)
        yield out
        x = out["sample"]


def ancestral_sample_loop_progressive(
    model: Model,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    model_kwargs: dict[str, Any] | None = None,
    cond_fn: CondFn | None = None,
    denoised_fn: DenoisedFn | None = None,
    clip_denoised: bool = True,
    threshold: float | None = None,
    init_noise_scale: float = 1.0,
    progress: bool = False,
    device: torch.device | str | None = None,
) -> Iterator[dict[str, Tensor]]:
    """Yield the output dict of every ancestral step (see `ancestral_sample_loop`)."""
    return _sample_loop_progressive(
        ancestral_step,
        model,
        diffusion,
        shape,
        noise,
        generator,
        init_noise_scale,
        progress,
        device,
        model_kwargs=model_kwargs,
        cond_fn=cond_fn,
        denoised_fn=denoised_fn,
        clip_denoised=clip_denoised,
        threshold=threshold,
    )


def ancestral_sample_loop(
    model: Model,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    model_kwargs: dict[str, Any] | None = None,
    cond_fn: CondFn | None = None,
    denoised_fn: DenoisedFn | None = None,
    clip_denoised: bool = True,
    threshold: float | None = None,
    init_noise_scale: float = 1.0,
    progress: bool = False,
    device: torch.device | str | None = None,
) -> Tensor:
    """Ancestral sampling with the learned variance; returns x_0 [B, C, H, W].

    shape: [B, C, H, W]. x_T = init_noise_scale * noise, with noise drawn from `generator` when
    not given. device defaults to the noise's, then the model's parameters', then CPU.
    threshold: percentile for dynamic thresholding of x0 (else static clip if clip_denoised).
    """
    steps = ancestral_sample_loop_progressive(
        model,
        diffusion,
        shape,
        noise=noise,
        generator=generator,
        model_kwargs=model_kwargs,
        cond_fn=cond_fn,
        denoised_fn=denoised_fn,
        clip_denoised=clip_denoised,
        threshold=threshold,
        init_noise_scale=init_noise_scale,
        progress=progress,
        device=device,
    )
    return _last(steps)["sample"]


def ddim_sample_loop_progressive(
    model: Model,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    model_kwargs: dict[str, Any] | None = None,
    cond_fn: CondFn | None = None,
    denoised_fn: DenoisedFn | None = None,
    clip_denoised: bool = True,
    threshold: float | None = None,
    init_noise_scale: float = 1.0,
    progress: bool = False,
    device: torch.device | str | None = None,
    eta: float = 0.0,
) -> Iterator[dict[str, Tensor]]:
    """Yield the output dict of every DDIM step (see `ddim_sample_loop`)."""
    return _sample_loop_progressive(
        ddim_step,
        model,
        diffusion,
        shape,
        noise,
        generator,
        init_noise_scale,
        progress,
        device,
        eta=eta,
        model_kwargs=model_kwargs,
        cond_fn=cond_fn,
        denoised_fn=denoised_fn,
        clip_denoised=clip_denoised,
        threshold=threshold,
    )


def ddim_sample_loop(
    model: Model,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    model_kwargs: dict[str, Any] | None = None,
    cond_fn: CondFn | None = None,
    denoised_fn: DenoisedFn | None = None,
    clip_denoised: bool = True,
    threshold: float | None = None,
    init_noise_scale: float = 1.0,
    progress: bool = False,
    device: torch.device | str | None = None,
    eta: float = 0.0,
) -> Tensor:
    """DDIM sampling (deterministic for eta = 0); arguments as `ancestral_sample_loop`."""
    steps = ddim_sample_loop_progressive(
        model,
        diffusion,
        shape,
        noise=noise,
        generator=generator,
        model_kwargs=model_kwargs,
        cond_fn=cond_fn,
        denoised_fn=denoised_fn,
        clip_denoised=clip_denoised,
        threshold=threshold,
        init_noise_scale=init_noise_scale,
        progress=progress,
        device=device,
        eta=eta,
    )
    return _last(steps)["sample"]


def _last(steps: Iterator[dict[str, Tensor]]) -> dict[str, Tensor]:
    final: dict[str, Tensor] | None = None
    for final in steps:  # noqa: B007 (only the last step is kept)
        pass
    if final is None:
        raise ValueError("the diffusion has no steps")
    return final
