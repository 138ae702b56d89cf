"""Gaussian diffusion for GLIDE: schedules, training loss, respacing, samplers and guidance.

Pure PyTorch + numpy. The model is any callable
`model(x_t [B,C,H,W], t [B] original timesteps, **model_kwargs) -> [B, 2C, H, W]`
(epsilon, then the variance interpolation v).
"""

from .gaussian_diffusion import GaussianDiffusion, gaussian_noise, sample_timesteps_uniform
from .guidance import classifier_free_guidance_model, clip_cond_fn, combine_guided_output
from .instruct_guidance import combine_instruct_output, instruct_guidance_model
from .losses import (
    approx_standard_normal_cdf,
    discretized_gaussian_log_likelihood,
    mean_flat,
    normal_kl,
)
from .respace import SpacedDiffusion, create_diffusion, space_timesteps
from .samplers import (
    SamplerSettings,
    StepHooks,
    ancestral_step,
    condition_mean,
    condition_score,
    ddim_step,
    final_step,
    sample_loop,
    sample_loop_progressive,
)
from .schedules import betas_for_alpha_bar, cosine_alpha_bar, get_named_beta_schedule
from .thresholding import apply_threshold, dynamic_threshold, static_threshold

__all__ = [
    "GaussianDiffusion",
    "SamplerSettings",
    "SpacedDiffusion",
    "StepHooks",
    "ancestral_step",
    "apply_threshold",
    "approx_standard_normal_cdf",
    "betas_for_alpha_bar",
    "classifier_free_guidance_model",
    "clip_cond_fn",
    "combine_guided_output",
    "combine_instruct_output",
    "condition_mean",
    "condition_score",
    "cosine_alpha_bar",
    "create_diffusion",
    "ddim_step",
    "discretized_gaussian_log_likelihood",
    "dynamic_threshold",
    "final_step",
    "gaussian_noise",
    "get_named_beta_schedule",
    "instruct_guidance_model",
    "mean_flat",
    "normal_kl",
    "sample_loop",
    "sample_loop_progressive",
    "sample_timesteps_uniform",
    "space_timesteps",
    "static_threshold",
]
